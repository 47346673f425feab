"""Fixtures of the pipeline tests: a tiny frozen model file, synthetic clips, one local Ray per module."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.clips import make_clip, make_empty, make_not_video, make_truncated

GOOD = {"a.mp4": 30, "b.mp4": 45, "sub/c.mp4": 60, "sub/d.mkv": 35, "sub/deep/e.mp4": 70, "f.avi": 40}
BAD = ("zero.mp4", "corrupt.mp4", "truncated.mp4")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A frozen model file: random-init MobileNetV3-small at 32 px (weights in a local file, so every
    Ray worker builds the same network) + a head with 8 latent channels fitted in a second."""
    import torch
    import torchvision

    import featcomp
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.video import SamplingConfig, sample_frames

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), d / "backbone.pt")
    spec = BackboneSpec(name="mobilenet_v3_small", weights=None, weights_path=str(d / "backbone.pt"), input_size=32)
    sampling = SamplingConfig(fps=10.0, batch_size=16)
    clip = make_clip(d / "train.mp4", 80, fps=25, width=64, height=48)
    frames = np.concatenate([fb.frames for fb in sample_frames(clip, sampling)])
    bb = build_backbone(spec)
    with torch.inference_mode():
        feats = bb(bb.preprocess(frames)).float().numpy()
    head = featcomp.fit_head(feats, objective="reconstruct", latent_channels=8, epochs=3, progress=False, seed=0)
    return Path(featcomp.save_model(d / "tiny.safetensors", head, backbone=spec, sampling=sampling))


@pytest.fixture(scope="session")
def rate_control_model(tmp_path_factory) -> Path:
    """A variable-rate model for per-frame rate control: random-init ResNet-18 at 32 px with its own fc
    classifier (weights in a safetensors file, so every Ray worker builds the same network) and a
    4-step ladder head (linear analysis and synthesis from the classifier's SVD)."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    import featcomp
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead, init_from_classifier
    from featcomp.ratecontrol import step_ladder_head
    from featcomp.video import SamplingConfig, sample_frames

    d = tmp_path_factory.mktemp("rc_model")
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(weights=None).state_dict(), d / "r18.safetensors")
    spec = BackboneSpec(name="resnet18", weights=None, input_size=32, weights_path=str(d / "r18.safetensors"))
    sampling = SamplingConfig(fps=10.0, batch_size=16)
    clip = make_clip(d / "train.mp4", 80, fps=25, width=64, height=48)
    frames = np.concatenate([fb.frames for fb in sample_frames(clip, sampling)])
    bb = build_backbone(spec).eval()
    with torch.inference_mode():
        feats = bb(bb.preprocess(frames)).float()
    steps = (0.01, 0.03, 0.1, 0.3)
    head = step_ladder_head(feats.shape[1], 128, steps, analysis="linear", synthesis="linear")
    head.set_input_stats(feats)
    init_from_classifier(head, bb.classifier.weight)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, 128), np.int32)))
    pooled = np.concatenate([probe.encode(feats, rate=lv) for lv in range(len(steps))])
    frozen = FrozenHead.from_head(head, EntropyCodec.fit(pooled))
    return Path(featcomp.save_model(d / "ladder.safetensors", frozen, backbone=spec, sampling=sampling))


def make_clip_dir(root: Path, good: dict[str, int] = GOOD, bad: tuple[str, ...] = BAD) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (rel, n) in enumerate(good.items()):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make_clip(root / rel, n, fps=25, width=64, height=48, gop=10 + i)
    if "zero.mp4" in bad:
        make_empty(root / "zero.mp4")
    if "corrupt.mp4" in bad:
        make_not_video(root / "corrupt.mp4")
    if "truncated.mp4" in bad:
        make_truncated(root / "a.mp4", root / "truncated.mp4", keep=0.4)
    return root


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return make_clip_dir(tmp_path_factory.mktemp("clips") / "videos")


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray per test module (2 CPUs, 512 MiB object store); yields its GCS address."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from featcomp.pipelines.config import RayConfig
    from featcomp.pipelines.extract import init_ray

    if ray.is_initialized():  # pragma: no cover - another module left it running
        ray.shutdown()
    init_ray(RayConfig(num_cpus=2, object_store_memory_mb=512))
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()

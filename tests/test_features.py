"""extract_features: the single-clip API end to end on synthetic clips (CPU, tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import featcomp
from featcomp import ConfigError, VideoError
from featcomp.backbones import build_backbone
from featcomp.video import SamplingConfig
from tests.clips import make_clip, make_not_video, read_barcode

pytestmark = [pytest.mark.video, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("feat") / "c.mp4", 50, fps=25, width=96, height=64)


def _barcode_features(frames: torch.Tensor) -> torch.Tensor:
    arr = frames.cpu().numpy()
    return torch.tensor([[read_barcode(f)] for f in arr], dtype=torch.float32)


class IdentityNet(nn.Module):
    def forward(self, x):
        return x


def test_features_at_fps_with_custom_backbone(clip):
    bb = build_backbone(IdentityNet(), preprocess=_barcode_features, batch_size=4)
    feats = featcomp.extract_features(clip, bb, fps=5)
    expect = np.arange(0, 50, 5)
    assert feats.data.dtype == np.float32 and feats.data.shape == (10, 1)
    assert feats.frame_indices.tolist() == expect.tolist()
    np.testing.assert_allclose(feats.timestamps, expect / 25, atol=1e-6)
    # the features were computed from exactly those frames, in order
    assert feats.data[:, 0].astype(int).tolist() == expect.tolist()
    json.dumps(feats.config)
    assert feats.config["sampling"]["mode"] == "fps" and feats.config["video"] == str(clip)


def test_torchvision_backbone_uniform_and_resize_on_decode(clip):
    feats = featcomp.extract_features(clip, "mobilenet_v3_small", weights=None, num_frames=4, batch_size=3)
    assert feats.data.shape == (4, 576) and np.isfinite(feats.data).all()
    assert feats.config["backbone"]["name"] == "mobilenet_v3_small" and feats.config["backbone"]["tap"] == "flatten"
    # 64 px high clip < 256: no upscaling on decode
    assert feats.config["sampling"]["short_side"] is None


def test_same_features_as_backbone_on_decoded_frames(clip):
    from featcomp.video import open_video

    bb = build_backbone("mobilenet_v3_small", weights=None, input_size=64)
    feats = featcomp.extract_features(clip, bb, fps=2, prefetch=0)
    with open_video(clip) as dec:
        ref = bb.extract(dec.get_frames(feats.frame_indices)).numpy()
    np.testing.assert_allclose(feats.data, ref, rtol=1e-4, atol=1e-4)
    again = featcomp.extract_features(clip, bb, fps=2, prefetch=3, backend="pyav")
    np.testing.assert_allclose(again.data, ref, rtol=1e-3, atol=1e-3)


def test_spatial_features(clip):
    feats = featcomp.extract_features(clip, "resnet18", weights=None, layer="layer2", pool=False, fps=1, input_size=64)
    assert feats.data.shape == (2, 128, 8, 8)


def test_3d_backbone_windows(clip):
    feats = featcomp.extract_features(clip, "r3d_18", weights=None, window=8, stride=8, batch_size=2)
    assert feats.data.shape == (6, 512)
    assert feats.frame_indices.tolist() == [0, 8, 16, 24, 32, 40]
    assert feats.config["sampling"]["mode"] == "windows"


def test_explicit_sampling_config(clip):
    bb = build_backbone(IdentityNet(), preprocess=_barcode_features)
    feats = featcomp.extract_features(clip, bb, sampling=SamplingConfig.all_frames(batch_size=16))
    assert feats.data[:, 0].astype(int).tolist() == list(range(50))


def test_errors(clip, tmp_path):
    with pytest.raises(VideoError, match="notes.mp4"):
        featcomp.extract_features(make_not_video(tmp_path / "notes.mp4"), "resnet18", weights=None)
    with pytest.raises(ConfigError):
        featcomp.extract_features(clip, "resnet18", weights=None, fps=1, num_frames=3)


def test_decode_error_in_prefetch_thread_reaches_the_caller(clip, monkeypatch):
    from featcomp.video import decord_backend

    def boom(self, indices):
        raise VideoError(f"{self.path}: boom")

    monkeypatch.setattr(decord_backend.DecordDecoder, "get_frames", boom)
    bb = build_backbone(IdentityNet(), preprocess=_barcode_features)
    with pytest.raises(VideoError, match="boom"):
        featcomp.extract_features(clip, bb, fps=5, backend="decord", prefetch=2)

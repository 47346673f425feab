"""Features without a head: extract raw backbone features (Ray job, --backbone), import per-video .npy/.h5
features, transcode a raw store with a model (no video decoding); custom backbones rebuilt from an import
reference in every process (the CLI and Ray workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.clips import make_clip

ROOT = Path(__file__).resolve().parents[1]

# a small package the tests create: a custom nn.Module backbone with a factory taking its config
CUSTOM_PKG = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)


def make_tiny(width=8, seed=0):
    torch.manual_seed(seed)
    return TinyNet(width)


def tiny_entry_point(spec):
    """A featcomp.backbones entry point: factory(spec) -> Backbone."""
    from featcomp.backbones import from_module

    return from_module(make_tiny(width=5, seed=2).eval(), name=spec.name)
'''


def _env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    paths = [str(ROOT), *( [str(extra_path)] if extra_path else []), *filter(None, [env.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@pytest.fixture()
def custom_pkg(tmp_path, monkeypatch):
    """tmp/pkgs/tinybackbones/nets.py, importable in this process and (via PYTHONPATH) in subprocesses."""
    root = tmp_path / "pkgs"
    (root / "tinybackbones").mkdir(parents=True)
    (root / "tinybackbones" / "__init__.py").write_text("")
    (root / "tinybackbones" / "nets.py").write_text(textwrap.dedent(CUSTOM_PKG))
    monkeypatch.syspath_prepend(str(root))
    return root


def test_import_npy_and_h5_with_timestamps_from_fps(tmp_path):
    from featcomp.store import open_store, verify_store
    from featcomp.store.importer import import_features

    src = tmp_path / "vf"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {"a": rng.normal(size=(7, 16)).astype(np.float32), "sub/b": rng.normal(size=(3, 16)).astype(np.float32)}
    np.save(src / "a_resnet.npy", arrays["a"])
    np.save(src / "sub" / "b_resnet.npy", arrays["sub/b"])
    np.save(src / "a_flow.npy", rng.normal(size=(7, 4)))  # another key: skipped
    res = import_features(src, tmp_path / "raw.zarr", fps=2.5, key="resnet", backbone={"name": "resnet18"})
    assert res == {"videos": 2, "skipped": 0, "frames": 10}
    st = open_store(tmp_path / "raw.zarr")
    assert st.mode == "raw" and sorted(st) == ["a", "sub/b"]
    for vid, x in arrays.items():
        np.testing.assert_array_equal(st[vid].features(), x.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(st[vid].timestamps, np.arange(len(x)) / 2.5)
    assert st.model_card["backbone"] == {"name": "resnet18"} and verify_store(tmp_path / "raw.zarr").ok
    # a rerun skips what is there
    assert import_features(src, tmp_path / "raw.zarr", fps=2.5, key="resnet")["skipped"] == 2

    h5py = pytest.importorskip("h5py")  # optional: .h5 files need h5py
    with h5py.File(src / "c_resnet.h5", "w") as f:
        f["feats"] = arrays["a"][:5]
    import_features(src, tmp_path / "raw.zarr", fps=2.5, key="resnet")
    np.testing.assert_allclose(open_store(tmp_path / "raw.zarr")["c"].timestamps, np.arange(5) / 2.5)


def test_import_mistakes_are_one_line(tmp_path):
    from tests.test_cli import _one_line_error, run_cli

    (tmp_path / "empty").mkdir()
    _one_line_error(run_cli("import", tmp_path / "empty", "-o", tmp_path / "o.zarr", "--fps", "5", "-q"), "no .npy/.h5")
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "v.npy", np.zeros(5))
    _one_line_error(run_cli("import", tmp_path / "d", "-o", tmp_path / "o.zarr", "--fps", "5", "-q"), "1-D")
    np.save(tmp_path / "d" / "v.npy", np.zeros((5, 3)))
    _one_line_error(run_cli("import", tmp_path / "d", "-o", tmp_path / "o.zarr", "--fps", "0", "-q"), "--fps must be > 0")


def _fit_model(feats: np.ndarray, path: Path, backbone, sampling=None) -> Path:
    import featcomp

    head = featcomp.fit_head(feats, objective="reconstruct", latent_channels=4, epochs=2, progress=False, seed=0)
    return Path(featcomp.save_model(path, head, backbone=backbone, sampling=sampling))


@pytest.mark.timeout(240)
def test_transcode_codes_a_raw_store_with_the_heads_latents(tmp_path):
    import featcomp
    from featcomp.store.importer import import_features
    from tests.test_cli import _one_line_error, run_cli

    rng = np.random.default_rng(1)
    src = tmp_path / "vf"
    src.mkdir()
    arrays = {f"v{i}": rng.normal(size=(n, 32)).astype(np.float32) for i, n in enumerate([20, 9, 33])}
    for v, x in arrays.items():
        np.save(src / f"{v}.npy", x)
    import_features(src, tmp_path / "raw.zarr", fps=5, backbone={"name": "resnet18"})
    model = _fit_model(np.concatenate(list(arrays.values())), tmp_path / "m.safetensors", backbone="resnet18")
    r = run_cli("transcode", tmp_path / "raw.zarr", "--model", model, "-o", tmp_path / "coded.zarr", "--json", "-q")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["videos"] == 3 and summary["frames"] == 62 and summary["bits_per_frame"] > 0
    m = featcomp.load_model(model)
    coded, raw = featcomp.open_store(tmp_path / "coded.zarr"), featcomp.open_store(tmp_path / "raw.zarr")
    assert coded.mode == "coded" and sorted(coded) == sorted(arrays)
    for v in arrays:
        np.testing.assert_array_equal(coded[v].latents(), m.head.encode(raw[v].features()))
        np.testing.assert_array_equal(coded[v].timestamps, raw[v].timestamps)
    assert featcomp.verify_store(tmp_path / "coded.zarr").ok
    # rerun: nothing to do; a head of another backbone or width is refused in one line
    again = run_cli("transcode", tmp_path / "raw.zarr", "--model", model, "-o", tmp_path / "coded.zarr", "--json", "-q")
    assert json.loads(again.stdout)["skipped"] == 3
    other = _fit_model(np.concatenate(list(arrays.values())), tmp_path / "o.safetensors", backbone="resnet50")
    _one_line_error(run_cli("transcode", tmp_path / "raw.zarr", "--model", other, "-o", tmp_path / "x.zarr", "-q"),
                    "name='resnet18'", "--allow-other-backbone")
    narrow = _fit_model(rng.normal(size=(50, 8)).astype(np.float32), tmp_path / "n.safetensors", backbone="resnet18")
    _one_line_error(run_cli("transcode", tmp_path / "raw.zarr", "--model", narrow, "-o", tmp_path / "y.zarr", "-q"),
                    "32 channels", "takes 8")
    _one_line_error(run_cli("transcode", tmp_path / "coded.zarr", "--model", model, "-o", tmp_path / "z.zarr", "-q"),
                    "is a coded store")


def test_custom_backbone_from_an_import_reference_roundtrips_through_a_model_file(custom_pkg, tmp_path):
    import torch

    import featcomp
    from featcomp.backbones import build_backbone, from_factory
    from featcomp.errors import BackboneError

    torch.manual_seed(5)
    from tinybackbones.nets import make_tiny

    net = make_tiny(width=6, seed=3)
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    bb = from_factory("tinybackbones.nets:make_tiny", factory_kwargs={"width": 6, "seed": 99},
                      weights_path=str(tmp_path / "tiny.pt"), input_size=32)
    assert bb.spec.factory == "tinybackbones.nets:make_tiny" and bb.spec.factory_kwargs == {"width": 6, "seed": 99}
    frames = np.random.default_rng(0).integers(0, 255, size=(4, 40, 48, 3), dtype=np.uint8)
    with torch.inference_mode():
        f = bb(bb.preprocess(frames))
        ref = net.eval()(bb.preprocess(frames))  # the weights file, not seed 99, decides the weights
    assert f.shape == (4, 6)
    torch.testing.assert_close(f, ref)
    path = _fit_model(f.numpy(), tmp_path / "m.safetensors", backbone=bb)
    m = featcomp.load_model(path)
    assert m.backbone.factory == "tinybackbones.nets:make_tiny"
    rebuilt = build_backbone(m.backbone)
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(rebuilt.preprocess(frames)), f)
    with pytest.raises(BackboneError, match=r"cannot import 'nopkg\.nets'.*every Ray worker"):
        build_backbone({"name": "x", "factory": "nopkg.nets:make"})
    with pytest.raises(BackboneError, match="has no attribute 'nope'"):
        build_backbone({"name": "x", "factory": "tinybackbones.nets:nope"})


def test_featcomp_backbones_entry_point_of_an_installed_package(custom_pkg):
    """A package that declares `[featcomp.backbones] tiny_ep = tinybackbones.nets:tiny_entry_point` is found
    by name (here its .dist-info sits on sys.path, as an installed package's does)."""
    import torch

    from featcomp.backbones import build_backbone, resolve_backbone_factory

    dist = custom_pkg / "tinybackbones-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinybackbones\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[featcomp.backbones]\ntiny_ep = tinybackbones.nets:tiny_entry_point\n")
    bb = build_backbone("tiny_ep")
    assert bb.spec.name == "tiny_ep"
    with torch.inference_mode():
        assert bb(bb.preprocess(np.zeros((2, 16, 16, 3), np.uint8))).shape == (2, 5)
    assert callable(resolve_backbone_factory({"name": "tiny_ep", "tap": "x"}))


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(300)
def test_cli_compress_builds_a_custom_backbone_in_a_fresh_process(custom_pkg, tmp_path):
    """A model whose backbone is the user's own module: `featcomp compress` (a subprocess, the package on
    its PYTHONPATH) rebuilds it from the import reference; without the package, one clear line."""
    import torch

    import featcomp
    from featcomp.backbones import from_factory
    from featcomp.video import SamplingConfig, sample_frames
    from tests.test_cli import _one_line_error

    clip = make_clip(tmp_path / "clip.mp4", 40, fps=20, width=64, height=48)
    bb = from_factory("tinybackbones.nets:make_tiny", factory_kwargs={"width": 8, "seed": 1}, input_size=32)
    sampling = SamplingConfig(fps=10.0, batch_size=8)
    frames = np.concatenate([b.frames for b in sample_frames(clip, sampling)])
    with torch.inference_mode():
        feats = bb(bb.preprocess(frames)).numpy()
    model = _fit_model(feats, tmp_path / "m.safetensors", backbone=bb, sampling=sampling)
    out = tmp_path / "c.fcc"
    cmd = [sys.executable, "-m", "featcomp.cli", "compress", str(clip), "--model", str(model), "-o", str(out), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(custom_pkg), timeout=240)
    assert r.returncode == 0, r.stderr
    k = featcomp.decompress(out.read_bytes(), model, latents=True)
    np.testing.assert_array_equal(k, featcomp.load_model(model).head.encode(feats))
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(None), timeout=240)
    _one_line_error(r, "cannot import 'tinybackbones.nets'", "PYTHONPATH")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(300)
def test_extract_backbone_only_writes_raw_features_and_a_custom_backbone_builds_in_ray_workers(custom_pkg, tmp_path):
    """`featcomp extract VIDEOS --backbone pkg.mod:factory --store S` (no model): a Ray job whose workers
    import the user's package (PYTHONPATH), writing float16 features with timestamps; then train and
    transcode work on that store."""
    import torch

    import featcomp
    from featcomp.backbones import build_backbone
    from featcomp.video import SamplingConfig, sample_frames
    from tests.test_cli import _one_line_error, run_cli

    vids = tmp_path / "videos"
    vids.mkdir()
    make_clip(vids / "a.mp4", 30, fps=15, width=64, height=48)
    make_clip(vids / "b.mp4", 45, fps=15, width=64, height=48)
    store = tmp_path / "raw.zarr"
    cmd = [sys.executable, "-m", "featcomp.cli", "extract", str(vids), "--backbone", "tinybackbones.nets:make_tiny",
           "--store", str(store), "--fps", "5", "--num-cpus", "2", "--no-progress", "--summary-json",
           str(tmp_path / "s.json")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(custom_pkg), timeout=280)
    assert r.returncode == 0, r.stdout + r.stderr
    st = featcomp.open_store(store)
    assert st.mode == "raw" and sorted(st) == ["a.mp4", "b.mp4"]
    assert st.model_card["backbone"]["factory"] == "tinybackbones.nets:make_tiny"
    bb = build_backbone(st.model_card["backbone"])
    for v in ("a.mp4", "b.mp4"):
        batches = list(sample_frames(vids / v, SamplingConfig(fps=5.0)))
        frames = np.concatenate([b.frames for b in batches])
        with torch.inference_mode():
            want = bb(bb.preprocess(frames)).numpy().astype(np.float16)
        np.testing.assert_allclose(st[v].features(), want.astype(np.float32), rtol=1e-2, atol=1e-3)
        np.testing.assert_allclose(st[v].timestamps, np.concatenate([b.timestamps for b in batches]))
    assert json.loads((tmp_path / "s.json").read_text())["done"] == 2
    # featcomp train fits a head on that store; the model records the store's backbone and sampling,
    # and transcode codes the store with it
    r = run_cli("train", store, "-o", tmp_path / "m.safetensors", "--objective", "reconstruct", "--latent", "4",
                "--epochs", "2", "--val", "0", env_path=custom_pkg)
    assert r.returncode == 0, r.stderr
    m = featcomp.load_model(tmp_path / "m.safetensors")
    assert m.backbone.factory == "tinybackbones.nets:make_tiny" and m.sampling.fps == 5.0
    r = run_cli("transcode", store, "--model", tmp_path / "m.safetensors", "-o", tmp_path / "coded.zarr", "-q")
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(featcomp.open_store(tmp_path / "coded.zarr")["a.mp4"].latents(),
                                  m.head.encode(st["a.mp4"].features()))
    # the package missing on the driver: one line, before Ray starts
    r = subprocess.run(cmd[:-2], capture_output=True, text=True, env=_env(None), timeout=120)
    _one_line_error(r, "cannot import 'tinybackbones.nets'")
    _one_line_error(run_cli("extract", vids, "--store", tmp_path / "x.zarr"), "give --model MODEL")
    _one_line_error(run_cli("extract", vids, "--store", tmp_path / "x.zarr", "--backbone", "no_such_net"),
                    "unknown backbone 'no_such_net'")

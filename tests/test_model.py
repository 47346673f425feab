"""Model file round trips, integrity errors, the Extractor on synthetic clips, compressed clips, CLIs."""

from __future__ import annotations

import dataclasses

import json
import struct

import numpy as np
import pytest
import torch

import featcomp
from featcomp.errors import CodecError, ModelFileError
from featcomp.head import CompressibleHead
from featcomp.model import CompressedClip, Extractor, load_model, save_model
from tests.clips import make_clip


def _head(c=24, cl=6, seed=0, synthesis="linear"):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, c)).astype(np.float32) * 2
    y = (x[:, 0] > 0).astype(np.int64)
    head = featcomp.fit_head(x, y, lam=1e-2, latent_channels=cl, synthesis=synthesis, epochs=2, batch_size=100,
                             progress=False)
    return head, x


def test_roundtrip_same_outputs_and_bytes(tmp_path):
    head, x = _head()
    p1 = save_model(tmp_path / "a.safetensors", head, sampling={"mode": "all"}, metadata={"note": "t"},
                    extra=head.train_result.objective)
    m = load_model(p1)
    frozen = head.freeze()
    k = frozen.encode(x)
    np.testing.assert_array_equal(m.head.encode(x), k)
    assert m.codec == frozen.codec and m.codec.digest == frozen.codec.digest
    assert m.codec.compress_symbols(k) == frozen.codec.compress_symbols(k)
    np.testing.assert_array_equal(m.head.decode(k), frozen.decode(k))
    np.testing.assert_allclose(m.head.synthesize(m.head.decode(k)).numpy(),
                               frozen.synthesize(frozen.decode(k)).numpy(), rtol=0, atol=0)
    assert "classifier.weight" in m.extra and m.metadata == {"note": "t"}
    # saving the loaded model's frozen head again gives an identical file
    p2 = save_model(tmp_path / "b.safetensors", m.head, sampling={"mode": "all"}, metadata={"note": "t"},
                    training=m.training, extra=m.extra)
    assert load_model(p2).digest == m.digest
    assert p1.read_bytes() == p2.read_bytes()


def test_model_card_dequantization_matches_decode(tmp_path):
    head, x = _head()
    m = load_model(save_model(tmp_path / "m.safetensors", head))
    card = json.loads(json.dumps(m.model_card()))  # JSON-safe
    assert card["codec_digest"] == m.codec.digest and card["model_digest"] == m.digest
    assert card["dequantization"]["formula"] == "features = (k + offsets) * scale"
    k = m.head.encode(x)
    off = np.asarray(card["dequantization"]["offsets"], np.float32)
    sc = np.asarray(card["dequantization"]["scale"], np.float32)
    np.testing.assert_array_equal((k.astype(np.float32) + off) * sc, m.head.decode(k))


def _rewrite(path, out, *, meta_fn=None, tensor_fn=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    doc = json.loads(meta["featcomp"])
    if meta_fn:
        meta_fn(doc)
    if tensor_fn:
        tensor_fn(tensors)
    save_file(tensors, str(out), metadata={"featcomp": json.dumps(doc)})
    return out


def test_wrong_version_and_digest_mismatch_raise(tmp_path):
    head, _ = _head()
    p = save_model(tmp_path / "m.safetensors", head)

    def bump(d):
        d["format_version"] = 99

    with pytest.raises(ModelFileError, match="format version"):
        load_model(_rewrite(p, tmp_path / "v.safetensors", meta_fn=bump))

    def tamper(t):
        t["head.scale"] = t["head.scale"] * 1.01

    with pytest.raises(ModelFileError, match="digest"):
        load_model(_rewrite(p, tmp_path / "d.safetensors", tensor_fn=tamper))

    def meta_tamper(d):
        d["metadata"] = {"evil": 1}

    with pytest.raises(ModelFileError, match="digest"):
        load_model(_rewrite(p, tmp_path / "e.safetensors", meta_fn=meta_tamper))

    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "missing.safetensors")


def test_compressed_clip_bytes_roundtrip():
    k = np.arange(40, dtype=np.int32).reshape(10, 4)
    for ts in (np.arange(10) * 0.04, np.cumsum(np.random.default_rng(0).uniform(0.01, 0.1, 10))):
        clip = CompressedClip(data=b"xyz", shape=k.shape, timestamps=ts, frame_indices=np.arange(0, 20, 2),
                              codec_digest="ab" * 32, model_digest="cd" * 32)
        sizes = {}
        # format 2 keeps whole digests; format 4 their 16-char prefixes, format 5 (the default) 8-char ones
        for version, keep in ((2, 64), (4, 16), (5, 8)):
            clip = dataclasses.replace(clip, format_version=None if version == 5 else version)
            blob = clip.to_bytes()
            sizes[version] = len(blob)
            back = CompressedClip.from_bytes(blob)
            assert back.format_version == version and back.to_bytes() == blob
            assert back.data == clip.data and back.shape == clip.shape
            assert back.codec_digest == clip.codec_digest[:keep] and back.model_digest == clip.model_digest[:keep]
            assert back.made_by(clip.codec_digest) and not back.made_by("ba" * 32)
            np.testing.assert_array_equal(back.timestamps, ts)
            np.testing.assert_array_equal(back.frame_indices, np.arange(0, 20, 2))
        # format 5: 8 digest bytes fewer, and (regular 25 fps timestamps: step 1/25) 6 more for the step
        assert sizes[4] - sizes[5] == (14 if ts[1] == 0.04 else 8)
    with pytest.raises(CodecError):
        CompressedClip.from_bytes(b"FCCX" + struct.pack("<BI", 1, 0))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random-init MobileNetV2 trunk at 32 px (1280-d) and a 16-channel head set on its features."""
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.video import SamplingConfig, SamplingMode

    d = tmp_path_factory.mktemp("extract")
    clip = make_clip(d / "clip.mp4", num_frames=200, fps=25, width=64, height=48)
    spec = BackboneSpec(name="mobilenet_v2_deepsort", weights=None, input_size=32, batch_size=64)
    torch.manual_seed(0)
    bb = build_backbone(spec).eval()
    from featcomp.video import sample_frames

    sampling = SamplingConfig(mode=SamplingMode.ALL, batch_size=64)
    frames = np.concatenate([b.frames for b in sample_frames(str(clip), sampling)])
    with torch.no_grad():
        feats = bb(bb.preprocess(frames))
    head = CompressibleHead(in_channels=feats.shape[1], latent_channels=16, init_scale=0.5)
    head.set_input_stats(feats)
    head.eval()
    path = save_model(d / "m.safetensors", head, backbone=spec, sampling=sampling)
    return path, bb, clip, frames, feats, head


def test_extractor_compress_decodes_to_the_heads_latents(tiny_model):
    path, bb, clip_path, frames, feats, head = tiny_model
    ex = Extractor(path, backbone=bb, batch_size=50)
    k = ex.encode_frames(frames)
    assert k.dtype == np.int32 and k.shape == (len(frames), 16)
    np.testing.assert_array_equal(k, head.freeze().encode(feats))
    clip = ex.compress(clip_path)
    assert clip.num_frames == len(frames) == 200
    np.testing.assert_array_equal(ex.decompress_latents(clip), k)
    np.testing.assert_array_equal(ex.decompress(CompressedClip.from_bytes(clip.to_bytes())), ex.model.head.decode(k))
    # framing: the stream costs at most 1 bit/frame above the tables' ideal cost at 200 frames
    framing = (8 * len(clip.data) - ex.codec.estimate_bits(k)) / clip.num_frames
    assert 0 <= framing <= 1.0
    assert np.all(np.diff(clip.timestamps) > 0)


def test_extractor_builds_backbone_from_the_model_file_and_cli(tiny_model, tmp_path, capsys, monkeypatch):
    from featcomp.cli import main as cli

    path, _, clip_path, frames, _, _ = tiny_model
    ex = Extractor(path)  # random-init backbone built from the recorded spec
    seen = []
    clip = ex.compress(clip_path, progress=lambda n, t: seen.append((n, t)))
    assert sum(n for n, _ in seen) == 200 and len(seen) >= 2  # one call per batch of 64 frames
    assert seen[-1][1] == pytest.approx(clip.timestamps[-1])
    np.testing.assert_array_equal(ex.decompress_latents(clip), ex.encode_frames(frames))
    out = tmp_path / "c.fcc"
    capsys.readouterr()
    assert cli(["compress", str(clip_path), "--model", str(path), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "building backbone mobilenet_v2_deepsort" in err and "200frame" in err.replace(" ", "")
    blob = CompressedClip.from_bytes(out.read_bytes())
    assert blob.codec_digest == ex.codec.digest[:8] and blob.made_by(ex.codec.digest) and blob.num_frames == 200
    feats = tmp_path / "f.npy"
    assert cli(["compress", str(out), "--model", str(path), "--decompress", "-o", str(feats)]) == 0
    assert np.load(feats).shape == (200, 16)
    # a clip from another codec is refused
    other = CompressedClip(data=clip.data, shape=clip.shape, timestamps=clip.timestamps,
                           frame_indices=clip.frame_indices, codec_digest="00" * 32)
    with pytest.raises(CodecError):
        ex.decompress(other)


def test_extractor_builds_the_backbone_on_its_own_device_without_the_specs_autocast(tiny_model, tmp_path):
    """A spec saved from a CUDA machine with bf16 autocast (device='cuda', amp='bf16') still gives a float32
    CPU extractor: the backbone is built on the extractor's device, and only ``dtype`` sets the precision."""
    path, _, clip_path, frames, _, _ = tiny_model
    m = load_model(path)
    gpu_spec = m.backbone.replace(device="cuda", amp="bf16", channels_last=True)
    p2 = save_model(tmp_path / "gpu.safetensors", m.head, backbone=gpu_spec, sampling=m.sampling)
    torch.manual_seed(0)
    ex = Extractor(p2)  # built here, where there is no CUDA (or on CPU where there is)
    assert ex.backbone.device == torch.device("cpu") and ex.backbone.amp_dtype is None
    assert not ex.backbone.channels_last
    torch.manual_seed(0)
    ref = Extractor(path)  # the same random init from the CPU spec
    np.testing.assert_array_equal(ex.encode_frames(frames[:20]), ref.encode_frames(frames[:20]))


def test_extractor_compress_with_and_without_prefetch_gives_the_same_clip(tiny_model):
    path, bb, clip_path, frames, _, _ = tiny_model
    inline = Extractor(path, backbone=bb, batch_size=50, prefetch=0).compress(clip_path)
    ahead = Extractor(path, backbone=bb, batch_size=50, prefetch=3).compress(clip_path)
    assert inline.to_bytes() == ahead.to_bytes() and inline.num_frames == len(frames)


def test_train_cli_writes_a_loadable_model(tmp_path):
    from featcomp.cli import main as cli

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "f.npz", features=x, labels=y)
    out = tmp_path / "m.safetensors"
    rc = cli(["train", str(tmp_path / "f.npz"), "-o", str(out), "--latent", "4", "--epochs", "2",
              "--batch-size", "100", "--no-progress"])
    assert rc == 0
    m = load_model(out)
    assert m.latent_channels == 4 and m.training["options"]["objective"] == "task"
    assert m.head.encode(x).shape == (300, 4)


def test_compressed_clip_with_explicit_side_arrays_refuses_truncation():
    ts = np.cumsum(np.random.default_rng(1).uniform(0.01, 0.1, 10))  # not affine: stored explicitly
    clip = CompressedClip(data=b"", shape=(10, 4), timestamps=ts, frame_indices=np.array([0, 3, 4, 9, 10, 11, 20, 21, 22, 30]),
                          codec_digest="ab" * 32)
    blob = clip.to_bytes()
    back = CompressedClip.from_bytes(blob)
    np.testing.assert_array_equal(back.timestamps, ts)
    np.testing.assert_array_equal(back.frame_indices, clip.frame_indices)
    with pytest.raises(CodecError, match="truncated (timestamps|frame indices)"):
        CompressedClip.from_bytes(blob[: len(blob) - 8 * 10 - 4])


def test_save_model_takes_the_spec_extract_features_reports(tmp_path):
    """Features.config["backbone"] (with its reported ``tap``) and ["sampling"] are what save_model takes;
    the loaded model holds real configs that build; a bad spec fails at save time in one line."""
    from featcomp.backbones import BackboneSpec
    from featcomp.errors import ConfigError
    from featcomp.video import SamplingConfig

    head512, _ = _head(c=512)
    reported = {**BackboneSpec(name="resnet18", weights=None).to_dict(), "tap": "flatten"}
    sampling = SamplingConfig(mode="fps", fps=5.0).to_dict()
    path = save_model(tmp_path / "m.safetensors", head512, backbone=reported, sampling=sampling)
    m = load_model(path)
    assert isinstance(m.backbone, BackboneSpec) and m.backbone.name == "resnet18" and m.backbone.weights is None
    assert isinstance(m.sampling, SamplingConfig) and m.sampling.fps == 5.0
    ex = Extractor(m)
    assert ex.backbone.tap == "flatten"
    # a name and a built backbone are accepted as well
    assert load_model(save_model(tmp_path / "n.safetensors", head512, backbone="resnet18")).backbone.name == "resnet18"
    assert load_model(save_model(tmp_path / "b.safetensors", head512, backbone=ex.backbone)).backbone.weights is None
    with pytest.raises(ConfigError, match=r"backbone= is not a valid backbone spec .*unknown keys \['wieghts'\]") as info:
        save_model(tmp_path / "x.safetensors", head512, backbone={"name": "resnet18", "wieghts": None})
    assert "\n" not in str(info.value) and not (tmp_path / "x.safetensors").exists()
    with pytest.raises(ConfigError, match="sampling= takes"):
        save_model(tmp_path / "y.safetensors", head512, sampling=5)

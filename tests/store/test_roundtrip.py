"""Round trips through StoreWriter/open_store: latents exact, features dequantized, windows,
timestamps, metadata, idempotence, raw mode, memory:// URLs, size overhead."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import featcomp
from featcomp.errors import StoreError
from featcomp.store import StoreWriter, open_store, verify_store

from .conftest import C, FakeModel, laplace_latents


def _write_some(path, codec, rng, n=12, lo=5, hi=90, **kw):
    videos = {}
    with StoreWriter(path, codec, **kw) as w:
        for i in range(n):
            t = int(rng.integers(lo, hi))
            k = laplace_latents(rng, t)
            ts = np.arange(t) / 5.0
            rec = w.write(f"clips/v{i:03d}.mp4", k, ts, metadata={"i": i})
            assert rec is not None and rec.frames == t
            videos[f"clips/v{i:03d}.mp4"] = (k, ts)
    return videos


def test_roundtrip_exact_and_windows(tmp_path, codec, rng):
    path = tmp_path / "s"
    videos = _write_some(path, codec, rng, chunk_frames=8, shard_chunks=4)
    st = featcomp.open_store(path)
    assert len(st) == len(videos) and set(st) == set(videos)
    for vid, (k, ts) in videos.items():
        sv = st[vid]
        got = sv.latents()
        assert got.dtype == np.int32 and np.array_equal(got, k)
        np.testing.assert_array_equal(sv.timestamps, ts)
        assert sv.metadata["i"] == int(vid[7:10])
        # features = (k + offsets) * scale, scale 1 by default
        np.testing.assert_array_equal(sv.features(), codec.dequantize(k))
        for a, b in [(0, 1), (3, 11), (7, 9), (len(k) - 2, len(k)), (0, len(k))]:
            w = sv.window(a, b)
            assert np.array_equal(w.latents(), k[a:b])
            np.testing.assert_array_equal(w.timestamps, ts[a:b])
    assert "nope" not in st
    with pytest.raises(KeyError, match="nope"):
        st["nope"]
    assert verify_store(path).ok


def test_model_card_scale_and_irregular_timestamps(tmp_path, codec, rng):
    scale = np.linspace(0.5, 2.0, C).astype(np.float32)
    model = FakeModel(codec, scale)
    k = laplace_latents(rng, 40)
    ts = np.cumsum(rng.uniform(0.01, 0.5, 40))  # variable frame rate
    with StoreWriter(tmp_path / "s", model) as w:
        w.write("a", k, ts)
    st = open_store(tmp_path / "s")
    assert st.model_card["backbone"]["name"] == "resnet18"
    expect = (k + codec.offsets[None, :]).astype(np.float32) * scale[None, :]
    np.testing.assert_allclose(st["a"].features(), expect, rtol=1e-6)
    np.testing.assert_array_equal(st["a"].timestamps, ts)
    assert st.header["format_version"] == featcomp.store.format.FACTORIZED_FORMAT_VERSION == 1
    assert st.header["package"] == "featcomp"


def test_spatial_latents(tmp_path, rng):
    from featcomp.entropy import EntropyCodec

    k = np.rint(rng.laplace(0, 1.0, (30, 4, 3, 5))).astype(np.int32)
    codec = EntropyCodec.fit(k)
    with StoreWriter(tmp_path / "s", codec, chunk_frames=4) as w:
        w.write("x", k, np.arange(30) * 0.2)
    v = open_store(tmp_path / "s")["x"]
    assert v.shape == (30, 4, 3, 5)
    assert np.array_equal(v.latents(), k)
    assert np.array_equal(v.window(5, 13).latents(), k[5:13])


def test_idempotent_and_force(tmp_path, codec, rng):
    k1, k2 = laplace_latents(rng, 20), laplace_latents(rng, 25)
    with StoreWriter(tmp_path / "s", codec) as w:
        assert "a" not in w
        assert w.write("a", k1, np.arange(20.0)) is not None
        assert "a" in w
        assert w.write("a", k2, np.arange(25.0)) is None  # no-op
    with StoreWriter(tmp_path / "s", codec) as w:  # a second session sees it too
        assert "a" in w
        assert w.write("a", k2, np.arange(25.0)) is None
        assert w.write("a", k2, np.arange(25.0), force=True) is not None
    st = open_store(tmp_path / "s")
    assert len(st) == 1 and np.array_equal(st["a"].latents(), k2)


def test_bad_inputs(tmp_path, codec, rng):
    with StoreWriter(tmp_path / "s", codec) as w:
        with pytest.raises(StoreError, match="integer"):
            w.write("f", rng.normal(size=(5, C)), np.arange(5.0))
        with pytest.raises(StoreError, match="channels"):
            w.write("c", np.zeros((5, C + 1), np.int32), np.arange(5.0))
        with pytest.raises(StoreError, match="timestamps"):
            w.write("t", np.zeros((5, C), np.int32), np.arange(4.0))
        with pytest.raises(StoreError):
            w.write("", np.zeros((5, C), np.int32), np.arange(5.0))
    # another codec (other tables) refuses the store
    from featcomp.entropy import EntropyCodec

    other = EntropyCodec.fit(laplace_latents(rng, 500, scale=3.0))
    with pytest.raises(StoreError, match="digest mismatch"):
        StoreWriter(tmp_path / "s", other)


def test_raw_store(tmp_path, rng):
    x = rng.normal(size=(50, 32)).astype(np.float32)
    with StoreWriter(tmp_path / "r", raw=True, model_card={"backbone": "resnet18"}) as w:
        w.write("a", x, np.arange(50) / 25)
    st = open_store(tmp_path / "r")
    assert st.mode == "raw" and st.header["codec"]["name"] == "zstd"
    np.testing.assert_array_equal(st["a"].features(), x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(st["a"].window(10, 20).features(), x[10:20].astype(np.float16).astype(np.float32))
    with pytest.raises(StoreError, match="raw"):
        st["a"].latents()
    assert verify_store(tmp_path / "r").ok


def test_memory_url(codec, rng):
    url = f"memory://featcomp-test-{rng.integers(1 << 30)}"
    k = laplace_latents(rng, 70)
    with StoreWriter(url, codec, chunk_frames=16) as w:
        w.write("m", k, np.arange(70) / 5)
        w.record_failure("bad", "/videos/bad.mp4", "VideoError: no frames")
    st = open_store(url)
    assert np.array_equal(st["m"].latents(), k)
    assert np.array_equal(st["m"].window(20, 50).latents(), k[20:50])
    assert [f["id"] for f in st.failures()] == ["bad"]
    assert verify_store(url).ok and st.info()["videos"] == 1


def test_failures(tmp_path, codec, rng):
    with StoreWriter(tmp_path / "s", codec) as w:
        w.record_failure("x", "/v/x.mp4", "VideoError: decoder hung")
        w.record_failure("y", "/v/y.mp4", "VideoError: zero frames")
    with StoreWriter(tmp_path / "s", codec) as w:
        w.write("y", laplace_latents(rng, 5), np.arange(5.0))  # retried successfully
    st = open_store(tmp_path / "s")
    assert [(f["id"], f["path"]) for f in st.failures()] == [("x", "/v/x.mp4")]
    assert {f["id"] for f in st.failures(include_resolved=True)} == {"x", "y"}
    assert "decoder hung" in st.failures()[0]["error"]


def test_size_within_two_percent_of_coded_latents(tmp_path, codec, rng):
    # many videos of >= 100 frames: chunk framing, index and metadata must stay tiny
    coded = 0
    with StoreWriter(tmp_path / "s", codec) as w:
        for i in range(120):
            k = laplace_latents(rng, int(rng.integers(100, 200)))
            coded += len(codec.compress_symbols(k))
            w.write(f"video-{i:05d}", k, np.arange(len(k)) / 5)
    info = open_store(tmp_path / "s").info()
    assert info["frames"] > 100 * 120
    # tables are stored twice (header + part metadata): a fixed cost, subtract it for the per-video bound
    assert info["data_bytes"] + info["index_bytes"] <= 1.02 * coded, (info, coded)
    # the plain-zarr video table (videos/<writer>/: 4 small arrays) is a fixed cost per writer plus a few
    # compressed bytes per video (docs/format.md); bounded on its own
    table = sum(p.stat().st_size for p in (tmp_path / "s" / "videos").rglob("*") if p.is_file())
    assert 0 < table <= 3000 + 16 * 120, table
    assert info["bytes"] - table <= 1.02 * coded + 2 * len(featcomp.store.codec.encode_tables(codec)) + 4096


def test_not_a_store(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a featcomp store"):
        open_store(tmp_path / "d")
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "missing")
    import zarr

    zarr.create_group(str(tmp_path / "z"))
    with pytest.raises(StoreError, match="not a featcomp store"):
        open_store(tmp_path / "z")
    with pytest.raises(StoreError, match="not a featcomp store"):
        StoreWriter(tmp_path / "d", raw=True)


def test_reading_imports_no_heavy_modules(tmp_path, codec, rng):
    _write_some(tmp_path / "s", codec, rng, n=2)
    code = (
        "import sys, featcomp\n"
        f"st = featcomp.open_store({str(tmp_path / 's')!r})\n"
        "v = st[next(iter(st))]; v.features(); v.latents(); st.info()\n"
        "bad = [m for m in ('torch', 'torchvision', 'decord', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

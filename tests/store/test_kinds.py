"""Stores with non-factorized entropy models (codec kinds): temporal stores round-trip exactly, record
their kind, keep per-chunk random access and open with no model file; version-1 stores are unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

import featcomp.store.codec as store_codec
from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.entropy.temporal import TemporalCodec
from featcomp.errors import StoreError
from featcomp.store import StoreWriter, open_store, verify_store
from featcomp.store.codec import FeatcompANSNumcodec, decode_chunk, decode_chunks, encode_chunk

C = 8


def temporal_codec(seed: int = 0) -> TemporalCodec:
    """A small temporal codec with fixed integer parameters (AR(0.8) location, |k|-dependent scale)."""
    rng = np.random.default_rng(seed)
    F = 12
    fam = TableFamily.build(scale_grid(0.2, 20.0, 24), Q=4, radius=20, precision=14)
    w_loc = np.round(0.8 * np.eye(C) * 2**F).astype(np.int32) + rng.integers(-60, 60, (C, C)).astype(np.int32)
    w_scale = np.diag(np.full(C, 700)).astype(np.int32)
    return TemporalCodec(np.linspace(-0.2, 0.2, C).astype(np.float32), fam, w_loc, np.zeros(C, np.int64),
                         w_scale, np.full(C, 8 << F, np.int64), np.zeros(C, np.int64), np.full(C, 14, np.int32),
                         frac_bits=F)


def ar_latents(rng: np.random.Generator, t: int, trailing=()) -> np.ndarray:
    y = np.zeros((t, C) + trailing)
    y[0] = rng.laplace(0, 3, (C,) + trailing)
    for i in range(1, t):
        y[i] = 0.8 * y[i - 1] + rng.laplace(0, 1, (C,) + trailing)
    return np.round(y).astype(np.int32)


@pytest.fixture(scope="module")
def tcodec() -> TemporalCodec:
    return temporal_codec()


def _videos(rng, trailing=()):
    vids = {}
    for i, t in enumerate([23, 5, 40, 17, 1, 30]):
        k = ar_latents(rng, t, trailing)
        if i == 0:
            k[3].reshape(-1)[2] = np.iinfo(np.int32).max  # escapes survive the store
            k[4].reshape(-1)[0] = np.iinfo(np.int32).min
        if i == 2:
            k[10:14] = 0  # zero frames inside a chunk, then non-zero ones
            k[-6:] = 0  # trailing zero frames (dropped before coding in the last chunk)
        vids[f"v{i}"] = k
    return vids


@pytest.mark.parametrize("trailing", [(), (2, 3)])
def test_temporal_store_round_trips_exactly_and_records_its_kind(tmp_path, tcodec, trailing):
    rng = np.random.default_rng(5)
    vids = _videos(rng, trailing)
    path = tmp_path / "s"
    with StoreWriter(path, tcodec, chunk_frames=8, shard_chunks=4) as w:
        for vid, k in vids.items():
            rec = w.write(vid, k, np.arange(len(k)) / 5.0)
            assert rec.kind == "temporal" and rec.digest == tcodec.digest
    st = open_store(path)
    assert st.kind == "temporal" and st.header["format_version"] == 2
    assert st.header["codec"]["kind"] == "temporal"
    assert isinstance(st.codec, TemporalCodec) and st.codec == tcodec
    assert st.info()["codec_kind"] == "temporal"
    part_meta = json.loads((path / "parts" / st.index.parts[0] / "zarr.json").read_text())
    inner = part_meta["codecs"][0]["configuration"]["codecs"][0]
    assert inner["name"] == "featcomp.ans" and inner["configuration"]["kind"] == "temporal"
    for vid, k in vids.items():
        got = st[vid].latents()
        assert got.dtype == np.int32 and np.array_equal(got, k)
        np.testing.assert_array_equal(st[vid].features(), tcodec.dequantize(k))
    rep = verify_store(path)
    assert rep.ok and rep.kind == "temporal" and rep.format_version == 2 and rep.chunks > 0
    # plain zarr reads the same part (the codec config carries the kind)
    arr = zarr.open_array(str(path), path=f"parts/{st.index.parts[0]}", mode="r")
    j = st.index.ids.index("v2")
    s0, n = int(st.index.start[j]), int(st.index.length[j])
    np.testing.assert_array_equal(arr[s0 : s0 + n], vids["v2"])


def test_window_reads_decode_only_the_chunks_they_overlap(tmp_path, tcodec, monkeypatch):
    rng = np.random.default_rng(6)
    k = ar_latents(rng, 100)
    path = tmp_path / "s"
    cf = 8
    with StoreWriter(path, tcodec, chunk_frames=cf, shard_chunks=4) as w:
        w.write("a", k, np.arange(100) / 5.0)
    parsed = []
    real = store_codec._parse_chunk

    def spy(data, sample_shape):
        out = real(data, sample_shape)
        parsed.append(out[0])
        return out

    monkeypatch.setattr(store_codec, "_parse_chunk", spy)
    for a, b in [(0, 1), (9, 10), (30, 47), (15, 17), (57, 100), (95, 100)]:
        parsed.clear()
        st = open_store(path)  # fresh chunk cache
        got = st["a"].window(a, b).latents()
        np.testing.assert_array_equal(got, k[a:b])
        assert len(parsed) == (b - 1) // cf - a // cf + 1, (a, b, len(parsed))


def test_each_chunk_is_an_independent_temporal_stream(tcodec):
    """A chunk decodes alone: its bytes equal a fresh stream of exactly its own frames."""
    rng = np.random.default_rng(7)
    k = ar_latents(rng, 24)
    chunks = [encode_chunk(k[i : i + 8], tcodec) for i in range(0, 24, 8)]
    for i, raw in enumerate(chunks):
        assert raw.endswith(tcodec.compress_symbols(k[8 * i : 8 * i + 8]))
        np.testing.assert_array_equal(decode_chunk(raw, tcodec, (C,)), k[8 * i : 8 * i + 8])
    # batched decoding gives the same arrays; zero chunks and trailing zeros are restored
    z = k[:8].copy()
    z[5:] = 0
    raws = chunks + [encode_chunk(np.zeros((8, C), np.int32), tcodec), encode_chunk(z, tcodec)]
    outs = decode_chunks(raws, tcodec, (C,))
    for raw, out in zip(raws, outs):
        np.testing.assert_array_equal(out, decode_chunk(raw, tcodec, (C,)))
    np.testing.assert_array_equal(outs[-1], z)
    # the numcodecs front end carries the kind too
    nc = FeatcompANSNumcodec.from_codec(tcodec)
    assert nc.get_config()["kind"] == "temporal"
    np.testing.assert_array_equal(nc.decode(nc.encode(k[:8])), k[:8])


def test_temporal_store_opens_with_no_model_file_and_no_torch(tmp_path, tcodec):
    rng = np.random.default_rng(8)
    k = ar_latents(rng, 37, (2, 2))
    path = tmp_path / "s"
    with StoreWriter(path, tcodec, chunk_frames=8) as w:
        w.write("clip", k, np.arange(37) / 10.0)
    np.save(tmp_path / "k.npy", k)
    code = (
        "import sys, numpy as np\n"
        "from featcomp.store import open_store\n"
        f"st = open_store({str(path)!r})\n"
        "assert st.kind == 'temporal', st.kind\n"
        f"assert np.array_equal(st['clip'].latents(), np.load({str(tmp_path / 'k.npy')!r}))\n"
        "assert np.array_equal(st['clip'].window(9, 20).latents(), st['clip'].latents()[9:20])\n"
        "bad = [m for m in ('torch', 'torchvision', 'decord', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    import contextlib
    import io

    from featcomp.cli import main as cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli(["info", str(path)]) == 0
        assert cli(["verify", str(path)]) == 0
    text = buf.getvalue()
    assert "entropy model    temporal" in text and "(temporal entropy model)" in text and "OK" in text


def test_writer_refuses_another_kind_and_readers_refuse_unknown_kinds(tmp_path, tcodec, codec):
    rng = np.random.default_rng(9)
    path = tmp_path / "s"
    with StoreWriter(path, tcodec, chunk_frames=8) as w:
        w.write("a", ar_latents(rng, 12), np.arange(12) / 5.0)
    with pytest.raises(StoreError, match="digest mismatch"):
        StoreWriter(path, codec.__class__.fit(ar_latents(rng, 200)[:, :C]))
    # a kind this featcomp does not know (a newer writer) is refused with a clear message
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["featcomp"]["codec"]["kind"] = "futuristic"
    (path / "zarr.json").write_text(json.dumps(doc))
    st = open_store(path)
    with pytest.raises(StoreError, match="futuristic"):
        st["a"].latents()
    from featcomp.store.format import FORMAT_VERSION

    doc["attributes"]["featcomp"]["format_version"] = FORMAT_VERSION + 1
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="upgrade featcomp"):
        open_store(path)


def test_factorized_stores_keep_version_1_metadata(tmp_path, codec):
    rng = np.random.default_rng(10)
    path = tmp_path / "s"
    with StoreWriter(path, codec, chunk_frames=8) as w:
        w.write("a", rng.integers(-3, 3, (20, codec.channels)).astype(np.int32), np.arange(20) / 5.0)
    st = open_store(path)
    assert st.header["format_version"] == 1 and "kind" not in st.header["codec"] and st.kind == "factorized"
    part_meta = json.loads((path / "parts" / st.index.parts[0] / "zarr.json").read_text())
    conf = part_meta["codecs"][0]["configuration"]["codecs"][0]["configuration"]
    assert sorted(conf) == ["digest", "tables"]
    assert verify_store(path).kind == "factorized"


def test_hyperprior_store_round_trips_spatial_latents(tmp_path):
    import importlib.util
    from pathlib import Path

    fix = Path(__file__).resolve().parents[1] / "fixtures" / "make_hyperprior_golden.py"
    spec = importlib.util.spec_from_file_location("make_hyperprior_golden_s", fix)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    hcodec = mod.make_codec()
    rng = np.random.default_rng(12)
    vids = {f"v{i}": np.round(rng.laplace(0, 3, (t, 5, 5, 3))).astype(np.int32) for i, t in enumerate([9, 3, 14])}
    path = tmp_path / "s"
    with StoreWriter(path, hcodec, chunk_frames=4) as w:
        for vid, k in vids.items():
            w.write(vid, k, np.arange(len(k)) / 5.0)
    st = open_store(path)
    assert st.kind == "hyperprior" and st.header["format_version"] == 2 and st.codec == hcodec
    for vid, k in vids.items():
        np.testing.assert_array_equal(st[vid].latents(), k)
        np.testing.assert_array_equal(st[vid].window(2, 3).latents(), k[2:3])
    assert verify_store(path).ok

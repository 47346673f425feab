"""The two chunk read paths (featcomp.store.chunks): featcomp's shard reader and zarr's API return the
same arrays for every golden store and for fresh coded / raw stores, windows included, and both end
every kind of damage in a StoreError that names the shard (docs/decisions.md, "store reads through zarr").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featcomp.errors import StoreError
from featcomp.store import StoreWriter, open_store
from featcomp.store.chunks import ChunkSource, ZarrChunks

from .conftest import laplace_latents

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "store"
GOLDEN_STORES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and (p / "zarr.json").exists())
PATHS = ["hand", "zarr"]
N_IDX = 16 * 4 + 4


def _windows(n: int, cf: int) -> list[tuple[int, int]]:
    """Windows of a part of ``n`` frames: single frames, chunk edges, across chunks and shards, all."""
    out = {(0, n), (0, 1), (n - 1, n), (0, min(n, cf)), (max(0, n - cf - 1), n)}
    for a in range(0, n, max(1, cf // 2)):
        out |= {(a, min(n, a + 1)), (a, min(n, a + cf + 1)), (a, min(n, a + 3 * cf + 2))}
    return sorted((a, b) for a, b in out if 0 <= a < b <= n)


def _assert_same(path: Path) -> int:
    """Both paths agree: every whole video and window through the public API, every window of every
    part straight from the two chunk sources. Returns the number of comparisons."""
    hand, zarr_ = open_store(path, read_path="hand"), open_store(path, read_path="zarr")
    checks = 0
    for vid in hand:
        want = hand[vid].stored()
        got = zarr_[vid].stored()
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        n = len(want)
        for a, b in [(0, n), (0, 1), (n // 3, n), (1, max(1, n - 1))]:
            np.testing.assert_array_equal(zarr_[vid].window(a, b).stored(), want[a:b])
            np.testing.assert_array_equal(zarr_[vid].window(a, b).features(), hand[vid].window(a, b).features())
            checks += 1
    # the zarr path was taken (and its windows were served once the video was proven)
    parts = {int(p) for p in hand.index.part}
    assert parts and all(zarr_._part(p)._zarr is not None for p in parts)
    assert all(hand._part(p)._zarr is None for p in parts)
    for p in parts:
        part = hand._part(p)
        src = part.zarr_chunks()
        assert isinstance(part, ChunkSource) and isinstance(src, ChunkSource)
        for a, b in _windows(part.shape[0], part.chunk_frames):
            x, y = part.read(a, b, "w"), src.read(a, b, "w")
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(y, x)
            checks += 1
    return checks


@pytest.mark.parametrize("name", GOLDEN_STORES)
def test_both_paths_read_every_golden_store_the_same(name):
    assert _assert_same(GOLDEN / name) > 10
    exp = np.load(GOLDEN / f"{name}_expected.npz")
    st = open_store(GOLDEN / name, read_path="zarr")
    keys = [k for k in exp.files if k.startswith(("latents/", "features/"))]
    assert keys
    for k in keys:
        what, vid = k.split("/", 1)
        got = st[vid].latents() if what == "latents" else st[vid].features()
        np.testing.assert_allclose(got, exp[k], rtol=1e-6, atol=0)


def _fresh(path: Path, kind: str, rng) -> dict[str, np.ndarray]:
    vids: dict[str, np.ndarray] = {}
    lengths = [5, 40, 17, 1, 33, 64, 9]
    if kind == "coded":
        from featcomp.entropy import EntropyCodec

        codec = EntropyCodec.fit(laplace_latents(rng, 2000))
        w = StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id="w1")
    else:
        w = StoreWriter(path, None, raw=True, raw_dtype=kind, chunk_frames=8, shard_chunks=4, writer_id="w1")
    with w:
        for i, t in enumerate(lengths):
            if kind == "coded":
                x = laplace_latents(rng, t)
                if i == 5:
                    x[8:40] = 0  # whole all-zero chunks (empty slots; with shard 1 all zero: no shard file)
            else:
                x = rng.standard_normal((t, 12)).astype(np.float32)
            vids[f"v{i}"] = x
            w.write(f"v{i}", x, np.arange(t) / 5)
    return vids


@pytest.mark.parametrize("kind", ["coded", "float16", "int8"])
def test_both_paths_read_fresh_stores_the_same(tmp_path, rng, kind):
    vids = _fresh(tmp_path / "s", kind, rng)
    assert _assert_same(tmp_path / "s") > 20
    st = open_store(tmp_path / "s", read_path="zarr")
    if kind == "coded":
        for vid, k in vids.items():
            np.testing.assert_array_equal(st[vid].latents(), k)
    elif kind == "float16":
        for vid, f in vids.items():
            np.testing.assert_array_equal(st[vid].stored(), f.astype(np.float16))


def test_read_path_is_checked_and_survives_pickling(tmp_path, rng):
    import pickle

    _fresh(tmp_path / "s", "coded", rng)
    with pytest.raises(StoreError, match="read_path"):
        open_store(tmp_path / "s", read_path="fast")
    st = pickle.loads(pickle.dumps(open_store(tmp_path / "s", read_path="zarr")))
    assert st.read_path == "zarr"
    assert open_store(tmp_path / "s").read_path == "auto"


# ------------------------------------------------------------------------ damage, both paths
def _coded(path: Path, rng) -> dict[str, np.ndarray]:
    from featcomp.entropy import EntropyCodec

    codec = EntropyCodec.fit(laplace_latents(rng, 2000))
    vids = {}
    with StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        for i in range(4):
            vids[f"v{i}"] = laplace_latents(rng, 40)
            w.write(f"v{i}", vids[f"v{i}"], np.arange(40) / 5)
    return vids


def _shard(path: Path, s: int) -> Path:
    return path / "parts" / "w1" / "c" / str(s) / "0"


def _forge(shard: Path, change: str) -> None:
    import google_crc32c

    data = shard.read_bytes()
    offs = np.frombuffer(data[-N_IDX:-4], "<u8").reshape(4, 2).copy()
    body = data[:-N_IDX]
    if change == "swap":
        offs[[1, 2]] = offs[[2, 1]]
    elif change == "overlap":
        offs[1] = offs[0]
    else:  # drop the last chunk: the file consistent, the slot empty (zarr reads zeros)
        body = body[: int(offs[3, 0])]
        offs[3] = (2**64 - 1, 2**64 - 1)
    idx = offs.astype("<u8").tobytes()
    shard.write_bytes(body + idx + google_crc32c.value(idx).to_bytes(4, "little"))


@pytest.mark.parametrize("read_path", PATHS)
@pytest.mark.parametrize("change", ["swap", "overlap", "drop_last"])
def test_a_forged_shard_index_is_a_store_error_on_both_paths(tmp_path, rng, read_path, change):
    vids = _coded(tmp_path / "s", rng)
    shard = _shard(tmp_path / "s", 0)  # frames 0..31: v0 only
    _forge(shard, change)
    # zarr itself follows the forged index (the reason the hand path keeps its check) ...
    part = open_store(tmp_path / "s", read_path="hand")._part(0)
    assert not np.array_equal(ZarrChunks(part.store, part.name, part.shape, part.values_dtype).read(0, 32, "v0"),
                              vids["v0"][:32])
    # ... but no path serves it
    st = open_store(tmp_path / "s", read_path=read_path)
    with pytest.raises(StoreError, match=r"parts/w1/c/0/0"):
        st["v0"].latents()
    with pytest.raises(StoreError, match=r"parts/w1/c/0/0"):
        st["v0"].window(8, 30).latents()
    np.testing.assert_array_equal(st["v1"].latents(), vids["v1"])


@pytest.mark.parametrize("read_path", PATHS)
def test_a_corrupt_chunk_names_video_and_chunk_on_both_paths(tmp_path, rng, read_path):
    vids = _coded(tmp_path / "s", rng)
    shard = _shard(tmp_path / "s", 0)
    data = bytearray(shard.read_bytes())
    idx = np.frombuffer(bytes(data[-N_IDX:-4]), dtype="<u8").reshape(4, 2)
    off, nb = int(idx[1, 0]), int(idx[1, 1])
    data[off + nb // 2] ^= 0x5A
    shard.write_bytes(bytes(data))
    st = open_store(tmp_path / "s", read_path=read_path)
    with pytest.raises(StoreError) as e:
        st["v0"].latents()
    assert "v0" in str(e.value) and "chunk 1" in str(e.value) and "c/0/0" in str(e.value)
    np.testing.assert_array_equal(st["v0"].window(16, 40).latents(), vids["v0"][16:40])
    np.testing.assert_array_equal(st["v3"].latents(), vids["v3"])


@pytest.mark.parametrize("read_path", PATHS)
@pytest.mark.parametrize("kind", ["coded", "float16"])
def test_a_missing_or_truncated_shard_is_a_store_error_naming_it_on_both_paths(tmp_path, rng, read_path, kind):
    if kind == "coded":
        _coded(tmp_path / "s", rng)
    else:
        with StoreWriter(tmp_path / "s", None, raw=True, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
            for i in range(4):
                w.write(f"v{i}", rng.standard_normal((40, 12)).astype(np.float16), np.arange(40) / 5)
    shard = _shard(tmp_path / "s", 1)  # frames 32..63: v0's tail and v1's head
    shard.write_bytes(shard.read_bytes()[:-30])
    with pytest.raises(StoreError, match=r"v1.*(truncated|CRC)"):
        open_store(tmp_path / "s", read_path=read_path)["v1"].latents() if kind == "coded" else \
            open_store(tmp_path / "s", read_path=read_path)["v1"].stored()
    shard.unlink()
    st = open_store(tmp_path / "s", read_path=read_path)
    read = (lambda v: v.latents()) if kind == "coded" else (lambda v: v.stored())
    with pytest.raises(StoreError, match=r"parts/w1/c/1/0.*missing|missing.*parts/w1/c/1/0"):
        read(st["v1"])
    with pytest.raises(StoreError, match=r"c/1/0"):
        read(st["v1"].window(0, 4))  # frames 40..43: inside the missing shard, zeros never served


# ------------------------------------------------------------------------ object storage (moto server)
@pytest.mark.timeout(120)
def test_both_paths_read_an_s3_store_the_same_and_name_a_missing_shard(s3_server, s3_bucket, tmp_path, rng):
    import s3fs

    vids = _coded(tmp_path / "s", rng)
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **s3_server.storage_options)
    fs.put(str(tmp_path / "s"), f"{s3_bucket}/s", recursive=True)
    url = f"s3://{s3_bucket}/s"
    opts = s3_server.storage_options
    for read_path in PATHS:
        st = open_store(url, storage_options=opts, read_path=read_path)
        for vid, k in vids.items():
            np.testing.assert_array_equal(st[vid].latents(), k)
            np.testing.assert_array_equal(st[vid].window(3, 27).latents(), k[3:27])
        assert (st._part(0)._zarr is not None) == (read_path == "zarr")
        part = st._part(0)
        for a, b in _windows(part.shape[0], part.chunk_frames):
            np.testing.assert_array_equal(part.zarr_chunks().read(a, b, "w"), part.read(a, b, "w"))
    fs.rm(f"{s3_bucket}/s/parts/w1/c/1/0")
    for read_path in PATHS:
        st = open_store(url, storage_options=opts, read_path=read_path)
        with pytest.raises(StoreError, match=r"parts/w1/c/1/0.*missing|missing.*parts/w1/c/1/0"):
            st["v1"].latents()
        np.testing.assert_array_equal(st["v3"].latents(), vids["v3"])

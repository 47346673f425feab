"""Issue 14: verify and info report every problem (by file and video, never a traceback, --json), an
all-zero video alone in a shard reads, and windows of a raw store or of a lost shard are proven by the
video's CRC instead of returning zeros or garbage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from featcomp.cli import main as cli_main
from featcomp.errors import StoreError
from featcomp.store import StoreWriter, compact_store, open_store, verify_store

from .conftest import C, laplace_latents


def _shard(path: Path, s: int, part: str = "w1") -> Path:
    return path / "parts" / part / "c" / str(s) / "0"


def _zero_video_store(tmp_path, codec, rng):
    path = tmp_path / "z"
    a, b = laplace_latents(rng, 32), laplace_latents(rng, 20)
    with StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:  # 32-frame shards
        w.write("a", a, np.arange(32) / 5)
        w.write("zero", np.zeros((32, C), np.int32), np.arange(32) / 5)  # frames 32..63: shard 1 alone
        w.write("b", b, np.arange(20) / 5)
    return path, a, b


def test_an_all_zero_video_alone_in_a_shard_reads(tmp_path, codec, rng):
    path, a, b = _zero_video_store(tmp_path, codec, rng)
    assert not _shard(path, 1).exists()  # zarr writes no shard whose chunks all equal the fill value
    st = open_store(path)
    assert np.array_equal(st["zero"].latents(), np.zeros((32, C), np.int32))  # was: "shard file is missing"
    assert np.array_equal(st["zero"].window(3, 17).latents(), np.zeros((14, C), np.int32))
    assert np.array_equal(st["b"].latents(), b)
    rep = verify_store(path)
    assert rep.ok, rep.problems


def test_a_lost_shard_is_never_read_as_zeros(tmp_path, codec, rng):
    path, a, _ = _zero_video_store(tmp_path, codec, rng)
    _shard(path, 0).unlink()  # video a's data
    st = open_store(path)
    with pytest.raises(StoreError, match=r"'a'.*missing"):
        st["a"].latents()
    with pytest.raises(StoreError, match=r"'a'.*missing"):
        st["a"].window(4, 9).latents()  # a window too: proven by the whole video's CRC
    assert np.array_equal(st["zero"].latents(), np.zeros((32, C), np.int32))
    rep = verify_store(path)
    assert not rep.ok
    assert {(i["video"], i["file"]) for i in rep.issues} >= {("a", "parts/w1/c/0/0")}


def _flip_inside_a_raw_chunk(path: Path) -> int:
    """Flip one byte of a zstd chunk so that it still decompresses (to other values). Returns the chunk."""
    from numcodecs.zstd import Zstd

    shard = _shard(path, 0)
    data = bytearray(shard.read_bytes())
    n = 4
    idx = np.frombuffer(bytes(data[-(16 * n + 4) : -4]), dtype="<u8").reshape(n, 2)
    for j in (1, 2):
        off, nb = int(idx[j, 0]), int(idx[j, 1])
        good = Zstd().decode(bytes(data[off : off + nb]))
        for k in range(nb - 8, nb // 2, -1):
            trial = bytearray(data[off : off + nb])
            trial[k] ^= 0x10
            try:
                bad = Zstd().decode(bytes(trial))
            except Exception:  # noqa: BLE001 - try another byte
                continue
            if len(bad) == len(good) and bad != good:
                data[off + k] ^= 0x10
                shard.write_bytes(bytes(data))
                return j
    raise AssertionError("no byte flip that still decodes")


def test_a_raw_window_over_a_damaged_chunk_is_an_error_not_garbage(tmp_path, rng):
    path = tmp_path / "raw"
    x = rng.standard_normal((40, 32)).astype(np.float16)
    with StoreWriter(path, None, raw=True, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        w.write("v", x, np.arange(40) / 5)
    j = _flip_inside_a_raw_chunk(path)
    st = open_store(path)
    with pytest.raises(StoreError, match=r"'v'.*CRC"):
        st["v"].window(j * 8, j * 8 + 4).features()  # was: silently different values
    with pytest.raises(StoreError, match="CRC"):
        st["v"].features()
    assert not verify_store(path).ok


def test_a_raw_window_of_an_intact_video_reads(tmp_path, rng):
    path = tmp_path / "raw"
    x = rng.standard_normal((40, 32)).astype(np.float16)
    with StoreWriter(path, None, raw=True, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        w.write("v", x, np.arange(40) / 5)
    st = open_store(path)
    np.testing.assert_array_equal(st["v"].window(9, 30).features(), x[9:30].astype(np.float32))


@pytest.mark.timeout(60)
def test_verify_reports_a_truncated_timestamp_chunk_by_file_and_video(tmp_path, codec, rng, capsys):
    path = tmp_path / "t"
    ts = np.cumsum(rng.uniform(0.1, 0.3, 40))  # not affine: stored in times/w1
    with StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        w.write("jitter", laplace_latents(rng, 40), ts)
        w.write("ok", laplace_latents(rng, 10), np.arange(10) / 5)
    chunks = [p for p in (path / "times" / "w1").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert chunks
    for p in chunks:
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    st = open_store(path)
    with pytest.raises(StoreError, match=r"'jitter'.*timestamps"):
        st["jitter"].timestamps  # noqa: B018 - was RuntimeError: Zstd decompression error
    rep = verify_store(path)  # was: the RuntimeError escaped verify
    assert not rep.ok
    assert [(i["file"], i["video"]) for i in rep.issues] == [("times/w1", "jitter")]
    assert cli_main(["verify", str(path)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err and "jitter" in out.out
    assert cli_main(["verify", "--json", str(path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["problems"][0]["video"] == "jitter" and doc["problems"][0]["file"] == "times/w1"


def test_verify_of_a_store_whose_index_cannot_be_read_reports_it(tmp_path, codec, rng, capsys):
    path = tmp_path / "s"
    with StoreWriter(path, codec, chunk_frames=8, writer_id="w1") as w:
        w.write("v", laplace_latents(rng, 10), np.arange(10) / 5)
    (ix,) = (path / "index").iterdir()  # the writer folded its log into one index file at close
    data = bytearray(ix.read_bytes())
    data[-3] ^= 0xFF
    ix.write_bytes(bytes(data))
    rep = verify_store(path)
    assert not rep.ok and rep.issues[0]["file"] == f"index/{ix.name}"
    assert cli_main(["verify", "--json", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["problems"][0]["file"] == f"index/{ix.name}"


def test_info_lists_failures_with_ids_paths_and_reasons(tmp_path, codec, rng, capsys):
    path = tmp_path / "f"
    with StoreWriter(path, codec, chunk_frames=8, writer_id="w1") as w:
        w.write("good", laplace_latents(rng, 10), np.arange(10) / 5)
        w.record_failure("bad", "/data/bad.mp4", "VideoError: zero frames")
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "failures         1" in out and "bad" in out and "/data/bad.mp4" in out and "zero frames" in out
    assert cli_main(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failures"] == 1
    assert doc["failed_videos"] == [{"id": "bad", "path": "/data/bad.mp4", "error": "VideoError: zero frames", "writer": "w1"}]


def _two_writer_store(tmp_path, codec, rng):
    path = tmp_path / "two"
    data = {}
    for w_id, ids in (("w1", ["a", "b"]), ("w2", ["c"])):
        with StoreWriter(path, codec, chunk_frames=8, writer_id=w_id) as w:
            for vid in ids:
                data[vid] = laplace_latents(rng, 12)
                w.write(vid, data[vid], np.arange(12) / 5)
    return path, data


def test_one_corrupt_index_file_leaves_the_other_videos_served(tmp_path, codec, rng):
    """Was: one corrupt index file took the whole store offline (open_store raised)."""
    path, data = _two_writer_store(tmp_path, codec, rng)
    ix = path / "index" / "w1.fcidx"
    raw = bytearray(ix.read_bytes())
    raw[-3] ^= 0xFF
    ix.write_bytes(bytes(raw))
    st = open_store(path)
    assert sorted(st) == ["c"] and np.array_equal(st["c"].latents(), data["c"])
    assert list(st.damaged) == ["index/w1.fcidx"] and "corrupt index file" in st.damaged["index/w1.fcidx"]
    rep = verify_store(path)
    assert not rep.ok and rep.issues[0]["file"] == "index/w1.fcidx"
    with pytest.raises(StoreError, match="w1.fcidx"):  # never folded (and deleted) by a compaction
        compact_store(path)
    assert ix.exists()
    # a writer opens the store and writes the lost videos again (a re-run of the job)
    with StoreWriter(path, codec, chunk_frames=8, writer_id="w3") as w:
        assert "a" not in w and "c" in w
        w.write("a", data["a"], np.arange(12) / 5)
    assert np.array_equal(open_store(path)["a"].latents(), data["a"])


def test_a_bad_commit_log_line_loses_only_its_video(tmp_path, codec, rng):
    path = tmp_path / "log"
    w = StoreWriter(path, codec, chunk_frames=8, writer_id="w1")  # left open: its log stays a log
    data = {}
    for vid in ("a", "b", "c"):
        data[vid] = laplace_latents(rng, 12)
        w.write(vid, data[vid], np.arange(12) / 5)
    log = path / "index" / "w1.log"
    lines = log.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"start":', b'"start":"x","o":')  # b's record damaged
    log.write_bytes(b"\n".join(lines))
    st = open_store(path)
    assert sorted(st) == ["a", "c"] and np.array_equal(st["c"].latents(), data["c"])
    assert list(st.damaged) == ["index/w1.log line 2"]
    rep = verify_store(path)
    assert [i["file"] for i in rep.issues] == ["index/w1.log"] and "line 2" in rep.issues[0]["problem"]


@pytest.mark.timeout(60)
def test_a_raw_chunk_declaring_256_mib_is_refused_without_allocating(tmp_path, rng):
    """A raw chunk's zstd frame replaced by one that declares 256 MiB (shard index CRC recomputed)."""
    import tracemalloc

    import google_crc32c
    from numcodecs.zstd import Zstd

    path = tmp_path / "raw"
    with StoreWriter(path, None, raw=True, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        w.write("v", rng.standard_normal((32, 32)).astype(np.float16), np.arange(32) / 5)
    shard = _shard(path, 0)
    data = shard.read_bytes()
    n = 4
    offs = np.frombuffer(data[-(16 * n + 4) : -4], "<u8").reshape(n, 2).copy()
    bomb = Zstd(level=3).encode(b"\0" * (256 << 20))
    body = data[: -(16 * n + 4)]
    offs[0] = (len(body), len(bomb))
    body += bomb
    idx = offs.astype("<u8").tobytes()
    shard.write_bytes(body + idx + google_crc32c.value(idx).to_bytes(4, "little"))
    st = open_store(path)
    tracemalloc.start()
    try:
        with pytest.raises(StoreError, match="chunk 0"):
            st["v"].window(0, 4).features()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak

"""Issue 14: index files that name what they lost (.fcidx version 5), `featcomp repair`, writers that
register themselves (a crashed writer's deleted log is no longer silent), and shard indexes whose
CRC32C matches but whose chunk table was rewritten."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from featcomp.cli import main as cli_main
from featcomp.errors import DamagedIndexError, StoreError
from featcomp.store import StoreWriter, compact_store, open_store, repair_store, verify_store
from featcomp.store.format import decode_index_file, encode_index_file, index_file_names

from .conftest import C, laplace_latents

N_IDX = 16 * 4 + 4  # shard index bytes of a 4-chunk shard


def _flip(path: Path, pos: int = -3) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def _write(path, codec, rng, writer_id, ids, *, close=True, t=40, irregular=()):
    data = {}
    w = StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id=writer_id)
    for vid in ids:
        data[vid] = laplace_latents(rng, t)
        ts = np.cumsum(rng.uniform(0.1, 0.3, t)) if vid in irregular else np.arange(t) / 5
        w.write(vid, data[vid], ts, metadata={"path": f"/data/{vid}.mp4"})
        data[vid] = (data[vid], ts)
    if close:
        w.close()
    else:
        w._log.close()  # what a kill -9 does: the log stays, its flock is released (compaction/repair may fold it)
    return data


def _check_all(path, data):
    st = open_store(path)
    assert sorted(st) == sorted(data)
    for vid, (k, ts) in data.items():
        np.testing.assert_array_equal(st[vid].latents(), k)
        np.testing.assert_array_equal(st[vid].timestamps, ts)
    return st


# ------------------------------------------------------------------------ index files name their videos
def test_a_damaged_version_5_index_file_still_names_its_videos(tmp_path, codec, rng):
    """Before (version 4): a damaged index file said nothing of the videos it held."""
    path = tmp_path / "s"
    data = _write(path, codec, rng, "w1", ["a", "b"])
    data.update(_write(path, codec, rng, "w2", ["c"]))
    ix = path / "index" / "w1.fcidx"
    assert ix.read_bytes()[6] == 5
    assert index_file_names(ix.read_bytes()) == (["w1"], ["a", "b"])
    _flip(ix)  # in the payload (the columns)
    with pytest.raises(DamagedIndexError) as e:
        decode_index_file(ix.read_bytes(), "x")
    assert e.value.video_ids == ["a", "b"] and e.value.parts == ["w1"] and isinstance(e.value, StoreError)
    st = open_store(path)
    assert sorted(st) == ["c"]  # every intact video is still served
    np.testing.assert_array_equal(st["c"].latents(), data["c"][0])
    assert st.lost_videos == {"a": "index/w1.fcidx", "b": "index/w1.fcidx"}
    rep = verify_store(path)
    assert not rep.ok
    assert {(i["file"], i["video"]) for i in rep.issues} == {("index/w1.fcidx", None), ("index/w1.fcidx", "a"),
                                                              ("index/w1.fcidx", "b")}


@pytest.mark.parametrize("where", ["header", "names"])
def test_damage_to_the_header_or_the_names_block(tmp_path, codec, rng, where):
    path = tmp_path / "s"
    _write(path, codec, rng, "w1", ["a", "b"])
    ix = path / "index" / "w1.fcidx"
    m = int.from_bytes(ix.read_bytes()[8:12], "little")
    _flip(ix, 20 + m + 12 if where == "header" else 20 + m // 2)
    st = open_store(path)
    assert len(st) == 0 and list(st.damaged) == ["index/w1.fcidx"]
    # a damaged header still leaves the names; a damaged names block names nothing (and says so)
    assert st.lost_videos == ({"a": "index/w1.fcidx", "b": "index/w1.fcidx"} if where == "header" else {})
    assert not verify_store(path).ok


def test_older_index_file_versions_are_still_written_on_request_byte_for_byte(tmp_path, codec, rng):
    path = tmp_path / "s"
    _write(path, codec, rng, "w1", ["a", "b"], irregular=("b",))
    tab = decode_index_file((path / "index" / "w1.fcidx").read_bytes(), "x")
    old = encode_index_file(tab, version=4)
    assert old[6] == 4 and index_file_names(old) is None
    assert encode_index_file(decode_index_file(old, "y"), version=4) == old
    with pytest.raises(StoreError, match="version 4"):
        encode_index_file(tab, version=2)  # the table needs the times_crc column


# ------------------------------------------------------------------------------------------- repair
def test_repair_rebuilds_a_damaged_index_file_from_the_writer_table(tmp_path, codec, rng, capsys):
    path = tmp_path / "s"
    data = _write(path, codec, rng, "w1", ["a", "b"], irregular=("b",))
    data.update(_write(path, codec, rng, "w2", ["c"]))
    ix = path / "index" / "w1.fcidx"
    _flip(ix)
    damaged = ix.read_bytes()
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    dry = repair_store(path, dry_run=True)
    assert dry.changed and sorted(dry.recovered) == ["a", "b"] and not dry.lost_videos
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before  # a dry run writes nothing
    assert cli_main(["repair", "--dry-run", "--json", str(path)]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["recovered"]) == ["a", "b"]

    rep = repair_store(path)
    assert sorted(rep.recovered) == ["a", "b"] and not rep.lost_videos and not rep.unproven
    assert rep.damaged.keys() == {"index/w1.fcidx"}
    # nothing deleted: the damaged file (and the intact one folded into the new index) moved aside
    aside = path / rep.directory
    assert (aside / "index" / "w1.fcidx").read_bytes() == damaged
    assert (aside / "index" / "w2.fcidx").exists()
    assert json.loads((aside / "report.json").read_text())["recovered"].keys() == {"a", "b"}
    assert [p.name for p in (path / "index").iterdir()] == [Path(rep.index_file).name]
    st = _check_all(path, data)
    assert st["a"].metadata == {"repaired": rep.repair_id}  # the table does not keep metadata
    assert st["c"].metadata == {"path": "/data/c.mp4"}
    assert verify_store(path).ok
    again = repair_store(path)
    assert not again.changed and again.index_file is None
    assert cli_main(["repair", str(path)]) == 0
    assert "nothing to repair" in capsys.readouterr().out


def test_repair_drops_a_video_whose_data_is_damaged_and_a_rerun_writes_it_again(tmp_path, codec, rng, capsys):
    path = tmp_path / "s"
    data = _write(path, codec, rng, "w1", ["v0", "v1", "v2"])  # 40 frames each; shard 0 = frames 0..31 (v0)
    shard = path / "parts" / "w1" / "c" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    idx = np.frombuffer(bytes(raw[-N_IDX:-4]), "<u8").reshape(4, 2)
    raw[int(idx[1, 0]) + int(idx[1, 1]) // 2] ^= 0x5A  # chunk 1 (frames 8..15) of v0
    shard.write_bytes(bytes(raw))
    assert not verify_store(path).ok
    rep = repair_store(path)
    assert list(rep.lost_videos) == ["v0"] and "chunk 1" in rep.lost_videos["v0"] and not rep.recovered
    assert cli_main(["repair", "--json", str(path)]) == 0  # the second run: nothing left to do
    assert json.loads(capsys.readouterr().out)["changed"] is False
    st = open_store(path)
    assert sorted(st) == ["v1", "v2"]
    after = verify_store(path)
    assert after.ok and list(after.lost) == ["v0"]  # reported exactly what is lost
    assert cli_main(["verify", str(path)]) == 0
    assert "LOST: video 'v0'" in capsys.readouterr().out
    # a re-run writes the lost video again (writers count only indexed videos)
    with StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id="w9") as w:
        assert "v0" not in w and "v1" in w
        w.write("v0", data["v0"][0], data["v0"][1])
    _check_all(path, data)
    final = verify_store(path)
    assert final.ok and not final.lost


def test_repair_folds_a_crashed_writers_log_without_its_damaged_line(tmp_path, codec, rng):
    path = tmp_path / "s"
    data = _write(path, codec, rng, "w1", ["a", "b", "c"], close=False)
    log = path / "index" / "w1.log"
    lines = log.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"length":40', b'"length":30')  # b's line: its checksum no longer matches
    log.write_bytes(b"\n".join(lines))
    assert open_store(path).lost_videos == {"b": "index/w1.log line 2"}
    damaged = log.read_bytes()
    rep = repair_store(path)
    assert rep.damaged.keys() == {"index/w1.log line 2"} and list(rep.lost_videos) == ["b"]
    assert not log.exists() and (path / rep.directory / "index" / "w1.log").read_bytes() == damaged
    del data["b"]
    _check_all(path, data)
    v = verify_store(path)
    assert v.ok and list(v.lost) == ["b"]


def test_repair_leaves_a_live_writers_log_alone(tmp_path, codec, rng):
    path = tmp_path / "s"
    _write(path, codec, rng, "w1", ["a"])
    live = StoreWriter(path, codec, chunk_frames=8, writer_id="live")
    live.write("x", laplace_latents(rng, 10), np.arange(10) / 5)
    _flip(path / "index" / "w1.fcidx")
    rep = repair_store(path)
    assert rep.live == ["index/live.log"] and (path / "index" / "live.log").exists()
    assert sorted(rep.recovered) == ["a"]
    live.write("y", laplace_latents(rng, 10), np.arange(10) / 5)  # the writer goes on, undisturbed
    live.close()
    assert sorted(open_store(path)) == ["a", "x", "y"] and verify_store(path).ok


def test_repair_on_an_object_store_url(codec, rng):
    """memory:// (commit logs as one object per record, .log.d/): moved aside object by object."""
    import fsspec

    url = f"memory://repair-{os.getpid()}/s"
    try:
        data = _write(url, codec, rng, "w1", ["a", "b"], close=False)
        fs = fsspec.filesystem("memory")
        recs = sorted(fs.ls(url[len("memory://"):] + "/index/w1.log.d", detail=False))
        fs.pipe(recs[0], fs.cat(recs[0]).replace(b'"length":40', b'"length":41'))
        rep = repair_store(url)
        assert list(rep.lost_videos) == ["a"] and rep.index_file
        assert not fs.exists(url[len("memory://"):] + "/index/w1.log.d")
        st = open_store(url)
        assert sorted(st) == ["b"] and np.array_equal(st["b"].latents(), data["b"][0])
        assert verify_store(url).ok
    finally:
        fsspec.filesystem("memory").rm(f"/repair-{os.getpid()}", recursive=True)


def test_a_store_whose_header_is_damaged_is_not_repaired(tmp_path, codec, rng):
    path = tmp_path / "s"
    _write(path, codec, rng, "w1", ["a"])
    (path / "zarr.json").write_text("{")
    with pytest.raises(StoreError, match="zarr.json"):
        repair_store(path)
    assert cli_main(["repair", str(path)]) == 1


# ------------------------------------------------------------------------------ writer registration
def test_a_crashed_writers_deleted_log_is_reported(tmp_path, codec, rng, capsys):
    """Before: a crashed writer leaves no videos/ table, so deleting its log was silent (verify OK)."""
    path = tmp_path / "s"
    _write(path, codec, rng, "w1", ["a"])
    idle = StoreWriter(path, codec, writer_id="idle")  # wrote nothing: registers nothing
    idle.close()
    _write(path, codec, rng, "w2", ["b", "c"], close=False)
    assert sorted(p.name for p in (path / "writers").iterdir()) == ["w1.json", "w2.json"]
    assert json.loads((path / "writers" / "w2.json").read_text())["part"] == "parts/w2"
    assert verify_store(path).ok
    compact_store(path)  # folding the crashed writer's log keeps it recorded (the merged file names its part)
    assert verify_store(path).ok
    (merged,) = (path / "index").iterdir()
    tab = decode_index_file(merged.read_bytes(), "m")
    assert tab.parts == ["w1", "w2"]
    only_w1 = tab.take(np.flatnonzero(tab.part == 0))
    only_w1.parts = ["w1"]
    merged.write_bytes(encode_index_file(only_w1))  # every trace of w2 in the index gone
    rep = verify_store(path)
    assert not rep.ok and [(i["file"], i["video"]) for i in rep.issues] == [("writers/w2.json", None)]
    assert "'w2'" in rep.problems[0] and "deleted" in rep.problems[0]
    fixed = repair_store(path)
    assert list(fixed.lost_writers) == ["w2"]
    v = verify_store(path)
    assert v.ok and list(v.lost) == ["writer:w2"]
    assert cli_main(["verify", str(path)]) == 0
    assert "LOST: writer w2" in capsys.readouterr().out


def test_a_deleted_crashed_log_is_reported(tmp_path, codec, rng):
    path = tmp_path / "s"
    _write(path, codec, rng, "w2", ["b"], close=False)
    (path / "index" / "w2.log").unlink()
    rep = verify_store(path)
    assert not rep.ok and rep.issues[0]["file"] == "writers/w2.json"


# ------------------------------------------------------------------- forged shard indexes (valid CRC)
def _forge_index(shard: Path, change) -> None:
    import google_crc32c

    data = shard.read_bytes()
    offs = np.frombuffer(data[-N_IDX:-4], "<u8").reshape(4, 2).copy()
    body = change(offs, data[:-N_IDX])
    idx = offs.astype("<u8").tobytes()
    shard.write_bytes(body + idx + google_crc32c.value(idx).to_bytes(4, "little"))


def _swap(offs, body):
    offs[[1, 2]] = offs[[2, 1]]
    return body


def _overlap(offs, body):
    offs[1] = offs[0]  # chunk 1 reads chunk 0's bytes (a valid stream on its own)
    return body


def _drop_last(offs, body):
    body = body[: int(offs[3, 0])]
    offs[3] = (2**64 - 1, 2**64 - 1)  # the last chunk removed, the file consistent: reads as zeros
    return body


@pytest.mark.parametrize("change", [_swap, _overlap, _drop_last])
def test_a_forged_shard_index_with_a_valid_crc_is_detected(tmp_path, codec, rng, change):
    path = tmp_path / "s"
    data = _write(path, codec, rng, "w1", ["v0", "v1"])
    shard = path / "parts" / "w1" / "c" / "0" / "0"
    _forge_index(shard, change)
    st = open_store(path)
    with pytest.raises(StoreError, match=r"parts/w1/c/0/0"):
        st["v0"].window(8, 30).latents()  # was: chunks served in the wrong place (or zeros), silently
    with pytest.raises(StoreError, match=r"parts/w1/c/0/0"):
        st["v0"].latents()
    np.testing.assert_array_equal(st["v1"].window(10, 20).latents(), data["v1"][0][10:20])
    rep = verify_store(path)
    assert not rep.ok and any("parts/w1/c/0/0" in p for p in rep.problems)
    fixed = repair_store(path)
    assert list(fixed.lost_videos) == ["v0"]


def test_a_window_over_an_all_zero_chunk_of_an_intact_video_reads(tmp_path, codec, rng):
    path = tmp_path / "s"
    k = laplace_latents(rng, 40)
    k[16:24] = 0  # chunk 2: all zero, not written by zarr (an empty slot in the shard index)
    with StoreWriter(path, codec, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        w.write("v", k, np.arange(40) / 5)
    shard = path / "parts" / "w1" / "c" / "0" / "0"
    offs = np.frombuffer(shard.read_bytes()[-N_IDX:-4], "<u8").reshape(4, 2)
    assert offs[2, 0] == 2**64 - 1
    np.testing.assert_array_equal(open_store(path)["v"].window(15, 26).latents(), k[15:26])
    assert verify_store(path).ok


@pytest.mark.timeout(60)
def test_a_raw_chunk_declaring_256_mib_in_a_well_formed_shard_is_refused_without_allocating(tmp_path, rng):
    """The zstd bomb as chunk 0 of a shard whose index is well formed (chunks back to back)."""
    import tracemalloc

    from numcodecs.zstd import Zstd

    path = tmp_path / "raw"
    with StoreWriter(path, None, raw=True, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        w.write("v", rng.standard_normal((32, 32)).astype(np.float16), np.arange(32) / 5)
    bomb = Zstd(level=3).encode(b"\0" * (256 << 20))

    def replace_chunk0(offs, body):
        n0 = int(offs[0, 1])
        offs[0, 1] = len(bomb)
        offs[1:, 0] += np.uint64(len(bomb) - n0)
        return bomb + body[n0:]

    _forge_index(path / "parts" / "w1" / "c" / "0" / "0", replace_chunk0)
    st = open_store(path)
    tracemalloc.start()
    try:
        with pytest.raises(StoreError, match="chunk 0"):
            st["v"].window(0, 4).features()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, peak

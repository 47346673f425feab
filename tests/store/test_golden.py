"""The committed golden store (tests/fixtures/make_store_golden.py) must keep decoding the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from featcomp.store import open_store, verify_store
from featcomp.entropy import bitstream
from featcomp.store.codec import _parse_chunk, decode_chunk, encode_chunk

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "store"


def test_golden_store_decodes_to_committed_arrays():
    exp = np.load(GOLDEN / "golden_expected.npz")
    st = open_store(GOLDEN / "golden")
    assert st.header["format_version"] == 1 and st.mode == "coded"
    assert sorted(st) == ["video-0", "video-1", "video-2"]
    for vid in st:
        v = st[vid]
        assert np.array_equal(v.latents(), exp[f"latents/{vid}"])
        np.testing.assert_array_equal(v.timestamps, exp[f"timestamps/{vid}"])
        np.testing.assert_allclose(v.features(), exp[f"features/{vid}"], rtol=1e-6, atol=0)
        assert v.metadata == {"i": int(vid[-1])}
    assert [f["id"] for f in st.failures()] == ["video-bad"]
    assert verify_store(GOLDEN / "golden").ok


def test_golden_chunks_reencode_to_the_same_bytes():
    """Encoder drift: decoding then re-encoding every stored chunk gives the stored bytes."""
    st = open_store(GOLDEN / "golden")
    part = st._part(0)
    n = 0
    for s in range(part.shard_count()):
        data = (GOLDEN / "golden" / part.shard_key(s)).read_bytes()
        idx = np.frombuffer(data[-(16 * part.chunks_per_shard + 4) : -4], "<u8").reshape(-1, 2)
        for off, nb in idx[idx[:, 0] != np.uint64(2**64 - 1)].tolist():
            raw = data[off : off + nb]
            k = decode_chunk(raw, st.codec, part.sample_shape)
            # the golden chunks hold entropy streams of format version 1; new chunks are version 2:
            # the same ANS payload, re-framed (featcomp.entropy.bitstream)
            _, _, old, _ = _parse_chunk(raw, part.sample_shape)
            h = bitstream.unpack(old, st.codec.digest, st.codec.channels)
            assert h.version == 1
            v2 = raw[: len(raw) - len(old)] + bitstream.pack(h.shape, st.codec.digest, h.payload)
            assert encode_chunk(k, st.codec) == v2
            n += 1
    assert n >= 6


def test_golden_part_reads_with_plain_zarr():
    exp = np.load(GOLDEN / "golden_expected.npz")
    arr = zarr.open_array(str(GOLDEN / "golden"), path="parts/golden", mode="r")
    whole = np.concatenate([exp[f"latents/video-{i}"] for i in range(3)])
    assert np.array_equal(arr[:], whole)


def test_golden_levels_store_decodes_each_frame_at_its_level():
    """Format version 3 (tests/fixtures/make_store_levels_golden.py): per-frame rate levels, the
    per-level steps in the header, an index file of version 3; features computed by the generator."""
    exp = np.load(GOLDEN / "golden_levels_expected.npz")
    path = GOLDEN / "golden_levels"
    st = open_store(path)
    assert st.header["format_version"] == 3 and st.rate_levels == 3 and st.level_scale.shape == (3, 6)
    assert (path / "index" / "golden.fcidx").read_bytes()[6] == 3
    assert sorted(st) == ["video-0", "video-1", "video-2"]
    for vid in st:
        v = st[vid]
        np.testing.assert_array_equal(v.latents(), exp[f"latents/{vid}"])
        np.testing.assert_array_equal(v.levels, exp[f"levels/{vid}"])
        np.testing.assert_array_equal(v.timestamps, exp[f"timestamps/{vid}"])
        np.testing.assert_array_equal(v.features(), exp[f"features/{vid}"])
        np.testing.assert_array_equal(v.window(2, 7).features(), exp[f"features/{vid}"][2:7])
        assert v.metadata == {"i": int(vid[-1])}
    assert len(np.unique(np.concatenate([exp[f"levels/video-{i}"] for i in range(3)]))) == 3
    assert verify_store(path).ok
    # plain zarr reads the levels array too
    lv = zarr.open_array(str(path), path="levels/golden", mode="r")[:]
    np.testing.assert_array_equal(lv, np.concatenate([exp[f"levels/video-{i}"] for i in range(3)]))


def test_golden_checksums_store_reads_and_checks_its_timestamps_and_log_lines(tmp_path):
    """Timestamp CRCs (record ``tc``, .fcidx version 4 with ``times_crc``) and commit-log line checksums
    (``ck``), tests/fixtures/make_store_checksums_golden.py: a closed writer and a crashed one's log."""
    import json
    import shutil

    import pytest

    from featcomp.errors import StoreError

    exp = np.load(GOLDEN / "golden_checksums_expected.npz")
    path = GOLDEN / "golden_checksums"
    assert (path / "index" / "golden.fcidx").read_bytes()[6] == 4
    lines = [json.loads(x) for x in (path / "index" / "crashed.log").read_text().splitlines()]
    assert all("ck" in r for r in lines) and [("tc" in r) for r in lines] == [False, True]
    st = open_store(path)
    assert st.header["format_version"] == 1 and not st.damaged
    assert sorted(st) == [f"video-{i}" for i in range(5)]
    stored = {st.index.ids[j] for j in np.flatnonzero(st.index.times_crc >= 0)}
    assert stored == {"video-1", "video-4"}
    for vid in st:
        v = st[vid]
        np.testing.assert_array_equal(v.latents(), exp[f"latents/{vid}"])
        np.testing.assert_array_equal(v.timestamps, exp[f"timestamps/{vid}"])
        np.testing.assert_array_equal(v.features(), exp[f"features/{vid}"])
        assert v.metadata == {"i": int(vid[-1])}
    assert verify_store(path).ok
    # a copy with one stored timestamp changed in each writer's times/ array, and a changed log line
    copy = tmp_path / "s"
    shutil.copytree(path, copy)
    for w, frame in (("golden", 20), ("crashed", 10)):  # inside video-1 (12..42) and video-4 (9..23)
        arr = zarr.open_array(str(copy / "times" / w), mode="r+")
        arr[frame] = arr[frame] + 0.5
    log = copy / "index" / "crashed.log"
    log.write_bytes(log.read_bytes().replace(b'"length":9', b'"length":8'))
    st = open_store(copy)
    assert sorted(st) == ["video-0", "video-1", "video-2", "video-4"]
    assert list(st.damaged) == ["index/crashed.log line 1"]
    for vid in ("video-1", "video-4"):
        with pytest.raises(StoreError, match="CRC"):
            st[vid].timestamps
    rep = verify_store(copy)
    assert {(i["video"], i["file"]) for i in rep.issues if i["video"]} == {("video-1", "times/golden"),
                                                                           ("video-4", "times/crashed")}


def test_golden_names_store_decodes_reencodes_and_names_what_a_damaged_index_lost(tmp_path):
    """Index file version 5 (the names block outside the payload) and writer registrations,
    tests/fixtures/make_store_names_golden.py: a closed writer and a crashed one's log."""
    import shutil

    from featcomp.store import repair_store
    from featcomp.store.format import decode_index_file, encode_index_file, index_file_names

    exp = np.load(GOLDEN / "golden_names_expected.npz")
    path = GOLDEN / "golden_names"
    data = (path / "index" / "golden.fcidx").read_bytes()
    assert data[6] == 5 and index_file_names(data) == (["golden"], ["video-0", "video-1", "video-2"])
    assert encode_index_file(decode_index_file(data, "golden")) == data  # decodes and re-encodes byte for byte
    assert sorted(p.name for p in (path / "writers").iterdir()) == ["crashed.json", "golden.json"]
    st = open_store(path)
    assert st.header["format_version"] == 1 and not st.damaged and not st.lost_videos
    assert sorted(st) == [f"video-{i}" for i in range(5)]
    for vid in st:
        v = st[vid]
        np.testing.assert_array_equal(v.latents(), exp[f"latents/{vid}"])
        np.testing.assert_array_equal(v.timestamps, exp[f"timestamps/{vid}"])
        np.testing.assert_array_equal(v.features(), exp[f"features/{vid}"])
        assert v.metadata == {"i": int(vid[-1])}
    assert verify_store(path).ok
    # a copy whose index file's columns are damaged still names its videos; repair rebuilds them
    copy = tmp_path / "s"
    shutil.copytree(path, copy)
    ix = copy / "index" / "golden.fcidx"
    raw = bytearray(ix.read_bytes())
    raw[-2] ^= 0xFF
    ix.write_bytes(bytes(raw))
    st = open_store(copy)
    assert sorted(st) == ["video-3", "video-4"]
    assert st.lost_videos == {f"video-{i}": "index/golden.fcidx" for i in range(3)}
    rep = repair_store(copy)
    assert sorted(rep.recovered) == ["video-0", "video-1", "video-2"] and not rep.lost_videos
    st = open_store(copy)
    for vid in st:
        np.testing.assert_array_equal(st[vid].latents(), exp[f"latents/{vid}"])
        np.testing.assert_array_equal(st[vid].timestamps, exp[f"timestamps/{vid}"])
    assert verify_store(copy).ok
    # a copy whose crashed writer's log is gone: the registration says so (this was silent)
    gone = tmp_path / "g"
    shutil.copytree(path, gone)
    (gone / "index" / "crashed.log").unlink()
    rep = verify_store(gone)
    assert [(i["file"], i["video"]) for i in rep.issues] == [("writers/crashed.json", None)]


def test_every_golden_index_file_reencodes_byte_for_byte_in_its_version():
    """Versions 1 (golden), 3 (golden_levels), 4 (golden_checksums) and 5 (golden_names)."""
    from featcomp.store.format import decode_index_file, encode_index_file

    seen = set()
    for name in ("golden", "golden_levels", "golden_checksums", "golden_names"):
        data = (GOLDEN / name / "index" / "golden.fcidx").read_bytes()
        assert encode_index_file(decode_index_file(data, name), version=data[6]) == data
        seen.add(data[6])
    assert seen == {1, 3, 4, 5}

"""Issue 14: a CRC of each video's stored timestamps (record ``tc``, index column ``times_crc``) and a
checksum per commit-log line (record ``ck``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from featcomp.errors import StoreError
from featcomp.store import StoreWriter, open_store, verify_store
from featcomp.store.format import (
    NO_TIMES_CRC,
    TS_ARRAY,
    IndexTable,
    decode_index_file,
    decode_log,
    encode_index_file,
    encode_record,
)
from featcomp.store.reader import load_index


def _irregular(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.cumsum(rng.uniform(0.1, 0.3, n))


def _raw_store(path: Path, rng: np.random.Generator, close: bool = True):
    w = StoreWriter(path, raw=True, writer_id="w")
    feats = {}
    for vid, ts in (("reg", np.arange(12) / 5.0), ("irr", _irregular(12, rng)), ("irr2", _irregular(7, rng))):
        x = rng.normal(size=(len(ts), 4)).astype(np.float32)
        w.write(vid, x, ts)
        feats[vid] = ts
    if close:
        w.close()
    return w, feats


def _change_stored_timestamp(path: Path, frame: int, delta: float) -> None:
    """Rewrite one value of times/w through zarr: the chunk decodes, with a wrong time (what a flipped
    mantissa bit gives, and what zstd does not notice)."""
    import zarr

    arr = zarr.open_array(str(path / "times" / "w"), mode="r+")
    arr[frame] = arr[frame] + delta


def test_a_changed_stored_timestamp_is_detected_by_the_reader_and_verify(tmp_path):
    """Before: the reader served the wrong time and verify said OK."""
    rng = np.random.default_rng(3)
    path = tmp_path / "s"
    w, ts = _raw_store(path, rng, close=False)
    recs = [json.loads(line) for line in (path / "index" / "w.log").read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    assert "tc" not in by_id["reg"] and by_id["irr"]["ts"][0] == TS_ARRAY and isinstance(by_id["irr"]["tc"], int)
    w.close()
    (idx,) = (path / "index").iterdir()
    # written as version 5 (names block, issue 14), which holds the times_crc column (version 4 before)
    assert idx.read_bytes()[6] == 5 and b'"times_crc"' in idx.read_bytes()
    tab = decode_index_file(idx.read_bytes(), str(idx))
    assert int(tab.times_crc[tab.ids.index("reg")]) == NO_TIMES_CRC
    st = open_store(path)
    np.testing.assert_array_equal(st["irr"].timestamps, ts["irr"])
    assert verify_store(path).ok

    start = int(st.index.start[st.index.ids.index("irr")])
    _change_stored_timestamp(path, start + 5, 1e-6)
    st = open_store(path)
    with pytest.raises(StoreError, match=r"'irr'.*timestamps.*times/w.*CRC"):
        st["irr"].timestamps
    with pytest.raises(StoreError, match="CRC"):
        st["irr"].window(0, 3).timestamps  # a window checks the whole video's times
    np.testing.assert_array_equal(st["irr2"].timestamps, ts["irr2"])  # the others are intact
    np.testing.assert_array_equal(st["reg"].timestamps, ts["reg"])
    rep = verify_store(path)
    assert not rep.ok
    assert {(i["video"], i["file"]) for i in rep.issues} == {("irr", "times/w")}, rep.problems


def test_a_flipped_byte_in_the_times_chunk_is_never_served(tmp_path):
    rng = np.random.default_rng(4)
    path = tmp_path / "s"
    _, ts = _raw_store(path, rng)
    chunks = sorted(p for p in (path / "times" / "w").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunks
    wrong = 0
    for pos in range(0, 400, 7):
        for chunk in chunks:
            orig = chunk.read_bytes()
            data = bytearray(orig)
            if pos >= len(data):
                continue
            data[pos] ^= 0x10
            chunk.write_bytes(bytes(data))
            st = open_store(path)
            for vid in ("irr", "irr2"):
                try:
                    got = st[vid].timestamps
                except StoreError:
                    continue
                wrong += not np.array_equal(got, ts[vid])
            chunk.write_bytes(orig)
    assert wrong == 0


def test_old_records_without_a_times_crc_still_read_and_merge(tmp_path):
    """Records of older writers (no ``tc``, no ``ck``) read as before; their index files get no
    times_crc column (version 2 in the old layout, version 5 as written now)."""
    old = encode_record("a", 0, 3, 7, 1_700_000_000_000_000_000, (TS_ARRAY, 0, 0, 0), None)
    rec = json.loads(old)
    rec.pop("ck")
    line = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    (back,) = decode_log(line, "old.log")
    assert "tc" not in back and "ck" not in back
    tab = IndexTable.from_records(["w"], [(0, back)])
    assert int(tab.times_crc[0]) == NO_TIMES_CRC
    assert encode_index_file(tab, version=2)[6] == 2
    assert encode_index_file(tab)[6] == 5 and b'"times_crc"' not in encode_index_file(tab)
    new = IndexTable.from_records(["w"], [(0, r) for r in decode_log(
        encode_record("b", 3, 3, 7, 1, (TS_ARRAY, 0, 0, 0), None, times_crc=12345), "new.log")])
    both = decode_index_file(encode_index_file(IndexTable.concat([tab, new])), "x")
    assert both.times_crc.tolist() == [NO_TIMES_CRC, 12345]


# ------------------------------------------------------------------------------ commit-log lines
def _served(rec: dict) -> tuple:
    """What the index keeps of a record (every column, ids and meta)."""
    t = IndexTable.from_records(["w"], [(0, rec)])
    return (t.ids[0], t.meta[0], *(int(getattr(t, c)[0]) for c in (
        "start", "length", "crc", "written", "ts_kind", "ts_a", "ts_b", "ts_rate", "levels_crc", "times_crc")))


_LINES = [
    encode_record("clips/a.mp4", 1024, 250, 3735928559, 1716200000000000000, (0, 0, 0, 0), {"fps": 25, "p": "x/é"},
                  levels_crc=123456789, times_crc=987654321),
    encode_record("v-7", 40, 96, 17, 1716200000123456789, (1, 250, 40, 1000), None),
]


@pytest.mark.parametrize("line", _LINES)
def test_no_random_byte_mutation_of_a_log_line_changes_its_record_silently(line):
    """Before: 51 of 300 mutations gave another valid record. Now each mutation gives the same record
    or a line that the reader leaves out and reports."""
    (orig,) = decode_log(line, "x.log")
    want = _served(orig)
    rng = random.Random(14)
    silent, detected = [], 0
    for _ in range(300):
        b = bytearray(line[:-1])
        pos = rng.randrange(len(b))
        op = rng.random()
        if op < 0.6:
            b[pos] = rng.choice([rng.randrange(256), ord(rng.choice('0123456789"{}[],:-.eE tcklv'))])
        elif op < 0.8:
            b.insert(pos, rng.randrange(32, 127))
        else:
            del b[pos]
        try:
            recs = decode_log(bytes(b) + b"\n", "x.log")
        except StoreError:
            detected += 1
            continue
        if [_served(r) for r in recs] != [want]:
            silent.append(bytes(b))
    assert not silent, silent[:3]
    assert detected > 200


def _log_store(path: Path):
    w = StoreWriter(path, raw=True, writer_id="w")  # left open: its records stay in index/w.log
    for vid in ("a", "b", "c"):
        w.write(vid, np.ones((40, 4), np.float32), np.arange(40) / 5.0)
    return w


def test_a_log_line_changed_into_another_valid_record_is_left_out_and_reported(tmp_path):
    path = tmp_path / "s"
    w = _log_store(path)
    log = path / "index" / "w.log"
    lines = log.read_bytes().split(b"\n")
    assert b'"length":40' in lines[1]
    lines[1] = lines[1].replace(b'"length":40', b'"length":30')  # another valid record (before: served as 30 frames)
    log.write_bytes(b"\n".join(lines))
    damaged: dict[str, str] = {}
    tab = load_index(w.fs, damaged=damaged)
    assert sorted(tab.ids) == ["a", "c"]
    assert list(damaged) == ["index/w.log line 2"] and "checksum" in damaged["index/w.log line 2"]
    st = open_store(path)
    assert set(st) == {"a", "c"} and list(st.damaged) == ["index/w.log line 2"]
    rep = verify_store(path)
    assert not rep.ok and any("line 2" in p and "checksum" in p for p in rep.problems), rep.problems
    w.close()


def test_a_record_with_tc_but_without_its_line_checksum_is_invalid():
    rec = json.loads(encode_record("a", 0, 3, 7, 1, (TS_ARRAY, 0, 0, 0), None, times_crc=5))
    rec.pop("ck")
    with pytest.raises(StoreError, match="line 1 is not a valid commit record"):
        decode_log(json.dumps(rec).encode() + b"\n", "x.log")
    rec = json.loads(encode_record("a", 0, 3, 7, 1, (1, 0, 1, 5), None))
    rec["tc"] = 5  # a timestamps CRC for implicit timestamps
    rec.pop("ck")
    with pytest.raises(StoreError, match="'tc'"):
        decode_log(json.dumps(rec).encode() + b"\n", "x.log")

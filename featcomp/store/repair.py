"""``repair_store``: rebuild a damaged store's index from what remains, and say what was lost, by id.

What a store keeps about each video, and so what a repair can rebuild from (docs/reliability.md,
"Repair"):

* intact index files and the valid lines of commit logs: their records are kept, after every video's
  data, timestamps and levels were checked again (a video whose bytes no longer match is dropped:
  it is lost, and a re-run of the job writes it again, since writers count only indexed videos);
* a closed writer's table ``videos/<writer>/{id, span, time, written}`` (left on ``close()``): a video it
  lists that no intact record serves (its index file was damaged or deleted) is **rebuilt** from the
  table and the part's data: its CRC is computed from the decoded chunks, which carry their own
  checksums in a coded store (a raw store's zstd chunks carry none: such videos are rebuilt but listed
  as ``unproven``); its metadata is not in the table and is lost (the rebuilt record's metadata says
  ``{"repaired": <repair id>}``);
* what a damaged version-5 index file, or a damaged log line, still names: the ids it held, reported
  as lost when nothing else serves them;
* ``writers/<writer>.json``: a registered writer of which nothing at all remains (its log was deleted,
  and a crashed writer leaves no table) is reported as a lost writer.

Nothing is deleted: every index file and log that the repair replaces (damaged or not) is moved to
``repair/<repair id>/index/``, and the report is written to ``repair/<repair id>/report.json``, which
``featcomp verify`` reads (the videos and writers it names as lost are then listed as lost, not as
problems). Logs of live writers (local stores: their ``flock`` is held) are left alone. On object
stores there are no locks: run a repair only when no writer runs.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featcomp.errors import DamagedIndexError, StoreError
from featcomp.store._fs import StoreFS
from featcomp.store.format import (
    TS_ARRAY,
    TS_FLOAT,
    TS_TICKS,
    IndexTable,
    _RATES,
    _f2i,
    decode_index_file,
    decode_log,
    encode_index_file,
)
from featcomp.store.index import _id_of_line, read_header

__all__ = ["RepairReport", "repair_store", "read_repairs", "describe_repair"]

REPAIR_DIR = "repair"


@dataclass
class RepairReport:
    """What :func:`repair_store` found and did.

    Attributes:
        store: the URL. repair_id: ``<UTC time>-<random>``, the folder ``repair/<repair_id>/``.
        dry_run: nothing was written (the report says what a repair would do).
        damaged: ``{file: reason}`` of the index files and commit-log lines that could not be read.
        index_file: the index file written (relative to the store), or None (nothing to repair, dry run).
        videos: videos the repaired index serves (live writers' logs included).
        recovered: ``{video_id: how}`` of videos rebuilt from a closed writer's table and its data.
        unproven: ids of recovered videos whose data carries no checksum (raw stores).
        lost_videos: ``{video_id: why}``: known lost (a re-run of the job writes them again).
        lost_writers: ``{writer: why}``: registered writers of which nothing remains (their videos are
            unknown: their frames in ``parts/<writer>`` cannot be attributed to ids).
        unnamed: damaged files that name no video (older index file versions, a damaged names block):
            the videos they held are lost unless recovered from a writer's table, and unknown.
        moved: ``[{"from", "to"}]`` files moved aside (never deleted). live: logs of live writers, left alone.
    """

    store: str
    repair_id: str
    dry_run: bool = False
    damaged: dict[str, str] = field(default_factory=dict)
    index_file: str | None = None
    videos: int = 0
    recovered: dict[str, str] = field(default_factory=dict)
    unproven: list[str] = field(default_factory=list)
    lost_videos: dict[str, str] = field(default_factory=dict)
    lost_writers: dict[str, str] = field(default_factory=dict)
    unnamed: list[str] = field(default_factory=list)
    moved: list[dict] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    time_ns: int = 0

    @property
    def changed(self) -> bool:
        """Whether the store needed (dry run) or got a repair."""
        return bool(self.damaged or self.recovered or self.lost_videos or self.lost_writers or self.unnamed)

    @property
    def directory(self) -> str:
        return f"{REPAIR_DIR}/{self.repair_id}"

    def to_dict(self) -> dict:
        """JSON-ready (``featcomp repair --json``; ``repair/<id>/report.json``)."""
        return {"store": self.store, "repair_id": self.repair_id, "dry_run": self.dry_run, "changed": self.changed,
                "time_ns": self.time_ns, "directory": self.directory if self.moved else None,
                "damaged": dict(self.damaged), "index_file": self.index_file, "videos": self.videos,
                "recovered": dict(self.recovered), "unproven": list(self.unproven),
                "lost_videos": dict(self.lost_videos), "lost_writers": dict(self.lost_writers),
                "unnamed": list(self.unnamed), "moved": list(self.moved), "live": list(self.live)}


def repair_store(path_or_url, *, dry_run: bool = False, storage_options: dict | None = None) -> RepairReport:
    """Rebuild a store's index from what remains (see the module docstring); never deletes data.

    Args:
        path_or_url: the store.
        dry_run: only say what would be done.
        storage_options: options of the URL's filesystem (:mod:`featcomp.storage`).

    Returns:
        A :class:`RepairReport`. An intact store is left as it is (``report.changed`` False).

    Raises:
        StoreError: not a featcomp store, or its header (the coding tables) is damaged: nothing can be
            rebuilt without it.
    """
    from featcomp.store.reader import FeatureStore
    from featcomp.store.verify import _log_is_active

    fs = StoreFS(path_or_url, storage_options)
    read_header(fs)
    t_now = time.time_ns()
    rid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t_now / 1e9)) + "-" + secrets.token_hex(3)
    rep = RepairReport(store=fs.url, repair_id=rid, dry_run=dry_run, time_ns=t_now)
    registered = registered_writers(fs)

    # 1. what the index holds: intact files and log lines (folded), damaged ones (moved aside), live logs
    sources: list[tuple[str, IndexTable]] = []
    live_tables: list[IndexTable] = []
    named: dict[str, tuple[list[str], list[str]]] = {}
    damaged_keys: list[str] = []
    for name in fs.listdir("index"):
        key = f"index/{name}"
        if name.endswith(".fcidx"):
            try:
                sources.append((key, decode_index_file(fs.read(key), f"{fs.url}/{key}")))
            except DamagedIndexError as e:
                rep.damaged[key] = str(e)
                damaged_keys.append(key)
                if e.video_ids is not None:
                    named[key] = (list(e.parts or []), list(e.video_ids))
                else:
                    rep.unnamed.append(key)
        elif name.endswith((".log", ".log.d")):
            part = name[: -len(".log")] if name.endswith(".log") else name[: -len(".log.d")]
            if name.endswith(".log"):
                data = fs.read(key)
            else:
                data = b"".join(fs.read(f"{key}/{s}") for s in fs.listdir(key))
            recs = []
            for no, line in enumerate(data.split(b"\n")[:-1], 1):
                try:
                    recs += decode_log(line + b"\n", f"{fs.url}/{key}")
                except StoreError as e:
                    where = f"{key} line {no}"
                    rep.damaged[where] = str(e).replace("line 1 ", f"line {no} ", 1)
                    vid = _id_of_line(line)
                    if vid is not None:
                        named[where] = ([part], [vid])
                    else:
                        rep.unnamed.append(where)
            table = IndexTable.from_records([part], [(0, r) for r in recs])
            if name.endswith(".log") and _log_is_active(fs, key):
                rep.live.append(key)  # a live writer's log: read (its videos count as served), never moved
                live_tables.append(table)
            else:
                sources.append((key, table))
    merged = IndexTable.concat([t for _, t in sources])
    parts = list(merged.parts)
    for _, t in sources:
        parts += [p for p in t.parts if p not in parts]
    for ps, _ in named.values():
        parts += [p for p in ps if p not in parts]

    # 2. every folded video's data, timestamps and levels, checked again (as verify does)
    st = FeatureStore(fs.url, storage_options=storage_options)
    keep = _check_rows(st, merged, rep)
    served = _newest(IndexTable.concat([merged.take(np.asarray(keep, np.int64)), *live_tables]))

    # 3. videos a closed writer's table lists that nothing serves: rebuilt from the table and the data
    ack_videos, ack_writers = _acknowledged(fs)
    recovered = _recover_from_tables(st, served, rep, ack_videos)
    for _p, rec in recovered:
        served[rec["id"]] = max(served.get(rec["id"], -1), int(rec["written"]))

    # 4. what damaged entries name and nothing serves; registered writers of which nothing remains
    for where, (_ps, ids) in sorted(named.items()):
        for vid in ids:
            if vid not in served and vid not in rep.lost_videos:
                rep.lost_videos[vid] = f"{where} recorded it and is damaged; nothing else records it"
    known_parts = set(parts) | {p for t in live_tables for p in t.parts} | set(_table_writers(st))
    known_parts |= {k.split("/", 1)[1].split(".log")[0] for k in rep.damaged if ".log" in k}
    for w in registered:
        if w not in known_parts and w not in ack_writers:
            rep.lost_writers[w] = (f"registered in writers/{w}.json, but no index file, commit log or video table "
                                   f"records any of its videos (its log was deleted): the frames in parts/{w} "
                                   "cannot be attributed to video ids")

    kept_table = merged.take(np.asarray(keep, np.int64))
    if recovered:
        rec_parts = sorted({p for p, _ in recovered})
        rec_table = IndexTable.from_records(rec_parts, [(rec_parts.index(p), r) for p, r in recovered])
        new = IndexTable.concat([kept_table, rec_table])
    else:
        new = kept_table
    new.parts = new.parts + [p for p in parts if p not in new.parts]  # writers with no video left stay named
    rep.videos = len(set(new.ids) | {v for t in live_tables for v in t.ids})
    if dry_run or not rep.changed:
        return rep

    # 5. write the new index, move every replaced file aside, then the report (verify reads it)
    rep.index_file = f"index/repaired-{time.time_ns()}-{secrets.token_hex(3)}.fcidx"
    fs.write_atomic(rep.index_file, encode_index_file(new, level=19))
    for key in [k for k, _ in sources] + damaged_keys:
        dest = f"{rep.directory}/{key}"
        _move(fs, key, dest)
        rep.moved.append({"from": key, "to": dest})
    fs.write_atomic(f"{rep.directory}/report.json", (json.dumps(rep.to_dict(), indent=1, sort_keys=True) + "\n").encode())
    return rep


def _check_rows(st, table: IndexTable, rep: RepairReport) -> list[int]:
    """Rows of ``table`` whose data, timestamps and levels check out; the others go to ``rep.lost_videos``."""
    st._use_index(table)
    keep = []
    bad_parts: dict[int, str] = {}
    for j, vid in enumerate(table.ids):
        p = int(table.part[j])
        if p not in bad_parts:
            try:
                st._part(p)
            except StoreError as e:
                bad_parts[p] = str(e)
        if p in bad_parts:
            rep.lost_videos[vid] = f"its part's metadata cannot be read: {bad_parts[p]}"
            continue
        try:
            st[vid]._raw()
            st._timestamps(j)
            st._levels(j)
        except Exception as e:  # noqa: BLE001 - any failure loses the video, reported by id
            rep.lost_videos[vid] = _text(e)
            continue
        if st.rate_levels and int(table.levels_crc[j]) < 0:
            rep.lost_videos[vid] = "no per-frame rate levels in a store that records them"
            continue
        keep.append(j)
    return keep


def _newest(table: IndexTable) -> dict[str, int]:
    out: dict[str, int] = {}
    for vid, w in zip(table.ids, table.written.tolist()):
        out[vid] = max(out.get(vid, -1), int(w))
    return out


def _table_writers(st) -> list[str]:
    try:
        if not st.fs.exists("videos/zarr.json"):
            return []
        return [n for n in st.fs.listdir("videos") if not n.endswith(".json")]
    except Exception:  # noqa: BLE001 - no tables
        return []


def _recover_from_tables(st, served: dict[str, int], rep: RepairReport,
                         acknowledged: dict[str, str]) -> list[tuple[str, dict]]:
    """Commit records rebuilt from closed writers' tables for the videos nothing serves (or serves from an
    older write). A video whose data does not decode is lost. Videos an earlier repair reported lost
    (``acknowledged``) are not tried again."""
    import zarr

    out: list[tuple[str, dict]] = []
    for w in sorted(_table_writers(st)):
        where = f"videos/{w}"
        try:
            grp = zarr.open_group(st.fs.zarr_store(read_only=True), path=where, mode="r")
            ids = [str(v) for v in np.asarray(grp["id"][...]).reshape(-1)]
            span = np.asarray(grp["span"][...], np.int64).reshape(-1, 2)
            tm = np.asarray(grp["time"][...], np.float64).reshape(-1, 2)
            written = np.asarray(grp["written"][...], np.int64).reshape(-1)
            if not len(ids) == len(span) == len(tm) == len(written):
                raise ValueError("columns of different lengths")
        except Exception as e:  # noqa: BLE001 - an unreadable table recovers nothing
            rep.damaged[where] = f"the writer table {where} cannot be read ({_text(e)}); nothing is rebuilt from it"
            continue
        newest: dict[str, int] = {}
        for j, vid in enumerate(ids):  # a video written twice by this writer: its newest row
            if vid not in newest or written[j] >= written[newest[vid]]:
                newest[vid] = j
        todo = [(vid, j) for vid, j in newest.items()
                if served.get(vid, -1) + 1_000_000 <= int(written[j]) and vid not in acknowledged
                and vid not in rep.lost_videos]  # its data failed the checks above
        if not todo:
            continue
        # one table of every candidate (CRC unknown yet): the reader's machinery reads their frames,
        # timestamps and levels
        tmp = IndexTable.from_records([w], [(0, {"id": vid, "start": int(span[j, 0]), "length": int(span[j, 1]),
                                                 "crc": 0, "written": int(written[j]), "ts": [TS_ARRAY, 0, 0, 0]})
                                            for vid, j in todo])
        st._use_index(tmp)
        for r, (vid, j) in enumerate(todo):
            rec, why, proven = _rebuild(st, r, tm[j], rep)
            if rec is None:
                rep.lost_videos[vid] = f"its index record is gone and {why}"
                continue
            rep.recovered[vid] = f"rebuilt from {where} and parts/{w}"
            rep.lost_videos.pop(vid, None)
            if not proven:
                rep.unproven.append(vid)
            out.append((w, rec))
    return out


def _rebuild(st, r: int, t: np.ndarray, rep: RepairReport) -> tuple[dict | None, str, bool]:
    """A commit record for row ``r`` of the store's (temporary) index, rebuilt from its writer table row's
    times ``t = [t0, dt]``: ``(record, "", proven)`` or ``(None, why, False)``."""
    ix = st.index
    vid, start, n, written = ix.ids[r], int(ix.start[r]), int(ix.length[r]), int(ix.written[r])
    try:
        part = st._part(int(ix.part[r]))
        missing: list[int] = []
        zeros: list[int] = []
        data = part.read(start, start + n, vid, missing, zeros)
    except Exception as e:  # noqa: BLE001
        return None, f"its data cannot be read: {_text(e)}", False
    if missing:
        return None, f"its shard file(s) {', '.join(part.shard_key(m) for m in missing)} are missing", False
    rec: dict[str, Any] = {"id": vid, "start": start, "length": n, "crc": zlib.crc32(np.ascontiguousarray(data).tobytes()),
                           "written": written, "meta": {"repaired": rep.repair_id}}
    t0, dt = float(t[0]), float(t[1])
    if np.isfinite(t0) and np.isfinite(dt):
        rec["ts"] = list(_ts_of(t0, dt))
    else:
        rec["ts"] = [TS_ARRAY, 0, 0, 0]
        try:
            times = np.asarray(st._timestamps(r), dtype="<f8")
        except Exception as e:  # noqa: BLE001
            return None, f"its stored timestamps cannot be read: {_text(e)}", False
        if times.shape != (n,) or not np.all(np.isfinite(times)):
            return None, "its stored timestamps are not finite", False
        rec["tc"] = zlib.crc32(np.ascontiguousarray(times).tobytes())
    if st.rate_levels:
        try:
            arr = st._side_array(st._level_arrays, "levels", r, "levels array")
            lv = np.ascontiguousarray(arr[start : start + n], dtype=np.uint8)
        except Exception as e:  # noqa: BLE001
            return None, f"its rate levels cannot be read: {_text(e)}", False
        if lv.shape != (n,) or (n and int(lv.max()) >= st.rate_levels):
            return None, "its rate levels are out of range", False
        rec["lv"] = zlib.crc32(lv.tobytes())
    proven = st.mode == "coded" and not zeros
    return rec, "", proven


def _ts_of(t0: float, dt: float) -> tuple[int, int, int, int]:
    """The compact timestamps of a table row ``[t0, dt]`` (as the writer chose them: integer ticks of
    the first usual time base that gives back ``t0`` and ``dt`` exactly, else float bits)."""
    for rate in _RATES:
        a, b = round(t0 * rate), round(dt * rate)
        if abs(a) < 2**53 and abs(b) < 2**53 and a / rate == t0 and b / rate == dt:
            return TS_TICKS, int(a), int(b), rate
    return TS_FLOAT, _f2i(t0), _f2i(dt), 0


def _move(fs: StoreFS, key: str, dest: str) -> None:
    """Move a file (or an object folder, ``.log.d``) aside: copied, then removed."""
    if fs.local:
        src, dst = fs.path(key), fs.path(dest)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.rename(src, dst)
        return
    names = fs.listdir(key) if key.endswith(".log.d") else []
    if names:
        for s in names:
            fs.write_atomic(f"{dest}/{s}", fs.read(f"{key}/{s}"))
    else:
        fs.write_atomic(dest, fs.read(key))
    fs.delete(key)


def registered_writers(fs: StoreFS) -> list[str]:
    """Writer ids registered in ``writers/`` (``writers/<writer>.json``, written at a writer's first commit)."""
    return sorted(n[: -len(".json")] for n in fs.listdir("writers") if n.endswith(".json") and not n.startswith("."))


def read_repairs(fs: StoreFS) -> list[dict]:
    """The reports of past repairs (``repair/<id>/report.json``), oldest first; unreadable ones skipped."""
    out = []
    for rid in fs.listdir(REPAIR_DIR):
        try:
            doc = json.loads(fs.read(f"{REPAIR_DIR}/{rid}/report.json"))
        except (FileNotFoundError, ValueError, OSError):
            continue
        if isinstance(doc, dict) and not doc.get("dry_run"):
            out.append(doc)
    return sorted(out, key=lambda d: (d.get("time_ns") or 0, str(d.get("repair_id"))))


def _acknowledged(fs: StoreFS) -> tuple[dict[str, str], dict[str, str]]:
    """``({video_id: why}, {writer: why})`` that past repairs reported lost."""
    videos: dict[str, str] = {}
    writers: dict[str, str] = {}
    for doc in read_repairs(fs):
        rid = doc.get("repair_id")
        for vid, why in (doc.get("lost_videos") or {}).items():
            videos[str(vid)] = f"lost (repair {rid}): {why}"
        for w, why in (doc.get("lost_writers") or {}).items():
            writers[str(w)] = f"lost (repair {rid}): {why}"
    return videos, writers


def _text(e: BaseException) -> str:
    from featcomp.store.verify import _text as text

    return text(e)


def describe_repair(rep: RepairReport) -> str:
    """Human-readable summary of a repair."""
    head = "would repair" if rep.dry_run else "repaired"
    if not rep.changed:
        return f"{rep.store}: nothing to repair ({rep.videos} videos, every index file and record intact)\nOK"
    lines = [f"{rep.store}: {head} (repair {rep.repair_id}): {rep.videos} videos served"]
    lines += [f"DAMAGED: {k}: {v}" for k, v in sorted(rep.damaged.items())]
    lines += [f"RECOVERED: video {k!r}: {v}" + (" (raw data: unproven)" if k in rep.unproven else "")
              for k, v in sorted(rep.recovered.items())]
    lines += [f"LOST: video {k!r}: {v}" for k, v in sorted(rep.lost_videos.items())]
    lines += [f"LOST WRITER: {k}: {v}" for k, v in sorted(rep.lost_writers.items())]
    lines += [f"UNNAMED: {k}: a damaged entry that names no video; its videos are lost unless recovered above"
              for k in rep.unnamed]
    lines += [f"LIVE: {k}: a live writer's log, left alone" for k in rep.live]
    if rep.index_file:
        lines.append(f"wrote {rep.index_file}; moved {len(rep.moved)} file(s) to {rep.directory}/ (nothing deleted)")
    if rep.lost_videos:
        lines.append(f"{len(rep.lost_videos)} video(s) lost: re-run the job to write them again")
    return "\n".join(lines)

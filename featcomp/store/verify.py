"""Integrity checks (``verify_store``) and index compaction (``compact_store``)."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field

import numpy as np

from featcomp.errors import CodecError, StoreError
from featcomp.store._fs import StoreFS
from featcomp.store.format import IndexTable, decode_index_file, decode_log, encode_index_file

__all__ = ["VerifyReport", "verify_store", "compact_store"]


@dataclass
class VerifyReport:
    """Result of :func:`verify_store`.

    Attributes:
        store: the URL. ok: no problems. problems: one line per problem (naming video/part/chunk).
        issues: the same problems as records ``{"file", "video", "problem"}`` (``file``: the store
            file at fault, relative to the store, or None; ``video``: the video id, or None).
        kind: the entropy-model kind of a coded store (None: raw). format_version: the store's.
        videos, frames, parts, chunks: what was checked. compacted: index files folded by ``compact``.
        partial: ``{video_id: reason}`` of videos kept from truncated files (``allow_partial``): they
            are intact as stored, so not problems, but listed so they never pass for complete ones.
        failures: videos in the failures table.
        unreferenced: damaged chunks that hold no indexed video's frames (not problems: no read uses them).
        lost: ``{video_id: why}`` of videos a past ``featcomp repair`` reported lost and that nothing
            serves again yet (listed, not problems: the repair made the store consistent and said so;
            a re-run of the job writes them again). Writers it reported lost are listed as ``writer:<id>``.
    """

    store: str
    videos: int = 0
    frames: int = 0
    parts: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)
    compacted: int = 0
    kind: str | None = None
    format_version: int | None = None
    partial: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    issues: list[dict] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)
    unreferenced: list[str] = field(default_factory=list)
    raw_dtype: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """JSON-ready summary (``featcomp verify --json``)."""
        return {"store": self.store, "ok": self.ok, "format_version": self.format_version, "kind": self.kind,
                "videos": self.videos, "frames": self.frames, "parts": self.parts, "chunks": self.chunks,
                "compacted": self.compacted, "problems": self.issues, "partial": dict(self.partial),
                "failures": self.failures, "lost": dict(self.lost), "unreferenced_damage": list(self.unreferenced)}


def verify_store(path_or_url, *, compact: bool = False, max_problems: int = 1000,
                 storage_options: dict | None = None, include_remote_logs: bool = False) -> VerifyReport:
    """Check a store: header and tables digest, every chunk of every part decodes, every video's
    frames lie inside its part and decode to the CRC its commit record holds, and its per-frame rate
    levels (if any) match their CRC and the store's levels.

    Args:
        path_or_url: the store.
        compact: when everything checks out, fold the index logs and files into one
            (:func:`compact_store`).
        max_problems: stop listing after this many problems.
        storage_options: options of the URL's filesystem (see :mod:`featcomp.storage`).
        include_remote_logs: with ``compact`` on an object store, also fold the commit logs
            (``.log.d/``): only when no writer is running (see :func:`compact_store`).

    Returns:
        A :class:`VerifyReport` (``report.ok``); problems are reported, not raised, except when the
        path is not a featcomp store at all (``StoreError``).
    """
    from featcomp.store.reader import FeatureStore
    from featcomp.store.index import read_header

    def problem(msg: str, file: str | None = None, video: str | None = None) -> None:
        if len(rep.problems) < max_problems:
            rep.problems.append(msg)
            rep.issues.append({"file": file, "video": video, "problem": msg})

    from featcomp.store.repair import _acknowledged, registered_writers

    try:  # listed before the index is read: a writer registers only after its first record is durable
        registered = registered_writers(StoreFS(path_or_url, storage_options))
    except Exception:  # noqa: BLE001 - an unreadable writers/ folder: nothing to cross-check
        registered = []
    try:
        st = FeatureStore(path_or_url, storage_options=storage_options)
    except StoreError as e:
        fs = StoreFS(path_or_url, storage_options)
        h = read_header(fs)  # not a featcomp store at all: raised
        rep = VerifyReport(store=fs.url, format_version=h.get("format_version"))
        problem(f"the store cannot be opened: {e}", _file_named(str(e), fs.url))
        return rep
    rep = VerifyReport(store=st.url, videos=len(st), frames=int(st.index.length.sum()), kind=st.kind,
                       format_version=st.store_header.format_version, raw_dtype=st.raw_dtype)
    one_line = {w: ids[0] for w, (_p, ids) in st.damaged_names.items() if " line " in w and ids[0] in st.lost_videos}
    for where, why in sorted(st.damaged.items()):
        vid = one_line.get(where)  # a damaged log line: one issue, its text naming the id the line spells
        lost = f"; it spells video {vid!r}, now lost (FeatureStore.lost_videos)" if vid else ""
        problem(f"{why} (left out{lost}; `featcomp repair` rebuilds what it can)", where.split(" line ")[0])
    for vid, where in sorted(st.lost_videos.items()):
        if " line " not in where:
            problem(f"{st.url}: video {vid!r} is lost: {where} recorded it and is damaged, and nothing else records "
                    "it (`featcomp repair`; a re-run of the job writes it again)", where, vid)
    try:
        ack_videos, ack_writers = _acknowledged(st.fs)
    except Exception:  # noqa: BLE001 - unreadable repair reports acknowledge nothing
        ack_videos, ack_writers = {}, {}

    if st.mode == "coded":
        try:
            st.codec  # tables decode and hash to the recorded digest
        except StoreError as e:
            problem(str(e), "zarr.json")
    ix = st.index
    used_parts = sorted(set(ix.part.tolist()))
    rep.parts = len(used_parts)
    ends: dict[int, int] = {}
    for p in used_parts:
        try:
            part = st._part(p)
        except StoreError as e:
            problem(str(e), f"parts/{ix.parts[p]}/zarr.json")
            continue
        # every chunk of every shard decodes
        for s in range(part.shard_count()):
            key = part.shard_key(s)
            j0 = s * part.chunks_per_shard
            j1 = min(j0 + part.chunks_per_shard, -(-part.shape[0] // part.chunk_frames)) - 1
            if j1 < j0:
                continue
            if not st.fs.exists(key):
                # a shard may legitimately be absent only if all its chunks are empty (all zero)
                rows = np.flatnonzero(ix.part == p)
                lo, hi = j0 * part.chunk_frames, (j1 + 1) * part.chunk_frames
                hit = rows[(ix.start[rows] < hi) & (ix.start[rows] + ix.length[rows] > lo)]
                for r in hit[ix.crc[hit] != _zero_crc(ix, hit, part)].tolist():
                    problem(f"{st.url}: part {ix.parts[p]!r}: shard {key} is missing (video {ix.ids[r]!r} lost data)",
                            key, ix.ids[r])
                continue
            try:
                rep.chunks += len(part._read_shard_chunks(s, j0, j1, "(verify)"))
            except Exception as e:  # noqa: BLE001 - every problem is reported, never raised
                _bad_chunks(st, p, part, s, j0, j1, key, e, problem, rep)
        ends[p] = part.shape[0]
    # every video: range inside the part, CRC of the decoded data
    for j, vid in enumerate(ix.ids):
        p = int(ix.part[j])
        if p not in ends:
            continue
        name = ix.parts[p]
        if int(ix.start[j]) < 0 or int(ix.start[j] + ix.length[j]) > ends[p]:
            problem(f"{st.url}: video {vid!r}: frames {int(ix.start[j])}..{int(ix.start[j] + ix.length[j])} "
                    f"outside part {name!r} ({ends[p]} frames)", f"parts/{name}", vid)
            continue
        for what, check, file in (
            ("data", lambda: st[vid]._raw(), f"parts/{name}"),
            ("timestamps", lambda: st._timestamps(j), f"times/{name}"),
            ("levels", lambda: st._levels(j), f"levels/{name}"),  # CRC and range (format version 3)
            ("scales", lambda: st._scale_of(j), f"index/{name}"),  # int8 raw stores: present, one per channel
        ):
            try:
                check()
            except Exception as e:  # noqa: BLE001 - every problem is reported, never raised
                problem(_text(e), file, vid)
        if st.rate_levels and int(ix.levels_crc[j]) < 0:
            problem(f"{st.url}: video {vid!r} has no per-frame rate levels in a store that records them",
                    f"levels/{name}", vid)
    table_writers: set[str] = set()
    for msg, file, vid in _unindexed_videos(st, table_writers):
        if vid is not None and vid in st.lost_videos:
            continue  # reported above, by the damaged file that names it
        if vid is not None and vid in ack_videos:
            rep.lost[vid] = ack_videos[vid]
            continue
        problem(msg, file, vid)
    for vid, why in ack_videos.items():
        if vid not in st and vid not in rep.lost:
            rep.lost[vid] = why
    for msg, file, w in _unrecorded_writers(st, registered, table_writers):
        if w in ack_writers:
            rep.lost[f"writer:{w}"] = ack_writers[w]
            continue
        problem(msg, file)
    try:
        rep.partial = st.partial_videos()
    except Exception as e:  # noqa: BLE001 - every problem is reported, never raised
        problem(_text(e))
    try:
        rep.failures = len(st.failures())
    except Exception as e:  # noqa: BLE001
        problem(_text(e), "failures")
    if compact and rep.ok:
        rep.compacted = compact_store(st.url, storage_options=st.storage_options,
                                      include_remote_logs=include_remote_logs)
    return rep


def _bad_chunks(st, p: int, part, s: int, j0: int, j1: int, key: str, err: Exception, problem, rep) -> None:
    """Report a shard whose chunks do not all read: chunk by chunk, a problem when the chunk holds frames
    of a video the index serves; damage only in frames no video uses (a video that ``featcomp repair``
    dropped, or frames a crashed writer never committed) is listed in ``rep.unreferenced``, not a problem."""
    ix = st.index
    rows = np.flatnonzero(ix.part == p)
    cf = part.chunk_frames
    msgs: dict[str, bool] = {}
    for j in range(j0, j1 + 1):
        try:
            part._read_shard_chunks(s, j, j, "(verify)")
            rep.chunks += 1
        except Exception as e:  # noqa: BLE001 - every problem is reported, never raised
            used = bool(np.any((ix.start[rows] < (j + 1) * cf) & (ix.start[rows] + ix.length[rows] > j * cf)))
            msgs[_text(e)] = msgs.get(_text(e), False) or used
    if not msgs:  # only the batched read failed
        msgs[_text(err)] = True
    for msg, used in msgs.items():
        if used:
            problem(msg, key)
        else:
            rep.unreferenced.append(f"{msg} (no indexed video uses these frames)")


def _unrecorded_writers(st, registered: list[str], table_writers: set[str]) -> list[tuple[str, str, str]]:
    """Registered writers (``writers/<writer>.json``, written at a writer's first commit) of which the
    index records nothing: no index file or commit log names their part, and no damaged one may (a
    damaged file is reported itself). Writers that left a ``videos/`` table are checked video by video
    (:func:`_unindexed_videos`) instead. Returns ``(problem, file, writer)`` triples."""
    known = set(st.index.parts) | set(st._live_parts) | table_writers
    for where, (parts, _ids) in st.damaged_names.items():
        known |= set(parts)
    damaged_unnamed = [w for w in st.damaged if w not in st.damaged_names]
    known |= {w.split("/", 1)[1].split(".log")[0] for w in damaged_unnamed if ".log" in w}
    out = []
    for w in registered:
        if w in known:
            continue
        maybe = f" (or in the damaged index file(s) {', '.join(sorted(damaged_unnamed))})" if damaged_unnamed else ""
        out.append((f"{st.url}: writer {w!r} registered at its first commit (writers/{w}.json), but no index file "
                    f"or commit log records any of its videos{maybe}: its commit log or index file was deleted and "
                    f"the videos it wrote are lost (their frames in parts/{w} cannot be named); run `featcomp "
                    "repair`, then re-run the job", f"writers/{w}.json", w))
    return out


def _unindexed_videos(st, writers_seen: set[str] | None = None) -> list[tuple[str, str | None, str | None]]:
    """Videos that a closed writer's table (``videos/<writer>/{id, written}``, left on close for plain
    zarr readers) lists but the index does not serve: their index file or commit log was deleted or
    damaged (the index alone cannot tell, since nothing else records that they existed). A video the
    index serves from an older write than the table's is reported too (its newer record was lost).

    Returns:
        ``(problem, file, video)`` triples; a table that cannot be read is one problem itself.
    """
    out: list[tuple[str, str | None, str | None]] = []
    try:
        writers = [n for n in st.fs.listdir("videos") if not n.endswith(".json")] if st.fs.exists("videos/zarr.json") else []
    except Exception:  # noqa: BLE001 - no table directory: stores written before the tables existed
        return out
    if not writers:
        return out
    import zarr

    newest = {}
    ix = st.index
    for j, vid in enumerate(ix.ids):
        newest[vid] = max(newest.get(vid, -1), int(ix.written[j]))
    for w in sorted(writers):
        if writers_seen is not None:
            writers_seen.add(w)
        where = f"videos/{w}"
        try:
            grp = zarr.open_group(st.fs.zarr_store(read_only=True), path=where, mode="r")
            ids = [str(v) for v in np.asarray(grp["id"][...]).reshape(-1)]
            written = np.asarray(grp["written"][...], np.int64).reshape(-1)
            if len(ids) != len(written):
                raise ValueError(f"{len(ids)} ids but {len(written)} write times")
        except Exception as e:  # noqa: BLE001 - reported, never raised
            out.append((f"{st.url}: the writer table {where} cannot be read ({_text(e)})", where, None))
            continue
        out += _mirror_scales_differ(st, grp, w, ids)
        for vid, t in zip(ids, written.tolist()):
            have = newest.get(vid)
            if have is None:
                out.append((f"{st.url}: video {vid!r} was written by writer {w!r} ({where}) but no index file or "
                            "commit log records it: an index file or log was deleted or damaged; re-run the job "
                            "to write it again", where, vid))
            elif have + 1_000_000 <= t:  # the index keeps write times to the millisecond
                out.append((f"{st.url}: video {vid!r}: the index serves an older write than writer {w!r} made "
                            f"({where}): its newer commit record was lost; re-run the job with overwrite", where, vid))
    return out


def _mirror_scales_differ(st, grp, w: str, ids: list[str]) -> list[tuple[str, str | None, str | None]]:
    """int8 raw stores: rows of ``videos/<w>/scale`` (the plain-zarr mirror of the scales) that differ
    from the scales the index holds for the same video and part range (the index is authoritative and
    checked by each video's CRC; a plain zarr reader trusts the mirror)."""
    if "scale" not in grp:
        if st.raw_dtype == "int8":
            return [(f"{st.url}: videos/{w} has no scale array: plain zarr readers cannot dequantize its videos",
                     f"videos/{w}", None)]
        return []
    where = f"videos/{w}/scale"
    try:
        sc = np.asarray(grp["scale"][...], np.float32)
        span = np.asarray(grp["span"][...], np.int64)
        if sc.ndim != 2 or len(sc) != len(ids) or span.shape != (len(ids), 2):
            raise ValueError(f"shape {sc.shape} for {len(ids)} videos")
    except Exception as e:  # noqa: BLE001 - reported, never raised
        return [(f"{st.url}: {where} cannot be read ({_text(e)})", where, None)]
    ix = st.index
    rows = {(ix.ids[j], ix.parts[int(ix.part[j])], int(ix.start[j])): j for j in range(len(ix))}
    out = []
    for i, vid in enumerate(ids):
        j = rows.get((vid, w, int(span[i, 0])))
        want = None if j is None else ix.scales[j]
        if want is not None and (want.shape != sc[i].shape or not np.array_equal(want, sc[i])):
            out.append((f"{st.url}: video {vid!r}: {where} row {i} differs from the scales in the index (the "
                        "mirror plain zarr readers use is damaged; featcomp reads the index)", where, vid))
    return out


def _text(e: BaseException) -> str:
    """A problem's text: featcomp errors as they are, anything else with its type (never a traceback)."""
    return str(e) if isinstance(e, (StoreError, CodecError)) else f"{type(e).__name__}: {e}"


def _file_named(msg: str, url: str) -> str | None:
    """The store file an error message names (``<url>/<key>: ...``), relative to the store, or None."""
    prefix = url.rstrip("/") + "/"
    if prefix in msg:
        return msg.split(prefix, 1)[1].split(":", 1)[0].split(" ", 1)[0] or None
    return None


def _zero_crc(ix: IndexTable, rows: np.ndarray, part) -> np.ndarray:
    """CRCs that all-zero videos of these rows would have (their chunks need not exist); an int8 video's
    CRC also covers its scales."""
    from featcomp.store.format import video_crc

    per = int(np.prod(part.sample_shape))
    return np.array([video_crc(np.zeros(int(ix.length[r]) * per, dtype=part.values_dtype), ix.scales[r])
                     for r in rows.tolist()], dtype=np.int64)


def _log_is_active(fs: StoreFS, key: str) -> bool:
    """True when a live writer holds the log (local stores: a flock held while the writer is open)."""
    if not fs.local:
        return True
    import fcntl

    try:
        fd = os.open(fs.path(key), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def compact_store(path_or_url, *, include_remote_logs: bool = False, storage_options: dict | None = None) -> int:
    """Fold index files and the logs of finished (or crashed) writers into one ``.fcidx`` file.

    Safe while other writers run: a log is folded only when no live writer holds it (local
    stores: a ``flock`` that writers hold while open, released by the kernel on kill -9). On
    object stores logs are folded only with ``include_remote_logs=True`` (no writer may be running).
    Inputs are deleted only after the merged file is durable, so a crash loses nothing; concurrent
    compactions can at worst leave duplicate rows, which readers de-duplicate.

    Returns:
        The number of index files and logs folded (0: nothing to do).
    """
    fs = StoreFS(path_or_url, storage_options)
    from featcomp.store.index import read_header

    read_header(fs)
    tables, inputs = [], []
    for name in fs.listdir("index"):
        key = f"index/{name}"
        if name.endswith(".fcidx"):
            try:
                tables.append(decode_index_file(fs.read(key), f"{fs.url}/{key}"))
            except StoreError as e:  # never folded (and deleted): repair moves it aside and rebuilds
                raise StoreError(f"{e}; compaction refuses to fold it: run `featcomp repair {fs.url}` first") from None
            inputs.append(key)
        elif name.endswith(".log") or name.endswith(".log.d"):
            if name.endswith(".log.d") and not include_remote_logs:
                continue
            if name.endswith(".log") and _log_is_active(fs, key):
                continue
            part = name[: -len(".log")] if name.endswith(".log") else name[: -len(".log.d")]
            if name.endswith(".log"):
                data = fs.read(key)
            else:
                data = b"".join(fs.read(f"{key}/{s}") for s in fs.listdir(key))
            recs = decode_log(data, f"{fs.url}/{key}")
            tables.append(IndexTable.from_records([part], [(0, r) for r in recs]))
            inputs.append(key)
    if len(inputs) <= 1 and not any(k.endswith((".log", ".log.d")) for k in inputs):
        return 0
    merged = IndexTable.concat(tables)
    name = f"index/merged-{time.time_ns()}-{secrets.token_hex(3)}.fcidx"
    fs.write_atomic(name, encode_index_file(merged, level=19))
    for key in inputs:
        fs.delete(key)
    return len(inputs)


def describe(report: VerifyReport) -> str:
    """Human-readable summary of a report."""
    what = f"{report.kind} entropy model" if report.kind else f"raw {report.raw_dtype or 'float16'}"
    lines = [f"{report.store}: featcomp.store v{report.format_version} ({what}): {report.videos} videos, "
             f"{report.frames} frames, {report.parts} parts, {report.chunks} chunks checked"]
    if report.compacted:
        lines.append(f"compacted {report.compacted} index files/logs into one")
    if report.failures:
        lines.append(f"{report.failures} video(s) failed and are not stored (featcomp info; open_store(..).failures())")
    lines += [f"PARTIAL: video {vid!r}: truncated file, only its decodable part is stored ({why})"
              for vid, why in sorted(report.partial.items())]
    lines += [f"LOST: {'writer ' + k[7:] if k.startswith('writer:') else 'video ' + repr(k)}: {why}"
              for k, why in sorted(report.lost.items())]
    lines += [f"NOTE: {u}" for u in report.unreferenced]
    lines += [f"PROBLEM: {p}" for p in report.problems]
    lines.append("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return "\n".join(lines)


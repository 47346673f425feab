"""The featcomp store format: layout, header, index records and index files (see ``docs/format.md``).

Layout of a store (a directory or an fsspec URL prefix)::

    zarr.json                     zarr v3 group; attributes["featcomp"] = the store header (JSON)
    header.<sha256[:16]>.fcb      format version 5 only: the header's float arrays and coding tables,
                                  binary (featcomp.store.sidecar); zarr.json records its size and sha256
    parts/zarr.json               zarr v3 group
    parts/<writer_id>/            one append-only data array per writer session, (N, C[, H, W]),
                                  chunked along time, sharded; coded: int32 with the featcomp.ans
                                  serializer; raw: float16 with bytes + zstd
    times/<writer_id>/            float64 (N,) timestamps, only for videos whose timestamps are not affine
    levels/<writer_id>/           uint8 (N,) per-frame rate levels (format version 3 stores only)
    index/<writer_id>.log         append-only JSON lines, one fsync'd commit record per video (local)
    index/<writer_id>.log.d/<seq> the same records as one object each (object stores, memory://)
    index/<name>.fcidx            compacted index files (binary, zstd), written atomically
    failures/<writer_id>.jsonl    append-only failure records (or failures/<writer_id>.jsonl.d/<seq>)

A video is visible once its commit record exists; records are merged on read (the newest
``written`` wins for an id written twice with ``force=True``).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcomp.errors import DamagedIndexError, StoreError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FACTORIZED_FORMAT_VERSION",
    "LEVELS_FORMAT_VERSION",
    "RAW_INT8_FORMAT_VERSION",
    "RAW_DTYPES",
    "quantize_int8",
    "dequantize_int8",
    "video_crc",
    "NO_TIMES_CRC",
    "record_check",
    "MAX_RATE_LEVELS",
    "format_version_for",
    "PACKAGE_HINT",
    "IndexTable",
    "encode_record",
    "decode_log",
    "encode_index_file",
    "decode_index_file",
    "index_file_names",
    "encode_timestamps",
    "decode_timestamps",
    "check_video_id",
    "group_doc",
]

FORMAT_NAME = "featcomp.store"
FORMAT_VERSION = 5  # the newest store format this featcomp reads and writes
SIDECAR_FORMAT_VERSION = 5  # stores whose header bulk is in a binary sidecar (featcomp.store.sidecar)
FACTORIZED_FORMAT_VERSION = 1  # factorized stores are still written as version 1 (older readers open them)
KINDS_FORMAT_VERSION = 2  # stores of another entropy-model kind (temporal, hyperprior, ...)
LEVELS_FORMAT_VERSION = 3  # stores that record a rate level per frame (any kind)
RAW_INT8_FORMAT_VERSION = 4  # raw stores of int8 features with per-video per-channel float32 scales
RAW_DTYPES = ("float16", "int8")  # the dtypes of raw stores (float16: written as version 1, as before)
INT8_MAX = 127  # symmetric int8: values in [-127, 127]
MAX_RATE_LEVELS = 256  # levels are stored as uint8


def format_version_for(kind: str, levels: bool = False, raw_dtype: str | None = None) -> int:
    """The store format version written for an entropy-model kind, with or without per-frame levels.

    Version 1: factorized tables only (no ``kind`` anywhere). Version 2: the header's ``codec`` and
    the parts' ``featcomp.ans`` configuration carry ``kind`` (temporal, hyperprior, ...); a version-1
    reader refuses such a store with "upgrade featcomp" instead of misreading its tables. Version 3
    (``levels=True``): the store records a rate level per frame (``levels/<writer>``, the header's
    ``rate_levels`` and ``dequantization.level_scale``); an older reader refuses it rather than
    dequantize every frame with one step. Stores without levels keep versions 1 and 2 byte for byte.
    Version 4 (``raw_dtype="int8"``): a raw store of int8 features with per-video per-channel float32
    scales (commit records ``sc``); an older reader refuses it rather than serve int8 values as features.
    Raw float16 stores stay version 1. Version 5 is not chosen here: the writer gives a store of any of
    these versions a header sidecar when its header is large (:func:`featcomp.store.sidecar.pack_header`).
    """
    if raw_dtype == "int8":  # version 4: int8 raw stores only; float16 raw stores stay version 1
        return RAW_INT8_FORMAT_VERSION
    if levels:
        return LEVELS_FORMAT_VERSION
    from featcomp.entropy.kinds import entropy_kind

    return FACTORIZED_FORMAT_VERSION if entropy_kind(kind).implicit else KINDS_FORMAT_VERSION


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 quantization of one video's features (int8 raw stores).

    Args:
        x: finite floats ``(T, C[, H, W])``; the channel axis is 1.

    Returns:
        ``(q, scale)``: int8 ``(T, C[, H, W])`` in ``[-127, 127]`` and float32 ``(C,)`` with
        ``x ~= q * scale`` (per channel, axis 1). ``scale[c]`` is ``max |x[:, c]| / 127`` rounded *up* to
        float32 (so no value is clipped) and 0 for an all-zero channel; ``|x - q * scale| <= scale / 2``
        (plus the float32 rounding of the product when it is computed in float32).
    """
    x = np.asarray(x)
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    amax = np.abs(x64).max(axis=axes) if x.size else np.zeros(x.shape[1], np.float64)
    want = amax / INT8_MAX
    scale = want.astype(np.float32)
    low = scale.astype(np.float64) < want  # rounded down to float32: take the next float32 up
    scale[low] = np.nextafter(scale[low], np.float32(np.inf))
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    s64 = scale.astype(np.float64).reshape(bshape)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s64 > 0, np.rint(x64 / np.where(s64 > 0, s64, 1.0)), 0.0)
    q = np.clip(q, -INT8_MAX, INT8_MAX).astype(np.int8)
    return np.ascontiguousarray(q), scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 ``q * scale`` (per channel, axis 1): the features an int8 raw store holds."""
    q = np.asarray(q)
    out = q.astype(np.float32)
    out *= np.asarray(scale, np.float32).reshape((1, -1) + (1,) * (q.ndim - 2))
    return out


def video_crc(data: np.ndarray, scale: np.ndarray | None = None) -> int:
    """The ``crc`` of a video's commit record: CRC-32 (zlib) of its stored array (little endian, C
    order) followed, in int8 raw stores, by its float32 little-endian scales, so that the check covers
    both what is stored in the part and the numbers that turn it into features."""
    crc = zlib.crc32(np.ascontiguousarray(data).tobytes())
    if scale is not None:
        crc = zlib.crc32(np.ascontiguousarray(scale, dtype="<f4").tobytes(), crc)
    return crc


PACKAGE_HINT = (
    "this is a featcomp feature store: its chunks use the zarr codec 'featcomp.ans' from the Python "
    "package 'featcomp' (pip install featcomp)"
)

INDEX_MAGIC = b"FCIDX\x00"
INDEX_FILE_VERSION = 2  # 2: commit times kept to the millisecond (1: nanoseconds); both are read
INDEX_FILE_VERSION_LEVELS = 3  # 3: version 2 plus the levels_crc column (written only when a row has levels)
INDEX_FILE_VERSION_TIMES_CRC = 4  # 4: plus the times_crc column (written only when a row has a stored-timestamps CRC)
INDEX_FILE_VERSION_NAMES = 5  # 5: the names block (parts, video ids) outside the payload, with its own CRC; what is
# written. Int8 raw stores add the scales_len / scales columns (only in this layout).
_WRITTEN_UNIT_NS = {1: 1, 2: 1_000_000, 3: 1_000_000, 4: 1_000_000, 5: 1_000_000}

# Timestamps kinds (column ``ts_kind``)
TS_ARRAY = 0  # stored in times/<part>[start:start+length]
TS_TICKS = 1  # (tick0 + i * dtick) / rate, integers
TS_FLOAT = 2  # t0 + i * dt, float64 (bits in ts_a / ts_b)

NO_LEVELS = -1  # column ``levels_crc`` of a video without per-frame levels
NO_TIMES_CRC = -1  # column ``times_crc`` of a video whose timestamps are implicit (or of an older record)
LINE_CHECK_KEY = "ck"  # commit-log records: CRC-32 of the record's canonical JSON without this key
SCALE_KEY = "sc"  # commit records of int8 raw stores: the video's per-channel float32 scales

_RATES = (1, 1000, 1_000_000, 90_000, 30_000, 24_000, 60_000, 48_000, 44_100, 1_000_000_000)


def check_video_id(video_id: Any) -> str:
    """Validate a video id: a non-empty str without NUL or newline characters."""
    if not isinstance(video_id, str) or not video_id or "\x00" in video_id or "\n" in video_id:
        raise StoreError(f"video ids must be non-empty strings without NUL/newline, got {video_id!r}")
    return video_id


def group_doc(attributes: dict[str, Any] | None = None) -> bytes:
    """A zarr v3 group ``zarr.json`` document."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}
    return json.dumps(doc, indent=1, sort_keys=True).encode()


# ---------------------------------------------------------------------------------- timestamps
def encode_timestamps(ts: np.ndarray) -> tuple[int, int, int, int]:
    """Find an exact compact form of ``ts``.

    Args:
        ts: float64 ``(T,)`` seconds.

    Returns:
        ``(kind, a, b, rate)``: ``TS_TICKS`` when ``ts == (a + i*b) / rate`` exactly for one of the
        usual time bases, ``TS_FLOAT`` when ``ts == t0 + i*dt`` exactly (``a``/``b`` are the float64
        bit patterns), else ``(TS_ARRAY, 0, 0, 0)``: the timestamps are stored as an array.
    """
    ts = np.asarray(ts, dtype=np.float64)
    n = ts.shape[0]
    i = np.arange(n, dtype=np.int64)
    if n and np.all(np.isfinite(ts)) and np.abs(ts).max() < 1e9:
        for rate in _RATES:
            ticks = np.rint(ts * rate)
            if np.abs(ticks).max() >= 2**53:
                continue
            t = ticks.astype(np.int64)
            tick0 = int(t[0])
            dtick = int(t[1] - t[0]) if n > 1 else 0
            if np.array_equal(t, tick0 + i * dtick) and np.array_equal((tick0 + i * dtick) / rate, ts):
                return TS_TICKS, tick0, dtick, rate
        t0 = float(ts[0])
        for dt in {float(ts[1] - ts[0]) if n > 1 else 0.0, float((ts[-1] - ts[0]) / (n - 1)) if n > 1 else 0.0}:
            if np.array_equal(t0 + i * dt, ts):
                return TS_FLOAT, _f2i(t0), _f2i(dt), 0
    return TS_ARRAY, 0, 0, 0


def decode_timestamps(kind: int, a: int, b: int, rate: int, n: int) -> np.ndarray | None:
    """float64 ``(n,)`` timestamps from the compact form, or None for ``TS_ARRAY``."""
    i = np.arange(n, dtype=np.int64)
    if kind == TS_TICKS:
        return (a + i * b) / rate
    if kind == TS_FLOAT:
        return _i2f(a) + i * _i2f(b)
    return None


def _f2i(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _i2f(x: int) -> float:
    return struct.unpack("<d", struct.pack("<q", int(x)))[0]


# ---------------------------------------------------------------------------------- index table
_COLUMNS = (  # name, dtype
    ("part", "<i4"),
    ("start", "<i8"),  # stored as delta from the previous row's start + length (same part), see encode
    ("length", "<i8"),
    ("crc", "<u4"),
    ("written", "<i8"),  # stored as delta from the previous row (ms since the epoch in file version 2)
    ("ts_kind", "u1"),
    ("ts_a", "<i8"),
    ("ts_b", "<i8"),
    ("ts_rate", "<i8"),
)
# columns that an index file holds only when some row uses them (older files stay byte-identical)
_OPTIONAL_COLUMNS = (  # name, dtype, the file version that a file holding the column gets
    ("levels_crc", "<i8", INDEX_FILE_VERSION_LEVELS),  # CRC-32 of the uint8 levels in levels/<part>, or NO_LEVELS
    ("times_crc", "<i8", INDEX_FILE_VERSION_TIMES_CRC),  # CRC-32 of the float64 times/<part> rows, or NO_TIMES_CRC
)
_OPTIONAL_DEFAULTS = {"levels_crc": NO_LEVELS, "times_crc": NO_TIMES_CRC}
_ALL_COLUMNS = _COLUMNS + tuple((name, dt) for name, dt, _ in _OPTIONAL_COLUMNS)


@dataclass
class IndexTable:
    """Columns of an index (one row per committed video).

    Attributes:
        parts: part names (writer ids); ``part`` indexes into it.
        ids: video ids, list of str (N,).
        part: int32 (N,); start, length: int64 (N,) frame range in the part array.
        crc: uint32 (N,) CRC-32 of the video's stored array (int32 latents or float16 features,
            C order, little endian). written: int64 (N,) ns since the epoch (newest wins).
        ts_kind uint8, ts_a/ts_b/ts_rate int64 (N,): the compact timestamps (:func:`encode_timestamps`).
        meta: list of str (N,): per-video metadata as JSON ("" when none).
        levels_crc: int64 (N,): CRC-32 of the video's per-frame rate levels (uint8, stored in
            ``levels/<part>[start:start+length]``), or ``NO_LEVELS`` (-1) when the video has none.
        times_crc: int64 (N,): CRC-32 of the video's stored timestamps (float64 little endian, in
            ``times/<part>[start:start+length]``), or ``NO_TIMES_CRC`` (-1): implicit timestamps, or a
            record of a writer that did not record it.
        scales: list (N,) of float32 ``(C,)`` arrays: the per-channel scales of a video of an int8 raw
            store (record ``sc``), or None for every other video.
    """

    parts: list[str]
    ids: list[str]
    part: np.ndarray
    start: np.ndarray
    length: np.ndarray
    crc: np.ndarray
    written: np.ndarray
    ts_kind: np.ndarray
    ts_a: np.ndarray
    ts_b: np.ndarray
    ts_rate: np.ndarray
    meta: list[str]
    levels_crc: np.ndarray | None = None
    times_crc: np.ndarray | None = None
    scales: list | None = None

    def __post_init__(self) -> None:
        if self.scales is None:
            self.scales = [None] * len(self.ids)
        if self.levels_crc is None:
            self.levels_crc = np.full(len(self.ids), NO_LEVELS, dtype=np.int64)
        if self.times_crc is None:
            self.times_crc = np.full(len(self.ids), NO_TIMES_CRC, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls) -> IndexTable:
        return cls.from_records([], [])

    @classmethod
    def from_records(cls, parts: list[str], records: list[tuple[int, dict]]) -> IndexTable:
        """Build from ``(part_index, record_dict)`` pairs (records as in :func:`encode_record`)."""
        n = len(records)
        cols = {name: np.zeros(n, dtype=dt) for name, dt in _COLUMNS}
        cols["levels_crc"] = np.full(n, NO_LEVELS, dtype=np.int64)
        cols["times_crc"] = np.full(n, NO_TIMES_CRC, dtype=np.int64)
        ids, meta, scales = [], [], []
        for j, (p, r) in enumerate(records):
            cols["part"][j] = p
            cols["start"][j] = r["start"]
            cols["length"][j] = r["length"]
            cols["crc"][j] = r["crc"]
            cols["written"][j] = r["written"]
            kind, a, b, rate = r["ts"]
            cols["ts_kind"][j], cols["ts_a"][j], cols["ts_b"][j], cols["ts_rate"][j] = kind, a, b, rate
            if r.get("lv") is not None:
                cols["levels_crc"][j] = int(r["lv"])
            if r.get("tc") is not None:
                cols["times_crc"][j] = int(r["tc"])
            ids.append(r["id"])
            m = r.get("meta")
            meta.append(json.dumps(m, sort_keys=True, separators=(",", ":")) if m else "")
            sc = r.get(SCALE_KEY)
            scales.append(None if sc is None else np.asarray(sc, dtype=np.float32))
        return cls(parts=list(parts), ids=ids, meta=meta, scales=scales, **cols)

    @staticmethod
    def concat(tables: list[IndexTable]) -> IndexTable:
        """Concatenate tables (part names are unified) and keep, per id, the newest row."""
        tables = [t for t in tables if len(t)]
        if not tables:
            return IndexTable.empty()
        parts: list[str] = []
        pos: dict[str, int] = {}
        remapped = []
        for t in tables:
            m = np.array([pos.setdefault(p, len(pos)) for p in t.parts] or [0], dtype=np.int32)
            for p in t.parts:
                if p not in parts:
                    parts.append(p)
            remapped.append(m[t.part] if len(t.parts) else t.part)
        ids = [i for t in tables for i in t.ids]
        meta = [m for t in tables for m in t.meta]
        scales = [s for t in tables for s in t.scales]
        cols = {name: np.concatenate([getattr(t, name) for t in tables]) for name, _ in _ALL_COLUMNS if name != "part"}
        out = IndexTable(parts=parts, ids=ids, meta=meta, scales=scales, part=np.concatenate(remapped).astype(np.int32),
                         **cols)
        return out.deduplicated()

    def deduplicated(self) -> IndexTable:
        """Keep one row per id: the newest ``written`` (ties: the later row)."""
        if len(set(self.ids)) == len(self.ids):
            return self
        order = np.argsort(self.written, kind="stable")
        last: dict[str, int] = {}
        for j in order.tolist():
            last[self.ids[j]] = j
        keep = np.array(sorted(last.values()), dtype=np.int64)
        return self.take(keep)

    def take(self, rows: np.ndarray) -> IndexTable:
        rows = np.asarray(rows, dtype=np.int64)
        return IndexTable(
            parts=list(self.parts),
            ids=[self.ids[j] for j in rows.tolist()],
            meta=[self.meta[j] for j in rows.tolist()],
            scales=[self.scales[j] for j in rows.tolist()],
            **{name: getattr(self, name)[rows] for name, _ in _ALL_COLUMNS},
        )


def encode_record(video_id: str, start: int, length: int, crc: int, written: int, ts: tuple, meta: dict | None,
                  levels_crc: int | None = None, times_crc: int | None = None,
                  scale: np.ndarray | None = None) -> bytes:
    """One commit record: a JSON object on one line, terminated by ``\\n``.

    Keys: ``id``, ``start``, ``length``, ``crc``, ``written`` (ns), ``ts`` ([kind, a, b, rate]),
    optionally ``meta``, ``lv`` (the video has per-frame rate levels in ``levels/<part>``; the value
    is the CRC-32 of those uint8 levels) and ``tc`` (the CRC-32 of the video's timestamps stored in
    ``times/<part>``, float64 little endian; only when ``ts`` is ``TS_ARRAY``), ``sc`` (int8 raw stores:
    the video's per-channel float32 scales, as JSON numbers that convert back to the same float32), and
    ``ck``: the CRC-32 of
    the line's canonical JSON without ``ck`` (:func:`record_check`), so that a line changed into another
    valid record is detected. A line without its final newline is an uncommitted (torn) record.
    """
    rec: dict[str, Any] = {
        "id": video_id,
        "start": int(start),
        "length": int(length),
        "crc": int(crc),
        "written": int(written),
        "ts": [int(x) for x in ts],
    }
    if meta:
        rec["meta"] = meta
    if levels_crc is not None:
        rec["lv"] = int(levels_crc)
    if times_crc is not None:
        rec["tc"] = int(times_crc)
    if scale is not None:
        rec[SCALE_KEY] = [float(v) for v in np.asarray(scale, dtype=np.float32).reshape(-1)]
    rec[LINE_CHECK_KEY] = record_check(rec)
    return (_canonical(rec) + "\n").encode()


def _canonical(rec: dict) -> str:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"))


def record_check(rec: dict) -> int:
    """The line checksum of a commit record: CRC-32 of its canonical JSON (sorted keys, no spaces,
    ASCII escapes) without the ``ck`` key. Computed over the parsed record, so it does not depend on
    how a line spells it; any change to a field's value, a key or the set of keys changes it."""
    body = {k: v for k, v in rec.items() if k != LINE_CHECK_KEY}
    return zlib.crc32(_canonical(body).encode())


def plain_video_table(records: list[dict]) -> dict[str, np.ndarray]:
    """The per-video table a writer leaves as zarr arrays under ``videos/<writer>/`` on close, so that a
    plain ``zarr.open_group`` user finds each video's frames and timestamps without featcomp.

    Arrays (one row per record of this writer, in write order): ``id`` (strings), ``span`` int64
    ``(n, 2)`` = ``[start, frames]`` (the video is ``parts/<writer>[start : start + frames]``),
    ``time`` float64 ``(n, 2)`` = ``[t0, dt]`` (frame i at ``t0 + i * dt`` seconds; NaN when the
    timestamps are stored in ``times/<writer>[start : start + frames]``) and ``written`` int64 (ns;
    a video written twice appears twice, the larger wins); in int8 raw stores also ``scale`` float32
    ``(n, C)``, the video's per-channel scales (features = ``part[start : start + frames] * scale[j]``,
    channels on axis 1). A mirror of the index for convenience:
    the index (``index/``) stays authoritative, and a writer that crashed leaves no table.
    """
    n = len(records)
    span = np.zeros((n, 2), np.int64)
    time_ = np.full((n, 2), np.nan, np.float64)
    written = np.zeros(n, np.int64)
    for j, r in enumerate(records):
        span[j] = (int(r["start"]), int(r["length"]))
        written[j] = int(r["written"])
        kind, a, b, rate = (int(x) for x in r["ts"])
        if kind == TS_TICKS:
            time_[j] = (a / rate, b / rate)
        elif kind == TS_FLOAT:
            time_[j] = (_i2f(a), _i2f(b))
    out = {"id": np.array([r["id"] for r in records], dtype=object), "span": span, "time": time_,
           "written": written}
    if records and any(SCALE_KEY in r for r in records):  # int8 raw stores: the dequantization scales
        out["scale"] = np.asarray([r[SCALE_KEY] for r in records], dtype=np.float32)
    return out


def decode_log(data: bytes, where: str, *, commits: bool = True) -> list[dict]:
    """Parse an append-only log; a torn last line (no newline) is ignored.

    Args:
        commits: check every field of a commit record (types and ranges); False for failure logs,
            whose records need only a string ``id``.

    Raises:
        StoreError: a complete line that is not a valid record (names ``where`` and the line).
    """
    lines = data.split(b"\n")
    out = []
    for no, line in enumerate(lines[:-1], 1):  # the last element is "" or a torn record
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if commits:
                _check_record(rec)
                _check_line(rec)
            elif not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise ValueError("not a record")
        except (ValueError, RecursionError) as e:
            raise StoreError(f"{where}: line {no} is not a valid commit record ({e}); run `featcomp verify`") from None
        out.append(rec)
    return out


_I64 = 1 << 63


def _check_record(rec: Any) -> None:
    """A commit record's fields, types and ranges (what :meth:`IndexTable.from_records` stores), or ValueError."""
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        raise ValueError("not a record")
    for key, lo, hi in (("start", 0, _I64), ("length", 0, _I64), ("crc", 0, 1 << 32), ("written", -_I64, _I64)):
        v = rec.get(key)
        if not _is_int(v) or not lo <= v < hi:
            raise ValueError(f"field {key!r} is {v!r}")
    ts = rec.get("ts")
    if not (isinstance(ts, list) and len(ts) == 4 and all(_is_int(x) and -_I64 <= x < _I64 for x in ts)
            and 0 <= ts[0] < 256):
        raise ValueError(f"field 'ts' is {ts!r}")
    lv = rec.get("lv")
    if lv is not None and not (_is_int(lv) and NO_LEVELS <= lv < 1 << 32):
        raise ValueError(f"field 'lv' is {lv!r}")
    tc = rec.get("tc")
    if tc is not None and not (_is_int(tc) and 0 <= tc < 1 << 32 and ts[0] == TS_ARRAY):
        raise ValueError(f"field 'tc' is {tc!r} (timestamps kind {ts[0]})")
    sc = rec.get(SCALE_KEY)
    if sc is not None and not _valid_scales(sc):
        raise ValueError(f"field {SCALE_KEY!r} is not a non-empty list of finite non-negative float32 numbers")


def _valid_scales(sc: Any) -> bool:
    if not isinstance(sc, list) or not sc or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sc):
        return False
    a = np.asarray(sc, dtype=np.float64)
    return bool(np.all(np.isfinite(a)) and np.all(a >= 0) and np.all(a.astype(np.float32).astype(np.float64) == a))


def _check_line(rec: dict) -> None:
    """A record's line checksum ``ck``, or ValueError; the key is then removed from ``rec``.

    Records of writers older than the checksum have no ``ck`` and are accepted as they are; those
    writers never wrote ``tc`` either, so a record with ``tc`` but no ``ck`` was changed."""
    if LINE_CHECK_KEY not in rec:
        if "tc" in rec or SCALE_KEY in rec:
            raise ValueError(f"a record with {'tc' if 'tc' in rec else SCALE_KEY!r} but without its line checksum 'ck'")
        return
    ck = rec[LINE_CHECK_KEY]
    if not (_is_int(ck) and 0 <= ck < 1 << 32):
        raise ValueError(f"field 'ck' is {ck!r}")
    if record_check(rec) != ck:
        raise ValueError("line checksum mismatch: the line was changed after it was written")
    del rec[LINE_CHECK_KEY]

# ----------------------------------------------------------------------------------- index file
def encode_index_file(table: IndexTable, level: int = 9, *, version: int | None = None) -> bytes:
    """Serialize a table to the ``.fcidx`` format.

    Version 5 (what writers and compactions write): ``b"FCIDX\\0"``, u8 version, u8 reserved, then the
    **names block** (u32 compressed length m, u32 raw length r, u32 CRC-32 of the m bytes, then m bytes:
    zstd of the part names joined by NUL, a newline, and the video ids joined by NUL), then u32 header
    length h, u32 CRC-32 of the header, the header JSON (``n``, ``columns`` [[name, dtype, offset, nbytes]],
    ``payload_crc32``) and the payload: zstd of the concatenated columns other than the ids. The ids live
    outside the payload and carry their own checksum, so a file whose header or columns are damaged still
    names the videos it held (:class:`~featcomp.errors.DamagedIndexError`).

    Versions 1-4 (``version=``, to re-encode older files byte for byte): one header JSON (with ``parts``)
    and one payload holding every column, ids and meta joined by NUL; version 1 keeps commit times in
    nanoseconds, 2 in milliseconds, 3 holds the ``levels_crc`` column, 4 the ``times_crc`` column. The
    optional columns are written only when some row uses them (in every version).

    Raises:
        StoreError: ``version`` is unknown, or older than the columns the table needs.
    """
    from numcodecs.zstd import Zstd

    version = INDEX_FILE_VERSION_NAMES if version is None else int(version)
    if version not in _WRITTEN_UNIT_NS:
        raise StoreError(f"index file version {version} cannot be written (known: {sorted(_WRITTEN_UNIT_NS)})")
    n = len(table)
    cols = {name: np.ascontiguousarray(getattr(table, name), dtype=dt) for name, dt in _COLUMNS}
    # delta-code monotone columns so that zstd sees runs of zeros
    start = cols["start"].copy()
    if n:
        prev_end = np.concatenate([[0], (cols["start"] + cols["length"])[:-1]])
        same = np.concatenate([[False], cols["part"][1:] == cols["part"][:-1]])
        start = np.where(same, cols["start"] - prev_end, cols["start"])
    cols["start"] = start.astype("<i8")
    # commit times to the millisecond: ns deltas cost ~3.4 bytes per video after zstd, ms deltas ~0.9
    # (rounding down; two writes of one id < 1 ms apart in different writers were concurrent anyway)
    written_ms = cols["written"] // _WRITTEN_UNIT_NS[version]
    cols["written"] = np.diff(written_ms, prepend=np.int64(0)).astype("<i8")
    blobs: list[tuple[str, str, bytes]] = [(name, dt, cols[name].tobytes()) for name, dt in _COLUMNS]
    if version < INDEX_FILE_VERSION_NAMES:
        blobs.append(("ids", "utf8-nul", "\x00".join(table.ids).encode("utf-8")))
    blobs.append(("meta", "utf8-nul", "\x00".join(table.meta).encode("utf-8")))
    needed = 1 if version == 1 else INDEX_FILE_VERSION
    for name, dt, needs in _OPTIONAL_COLUMNS:  # only when used: files without them keep their bytes
        col = np.ascontiguousarray(getattr(table, name), dtype=dt)
        if np.any(col != _OPTIONAL_DEFAULTS[name]):
            blobs.append((name, dt, col.tobytes()))
            needed = max(needed, needs)
    if any(sc is not None for sc in table.scales):  # int8 raw stores only: ragged float32 scales
        if version < INDEX_FILE_VERSION_NAMES:
            raise StoreError(f"per-video scales (int8 raw stores) need index file version {INDEX_FILE_VERSION_NAMES}, "
                             f"not {version}")
        lens = np.array([0 if sc is None else len(sc) for sc in table.scales], dtype="<i4")
        flat = [np.asarray(sc, dtype="<f4").reshape(-1) for sc in table.scales if sc is not None]
        blobs.append(("scales_len", "<i4", lens.tobytes()))
        blobs.append(("scales", "<f4", np.concatenate(flat).astype("<f4").tobytes()))
    if version < INDEX_FILE_VERSION_NAMES and needed != version:
        raise StoreError(f"this table is an index file of version {needed} in the old layout, not {version}")
    columns, offset = [], 0
    for name, dt, b in blobs:
        columns.append([name, dt, offset, len(b)])
        offset += len(b)
    payload = Zstd(level=level).encode(b"".join(b for _, _, b in blobs))
    from featcomp.store.headers import IndexColumn, IndexFileHeader

    header = IndexFileHeader(
        version=version, n=n, columns=tuple(IndexColumn(*c) for c in columns), payload_crc32=zlib.crc32(payload),
        parts=tuple(table.parts) if version < INDEX_FILE_VERSION_NAMES else None,
    ).to_json()
    if version < INDEX_FILE_VERSION_NAMES:
        return INDEX_MAGIC + bytes([version, 0]) + struct.pack("<I", len(header)) + header + bytes(payload)
    names_raw = ("\x00".join(table.parts) + "\n" + "\x00".join(table.ids)).encode("utf-8")
    names = bytes(Zstd(level=level).encode(names_raw))
    return (INDEX_MAGIC + bytes([version, 0])
            + struct.pack("<III", len(names), len(names_raw), zlib.crc32(names)) + names
            + struct.pack("<II", len(header), zlib.crc32(header)) + header + bytes(payload))


def _read_names(data: bytes) -> tuple[tuple[list[str], list[str]], int]:
    """The names block of a version-5 index file: ``((parts, ids), offset after the block)``, or ValueError."""
    from numcodecs.zstd import Zstd

    if len(data) < 20:
        raise ValueError(f"truncated names block ({len(data)} bytes)")
    m, r, crc = struct.unpack("<III", data[8:20])
    block = data[20 : 20 + m]
    if len(block) != m:
        raise ValueError(f"truncated names block ({len(block)} of {m} bytes)")
    if zlib.crc32(block) != crc:
        raise ValueError("names block CRC mismatch")
    text = bytes(zstd_decode_bounded(block, r, Zstd())).decode("utf-8")
    p, sep, i = text.partition("\n")
    if not sep:
        raise ValueError("malformed names block")
    parts = p.split("\x00") if p else []
    ids = i.split("\x00") if i else []
    if any(not x for x in parts) or any(not x or "\n" in x for x in ids):
        raise ValueError("an empty name in the names block")
    return (parts, ids), 20 + m


def index_file_names(data: bytes) -> tuple[list[str], list[str]] | None:
    """``(parts, video ids)`` that an index file names in its separately checked names block (version 5),
    or None (an older version, or a damaged block). Never raises."""
    if len(data) < 8 or data[:6] != INDEX_MAGIC or data[6] < INDEX_FILE_VERSION_NAMES:
        return None
    try:
        return _read_names(data)[0]
    except Exception:  # noqa: BLE001 - a damaged block names nothing
        return None


def decode_index_file(data: bytes, where: str) -> IndexTable:
    """Parse a ``.fcidx`` file (versions 1-5).

    Raises:
        DamagedIndexError: bad magic, version, CRC or structure (names ``where``); for a version-5 file
            whose names block is intact, the error carries the parts and video ids the file held.
    """
    from numcodecs.zstd import Zstd

    from featcomp.store.headers import IndexFileHeader

    if len(data) < 12 or data[:6] != INDEX_MAGIC:
        raise DamagedIndexError(f"{where}: not a featcomp index file (bad magic)")
    if data[6] not in _WRITTEN_UNIT_NS:
        raise DamagedIndexError(f"{where}: index file version {data[6]} is not supported (upgrade featcomp)")
    version = data[6]
    names = None
    try:
        if version >= INDEX_FILE_VERSION_NAMES:
            names, pos = _read_names(data)
            if len(data) < pos + 8:
                raise ValueError("truncated header")
            hlen, hcrc = struct.unpack("<II", data[pos : pos + 8])
            hdr = data[pos + 8 : pos + 8 + hlen]
            if len(hdr) != hlen or zlib.crc32(hdr) != hcrc:
                raise ValueError("header CRC mismatch (damaged or truncated header)")
            payload_c = data[pos + 8 + hlen :]
        else:
            (hlen,) = struct.unpack("<I", data[8:12])
            if len(data) < 12 + hlen:
                raise ValueError(f"truncated header ({len(data) - 12} bytes, {hlen} declared)")
            hdr = data[12 : 12 + hlen]
            payload_c = data[12 + hlen :]
        header = json.loads(hdr)
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        if zlib.crc32(payload_c) != header["payload_crc32"]:
            raise ValueError("payload CRC mismatch")
        ih = IndexFileHeader.from_dict(header, version, names_block=names is not None)  # every other check
        n = ih.n
        columns = [c.to_list() for c in ih.columns]
        parts = names[0] if names is not None else list(ih.parts)
        size = ih.payload_size
        payload = zstd_decode_bounded(payload_c, size, Zstd())
        got: dict[str, Any] = {}
        if names is not None:
            if any(c[0] == "ids" for c in columns):
                raise ValueError("an ids column in a version-5 payload")
            got["ids"] = names[1]
        for name, dt, off, nb in columns:
            raw = payload[off : off + nb]
            if len(raw) != nb:
                raise ValueError(f"column {name} truncated")
            if dt == "utf8-nul":
                got[name] = bytes(raw).decode("utf-8").split("\x00") if n else []
            else:
                got[name] = np.frombuffer(raw, dtype=dt).copy()
        for name in ("ids", "meta", *(c for c, _ in _COLUMNS)):
            if len(got[name]) != n:
                raise ValueError(f"column {name} has {len(got[name])} rows, expected {n}")
        for name, _, _ in _OPTIONAL_COLUMNS:
            if name in got and len(got[name]) != n:
                raise ValueError(f"column {name} has {len(got[name])} rows, expected {n}")
        known = {"ids", "meta", "scales_len", "scales", *(c for c, _ in _ALL_COLUMNS)}
        if set(got) - known:
            raise ValueError(f"unknown columns {sorted(set(got) - known)}")
        scales = _ragged_scales(got.pop("scales_len", None), got.pop("scales", None), n)
        if scales is not None and version < INDEX_FILE_VERSION_NAMES:
            raise ValueError(f"scales columns in an index file of version {version} (only version 5 holds them)")
        if n and (got["part"].min() < 0 or got["part"].max() >= len(parts)):
            raise ValueError("a row names a part that the file does not list")
        if n and (got["length"].min() < 0):
            raise ValueError("a negative frame count")
    except (ValueError, KeyError, TypeError, RuntimeError, OverflowError, struct.error) as e:
        named = ""
        if names is not None:
            named = (f"; it still names its {len(names[1])} video(s) (FeatureStore.lost_videos, `featcomp verify`): "
                     "`featcomp repair` rebuilds what remains")
        raise DamagedIndexError(
            f"{where}: corrupt index file ({e}); readers leave it out, so the videos it records are not served{named}; "
            "re-run the job to write them again",
            parts=None if names is None else names[0], video_ids=None if names is None else names[1],
        ) from None
    if n:
        got["written"] = np.cumsum(got["written"]).astype(np.int64) * _WRITTEN_UNIT_NS[version]
        part = got["part"]
        same = np.concatenate([[False], part[1:] == part[:-1]])
        # undo the delta: start[i] = delta[i] + (start[i-1] + length[i-1]) within runs of one part,
        # i.e. a cumulative sum that restarts at every run start
        x = got["start"].astype(np.int64)
        x[1:] += np.where(same[1:], got["length"][:-1], 0)
        cs = np.cumsum(x)
        run_first = np.maximum.accumulate(np.where(~same, np.arange(n), 0))
        base = np.where(run_first > 0, cs[np.maximum(run_first - 1, 0)], 0)
        got["start"] = cs - base
    return IndexTable(parts=list(parts), ids=got.pop("ids"), meta=got.pop("meta"), scales=scales, **got)


def _ragged_scales(lens: np.ndarray | None, flat: np.ndarray | None, n: int) -> list | None:
    """The ``scales`` of an index file's rows from its ``scales_len`` / ``scales`` columns (ValueError
    when they disagree); None when the file has neither."""
    if lens is None and flat is None:
        return None
    if lens is None or flat is None:
        raise ValueError("a scales column without the other (scales_len / scales)")
    if len(lens) != n or (n and lens.min() < 0) or int(lens.sum()) != len(flat):
        raise ValueError(f"scales columns disagree ({len(lens)} row lengths summing to {int(lens.sum())}, "
                         f"{len(flat)} scales, {n} rows)")
    if len(flat) and (not np.all(np.isfinite(flat)) or flat.min() < 0):
        raise ValueError("scales that are not finite and non-negative")
    ends = np.cumsum(lens)
    return [None if k == 0 else flat[e - k : e].copy() for k, e in zip(lens.tolist(), ends.tolist())]


# Rows of one index file (a bound on what a header may make the reader allocate; docs/reliability.md).
MAX_INDEX_ROWS = 1 << 28
_DTYPES = {dt for _, dt in _ALL_COLUMNS} | {"utf8-nul", "<f4"}
# a zstd block holds at most 128 KiB and costs at least 4 bytes (3-byte header + one RLE byte)
_ZSTD_MAX_RATIO = (128 << 10) // 4


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def zstd_content_size(buf: bytes) -> int | None:
    """The decompressed size a zstd frame declares in its header (None when absent or not a frame)."""
    if len(buf) < 5 or buf[:4] != b"\x28\xb5\x2f\xfd":
        return None
    fhd = buf[4]
    fcs_flag, single, did_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag]
    nb = (1 if single else 0, 2, 4, 8)[fcs_flag]
    if nb == 0 or len(buf) < pos + nb:
        return None
    v = int.from_bytes(buf[pos : pos + nb], "little")
    return v + 256 if nb == 2 else v


def zstd_decode_bounded(buf: bytes, size: int, zstd: Any) -> memoryview:
    """Decompress a zstd frame that must hold exactly ``size`` bytes, never allocating more.

    The frame's declared size is checked first (against ``size`` and against what ``len(buf)`` bytes
    of zstd can hold), then the frame is decoded into a buffer of that size.

    Raises:
        ValueError: a frame without a declared size, of another size, or one that cannot hold it.
    """
    declared = zstd_content_size(buf)
    if declared is None:
        raise ValueError("not a zstd frame with a declared size")
    if declared != size:
        raise ValueError(f"zstd frame of {declared} bytes, {size} expected")
    if size > _ZSTD_MAX_RATIO * len(buf) + (128 << 10):
        raise ValueError(f"{len(buf)} bytes of zstd cannot hold {size} bytes")
    out = np.empty(size, np.uint8)
    if size:
        zstd.decode(buf, out=out)
    return memoryview(out)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(s: str) -> str:
    """A file-name-safe version of ``s`` (for writer ids)."""
    return _SAFE.sub("-", s).strip("-") or "w"

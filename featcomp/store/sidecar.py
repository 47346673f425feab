"""The header sidecar of a featcomp store (format version 5): a store header's bulk as compact binary.

A store header is JSON in the root ``zarr.json``. For a model with many latent channels most of it is
numbers: the dequantization steps (``offsets``, ``scale`` and, with per-frame rate levels, an
``(L, C)`` ``level_scale``) written as JSON decimals, the same lists again in the model card, and the
coding tables as base64 of zlib. A 1000-latent rate-controlled model made that 267 KB (issue 18: 4,433
bits/frame on a 558-frame store whose data is 759). Version 5 keeps the header's *shape* in
``zarr.json`` and moves its bulk to one binary file next to it:

- every list of >= :data:`MIN_FLOATS` floats (and every list of equal-length float lists) anywhere in
  the header, the model card included, becomes ``{"$fcb": i}`` and entry ``i`` of the sidecar holds it
  as float32 (when every value is a float32 exactly) or float64, byte-shuffled; identical arrays are
  stored once (the card's steps are the header's);
- ``codec.tables`` (base64 of zlib of the frozen codec's ``to_bytes()``) becomes ``{"$fcb": i}`` and the
  entry holds the codec bytes themselves, 2-byte shuffled (the frequencies are uint16);
- the header gains ``"sidecar": {"file": "header.<sha256[:16]>.fcb", "bytes": n, "sha256": hex}``: the
  file is named by its content (two writers creating one store race on ``zarr.json`` only), and a
  reader checks its size and digest before parsing it.

Reading (:func:`unpack_header`) gives back the header a version-4 writer would have recorded (with
``format_version`` 5 and the ``sidecar`` key): every float as written, the same tables string up to
zlib's bytes (the tables are checked by their digest, never by their encoding). The writer uses the
sidecar only when the header's JSON would exceed :data:`SIDECAR_MIN_JSON_BYTES`, so small headers (and
every golden store) keep their version and bytes.

File layout (little endian)::

    6 bytes  b"FCHDR\\0"
    u8       layout version (1)
    u8       reserved (0)
    u32      decompressed payload size
    u32      CRC-32 of the compressed payload
    bytes    zstd(payload)
    payload: u32 n; n entries of: u8 kind (1 float32, 2 float64, 3 bytes), u8 shuffle (element size the
             bytes were split by; 1 = none), u8 ndim (1 or 2), u32 rows, u32 cols (1 for ndim 1),
             u32 nbytes, then nbytes of data (shuffled: byte j of every element together).

Numpy, zlib, base64 and numcodecs' zstd only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import zlib
from typing import Any, Callable

import numpy as np

from featcomp.errors import StoreError
from featcomp.store.format import SIDECAR_FORMAT_VERSION  # 5

__all__ = ["SIDECAR_FORMAT_VERSION", "SIDECAR_MIN_JSON_BYTES", "MIN_FLOATS", "MAGIC", "pack_header",
           "unpack_header", "encode_sidecar", "decode_sidecar", "sidecar_name", "is_sidecar_name"]

SIDECAR_MIN_JSON_BYTES = 16384  # headers whose JSON is smaller keep the older layout, byte for byte
MIN_FLOATS = 16  # shorter float lists stay JSON
MAGIC = b"FCHDR\x00"
LAYOUT_VERSION = 1
MAX_ENTRIES = 4096
MAX_PAYLOAD = 1 << 26  # bytes a sidecar may decompress to (a bound on what a forged file can make us allocate)
_REF = "$fcb"
_KIND_F32, _KIND_F64, _KIND_BYTES = 1, 2, 3
_ENTRY = struct.Struct("<BBBIII")
_NAME = re.compile(r"^header\.[0-9a-f]{16}\.fcb$")


def sidecar_name(blob: bytes) -> str:
    """The file name of a sidecar: ``header.<first 16 hex digits of its sha256>.fcb``."""
    return f"header.{hashlib.sha256(blob).hexdigest()[:16]}.fcb"


def is_sidecar_name(name: str) -> bool:
    return bool(_NAME.match(name))


# ------------------------------------------------------------------------------------------ bytes
def _shuffle(b: bytes, size: int) -> bytes:
    if size <= 1 or len(b) % size:
        return b
    return np.frombuffer(b, np.uint8).reshape(-1, size).T.tobytes()


def _unshuffle(b: bytes, size: int) -> bytes:
    if size <= 1 or len(b) % size:
        return b
    return np.frombuffer(b, np.uint8).reshape(size, -1).T.tobytes()


def encode_sidecar(entries: list[tuple[int, tuple[int, int, int], bytes]], level: int = 19) -> bytes:
    """The sidecar bytes of ``entries``: ``(kind, (ndim, rows, cols), raw little-endian bytes)``."""
    from numcodecs.zstd import Zstd

    out = [struct.pack("<I", len(entries))]
    for kind, (ndim, rows, cols), raw in entries:
        size = {_KIND_F32: 4, _KIND_F64: 8, _KIND_BYTES: 2}[kind]
        data = _shuffle(raw, size)
        out.append(_ENTRY.pack(kind, size if len(raw) % size == 0 else 1, ndim, rows, cols, len(data)) + data)
    payload = b"".join(out)
    comp = bytes(Zstd(level=level).encode(payload))
    return MAGIC + bytes([LAYOUT_VERSION, 0]) + struct.pack("<II", len(payload), zlib.crc32(comp)) + comp


def decode_sidecar(blob: bytes, where: str) -> list[Any]:
    """Parse a sidecar: a list of float arrays (float64 ``(n,)`` or ``(rows, cols)``) and ``bytes``.

    Every length is checked against what remains before it is used; nothing is allocated beyond the
    declared payload size (itself bounded by what the compressed bytes can hold).

    Raises:
        StoreError: naming ``where`` (the sidecar file): bad magic, layout version, CRC, or structure.
    """
    from numcodecs.zstd import Zstd

    from featcomp.store.format import zstd_decode_bounded

    def bad(what: str) -> StoreError:
        return StoreError(f"{where}: corrupt store header sidecar ({what}); the store is damaged")

    if len(blob) < 16 or blob[:6] != MAGIC:
        raise bad("bad magic or truncated")
    if blob[6] != LAYOUT_VERSION:
        raise StoreError(f"{where}: header sidecar layout {blob[6]} is newer than this featcomp reads "
                         f"({LAYOUT_VERSION}); upgrade featcomp")
    size, crc = struct.unpack_from("<II", blob, 8)
    comp = blob[16:]
    if zlib.crc32(comp) != crc:
        raise bad("CRC mismatch")
    if size > MAX_PAYLOAD:
        raise bad(f"declared payload of {size} bytes")
    try:
        payload = bytes(zstd_decode_bounded(comp, size, Zstd()))
    except (ValueError, RuntimeError) as e:
        raise bad(str(e)) from None
    if len(payload) < 4:
        raise bad("truncated payload")
    (n,) = struct.unpack_from("<I", payload, 0)
    if n > MAX_ENTRIES:
        raise bad(f"{n} entries")
    pos, out = 4, []
    for i in range(n):
        if pos + _ENTRY.size > len(payload):
            raise bad(f"entry {i} truncated")
        kind, shuf, ndim, rows, cols, nb = _ENTRY.unpack_from(payload, pos)
        pos += _ENTRY.size
        if kind not in (_KIND_F32, _KIND_F64, _KIND_BYTES) or ndim not in (1, 2) or shuf not in (1, 2, 4, 8) \
                or pos + nb > len(payload) or (ndim == 1 and cols != 1):
            raise bad(f"entry {i}: kind {kind}, ndim {ndim}, shuffle {shuf}, {nb} bytes")
        data = _unshuffle(payload[pos : pos + nb], shuf)
        pos += nb
        if kind == _KIND_BYTES:
            out.append(data)
            continue
        dt = "<f4" if kind == _KIND_F32 else "<f8"
        if rows * cols * np.dtype(dt).itemsize != nb:
            raise bad(f"entry {i}: {rows}x{cols} values in {nb} bytes")
        a = np.frombuffer(data, dt).astype(np.float64)
        out.append(a.reshape(rows, cols) if ndim == 2 else a)
    if pos != len(payload):
        raise bad("trailing bytes")
    return out


# ----------------------------------------------------------------------------------------- header
def _float_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= MIN_FLOATS and all(type(x) is float for x in v)


def _float_table(v: Any) -> bool:
    return (isinstance(v, list) and len(v) >= 2 and all(isinstance(r, list) and r and all(type(x) is float for x in r)
                                                        for r in v)
            and len({len(r) for r in v}) == 1 and len(v) * len(v[0]) >= MIN_FLOATS)


def pack_header(header: dict) -> tuple[dict, bytes] | None:
    """Split a store header (as :func:`featcomp.store.writer.build_header` makes it) into the JSON that
    ``zarr.json`` records and the sidecar bytes, or None when the header stays in one piece (its JSON is
    under :data:`SIDECAR_MIN_JSON_BYTES`, or it has nothing to move).

    The JSON gets ``format_version`` :data:`SIDECAR_FORMAT_VERSION` and ``sidecar`` (file, bytes, sha256).
    """
    if len(json.dumps(header)) < SIDECAR_MIN_JSON_BYTES:
        return None
    entries: list[tuple[int, tuple[int, int, int], bytes]] = []
    seen: dict[tuple, int] = {}

    def add(kind: int, shape: tuple[int, int, int], raw: bytes) -> dict:
        key = (kind, shape, raw)
        if key not in seen:
            seen[key] = len(entries)
            entries.append((kind, shape, raw))
        return {_REF: seen[key]}

    def floats(v: list, shape: tuple[int, int, int]) -> dict:
        a = np.asarray(v, np.float64)
        if np.array_equal(a.astype(np.float32).astype(np.float64), a, equal_nan=True):
            return add(_KIND_F32, shape, a.astype("<f4").tobytes())
        return add(_KIND_F64, shape, a.astype("<f8").tobytes())

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if _REF in v:  # a dict that looks like a reference could not be told apart: refuse to pack
                raise ValueError(f"a header key named {_REF!r}")
            return {k: walk(x) for k, x in v.items()}
        if _float_list(v):
            return floats(v, (1, len(v), 1))
        if _float_table(v):
            return floats(v, (2, len(v), len(v[0])))
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    try:
        out = walk(header)
    except ValueError:
        return None
    codec = out.get("codec")
    if isinstance(codec, dict) and isinstance(codec.get("tables"), str):
        try:
            raw = zlib.decompress(base64.b64decode(codec["tables"].encode("ascii"), validate=True))
        except Exception:  # noqa: BLE001 - tables the writer did not make: leave them as they are
            raw = None
        if raw is not None:
            codec["tables"] = add(_KIND_BYTES, (1, len(raw), 1), raw)
    if not entries:
        return None
    blob = encode_sidecar(entries)
    out["format_version"] = SIDECAR_FORMAT_VERSION
    out["sidecar"] = {"file": sidecar_name(blob), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    return out, blob


def unpack_header(h: dict, read: Callable[[str], bytes], url: str) -> dict:
    """The whole header of a store whose ``zarr.json`` records a ``sidecar`` (``h`` unchanged otherwise).

    Args:
        h: the header as recorded in ``zarr.json``.
        read: reads a file of the store by key (raises FileNotFoundError when absent).
        url: the store's URL (errors name ``<url>/<sidecar file>``).

    Raises:
        StoreError: naming the sidecar file: missing, of another size or digest, corrupt, or a reference
            to an entry it does not hold.
    """
    sc = h.get("sidecar")
    if sc is None:
        return h
    fv = h.get("format_version")
    if not isinstance(sc, dict) or not isinstance(sc.get("file"), str) or not is_sidecar_name(sc["file"]) \
            or not isinstance(sc.get("sha256"), str) or type(sc.get("bytes")) is not int:
        raise StoreError(f"{url.rstrip('/')}/zarr.json: corrupt store header (sidecar {sc!r}); the store is damaged")
    if fv != SIDECAR_FORMAT_VERSION:
        raise StoreError(f"{url.rstrip('/')}/zarr.json: corrupt store header (a sidecar in format version {fv!r}); "
                         "the store is damaged")
    where = f"{url.rstrip('/')}/{sc['file']}"
    try:
        blob = read(sc["file"])
    except FileNotFoundError:
        raise StoreError(f"{where}: the store header's sidecar is missing (zarr.json records it); the store is "
                         "damaged: copy the file back from where the store came from") from None
    if len(blob) != sc["bytes"] or hashlib.sha256(blob).hexdigest() != sc["sha256"]:
        raise StoreError(f"{where}: the store header's sidecar does not match zarr.json ({len(blob)} bytes, "
                         f"{sc['bytes']} recorded; sha256 differs); the store is damaged")
    entries = decode_sidecar(blob, where)

    def ref(v: dict) -> Any:
        i = v.get(_REF)
        if len(v) != 1 or type(i) is not int or not 0 <= i < len(entries):
            raise StoreError(f"{where}: zarr.json refers to sidecar entry {i!r} of {len(entries)}; the store is damaged")
        return entries[i]

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if _REF in v:
                e = ref(v)
                if isinstance(e, bytes):
                    raise StoreError(f"{where}: sidecar entry {v[_REF]} holds tables where zarr.json expects numbers; "
                                     "the store is damaged")
                return e.tolist()
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    codec = h.get("codec")
    tables = codec.get("tables") if isinstance(codec, dict) else None
    if not isinstance(tables, dict):  # the tables as a string (or damaged: StoreHeader says so)
        return walk(h)
    e = ref(tables)
    if not isinstance(e, bytes):
        raise StoreError(f"{where}: sidecar entry {tables[_REF]} holds numbers where zarr.json expects the coding "
                         "tables; the store is damaged")
    out = walk({k: v for k, v in h.items() if k != "codec"})
    out["codec"] = {k: (base64.b64encode(zlib.compress(e, 9)).decode("ascii") if k == "tables" else walk(v))
                    for k, v in codec.items()}
    return {k: out[k] for k in h}  # the recorded key order

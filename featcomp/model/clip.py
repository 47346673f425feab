"""Compressed clips: the ``.fcc`` container of one clip's coded latents, and decoding it (layer 2).

A :class:`CompressedClip` is what :meth:`featcomp.model.Extractor.compress` returns and ``featcomp
compress`` writes: magic ``FCCL``, a version byte, a JSON header (shape, codec and model digests,
timestamps and frame indices, affine when they are), the side arrays, then the coded stream(s).
Version 1 is the original layout (the implicit kind, one stream, no rate); version 2 adds ``kind``,
``chunks`` (byte lengths of independently decodable streams, for kinds that code time chunks) and
``rate``; version 3 adds per-frame rate levels as packed bit fields; version 4 (written by default) is a
compact binary header of the same fields (about 40 bytes instead of about 250: 8-byte digest prefixes,
varints, a kind code) closed by a CRC-32 of header and side arrays, so that the fixed cost of a short
clip stays small (issue 18). :func:`decode_clip` decodes a
clip with its :class:`~featcomp.model.Model` (no backbone needed). Parsing is bounded: every declared
length is checked against the bytes present before anything is allocated (:class:`CodecError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from featcomp.entropy.bitstream import decode_varint, encode_varint
from featcomp.entropy.kinds import DEFAULT_KIND, entropy_kind
from featcomp.errors import CodecError

if TYPE_CHECKING:
    from featcomp.model.file import Model

__all__ = ["CompressedClip", "decode_clip", "CLIP_FORMAT_VERSION", "DEFAULT_TEMPORAL_CHUNK", "MAX_CLIP_FRAMES"]

# --------------------------------------------------------------------------------------------------
# compressed clips

_CLIP_MAGIC = b"FCCL"
_CLIP_VERSION = 2
_CLIP_VERSION_LEVELS = 3  # version 2 + per-frame rate levels (packed bit fields after the side arrays)
_CLIP_VERSION_COMPACT = 4  # the same fields as a compact binary header with a CRC-32 (the default)
_CLIP_READ_VERSIONS = (1, 2, 3, 4)
CLIP_FORMAT_VERSION = _CLIP_VERSION_COMPACT  # what to_bytes writes unless a clip says otherwise
# version 4: kinds with a one-byte code (a kind outside this tuple is stored by name); never reorder
_KIND_CODES = ("factorized", "temporal", "hyperprior")
_DIGEST_PREFIX = 8  # bytes of the codec / model sha256 kept by version 4 (16 hex characters)
DEFAULT_TEMPORAL_CHUNK = 256  # frames per independently decodable temporal stream in a clip


def _affine(a: np.ndarray, rtol: float = 0.0) -> tuple[float, float] | None:
    """(start, step) if ``a`` equals ``start + step * arange(n)`` exactly in float64, else None."""
    if a.size < 2:
        return (float(a[0]) if a.size else 0.0, 0.0)
    start, step = float(a[0]), float(a[1] - a[0])
    if np.array_equal(start + step * np.arange(a.size, dtype=np.float64), a.astype(np.float64)):
        return start, step
    return None


def _read_series(b: bytes, pos: int, affine: list | None, n: int, dtype: Any, what: str) -> tuple[np.ndarray, int]:
    """One side array of a compressed clip: ``start + step * arange(n)`` when stored as ``affine``
    (``[start, step]``), else ``n`` little-endian 8-byte values at ``pos``. Returns (array, next pos)."""
    if affine is not None:
        return affine[0] + affine[1] * np.arange(n, dtype=dtype), pos
    if len(b) < pos + 8 * n:
        raise CodecError(f"compressed clip: truncated {what}")
    return np.frombuffer(b, np.dtype(dtype).newbyteorder("<"), count=n, offset=pos).astype(dtype), pos + 8 * n


@dataclasses.dataclass(frozen=True)
class CompressedClip:
    """One clip's features as entropy-coded stream(s).

    Attributes:
        data: the codec stream of int latents of shape ``shape`` (``codec.compress_symbols``), or, when
            ``chunks`` is set, the concatenation of independent streams (one per chunk of frames).
        shape: (T, C', *) latent shape.
        timestamps: float64 (T,) seconds of each frame.
        frame_indices: int64 (T,) frame numbers in the video.
        codec_digest: sha256 hex of the codec that made ``data`` (decoding checks it).
        model_digest: digest of the model file, or "".
        kind: the codec kind (``"factorized"``, ``"temporal"``, ``"hyperprior"``).
        chunks: byte lengths of the streams in ``data`` (temporal clips: each chunk of frames starts
            with a fresh context and decodes alone), or None for one stream.
        rate: the rate level of a variable-rate model (it sets the dequantization scale), or None.
        levels: uint8 (T,) the rate level of each frame (per-frame rate control,
            :mod:`featcomp.ratecontrol`), or None; when set, ``rate`` is None and frame t dequantizes
            at level ``levels[t]``.
        format_version: the container version to write (None: :data:`CLIP_FORMAT_VERSION`, the compact
            version 4). :meth:`from_bytes` records the version it read, so a clip re-serializes to the
            same bytes. Version 4 keeps the first 8 bytes of each digest: ``codec_digest`` of a clip read
            from it is a 16-character prefix (:meth:`made_by` compares either form).

    Serialized as clip format version 4 (compact binary, below) unless ``format_version`` asks for a JSON
    layout: version 1 (the original layout) when ``kind`` is factorized with one
    stream and no rate, version 2 (``kind``, ``chunks``, ``rate`` in the JSON header) otherwise, and
    version 3 when ``levels`` is set: version 2 plus ``"levels": w`` in the header and the levels packed
    as ``w``-bit unsigned fields (most significant bit first, zero-padded to a byte) after the side
    arrays, ``w = level_bits``.
    """

    data: bytes
    shape: tuple[int, ...]
    timestamps: np.ndarray
    frame_indices: np.ndarray
    codec_digest: str
    model_digest: str = ""
    kind: str = DEFAULT_KIND
    chunks: tuple[int, ...] | None = None
    rate: float | None = None
    levels: np.ndarray | None = None
    level_bits: int = 8
    format_version: int | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.format_version is not None and self.format_version not in _CLIP_READ_VERSIONS:
            raise CodecError(f"compressed clip: format_version must be one of {_CLIP_READ_VERSIONS}, "
                             f"got {self.format_version}")
        if self.levels is not None:
            lv = np.asarray(self.levels)
            if lv.shape != (int(self.shape[0]),):
                raise CodecError(f"compressed clip: {self.shape[0]} frames but levels of shape {lv.shape}")
            if not 1 <= int(self.level_bits) <= 8:
                raise CodecError(f"compressed clip: level_bits must be in [1, 8], got {self.level_bits}")
            if lv.size and (lv.min() < 0 or lv.max() >= 1 << int(self.level_bits)):
                raise CodecError(f"compressed clip: levels must be in [0, {1 << int(self.level_bits)}), got "
                                 f"[{lv.min()}, {lv.max()}]")
            if self.rate is not None:
                raise CodecError("compressed clip: give either one rate or per-frame levels, not both")
            object.__setattr__(self, "levels", lv.astype(np.uint8))

    def _packed_levels(self) -> bytes:
        if self.levels is None:
            return b""
        w = int(self.level_bits)
        bits = (self.levels[:, None].astype(np.uint8) >> np.arange(w - 1, -1, -1, dtype=np.uint8)) & 1
        return np.packbits(bits.reshape(-1)).tobytes()

    @property
    def streams(self) -> list[bytes]:
        """The independent codec streams in ``data`` (one unless ``chunks`` is set)."""
        if self.chunks is None:
            return [self.data]
        if sum(self.chunks) != len(self.data):
            raise CodecError(f"compressed clip: chunk lengths sum to {sum(self.chunks)}, stream has {len(self.data)} bytes")
        out, pos = [], 0
        for n in self.chunks:
            out.append(self.data[pos:pos + n])
            pos += n
        return out

    @property
    def num_frames(self) -> int:
        return int(self.shape[0])

    def made_by(self, codec_digest: str) -> bool:
        """True if ``codec_digest`` (a full sha256 hex) is the codec recorded in this clip: equal, or, for a
        clip read from format version 4, starting with its 16-character prefix."""
        mine = str(self.codec_digest)
        return len(mine) >= 2 * _DIGEST_PREFIX and str(codec_digest).startswith(mine)

    @property
    def bits_per_frame(self) -> float:
        """Size of the feature stream(s) (codec headers and ANS flush included) plus the packed per-frame
        levels, if any, in bits per frame."""
        return 8.0 * (len(self.data) + len(self._packed_levels())) / max(1, self.num_frames)

    def to_bytes(self) -> bytes:
        """Serialize: magic, version, JSON header length (u32), JSON header, side arrays, stream.

        Timestamps and frame indices that form arithmetic sequences (constant-rate sampling) are stored
        as (start, step); others as raw little-endian arrays.
        """
        if (self.format_version or CLIP_FORMAT_VERSION) == _CLIP_VERSION_COMPACT:
            return self._to_bytes_compact()
        ts = np.asarray(self.timestamps, np.float64)
        fi = np.asarray(self.frame_indices, np.int64)
        side = b""
        hdr: dict[str, Any] = {"shape": list(self.shape), "codec_digest": self.codec_digest,
                               "model_digest": self.model_digest, "n": int(ts.size)}
        aff = _affine(ts)
        if aff is not None:
            hdr["ts"] = list(aff)
        else:
            hdr["ts"] = None
            side += ts.astype("<f8").tobytes()
        afi = _affine(fi.astype(np.float64))
        if afi is not None:
            hdr["fi"] = [int(afi[0]), int(afi[1])]
        else:
            hdr["fi"] = None
            side += fi.astype("<i8").tobytes()
        implicit = entropy_kind(self.kind).implicit
        version = 1 if (implicit and self.chunks is None and self.rate is None) else _CLIP_VERSION
        if self.levels is not None:
            version = _CLIP_VERSION_LEVELS
        version = max(version, int(self.format_version or 0))
        if version == _CLIP_VERSION_LEVELS:
            hdr["levels"] = int(self.level_bits)
            side += self._packed_levels()
        if version >= 2:
            hdr.update(kind=self.kind, chunks=None if self.chunks is None else [int(c) for c in self.chunks],
                       rate=None if self.rate is None else float(self.rate))
        h = json.dumps(hdr, separators=(",", ":")).encode()
        return _CLIP_MAGIC + struct.pack("<BI", version, len(h)) + h + side + self.data

    def _to_bytes_compact(self) -> bytes:
        """Format version 4: magic, version, then (little endian)::

            u8 flags        1 timestamps predicted, 2 timestamp start != 0, 4 frame indices predicted,
                            8 model digest, 16 rate, 32 per-frame levels, 64 chunks
            u8 kind code    index into ("factorized", "temporal", "hyperprior"); 255: u8 length + ASCII name
            8 bytes         codec sha256 prefix; then 8 bytes model sha256 prefix when flag 8
            u8 ndim, varint shape[ndim]      (shape[0] = frames n)
            flag 1: [f64 start (flag 2)], f64 step, u8 width wt
            flag 4: zigzag varint start, zigzag varint step, u8 width wf
            f64 rate (flag 16); u8 level field width w (flag 32); varint count + varint byte lengths (flag 64)
            side arrays     timestamps: flag 1: n residuals of wt bits, else f64[n];
                            frame indices: flag 4: n residuals of wf bits, else i64[n];
                            flag 32: the packed levels (n fields of w bits)
            u32 CRC-32 of every byte above, magic included
            rest            the codec stream(s)

        A predicted series is ``start + step * arange(n)`` corrected by per-frame residuals: for timestamps
        the difference of the float64 bit patterns (units in the last place), for frame indices the integer
        difference, zigzag-coded in fixed-width fields (most significant bit first, zero-padded to a byte;
        width 0 when the series is exactly arithmetic). Timestamps from a container's time base (integer
        ticks times a float step) sit within a few ULPs of a line: 0-2 bits a frame instead of 64.
        """
        ts = np.asarray(self.timestamps, np.float64)
        fi = np.asarray(self.frame_indices, np.int64)
        flags = 0
        body = bytearray()
        side = b""
        kind = str(self.kind)
        if kind in _KIND_CODES:
            body.append(_KIND_CODES.index(kind))
        else:
            name = kind.encode("ascii")
            if not 0 < len(name) < 256:
                raise CodecError(f"compressed clip: kind name {kind!r} must be 1..255 ASCII characters")
            body += bytes([255, len(name)]) + name
        body += _digest_prefix(self.codec_digest, "codec_digest")
        if self.model_digest:
            flags |= 8
            body += _digest_prefix(self.model_digest, "model_digest")
        shape = [int(v) for v in self.shape]
        if not 2 <= len(shape) <= 15 or shape[0] != ts.size or fi.size != ts.size:
            raise CodecError(f"compressed clip: shape {tuple(shape)} with {ts.size} timestamps and {fi.size} frame "
                             "indices")
        body.append(len(shape))
        for v in shape:
            body += encode_varint(v)
        pred = _predict_float_series(ts)
        if pred is not None:
            start, step, w, packed = pred
            flags |= 1
            if start != 0.0 or math.copysign(1.0, start) < 0:
                flags |= 2
                body += struct.pack("<d", start)
            body += struct.pack("<d", step) + bytes([w])
            side += packed
        else:
            side += ts.astype("<f8").tobytes()
        ipred = _predict_int_series(fi)
        if ipred is not None:
            start_i, step_i, w, packed = ipred
            flags |= 4
            body += encode_varint(_zigzag(start_i)) + encode_varint(_zigzag(step_i)) + bytes([w])
            side += packed
        else:
            side += fi.astype("<i8").tobytes()
        if self.rate is not None:
            flags |= 16
            body += struct.pack("<d", float(self.rate))
        if self.levels is not None:
            flags |= 32
            body.append(int(self.level_bits))
            side += self._packed_levels()
        if self.chunks is not None:
            flags |= 64
            body += encode_varint(len(self.chunks))
            for c in self.chunks:
                body += encode_varint(int(c))
        head = _CLIP_MAGIC + bytes([_CLIP_VERSION_COMPACT, flags]) + bytes(body) + side
        return head + struct.pack("<I", zlib.crc32(head)) + self.data

    @classmethod
    def from_bytes(cls, b: bytes) -> CompressedClip:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on a foreign or truncated blob."""
        b = bytes(b)
        if len(b) < 9 or b[:4] != _CLIP_MAGIC:
            raise CodecError("not a featcomp compressed clip (bad magic)")
        version = b[4]
        if version not in _CLIP_READ_VERSIONS:
            raise CodecError(f"compressed clip format version {version}, this featcomp reads {_CLIP_READ_VERSIONS}; "
                             "upgrade featcomp to read it")
        if version == _CLIP_VERSION_COMPACT:
            return cls._from_bytes_compact(b)
        hl = struct.unpack_from("<I", b, 5)[0]
        pos = 9
        if len(b) < pos + hl:
            raise CodecError(f"compressed clip: truncated header ({len(b) - pos} bytes after the prefix, the header "
                             f"declares {hl})")
        try:
            hdr = json.loads(b[pos:pos + hl])
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise CodecError("compressed clip: corrupt or truncated header") from None
        pos += hl
        try:
            f = _ClipHeader(hdr, version)
        except CodecError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CodecError(f"compressed clip: corrupt header ({type(e).__name__}: {e}); the clip was damaged "
                             "in storage or transfer") from None
        n = f.n
        ts, pos = _read_series(b, pos, f.ts, n, np.float64, "timestamps")
        fi, pos = _read_series(b, pos, f.fi, n, np.int64, "frame indices")
        levels, w = None, 8
        if version >= _CLIP_VERSION_LEVELS:
            w = f.levels
            nb = (n * w + 7) // 8
            if len(b) < pos + nb:
                raise CodecError("compressed clip: truncated per-frame levels")
            bits = np.unpackbits(np.frombuffer(b, np.uint8, nb, pos), count=n * w).reshape(n, w)
            levels = (bits.astype(np.uint16) << np.arange(w - 1, -1, -1, dtype=np.uint16)).sum(1).astype(np.uint8)
            pos += nb
        if f.chunks is not None and sum(f.chunks) != len(b) - pos:
            raise CodecError(f"compressed clip: chunk lengths sum to {sum(f.chunks)}, the clip has {len(b) - pos} "
                             "stream bytes (truncated or damaged)")
        return cls(data=b[pos:], shape=f.shape, timestamps=ts, frame_indices=fi, codec_digest=f.codec_digest,
                   model_digest=f.model_digest, kind=f.kind, chunks=f.chunks, rate=f.rate, levels=levels, level_bits=w,
                   format_version=version)

    @classmethod
    def _from_bytes_compact(cls, b: bytes) -> CompressedClip:
        """Parse format version 4 (see :meth:`_to_bytes_compact`); bounded: every count is checked against
        the bytes present and :data:`MAX_CLIP_FRAMES` before anything is allocated."""
        what = "compressed clip header"

        def need(pos: int, k: int, part: str) -> None:
            if len(b) < pos + k:
                raise CodecError(f"compressed clip: truncated {part} ({len(b)} bytes in all)")

        need(0, 7, "header")
        flags = b[5]
        if flags & 0x80:
            raise CodecError(f"compressed clip: unknown header flags 0x{flags:02x} (damaged, or a newer featcomp)")
        pos = 6
        code = b[pos]
        pos += 1
        if code < len(_KIND_CODES):
            kind = _KIND_CODES[code]
        elif code == 255:
            need(pos, 1, "header")
            ln = b[pos]
            need(pos + 1, ln, "header")
            try:
                kind = b[pos + 1:pos + 1 + ln].decode("ascii")
            except UnicodeDecodeError:
                raise CodecError("compressed clip: corrupt kind name in the header") from None
            pos += 1 + ln
        else:
            raise CodecError(f"compressed clip: unknown kind code {code} in the header (damaged clip)")
        need(pos, _DIGEST_PREFIX, "header")
        codec_digest = b[pos:pos + _DIGEST_PREFIX].hex()
        pos += _DIGEST_PREFIX
        model_digest = ""
        if flags & 8:
            need(pos, _DIGEST_PREFIX, "header")
            model_digest = b[pos:pos + _DIGEST_PREFIX].hex()
            pos += _DIGEST_PREFIX
        need(pos, 1, "header")
        ndim = b[pos]
        pos += 1
        if not 2 <= ndim <= 15:
            raise CodecError(f"compressed clip: corrupt header (a {ndim}-d shape)")
        shape = []
        for _ in range(ndim):
            v, pos = decode_varint(b, pos, what=what)
            if v > 1 << 62:
                raise CodecError(f"compressed clip: corrupt header (a shape entry of {v})")
            shape.append(v)
        n = shape[0]
        if n > MAX_CLIP_FRAMES:
            raise CodecError(f"compressed clip: {n} frames declared, more than the limit {MAX_CLIP_FRAMES} "
                             "(damaged clip)")

        def f64() -> float:
            nonlocal pos
            need(pos, 8, "header")
            v = struct.unpack_from("<d", b, pos)[0]
            pos += 8
            if not math.isfinite(v):
                raise CodecError("compressed clip: corrupt header (a non-finite number)")
            return v

        def zz() -> int:
            nonlocal pos
            v, pos = decode_varint(b, pos, what=what)
            return _unzigzag(v)

        ts_pred = fi_pred = None
        if flags & 1:
            start = f64() if flags & 2 else 0.0
            step = f64()
            need(pos, 1, "header")
            ts_pred = (start, step, b[pos])
            pos += 1
        elif flags & 2:
            raise CodecError("compressed clip: corrupt header flags (a timestamp start without predicted timestamps)")
        if flags & 4:
            start_i, step_i = zz(), zz()
            need(pos, 1, "header")
            fi_pred = (start_i, step_i, b[pos])
            pos += 1
            if max(abs(start_i), abs(step_i)) > 1 << 62:
                raise CodecError("compressed clip: corrupt header (frame index out of range)")
        for p in (ts_pred, fi_pred):
            if p is not None and p[2] > _MAX_RESIDUAL_BITS:
                raise CodecError(f"compressed clip: corrupt header (a {p[2]}-bit residual field)")
        rate = f64() if flags & 16 else None
        w = 8
        if flags & 32:
            need(pos, 1, "header")
            w = b[pos]
            pos += 1
            if not 1 <= w <= 8:
                raise CodecError(f"compressed clip: corrupt header (level field width {w})")
        chunks = None
        if flags & 64:
            count, pos = decode_varint(b, pos, what=what)
            if count > len(b) - pos:  # each length takes at least one byte
                raise CodecError(f"compressed clip: {count} chunks declared in a {len(b)}-byte clip (damaged clip)")
            lens = []
            for _ in range(count):
                c, pos = decode_varint(b, pos, what=what)
                lens.append(c)
            chunks = tuple(lens)
        if ts_pred is None:
            ts, pos = _read_series(b, pos, None, n, np.float64, "timestamps")
        else:
            nb = (n * ts_pred[2] + 7) // 8
            need(pos, nb, "timestamps")
            ts = _unpredict_float_series(ts_pred[0], ts_pred[1], ts_pred[2], b[pos:pos + nb], n)
            pos += nb
        if fi_pred is None:
            fi, pos = _read_series(b, pos, None, n, np.int64, "frame indices")
        else:
            nb = (n * fi_pred[2] + 7) // 8
            need(pos, nb, "frame indices")
            fi = _unpredict_int_series(fi_pred[0], fi_pred[1], fi_pred[2], b[pos:pos + nb], n)
            pos += nb
        levels = None
        if flags & 32:
            nb = (n * w + 7) // 8
            need(pos, nb, "per-frame levels")
            bits = np.unpackbits(np.frombuffer(b, np.uint8, nb, pos), count=n * w).reshape(n, w)
            levels = (bits.astype(np.uint16) << np.arange(w - 1, -1, -1, dtype=np.uint16)).sum(1).astype(np.uint8)
            pos += nb
        need(pos, 4, "header checksum")
        if zlib.crc32(b[:pos]) != struct.unpack_from("<I", b, pos)[0]:
            raise CodecError("compressed clip: header checksum mismatch (the clip was damaged in storage or transfer)")
        pos += 4
        if chunks is not None and sum(chunks) != len(b) - pos:
            raise CodecError(f"compressed clip: chunk lengths sum to {sum(chunks)}, the clip has {len(b) - pos} "
                             "stream bytes (truncated or damaged)")
        return cls(data=b[pos:], shape=tuple(shape), timestamps=ts, frame_indices=fi, codec_digest=codec_digest,
                   model_digest=model_digest, kind=kind, chunks=chunks, rate=rate, levels=levels, level_bits=w,
                   format_version=_CLIP_VERSION_COMPACT)


_MAX_RESIDUAL_BITS = 48  # a wider residual is stored as the plain 64-bit array instead


def _pack_fields(values: np.ndarray, w: int) -> bytes:
    """``values`` (uint64, each < 2**w) as ``w``-bit fields, most significant bit first, zero-padded."""
    if w == 0 or values.size == 0:
        return b""
    bits = (values[:, None] >> np.arange(w - 1, -1, -1, dtype=np.uint64)) & np.uint64(1)
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def _unpack_fields(buf: bytes, n: int, w: int) -> np.ndarray:
    """Inverse of :func:`_pack_fields`: uint64 (n,)."""
    if w == 0 or n == 0:
        return np.zeros(n, np.uint64)
    bits = np.unpackbits(np.frombuffer(buf, np.uint8), count=n * w).reshape(n, w)
    out = np.zeros(n, np.uint64)
    for j in range(w):  # one column at a time: memory stays O(n), not O(n * w * 8)
        out = (out << np.uint64(1)) | bits[:, j].astype(np.uint64)
    return out


def _zigzag_array(r: np.ndarray) -> np.ndarray:
    r = r.astype(np.int64)
    return ((r << np.int64(1)) ^ (r >> np.int64(63))).view(np.uint64)


def _unzigzag_array(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64)
    return ((z >> np.uint64(1)).view(np.int64)) ^ (-(z & np.uint64(1)).view(np.int64))


def _float_line(start: float, step: float, n: int) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return start + step * np.arange(n, dtype=np.float64)


def _predict_float_series(ts: np.ndarray) -> tuple[float, float, int, bytes] | None:
    """(start, step, width, packed residuals) of float64 ``ts`` around its end-to-end line, or None when
    the residuals need more than :data:`_MAX_RESIDUAL_BITS` bits (irregular timestamps: stored plainly)."""
    n = ts.size
    if n == 0 or not np.all(np.isfinite(ts)):
        return None
    start = float(ts[0])
    step = float((ts[-1] - ts[0]) / (n - 1)) if n > 1 else 0.0
    if not math.isfinite(step):
        return None
    pred = _float_line(start, step, n)
    if not np.all(np.isfinite(pred)):
        return None
    with np.errstate(over="ignore"):
        r = ts.view(np.int64) - pred.view(np.int64)  # difference of bit patterns (wraps, exactly invertible)
    z = _zigzag_array(r)
    w = int(z.max()).bit_length()
    if w > _MAX_RESIDUAL_BITS:
        return None
    return start, step, w, _pack_fields(z, w)


def _unpredict_float_series(start: float, step: float, w: int, buf: bytes, n: int) -> np.ndarray:
    pred = _float_line(start, step, n)
    r = _unzigzag_array(_unpack_fields(buf, n, w))
    with np.errstate(over="ignore"):
        return (pred.view(np.int64) + r).view(np.float64)


def _predict_int_series(fi: np.ndarray) -> tuple[int, int, int, bytes] | None:
    """(start, step, width, packed residuals) of int64 ``fi`` around its end-to-end line, or None."""
    n = fi.size
    if n == 0 or int(np.abs(fi).max()) > 1 << 61:
        return None
    start = int(fi[0])
    step = int(round((int(fi[-1]) - start) / (n - 1))) if n > 1 else 0
    r = fi - (start + step * np.arange(n, dtype=np.int64))
    z = _zigzag_array(r)
    w = int(z.max()).bit_length()
    if w > _MAX_RESIDUAL_BITS:
        return None
    return start, step, w, _pack_fields(z, w)


def _unpredict_int_series(start: int, step: int, w: int, buf: bytes, n: int) -> np.ndarray:
    r = _unzigzag_array(_unpack_fields(buf, n, w))
    with np.errstate(over="ignore"):
        return start + step * np.arange(n, dtype=np.int64) + r


def _digest_prefix(digest: str, what: str) -> bytes:
    """The first 8 bytes of a sha256 hex digest (or of a 16-character prefix read from a version 4 clip)."""
    try:
        raw = bytes.fromhex(str(digest)[: 2 * _DIGEST_PREFIX])
    except ValueError:
        raw = b""
    if len(raw) != _DIGEST_PREFIX:
        raise CodecError(f"compressed clip: {what} must be a hex digest of at least 16 characters, got {digest!r}")
    return raw


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(v: int) -> int:
    return v >> 1 if not v & 1 else -((v + 1) >> 1)


# Frames in one clip (the side arrays are allocated from the header's count; docs/reliability.md).
MAX_CLIP_FRAMES = 1 << 22


class _ClipHeader:
    """The checked fields of a clip's JSON header (types and ranges; raises KeyError/TypeError/ValueError,
    which :meth:`CompressedClip.from_bytes` turns into :class:`CodecError`)."""

    def __init__(self, hdr: Any, version: int) -> None:
        if not isinstance(hdr, dict):
            raise TypeError(f"the header is a JSON {type(hdr).__name__}, not an object")

        def integer(v: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"{what} is {v!r}")
            return v

        def number(v: Any, what: str) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{what} is {v!r}")
            return float(v)

        shape = hdr["shape"]
        if not isinstance(shape, list) or not 2 <= len(shape) <= 15:
            raise ValueError(f"shape is {shape!r}")
        self.shape = tuple(integer(v, "a shape entry", 0, 1 << 62) for v in shape)
        self.n = integer(hdr["n"], "the frame count", 0, MAX_CLIP_FRAMES)
        if self.n != self.shape[0]:
            raise ValueError(f"{self.n} timestamps for {self.shape[0]} frames")
        digest = hdr["codec_digest"]
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"codec_digest is {digest!r}")
        self.codec_digest = digest
        md = hdr.get("model_digest", "")
        if not isinstance(md, str):
            raise ValueError(f"model_digest is {md!r}")
        self.model_digest = md
        self.ts = self._affine(hdr["ts"], "ts", number)
        self.fi = self._affine(hdr["fi"], "fi", lambda v, w: integer(v, w, -(1 << 62), 1 << 62))
        self.kind = hdr.get("kind", DEFAULT_KIND)
        if not isinstance(self.kind, str):
            raise ValueError(f"kind is {self.kind!r}")
        chunks = hdr.get("chunks")
        if chunks is not None and not isinstance(chunks, list):
            raise ValueError(f"chunks is {chunks!r}")
        self.chunks = None if chunks is None else tuple(integer(c, "a chunk length") for c in chunks)
        rate = hdr.get("rate")
        self.rate = None if rate is None else number(rate, "rate")
        self.levels = integer(hdr["levels"], "the level field width", 1, 8) if version >= _CLIP_VERSION_LEVELS else 8

    @staticmethod
    def _affine(v: Any, what: str, check: Any) -> list | None:
        if v is None:
            return None
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError(f"{what} is {v!r}")
        return [check(v[0], what), check(v[1], what)]


def decode_clip(model: Model, clip: CompressedClip | bytes, *, dequantize: bool = True) -> np.ndarray:
    """Decode a compressed clip with its model (no backbone needed).

    Args:
        model: the :class:`Model` that compressed it (any rate: the clip's recorded rate is used).
        clip: a :class:`CompressedClip` or its bytes.
        dequantize: return float32 ``(k + offsets) * scale`` at the clip's rate (True) or the int32 latents.

    Returns:
        float32 or int32 (T, C', *).

    Raises:
        CodecError: a foreign codec digest, a kind mismatch, or a stream whose shape differs from the header.
    """
    if isinstance(clip, (bytes, bytearray, memoryview)):
        clip = CompressedClip.from_bytes(bytes(clip))
    codec = model.codec
    if not clip.made_by(codec.digest):
        raise CodecError(f"compressed clip was made by codec {clip.codec_digest[:12]}..., this model's codec is "
                         f"{codec.digest[:12]}...; use the model that compressed it")
    streams = clip.streams
    if len(streams) == 1:
        k = codec.decompress_symbols(streams[0])
    elif not streams:
        if math.prod(clip.shape):
            raise CodecError(f"compressed clip: shape {tuple(clip.shape)} but no stream (damaged clip)")
        k = np.zeros(tuple(clip.shape), np.int32)
    else:
        many = getattr(codec, "decompress_chunks", None)
        parts = many(streams) if callable(many) else [codec.decompress_symbols(s) for s in streams]
        k = np.concatenate(parts, 0)
    if tuple(k.shape) != tuple(clip.shape):
        raise CodecError(f"compressed clip: stream shape {k.shape} differs from the recorded {clip.shape}")
    if not dequantize:
        return k
    if clip.levels is not None:
        n_levels = model.head.config.rate_levels
        if clip.levels.size and int(clip.levels.max()) >= max(1, n_levels):
            raise CodecError(f"compressed clip: per-frame level {int(clip.levels.max())} but the model has "
                             f"{n_levels} rate levels; use the model that compressed it")
        return model.head.decode(k, levels=clip.levels)
    head = model.head if clip.rate == model.head.rate else model.head.at_rate(clip.rate)
    return head.decode(k)

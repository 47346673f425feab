"""Compressed clips: the ``.fcc`` container of one clip's coded latents, and decoding it (layer 2).

A :class:`CompressedClip` is what :meth:`featcomp.model.Extractor.compress` returns and ``featcomp
compress`` writes: magic ``FCCL``, a version byte, a JSON header (shape, codec and model digests,
timestamps and frame indices, affine when they are), the side arrays, then the coded stream(s).
Version 1 is the original layout (the implicit kind, one stream, no rate); version 2 adds ``kind``,
``chunks`` (byte lengths of independently decodable streams, for kinds that code time chunks) and
``rate``; version 3 adds per-frame rate levels as packed bit fields; version 4 is a compact binary
header of the same fields (about 40 bytes instead of about 250: 8-byte digest prefixes, varints, a kind
code) closed by a CRC-32 of header and side arrays, so that the fixed cost of a short clip stays small
(issue 18); version 5 (written by default) is version 4 with 4-byte digest prefixes and the timestamp
step as a small rational when it is one (``1/5`` s: 2 bytes instead of 8), 14 bytes fewer on a typical clip. :func:`decode_clip` decodes a
clip with its :class:`~featcomp.model.Model` (no backbone needed). Parsing is bounded: every declared
length is checked against the bytes present before anything is allocated (:class:`CodecError`).
"""

from __future__ import annotations

import dataclasses
import math
import struct
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from featcomp.entropy.kinds import DEFAULT_KIND, entropy_kind
from featcomp.errors import CodecError
from featcomp.model.headers import (
    CLIP_COMPACT_VERSIONS,
    CLIP_DIGEST_PREFIX_SHORT,
    CLIP_FORMAT_VERSION,
    CLIP_KIND_CODES,
    CLIP_MAGIC,
    CLIP_READ_VERSIONS,
    CLIP_VERSION_COMPACT,
    CLIP_VERSION_JSON,
    CLIP_VERSION_LEVELS,
    CLIP_VERSION_SHORT,
    MAX_CLIP_FRAMES,
    MAX_RESIDUAL_BITS,
    ClipHeader,
    ClipSeries,
    _rational,
    _rational_bytes,
)

if TYPE_CHECKING:
    from featcomp.model.file import Model

__all__ = ["CompressedClip", "decode_clip", "CLIP_FORMAT_VERSION", "DEFAULT_TEMPORAL_CHUNK", "MAX_CLIP_FRAMES"]

# --------------------------------------------------------------------------------------------------
# compressed clips

# the header (every version) is featcomp.model.headers.ClipHeader; these names stay for callers
_CLIP_MAGIC = CLIP_MAGIC
_CLIP_VERSION = CLIP_VERSION_JSON
_CLIP_VERSION_LEVELS = CLIP_VERSION_LEVELS
_CLIP_VERSION_COMPACT = CLIP_VERSION_COMPACT
_CLIP_READ_VERSIONS = CLIP_READ_VERSIONS
_KIND_CODES = CLIP_KIND_CODES
_DIGEST_PREFIX = CLIP_DIGEST_PREFIX_SHORT  # the shortest digest prefix a clip keeps (version 5)
_MAX_RESIDUAL_BITS = MAX_RESIDUAL_BITS
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
            version 5). :meth:`from_bytes` records the version it read, so a clip re-serializes to the
            same bytes. Versions 4 and 5 keep the first 8 and 4 bytes of each digest: ``codec_digest`` of
            a clip read from them is a 16- or 8-character prefix (:meth:`made_by` compares either form).

    Serialized as clip format version 5 (compact binary, below) unless ``format_version`` asks for version 4
    (the same layout with 8-byte digest prefixes and a float64 timestamp step) or a JSON
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
        clip read from format version 4 or 5, starting with its 16- or 8-character prefix."""
        mine = str(self.codec_digest)
        return len(mine) >= 2 * _DIGEST_PREFIX and str(codec_digest).startswith(mine)

    @property
    def bits_per_frame(self) -> float:
        """Size of the feature stream(s) (codec headers and ANS flush included) plus the packed per-frame
        levels, if any, in bits per frame."""
        return 8.0 * (len(self.data) + len(self._packed_levels())) / max(1, self.num_frames)

    def to_bytes(self) -> bytes:
        """Serialize: the :class:`~featcomp.model.headers.ClipHeader` of the clip's version, the side
        arrays, (versions 4 and 5) a CRC-32 of both, then the stream(s).

        Timestamps and frame indices that form arithmetic sequences (constant-rate sampling) are stored
        as (start, step) (versions 4 and 5: a line and small per-frame residuals); others as raw little-endian
        arrays.
        """
        if (self.format_version or CLIP_FORMAT_VERSION) in CLIP_COMPACT_VERSIONS:
            return self._to_bytes_compact(self.format_version or CLIP_FORMAT_VERSION)
        ts = np.asarray(self.timestamps, np.float64)
        fi = np.asarray(self.frame_indices, np.int64)
        if not self.shape or int(self.shape[0]) != ts.size or fi.size != ts.size:  # unreadable otherwise
            raise CodecError(f"compressed clip: shape {tuple(self.shape)} with {ts.size} timestamps and {fi.size} "
                             "frame indices")
        side = b""
        aff = _affine(ts)
        ts_line = None if aff is None else ClipSeries(*aff)
        if aff is None:
            side += ts.astype("<f8").tobytes()
        afi = _affine(fi.astype(np.float64))
        fi_line = None if afi is None else ClipSeries(int(afi[0]), int(afi[1]))
        if afi is None:
            side += fi.astype("<i8").tobytes()
        implicit = entropy_kind(self.kind).implicit
        version = 1 if (implicit and self.chunks is None and self.rate is None) else CLIP_VERSION_JSON
        if self.levels is not None:
            version = CLIP_VERSION_LEVELS
        version = max(version, int(self.format_version or 0))
        if version == CLIP_VERSION_LEVELS:
            side += self._packed_levels()
        header = ClipHeader(version=version, shape=tuple(self.shape), codec_digest=self.codec_digest,
                            model_digest=self.model_digest, kind=self.kind, chunks=self.chunks, rate=self.rate,
                            level_bits=int(self.level_bits) if version == CLIP_VERSION_LEVELS else None,
                            ts=ts_line, fi=fi_line)
        return header.to_bytes() + side + self.data

    def _to_bytes_compact(self, version: int = CLIP_VERSION_SHORT) -> bytes:
        """Format versions 4 and 5: magic, version, then (little endian)::

            u8 flags        1 timestamps predicted, 2 timestamp start != 0, 4 frame indices predicted,
                            8 model digest, 16 rate, 32 per-frame levels, 64 chunks,
                            128 (version 5) the timestamp step is a rational
            u8 kind code    index into ("factorized", "temporal", "hyperprior"); 255: u8 length + ASCII name
            8 bytes (v4) / 4 bytes (v5)      codec sha256 prefix; then the model sha256 prefix when flag 8
            u8 ndim, varint shape[ndim]      (shape[0] = frames n)
            flag 1: [f64 start (flag 2)], step: f64, or (flag 128) zigzag varint num + varint den
                    (step = num / den, 1 <= den <= 2**20), u8 width wt
            flag 4: zigzag varint start, zigzag varint step, u8 width wf
            f64 rate (flag 16); u8 level field width w (flag 32); varint count + varint byte lengths (flag 64)
            side arrays     timestamps: flag 1: n residuals of wt bits, else f64[n];
                            frame indices: flag 4: n residuals of wf bits, else i64[n];
                            flag 32: the packed levels (n fields of w bits)
            u32 CRC-32 of every byte above, magic included
            rest            the codec stream(s)

        The header (up to the side arrays) is :class:`~featcomp.model.headers.ClipHeader` version 4 or 5.
        A predicted series is ``start + step * arange(n)`` corrected by per-frame residuals: for timestamps
        the difference of the float64 bit patterns (units in the last place), for frame indices the integer
        difference, zigzag-coded in fixed-width fields (most significant bit first, zero-padded to a byte;
        width 0 when the series is exactly arithmetic). Timestamps from a container's time base (integer
        ticks times a float step) sit within a few ULPs of a line: 0-2 bits a frame instead of 64.
        """
        ts = np.asarray(self.timestamps, np.float64)
        fi = np.asarray(self.frame_indices, np.int64)
        side = b""
        shape = tuple(int(v) for v in self.shape)
        if not 2 <= len(shape) <= 15 or shape[0] != ts.size or fi.size != ts.size:
            raise CodecError(f"compressed clip: shape {shape} with {ts.size} timestamps and {fi.size} frame "
                             "indices")
        ts_line = fi_line = None
        pred = _predict_float_series(ts, rational=version == CLIP_VERSION_SHORT)
        if pred is not None:
            start, step, w, packed = pred
            ts_line = ClipSeries(start, step, w)
            side += packed
        else:
            side += ts.astype("<f8").tobytes()
        ipred = _predict_int_series(fi)
        if ipred is not None:
            start_i, step_i, w, packed = ipred
            fi_line = ClipSeries(start_i, step_i, w)
            side += packed
        else:
            side += fi.astype("<i8").tobytes()
        if self.levels is not None:
            side += self._packed_levels()
        header = ClipHeader(version=version, shape=shape, codec_digest=self.codec_digest,
                            model_digest=self.model_digest, kind=str(self.kind), chunks=self.chunks, rate=self.rate,
                            level_bits=None if self.levels is None else int(self.level_bits), ts=ts_line, fi=fi_line)
        head = header.to_bytes() + side
        return head + struct.pack("<I", zlib.crc32(head)) + self.data

    @classmethod
    def from_bytes(cls, b: bytes) -> CompressedClip:
        """Inverse of :meth:`to_bytes`: the :class:`~featcomp.model.headers.ClipHeader` (any version
        1-5), then the side arrays, then (versions 4 and 5) the CRC. Raises :class:`CodecError` on a foreign,
        damaged or truncated blob, or a version newer than this featcomp."""
        b = bytes(b)
        h, pos = ClipHeader.from_bytes(b)
        n = h.n
        if h.version in CLIP_COMPACT_VERSIONS:
            ts, pos = _read_predicted(b, pos, h.ts, n, np.float64, "timestamps")
            fi, pos = _read_predicted(b, pos, h.fi, n, np.int64, "frame indices")
        else:
            ts, pos = _read_series(b, pos, None if h.ts is None else [h.ts.start, h.ts.step], n, np.float64,
                                   "timestamps")
            fi, pos = _read_series(b, pos, None if h.fi is None else [h.fi.start, h.fi.step], n, np.int64,
                                   "frame indices")
        levels, w = None, 8
        if h.level_bits is not None:
            w = h.level_bits
            nb = (n * w + 7) // 8
            if len(b) < pos + nb:
                raise CodecError(f"compressed clip: truncated per-frame levels ({len(b)} bytes in all)"
                                 if h.version in CLIP_COMPACT_VERSIONS else "compressed clip: truncated per-frame levels")
            bits = np.unpackbits(np.frombuffer(b, np.uint8, nb, pos), count=n * w).reshape(n, w)
            levels = (bits.astype(np.uint16) << np.arange(w - 1, -1, -1, dtype=np.uint16)).sum(1).astype(np.uint8)
            pos += nb
        if h.version in CLIP_COMPACT_VERSIONS:
            if len(b) < pos + 4:
                raise CodecError(f"compressed clip: truncated header checksum ({len(b)} bytes in all)")
            if zlib.crc32(b[:pos]) != struct.unpack_from("<I", b, pos)[0]:
                raise CodecError("compressed clip: header checksum mismatch (the clip was damaged in storage or "
                                 "transfer)")
            pos += 4
        if h.chunks is not None and sum(h.chunks) != len(b) - pos:
            raise CodecError(f"compressed clip: chunk lengths sum to {sum(h.chunks)}, the clip has {len(b) - pos} "
                             "stream bytes (truncated or damaged)")
        return cls(data=b[pos:], shape=h.shape, timestamps=ts, frame_indices=fi, codec_digest=h.codec_digest,
                   model_digest=h.model_digest, kind=h.kind, chunks=h.chunks, rate=h.rate, levels=levels,
                   level_bits=w, format_version=h.version)


def _read_predicted(b: bytes, pos: int, line: ClipSeries | None, n: int, dtype: Any, what: str
                    ) -> tuple[np.ndarray, int]:
    """One side array of a version-4 clip: the line plus residuals of ``line.bits`` bits, or ``n`` plain
    8-byte values when ``line`` is None. Returns (array, next pos)."""
    if line is None:
        return _read_series(b, pos, None, n, dtype, what)
    nb = (n * line.bits + 7) // 8
    if len(b) < pos + nb:
        raise CodecError(f"compressed clip: truncated {what} ({len(b)} bytes in all)")
    unpredict = _unpredict_float_series if dtype is np.float64 else _unpredict_int_series
    return unpredict(line.start, line.step, line.bits, b[pos:pos + nb], n), pos + nb



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


def _predict_float_series(ts: np.ndarray, rational: bool = False) -> tuple[float, float, int, bytes] | None:
    """(start, step, width, packed residuals) of float64 ``ts`` around its end-to-end line, or None when
    the residuals need more than :data:`_MAX_RESIDUAL_BITS` bits (irregular timestamps: stored plainly).

    ``rational`` (format 5, which stores a step ``num / den`` in a few bytes): also try the nearest small
    rational to the end-to-end step (``1/25`` for a step that came out ``0.04000000000000001``) and keep
    whichever line costs fewer bytes, step and residuals together."""
    n = ts.size
    if n == 0 or not np.all(np.isfinite(ts)):
        return None
    start = float(ts[0])
    step = float((ts[-1] - ts[0]) / (n - 1)) if n > 1 else 0.0
    if not math.isfinite(step):
        return None
    steps = [step]
    if rational and n > 1:
        from fractions import Fraction

        f = Fraction(step).limit_denominator(1 << 20)
        alt = f.numerator / f.denominator
        if alt != step and _rational(alt) is not None:
            steps.append(alt)
    best = None
    for st in steps:
        pred = _float_line(start, st, n)
        if not np.all(np.isfinite(pred)):
            continue
        with np.errstate(over="ignore"):
            r = ts.view(np.int64) - pred.view(np.int64)  # difference of bit patterns (wraps, exactly invertible)
        z = _zigzag_array(r)
        w = int(z.max()).bit_length()
        if w > _MAX_RESIDUAL_BITS:
            continue
        ratio = _rational(st) if rational else None
        cost = (n * w + 7) // 8 + (8 if ratio is None else min(8, _rational_bytes(*ratio)))
        if best is None or cost < best[0]:
            best = (cost, st, w, z)
    if best is None:
        return None
    _, st, w, z = best
    return start, st, w, _pack_fields(z, w)


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

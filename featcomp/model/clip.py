"""Compressed clips: the ``.fcc`` container of one clip's coded latents, and decoding it (layer 2).

A :class:`CompressedClip` is what :meth:`featcomp.model.Extractor.compress` returns and ``featcomp
compress`` writes: magic ``FCCL``, a version byte, a JSON header (shape, codec and model digests,
timestamps and frame indices, affine when they are), the side arrays, then the coded stream(s).
Version 1 is the original layout (the implicit kind, one stream, no rate); version 2 adds ``kind``,
``chunks`` (byte lengths of independently decodable streams, for kinds that code time chunks) and
``rate``; version 3 adds per-frame rate levels as packed bit fields. :func:`decode_clip` decodes a
clip with its :class:`~featcomp.model.Model` (no backbone needed). Parsing is bounded: every declared
length is checked against the bytes present before anything is allocated (:class:`CodecError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import TYPE_CHECKING, Any

import numpy as np

from featcomp.entropy.kinds import DEFAULT_KIND, entropy_kind
from featcomp.errors import CodecError

if TYPE_CHECKING:
    from featcomp.model.file import Model

__all__ = ["CompressedClip", "decode_clip", "DEFAULT_TEMPORAL_CHUNK", "MAX_CLIP_FRAMES"]

# --------------------------------------------------------------------------------------------------
# compressed clips

_CLIP_MAGIC = b"FCCL"
_CLIP_VERSION = 2
_CLIP_VERSION_LEVELS = 3  # version 2 + per-frame rate levels (packed bit fields after the side arrays)
_CLIP_READ_VERSIONS = (1, 2, 3)
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

    Serialized as clip format version 1 (the original layout) when ``kind`` is factorized with one
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

    def __post_init__(self) -> None:
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
            hdr["levels"] = int(self.level_bits)
            side += self._packed_levels()
        if version >= 2:
            hdr.update(kind=self.kind, chunks=None if self.chunks is None else [int(c) for c in self.chunks],
                       rate=None if self.rate is None else float(self.rate))
        h = json.dumps(hdr, separators=(",", ":")).encode()
        return _CLIP_MAGIC + struct.pack("<BI", version, len(h)) + h + side + self.data

    @classmethod
    def from_bytes(cls, b: bytes) -> CompressedClip:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on a foreign or truncated blob."""
        b = bytes(b)
        if len(b) < 9 or b[:4] != _CLIP_MAGIC:
            raise CodecError("not a featcomp compressed clip (bad magic)")
        version, hl = struct.unpack_from("<BI", b, 4)
        if version not in _CLIP_READ_VERSIONS:
            raise CodecError(f"compressed clip format version {version}, this featcomp reads {_CLIP_READ_VERSIONS}")
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
                   model_digest=f.model_digest, kind=f.kind, chunks=f.chunks, rate=f.rate, levels=levels, level_bits=w)


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
    if clip.codec_digest != codec.digest:
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

"""Scale hyperprior for spatial feature maps (numpy only; no torch at import).

Ballé et al. 2018 ("Variational image compression with a scale hyperprior", arXiv:1802.01436): the
latents ``y`` (N, C, H, W) of a spatial tap are coded with zero-centred (around the quantization
offsets) Laplace tables whose **scale** varies per element, predicted from side information ``z``
(N, Cz, h, w), ``h = ceil(H / p)``, ``w = ceil(W / p)``, which is itself coded with a factorized
:class:`~featcomp.entropy.EntropyCodec`. Spatially varying magnitudes (a busy region vs background)
are then coded at their own scale instead of the channel's average one.

Integer arithmetic (bit-identical on any machine)
--------------------------------------------------
Analysis (encoder only; ``z`` is transmitted, but it is integer too, so re-encoding is exact)::

    g       = lut[min(|k|, LUT_MAX)]                 # round(2**8 * log2(1 + |k|)), int64, built at freeze
    S       = sum of g over each p x p cell           # (N, C, h, w), partial cells at the edges
    z       = clip(((A @ S) // count + b + 2**(F+7)) >> (F + 8), -2**15, 2**15)   # (N, Cz, h, w)

Synthesis of the scale index (encoder and decoder, from the decoded integers ``z``)::

    zc      = clip(z, -2**15, 2**15)
    s       = clip((B @ zc + c + 2**(F-1)) >> F, 0, S - 1)    # (N, C, h, w), int64
    table   = s at the cell of each position                   # nearest upsampling to (H, W)

``A`` (Cz, C), ``B`` (C, Cz) are int32 fixed-point weights (``|w| < 2**20``, units ``2**-F``),
``b``, ``c`` int64 biases; every accumulator stays below ``2**52``. :func:`scale_index` runs the
synthesis in numpy or torch (any device) with identical results.

Stream layout: the common header (:mod:`featcomp.entropy.bitstream`, CRC over this codec's digest,
shape (N, C, H, W)), then the payload: LEB128 length of ``z``'s stream, ``z``'s stream
(``z_codec.compress_symbols``, a complete factorized stream with its own header and CRC), then the
zero bytes up to a multiple of 4, then the ANS words of ``y``, in the layout of the codec's
``version`` (part of its bytes and digest, so a stream never decodes with a codec of the other layout):

* layout 1 (version 1, codecs made before the table-floor fix; still written and read by such
  codecs): all N * C * H * W symbols (image-major, channel-major), each with its full family row of
  ``2R + 2`` entries, then their escapes (the "full rows" layout of :mod:`featcomp.entropy.layouts`,
  one frame holding everything). Every entry
  of a row is >= 1, so a zero costs >= ``-log2(1 - (2R + 1) / 2**precision)`` bits even at the
  smallest scale (0.0021 bits at radius 48, 16 bits: 4.9 bits per 64 x 6 x 6 map);
* layout 2 (version 2, the default): each element's row truncated to its width class **with the
  folded floors reclaimed** (:func:`featcomp.entropy.indexed.reclaimed_tables`: a zero at scale
  0.04 costs 6.6e-5 bits), columns in zigzag order (residual 0, -1, 1, -2, ...); symbols ordered by
  class, then table index, then position (image-major, channel-major), so a decoder takes each
  table's run with one fixed constriction model; then the escapes (a tail symbol per escape of a
  narrow class, then the exact values beyond R): the "class rows" layout of
  :mod:`featcomp.entropy.layouts` with one sorted frame, the same code the temporal codec's layout 2 runs;
* layout 3 (version 3: a version-2 codec with a **factorized fallback**, a per-channel
  :class:`~featcomp.entropy.EntropyCodec` for ``y`` fitted to a trained head's own latents,
  :func:`featcomp.train.refit.fit_hyperprior_fallback`): the LEB128 field holds ``2 * len(z stream) +
  mode``. Mode 0: layout 2 as above. Mode 1: no ``z`` at all, the zero bytes up to a multiple of 4,
  then the ANS words of the fallback's payload for ``y`` (its ``compress_symbols`` without the
  framing). The encoder codes a stream both ways and keeps the shorter, so a stream never costs more
  than 4 bytes over the better of the two; the decoder reads the mode. Where the side information
  has collapsed (the lowest rates, where every ``z`` is the same), the Laplace tables cost more than a
  density fitted to ``y`` itself (docs/temporal.md) and mode 1 takes over.

Frames are independent given their own ``z``: a stream of N frames is N images coded together.

This module holds the hyperprior's integer context (analysis, synthesis, the choice of each element's
table) and its stream framing (z, mode, fallback); the coding of y is the shared layouts' work
(:mod:`featcomp.entropy.layouts`, over :mod:`featcomp.entropy.ans`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import struct
from typing import Any, ClassVar

import numpy as np

from featcomp.entropy import ans, bitstream, layouts
from featcomp.entropy._frozen import FrozenCodecBase
from featcomp.entropy._frozen import readonly as _readonly
from featcomp.entropy._frozen import to_numpy as _to_numpy
from featcomp.entropy.codec import EntropyCodec
from featcomp.entropy.indexed import TableFamily, reclaimed_tables
from featcomp.errors import CodecError

__all__ = ["HyperpriorCodec", "scale_index", "analysis_int", "log_lut", "Z_LIMIT", "LUT_MAX", "LUT_BITS"]

_MAGIC = b"FCHP"
_VERSION = 2  # codec bytes version = y's stream layout it writes and reads (1: full-width rows,
_READ_VERSIONS = (1, 2, 3)  # 3: layout 2 or the factorized fallback per stream; needs a fallback codec)
_TAIL_SHIFT = 8  # layout 2: a row is narrowed where its folded excess mass is <= 2**precision >> 8
_RUN_MIN = 8  # decode speed only: mean run length from which fixed per-table models beat per-symbol rows
Z_LIMIT = 1 << 15
LUT_MAX = 4095
LUT_BITS = 8
WEIGHT_LIMIT = 1 << 20
_I32 = np.iinfo(np.int32)
_MAX_ELEMENTS = bitstream.MAX_STREAM_ELEMENTS  # docs/reliability.md


def _zeros(n: int) -> np.ndarray:
    """int64 (n,) zeros without memory (a broadcast view): the hyperprior's tables are zero-centred."""
    return np.broadcast_to(np.zeros(1, np.int64), (n,))


def _fail(j: int, what: str, e: Exception) -> CodecError:
    return CodecError(f"corrupt stream or wrong codec: the ANS decoder failed ({e})")


def log_lut() -> np.ndarray:
    """int64 (LUT_MAX + 1,) ``round(2**8 * log2(1 + v))`` (float64 evaluated once; values fixed)."""
    return np.round((1 << LUT_BITS) * np.log2(1.0 + np.arange(LUT_MAX + 1, dtype=np.float64))).astype(np.int64)


_LUT = log_lut()


def _cells(n: int, p: int) -> int:
    return -(-n // p)


def cell_pool(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum over p x p cells (zero padding at the far edges) and the count of real elements per cell.

    Args:
        x: (N, C, H, W) int64 or float64.

    Returns:
        ``(sums (N, C, h, w), counts (h, w) int64)``.
    """
    N, C, H, W = x.shape
    h, w = _cells(H, p), _cells(W, p)
    pad = np.zeros((N, C, h * p, w * p), x.dtype)
    pad[:, :, :H, :W] = x
    sums = pad.reshape(N, C, h, p, w, p).sum(axis=(3, 5))
    ones = np.zeros((h * p, w * p), np.int64)
    ones[:H, :W] = 1
    return sums, ones.reshape(h, p, w, p).sum(axis=(1, 3))


def analysis_int(k: np.ndarray, A: np.ndarray, b: np.ndarray, *, pool: int, frac_bits: int) -> np.ndarray:
    """The integer analysis ``z`` (N, Cz, h, w) int64 of integer latents ``k`` (N, C, H, W) (module doc)."""
    g = _LUT[np.minimum(np.abs(k.astype(np.int64)), LUT_MAX)]
    S, cnt = cell_pool(g, pool)
    acc = np.einsum("zc,nchw->nzhw", A.astype(np.int64), S) // cnt
    sh = frac_bits + LUT_BITS
    z = (acc + b.astype(np.int64)[None, :, None, None] + (1 << (sh - 1))) >> sh
    return np.clip(z, -Z_LIMIT, Z_LIMIT)


def scale_index(z: Any, B: Any, c: Any, *, frac_bits: int, levels: int, pool: int, H: int, W: int) -> Any:
    """Scale (table) index of every element of y from the integer side information, exactly.

    Works on numpy arrays or torch tensors (any device, no float anywhere); same library out.

    Args:
        z: int (or float holding integers) (N, Cz, h, w), the decoded side-information integers.
        B: int (C, Cz) fixed-point weights; c: int (C,) biases (``2**-frac_bits`` units).
        frac_bits: F. levels: S, number of scales. pool: p. H, W: y's spatial size.

    Returns:
        int64 (N, C, H, W) indices in ``[0, S)``.
    """
    if hasattr(z, "detach"):
        import torch

        dev = z.device
        zc = z.to(torch.int64).clamp(-Z_LIMIT, Z_LIMIT)
        Bt = torch.tensor(np.asarray(B, np.int64), device=dev)
        ct = torch.tensor(np.asarray(c, np.int64), device=dev)
        # elementwise product + sum (no int64 matmul on CUDA); exact integer arithmetic
        acc = (Bt[None, :, :, None, None] * zc[:, None]).sum(2) + ct[None, :, None, None]
        s = ((acc + (1 << (frac_bits - 1))) >> frac_bits).clamp(0, levels - 1)
        s = s.repeat_interleave(pool, dim=2).repeat_interleave(pool, dim=3)
        return s[:, :, :H, :W].contiguous()
    zc = np.clip(np.asarray(z).astype(np.int64), -Z_LIMIT, Z_LIMIT)
    acc = np.einsum("cz,nzhw->nchw", np.asarray(B, np.int64), zc) + np.asarray(c, np.int64)[None, :, None, None]
    s = np.clip((acc + (1 << (frac_bits - 1))) >> frac_bits, 0, levels - 1)
    return np.repeat(np.repeat(s, pool, axis=2), pool, axis=3)[:, :, :H, :W]


@dataclasses.dataclass(frozen=True, eq=False)
class HyperpriorCodec(FrozenCodecBase):
    """Immutable scale-hyperprior codec for spatial latents (N, C, H, W); kind ``"hyperprior"``.

    Same interface as :class:`~featcomp.entropy.EntropyCodec` (``quantize``, ``dequantize``,
    ``compress_symbols``, ``decompress_symbols``, ``estimate_bits``, ``to_bytes``/``from_bytes``,
    ``to_dict``/``from_dict``, ``digest``). Frames (axis 0) are independent.

    Attributes:
        offsets: float32 (C,) quantization offsets of y (``k = round(y - offsets)``).
        z_codec: the factorized :class:`EntropyCodec` of the side information (Cz channels).
        family: :class:`TableFamily` of zero-centred scales (``Q == 1``).
        A: int32 (Cz, C), b: int64 (Cz,) analysis; B: int32 (C, Cz), c: int64 (C,) synthesis.
        pool: p, the side-information cell size. frac_bits: F.
        version: 2 (default), 1, or 3 (with ``fallback``): the codec format version, which fixes y's
            stream layout (module docstring); part of the canonical bytes and the digest.
        fallback: version 3 only: the factorized :class:`EntropyCodec` of y (C channels) that a stream
            uses instead of z and the Laplace tables where that is shorter (:meth:`with_fallback`).
        kind: ``"hyperprior"``. channels: C. z_channels: Cz. digest: sha256 hex.
    """

    offsets: np.ndarray
    z_codec: EntropyCodec
    family: TableFamily
    A: np.ndarray
    b: np.ndarray
    B: np.ndarray
    c: np.ndarray
    pool: int = 2
    frac_bits: int = 12
    version: int = _VERSION
    fallback: EntropyCodec | None = None
    kind: str = dataclasses.field(default="hyperprior", init=False)
    _MAGIC: ClassVar[bytes] = _MAGIC
    _VERSION: ClassVar[int] = _VERSION
    _READ_VERSIONS: ClassVar[tuple[int, ...]] = _READ_VERSIONS
    _STREAM_NAME: ClassVar[str] = "hyperprior codec"
    _MAX_ELEMENTS: ClassVar[int] = _MAX_ELEMENTS
    channels: int = dataclasses.field(init=False)
    z_channels: int = dataclasses.field(init=False)
    digest: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        off = np.asarray(self.offsets, np.float32).reshape(-1)
        C, Cz = off.size, int(self.z_codec.channels)
        if not 1 <= C <= (1 << 16) or not np.isfinite(off).all():
            raise CodecError(f"HyperpriorCodec needs 1..65536 finite offsets, got {off.shape}")
        if self.family.Q != 1:
            raise CodecError("HyperpriorCodec tables are zero-centred: the family must have Q == 1")
        F, p = int(self.frac_bits), int(self.pool)
        if not 1 <= F <= 24 or not 1 <= p <= 64:
            raise CodecError(f"invalid frac_bits={F} or pool={p}")
        for name, shape, dtype, limit in (("A", (Cz, C), np.int32, WEIGHT_LIMIT), ("B", (C, Cz), np.int32, WEIGHT_LIMIT),
                                          ("b", (Cz,), np.int64, 1 << 44), ("c", (C,), np.int64, 1 << 40)):
            a = np.asarray(getattr(self, name))
            if a.shape != shape or not np.issubdtype(a.dtype, np.integer):
                raise CodecError(f"HyperpriorCodec.{name} must be integer {shape}, got {a.dtype} {a.shape}")
            if (np.abs(a.astype(np.int64)) >= limit).any():
                raise CodecError(f"HyperpriorCodec.{name} out of range (|value| < {limit})")
            set_(name, _readonly(a, dtype))
        if int(self.version) not in _READ_VERSIONS:
            raise CodecError(f"unknown HyperpriorCodec version {self.version}; upgrade featcomp")
        if (int(self.version) == 3) != (self.fallback is not None):
            raise CodecError("a HyperpriorCodec has a factorized fallback exactly when it is version 3 "
                             f"(version {self.version}, fallback {'given' if self.fallback is not None else 'none'})")
        if self.fallback is not None and int(self.fallback.channels) != C:
            raise CodecError(f"the fallback codec has {self.fallback.channels} channels, the codec {C}")
        set_("version", int(self.version))
        set_("_VERSION", int(self.version))  # to_dict's format_version is this codec's
        set_("offsets", _readonly(off, np.float32))
        set_("frac_bits", F)
        set_("pool", p)
        set_("channels", C)
        set_("z_channels", Cz)
        set_("digest", hashlib.sha256(self._body()).hexdigest())

    # ------------------------------------------------------------------ identity and serialization
    def __repr__(self) -> str:
        return (f"HyperpriorCodec(channels={self.channels}, z_channels={self.z_channels}, pool={self.pool}, "
                f"version={self.version}, family={self.family!r}, digest={self.digest[:12]}...)")

    def _body(self) -> bytes:
        zb, fb = self.z_codec.to_bytes(), self.family.to_bytes()
        head = _MAGIC + struct.pack("<BIIBBII", self.version, self.channels, self.z_channels, self.frac_bits, self.pool,
                                    len(zb), len(fb))
        yb = b"" if self.fallback is None else self.fallback.to_bytes()  # version 3: length-prefixed
        fall = b"" if self.fallback is None else struct.pack("<I", len(yb)) + yb
        return b"".join([head, zb, fb, fall, self.offsets.astype("<f4").tobytes(), self.A.astype("<i4").tobytes(),
                         self.b.astype("<i8").tobytes(), self.B.astype("<i4").tobytes(), self.c.astype("<i8").tobytes()])

    def with_fallback(self, fallback: EntropyCodec) -> HyperpriorCodec:
        """This codec as version 3 with the factorized ``fallback`` for y (same parameters otherwise):
        each stream is coded with z and the Laplace tables or with the fallback, whichever is shorter."""
        if self.version == 1:
            raise CodecError("a version-1 HyperpriorCodec cannot take a fallback (layout 3 builds on layout 2)")
        return dataclasses.replace(self, version=3, fallback=fallback)

    @classmethod
    def from_bytes(cls, data: bytes) -> HyperpriorCodec:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on corruption or a bad version."""
        body, (C, Cz, F, p, zl, fl) = cls._checked_body(data, "<BIIBBII")
        version = body[len(_MAGIC)]
        pos = len(_MAGIC) + struct.calcsize("<BIIBBII")
        zc = EntropyCodec.from_bytes(body[pos : pos + zl])
        pos += zl
        fam = TableFamily.from_bytes(body[pos : pos + fl])
        pos += fl
        fallback = None
        if version == 3:
            if pos + 4 > len(body):
                raise CodecError("truncated HyperpriorCodec bytes")
            (yl,) = struct.unpack_from("<I", body, pos)
            fallback = EntropyCodec.from_bytes(body[pos + 4 : pos + 4 + yl])
            pos += 4 + yl
        out = cls._read_arrays(body, pos, [("<f4", C), ("<i4", Cz * C), ("<i8", Cz), ("<i4", C * Cz), ("<i8", C)])
        off, A, b, B, c = out
        return cls(off, zc, fam, A.reshape(Cz, C), b, B.reshape(C, Cz), c, p, F, version, fallback)

    # ------------------------------------------------------------------ quantization
    def _check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if len(shape) != 4 or shape[1] != self.channels:
            raise CodecError(f"{what} must have shape (N, {self.channels}, H, W), got {tuple(shape)}")

    # ------------------------------------------------------------------ side information
    def side_information(self, k: Any) -> np.ndarray:
        """int32 (N, Cz, h, w) integer side information ``z`` of latents k (N, C, H, W) (encoder)."""
        k = _to_numpy(k)
        self._check_shape(k.shape, "k")
        return analysis_int(k, self.A, self.b, pool=self.pool, frac_bits=self.frac_bits).astype(np.int32)

    def tables(self, z: Any, H: int, W: int) -> Any:
        """Scale indices int64 (N, C, H, W) from side information z (numpy or torch), exactly."""
        return scale_index(z, self.B, self.c, frac_bits=self.frac_bits, levels=self.family.levels,
                           pool=self.pool, H=H, W=W)

    # ------------------------------------------------------------------ coding
    def _symbols(self, k: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        K = self._int_symbols(k)
        return K, tuple(int(s) for s in K.shape)

    def compress_symbols(self, k: Any) -> bytes:
        """Code integer latents (N, C, H, W) exactly (any int32 value; far values escape): z, then y."""
        K, shape = self._symbols(k)
        if K.size > _MAX_ELEMENTS:
            raise CodecError(f"array of shape {shape} is too large for one stream; split it")
        if K.size == 0:
            return bitstream.pack(shape, self.digest, b"")
        N, C, H, W = shape
        z = analysis_int(K, self.A, self.b, pool=self.pool, frac_bits=self.frac_bits).astype(np.int32)
        zs = self.z_codec.compress_symbols(z)
        tab = self.tables(z, H, W).reshape(-1)
        flat = K.reshape(-1)
        enc = self._encode_y_v1(flat, tab) if self.version == 1 else self._encode_y_v2(flat, tab)
        ywords = enc.payload()
        mult = 2 if self.version == 3 else 1  # version 3: the field is 2 * len(z stream) + mode (0 here)
        payload = self._framed(bitstream.encode_varint(mult * len(zs)) + zs, ywords)
        if self.version == 3:
            fwords, _ = self.fallback._encode_payload(K)
            alt = self._framed(bitstream.encode_varint(1), fwords)
            if len(alt) < len(payload):
                payload = alt
        return bitstream.pack(shape, self.digest, payload)

    @staticmethod
    def _framed(head: bytes, words: bytes) -> bytes:
        """``head``, zero bytes up to a multiple of 4 (the reader re-pads the end), then ``words``."""
        return head + b"\x00" * ((-len(head)) % 4) + words

    def _encode_y_v1(self, flat: np.ndarray, tab: np.ndarray) -> ans.Encoder:
        """Layout 1: the "full rows" layout with one frame (position order, then the escapes)."""
        enc = ans.Encoder()
        layouts.push_full_rows(enc, flat.reshape(1, -1), _zeros(flat.size).reshape(1, -1), tab.reshape(1, -1),
                               self.family)
        return enc

    @functools.cached_property
    def _class_rows(self) -> layouts.ClassRows:
        """Derived, exact constants of layout 2 (from the stored integers only): the reclaimed tables,
        each row's class radius and rank in (class, table) order, the zigzag-symbol-to-residual table."""
        return layouts.class_rows(reclaimed_tables(self.family, _TAIL_SHIFT), self.family.radius)

    def _encode_y_v2(self, flat: np.ndarray, tab: np.ndarray) -> ans.Encoder:
        """Layout 2: the "class rows" layout with one sorted frame (reclaimed class rows by class, table,
        position), then the escapes."""
        enc = ans.Encoder()
        layouts.push_class_rows(enc, self._class_rows, flat, None, tab, 1, sort=True)
        return enc

    def _decode_y_v1(self, dec: ans.Decoder, tab: np.ndarray) -> np.ndarray:
        out = np.empty((1, tab.size), np.int64)
        layouts.pop_full_rows([dec], self.family.weights[tab], _zeros(tab.size).reshape(1, -1), self.family, out,
                              _fail)
        return out[0]

    def _decode_y_v2(self, dec: ans.Decoder, tab: np.ndarray) -> np.ndarray:
        """Layout 2 (see :meth:`_encode_y_v2`): runs of one table with one fixed model when runs are
        long (mean >= ``_RUN_MIN``), else per-symbol rows, one call per class; then the escapes."""
        out = np.empty((1, tab.size), np.int64)
        layouts.pop_class_frame([dec], self._class_rows, tab.reshape(1, -1), _zeros(tab.size).reshape(1, -1), out,
                                True, _RUN_MIN, _fail)
        return out[0]

    def decompress_symbols(self, data: bytes) -> np.ndarray:
        """Decode a stream of :meth:`compress_symbols`: int32 (N, C, H, W) equal to the coded array.

        Raises:
            CodecError: not a featcomp stream, another codec's stream, corruption or truncation.
        """
        h = self._unpack(data)
        shape = h.shape
        if math.prod(shape) == 0:
            if h.payload:
                raise CodecError("corrupt stream: an empty array with a non-empty payload")
            if math.prod(s for s in shape if s) > _MAX_ELEMENTS:  # numpy cannot even describe it (ValueError)
                raise CodecError(f"corrupt stream header: shape {shape} is implausibly large")
            return np.zeros(shape, np.int32)
        N, C, H, W = shape
        try:
            zlen, pos = bitstream.decode_varint(h.payload, 0)
        except CodecError:
            raise
        except Exception as e:
            raise CodecError(f"corrupt hyperprior stream ({e})") from None
        fallback = 0
        if self.version == 3:
            zlen, fallback = divmod(zlen, 2)  # mode 1: the factorized fallback codes y; there is no z
            if fallback and zlen:
                raise CodecError("corrupt stream: a hyperprior fallback stream carries side information")
        ystart = pos + zlen + (-(pos + zlen)) % 4
        if not fallback:
            if ystart > len(h.payload):
                raise CodecError("corrupt hyperprior stream: side-information length out of range")
            z = self.z_codec.decompress_symbols(h.payload[pos : pos + zlen])
            if z.shape != (N, self.z_channels, _cells(H, self.pool), _cells(W, self.pool)):
                raise CodecError(f"corrupt hyperprior stream: side information has shape {z.shape}")
            tab = self.tables(z, H, W).reshape(-1)
        try:
            if fallback:
                out = self.fallback._decode_payload(h.payload[ystart:], shape)
            else:
                dec = ans.Decoder(h.payload[ystart:])
                out = self._decode_y_v1(dec, tab) if self.version == 1 else self._decode_y_v2(dec, tab)
                if not dec.is_empty():
                    raise CodecError("corrupt stream or wrong codec: data left over after decoding every symbol")
        except CodecError:
            raise
        except Exception as ex:
            raise CodecError(f"corrupt stream or wrong codec: the ANS decoder failed ({ex})") from None
        if out.min() < _I32.min or out.max() > _I32.max:
            raise CodecError("corrupt stream: a decoded value lies outside int32")
        return out.astype(np.int32).reshape(shape)

    def stream_mode(self, data: bytes) -> int:
        """Which way a stream of :meth:`compress_symbols` codes y: 0 with the side information z and the
        Laplace tables (every version), 1 with the factorized fallback (version 3 only, where that was
        shorter). Reads the framing only; nothing is decoded.

        Raises:
            CodecError: not this codec's stream, or a corrupt header.
        """
        h = self._unpack(data)
        if self.version != 3 or not h.payload:
            return 0
        try:
            field, _ = bitstream.decode_varint(h.payload, 0)
        except CodecError:
            raise
        except Exception as e:
            raise CodecError(f"corrupt hyperprior stream ({e})") from None
        return int(field % 2)

    def estimate_bits(self, k: Any) -> float:
        """Ideal cost in bits of z (factorized tables) plus y (indexed tables of this codec's layout),
        escapes included."""
        K, shape = self._symbols(k)
        if K.size == 0:
            return 0.0
        N, C, H, W = shape
        z = analysis_int(K, self.A, self.b, pool=self.pool, frac_bits=self.frac_bits).astype(np.int32)
        tab = self.tables(z, H, W).reshape(-1)
        flat = K.reshape(-1)
        if self.version >= 2:
            tt = self._class_rows.tt
            bits = layouts.class_bits(tt, self.family, flat, tab, tt.row_class[tab]) + self.z_codec.estimate_bits(z)
            return bits if self.fallback is None else min(bits, self.fallback.estimate_bits(K))
        R, n = self.family.radius, self.family.n
        esc = (flat < -R) | (flat > R)
        bits = float(self.family.cost_bits[tab, np.where(esc, n - 1, flat + R)].sum())
        if esc.any():
            m = int(esc.sum())
            bits += layouts.escape_bits(flat[esc], np.full(m, -R, np.int64), np.full(m, R, np.int64))
        return bits + self.z_codec.estimate_bits(z)

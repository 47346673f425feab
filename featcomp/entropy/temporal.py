"""Temporal conditional coding: frame t's integer latents coded given frame t-1's (numpy only).

A factorized prior codes every frame as if it were alone, yet consecutive frames' features are
strongly correlated (cosine 0.94 at 5 fps on our clips, docs/temporal.md). :class:`TemporalCodec`
codes the integer latents ``k_t`` (C, *) of frame ``t`` with a per-element Laplace-like table whose
*location* and *scale* are predicted from the **decoded integers** ``k_{t-1}`` of the previous frame,
in the spirit of the conditional (mean-scale) entropy models of Ballé et al. 2018 (arXiv:1802.01436)
and Minnen et al. 2018 (arXiv:1809.02736), applied along time.

The integer context (exact on any CPU or GPU; :mod:`featcomp.entropy.temporal_context`)
-------------------------------------------------------------------------------------
With ``x = clip(k_{t-1}, -clip, clip)`` (int64, per spatial position, channels on axis 0)::

    acc_loc   = w_loc @ x + b_loc                  # int64, weights in 2**-F fixed point
    mq        = (acc_loc + 2**(F-qb-1)) >> (F-qb)  # location in units of 1/Q (Q = 2**qb), rounded
    mu        = clip(mq >> qb, -2**30, 2**30)      # integer part;  q = mq & (Q - 1) its fraction
    acc_scale = w_scale @ |x| + b_scale
    s         = clip((acc_scale + 2**(F-1)) >> F, 0, S - 1)   # scale index on the family's log grid
    table     = s * Q + q;   residual r = k_t - mu,   coded with family table ``table``

Only integer multiply, add, arithmetic right shift and clamp are used; ``|w| < 2**20``,
``|x| <= 2**15`` and ``C <= 2**16`` bound every accumulator below ``2**52``, so int64 never overflows
and numpy, torch CPU and torch CUDA (:func:`integer_context` accepts either) give identical indices.
Float inputs holding integers (float32/float64 latents) are cast to int64 first. The first frame of
every stream (a *chunk*) has no previous frame and uses the learned ``fresh_loc``/``fresh_scale``
instead: each stream decodes alone, so a store's time chunks keep random access.

The tables are a :class:`~featcomp.entropy.indexed.TableFamily` built once at freeze and stored in the
codec; decoding never evaluates a density.

Stream layout: the common header (:mod:`featcomp.entropy.bitstream`, CRC over this codec's digest),
then ANS words, in the payload layout of the codec's ``version`` (part of its bytes and digest); each
layout is coded by the shared code of :mod:`featcomp.entropy.layouts`:

* layout 1 (version 1, codecs made before issue 7; still written and read by such codecs): frame 0's
  ``C * M`` symbols (channel-major), each with its full family row, frame 0's escapes (format of
  :func:`featcomp.entropy.layouts.push_escapes`), frame 1's symbols, frame 1's escapes, and so on
  (the "full rows" layout);
* layout 2 (version 2, the default): rows truncated by *width class*
  (:func:`featcomp.entropy.indexed.truncated_tables`); a frame of fewer than ``_SORT_MIN`` symbols
  is coded at its widest class in position order (one constriction call per frame); larger frames
  by class, table index and position (each table's run decodes with one fixed constriction model);
  then the escapes: a tail symbol per escaped element (residuals the truncation folded away cost
  about what they cost in the full row), then the exact values of residuals beyond the family
  radius (the "class rows" layout, the one the hyperprior's layout 2 uses too; docs/entropy.md);
* layout 3 (version 3, the default since the restart flags): layout 2 preceded by one *restart flag*
  per frame after the first (``T - 1`` binary symbols, one fixed integer table, P(restart) = 2**-6,
  decoded first in one call). A flagged frame is coded with the fresh context, like a chunk's first
  frame, instead of the context of its predecessor: the encoder sets the flag where that costs fewer
  bits (a shot change, where the previous frame predicts worse than no frame at all; on held-out
  segments of real clips ~5% of the frames, docs/temporal.md). The flags cost 0.023 bits per
  unflagged frame; the decoder only reads them, so the choice never has to be reproduced.

Frames decode sequentially (each needs its predecessor), vectorized over channels and positions;
:meth:`TemporalCodec.decompress_chunks` decodes independent streams in lockstep. A diagonal context
(the default) is looked up in per-channel tables built once per codec from the same integer
operations (:attr:`TemporalCodec._context_lut`) instead of being evaluated at every frame. On small
frames the floor is constriction's per-call cost (one call per stream and frame: ~2 us for 64 symbols
at width 16, against ~1.3 us for a whole 64-latent frame in the factorized codec; docs/benchmarks.md,
"temporal").

This module holds the codec (its parameters, bytes, the restart rule and the decode loop that alternates
context and layout); the integer context is :mod:`featcomp.entropy.temporal_context`, the stream layouts
:mod:`featcomp.entropy.layouts`, the coder :mod:`featcomp.entropy.ans`.
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
from featcomp.entropy.indexed import TableFamily, truncated_tables
from featcomp.entropy.layouts import RESTART_FLAG_BITS
from featcomp.entropy.temporal_context import MU_LIMIT, WEIGHT_LIMIT, TemporalContext, integer_context
from featcomp.entropy.temporal_context import locations_and_tables as _locations_and_tables
from featcomp.errors import CodecError

__all__ = ["DIAGONAL_BODY_MAX_CHANNELS", "MU_LIMIT", "RESTART_FLAG_BITS", "WEIGHT_LIMIT", "TemporalCodec",
           "integer_context"]

_MAGIC = b"FCTC"
_VERSION = 3  # codec bytes version = stream layout it writes and reads (1: full-width rows, 2: + width classes,
_READ_VERSIONS = (1, 2, 3)  # 3: + restart flags)
_DIAGONAL_BODY = 0x80  # version byte flag: the context weights are stored as their diagonals (C values each)
_BYTE_VERSIONS = _READ_VERSIONS + tuple(v | _DIAGONAL_BODY for v in _READ_VERSIONS)
# The most channels a diagonal body may declare: the codec holds its weights as C x C matrices (and int64 /
# float copies for the context), so a short diagonal body must not declare more than this ~50 MB bound
# allows (a dense body's own C x C bytes pay for its matrices).
DIAGONAL_BODY_MAX_CHANNELS = 1024
_TAIL_SHIFT = 8  # layout 2: a row is truncated where its folded outer mass is <= 2**precision >> 8
_SORT_MIN = 256  # layout 2: frames of >= this many symbols are coded sorted by (class, table)
_RUN_MIN = 8  # decode speed only: mean run length from which fixed per-table models beat per-symbol rows
_I32 = np.iinfo(np.int32)
# Integers per temporal stream (encode and decode; docs/reliability.md): lower than the factorized
# codec's bitstream.MAX_STREAM_ELEMENTS because each symbol has its own context-chosen table (about
# 0.1 us a symbol), so that any stream decodes in seconds. A store chunk of 256 frames of 64 x 7 x 7
# latents holds 0.8 M.
_MAX_ELEMENTS = 1 << 24
# Frames per stream (encode and decode): the decoder steps frame by frame, so a forged frame count
# would otherwise cost time per frame whatever the stream's size. Store chunks and clip chunks hold
# 256 frames by default (docs/reliability.md).
MAX_STREAM_FRAMES = 1 << 12
_LOCKSTEP_ELEMENTS = 2048  # symbols per lockstep step in decompress_chunks (speed only, same result)
_LUT_ENTRIES = 1 << 17  # decode speed only: entries per diagonal-context lookup table (_context_lut)
_amin, _amax = np.minimum.reduce, np.maximum.reduce  # whole-array reductions without ndarray.min's wrappers
_ = _locations_and_tables  # re-exported for old callers (featcomp.entropy.temporal_context.locations_and_tables)


@dataclasses.dataclass(frozen=True, eq=False)
class TemporalCodec(FrozenCodecBase):
    """Immutable temporal conditional codec: integer context + indexed table family + offsets.

    Same coding interface as :class:`~featcomp.entropy.EntropyCodec` (``quantize``, ``dequantize``,
    ``compress_symbols``, ``decompress_symbols``, ``estimate_bits``, ``to_dict``/``from_dict``,
    ``digest``); axis 0 of the arrays it codes is **time** (a chunk of consecutive frames).

    Attributes:
        offsets: float32 (C,) quantization offsets (``k = round(y - offsets)``).
        family: the :class:`TableFamily` (S scales x Q fractional offsets).
        w_loc, w_scale: int32 (C, C) fixed-point weights, ``|w| < 2**20``.
        b_loc, b_scale: int64 (C,) fixed-point biases, ``|b| < 2**40``.
        fresh_loc: int64 (C,) the first frame's location, in units of ``1/Q``.
        fresh_scale: int32 (C,) the first frame's scale index in ``[0, S)``.
        frac_bits: F, fixed-point fraction bits (``log2(Q) < F <= 24``).
        clip: clamp of the context input (``<= 2**15``).
        version: 3 (default), 2 or 1: the codec format version, which fixes the stream payload layout
            (see the module docstring); part of the canonical bytes and the digest.
        diagonal_body: the canonical bytes store each context weight matrix as its diagonal (C values
            instead of C x C; flag 0x80 of the version byte). Needs diagonal weights; the decoded codec is
            the same, only its bytes and digest differ. ``TemporalPrior.freeze`` sets it for a diagonal
            context of at most :data:`DIAGONAL_BODY_MAX_CHANNELS` channels (a 1000-latent codec: 8 MB ->
            ~90 KB of bytes, most of it the table family); codecs read from bytes keep the form
            they were written in, so they re-serialize identically.
        kind: ``"temporal"``. channels: C. digest: sha256 hex of the canonical bytes.
    """

    offsets: np.ndarray
    family: TableFamily
    w_loc: np.ndarray
    b_loc: np.ndarray
    w_scale: np.ndarray
    b_scale: np.ndarray
    fresh_loc: np.ndarray
    fresh_scale: np.ndarray
    frac_bits: int = 12
    clip: int = 32767
    version: int = _VERSION
    diagonal_body: bool = False
    kind: str = dataclasses.field(default="temporal", init=False)
    _MAGIC: ClassVar[bytes] = _MAGIC
    _VERSION: ClassVar[int] = _VERSION
    _READ_VERSIONS: ClassVar[tuple[int, ...]] = _READ_VERSIONS  # the stream layouts
    _BYTE_VERSIONS: ClassVar[tuple[int, ...]] = _BYTE_VERSIONS  # the version bytes from_bytes accepts
    _STREAM_NAME: ClassVar[str] = "temporal codec"
    _MAX_ELEMENTS: ClassVar[int] = _MAX_ELEMENTS
    channels: int = dataclasses.field(init=False)
    digest: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        off = np.asarray(self.offsets, np.float32).reshape(-1)
        C = off.size
        if C < 1 or C > (1 << 16) or not np.isfinite(off).all():
            raise CodecError(f"TemporalCodec needs 1..65536 finite offsets, got {off.shape}")
        F, clip, Q = int(self.frac_bits), int(self.clip), self.family.Q
        if not (Q.bit_length() - 1 < F <= 24) or not 1 <= clip <= (1 << 15):
            raise CodecError(f"invalid fixed point: frac_bits={F}, clip={clip}")
        arrays = {}
        for name, shape, dtype, limit in (
            ("w_loc", (C, C), np.int32, WEIGHT_LIMIT), ("w_scale", (C, C), np.int32, WEIGHT_LIMIT),
            ("b_loc", (C,), np.int64, 1 << 40), ("b_scale", (C,), np.int64, 1 << 40),
            ("fresh_loc", (C,), np.int64, MU_LIMIT), ("fresh_scale", (C,), np.int32, self.family.levels),
        ):
            a = np.asarray(getattr(self, name))
            if a.shape != shape or not np.issubdtype(a.dtype, np.integer):
                raise CodecError(f"TemporalCodec.{name} must be integer {shape}, got {a.dtype} {a.shape}")
            if (np.abs(a.astype(np.int64)) >= limit).any():
                raise CodecError(f"TemporalCodec.{name} out of range (|value| < {limit})")
            arrays[name] = _readonly(a, dtype)
        if (arrays["fresh_scale"] < 0).any():
            raise CodecError("fresh_scale indices must be >= 0")
        set_("diagonal_body", bool(self.diagonal_body))
        if self.diagonal_body and C > DIAGONAL_BODY_MAX_CHANNELS:
            raise CodecError(f"TemporalCodec(diagonal_body=True) holds at most {DIAGONAL_BODY_MAX_CHANNELS} "
                             f"channels, got {C}")
        if self.diagonal_body and any(np.count_nonzero(arrays[n] - np.diag(np.diagonal(arrays[n]))) for n in
                                      ("w_loc", "w_scale")):
            raise CodecError("TemporalCodec(diagonal_body=True) needs diagonal context weights")
        set_("offsets", _readonly(off, np.float32))
        for name, a in arrays.items():
            set_(name, a)
        if int(self.version) not in _READ_VERSIONS:
            raise CodecError(f"unknown TemporalCodec version {self.version}; upgrade featcomp")
        set_("version", int(self.version))
        set_("_VERSION", int(self.version))  # to_dict's format_version is this codec's
        set_("frac_bits", F)
        set_("clip", clip)
        set_("channels", C)
        set_("digest", hashlib.sha256(self._body()).hexdigest())

    # ------------------------------------------------------------------ identity and serialization
    def __repr__(self) -> str:
        return f"TemporalCodec(channels={self.channels}, family={self.family!r}, digest={self.digest[:12]}...)"

    def _body(self) -> bytes:
        fam = self.family.to_bytes()
        vbyte = self.version | (_DIAGONAL_BODY if self.diagonal_body else 0)
        head = _MAGIC + struct.pack("<BIBHI", vbyte, self.channels, self.frac_bits, self.clip, len(fam))
        w_loc, w_scale = ((np.diagonal(self.w_loc), np.diagonal(self.w_scale)) if self.diagonal_body
                          else (self.w_loc, self.w_scale))
        return b"".join([
            head, fam, self.offsets.astype("<f4").tobytes(),
            w_loc.astype("<i4").tobytes(), self.b_loc.astype("<i8").tobytes(),
            w_scale.astype("<i4").tobytes(), self.b_scale.astype("<i8").tobytes(),
            self.fresh_loc.astype("<i8").tobytes(), self.fresh_scale.astype("<i4").tobytes(),
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> TemporalCodec:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on corruption or a bad version."""
        body, (C, F, clip, flen) = cls._checked_body(data, "<BIBHI")
        vbyte = body[len(_MAGIC)]
        diag = bool(vbyte & _DIAGONAL_BODY)
        if not 1 <= C <= (DIAGONAL_BODY_MAX_CHANNELS if diag else 1 << 16):  # before anything C x C is allocated
            raise CodecError(f"corrupt TemporalCodec bytes: {C} channels" + (" in a diagonal body" if diag else ""))
        pos = len(_MAGIC) + struct.calcsize("<BIBHI")
        fam = TableFamily.from_bytes(body[pos : pos + flen])
        pos += flen
        nw = C if diag else C * C
        out = cls._read_arrays(body, pos, [("<f4", C), ("<i4", nw), ("<i8", C), ("<i4", nw), ("<i8", C),
                                            ("<i8", C), ("<i4", C)])
        off, wl, bl, ws, bs, fl, fs = out
        wl, ws = (np.diag(wl), np.diag(ws)) if diag else (wl.reshape(C, C), ws.reshape(C, C))
        return cls(off, fam, wl, bl, ws, bs, fl, fs, F, clip, vbyte & ~_DIAGONAL_BODY, diag)

    # ------------------------------------------------------------------ quantization
    def _check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if len(shape) < 2 or shape[1] != self.channels:
            raise CodecError(f"{what} must have shape (T, {self.channels}, *), got {tuple(shape)}")


    # ------------------------------------------------------------------ context
    @functools.cached_property
    def _ctx(self) -> TemporalContext:
        """This codec's integer context (:class:`~featcomp.entropy.temporal_context.TemporalContext`)."""
        return TemporalContext(self.w_loc, self.b_loc, self.w_scale, self.b_scale, self.fresh_loc, self.fresh_scale,
                               frac_bits=self.frac_bits, clip=self.clip, Q=self.family.Q, levels=self.family.levels)

    @functools.cached_property
    def _context_lut(self) -> tuple | None:
        """Decode-speed lookup tables of a diagonal context, or None
        (:meth:`~featcomp.entropy.temporal_context.TemporalContext.lut`, ``_LUT_ENTRIES`` entries)."""
        return self._ctx.lut(_LUT_ENTRIES)

    def context(self, k_prev: Any) -> tuple[Any, Any]:
        """:func:`integer_context` with this codec's parameters; k_prev (..., C, M) numpy or torch."""
        return self._ctx.context(k_prev)

    @functools.cached_property
    def _class_rows(self) -> layouts.ClassRows:
        """Layout 2's truncated tables and their derived constants (from the integers only)."""
        return layouts.class_rows(truncated_tables(self.family, _TAIL_SHIFT), self.family.radius)

    def tables(self, k: Any) -> tuple[np.ndarray, np.ndarray]:
        """Locations and table indices of every frame of a chunk (the encoder's view, vectorized).

        Args:
            k: int (T, C, *) latents of one chunk.

        Returns:
            ``(mu, table)``, int64 (T, C, M) each, frame 0 from the fresh context; in layout 3 also
            every frame that :meth:`restarts` flags.
        """
        mu, tab, _ = self._coding_tables(self._as_frames(k))
        return mu, tab

    def _coding_tables(self, K: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Every frame's locations and tables as coded, int64 (T, C, M) each, and (layout 3) the restart
        flags bool (T,) already applied to them (None before layout 3)."""
        mu, tab = self._ctx.frames(K)
        if self.version < 3:
            return mu, tab, None
        restart = self._restart_plan(K, mu, tab)
        mu[restart], tab[restart] = mu[0], tab[0]
        return mu, tab, restart

    def _as_frames(self, k: Any) -> np.ndarray:
        kk = _to_numpy(k)
        self._check_shape(kk.shape, "k")
        return kk.reshape(kk.shape[0], self.channels, math.prod(kk.shape[2:])).astype(np.int64)

    def restarts(self, k: Any) -> np.ndarray:
        """Layout 3's restart flags of a chunk: bool (T,), True where frame t is coded with the fresh
        context (frame 0 always is; it carries no flag). All False for version 1 and 2 codecs.

        A frame restarts when its ideal cost with the fresh tables plus the flag's cost is lower than
        with its predecessor's context plus the no-restart flag's cost (the tables' exact costs,
        :meth:`estimate_bits`). Only the encoder evaluates this rule; the decoder reads the flags.
        """
        K = self._as_frames(k)
        if self.version < 3:
            return np.zeros(K.shape[0], bool)
        return self._restart_plan(K, *self._ctx.frames(K))

    def _restart_plan(self, K: np.ndarray, mu: np.ndarray, tab: np.ndarray) -> np.ndarray:
        """The encoder's rule on the context tables ``mu``, ``tab`` (frame 0: the fresh ones): bool (T,)."""
        T = K.shape[0]
        if T < 2:
            return np.zeros(T, bool)
        ctx = self._estimate_bits_v2(K, mu, tab, K - mu, per_frame=True)
        fm, ft = np.broadcast_to(mu[:1], mu.shape), np.broadcast_to(tab[:1], tab.shape)
        fresh = self._estimate_bits_v2(K, fm, ft, K - fm, per_frame=True)
        out = fresh + RESTART_FLAG_BITS[1] < ctx + RESTART_FLAG_BITS[0]
        out[0] = False
        return out


    @property
    def _flag_model(self):
        """The restart flags' fixed model (:func:`featcomp.entropy.layouts.restart_flag_model`)."""
        return layouts.restart_flag_model()

    # ------------------------------------------------------------------ coding
    def _symbols(self, k: Any) -> tuple[np.ndarray, tuple[int, ...]]:
        K = self._int_symbols(k)
        shape = tuple(int(s) for s in K.shape)
        return K.reshape(shape[0], self.channels, math.prod(shape[2:])), shape


    def compress_symbols(self, k: Any) -> bytes:
        """Code one chunk of integer latents exactly (any int32 value; far values are escaped).

        Args:
            k: int (T, C, *) numpy array or torch tensor, T consecutive frames; frame 0 uses the
                fresh context, so the stream decodes without any other chunk.

        Returns:
            header + ANS payload (see the module docstring for the order).
        """
        K, shape = self._symbols(k)
        T = shape[0]
        if K.size > _MAX_ELEMENTS or T > MAX_STREAM_FRAMES:
            raise CodecError(f"array of shape {shape} is too large for one stream (at most {MAX_STREAM_FRAMES} "
                             f"frames, {_MAX_ELEMENTS} integers); split it (compress_chunks)")
        if K.size == 0:
            return bitstream.pack(shape, self.digest, b"")
        enc = ans.Encoder()
        if self.version == 1:  # layout 1: full family rows
            layouts.push_full_rows(enc, K, *self._ctx.frames(K), self.family)
        else:  # layout 2: class rows; layout 3: + the restart flags, pushed last (decoded first)
            mu, tab, restart = self._coding_tables(K)
            layouts.push_class_rows(enc, self._class_rows, K, mu, tab, T, sort=K[0].size >= _SORT_MIN)
            if restart is not None and T > 1:
                layouts.push_restart_flags(enc, restart[1:])
        return bitstream.pack(shape, self.digest, enc.payload())

    def _check_stream(self, data: bytes) -> tuple[tuple[int, ...], bytes]:
        """Header checks of one stream -> (shape, payload)."""
        h = self._unpack(data)
        shape = h.shape
        numel = math.prod(shape)
        if numel and shape[0] > MAX_STREAM_FRAMES:
            raise CodecError(f"corrupt stream header: {shape[0]} frames, more than one temporal stream may hold "
                             f"({MAX_STREAM_FRAMES}); the stream is damaged")
        if numel == 0 and h.payload:
            raise CodecError("corrupt stream: an empty array with a non-empty payload")
        return shape, h.payload

    def decompress_symbols(self, data: bytes) -> np.ndarray:
        """Decode one chunk written by :meth:`compress_symbols` of this codec (frame by frame).

        Returns:
            int32 (T, C, *) equal to the coded array.

        Raises:
            CodecError: not a featcomp stream, another codec's stream, corruption or truncation.
        """
        return self.decompress_chunks([data])[0]

    def decompress_chunks(self, streams: list[bytes]) -> list[np.ndarray]:
        """Decode several independent streams of this codec (e.g. a store's time chunks) in lockstep.

        Same result as ``[decompress_symbols(s) for s in streams]``, but frame step t of every
        stream that has a frame t is done together: one integer-context evaluation and one table-row
        gather for all of them, then one constriction call per stream. The per-frame numpy
        overhead (the bulk of a small chunk's decode time) is paid once per step, not once per
        stream. Streams may have different lengths and frame shapes (grouped by frame size).

        Args:
            streams: stream bytes, each from :meth:`compress_symbols` of this codec.

        Returns:
            int32 arrays (T_i, C, *), in the order of ``streams``.

        Raises:
            CodecError: any stream is not this codec's, corrupt or truncated (the message says which).

        Determinism: decoding uses the stored integer tables and the integer context only.
        """
        parsed = []
        for i, data in enumerate(streams):
            try:
                parsed.append(self._check_stream(data))
            except CodecError as e:
                raise CodecError(f"stream #{i}: {e}" if len(streams) > 1 else str(e)) from None
        out: list[np.ndarray | None] = [None] * len(parsed)
        groups: dict[int, list[int]] = {}
        for i, (shape, _) in enumerate(parsed):
            if math.prod(shape) == 0:
                out[i] = np.zeros(shape, np.int32)
            else:
                groups.setdefault(math.prod(shape[2:]), []).append(i)
        for M, idx in groups.items():
            idx = sorted(idx, key=lambda i: -parsed[i][0][0])  # longest first: active streams are a prefix
            # lockstep batches of <= _LOCKSTEP_ELEMENTS symbols per step: the per-step table rows
            # (8 * n bytes per symbol) stay in cache; spatial frames are large enough alone
            per = max(1, _LOCKSTEP_ELEMENTS // (self.channels * M))
            for b in range(0, len(idx), per):
                sub = idx[b : b + per]
                decode = self._decode_group_v1 if self.version == 1 else self._decode_group_v2
                res = decode(M, [parsed[i][0][0] for i in sub], [parsed[i][1] for i in sub],
                                         len(streams) > 1, sub)
                for i, k in zip(sub, res):
                    out[i] = k.reshape(parsed[i][0])
        return out  # type: ignore[return-value]


    @staticmethod
    def _fail(name: bool, ids: list[int]):
        def fail(j: int, what: str, e: Exception) -> CodecError:
            where = f"stream #{ids[j]}: " if name else ""
            return CodecError(f"{where}corrupt stream or wrong codec: {what} ({e})")

        return fail

    @staticmethod
    def _finish(decs: list, fail, outs: list[np.ndarray]) -> list[np.ndarray]:
        """The end checks of a lockstep group: no data left in any stream, every value inside int32."""
        for j, dec in enumerate(decs):
            if not dec.is_empty():
                raise fail(j, "data left over after decoding every symbol", ValueError("trailing words"))
        res = []
        for o in outs:
            if o.size and (o.min() < _I32.min or o.max() > _I32.max):
                raise CodecError("corrupt stream: a decoded value lies outside int32")
            res.append(o.astype(np.int32))
        return res

    def _decode_group_v1(self, M: int, Ts: list[int], payloads: list[bytes], name: bool, ids: list[int]) -> list[np.ndarray]:
        """Layout 1: lockstep decode of streams with M positions per channel; ``Ts`` sorted descending.
        Per frame step: the "full rows" layout for every active stream, then the context of the next frame."""
        C, fam, ctx = self.channels, self.family, self._ctx
        N, L = len(Ts), C * M
        w = fam.weights
        fail = self._fail(name, ids)
        outs = [np.empty((T, C, M), np.int64) for T in Ts]
        decs = [ans.Decoder(p) for p in payloads]
        # state, preallocated once: locations (N, C, M), decoded frame, [x; |x|] as float64
        mu = np.repeat(np.repeat(ctx.fresh_mu[None, :, None], N, 0), M, 2)
        rows = np.tile(np.repeat(w[ctx.fresh_tab], M, axis=0), (N, 1))  # (N*L, n) fresh tables
        kt = np.empty((N, C, M), np.int64)
        xf = np.empty((N, 2 * C, M), np.float64)
        n_act = N
        for t in range(Ts[0]):
            if Ts[n_act - 1] <= t:  # some streams ended: keep the active prefix (rare)
                while Ts[n_act - 1] <= t:
                    n_act -= 1
                mu, kt, xf, rows = mu[:n_act], kt[:n_act], xf[:n_act], rows[: n_act * L]
            layouts.pop_full_rows(decs, rows, mu, fam, kt, fail)
            for j in range(n_act):
                outs[j][t] = kt[j]
            if t + 1 == Ts[0]:
                break
            tab = ctx.step_v1(kt, xf, mu_out=mu)  # integer context of frame t+1 from frame t
            rows = w[tab.reshape(-1)]
        return self._finish(decs, fail, outs)

    def _decode_group_v2(self, M: int, Ts: list[int], payloads: list[bytes], name: bool, ids: list[int]) -> list[np.ndarray]:
        """Layouts 2 and 3: lockstep decode of N streams with M positions per channel; ``Ts`` sorted
        descending. Layout 3 first reads each stream's restart flags.

        Per frame step: the frame's symbols and escapes of every active stream (the "class rows" layout,
        :func:`featcomp.entropy.layouts.pop_class_frame`), then the context of the next frame for all of
        them together: two lookups for a diagonal context within its tables (:attr:`_context_lut`), else
        one pair of matrix products (columns = stream x position,
        :meth:`~featcomp.entropy.temporal_context.TemporalContext.step`); flagged frames take the fresh
        context instead.
        """
        C, ctx = self.channels, self._ctx
        L = C * M
        cr = self._class_rows
        fresh_mu, fresh_tab = ctx.fresh_mu, ctx.fresh_tab
        lut = self._context_lut
        sort = L >= _SORT_MIN
        fail = self._fail(name, ids)
        decs = [ans.Decoder(p) for p in payloads]
        N = len(Ts)
        restart = None
        if self.version >= 3:  # layout 3: every stream's restart flags come first
            restart = np.zeros((N, Ts[0] + 1), bool)
            for j, T in enumerate(Ts):
                if T > 1:
                    try:
                        restart[j, 1:T] = layouts.pop_restart_flags(decs[j], T - 1)
                    except Exception as e:  # the decoder raises on garbage
                        raise fail(j, "the restart flags failed to decode", e) from None
            if not restart.any():
                restart = None
        out = np.empty((Ts[0], N, C, M), np.int64)
        mu = np.repeat(np.repeat(fresh_mu[None, :, None], N, 0), M, 2)  # (N, C, M)
        tab = np.repeat(np.repeat(fresh_tab[None, :, None], N, 0), M, 2)  # (N, C, M), any strides
        rsteps = set() if restart is None else set(np.flatnonzero(restart.any(axis=0)).tolist())
        n_act = 0
        for t in range(Ts[0]):
            if n_act == 0 or Ts[n_act - 1] <= t:  # (re)allocate the per-step buffers for the active streams
                n_act = sum(T > t for T in Ts)
                mu, tab = mu[:n_act], tab[:n_act]
                X32 = np.empty((2 * C + 1, n_act * M), np.float32)  # [x; 1; |x|], columns = (stream, position)
                X32[C] = 1.0
                acc = np.empty((2 * C, n_act * M), np.float32)
            res = out[t, :n_act]  # frame t of the active streams, decoded in place (contiguous)
            layouts.pop_class_frame(decs, cr, tab, mu, res.reshape(n_act, L), sort, _RUN_MIN, fail)
            res += mu
            if t + 1 == Ts[0]:
                break
            if lut is not None and -lut[0] <= _amin(res, None) and _amax(res, None) <= lut[0]:
                fi = res + lut[1]  # diagonal context: two lookups (_context_lut; same integers)
                mu, tab = lut[2].take(fi), lut[3].take(fi)
            else:
                mu, tab = ctx.step(res, X32, acc, n_act, M)
            if t + 1 in rsteps:  # flagged frames: the fresh context instead
                for j in np.flatnonzero(restart[:n_act, t + 1]).tolist():
                    mu[j] = fresh_mu[:, None]
                    tab[j] = fresh_tab[:, None]
        return self._finish(decs, fail, [out[:T, j] for j, T in enumerate(Ts)])

    def estimate_bits(self, k: Any) -> float:
        """The tables' ideal cost of one chunk ``k`` (T, C, *) in bits (escapes included, no header)."""
        K, shape = self._symbols(k)
        if K.size == 0:
            return 0.0
        fam = self.family
        R = fam.radius
        mu, tab, restart = self._coding_tables(K.astype(np.int64))
        r = K - mu
        if self.version >= 2:
            bits = self._estimate_bits_v2(K, mu, tab, r)
            if restart is not None:  # layout 3: the flags
                n1 = int(restart[1:].sum())
                bits += n1 * RESTART_FLAG_BITS[1] + (K.shape[0] - 1 - n1) * RESTART_FLAG_BITS[0]
            return bits
        esc = (r < -R) | (r > R)
        sym = np.where(esc, fam.n - 1, r + R)
        bits = float(fam.cost_bits[tab, sym].sum())
        if esc.any():
            m = mu[esc]
            bits += layouts.escape_bits(K[esc], m - R, m + R)
        return bits

    def frame_bits(self, k: Any) -> np.ndarray:
        """float64 (T,) the ideal cost of each frame of ``k`` (T, C, *) coded as one chunk (version 2 and 3
        codecs; each frame with the context it is coded with, a layout-3 frame with its restart flag).

        Splits :meth:`estimate_bits`' total by frame (up to float rounding). Per-frame rate control ranks
        frames by it (:func:`featcomp.ratecontrol.choose_levels`, the give-up quota).

        Raises:
            CodecError: a version 1 codec (its full-row layout is priced whole only), or a wrong shape.
        """
        if self.version < 2:
            raise CodecError("TemporalCodec.frame_bits needs a version 2 or 3 codec; refit this version 1 codec")
        K, _ = self._symbols(k)
        T = K.shape[0]
        if K.size == 0:
            return np.zeros(T)
        K = K.astype(np.int64)
        mu, tab, restart = self._coding_tables(K)
        bits = np.asarray(self._estimate_bits_v2(K, mu, tab, K - mu, per_frame=True), np.float64)
        if restart is not None and T > 1:
            bits[1:] += np.where(restart[1:], RESTART_FLAG_BITS[1], RESTART_FLAG_BITS[0])
        return bits

    def _estimate_bits_v2(self, K: np.ndarray, mu: np.ndarray, tab: np.ndarray, r: np.ndarray, *,
                          per_frame: bool = False) -> float | np.ndarray:
        """Layout 2's ideal cost: truncated rows, tail symbols, exact escapes beyond R (per frame: (T,))."""
        tt = self._class_rows.tt
        cls = layouts.coding_classes(tt, tab, tab.shape[0], sort=tab[0].size >= _SORT_MIN)
        return layouts.class_bits(tt, self.family, r, tab, cls, per_frame=per_frame)

    def compress_chunks(self, k: Any, chunk_frames: int) -> list[bytes]:
        """Split ``k`` (T, C, *) into chunks of ``chunk_frames`` frames, each an independent stream."""
        k = _to_numpy(k)
        return [self.compress_symbols(k[i : i + chunk_frames]) for i in range(0, k.shape[0], chunk_frames)]


"""Temporal conditional coding: frame t's integer latents coded given frame t-1's (numpy + constriction).

A factorized prior codes every frame as if it were alone, yet consecutive frames' features are
strongly correlated (cosine 0.94 at 5 fps on our clips, docs/temporal.md). :class:`TemporalCodec`
codes the integer latents ``k_t`` (C, *) of frame ``t`` with a per-element Laplace-like table whose
*location* and *scale* are predicted from the **decoded integers** ``k_{t-1}`` of the previous frame,
in the spirit of the conditional (mean-scale) entropy models of Ballé et al. 2018 (arXiv:1802.01436)
and Minnen et al. 2018 (arXiv:1809.02736), applied along time.

The integer context (exact on any CPU or GPU)
---------------------------------------------
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
then ANS words, in the payload layout of the codec's ``version`` (part of its bytes and digest):

* layout 1 (version 1, codecs made before issue 7; still written and read by such codecs): frame 0's
  ``C * M`` symbols (channel-major), each with its full family row, frame 0's escapes (format of
  :func:`featcomp.entropy.coder.push_escapes`), frame 1's symbols, frame 1's escapes, and so on;
* layout 2 (version 2, the default): rows truncated by *width class*
  (:func:`featcomp.entropy.indexed.truncated_tables`); a frame of fewer than ``_SORT_MIN`` symbols
  is coded at its widest class in position order (one constriction call per frame); larger frames
  by class, table index and position (each table's run decodes with one fixed constriction model);
  then the escapes: a tail symbol per escaped element (residuals the truncation folded away cost
  about what they cost in the full row), then the exact values of residuals beyond the family
  radius (:meth:`TemporalCodec._encode_v2`, docs/entropy.md);
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
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import struct
from typing import Any, ClassVar

import constriction
import numpy as np

from featcomp.entropy import bitstream, coder
from featcomp.entropy._frozen import DigestedCodec
from featcomp.entropy._frozen import readonly as _readonly
from featcomp.entropy._frozen import to_numpy as _to_numpy
from featcomp.entropy.indexed import (
    TableFamily,
    class_bits,
    push_class_escapes,
    truncated_tables,
    unzigzag_table,
    zigzag,
)
from featcomp.errors import CodecError

__all__ = ["MU_LIMIT", "RESTART_FLAG_BITS", "WEIGHT_LIMIT", "TemporalCodec", "integer_context"]

_MAGIC = b"FCTC"
_VERSION = 3  # codec bytes version = stream layout it writes and reads (1: full-width rows, 2: + width classes,
_READ_VERSIONS = (1, 2, 3)  # 3: + restart flags)
_RESTART_FREQ = 1 << 10  # layout 3: the restart flag's integer table is (2**16 - 2**10, 2**10) at precision 16
RESTART_FLAG_BITS = (16 - math.log2((1 << 16) - _RESTART_FREQ), 16 - math.log2(_RESTART_FREQ))  # not set, set
_TAIL_SHIFT = 8  # layout 2: a row is truncated where its folded outer mass is <= 2**precision >> 8
_SORT_MIN = 256  # layout 2: frames of >= this many symbols are coded sorted by (class, table)
_RUN_MIN = 8  # decode speed only: mean run length from which fixed per-table models beat per-symbol rows
MU_LIMIT = 1 << 30
WEIGHT_LIMIT = 1 << 20
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


def _locations_and_tables(
    mq: np.ndarray, sc: np.ndarray, qb: int, smax: int, clip_mu: bool, clip_s_low: bool,
    mu_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The decoders' last context step, from the shifted accumulators (the tail of :func:`integer_context`).

    ``mq``: locations in units of 1/Q, ``sc``: scale indices (int64, same shape). Returns
    ``(mu, tab)``: integer locations ``mq >> log2 Q`` (clamped to ``+-MU_LIMIT`` when ``clip_mu``;
    written into ``mu_out`` when given) and table indices ``clamp(sc, 0, smax) * Q + (mq mod Q)``,
    computed **in place** in ``mq`` (``sc`` is overwritten too). ``clip_s_low=False`` skips the lower
    scale clamp where the codec proves it cannot bind (same result).
    """
    mu = np.right_shift(mq, qb, out=mu_out)
    if clip_mu:
        np.clip(mu, -MU_LIMIT, MU_LIMIT, out=mu)
    mq &= (1 << qb) - 1
    if clip_s_low:
        np.maximum(sc, 0, out=sc)
    np.minimum(sc, smax, out=sc)
    sc <<= qb
    mq += sc
    return mu, mq


def integer_context(
    k_prev: Any,
    w_loc: Any,
    b_loc: Any,
    w_scale: Any,
    b_scale: Any,
    *,
    frac_bits: int,
    Q: int,
    levels: int,
    clip: int,
) -> tuple[Any, Any]:
    """Location and table index of frame t from frame t-1, in exact integer arithmetic.

    Works on numpy arrays or torch tensors (any device); the result has the input's library.

    Args:
        k_prev: int (or float holding integers) (..., C, M): the previous frame's latents.
        w_loc, w_scale: int (C, C) fixed-point weights (``2**-frac_bits`` units).
        b_loc, b_scale: int (C,) fixed-point biases.
        frac_bits: F. Q: fractional location steps (power of two). levels: S. clip: input clamp.

    Returns:
        ``(mu, table)``: int64 (..., C, M) integer location and int64 (..., C, M) table index
        ``s * Q + q``.
    """
    qb = int(Q).bit_length() - 1
    is_torch = hasattr(k_prev, "detach")
    if is_torch:
        import torch

        dev = k_prev.device
        x = k_prev.to(torch.int64).clamp(-clip, clip)
        wl = torch.tensor(np.asarray(w_loc, np.int64), device=dev)
        ws = torch.tensor(np.asarray(w_scale, np.int64), device=dev)
        bl = torch.tensor(np.asarray(b_loc, np.int64), device=dev)[:, None]
        bs = torch.tensor(np.asarray(b_scale, np.int64), device=dev)[:, None]
        # elementwise product + sum (CUDA has no int64 matmul); exact integer arithmetic either way
        acc = (wl[:, :, None] * x.unsqueeze(-3)).sum(-2) + bl
        acc_s = (ws[:, :, None] * x.abs().unsqueeze(-3)).sum(-2) + bs
        mq = (acc + (1 << (frac_bits - qb - 1))) >> (frac_bits - qb)
        mu = (mq >> qb).clamp(-MU_LIMIT, MU_LIMIT)
        s = ((acc_s + (1 << (frac_bits - 1))) >> frac_bits).clamp(0, levels - 1)
        return mu, s * Q + (mq & (Q - 1))
    x = np.clip(np.asarray(k_prev).astype(np.int64), -clip, clip)
    acc = np.matmul(np.asarray(w_loc, np.int64), x) + np.asarray(b_loc, np.int64)[:, None]
    acc_s = np.matmul(np.asarray(w_scale, np.int64), np.abs(x)) + np.asarray(b_scale, np.int64)[:, None]
    mq = (acc + (1 << (frac_bits - qb - 1))) >> (frac_bits - qb)
    mu = np.clip(mq >> qb, -MU_LIMIT, MU_LIMIT)
    s = np.clip((acc_s + (1 << (frac_bits - 1))) >> frac_bits, 0, levels - 1)
    return mu, s * Q + (mq & (Q - 1))


@dataclasses.dataclass(frozen=True, eq=False)
class TemporalCodec(DigestedCodec):
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
    kind: str = dataclasses.field(default="temporal", init=False)
    _MAGIC: ClassVar[bytes] = _MAGIC
    _VERSION: ClassVar[int] = _VERSION
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
        head = _MAGIC + struct.pack("<BIBHI", self.version, self.channels, self.frac_bits, self.clip, len(fam))
        return b"".join([
            head, fam, self.offsets.astype("<f4").tobytes(),
            self.w_loc.astype("<i4").tobytes(), self.b_loc.astype("<i8").tobytes(),
            self.w_scale.astype("<i4").tobytes(), self.b_scale.astype("<i8").tobytes(),
            self.fresh_loc.astype("<i8").tobytes(), self.fresh_scale.astype("<i4").tobytes(),
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> TemporalCodec:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on corruption or a bad version."""
        body, (C, F, clip, flen) = cls._checked_body(data, "<BIBHI")
        version = body[len(_MAGIC)]
        pos = len(_MAGIC) + struct.calcsize("<BIBHI")
        fam = TableFamily.from_bytes(body[pos : pos + flen])
        pos += flen
        out = cls._read_arrays(body, pos, [("<f4", C), ("<i4", C * C), ("<i8", C), ("<i4", C * C), ("<i8", C),
                                            ("<i8", C), ("<i4", C)])
        off, wl, bl, ws, bs, fl, fs = out
        return cls(off, fam, wl.reshape(C, C), bl, ws.reshape(C, C), bs, fl, fs, F, clip, version)

    @classmethod
    def _checked_body(cls, data: bytes, fixed_header: str) -> tuple[bytes, tuple]:
        """:meth:`DigestedCodec._checked_body` accepting every readable version (1 to 3)."""
        data = bytes(data)
        n = len(_MAGIC)
        if len(data) > n and data[:n] == _MAGIC and data[n] in _READ_VERSIONS:
            view = type("TemporalCodec", (DigestedCodec,), {"_MAGIC": _MAGIC, "_VERSION": data[n]})
            return DigestedCodec._checked_body.__func__(view, data, fixed_header)
        return super()._checked_body(data, fixed_header)

    # ------------------------------------------------------------------ quantization
    def _check_shape(self, shape: tuple[int, ...], what: str) -> None:
        if len(shape) < 2 or shape[1] != self.channels:
            raise CodecError(f"{what} must have shape (T, {self.channels}, *), got {tuple(shape)}")

    # ------------------------------------------------------------------ context
    @functools.cached_property
    def _np_params(self) -> tuple:
        """int64 copies of the context parameters for the numpy hot path (derived, exact)."""
        Q = self.family.Q
        qb = Q.bit_length() - 1
        return (self.w_loc.astype(np.int64), self.b_loc.astype(np.int64)[:, None] + (1 << (self.frac_bits - qb - 1)),
                self.w_scale.astype(np.int64), self.b_scale.astype(np.int64)[:, None] + (1 << (self.frac_bits - 1)),
                self.frac_bits - qb, qb, self.family.levels - 1)

    def _context_np(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The numpy path of :func:`integer_context` (same integer operations)."""
        wl, bl, ws, bs, sh, qb, smax = self._np_params
        x = np.minimum(np.maximum(x, -self.clip), self.clip)
        return _locations_and_tables((wl @ x + bl) >> sh, (ws @ np.abs(x) + bs) >> self.frac_bits, qb, smax,
                                     clip_mu=True, clip_s_low=True)

    @functools.cached_property
    def _context_lut(self) -> tuple | None:
        """Decode-speed lookup tables of a **diagonal** context (None for any other codec).

        When both weight matrices are diagonal (``context="diagonal"``, the default of
        :class:`~featcomp.entropy.temporal_prior.TemporalPrior`), channel c's location and table
        index depend only on its own previous value ``x``. For ``|x| <= R`` they are tabulated once
        per codec with the exact integer operations of :func:`integer_context` (diagonal product,
        bias, shifts, clamps), and the decoder looks them up: two gathers per frame step instead of
        the context products, shifts and clamps. A step with any ``|x| > R`` takes the product path;
        the integers are identical either way (``tests/entropy/test_temporal_lut.py``).

        Returns ``(R, coff (C, 1) int64, mu_lut (C * (2R + 1),) int64, tab_lut (same) int64)`` where
        entry ``c * (2R + 1) + R + x`` holds channel c's location and table index after value x.
        ``R = min(clip, max(16, 2**17 // C))`` keeps the tables at ~2 MiB (``clip`` when that is less).
        """
        C = self.channels
        wl, bl, ws, bs, sh, qb, smax = self._np_params
        dl, ds = np.diagonal(wl), np.diagonal(ws)
        if np.count_nonzero(wl) != np.count_nonzero(dl) or np.count_nonzero(ws) != np.count_nonzero(ds):
            return None
        R = min(self.clip, max(16, _LUT_ENTRIES // C))
        x = np.arange(-R, R + 1, dtype=np.int64)[None, :]  # |x| <= R <= clip: the input clamp never binds
        mu, tab = _locations_and_tables((dl[:, None] * x + bl) >> sh, (ds[:, None] * np.abs(x) + bs) >> self.frac_bits,
                                        qb, smax, clip_mu=True, clip_s_low=True)
        coff = (np.arange(C, dtype=np.int64) * (2 * R + 1) + R)[:, None]
        return R, coff, _readonly(mu.reshape(-1), np.int64), _readonly(tab.reshape(-1), np.int64)

    def context(self, k_prev: Any) -> tuple[Any, Any]:
        """:func:`integer_context` with this codec's parameters; k_prev (..., C, M) numpy or torch."""
        return integer_context(
            k_prev, self.w_loc, self.b_loc, self.w_scale, self.b_scale,
            frac_bits=self.frac_bits, Q=self.family.Q, levels=self.family.levels, clip=self.clip,
        )

    def _fresh(self, M: int) -> tuple[np.ndarray, np.ndarray]:
        Q = self.family.Q
        qb = Q.bit_length() - 1
        mu = np.repeat((self.fresh_loc >> qb)[:, None], M, axis=1)
        tab = np.repeat((self.fresh_scale.astype(np.int64) * Q + (self.fresh_loc & (Q - 1)))[:, None], M, axis=1)
        return mu, tab

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
        mu, tab = self._context_tables(K)
        if self.version < 3:
            return mu, tab, None
        restart = self._restart_plan(K, mu, tab)
        mu[restart], tab[restart] = mu[0], tab[0]
        return mu, tab, restart

    def _as_frames(self, k: Any) -> np.ndarray:
        kk = _to_numpy(k)
        self._check_shape(kk.shape, "k")
        return kk.reshape(kk.shape[0], self.channels, math.prod(kk.shape[2:])).astype(np.int64)

    def _context_tables(self, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame 0 from the fresh context, every later frame from its predecessor: int64 (T, C, M) each."""
        T, _, M = K.shape
        mu = np.empty((T, self.channels, M), np.int64)
        tab = np.empty_like(mu)
        if T:
            mu[0], tab[0] = self._fresh(M)
        if T > 1:
            mu[1:], tab[1:] = self.context(K[:-1])
        return mu, tab

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
        return self._restart_plan(K, *self._context_tables(K))

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

    @functools.cached_property
    def _flag_model(self):
        """The restart flags' fixed constriction model (integer table, exact)."""
        w = coder.family_weights(np.array([[(1 << 16) - _RESTART_FREQ, _RESTART_FREQ]], np.int64), 16)[0]
        return constriction.stream.model.Categorical(w, perfect=False)

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
        if self.version == 1:
            enc = self._encode_v1(K, T)
        else:
            mu, tab, restart = self._coding_tables(K)
            enc = self._encode_v2(K, T, mu, tab)
            if restart is not None and T > 1:  # pushed last: the decoder reads every flag first
                enc.encode_reverse(restart[1:].astype(np.int32), self._flag_model)
        payload = enc.get_compressed().astype("<u4", copy=False).tobytes()
        return bitstream.pack(shape, self.digest, payload)

    def _encode_v1(self, K: np.ndarray, T: int):
        """Layout 1 (codec version 1): one full-width family row per symbol."""
        fam = self.family
        R, n = fam.radius, fam.n
        mu, tab = self.tables(K)
        r = K - mu
        esc = (r < -R) | (r > R)
        sym = np.where(esc, n - 1, r + R).astype(np.int32).reshape(T, -1)
        tab = tab.reshape(T, -1)
        has_esc = esc.reshape(T, -1).any(axis=1)
        w = fam.weights
        enc = constriction.stream.stack.AnsCoder()
        hi = T
        for t in np.nonzero(has_esc)[0][::-1].tolist():
            if t + 1 < hi:
                coder.push_indexed(enc, sym[t + 1 : hi].reshape(-1), tab[t + 1 : hi].reshape(-1), w)
            e = esc[t].reshape(-1)
            m = mu[t].reshape(-1)[e]
            coder.push_escapes(enc, K[t].reshape(-1)[e], m - R, m + R)
            hi = t + 1
        coder.push_indexed(enc, sym[:hi].reshape(-1), tab[:hi].reshape(-1), w)
        return enc

    def _encode_v2(self, K: np.ndarray, T: int, mu: np.ndarray, tab: np.ndarray):
        """Layout 2 (codec version 2; layout 3 after its flags): rows truncated by width class, given
        every frame's locations and tables ``mu``, ``tab`` (T, C, M).

        Every element has a *coding class*: in a frame of fewer than ``_SORT_MIN`` symbols, the
        widest class of the frame's tables (one call per stream and frame decodes it); in larger
        frames, its own table's class. It is coded with its table truncated to that class
        (:func:`~featcomp.entropy.indexed.truncated_tables`). Decode order, frame by frame: small
        frames in channel-major position order; large frames by coding class (ascending), then
        table index, then position (so a decoder may take each table's run with one fixed model);
        then the frame's escapes (:meth:`_push_escapes_v2`).
        """
        tt = truncated_tables(self.family, _TAIL_SHIFT)
        L = mu[0].size
        mu, tab, kf = mu.reshape(-1), tab.reshape(-1), K.reshape(-1)
        cls = tt.row_class[tab]
        if L < _SORT_MIN:
            cls = np.repeat(cls.reshape(T, L).max(axis=1), L)
        rc = tt.radii[cls]
        r = kf - mu
        esc = (r < -rc) | (r > rc)
        sym = np.where(esc, 2 * rc + 1, zigzag(r)).astype(np.int32)  # rows' columns are in zigzag order
        frame = np.repeat(np.arange(T, dtype=np.int64), L)
        if L >= _SORT_MIN:  # frame-major, then class, then table, then position
            order = np.lexsort((tab, cls, frame))
        else:  # frame-major, then position
            order = np.arange(kf.size)
        s_cls, s_frame = cls[order], frame[order]
        has_esc = esc.reshape(T, L).any(axis=1)
        # runs of one class that a single push can code: a class change or the end of a frame
        # whose escapes follow it ends a run
        cut = np.flatnonzero((s_cls[1:] != s_cls[:-1]) | ((s_frame[1:] != s_frame[:-1]) & has_esc[s_frame[:-1]])) + 1
        bounds = [0, *cut.tolist(), order.size]
        events: list[tuple[int, int, int]] = []  # (class, a, b) symbol runs; (-1, t, 0) escapes of frame t
        for a, b in zip(bounds[:-1], bounds[1:]):
            events.append((int(s_cls[a]), a, b))
            t = int(s_frame[b - 1])
            if has_esc[t] and (b == order.size or s_frame[b] != t):
                events.append((-1, t, 0))
        model = coder._family_model()
        enc = constriction.stream.stack.AnsCoder()
        for c, a, b in reversed(events):  # ANS is a stack: push in reverse decode order
            if c < 0:
                e = np.flatnonzero(esc[a * L : (a + 1) * L]) + a * L
                self._push_escapes_v2(enc, tt, kf[e], mu[e], tab[e], cls[e])
            else:
                idx = order[a:b]
                enc.encode_reverse(sym[idx], model, np.take(tt.weights[c], tab[idx], axis=0))
        return enc

    def _check_stream(self, data: bytes) -> tuple[tuple[int, ...], bytes]:
        """Header checks of one stream -> (shape, payload)."""
        h = bitstream.unpack(data, self.digest, self.channels, what="temporal codec")
        shape = h.shape
        self._check_shape(shape, "the stream's array")
        numel = math.prod(shape)
        if numel > _MAX_ELEMENTS:
            raise CodecError(f"corrupt stream header: shape {shape} is implausibly large")
        if numel and shape[0] > MAX_STREAM_FRAMES:
            raise CodecError(f"corrupt stream header: {shape[0]} frames, more than one temporal stream may hold "
                             f"({MAX_STREAM_FRAMES}); the stream is damaged")
        if numel == 0 and h.payload:
            raise CodecError("corrupt stream: an empty array with a non-empty payload")
        return shape, h.payload

    @functools.cached_property
    def _decode_consts(self) -> tuple:
        """Derived, exact decode-time constants, computed once per codec from its integers.

        Returns ``(fresh_mu (C,), fresh_rows (C, n), W (2C, 2C) float64, bias (2C, 1) int64,
        shift (2C, 1) int64, clip_mu, clip_s_low)``. ``W = [[w_loc, 0], [0, w_scale]]`` as float64:
        applied to ``[x; |x|]`` it gives both context accumulators in one BLAS call, and it is
        **exact**: every product ``|w * x| < 2**35`` and every partial sum ``< 2**51`` (``|w| < 2**20``,
        ``|x| <= 2**15``, ``C <= 2**16``) is an integer below ``2**53``, so float64 rounding never
        happens, in any summation order or with FMA. ``bias`` holds the biases plus the rounding
        halves, ``shift`` the per-row arithmetic shifts (``F - log2 Q`` for locations, ``F`` for
        scales). ``clip_mu``/``clip_s_low`` are False when this codec's weights provably keep the
        location inside ``[-2**30, 2**30]`` / the scale index >= 0, so those clamps are skipped
        (the result is identical).
        """
        C, Q = self.channels, self.family.Q
        qb = Q.bit_length() - 1
        F, clip = self.frac_bits, self.clip
        fresh_mu = (self.fresh_loc >> qb).astype(np.int64)
        fresh_tab = self.fresh_scale.astype(np.int64) * Q + (self.fresh_loc & (Q - 1))
        W = np.zeros((2 * C, 2 * C), np.float64)
        W[:C, :C] = self.w_loc
        W[C:, C:] = self.w_scale
        bias = np.concatenate([self.b_loc.astype(np.int64) + (1 << (F - qb - 1)),
                               self.b_scale.astype(np.int64) + (1 << (F - 1))])[:, None]
        shift = np.concatenate([np.full(C, F - qb), np.full(C, F)]).astype(np.int64)[:, None]
        wl = np.abs(self.w_loc.astype(np.int64)).sum(1) * clip + np.abs(self.b_loc) + (1 << F)
        clip_mu = bool(((wl >> (F - qb)) >> qb).max() >= MU_LIMIT)
        neg = np.minimum(self.w_scale.astype(np.int64), 0).sum(1) * clip + self.b_scale
        clip_s_low = bool(neg.min() < 0)
        return fresh_mu, self.family.weights[fresh_tab], W, bias, shift, clip_mu, clip_s_low

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

    def _push_escapes_v2(self, enc, tt, vals: np.ndarray, mu: np.ndarray, tab: np.ndarray, cls: np.ndarray) -> None:
        """Push one frame's escapes (values int64 (e,), position order; ``cls`` their coding classes):
        tail symbols by class then position, then the exact values beyond the family radius, with
        ranges ``mu -+ R`` (:func:`featcomp.entropy.indexed.push_class_escapes`)."""
        push_class_escapes(enc, tt, self.family.radius, vals, mu, tab, cls)

    def _pop_escapes_v2(self, decs: list, tt, resf: np.ndarray, idx: np.ndarray, tab_e: np.ndarray,
                        cls_e: np.ndarray, mu_e: np.ndarray, where: list) -> None:
        """Inverse of :meth:`_push_escapes_v2` for one frame step of ``n`` lockstep streams.

        ``resf`` int64 (n, L) residuals with escapes marked ``-(radius + 1)`` (below their coding
        class's radius); ``idx`` int64 (e,) the escapes' flat indices into ``resf`` (ascending),
        ``tab_e``/``cls_e``/``mu_e`` (e,) their table indices, coding classes and locations. The
        escaped residuals are written into ``resf``. Vectorized over streams: one tail-row gather
        per class, one constriction call per (stream, class) with escapes, then the exact values
        beyond R per stream. ``where[0]`` is set to the stream being decoded (for error messages).
        """
        R, L = self.family.radius, resf.shape[1]
        j_e = idx // L
        if cls_e.min() != cls_e.max():  # decode order per stream: class, then position
            o = np.lexsort((idx, cls_e, j_e))
            idx, tab_e, cls_e, j_e, mu_e = idx[o], tab_e[o], cls_e[o], j_e[o], mu_e[o]
        rr = tt.radii[cls_e]
        m = R - rr
        sym = 2 * m  # "beyond R" unless a tail symbol says otherwise
        cut = np.flatnonzero((j_e[1:] != j_e[:-1]) | (cls_e[1:] != cls_e[:-1])) + 1
        model = coder._family_model()
        for a, b in zip([0, *cut.tolist()], [*cut.tolist(), idx.size]):
            c = int(cls_e[a])
            if tt.tails[c] is None:  # class radius R: straight to the exact values
                continue
            where[0] = int(j_e[a])
            sym[a:b] = decs[where[0]].decode(model, np.take(tt.tail_weights[c], tab_e[a:b], axis=0))
        got = np.where(sym < m, sym - R, sym - m + rr + 1)
        far = sym == 2 * m
        if far.any():
            for j in np.unique(j_e[far]).tolist():
                sel = np.flatnonzero(far & (j_e == j))
                sel = sel[np.argsort(idx[sel], kind="stable")]  # position order
                fm = mu_e[sel]
                where[0] = j
                got[sel] = coder.pop_escapes(decs[j], fm - R, fm + R) - fm
        resf.reshape(-1)[idx] = got

    def _decode_group_v1(self, M: int, Ts: list[int], payloads: list[bytes], name: bool, ids: list[int]) -> list[np.ndarray]:
        """Layout 1: lockstep decode of streams with M positions per channel; ``Ts`` sorted descending."""
        C, fam = self.channels, self.family
        R, esc_sym, w, Q = fam.radius, fam.n - 1, fam.weights, fam.Q
        qb, smax = Q.bit_length() - 1, fam.levels - 1
        N, L, clip = len(Ts), C * M, self.clip
        fresh_mu, fresh_rows, W, bias, shift, clip_mu, clip_s_low = self._decode_consts
        Wl, Ws = W[:C, :C], W[C:, C:]
        model = coder._family_model()
        outs = [np.empty((T, C, M), np.int64) for T in Ts]
        decs = []
        for j, payload in enumerate(payloads):
            words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
            decs.append(constriction.stream.stack.AnsCoder(words) if words.size else constriction.stream.stack.AnsCoder())

        def fail(j: int, what: str, e: Exception) -> CodecError:
            where = f"stream #{ids[j]}: " if name else ""
            return CodecError(f"{where}corrupt stream or wrong codec: {what} ({e})")

        # state, preallocated once: locations (N, C, M), decoded frame, [x; |x|] as float64
        mu = np.repeat(np.repeat(fresh_mu[None, :, None], N, 0), M, 2)
        rows = np.tile(np.repeat(fresh_rows, M, axis=0), (N, 1))  # (N*L, n) fresh tables
        kt = np.empty((N, C, M), np.int64)
        xf = np.empty((N, 2 * C, M), np.float64)
        n_act = N
        for t in range(Ts[0]):
            if Ts[n_act - 1] <= t:  # some streams ended: keep the active prefix (rare)
                while Ts[n_act - 1] <= t:
                    n_act -= 1
                mu, kt, xf, rows = mu[:n_act], kt[:n_act], xf[:n_act], rows[: n_act * L]
            for j in range(n_act):
                try:
                    kt[j].reshape(-1)[:] = decs[j].decode(model, rows[j * L : (j + 1) * L])
                except Exception as e:  # constriction raises on garbage
                    raise fail(j, "the ANS decoder failed", e) from None
            if kt.max() == esc_sym:  # kt holds symbols here; escapes are rare
                for j in range(n_act):
                    e = kt[j] == esc_sym
                    if e.any():
                        m = mu[j][e]
                        try:
                            kt[j][e] = coder.pop_escapes(decs[j], m - R, m + R) - m + R
                        except Exception as ex:
                            raise fail(j, "escape decoding failed", ex) from None
            kt += mu
            kt -= R
            for j in range(n_act):
                outs[j][t] = kt[j]
            if t + 1 == Ts[0]:
                break
            # integer context of frame t+1 from frame t (the operations of integer_context)
            x = xf[:, :C]
            np.maximum(kt, -clip, out=kt)
            np.minimum(kt, clip, out=kt)
            x[...] = kt
            np.abs(x, out=xf[:, C:])
            if M == 1:  # one BLAS call for both accumulators
                acc = np.matmul(W, xf).astype(np.int64)  # exact, see _decode_consts
            else:  # the two diagonal blocks (half the flops of the block matrix)
                acc = np.concatenate([np.matmul(Wl, xf[:, :C]), np.matmul(Ws, xf[:, C:])], axis=1).astype(np.int64)
            acc += bias
            acc >>= shift
            _, tab = _locations_and_tables(acc[:, :C], acc[:, C:], qb, smax, clip_mu, clip_s_low, mu_out=mu)
            rows = w[tab.reshape(-1)]
        for j, dec in enumerate(decs):
            if not dec.is_empty():
                raise fail(j, "data left over after decoding every symbol", ValueError("trailing words"))
        res = []
        for o in outs:
            if o.size and (o.min() < _I32.min or o.max() > _I32.max):
                raise CodecError("corrupt stream: a decoded value lies outside int32")
            res.append(o.astype(np.int32))
        return res

    @functools.cached_property
    def _v2_consts(self) -> tuple:
        """Derived, exact constants of the layout-2 decoder (from the integers only).

        ``WL = [w_loc | b_loc + half]`` and ``WS = [b_scale + half | w_scale]`` (C, C + 1) in float32
        and float64, applied to the stacked columns ``[x; 1; |x|]``: one product gives each
        accumulator with its bias. Every product and partial sum is an integer; float64 holds them
        exactly always (``< 2**52``, see :attr:`_decode_consts`), float32 whenever
        ``max|x| * A + B < 2**24`` with ``A`` the largest row sum of ``|w|`` and ``B`` the largest
        ``|bias|``, which the decoder checks per frame step (``x_limit32``) before using it. The
        result is the same integers either way.
        """
        C, Q = self.channels, self.family.Q
        qb, F = Q.bit_length() - 1, self.frac_bits
        bl = self.b_loc.astype(np.int64) + (1 << (F - qb - 1))
        bs = self.b_scale.astype(np.int64) + (1 << (F - 1))
        WL = np.concatenate([self.w_loc.astype(np.float64), bl[:, None].astype(np.float64)], axis=1)
        WS = np.concatenate([bs[:, None].astype(np.float64), self.w_scale.astype(np.float64)], axis=1)
        a = max(int(np.abs(self.w_loc.astype(np.int64)).sum(1).max()), int(np.abs(self.w_scale.astype(np.int64)).sum(1).max()), 1)
        b = max(int(np.abs(bl).max()), int(np.abs(bs).max()))
        x_limit32 = ((1 << 24) - 1 - b) // a  # float32 is exact while max|x| <= this (may be < 0: never)
        shift = np.concatenate([np.full(C, F - qb), np.full(C, F)]).astype(np.int64)[:, None]
        tt = truncated_tables(self.family, _TAIL_SHIFT)
        rrow = tt.radii[tt.row_class]  # each row's class radius
        SQ = rrow.size
        row_rank = np.empty(SQ, np.int16 if SQ < (1 << 15) else np.int64)  # rank in (class, table) order
        row_rank[np.lexsort((np.arange(SQ), tt.row_class))] = np.arange(SQ)
        fresh_mu = (self.fresh_loc >> qb).astype(np.int64)
        fresh_tab = self.fresh_scale.astype(np.int64) * Q + (self.fresh_loc & (Q - 1))
        return (WL.astype(np.float32), WS.astype(np.float32), WL, WS, x_limit32, shift, tt, rrow, row_rank,
                unzigzag_table(self.family.radius), fresh_mu, fresh_tab)

    def _decode_group_v2(self, M: int, Ts: list[int], payloads: list[bytes], name: bool, ids: list[int]) -> list[np.ndarray]:
        """Layouts 2 and 3 (see :meth:`_encode_v2`): lockstep decode of N streams with M positions per
        channel; ``Ts`` sorted descending. Layout 3 first reads each stream's restart flags.

        Per frame step: the context of every active stream in one pair of matrix products (columns
        = stream x position), then per stream the frame's symbols: frames of fewer than
        ``_SORT_MIN`` symbols one gather of truncated float32 rows (all streams at one width) and
        one constriction call per stream at its frame's widest class; larger frames are sorted by
        (class, table) and decoded run by run with fixed per-table models (long runs) or per-symbol
        rows; then the step's escapes for all streams together (:meth:`_pop_escapes_v2`).
        """
        C = self.channels
        L = C * M
        tt, rrow, row_rank, unzz, fresh_mu, fresh_tab = self._v2_consts[6:]
        radii, row_class, Wc = tt.radii, tt.row_class, tt.weights
        lut = self._context_lut
        sort = L >= _SORT_MIN
        models = tt.models() if sort else None
        model = coder._family_model()
        decs = []
        for payload in payloads:
            words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
            decs.append(constriction.stream.stack.AnsCoder(words) if words.size else constriction.stream.stack.AnsCoder())
        j = 0

        def fail(j: int, what: str, e: Exception) -> CodecError:
            where = f"stream #{ids[j]}: " if name else ""
            return CodecError(f"{where}corrupt stream or wrong codec: {what} ({e})")

        N = len(Ts)
        restart = None
        if self.version >= 3:  # layout 3: every stream's restart flags come first
            restart = np.zeros((N, Ts[0] + 1), bool)
            for j, T in enumerate(Ts):
                if T > 1:
                    try:
                        restart[j, 1:T] = decs[j].decode(self._flag_model, T - 1) != 0
                    except Exception as e:  # constriction raises on garbage
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
            resf = res.reshape(n_act, L)
            try:
                esc_args = None
                if sort:
                    esc_parts = []
                    for j in range(n_act):
                        tj = tab[j].reshape(-1)
                        order = np.argsort(row_rank[tj], kind="stable")
                        st = tj[order]
                        cuts = np.flatnonzero(st[1:] != st[:-1]) + 1
                        dec = decs[j]
                        if L >= _RUN_MIN * (cuts.size + 1):  # long runs: one fixed model per table
                            b = [0, *cuts.tolist(), L]
                            heads = st[b[:-1]].tolist()
                            parts = [dec.decode(models[h], e - a) for h, a, e in zip(heads, b[:-1], b[1:])]
                        else:  # short runs: per-symbol rows, one call per class
                            sc = row_class[st]
                            b = [0, *(np.flatnonzero(sc[1:] != sc[:-1]) + 1).tolist(), L]
                            parts = [dec.decode(model, np.take(Wc[int(sc[a])], st[a:e], axis=0)) for a, e in zip(b[:-1], b[1:])]
                        sym = np.take(unzz, parts[0] if len(parts) == 1 else np.concatenate(parts))
                        r0, r1 = int(rrow[st[0]]), int(rrow[st[-1]])  # classes ascend along the order
                        if r0 == r1:
                            hit = int(sym.min()) < -r0
                        else:
                            rs = rrow[st]
                            hit = bool((sym < -rs).any())
                        resf[j][order] = sym
                        if hit:  # escapes: their positions, in position order
                            pos = np.sort(order[np.flatnonzero(sym < -(r0 if r0 == r1 else rs))])
                            esc_parts.append((j * L + pos, tj[pos], mu[j].reshape(-1)[pos]))
                    if esc_parts:
                        idx = np.concatenate([e[0] for e in esc_parts])
                        tab_e = np.concatenate([e[1] for e in esc_parts])
                        esc_args = (idx, tab_e, row_class[tab_e], np.concatenate([e[2] for e in esc_parts]))
                else:  # small frames: one call per stream at the frame's widest class
                    if n_act == 1:  # one stream: one reduction
                        c_lo = c_hi = int(_amax(row_class.take(tab), None))
                        cw = None  # made only for escapes
                    else:
                        cw = np.take(row_class, tab).reshape(n_act, L).max(axis=1)
                        c_lo, c_hi = int(cw.min()), int(cw.max())
                    if c_lo == c_hi:  # every stream at the same width (common): one gather
                        r = int(radii[c_lo])
                        rows = Wc[c_lo].take(tab, axis=0).reshape(n_act, L, -1)  # take: ~3x faster than indexing
                        if n_act == 1:
                            j = 0
                            unzz.take(decs[0].decode(model, rows[0]), out=resf[0])
                        else:
                            parts = []
                            for j in range(n_act):  # a plain loop: j names the stream if constriction fails
                                parts.append(decs[j].decode(model, rows[j]))
                            np.take(unzz, np.concatenate(parts), out=resf.reshape(-1))
                        esc = int(_amin(resf, None)) < -r
                    else:
                        tabf = tab.reshape(n_act, L)
                        for c in np.unique(cw).tolist():
                            js = np.flatnonzero(cw == c).tolist()
                            rows = np.take(Wc[c], tabf[js], axis=0)
                            r = int(radii[c])
                            for i, j in enumerate(js):
                                resf[j] = np.take(unzz, decs[j].decode(model, rows[i]))
                        esc = bool((resf < -radii[cw][:, None]).any())
                    if esc:
                        if cw is None:
                            cw = np.full(1, c_lo)
                        idx = np.flatnonzero(resf < -(r if c_lo == c_hi else radii[cw][:, None]))
                        j_e = idx // L
                        esc_args = (idx, tab.reshape(-1)[idx], cw[j_e], mu.reshape(-1)[idx])
                if esc_args is not None:  # escapes (decoded as -(class radius + 1)); rare on calibrated data
                    where = [0]
                    try:
                        self._pop_escapes_v2(decs, tt, resf, *esc_args, where)
                    except Exception as e:
                        raise fail(where[0], "escape decoding failed", e) from None
            except CodecError:
                raise
            except Exception as e:  # constriction raises on garbage
                raise fail(j, "the ANS decoder failed", e) from None
            res += mu
            if t + 1 == Ts[0]:
                break
            if lut is not None and -lut[0] <= _amin(res, None) and _amax(res, None) <= lut[0]:
                fi = res + lut[1]  # diagonal context: two lookups (_context_lut; same integers)
                mu, tab = lut[2].take(fi), lut[3].take(fi)
            else:
                mu, tab = self._step_context(res, X32, acc, n_act, M)
            if t + 1 in rsteps:  # flagged frames: the fresh context instead
                for j in np.flatnonzero(restart[:n_act, t + 1]).tolist():
                    mu[j] = fresh_mu[:, None]
                    tab[j] = fresh_tab[:, None]
        for j, dec in enumerate(decs):
            if not dec.is_empty():
                raise fail(j, "data left over after decoding every symbol", ValueError("trailing words"))
        outs = []
        for j, T in enumerate(Ts):
            o = out[:T, j]
            if o.size and (o.min() < _I32.min or o.max() > _I32.max):
                raise CodecError("corrupt stream: a decoded value lies outside int32")
            outs.append(o.astype(np.int32))
        return outs

    def _step_context(self, res: np.ndarray, X32: np.ndarray, acc: np.ndarray, n_act: int,
                      M: int) -> tuple[np.ndarray, np.ndarray]:
        """Layout-2/3 decoder: locations and table indices (n_act, C, M) of the next frame from ``res``.

        The operations of :func:`integer_context`, columns (stream, position); float32 products when
        provably exact, else float64 (same integers). ``X32`` (2C + 1, n_act * M) and ``acc``
        (2C, n_act * M) are the caller's scratch buffers (``X32[C]`` holds ones).
        """
        C, clip = self.channels, self.clip
        WL32, WS32, WL64, WS64, x_limit32, shift = self._v2_consts[:6]
        clip_mu, clip_s_low = self._decode_consts[5:7]
        qb, smax = self.family.Q.bit_length() - 1, self.family.levels - 1
        X32[:C].reshape(C, n_act, M)[...] = res.transpose(1, 0, 2)  # rounds only beyond 2**24 > clip
        xa = X32[C + 1 :]
        np.abs(X32[:C], out=xa)
        xmax = float(xa.max())
        if xmax > clip:  # rare: clamp (float32 rounding is monotone, so beyond-clip stays beyond)
            np.minimum(X32[:C], clip, out=X32[:C])
            np.maximum(X32[:C], -clip, out=X32[:C])
            np.abs(X32[:C], out=xa)
            xmax = clip
        if xmax <= x_limit32:
            np.matmul(WL32, X32[: C + 1], out=acc[:C])
            np.matmul(WS32, X32[C:], out=acc[C:])
            ai = acc.astype(np.int64)
        else:
            X64 = X32.astype(np.float64)
            ai = np.concatenate([WL64 @ X64[: C + 1], WS64 @ X64[C:]]).astype(np.int64)
        ai >>= shift
        mu_c, tab_c = _locations_and_tables(ai[:C], ai[C:], qb, smax, clip_mu, clip_s_low)
        return mu_c.reshape(C, n_act, M).transpose(1, 0, 2), tab_c.reshape(C, n_act, M).transpose(1, 0, 2)

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
            bits += coder.escape_bits(K[esc], m - R, m + R)
        return bits

    def _estimate_bits_v2(self, K: np.ndarray, mu: np.ndarray, tab: np.ndarray, r: np.ndarray, *,
                          per_frame: bool = False) -> float | np.ndarray:
        """Layout 2's ideal cost: truncated rows, tail symbols, exact escapes beyond R (per frame: (T,))."""
        tt = truncated_tables(self.family, _TAIL_SHIFT)
        cls = tt.row_class[tab]
        T, L = tab.shape[0], tab[0].size
        if L < _SORT_MIN:  # coding class: the frame's widest
            cls = np.broadcast_to(cls.reshape(T, L).max(axis=1).reshape((T,) + (1,) * (tab.ndim - 1)), tab.shape)
        return class_bits(tt, self.family, r, tab, cls, per_frame=per_frame)

    def compress_chunks(self, k: Any, chunk_frames: int) -> list[bytes]:
        """Split ``k`` (T, C, *) into chunks of ``chunk_frames`` frames, each an independent stream."""
        k = _to_numpy(k)
        return [self.compress_symbols(k[i : i + chunk_frames]) for i in range(0, k.shape[0], chunk_frames)]

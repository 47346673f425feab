"""The temporal codec's integer context: frame t's locations and table indices from frame t-1 (numpy only).

What :class:`~featcomp.entropy.temporal.TemporalCodec` predicts, and nothing of how it is coded (the
stream layouts are :mod:`featcomp.entropy.layouts`). With ``x = clip(k_{t-1}, -clip, clip)`` (int64, per
spatial position, channels on axis 0)::

    acc_loc   = w_loc @ x + b_loc                  # int64, weights in 2**-F fixed point
    mq        = (acc_loc + 2**(F-qb-1)) >> (F-qb)  # location in units of 1/Q (Q = 2**qb), rounded
    mu        = clip(mq >> qb, -2**30, 2**30)      # integer part;  q = mq & (Q - 1) its fraction
    acc_scale = w_scale @ |x| + b_scale
    s         = clip((acc_scale + 2**(F-1)) >> F, 0, S - 1)   # scale index on the family's log grid
    table     = s * Q + q;   residual r = k_t - mu,   coded with family table ``table``

Only integer multiply, add, arithmetic right shift and clamp are used; ``|w| < 2**20``,
``|x| <= 2**15`` and ``C <= 2**16`` bound every accumulator below ``2**52``, so int64 never overflows
and numpy, torch CPU and torch CUDA (:func:`integer_context` accepts either) give identical indices.
The first frame of a chunk (and, in layout 3, a flagged frame) uses the *fresh* context
``fresh_loc``/``fresh_scale`` instead.

:class:`TemporalContext` evaluates this for one codec: for the encoder over every frame of a chunk at
once (:meth:`~TemporalContext.frames`), for the decoders one frame step at a time, through exact float
products (:meth:`~TemporalContext.step`, :meth:`~TemporalContext.step_v1`) or, for a diagonal context,
lookup tables built once (:meth:`~TemporalContext.lut`). Every path gives the same integers
(``tests/entropy/test_temporal_lut.py``, ``test_temporal.py``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from featcomp.entropy._frozen import readonly as _readonly

__all__ = ["MU_LIMIT", "WEIGHT_LIMIT", "TemporalContext", "integer_context", "locations_and_tables"]

MU_LIMIT = 1 << 30
WEIGHT_LIMIT = 1 << 20


def locations_and_tables(
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


class TemporalContext:
    """The integer context of one temporal codec, with its derived, exact constants (built lazily, once).

    Args:
        w_loc, w_scale: int32 (C, C); b_loc, b_scale: int64 (C,); fresh_loc: int64 (C,) in units of
        ``1/Q``; fresh_scale: int32 (C,); frac_bits: F; clip: the input clamp; Q, levels: the table
        family's fractional steps and scale count (tables are ``s * Q + q``).
    """

    def __init__(self, w_loc: np.ndarray, b_loc: np.ndarray, w_scale: np.ndarray, b_scale: np.ndarray,
                 fresh_loc: np.ndarray, fresh_scale: np.ndarray, *, frac_bits: int, clip: int, Q: int,
                 levels: int) -> None:
        self.w_loc, self.b_loc, self.w_scale, self.b_scale = w_loc, b_loc, w_scale, b_scale
        self.fresh_loc, self.fresh_scale = fresh_loc, fresh_scale
        self.frac_bits, self.clip, self.Q, self.levels = int(frac_bits), int(clip), int(Q), int(levels)
        self.channels = int(w_loc.shape[0])
        self.qb = self.Q.bit_length() - 1
        self.fresh_mu = _readonly(self.fresh_loc >> self.qb, np.int64)
        self.fresh_tab = _readonly(self.fresh_scale.astype(np.int64) * self.Q + (self.fresh_loc & (self.Q - 1)), np.int64)

    # ------------------------------------------------------------------ the encoder's view
    def context(self, k_prev: Any) -> tuple[Any, Any]:
        """:func:`integer_context` with these parameters; k_prev (..., C, M) numpy or torch."""
        return integer_context(k_prev, self.w_loc, self.b_loc, self.w_scale, self.b_scale, frac_bits=self.frac_bits,
                               Q=self.Q, levels=self.levels, clip=self.clip)

    def fresh(self, M: int) -> tuple[np.ndarray, np.ndarray]:
        """int64 (C, M) each: the fresh context's locations and tables at M positions."""
        return np.repeat(self.fresh_mu[:, None], M, axis=1), np.repeat(self.fresh_tab[:, None], M, axis=1)

    def frames(self, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame 0 from the fresh context, every later frame from its predecessor: int64 (T, C, M) each,
        for latents ``K`` int64 (T, C, M)."""
        T, _, M = K.shape
        mu = np.empty((T, self.channels, M), np.int64)
        tab = np.empty_like(mu)
        if T:
            mu[0], tab[0] = self.fresh(M)
        if T > 1:
            mu[1:], tab[1:] = self.context(K[:-1])
        return mu, tab

    @functools.cached_property
    def _np_params(self) -> tuple:
        """int64 copies of the context parameters for the numpy hot path (derived, exact)."""
        qb, F = self.qb, self.frac_bits
        return (self.w_loc.astype(np.int64), self.b_loc.astype(np.int64)[:, None] + (1 << (F - qb - 1)),
                self.w_scale.astype(np.int64), self.b_scale.astype(np.int64)[:, None] + (1 << (F - 1)),
                F - qb, qb, self.levels - 1)

    def context_np(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The numpy path of :func:`integer_context` for x (C, M) (same integer operations)."""
        wl, bl, ws, bs, sh, qb, smax = self._np_params
        x = np.minimum(np.maximum(x, -self.clip), self.clip)
        return locations_and_tables((wl @ x + bl) >> sh, (ws @ np.abs(x) + bs) >> self.frac_bits, qb, smax,
                                    clip_mu=True, clip_s_low=True)

    # ------------------------------------------------------------------ the decoders' views
    @functools.cached_property
    def clamps(self) -> tuple[bool, bool]:
        """``(clip_mu, clip_s_low)``: False when these weights provably keep the location inside
        ``[-2**30, 2**30]`` / the scale index >= 0, so the decoders skip those clamps (same result)."""
        F, qb, clip = self.frac_bits, self.qb, self.clip
        wl = np.abs(self.w_loc.astype(np.int64)).sum(1) * clip + np.abs(self.b_loc) + (1 << F)
        clip_mu = bool(((wl >> (F - qb)) >> qb).max() >= MU_LIMIT)
        neg = np.minimum(self.w_scale.astype(np.int64), 0).sum(1) * clip + self.b_scale
        return clip_mu, bool(neg.min() < 0)

    @functools.cached_property
    def _v1_consts(self) -> tuple:
        """``(W (2C, 2C) float64, bias (2C, 1) int64, shift (2C, 1) int64)`` of :meth:`step_v1`.

        ``W = [[w_loc, 0], [0, w_scale]]`` as float64: applied to ``[x; |x|]`` it gives both context
        accumulators in one BLAS call, and it is **exact**: every product ``|w * x| < 2**35`` and every
        partial sum ``< 2**51`` (``|w| < 2**20``, ``|x| <= 2**15``, ``C <= 2**16``) is an integer below
        ``2**53``, so float64 rounding never happens, in any summation order or with FMA. ``bias`` holds
        the biases plus the rounding halves, ``shift`` the per-row arithmetic shifts (``F - log2 Q`` for
        locations, ``F`` for scales).
        """
        C, qb, F = self.channels, self.qb, self.frac_bits
        W = np.zeros((2 * C, 2 * C), np.float64)
        W[:C, :C] = self.w_loc
        W[C:, C:] = self.w_scale
        bias = np.concatenate([self.b_loc.astype(np.int64) + (1 << (F - qb - 1)),
                               self.b_scale.astype(np.int64) + (1 << (F - 1))])[:, None]
        shift = np.concatenate([np.full(C, F - qb), np.full(C, F)]).astype(np.int64)[:, None]
        return W, bias, shift

    def step_v1(self, kt: np.ndarray, xf: np.ndarray, mu_out: np.ndarray) -> np.ndarray:
        """Layout-1 decoder: table indices (n, C, M) of the next frame from decoded values ``kt`` int64
        (n, C, M) (**clamped in place**), its locations written into ``mu_out``; ``xf`` (n, 2C, M) float64
        is the caller's scratch buffer."""
        C, clip = self.channels, self.clip
        W, bias, shift = self._v1_consts
        clip_mu, clip_s_low = self.clamps
        x = xf[:, :C]
        np.maximum(kt, -clip, out=kt)
        np.minimum(kt, clip, out=kt)
        x[...] = kt
        np.abs(x, out=xf[:, C:])
        if kt.shape[2] == 1:  # one BLAS call for both accumulators
            acc = np.matmul(W, xf).astype(np.int64)  # exact, see _v1_consts
        else:  # the two diagonal blocks (half the flops of the block matrix)
            acc = np.concatenate([np.matmul(W[:C, :C], xf[:, :C]), np.matmul(W[C:, C:], xf[:, C:])],
                                 axis=1).astype(np.int64)
        acc += bias
        acc >>= shift
        _, tab = locations_and_tables(acc[:, :C], acc[:, C:], self.qb, self.levels - 1, clip_mu, clip_s_low,
                                      mu_out=mu_out)
        return tab

    @functools.cached_property
    def _products(self) -> tuple:
        """``(WL32, WS32, WL64, WS64, x_limit32, shift)`` of :meth:`step` (from the integers only).

        ``WL = [w_loc | b_loc + half]`` and ``WS = [b_scale + half | w_scale]`` (C, C + 1) in float32
        and float64, applied to the stacked columns ``[x; 1; |x|]``: one product gives each
        accumulator with its bias. Every product and partial sum is an integer; float64 holds them
        exactly always (``< 2**52``, see :attr:`_v1_consts`), float32 whenever
        ``max|x| * A + B < 2**24`` with ``A`` the largest row sum of ``|w|`` and ``B`` the largest
        ``|bias|``, which the decoder checks per frame step (``x_limit32``) before using it. The
        result is the same integers either way.
        """
        C, qb, F = self.channels, self.qb, self.frac_bits
        bl = self.b_loc.astype(np.int64) + (1 << (F - qb - 1))
        bs = self.b_scale.astype(np.int64) + (1 << (F - 1))
        WL = np.concatenate([self.w_loc.astype(np.float64), bl[:, None].astype(np.float64)], axis=1)
        WS = np.concatenate([bs[:, None].astype(np.float64), self.w_scale.astype(np.float64)], axis=1)
        a = max(int(np.abs(self.w_loc.astype(np.int64)).sum(1).max()), int(np.abs(self.w_scale.astype(np.int64)).sum(1).max()), 1)
        b = max(int(np.abs(bl).max()), int(np.abs(bs).max()))
        x_limit32 = ((1 << 24) - 1 - b) // a  # float32 is exact while max|x| <= this (may be < 0: never)
        shift = np.concatenate([np.full(C, F - qb), np.full(C, F)]).astype(np.int64)[:, None]
        return WL.astype(np.float32), WS.astype(np.float32), WL, WS, x_limit32, shift

    @property
    def x_limit32(self) -> int:
        """The largest ``max|x|`` for which :meth:`step` takes float32 products (exact below it)."""
        return self._products[4]

    def step(self, res: np.ndarray, X32: np.ndarray, acc: np.ndarray, n_act: int,
             M: int) -> tuple[np.ndarray, np.ndarray]:
        """Layout-2/3 decoder: locations and table indices (n_act, C, M) of the next frame from ``res``.

        The operations of :func:`integer_context`, columns (stream, position); float32 products when
        provably exact, else float64 (same integers). ``X32`` (2C + 1, n_act * M) and ``acc``
        (2C, n_act * M) are the caller's scratch buffers (``X32[C]`` holds ones).
        """
        C, clip = self.channels, self.clip
        WL32, WS32, WL64, WS64, x_limit32, shift = self._products
        clip_mu, clip_s_low = self.clamps
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
        mu_c, tab_c = locations_and_tables(ai[:C], ai[C:], self.qb, self.levels - 1, clip_mu, clip_s_low)
        return mu_c.reshape(C, n_act, M).transpose(1, 0, 2), tab_c.reshape(C, n_act, M).transpose(1, 0, 2)

    def lut(self, entries: int) -> tuple | None:
        """Decode-speed lookup tables of a **diagonal** context (None for any other).

        When both weight matrices are diagonal (``context="diagonal"``, the default of
        :class:`~featcomp.entropy.temporal_prior.TemporalPrior`), channel c's location and table
        index depend only on its own previous value ``x``. For ``|x| <= R`` they are tabulated once
        per codec with the exact integer operations of :func:`integer_context` (diagonal product,
        bias, shifts, clamps), and the decoder looks them up: two gathers per frame step instead of
        the context products, shifts and clamps. A step with any ``|x| > R`` takes the product path;
        the integers are identical either way (``tests/entropy/test_temporal_lut.py``).

        Returns ``(R, coff (C, 1) int64, mu_lut (C * (2R + 1),) int64, tab_lut (same) int64)`` where
        entry ``c * (2R + 1) + R + x`` holds channel c's location and table index after value x.
        ``R = min(clip, max(16, entries // C))`` keeps the tables at ~2 MiB for ``entries = 2**17``
        (``clip`` when that is less).
        """
        C = self.channels
        wl, bl, ws, bs, sh, qb, smax = self._np_params
        dl, ds = np.diagonal(wl), np.diagonal(ws)
        if np.count_nonzero(wl) != np.count_nonzero(dl) or np.count_nonzero(ws) != np.count_nonzero(ds):
            return None
        R = min(self.clip, max(16, entries // C))
        x = np.arange(-R, R + 1, dtype=np.int64)[None, :]  # |x| <= R <= clip: the input clamp never binds
        mu, tab = locations_and_tables((dl[:, None] * x + bl) >> sh, (ds[:, None] * np.abs(x) + bs) >> self.frac_bits,
                                       qb, smax, clip_mu=True, clip_s_low=True)
        coff = (np.arange(C, dtype=np.int64) * (2 * R + 1) + R)[:, None]
        return R, coff, _readonly(mu.reshape(-1), np.int64), _readonly(tab.reshape(-1), np.int64)


"""The decoder's lookup tables for a diagonal temporal context (decode speed only, same integers).

A diagonal context (each channel's location and scale from its own previous value, the default of
``TemporalPrior``) is tabulated once per codec for previous values in ``[-R, R]``; decoding steps whose
values all lie there look the context up instead of evaluating it. Checks: the tables hold exactly
the reference context (:func:`integer_context`, numpy and torch), dense codecs have none, and
decoding with them returns the coded latents on every path (small and sorted frames, lockstep,
restarts, escapes, and steps beyond ``R`` that fall back to the products), the same as without them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcomp.entropy import temporal
from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.entropy.temporal import TemporalCodec, integer_context

from .test_temporal import latents, with_cuts


def diagonal_codec(C: int = 6, *, clip: int = 1 << 15, seed: int = 0, Q: int = 4, F: int = 12) -> TemporalCodec:
    """Per-channel AR weights (some negative), scales growing with |x|, a fresh context near zero."""
    rng = np.random.default_rng(seed)
    fam = TableFamily.build(scale_grid(0.1, 40.0, 40), Q=Q, radius=40)
    w_loc = np.diag(np.round(rng.uniform(0.5, 0.95, C) * 2**F)).astype(np.int32)
    w_loc[0, 0] = -round(0.3 * 2**F)  # a negative weight too
    w_scale = np.diag(rng.integers(0, 2**F // 8, C)).astype(np.int32)
    return TemporalCodec(np.zeros(C, np.float32), fam, w_loc, rng.integers(-(2**F), 2**F, C) * Q, w_scale,
                         rng.integers(18 << F, 24 << F, C), rng.integers(-8, 8, C) * Q, np.full(C, 24, np.int32),
                         frac_bits=F, clip=clip)


def without_lut(c: TemporalCodec) -> TemporalCodec:
    """The same codec (same digest) with the lookup tables switched off: the product path every step."""
    twin = TemporalCodec(c.offsets, c.family, c.w_loc, c.b_loc, c.w_scale, c.b_scale, c.fresh_loc, c.fresh_scale,
                         frac_bits=c.frac_bits, clip=c.clip, version=c.version)
    twin.__dict__["_context_lut"] = None
    assert twin.digest == c.digest
    return twin


@pytest.mark.parametrize("clip,Q,F", [(1 << 15, 4, 12), (9, 2, 8), (300, 8, 20)])
def test_tables_hold_the_reference_context_exactly(clip, Q, F):
    c = diagonal_codec(7, clip=clip, seed=clip, Q=Q, F=F)
    R, coff, mu_lut, tab_lut = c._context_lut
    assert R == min(clip, temporal._LUT_ENTRIES // 7)
    x = np.broadcast_to(np.arange(-R, R + 1), (7, 2 * R + 1))  # column j: every channel at value j - R
    mu, tab = c.context(np.ascontiguousarray(x))
    idx = coff + x
    np.testing.assert_array_equal(mu_lut[idx], mu)
    np.testing.assert_array_equal(tab_lut[idx], tab)
    mu_t, tab_t = c.context(torch.from_numpy(np.ascontiguousarray(x)))  # the torch path agrees too
    np.testing.assert_array_equal(mu_t.numpy(), mu)
    np.testing.assert_array_equal(tab_t.numpy(), tab)
    assert tab.max() >= c.family.Q and len(np.unique(tab)) >= 8  # the tables are not degenerate


def test_dense_contexts_have_no_tables():
    c = diagonal_codec(5)
    w = c.w_loc.copy()
    w[1, 3] = 1
    dense = TemporalCodec(c.offsets, c.family, w, c.b_loc, c.w_scale, c.b_scale, c.fresh_loc, c.fresh_scale,
                          frac_bits=c.frac_bits)
    assert dense._context_lut is None
    ws = c.w_scale.copy()
    ws[4, 0] = -2
    assert TemporalCodec(c.offsets, c.family, c.w_loc, c.b_loc, ws, c.b_scale, c.fresh_loc, c.fresh_scale,
                         frac_bits=c.frac_bits)._context_lut is None
    assert c._context_lut is not None


@pytest.mark.parametrize("trailing", [(), (3,), (8, 8)])
@pytest.mark.parametrize("small_tables", [False, True])
def test_decoding_with_the_tables_returns_the_coded_latents(trailing, small_tables, monkeypatch):
    if small_tables:  # R = 16 < clip: frames beyond R take the product path, mixed with looked-up steps
        monkeypatch.setattr(temporal, "_LUT_ENTRIES", 16)
    rng = np.random.default_rng(3)
    c = diagonal_codec(6, clip=200)
    R = c._context_lut[0]
    assert R == (16 if small_tables else 200)
    ks = [with_cuts(rng, T, 6, trailing, cuts) for T, cuts in ((14, (5, 10)), (9, (3,)), (1, ()), (6, ()))]
    ks[0][7].reshape(-1)[1] = 2**31 - 1  # an escape (and a value far beyond R and the clip)
    ks[1][4].reshape(-1)[0] = -(2**31)
    ks[3][2] += 500  # a whole frame beyond the clip
    assert any(np.abs(k).max() > R for k in ks) and any((np.abs(k).max(axis=tuple(range(1, k.ndim))) <= R).sum() > 2
                                                       for k in ks)
    twin = without_lut(c)
    streams = [c.compress_symbols(k) for k in ks]
    assert sum(int(c.restarts(k).sum()) for k in ks) >= 2
    for k, s in zip(ks, streams):
        np.testing.assert_array_equal(c.decompress_symbols(s), k)
        np.testing.assert_array_equal(twin.decompress_symbols(s), k)
    for k, a, b in zip(ks, c.decompress_chunks(streams), twin.decompress_chunks(streams)):
        np.testing.assert_array_equal(a, k)
        np.testing.assert_array_equal(b, k)


def test_the_tables_are_used_and_agree_with_integer_context_step_by_step(monkeypatch):
    """Spy on the lookups: every looked-up context equals integer_context of the decoded frame."""
    c = diagonal_codec(5, clip=120)
    k = latents(np.random.default_rng(5), 30, 5, (), 3.0)
    s = c.compress_symbols(k)
    seen = []
    real_take = np.ndarray.take

    class Spy(np.ndarray):
        def take(self, idx, *a, **kw):
            seen.append(np.asarray(idx).copy())
            return real_take(np.asarray(self), idx, *a, **kw)

    R, coff, mu_lut, tab_lut = c._context_lut
    c.__dict__["_context_lut"] = (R, coff, mu_lut.view(Spy), tab_lut)
    np.testing.assert_array_equal(c.decompress_symbols(s), k)
    assert len(seen) == len(k) - 1  # one lookup per step (a flagged frame's is then replaced by the fresh context)
    for fi in seen:
        x = (fi - coff).reshape(5, 1)  # the previous frame the decoder looked up
        t = next(t for t in range(len(k) - 1) if np.array_equal(k[t].reshape(5, 1), x))
        mu, tab = integer_context(k[t].reshape(5, 1), c.w_loc, c.b_loc, c.w_scale, c.b_scale, frac_bits=c.frac_bits,
                                  Q=c.family.Q, levels=c.family.levels, clip=c.clip)
        np.testing.assert_array_equal(mu_lut[fi].reshape(5, 1), mu)
        np.testing.assert_array_equal(tab_lut[fi].reshape(5, 1), tab)

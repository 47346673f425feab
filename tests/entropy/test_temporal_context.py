"""The temporal prior's constrained contexts: diagonal / low-rank structure survives freezing, and on few
training frames the diagonal context generalizes where the unconstrained one over-fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcomp.entropy.temporal_prior import TemporalPrior
from featcomp.errors import ConfigError


def _ar1(rng, T, C, rho, sd):
    y = np.zeros((T, C))
    y[0] = rng.normal(0, 1, C) * sd / np.sqrt(1 - rho**2)
    for t in range(1, T):
        y[t] = rho * y[t - 1] + rng.normal(0, 1, C) * sd
    return y


def _fit(prior, seqs, steps, T=4, lr=3e-2, seed=0):
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    wins = torch.tensor(np.stack([s[i:i + T] for s in seqs for i in range(len(s) - T + 1)]), dtype=torch.float32)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    prior.train()
    for _ in range(steps):
        xb = wins[torch.as_tensor(g.integers(0, len(wins), 32))]
        loss = prior.bits(xb).mean() / T
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    return prior


def test_diagonal_and_low_rank_contexts_keep_their_structure_in_the_integer_codec():
    C = 6
    rng = np.random.default_rng(0)
    seqs = [_ar1(rng, 24, C, 0.9, np.linspace(0.5, 3, C)) for _ in range(4)]
    diag = _fit(TemporalPrior(C), seqs, 60)
    low = _fit(TemporalPrior(C, rank=2, scale_rank=1), seqs, 60)
    cd, cl = diag.freeze(np.zeros(C)), low.freeze(np.zeros(C))
    off_diag = ~np.eye(C, dtype=bool)
    assert not cd.w_loc[off_diag].any() and not cd.w_scale[off_diag].any()
    assert (np.diag(cd.w_loc) > 0).all()  # learned a positive own-value predictor
    wl, ws = (w.detach().double().numpy() for w in low.context_weights())
    assert np.linalg.matrix_rank(wl - np.diag(low.loc_diag.detach().double().numpy()), tol=1e-6) <= 2  # U V^T
    assert np.abs(wl[off_diag]).max() > 0  # the low-rank term did train
    np.testing.assert_array_equal(cl.w_loc, np.clip(np.round(wl * 2.0**12), -(2**20 - 1), 2**20 - 1))
    np.testing.assert_array_equal(cl.w_scale, np.clip(np.round(ws * 2.0**12), -(2**20 - 1), 2**20 - 1))
    k = np.round(seqs[0]).astype(np.int32)
    for c in (cd, cl):
        np.testing.assert_array_equal(c.decompress_symbols(c.compress_symbols(k)), k)


@pytest.mark.parametrize("kw", [dict(context="band"), dict(context="full", rank=2), dict(rank=-1), dict(scale_rank=99)])
def test_bad_context_options_raise(kw):
    with pytest.raises(ConfigError):
        TemporalPrior(8, **kw)


def test_diagonal_context_generalizes_from_few_frames_where_full_overfits():
    # 32 independent AR(1) channels, 3 short training sequences (~ as few clips per parameter as on real video)
    rng = np.random.default_rng(1)
    C = 32
    sd = rng.uniform(0.5, 4, C)
    train = [_ar1(rng, 12, C, 0.85, sd) for _ in range(3)]
    test = [np.round(_ar1(rng, 40, C, 0.85, sd)).astype(np.int32) for _ in range(3)]

    def coded(prior):
        codec = prior.freeze(np.zeros(C))
        return sum(8 * len(codec.compress_symbols(k)) for k in test)

    full = coded(_fit(TemporalPrior(C, context="full"), train, 300))
    diag = coded(_fit(TemporalPrior(C), train, 300))
    assert diag < 0.9 * full, (diag, full)
    # and it does exploit time: fewer bits than the fresh (no-context) model on every frame
    static = TemporalPrior(C)
    _fit(static, [s[i:i + 1] for s in train for i in range(len(s))], 300, T=1)
    assert diag < 0.9 * coded(static), (diag, coded(static))

"""The temporal prior (training twin of the temporal codec): its Laplace bits, constrained contexts
(diagonal / low-rank) that survive freezing, the pricing of layout 3's restart flags, and a trained
prior coding AR(1) latents with far fewer bits than the factorized one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcomp.entropy import EntropyBottleneck
from featcomp.entropy.temporal import RESTART_FLAG_BITS
from featcomp.entropy.temporal_prior import TemporalPrior, fit_temporal_prior, laplace_bits
from featcomp.errors import ConfigError

from .test_temporal import with_cuts


def test_laplace_bits_matches_numeric_integral_and_is_stable():
    r = torch.tensor([0.0, 0.3, 1.0, 7.0, 200.0], dtype=torch.float64)
    s = torch.tensor(0.8, dtype=torch.float64)
    cdf = lambda x: torch.where(x < 0, 0.5 * torch.exp(x / s), 1 - 0.5 * torch.exp(-x / s))  # noqa: E731
    ref = -torch.log2(cdf(r + 0.5) - cdf(r - 0.5))
    got = laplace_bits(r, s)
    np.testing.assert_allclose(got[:4].numpy(), ref[:4].numpy(), rtol=1e-9)
    assert torch.isfinite(got).all() and got[4] > 29  # clamped at 1e-9 likelihood, no inf/nan


def test_trained_temporal_prior_codes_ar1_with_far_fewer_bits_than_factorized():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    C, T, rho = 4, 600, 0.95
    y = np.zeros((T, C))
    y[0] = rng.normal(0, 3, C)
    for t in range(1, T):
        y[t] = rho * y[t - 1] + rng.normal(0, 1.0, C)
    y *= np.array([0.5, 1.0, 2.0, 4.0])  # different scales per channel
    yt = torch.tensor(y, dtype=torch.float32)
    train, test = yt[:400], yt[400:]

    eb = EntropyBottleneck(C)
    prior = TemporalPrior(C)
    opt = torch.optim.Adam(list(eb.parameters()) + list(prior.parameters()), lr=1e-2)
    for step in range(300):
        idx = torch.randint(0, 400 - 8, (32,))
        win = torch.stack([train[i : i + 8] for i in idx])  # (32, 8, C)
        off = eb.offsets.detach()
        loss = eb(win.reshape(-1, C))[1].mean() + prior.bits(win - off).mean() / 8
        opt.zero_grad()
        loss.backward()
        opt.step()
    fact = eb.freeze()
    temporal = prior.freeze(eb.offsets)
    k = fact.quantize(test)
    assert (temporal.quantize(test) == k).all()  # same quantization grid
    bf = len(fact.compress_symbols(k))
    bt = len(temporal.compress_symbols(k))
    np.testing.assert_array_equal(temporal.decompress_symbols(temporal.compress_symbols(k)), k)
    assert bt * 1.5 < bf, (bt, bf)
    # the trained float model's estimate agrees with the frozen integer codec's cost
    prior.eval()
    with torch.no_grad():
        est = float(prior.bits((test - eb.offsets.detach())[None]).sum())
    assert abs(temporal.estimate_bits(k) - est) < 0.1 * est


# ==================================================================================================
# (formerly test_temporal_context.py)
# The temporal prior's constrained contexts: diagonal / low-rank structure survives freezing, and on few
# training frames the diagonal context generalizes where the unconstrained one over-fits.
# ==================================================================================================
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


# ==================================================================================================
# (formerly piece_t_restart.py)
# The temporal prior prices layout 3's restart flags like the codec and freezes to the matching layout.
# ==================================================================================================
def test_prior_prices_restarts_like_the_codec_and_freezes_to_the_matching_layout():
    torch.manual_seed(0)
    rng = np.random.default_rng(15)
    C = 4
    seqs = [with_cuts(rng, 12, C, (), (4, 8), sigma=2.0, start_far=False).astype(np.float32) for _ in range(24)]
    x = torch.as_tensor(np.stack(seqs[:4]))
    p_on, p_off = TemporalPrior(C), TemporalPrior(C, restarts=False)
    p_off.load_state_dict(p_on.state_dict())
    p_on.eval(), p_off.eval()
    b_on, b_off = p_on.bits(x, x), p_off.bits(x, x)
    assert torch.equal(b_on[:, 0], b_off[:, 0])  # the first frame has no flag
    assert (b_on[:, 1:] <= b_off[:, 1:] + RESTART_FLAG_BITS[0] + 1e-4).all()
    assert (b_on[:, 8] < b_off[:, 8]).all()  # the cut back to near zero is priced as a restart
    assert p_on.freeze(np.zeros(C)).version == 3 and p_off.freeze(np.zeros(C)).version == 2
    # fitted with restarts, the frozen codec restarts at the cut and codes within the prior's estimate
    # (its integer tables cap the cost of outliers at their frequency floor, so it may code cheaper)
    fit_temporal_prior(p_on, seqs[4:], window=12, steps=150, lr=3e-2)
    codec = p_on.freeze(np.zeros(C, np.float32))
    k = np.stack(seqs[:4]).astype(np.int32)
    est = float(p_on.bits(torch.as_tensor(k.astype(np.float32)), torch.as_tensor(k.astype(np.float32))).detach().sum())
    coded = sum(codec.estimate_bits(kk) for kk in k)
    assert 0.8 * est <= coded <= 1.02 * est
    assert sum(codec.restarts(kk)[8] for kk in k) == 4

"""Training the temporal prior: it must beat the factorized prior on temporally correlated latents."""

from __future__ import annotations

import numpy as np
import torch

from featcomp.entropy import EntropyBottleneck
from featcomp.entropy.temporal_prior import TemporalPrior, laplace_bits


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

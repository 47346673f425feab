"""The hyperprior's side information is computed from the rounded latents in training too.

The frozen codec derives z from the integers k (``log2(1 + |k|)``); the training twin once computed it from
the *noisy* latents, whose ``log2(1 + |u|)`` is biased upwards where k = 0, so the scales it learned did not
fit the coded latents (coded sizes several times the training estimate on real feature maps).
"""

from __future__ import annotations

import torch

import featcomp.entropy.hyperprior_prior as hp


def test_side_information_input_is_the_rounded_latent_in_training_and_eval(monkeypatch):
    torch.manual_seed(0)
    prior = hp.HyperpriorPrior(4, pool=2)
    with torch.no_grad():
        prior.offsets.copy_(torch.tensor([0.0, 0.25, -0.3, 0.1]))
    y = torch.randn(3, 4, 6, 6) * torch.tensor([0.2, 3.0, 0.4, 8.0])[None, :, None, None]
    seen = []
    orig = hp._cell_mean
    monkeypatch.setattr(hp, "_cell_mean", lambda x, p: seen.append(x.detach().clone()) or orig(x, p))
    prior(y, noise=True)
    prior(y, noise=False)
    expect = torch.log2(1.0 + torch.round(y - prior.offsets.detach()[None, :, None, None]).abs())
    assert torch.equal(seen[0], seen[1])
    assert torch.allclose(seen[0], expect)


def test_training_gradient_still_reaches_the_offsets_and_latents():
    prior = hp.HyperpriorPrior(4, pool=2).train()
    y = (torch.randn(2, 4, 4, 4) * 2).requires_grad_(True)
    _, bits = prior(y)
    bits.sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert prior.offsets.grad is not None and prior.offsets.grad.abs().sum() > 0

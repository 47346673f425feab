"""Training the scale hyperprior (HyperpriorPrior) jointly with a head (issue 7, part 2), its side
information, and what it freezes to.

On real MobileNetV2 maps the hyperprior head once trained unstably: its loss rose during training and its
coded size *grew* with lambda. The cause: the scale synthesis read ``z_hat - m``, with ``m`` the z
bottleneck's medians, re-estimated without gradients whenever the bottleneck's density moved, so every
density update shifted all the scales behind the optimizer's back (z and m drifted apart together). These
tests pin the mechanism (the training-mode scales do not depend on ``m``), the conversion of old
checkpoints, and the end-to-end behaviour on synthetic maps (rate falls with lambda, the frozen codec
codes what the eval-mode estimate says). Also: the side information is computed from the rounded latents
in training too; a trained prior freezes to layout 2; ``fit_hyperprior_fallback`` (layout 3) keeps the
integers and never costs more.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import featcomp.entropy.hyperprior_prior as hp
from featcomp.entropy.hyperprior_prior import HyperpriorPrior
from featcomp.errors import ConfigError
from featcomp.train import train_head
from featcomp.train.loop import evaluate_head


def _move_density(prior: HyperpriorPrior, shift: float) -> None:
    """Translate the z bottleneck's density (and so its medians) by ``shift`` z units, exactly."""
    d = prior.z_bottleneck.density
    with torch.no_grad():
        d.biases[0].sub_(torch.nn.functional.softplus(d.matrices[0]) * shift)


def test_training_scales_do_not_depend_on_the_z_medians(monkeypatch):
    torch.manual_seed(0)
    prior = HyperpriorPrior(6, z_channels=3, pool=2).train()
    with torch.no_grad():
        prior.B_ln.mul_(40.0)  # a synthesis that actually uses z
    y = torch.randn(4, 6, 6, 6) * 3
    # the bottleneck's training output made deterministic and free of its own rate: z_hat = z + 0.3
    monkeypatch.setattr(prior.z_bottleneck, "forward", lambda z, mode=None: (z + 0.3, torch.zeros(z.shape[0])))
    m0 = prior.z_bottleneck.offsets.clone()
    before = prior(y, noise=False)[1]
    _move_density(prior, 2.5)
    torch.testing.assert_close(prior.z_bottleneck.offsets, m0 + 2.5, rtol=0, atol=1e-3)  # the medians moved
    # y's cost given the same z_hat is unchanged (it changed by B (m1 - m0) in index units before the fix)
    torch.testing.assert_close(prior(y, noise=False)[1], before)


def test_eval_mode_and_frozen_codec_agree_after_the_medians_moved():
    torch.manual_seed(0)
    prior = HyperpriorPrior(8, z_channels=2, pool=2)
    with torch.no_grad():
        prior.B_ln.mul_(10.0)  # scale indices spread over 15..31 (measured)
        prior.A.mul_(3.0)
        prior.offsets.copy_(torch.linspace(-0.3, 0.3, 8))
    _move_density(prior, 3.0)
    prior.eval()
    y = torch.randn(5, 8, 6, 6) * torch.linspace(0.3, 2, 8)[None, :, None, None]  # within the tables' range
    with torch.no_grad():
        est = prior(y)[1].sum().item()
    codec = prior.freeze()
    k = codec.quantize(y.numpy())
    assert abs(codec.estimate_bits(k) - est) < 0.01 * est  # integer tables, rounded index (measured 0.35%)
    data = codec.compress_symbols(k)
    np.testing.assert_array_equal(codec.decompress_symbols(data), k)


def test_old_checkpoints_load_into_the_log_unit_synthesis():
    torch.manual_seed(0)
    src = HyperpriorPrior(8, z_channels=2)
    with torch.no_grad():
        src.B_ln.normal_(0, 0.5)
        src.c_ln.uniform_(0.5, 4.0)
    _move_density(src, 1.5)
    m = src.z_bottleneck.offsets.detach()
    # the old parameterization: u = B (z_hat - m) + c in grid-index units
    old = {k: v.clone() for k, v in src.state_dict().items() if k not in ("B_ln", "c_ln")}
    old["B"] = src.B_ln.detach() / src.step
    old["c"] = (src.c_ln.detach() - math.log(src.scale_min)) / src.step + old["B"] @ m
    dst = HyperpriorPrior(8, z_channels=2)
    dst.load_state_dict(old)
    torch.testing.assert_close(dst.B_ln, src.B_ln)
    torch.testing.assert_close(dst.c_ln, src.c_ln, rtol=0, atol=1e-5)
    assert dst.freeze() == src.freeze()


def _maps(n: int, rng: np.random.Generator, C: int = 32, r: int = 8) -> np.ndarray:
    """(n, C, 6, 6) float32: r Laplace sources mixed into C channels; each 2 x 2 cell of each source is quiet
    (scale 0.15) or busy (scale 2) at random."""
    mix = np.random.default_rng(7).normal(0, 1, (C, r)) / math.sqrt(r)
    lvl = rng.choice([0.15, 2.0], size=(n, r, 3, 3), p=[0.6, 0.4])
    s = rng.laplace(0, 1, (n, r, 6, 6)) * np.repeat(np.repeat(lvl, 2, 2), 2, 3)
    return (np.einsum("cr,nrhw->nchw", mix, s) + 0.05 * rng.normal(0, 1, (n, C, 6, 6))).astype(np.float32)


def test_trained_head_rate_falls_with_lambda_and_the_codec_codes_the_estimate():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    tr, te = _maps(128, rng), _maps(64, rng)
    out = {}
    for lam in (3e-4, 3e-3):
        r = train_head(tr, objective="reconstruct", lam=lam, entropy_model="hyperprior", latent_channels=8,
                       epochs=100, batch_size=32, lr=3e-3, density_lr=3e-3, progress=False, seed=0)
        fr = r.head.freeze()
        k = fr.encode(torch.from_numpy(te))
        data = fr.codec.compress_symbols(k)
        np.testing.assert_array_equal(fr.codec.decompress_symbols(data), k)
        coded = 8 * len(data) / len(te)
        est = evaluate_head(r.head, r.objective, te)["bits"]
        mse = float(((fr.synthesize(fr.decode(k)).numpy() - te) ** 2).mean())
        loss = [h["loss"] for h in r.history]
        assert abs(coded - est) < 0.02 * est + 8, (lam, coded, est)  # measured 0.5-1.4%
        assert loss[-1] < loss[len(loss) // 4], (lam, loss[len(loss) // 4], loss[-1])  # no rising loss
        out[lam] = coded, mse
    (b_lo, mse_lo), (b_hi, mse_hi) = out[3e-4], out[3e-3]
    assert mse_hi > mse_lo
    # measured 0.45 (0.65 with the old median-subtracting synthesis)
    assert b_hi < 0.55 * b_lo, out


# ==================================================================================================
# (formerly test_hyperprior_side_info.py)
# The hyperprior's side information is computed from the rounded latents in training too.
#
# The frozen codec derives z from the integers k (``log2(1 + |k|)``); the training twin once computed it from
# the *noisy* latents, whose ``log2(1 + |u|)`` is biased upwards where k = 0, so the scales it learned did not
# fit the coded latents (coded sizes several times the training estimate on real feature maps).
# ==================================================================================================
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


# ==================================================================================================
# (formerly piece_h_l2.py)
# A trained hyperprior freezes to layout 2.
# ==================================================================================================
def test_a_trained_prior_freezes_to_layout_2():
    import torch

    from featcomp.entropy.hyperprior_prior import HyperpriorPrior

    torch.manual_seed(0)
    codec = HyperpriorPrior(4, z_channels=2).eval().freeze()
    assert codec.version == 2 and codec.to_dict()["format_version"] == 2
    k = np.round(np.random.default_rng(8).laplace(0, 2, (2, 4, 6, 6))).astype(np.int32)
    np.testing.assert_array_equal(codec.decompress_symbols(codec.compress_symbols(k)), k)


# ==================================================================================================
# (formerly piece_h_fb.py)
# The training-side fit_hyperprior_fallback: same integers, never more bits.
# ==================================================================================================
def test_fit_hyperprior_fallback_keeps_the_integers_and_never_costs_more(tmp_path):
    import featcomp
    from featcomp.model import load_model, save_model
    from featcomp.train.refit import fit_hyperprior_fallback

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 8, 6, 6)).astype(np.float32)
    r = featcomp.train.train_head(x[:48], objective="reconstruct", lam=1e-1, entropy_model="hyperprior",
                                  latent_channels=4, epochs=2, batch_size=16, progress=False)
    head = r.head.freeze()
    h3 = fit_hyperprior_fallback(head, x[:48])
    assert head.codec.version == 2 and h3.codec.version == 3 and h3.kind == "hyperprior"
    for part in (x[48:56], x[56:]):
        k = head.encode(torch.from_numpy(part))
        np.testing.assert_array_equal(h3.encode(torch.from_numpy(part)), k)
        np.testing.assert_array_equal(h3.decode(k), head.decode(k))
        s2, s3 = head.codec.compress_symbols(k), h3.codec.compress_symbols(k)
        assert len(s3) <= len(s2) + 1  # the varint of the doubled z length may take one more byte
        np.testing.assert_array_equal(h3.codec.decompress_symbols(s3), k)
    m = load_model(save_model(tmp_path / "h3.safetensors", h3))
    assert m.head.codec == h3.codec and m.head.codec.version == 3
    with pytest.raises(ConfigError, match="hyperprior"):
        fit_hyperprior_fallback(featcomp.train.train_head(x[:, :, 0, 0], objective="reconstruct", lam=1e-1,
                                                          latent_channels=4, epochs=1, progress=False).head, x)
    with pytest.raises(ConfigError, match="N, C, H, W"):
        fit_hyperprior_fallback(head, x[:0])

"""Training counted in steps, early stopping on validation, and the rate-convergence warning (issue 18)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from featcomp.train.loop import RateNotConvergedWarning, evaluate_head, rate_converged, train_head


def _blobs(n, rng, C=16):
    centers = rng.normal(size=(4, C)).astype(np.float32) * 2
    y = rng.integers(0, 4, n)
    return (centers[y] + rng.normal(size=(n, C)).astype(np.float32)), y


def test_rate_converged_tells_a_falling_rate_from_a_flat_one():
    rng = np.random.default_rng(0)
    t = np.arange(400)
    falling = 200 * np.exp(-t / 150) + 20 + rng.normal(0, 0.5, t.size)
    flat = 20 + rng.normal(0, 0.5, t.size)
    assert not rate_converged(falling)
    assert rate_converged(flat)
    assert rate_converged(np.r_[falling[:200], flat[:200]])  # fell, then levelled off
    assert not rate_converged(flat[:19])  # too short to tell


def test_steps_and_min_steps_count_optimizer_steps():
    rng = np.random.default_rng(1)
    x, y = _blobs(497, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateNotConvergedWarning)
        r = train_head(x, y, lam=1e-2, latent_channels=4, steps=7, batch_size=256, progress=False)
        assert r.options["steps"] == 7 and r.history[-1]["step"] == 7 and len(r.history) == 4
        # 497 vectors at batch 256 are 2 steps an epoch: 20 epochs would be 40 steps; min_steps raises it
        r = train_head(x, y, lam=1e-2, latent_channels=4, epochs=20, min_steps=101, batch_size=256, progress=False)
    assert r.options["steps"] == 101 and r.options["epochs"] == 51 and r.history[-1]["step"] == 101


@pytest.mark.timeout(120)
def test_under_training_warns_and_a_long_enough_run_does_not():
    rng = np.random.default_rng(2)
    x, y = _blobs(497, rng)
    with pytest.warns(RateNotConvergedWarning, match="still falling"):
        r = train_head(x, y, lam=3e-2, latent_channels=8, epochs=20, batch_size=256, lr=3e-3, progress=False)
    assert r.options["steps"] == 40 and r.options["rate_converged"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", RateNotConvergedWarning)
        long = train_head(x, y, lam=3e-2, latent_channels=8, steps=1500, batch_size=256, lr=3e-3, progress=False)
    assert long.options["rate_converged"] is True
    ev = [evaluate_head(m.head, m.objective, x, y)["bits"] for m in (r, long)]
    assert ev[1] < ev[0]  # the longer run is the cheaper head


def test_validation_keeps_the_best_epoch_and_patience_stops():
    rng = np.random.default_rng(3)
    x, y = _blobs(600, rng)
    xv, yv = _blobs(200, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateNotConvergedWarning)
        r = train_head(x, y, lam=1e-2, latent_channels=4, epochs=12, batch_size=64, lr=3e-2, val=(xv, yv),
                       progress=False, lr_schedule="constant")
    losses = [h["val_loss"] for h in r.history]
    best = int(np.argmin(losses))
    assert r.options["best_epoch"] == best + 1
    got = evaluate_head(r.head, r.objective, xv, yv)["loss"]
    assert got == pytest.approx(losses[best], rel=1e-5, abs=1e-6)  # the kept parameters are the best epoch's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateNotConvergedWarning)
        p = train_head(x, y, lam=1e-2, latent_channels=4, epochs=200, batch_size=64, lr=3e-2, val=(xv, yv),
                       progress=False, lr_schedule="constant", patience=2)
    assert p.options["stopped_early"] and len(p.history) < 200
    tail = [h["val_loss"] for h in p.history][-2:]
    assert min(tail) >= min(h["val_loss"] for h in p.history[:-2])  # the last 2 epochs did not improve


def test_bad_step_options_are_refused():
    from featcomp.errors import ConfigError

    x, y = _blobs(50, np.random.default_rng(4))
    for kw in ({"steps": 0}, {"min_steps": -1}, {"patience": 0}):
        with pytest.raises(ConfigError):
            train_head(x, y, progress=False, **kw)
    torch.manual_seed(0)

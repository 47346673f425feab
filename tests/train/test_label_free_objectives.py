"""Label-free objectives that keep what a future probe needs (issue 18): whitened reconstruction,
distill + reconstruction, and InfoNCE on pairs of nearby frames."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from featcomp.errors import ConfigError
from featcomp.train.loop import RateNotConvergedWarning, frame_pairs, train_head
from featcomp.train.objectives import whitening_matrix
from featcomp.train.probe import probe_accuracy


def _quiet(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RateNotConvergedWarning)
        return train_head(progress=False, **kw)


def test_whitening_matrix_whitens():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    x = torch.from_numpy((rng.normal(size=(4000, 6)) @ A.T * np.array([10, 1, 1, 0.1, 1, 1])).astype(np.float32))
    P = whitening_matrix(x, eps=0.0)
    xc = x - x.mean(0)
    cov = (xc @ P.T).T @ (xc @ P.T) / (len(x) - 1)
    np.testing.assert_allclose(cov.numpy(), np.eye(6), atol=2e-3)
    assert torch.allclose(P, P.T, atol=1e-5)  # ZCA: symmetric
    # maps (N, C, H, W): channel vectors at every position
    assert whitening_matrix(torch.randn(10, 3, 4, 4)).shape == (3, 3)


def _low_variance_labels(rng, n):
    """Labels live in a low-variance direction; most variance is label-free nuisance."""
    C = 16
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, C)).astype(np.float32) * 5.0
    x[:, 0] = (2 * y - 1) * 0.4 + rng.normal(size=n).astype(np.float32) * 0.1  # the direction a probe needs
    return x, y


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_whitened_reconstruction_keeps_a_low_variance_direction_that_plain_mse_drops():
    rng = np.random.default_rng(1)
    x, y = _low_variance_labels(rng, 3000)
    xt, yt = _low_variance_labels(rng, 1000)
    acc, bits = {}, {}
    for metric in ("mse", "whitened"):
        r = _quiet(features=x, objective="reconstruct", objective_options={"metric": metric}, lam=1e-2,
                   latent_channels=16, steps=600, batch_size=256, lr=3e-3, standardize=False)
        f = r.head.freeze()
        dec = lambda a: f.synthesize(f.decode(f.encode(a))).numpy()  # noqa: E731
        acc[metric] = probe_accuracy(dec(x), y, dec(xt), yt)
        bits[metric] = 8 * len(f.compress(xt)) / len(xt)
    # measured: whitened 0.886 at 36 bits, mse 0.579 at 66 bits (chance 0.5)
    assert acc["whitened"] > 0.8 and acc["mse"] < 0.7, acc
    assert bits["whitened"] < bits["mse"], bits


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_distill_reconstruct_trains_and_reports_both_terms():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(800, 12)).astype(np.float32)
    teacher = torch.nn.Linear(12, 5)
    r = _quiet(features=x, objective="distill_reconstruct", teacher=teacher, objective_options={"alpha": 0.5},
               lam=1e-3, latent_channels=8, steps=300, batch_size=128, lr=3e-3, val=0.2)
    last = r.history[-1]
    assert {"agree", "val_agree", "val_loss"} <= set(last) and last["val_agree"] > 0.7
    assert r.head.config.synthesis == "linear"
    with pytest.raises(ConfigError, match="needs a teacher"):
        train_head(x, objective="distill_reconstruct", progress=False)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pairs_objective_keeps_what_frames_of_a_video_share():
    """Half the channels hold a video's identity (shared by its frames), the other half per-frame noise of
    much larger variance. At about the same rate, the InfoNCE head keeps the identity (a probe recovers the
    video from its decoded latents) where plain reconstruction spends its bits on the noise."""
    rng = np.random.default_rng(3)
    V, T, C = 40, 30, 16
    ident = rng.normal(size=(V, 8)).astype(np.float32)

    def seq(v):
        a = np.empty((T, C), np.float32)
        a[:, :8] = ident[v] + rng.normal(size=(T, 8)) * 0.3
        a[:, 8:] = rng.normal(size=(T, 8)) * 5
        return a

    seqs = [seq(v) for v in range(V)]
    pairs = frame_pairs(seqs, max_gap=3)
    assert pairs.shape == (V * (T - 1), C, 2)
    frames = np.concatenate(seqs)
    vid = np.repeat(np.arange(V), T)
    tr = np.arange(len(frames)) % T < 20
    acc, bits = {}, {}
    for obj, opts in (("pairs", {"dim": 32, "temperature": 0.2}), ("reconstruct", {"metric": "mse"})):
        r = _quiet(features=pairs, objective=obj, objective_options=opts, lam=3e-2, latent_channels=8, steps=400,
                   batch_size=128, lr=3e-3)
        f = r.head.freeze()
        lat = f.decode(f.encode(frames))
        acc[obj] = probe_accuracy(lat[tr], vid[tr], lat[~tr], vid[~tr])
        bits[obj] = 8 * len(f.compress(frames)) / len(frames)
        if obj == "pairs":
            assert r.history[-1]["pair_acc"] > 0.1  # chance 1/128
    # measured: pairs 0.945 at ~20 bits/frame, reconstruct 0.10 at ~23 (chance 1/40, float features 0.99)
    assert acc["pairs"] > 0.8 and acc["reconstruct"] < 0.4, acc
    assert bits["pairs"] < 1.5 * bits["reconstruct"], bits
    with pytest.raises(ConfigError, match="frame pairs"):
        train_head(frames, objective="pairs", progress=False, steps=1)
    with pytest.raises(ConfigError):
        frame_pairs([frames[:1]])

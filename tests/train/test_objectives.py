"""Objectives and training loops: each objective reduces its loss; registry; clips; checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from featcomp.errors import ConfigError, RegistryError
from featcomp.train import evaluate_head, get_objective, register_objective, train_head, train_with_backbone
from featcomp.train.objectives import TaskObjective


def _data(n=600, c=16, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, c)) * np.linspace(0.3, 2.0, c)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    return x, y


def _first_last(res, key):
    return res.history[0][key], res.history[-1][key]


def test_task_training_reduces_loss_and_learns():
    x, y = _data()
    res = train_head(x, y, objective="task", lam=1e-4, latent_channels=6, epochs=12, batch_size=100, lr=2e-2,
                     val=0.25, progress=False)
    first, last = _first_last(res, "loss")
    assert last < first
    assert res.history[-1]["val_acc"] > 0.7  # 4 balanced classes: chance is 0.25
    ev = evaluate_head(res.head, res.objective, x, y)
    assert ev["bits"] > 0 and 0 <= ev["acc"] <= 1


def test_distill_with_teacher_module_reduces_kl():
    torch.manual_seed(0)
    x, _ = _data()
    teacher = nn.Linear(16, 5)
    res = train_head(x, None, objective="distill", teacher=teacher, lam=1e-3, latent_channels=8, epochs=6,
                     batch_size=100, lr=2e-2, val=0.25, progress=False)
    assert res.head.synthesis is not None
    first, last = _first_last(res, "loss")
    assert last < first
    assert res.history[-1]["val_agree"] > 0.6
    # the teacher stayed frozen
    assert all(not p.requires_grad for p in teacher.parameters())


def test_distill_with_teacher_logits_array():
    x, _ = _data()
    logits = x[:, :4] * 2.0
    res = train_head(x, logits, objective="distill", lam=1e-3, latent_channels=6, epochs=5, batch_size=100,
                     lr=2e-2, progress=False)
    first, last = _first_last(res, "loss")
    assert last < first


@pytest.mark.parametrize("metric", ["mse", "cosine"])
def test_reconstruct_reduces_distortion(metric):
    x, _ = _data()
    res = train_head(x, None, objective="reconstruct", objective_options={"metric": metric}, lam=1e-4,
                     latent_channels=16, epochs=6, batch_size=100, lr=2e-2, progress=False)
    first, last = _first_last(res, "loss")
    assert last < first
    assert res.history[-1]["cos"] > 0.8


def test_objective_registry():
    assert get_objective("task") is not None
    with pytest.raises(RegistryError):
        get_objective("nope")
    with pytest.raises(RegistryError):
        register_objective("task", lambda head, **k: None)
    with pytest.raises(ConfigError):
        train_head(*_data(), objective="reconstruct", synthesis="none", epochs=1, progress=False)
    with pytest.raises(ConfigError):
        train_head(_data()[0], None, objective="task", epochs=1, progress=False)


def test_clip_features_with_temporal_pooling():
    rng = np.random.default_rng(3)
    n, c, t = 300, 10, 4
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, c, t)).astype(np.float32)
    x[:, 0, :] += (2 * y - 1)[:, None] * 1.5
    res = train_head(x, y, objective="task", lam=1e-3, latent_channels=4, epochs=6, batch_size=60, lr=2e-2,
                     progress=False)
    assert isinstance(res.objective, TaskObjective)
    assert res.history[-1]["acc"] > 0.8
    k = res.head.freeze().encode(x)
    assert k.shape == (n, 4, t)


def test_checkpoint_resume(tmp_path):
    x, y = _data(n=200)
    ck = tmp_path / "ck.pt"
    train_head(x, y, latent_channels=4, epochs=2, batch_size=100, checkpoint=ck, progress=False)
    assert ck.is_file()
    res = train_head(x, y, latent_channels=4, epochs=3, batch_size=100, checkpoint=ck, progress=False)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]


class _TinyBackbone(nn.Module):
    """uint8 frames (n, H, W, 3) -> pooled features (n, 8)."""

    out_channels = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def preprocess(self, frames):
        f = torch.as_tensor(frames)
        return f.permute(0, 3, 1, 2).float() / 255.0

    def forward(self, x):
        return torch.relu(self.conv(x)).mean((2, 3))


@pytest.mark.parametrize("finetune", [False, True])
def test_backbone_in_the_loop(finetune):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    frames = rng.integers(0, 60, (120, 12, 12, 3)).astype(np.uint8)
    frames[y == 1] += 120
    bb = _TinyBackbone()
    w0 = bb.conv.weight.detach().clone()
    res = train_with_backbone(bb, frames, y, finetune=finetune, lam=1e-3, latent_channels=4, epochs=4,
                              batch_size=40, lr=2e-2, progress=False)
    assert res.history[-1]["acc"] > 0.8
    assert (not torch.equal(bb.conv.weight, w0)) == finetune


def test_teacher_svd_init_preserves_the_teachers_logits():
    torch.manual_seed(0)
    x, _ = _data()
    teacher = nn.Linear(16, 5)
    res = train_head(x, None, objective="distill", teacher=teacher, latent_channels=5, epochs=0,
                     init_analysis="teacher_svd", progress=False)
    head = res.head
    xt = torch.from_numpy(x)
    with torch.no_grad():
        y = head.analyze(xt) * head.scale  # unquantized latent, dequantized units
        xh = head.synthesize(y)
        np.testing.assert_allclose(teacher(xh).numpy(), teacher(xt).numpy(), rtol=1e-4, atol=1e-4)
        assert (xh - xt).norm() > 0.1 * xt.norm()  # only the teacher's row space is kept
    with pytest.raises(ConfigError):
        train_head(x, None, objective="distill", teacher=lambda f: f[:, :3], latent_channels=3, epochs=0,
                   init_analysis="teacher_svd", progress=False)

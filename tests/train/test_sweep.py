"""Rate selection by a quality target (issue 18): featcomp.train.sweep and featcomp train --max-drop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcomp.cli import main as cli
from featcomp.errors import ConfigError
from featcomp.model import load_model
from featcomp.train.sweep import QualityTarget, sweep_lambda


def _blobs(n, rng, C=24, K=5):
    centers = np.random.default_rng(123).normal(size=(K, C)).astype(np.float32) * 1.5
    y = rng.integers(0, K, n)
    return centers[y] + rng.normal(size=(n, C)).astype(np.float32), y


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sweep_keeps_the_cheapest_head_within_the_drop_and_reports_every_point():
    rng = np.random.default_rng(0)
    x, y = _blobs(1200, rng)
    xv, yv = _blobs(400, rng)
    lams = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    res = sweep_lambda(x, y, target=QualityTarget(max_drop=2.0), val=(xv, yv), lams=lams, refine=1,
                       latent_channels=8, steps=250, batch_size=128, lr=3e-3)
    assert res.reference is not None and res.reference > 0.8
    pts = {p.lam: p for p in res.points}
    assert res.lam is not None and pts[res.lam].ok
    # the kept head is the cheapest passing point, and its recorded quality is what the head does on validation
    assert pts[res.lam].bits == min(p.bits for p in res.points if p.ok)
    assert 100 * (res.reference - pts[res.lam].quality) <= 2.0
    # the sweep saw both sides of the target: a lambda too large to hold it
    assert any(not p.ok for p in res.points) and max(p.lam for p in res.points if not p.ok) > res.lam
    # rate falls as lambda grows (passing points, coded bits as stored)
    ok = sorted((p for p in res.points), key=lambda p: p.lam)
    assert ok[0].bits > ok[-1].bits
    assert "*" in res.table() and "float probe accuracy" in res.table()


def test_targets_are_validated():
    with pytest.raises(ConfigError):
        QualityTarget()
    with pytest.raises(ConfigError):
        QualityTarget(max_drop=0.5, min_agreement=0.9)
    with pytest.raises(ConfigError):
        QualityTarget(min_agreement=1.5)
    x, y = _blobs(50, np.random.default_rng(1))
    with pytest.raises(ConfigError, match="for objective 'task'"):
        sweep_lambda(x, y, target=QualityTarget(max_drop=1.0), objective="distill")
    with pytest.raises(ConfigError, match="needs labels"):
        sweep_lambda(x, None, target=QualityTarget(max_drop=1.0))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_command_max_drop_selects_lambda_and_records_the_curve(tmp_path, capsys):
    rng = np.random.default_rng(2)
    x, y = _blobs(1000, rng)
    np.savez(tmp_path / "f.npz", features=x, labels=y)
    out = tmp_path / "m.safetensors"
    rc = cli(["train", str(tmp_path / "f.npz"), "--max-drop", "3", "--lams", "1e-3,1e-1,10", "--latent", "8",
              "--steps", "200", "--batch-size", "128", "--val", "0.25", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "bits/vector" in captured.err and "holds" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    sweep = load_model(out).training["options"]["sweep"]
    assert summary["lam"] == sweep["lam"] and len(sweep["points"]) >= 2
    assert any(p["ok"] and p["lam"] == sweep["lam"] for p in sweep["points"])
    # a target nothing can hold is a one-line error, and no model file is written
    out2 = tmp_path / "none.safetensors"
    assert cli(["train", str(tmp_path / "f.npz"), "--max-drop", "0", "--lams", "100,1000", "--latent", "2",
                "--steps", "30", "--val", "0.25", "--no-progress", "-o", str(out2)]) == 1
    assert "no lambda" in capsys.readouterr().err and not out2.exists()
    assert cli(["train", str(tmp_path / "f.npz"), "--min-agreement", "0.9", "-o", str(out2)]) == 1
    assert "--objective distill" in capsys.readouterr().err

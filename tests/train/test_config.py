"""TrainConfig: one validated, serializable object for train_head's options (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from featcomp.errors import ConfigError
from featcomp.train.config import TrainConfig


def test_defaults_round_trip_through_json():
    cfg = TrainConfig(lam=[0.1, 0.01], objective_options={"tau": 2.0}, steps=40, checkpoint="c.pt")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["lam"] == [0.01, 0.1]  # sorted ascending, level 0 = most bits
    back = TrainConfig.from_dict(d)
    assert back == cfg
    assert back.variable_rate and not TrainConfig().variable_rate


@pytest.mark.parametrize("bad, words", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"patience": 0}, "patience >= 1"),
    ({"lr_schedule": "linear"}, "unknown lr schedule"),
    ({"init_analysis": "pca"}, "init_analysis"),
    ({"batch_size": 0}, "batch_size >= 1"),
    ({"lam": []}, "empty"),
])
def test_bad_options_are_config_errors(bad, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**bad)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown training option\(s\) \['latent'\].*latent_channels"):
        TrainConfig().replace(latent=32)


def test_config_module_imports_no_torch():
    code = "import sys, featcomp.train.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_train_head_with_config_equals_keywords():
    """A config and the same keywords train the same head (same seed, same options)."""
    import torch

    from featcomp.train import train_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    kw = dict(lam=1e-2, latent_channels=4, steps=6, batch_size=32, progress=False, seed=3)
    a = train_head(x, y, config=TrainConfig(objective="task", **kw))
    b = train_head(x, y, objective="task", **kw)
    assert a.config == b.config == TrainConfig(**kw)
    assert a.options["steps"] == b.options["steps"] == 6
    for (ka, va), (kb, vb) in zip(a.head.state_dict().items(), b.head.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # a keyword overrides the config's field; the result records the merged config
    c = train_head(x, y, config=TrainConfig(objective="task", **kw), steps=3)
    assert c.options["steps"] == 3 and c.config.steps == 3 and c.config.latent_channels == 4


def test_train_head_refuses_unknown_keyword():
    from featcomp.train import train_head

    x = np.zeros((8, 4), np.float32)
    with pytest.raises(ConfigError, match="unknown training option"):
        train_head(x, objective="reconstruct", latent=2)

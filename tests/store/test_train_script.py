"""The example training script runs end to end on its synthetic demo store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_from_store.py"


def test_train_from_store_demo(capsys):
    spec = importlib.util.spec_from_file_location("train_from_store", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--demo", "--epochs", "3", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    acc = float(out.strip().splitlines()[-1].split("validation accuracy")[1].split()[0])
    assert acc > 0.5  # 4 classes: chance is 0.25

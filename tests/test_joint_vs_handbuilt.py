"""scripts/joint_vs_handbuilt.py: the choice on validation and the report (the run itself needs the fetched
data and ~20 min of CPU; its numbers are in docs/benchmarks.md)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.joint_vs_handbuilt import pick, report  # noqa: E402


def _row(variant, vbits, vtop, tbits, ttop, **kw):
    return {"variant": variant, "label": f"{variant} {vbits}", "val": {"bits": vbits, "top1": vtop},
            "test": {"bits": tbits, "top1": ttop}, **kw}


def test_pick_takes_the_cheapest_on_validation_that_meets_the_target_never_looking_at_test():
    rows = [_row("A", 130, 0.96, 473, 0.952),
            _row("B", 100, 0.90, 50, 0.99, train="all", c=1e-3),  # cheapest, but misses 95% on validation
            _row("B", 140, 0.96, 900, 0.95, train="steps", c=1e-2),
            _row("B", 133, 0.96, 518, 0.952, train="steps", c=1e-3)]
    assert pick(rows, "B")["val"]["bits"] == 133
    assert pick(rows, "A")["test"]["bits"] == 473
    assert pick(rows, "C") is None
    # none meets the target: the best validation agreement
    low = [_row("B", 100, 0.90, 50, 0.9, train="all", c=1e-3), _row("B", 300, 0.93, 80, 0.8, train="all", c=1e-2)]
    assert pick(low, "B")["val"]["top1"] == 0.93


def test_report_gives_mean_and_worst_per_family():
    folds = {"bikes": [_row("A", 130, 0.96, 400, 0.95), _row("B", 133, 0.96, 500, 0.96, train="steps", c=1e-3,
                                                                lr=1e-2, train_bits=800.0)],
             "carphone_pristine": [_row("A", 100, 0.97, 300, 0.952),
                                   _row("B", 90, 0.97, 350, 0.94, train="all", c=1e-2, lr=1e-4)]}
    md = report({"meta": {"n_aug": 1, "steps": 300, "lr_steps": 1e-2}, "folds": folds})
    a_line = next(line for line in md.splitlines() if line.startswith("| A: hand-built |"))
    b_line = next(line for line in md.splitlines() if line.startswith("| B: joint from A |"))
    assert "| 350 | 400 | 95.1% | 95.0% |" in a_line  # mean 350, worst 400 bits; mean and worst top-1
    assert "| 425 | 500 | 95.0% | 94.0% |" in b_line
    assert "1.25x" in md and "1.17x" in md  # test bits relative to A of the same fold

"""Training the compressibility head (layer 2): objectives, loops, baselines, linear probe.

``featcomp.fit_head`` is :func:`featcomp.train.loop.fit_head`. Objectives and baselines are
plug-ins (``register_objective``/``get_objective``, ``register_baseline``/``get_baseline``).
See docs/training.md.
"""

from __future__ import annotations

from featcomp.train.baselines import Baseline, baseline_names, get_baseline, register_baseline
from featcomp.train.loop import TrainResult, clip_windows, evaluate_head, fit_head, train_head, train_with_backbone
from featcomp.train.objectives import (
    DistillObjective,
    Objective,
    ReconstructObjective,
    TaskObjective,
    get_objective,
    objective_names,
    register_objective,
)
from featcomp.train.probe import LinearProbe, probe_accuracy

__all__ = [
    "Baseline",
    "DistillObjective",
    "LinearProbe",
    "Objective",
    "ReconstructObjective",
    "TaskObjective",
    "TrainResult",
    "baseline_names",
    "evaluate_head",
    "fit_head",
    "get_baseline",
    "get_objective",
    "objective_names",
    "probe_accuracy",
    "register_baseline",
    "register_objective",
    "train_head",
    "train_with_backbone",
    "clip_windows",
]

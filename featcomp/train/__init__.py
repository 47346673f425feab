"""Training the compressibility head (layer 2): objectives, loops, baselines, linear probe.

``featcomp.fit_head`` is :func:`featcomp.train.loop.fit_head`. Objectives and baselines are
plug-ins (``register_objective``/``get_objective``, ``register_baseline``/``get_baseline``).
See docs/training.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it, imported on first access (PEP 562) so that
# ``featcomp.train.commands`` (and ``featcomp --help``) do not import torch.
_LAZY: dict[str, str] = {
    **dict.fromkeys(["Baseline", "baseline_names", "get_baseline", "register_baseline"], "featcomp.train.baselines"),
    **dict.fromkeys(["TrainResult", "clip_windows", "evaluate_head", "fit_head", "train_head",
                     "train_with_backbone"], "featcomp.train.loop"),
    **dict.fromkeys(["DistillObjective", "Objective", "ReconstructObjective", "TaskObjective", "get_objective",
                     "objective_names", "register_objective"], "featcomp.train.objectives"),
    **dict.fromkeys(["LinearProbe", "probe_accuracy"], "featcomp.train.probe"),
    "TrainConfig": "featcomp.train.config",
    **dict.fromkeys(["QualityTarget", "SweepPoint", "SweepResult", "sweep_lambda"], "featcomp.train.sweep"),
    **dict.fromkeys(["fit_hyperprior_fallback", "fit_temporal_codec"], "featcomp.train.refit"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featcomp.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Baseline",
    "DistillObjective",
    "LinearProbe",
    "Objective",
    "ReconstructObjective",
    "TaskObjective",
    "TrainConfig",
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
    "QualityTarget",
    "SweepPoint",
    "SweepResult",
    "sweep_lambda",
    "fit_hyperprior_fallback",
    "fit_temporal_codec",
]

"""``TrainConfig``: every serializable option of :func:`featcomp.train.train_head` in one frozen object.

``train_head`` grew to 35 keyword arguments. They fall into two groups:

- **options** (numbers, strings, small dicts): how the head is built, what it is trained for, and how it is
  optimized. They live here, are validated once, and travel as one value: into the checkpoint, the model
  file's ``training`` record, the lambda sweep and the command line.
- **run-time objects** (the features, a head to continue, the teacher module, validation data, a
  ``feature_fn``, extra parameters): they stay keyword arguments of ``train_head``.

``train_head(x, y, lam=1e-2, steps=500)`` keeps working: keyword options are folded into a ``TrainConfig``
(``TrainConfig().replace(...)``), so an unknown option is one :class:`~featcomp.errors.ConfigError` naming
the valid ones. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from featcomp.errors import ConfigError

__all__ = ["TrainConfig", "LR_SCHEDULES", "INIT_ANALYSES"]

LR_SCHEDULES = ("cosine", "step", "constant")
INIT_ANALYSES = (None, "teacher_svd")


def _freeze_lam(lam: Any) -> float | tuple[float, ...]:
    if isinstance(lam, (list, tuple)) or type(lam).__name__ == "ndarray":
        vals = tuple(sorted(float(v) for v in lam))
        if not vals:
            raise ConfigError("TrainConfig: lam is an empty sequence; give one lambda or a list of them")
        return vals
    return float(lam)


@dataclass(frozen=True)
class TrainConfig:
    """Options of one training run: ``loss = D + lam * bits_per_vector`` (see :func:`train_head`).

    Head (used when ``train_head`` builds the head): ``latent_channels``, ``analysis``, ``synthesis`` (None:
    ``linear`` for ``reconstruct`` and for ``distill`` with a teacher, else ``none``), ``standardize``,
    ``init_scale``, ``objective_quant``, ``density``, ``entropy_model`` (a registered kind), ``prior``,
    ``init_analysis`` (None or ``"teacher_svd"``).

    Objective: ``objective`` (a registered name), ``lam`` (a float, or a sequence for a variable-rate head,
    stored sorted ascending), ``objective_options``.

    Optimization: ``epochs`` (unless ``steps``), ``steps``, ``min_steps``, ``patience``, ``restore_best``,
    ``batch_size``, ``lr``, ``lr_schedule``, ``warmup_steps``, ``weight_decay``, ``head_lr``, ``density_lr``,
    ``extra_lr``, ``seed``.

    Run: ``device``, ``checkpoint``, ``resume``, ``progress``.
    """

    objective: str = "task"
    lam: float | tuple[float, ...] = 1e-2
    objective_options: Mapping[str, Any] = field(default_factory=dict)
    # head
    entropy_model: str = "factorized"
    prior: Mapping[str, Any] = field(default_factory=dict)
    latent_channels: int | None = 64
    analysis: str = "linear"
    synthesis: str | None = None
    standardize: bool = True
    init_scale: float = 1.0
    objective_quant: str = "ste"
    density: Mapping[str, Any] = field(default_factory=dict)
    init_analysis: str | None = None
    # optimization
    epochs: int = 20
    steps: int | None = None
    min_steps: int = 0
    patience: int | None = None
    restore_best: bool = True
    batch_size: int = 256
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    head_lr: float | None = None
    density_lr: float | None = None
    extra_lr: float | None = None
    seed: int = 0
    # run
    device: str = "cpu"
    checkpoint: str | None = None
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "lam", _freeze_lam(self.lam))
        for name in ("objective_options", "prior", "density"):
            put(self, name, dict(getattr(self, name) or {}))
        put(self, "device", str(self.device))
        if self.checkpoint is not None:
            put(self, "checkpoint", str(self.checkpoint))
        if not isinstance(self.objective, str) or not self.objective:
            raise ConfigError(f"TrainConfig: objective must be a registered name, got {self.objective!r}")
        if self.steps is not None and int(self.steps) < 1:
            raise ConfigError(f"fit_head: steps must be >= 1, got {self.steps}")
        if int(self.min_steps) < 0 or (self.patience is not None and int(self.patience) < 1):
            raise ConfigError(f"fit_head: need min_steps >= 0 and patience >= 1, got {self.min_steps}, {self.patience}")
        if int(self.epochs) < 0 or int(self.batch_size) < 1:  # epochs=0: build and initialize only
            raise ConfigError(f"fit_head: need epochs >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; use 'cosine', 'step' or 'constant'")
        if self.init_analysis not in INIT_ANALYSES:
            raise ConfigError(f"init_analysis must be None or 'teacher_svd', got {self.init_analysis!r}")
        lams = self.lam if isinstance(self.lam, tuple) else (self.lam,)
        if any(not v >= 0 for v in lams):
            raise ConfigError(f"fit_head: lambdas must be >= 0, got {self.lam}")

    @property
    def variable_rate(self) -> bool:
        """True when ``lam`` is a sequence: one variable-rate head with a level per lambda."""
        return isinstance(self.lam, tuple)

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **options: Any) -> "TrainConfig":
        """A copy with ``options`` changed; an unknown name is a :class:`ConfigError` listing the valid ones."""
        unknown = sorted(set(options) - set(self.names()))
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; valid: {', '.join(self.names())}")
        return dataclasses.replace(self, **options) if options else self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (``lam`` as a float or a list; option dicts keep only plain values)."""
        out: dict[str, Any] = {}
        for name in self.names():
            v = getattr(self, name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = {k: x for k, x in v.items() if isinstance(x, (int, float, str, bool, type(None), list))}
            out[name] = v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """The inverse of :meth:`to_dict`; unknown keys are refused (:class:`ConfigError`)."""
        return cls().replace(**dict(d))

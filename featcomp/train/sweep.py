"""Rate selection without a hand-set lambda: the cheapest head that holds a quality target (issue 18).

The lambda that works on one backbone is not the lambda for another (the task recipe that codes
MobileNetV2 features of Fashion-MNIST in ~21 bits codes another backbone's in 117-154). Users state
what they need instead:

* ``max_drop`` (``task``): validation accuracy of the head's classifier at most this many points below
  a linear probe (:class:`~featcomp.train.probe.LinearProbe`) on the float features;
* ``min_agreement`` (``distill``): the teacher's top-1 on the decoded features agrees with its top-1
  on the float features on at least this fraction of the validation vectors;
* ``max_distortion`` (``reconstruct``): mean squared error of the decoded features at most this.

:func:`sweep_lambda` trains one head per lambda of a log-spaced grid, searched by bisection (the rate
falls as lambda grows, so the passing lambdas are a prefix of the grid up to noise), then refines
between the largest passing lambda and the next one. Every head is measured on the validation split
with hard rounding, and its rate is the **coded size** of the validation vectors as one stream
(``FrozenHead.compress``: framing included). The cheapest passing head is kept; the curve of every
trained point is returned (and printed by ``featcomp train``). The test split is never looked at.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from featcomp.errors import ConfigError
from featcomp.train.loop import RateNotConvergedWarning, TrainResult, evaluate_head, train_head

__all__ = ["QualityTarget", "SweepPoint", "SweepResult", "sweep_lambda", "DEFAULT_LAMS"]

DEFAULT_LAMS: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 0, 9))  # 1e-4 .. 1, x3.16 apart


@dataclasses.dataclass(frozen=True)
class QualityTarget:
    """One quality target; exactly one field is set.

    Attributes:
        max_drop: accuracy points (0-100 scale) below the float linear probe (``task``).
        min_agreement: teacher top-1 agreement in [0, 1] (``distill``).
        max_distortion: mean squared error per element (``reconstruct``).
    """

    max_drop: float | None = None
    min_agreement: float | None = None
    max_distortion: float | None = None

    def __post_init__(self) -> None:
        given = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            raise ConfigError(f"give exactly one quality target (max_drop, min_agreement, max_distortion); got {given}")
        if self.min_agreement is not None and not 0.0 < self.min_agreement <= 1.0:
            raise ConfigError(f"min_agreement must be in (0, 1], got {self.min_agreement}")
        if (self.max_drop is not None and self.max_drop < 0) or (self.max_distortion is not None
                                                                 and self.max_distortion <= 0):
            raise ConfigError("max_drop must be >= 0 and max_distortion > 0")

    @property
    def objective(self) -> str:
        return "task" if self.max_drop is not None else "distill" if self.min_agreement is not None else "reconstruct"

    def describe(self) -> str:
        if self.max_drop is not None:
            return f"accuracy within {self.max_drop:g} points of the float probe"
        if self.min_agreement is not None:
            return f"teacher top-1 agreement >= {self.min_agreement:g}"
        return f"MSE <= {self.max_distortion:g}"


@dataclasses.dataclass
class SweepPoint:
    """One trained head of the sweep, measured on the validation split.

    Attributes:
        lam: its lambda. bits: coded bits per vector (one stream, framing included).
        quality: accuracy (0-1), agreement (0-1) or MSE. ok: whether it holds the target.
        steps: optimizer steps. converged: whether its rate had levelled off.
    """

    lam: float
    bits: float
    quality: float
    ok: bool
    steps: int
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SweepResult:
    """What :func:`sweep_lambda` returns.

    Attributes:
        result: the kept head's :class:`TrainResult` (None when no lambda held the target).
        lam: its lambda (None likewise).
        points: every trained point, by lambda.
        target: the target. reference: the float probe's validation accuracy (``max_drop``), else None.
    """

    result: TrainResult | None
    lam: float | None
    points: list[SweepPoint]
    target: QualityTarget
    reference: float | None

    def table(self) -> str:
        """The curve as a plain-text table (one row per trained lambda; ``*`` marks the kept one)."""
        unit = "MSE" if self.target.max_distortion is not None else "accuracy" if self.target.max_drop is not None \
            else "agreement"
        rows = [f"{'lambda':>10} {'bits/vector':>12} {unit:>10} {'holds':>6} {'steps':>6}"]
        for p in self.points:
            mark = "*" if self.lam is not None and p.lam == self.lam else " "
            q = f"{p.quality:.4g}" if unit == "MSE" else f"{100 * p.quality:.2f}%"
            rows.append(f"{p.lam:>10.3g} {p.bits:>12.1f} {q:>10} {'yes' if p.ok else 'no':>6} {p.steps:>6}{mark}"
                        + ("" if p.converged else "  (rate not converged)"))
        if self.reference is not None:
            rows.append(f"float probe accuracy on validation: {100 * self.reference:.2f}%")
        return "\n".join(rows)


def _coded_bits(head: Any, x: np.ndarray) -> float:
    frozen = head.freeze()
    return 8.0 * len(frozen.compress(torch.from_numpy(np.ascontiguousarray(x, np.float32)))) / len(x)


def sweep_lambda(features: Any, labels: Any = None, *, target: QualityTarget, val: Any = 0.2,
                 lams: Sequence[float] | None = None, refine: int = 2, teacher: Any = None, seed: int = 0,
                 progress: Callable[[str], None] | None = None, **train_kwargs: Any) -> SweepResult:
    """Train heads over lambdas and keep the cheapest one that holds ``target`` on validation data.

    Args:
        features: float (N, C) backbone features (the training split, or all of it with ``val`` a fraction).
        labels: int (N,) labels (``task``), teacher logits (N, K) for ``distill`` without a teacher, or None.
        target: the :class:`QualityTarget` (its kind fixes the objective).
        val: a fraction of ``features`` to hold out (seeded), or ``(features, labels)``.
        lams: the lambda grid (default :data:`DEFAULT_LAMS`, 1e-4 .. 1).
        refine: extra lambdas tried (geometric midpoints) between the largest passing lambda and the
            next one of the grid.
        teacher: the ``distill`` teacher classifier (module or callable on features).
        seed: seeds the split and every training run.
        progress: called with one line per trained point (e.g. ``print``), or None.
        **train_kwargs: options of :func:`train_head` (``latent_channels``, ``steps``, ``min_steps``, ...).

    Returns:
        A :class:`SweepResult`.

    Raises:
        ConfigError: a target that does not fit the objective, or missing labels/teacher.
    """
    objective = train_kwargs.pop("objective", target.objective)
    if objective != target.objective:
        raise ConfigError(f"the target ({target.describe()}) is for objective {target.objective!r}, not {objective!r}")
    x = np.asarray(features, np.float32)
    y = None if labels is None else np.asarray(labels)
    if isinstance(val, float):
        if not 0.0 < val < 1.0:
            raise ConfigError(f"sweep_lambda: val must be a fraction in (0, 1) or (features, labels), got {val}")
        perm = np.random.default_rng(seed).permutation(len(x))
        nv = max(1, int(round(len(x) * val)))
        vi, ti = perm[:nv], perm[nv:]
        xv, yv, x, y = x[vi], (None if y is None else y[vi]), x[ti], (None if y is None else y[ti])
    else:
        xv = np.asarray(val[0], np.float32)
        yv = None if val[1] is None else np.asarray(val[1])
    if objective == "task" and (y is None or yv is None):
        raise ConfigError("a max_drop target needs labels for the training and validation vectors")
    if objective == "distill" and teacher is None and (y is None or y.ndim != 2):
        raise ConfigError("a min_agreement target needs a teacher (or teacher logits as labels)")
    reference = None
    if objective == "task":
        from featcomp.train.probe import LinearProbe

        reference = LinearProbe().fit(x.reshape(len(x), -1), y).accuracy(xv.reshape(len(xv), -1), yv)

    def holds(q: float) -> bool:
        if target.max_drop is not None:
            return 100.0 * (reference - q) <= target.max_drop
        if target.min_agreement is not None:
            return q >= target.min_agreement
        return q <= target.max_distortion

    grid = sorted(float(v) for v in (lams if lams is not None else DEFAULT_LAMS))
    if not grid or any(v <= 0 for v in grid):
        raise ConfigError(f"lambdas must be positive, got {list(grid)}")
    trained: dict[float, tuple[SweepPoint, TrainResult]] = {}

    def run(lam: float) -> SweepPoint:
        if lam in trained:
            return trained[lam][0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RateNotConvergedWarning)
            r = train_head(x, y, objective=objective, lam=lam, teacher=teacher, seed=seed, progress=False,
                           **train_kwargs)
        ev = evaluate_head(r.head, r.objective, xv, yv)
        q = ev["loss"] if objective == "reconstruct" else ev[r.objective.metric]
        if objective == "reconstruct" and getattr(r.objective, "kind", "mse") != "mse":
            raise ConfigError("a max_distortion target is an MSE: use the reconstruct objective's mse metric")
        conv = not any(issubclass(w.category, RateNotConvergedWarning) for w in caught)
        p = SweepPoint(lam=lam, bits=_coded_bits(r.head, xv), quality=float(q), ok=holds(float(q)),
                       steps=int(r.options["steps"]), converged=conv)
        trained[lam] = (p, r)
        if progress is not None:
            progress(f"lambda {lam:.3g}: {p.bits:.1f} bits/vector, quality {p.quality:.4g}, "
                     f"{'holds' if p.ok else 'misses'} the target")
        return p

    # bisection over the grid for the largest passing lambda (passing lambdas form a prefix, up to noise)
    lo, hi = 0, len(grid) - 1
    best_i = -1
    while lo <= hi:
        mid = (lo + hi) // 2
        if run(grid[mid]).ok:
            best_i, lo = mid, mid + 1
        else:
            hi = mid - 1
    if best_i == -1 and not run(grid[0]).ok:
        pass  # nothing holds even at the smallest lambda: reported, no head kept
    elif best_i < len(grid) - 1:  # refine between the largest passing lambda and the next (failing) one
        a, b = grid[max(best_i, 0)], grid[max(best_i, 0) + 1]
        for _ in range(int(refine)):
            m = math.sqrt(a * b)
            if run(m).ok:
                a = m
            else:
                b = m
    points = sorted((p for p, _ in trained.values()), key=lambda p: p.lam)
    passing = [p for p in points if p.ok]
    if not passing:
        return SweepResult(None, None, points, target, reference)
    keep = min(passing, key=lambda p: p.bits)
    return SweepResult(trained[keep.lam][1], keep.lam, points, target, reference)

"""Training loops for the compressibility head: cached features, or a backbone in the loop.

The loss is ``L = D + lambda * R`` (arXiv:2007.11797, Eq. 1), where ``D`` is the objective's distortion
(nats per example for ``task``/``distill``, per-element MSE for ``reconstruct``) and ``R`` is the
entropy model's rate in **bits per vector**: bits per example divided by the number of positions of
the example (1 for ``(N, C)`` features, ``T`` for clips ``(N, C, T)``, so ``R`` is bits per frame;
``H*W`` is *not* divided for maps ``(N, C, H, W)``: an image is one example). In training ``R`` is the
noisy upper bound, in evaluation the rounded estimate (which is within 1% of the coded size).

Runs on CPU or GPU (``device=``), seeded (``seed=``), with a tqdm bar showing loss, bits and the
objective's metric, and optional checkpoints (``checkpoint=path``: saved every epoch, resumed when the
file exists and ``resume=True``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.errors import ConfigError
from featcomp.head import CompressibleHead, HeadConfig
from featcomp.train.config import TrainConfig
from featcomp.train.objectives import Objective, get_objective

__all__ = ["TrainConfig", "TrainResult", "train_head", "fit_head", "evaluate_head", "train_with_backbone", "rate_per_vector",
           "clip_windows", "frame_pairs", "RateNotConvergedWarning", "rate_converged"]


class RateNotConvergedWarning(UserWarning):
    """Training ended while the rate was still falling: more steps would give a cheaper head."""


def rate_converged(step_bits: Sequence[float], step_lrs: Sequence[float] | None = None, *, tol: float = 0.03,
                   flat: float = 0.2) -> bool:
    """Whether the training rate has levelled off, judged against the learning rate it was trained with.

    A learning-rate schedule that decays (cosine) flattens the end of any run, converged or not, so the
    rate is looked at as a function of the cumulative learning rate (the distance the optimizer was
    allowed to move): with ``p`` that distance as a fraction of the total, ``m(a, b)`` the mean bits of
    the steps with ``a < p <= b``, the rate has converged when its fall over the last 30% of ``p``
    (``m(.6, .7) - m(.9, 1)`` per unit of ``p``) is under ``flat`` times its average fall over the run
    (``m(0, .1) - m(.9, 1)`` per unit), or when it fell by less than ``tol`` (relative) in all. Fewer
    than 20 steps are never called converged: that is too short to tell.

    Args:
        step_bits: bits per vector of every optimizer step, in order.
        step_lrs: the learning rate of every step (None: constant).
        tol: relative fall over the whole run below which the rate counts as flat from the start.
        flat: largest ratio of the final to the average fall rate that still counts as levelled off.
    """
    b = np.asarray(step_bits, np.float64)
    if b.size < 20:
        return False
    lr = np.ones_like(b) if step_lrs is None else np.maximum(np.asarray(step_lrs, np.float64), 0.0)
    c = np.cumsum(lr)
    p = c / c[-1] if c[-1] > 0 else np.arange(1, b.size + 1) / b.size

    def m(a: float, z: float) -> float:
        sel = (p > a) & (p <= z)
        if not sel.any():  # a window narrower than one step: the step nearest its middle
            sel = np.abs(p - (a + z) / 2) == np.abs(p - (a + z) / 2).min()
        return float(b[sel].mean())

    start, mid, end = m(0.0, 0.1), m(0.6, 0.7), m(0.9, 1.0)
    fall = start - end
    if fall <= tol * abs(start):
        return True
    return (mid - end) / 0.3 < flat * fall / 0.9


@dataclasses.dataclass
class TrainResult:
    """What :func:`train_head` returns.

    Attributes:
        head: the trained :class:`CompressibleHead` (eval mode).
        objective: the trained :class:`Objective` (its classifier, for ``task``).
        history: one dict per epoch: ``epoch, step, lr, loss, bits, <metric>, time_s`` on the training
            batches and ``val_loss, val_bits, val_<metric>`` when a validation split is given.
        options: the training options (JSON-safe), recorded in model files; they include ``steps`` (the
            optimizer steps run), ``best_epoch`` (the epoch whose parameters were kept when validation
            chose them) and ``rate_converged`` (see :func:`rate_converged`).
        config: the :class:`~featcomp.train.config.TrainConfig` the run used (rerun it with
            ``train_head(x, y, config=result.config)``).
    """

    head: CompressibleHead
    objective: Objective
    history: list[dict[str, float]]
    options: dict[str, Any]
    config: TrainConfig | None = None


def _as_tensor(a: Any, dtype=torch.float32) -> Tensor:
    if isinstance(a, Tensor):
        return a.to(dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


def rate_per_vector(bits: Tensor, x: Tensor) -> Tensor:
    """Bits per example (N,) -> bits per vector: divided by T for clips (N, C, T); unchanged otherwise."""
    return bits / x.shape[2] if x.ndim == 3 else bits


def clip_windows(seqs: Sequence[Any], length: int, stride: int = 1) -> np.ndarray:
    """Cut frame sequences into clips for the temporal entropy model.

    Args:
        seqs: float (T_i, C, ...) feature sequences, frames in time order (one per video / sampling phase).
        length: T, frames per clip (>= 2 for the temporal prior to see a previous frame).
        stride: frames between the starts of consecutive clips of a sequence.

    Returns:
        float32 (N, C, T) clips (axis 2 is time), what ``train_head(..., entropy_model="temporal")`` takes.

    Raises:
        ConfigError: no sequence is at least ``length`` frames long.
    """
    out = []
    for s in seqs:
        a = np.asarray(s, np.float32)
        for i in range(0, a.shape[0] - length + 1, max(1, int(stride))):
            out.append(np.moveaxis(a[i:i + length], 0, -1))
    if not out:
        raise ConfigError(f"clip_windows: no sequence has {length} frames")
    return np.stack(out)


def frame_pairs(seqs: Sequence[Any], max_gap: int = 2, *, seed: int = 0) -> np.ndarray:
    """Pairs of nearby frames of each sequence, for the ``pairs`` objective.

    Args:
        seqs: float (T_i, C) feature sequences, frames in time order (one per video).
        max_gap: the later frame of a pair is 1..max_gap frames after the first (drawn per pair, seeded).
        seed: seeds the gaps.

    Returns:
        float32 (N, C, 2) pairs (axis 2: the two frames), one pair starting at every frame that has a
        partner.

    Raises:
        ConfigError: no sequence has two frames, or ``max_gap < 1``.
    """
    if int(max_gap) < 1:
        raise ConfigError(f"frame_pairs: max_gap must be >= 1, got {max_gap}")
    rng = np.random.default_rng(seed)
    out = []
    for s in seqs:
        a = np.asarray(s, np.float32)
        T = a.shape[0]
        if T < 2:
            continue
        t0 = np.arange(T - 1)
        gap = rng.integers(1, int(max_gap) + 1, size=t0.size)
        t1 = np.minimum(t0 + gap, T - 1)
        out.append(np.stack([a[t0], a[t1]], axis=-1))
    if not out:
        raise ConfigError("frame_pairs: no sequence has two frames")
    return np.concatenate(out)


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _default_synthesis(objective: str, teacher: Any, options: dict | None = None) -> str:
    if objective in ("reconstruct", "distill_reconstruct") or (objective == "distill" and teacher is not None):
        return "linear"
    if objective == "pairs" and float((options or {}).get("beta", 0.0)) > 0:
        return "linear"
    return "none"


def _split_val(x: Tensor, y: Tensor | None, val: Any, g: torch.Generator):
    """Returns (x_train, y_train, x_val, y_val); ``val`` is None, a fraction, or (features, labels)."""
    if val is None:
        return x, y, None, None
    if isinstance(val, float):
        if not 0.0 < val < 1.0:
            raise ConfigError(f"fit_head: val fraction must be in (0, 1), got {val}")
        n = x.shape[0]
        perm = torch.randperm(n, generator=g)
        nv = max(1, int(round(n * val)))
        vi, ti = perm[:nv], perm[nv:]
        return x[ti], (y[ti] if y is not None else None), x[vi], (y[vi] if y is not None else None)
    if isinstance(val, (tuple, list)) and len(val) == 2:
        xv = _as_tensor(val[0])
        yv = None if val[1] is None else _as_tensor(val[1], torch.long if np.asarray(val[1]).ndim == 1 else torch.float32)
        return x, y, xv, yv
    raise ConfigError("fit_head: val must be None, a fraction in (0, 1), or (features, labels)")


@torch.no_grad()
def evaluate_head(head: CompressibleHead, objective: Objective, features: Any, labels: Any = None, *,
                  batch_size: int = 1024, device: str | torch.device = "cpu",
                  feature_fn: Callable[[Tensor], Tensor] | None = None, rate: float | None = None
                  ) -> dict[str, float]:
    """Evaluate with hard rounding: mean objective loss, mean bits per vector, mean metric.

    Args:
        head, objective: trained modules (put in eval mode here and restored afterwards).
        features: (N, C, *) float features (or inputs of ``feature_fn``).
        labels: (N,) int labels, (N, K) teacher logits, or None.
        feature_fn: maps a batch of ``features`` to backbone features (backbone in the loop), or None.
        rate: the rate level of a variable-rate head (None: level 0).

    Returns:
        ``{"loss", "bits", <metric>}`` averaged over examples; ``bits`` is the rounded estimate in bits
        per vector (see module docstring).
    """
    was = head.training, objective.training
    head.eval()
    objective.eval()
    x_all = features if isinstance(features, Tensor) else _as_tensor(features)
    y_all = None if labels is None else (labels if isinstance(labels, Tensor) else
                                         _as_tensor(labels, torch.long if np.asarray(labels).ndim == 1 else torch.float32))
    tot: dict[str, float] = {}
    n = x_all.shape[0]
    for i in range(0, n, batch_size):
        xb = x_all[i:i + batch_size].to(device)
        if feature_fn is not None:
            xb = feature_fn(xb)
        yb = None if y_all is None else y_all[i:i + batch_size].to(device)
        out = head(xb, rate) if rate is not None else head(xb)
        loss, metrics = objective(out, xb, yb)
        m = xb.shape[0]
        tot["loss"] = tot.get("loss", 0.0) + loss.item() * m
        tot["bits"] = tot.get("bits", 0.0) + rate_per_vector(out.bits, xb).sum().item()
        for k, v in metrics.items():
            tot[k] = tot.get(k, 0.0) + v * m
    head.train(was[0])
    objective.train(was[1])
    return {k: v / max(n, 1) for k, v in tot.items()}


def _lr_at(schedule: str, base: float, step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    t = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
    if schedule == "step":
        return base * (0.1 if t > 0.8 else 1.0)
    raise ConfigError(f"unknown lr schedule {schedule!r}; use 'cosine', 'step' or 'constant'")


def train_head(features: Any, labels: Any = None, *, config: TrainConfig | None = None,
               objective: str | Objective | None = None, head: CompressibleHead | None = None, teacher: Any = None,
               val: Any = None, feature_fn: Callable[[Tensor], Tensor] | None = None,
               extra_params: Sequence[nn.Parameter] = (), in_channels: int | None = None,
               **options: Any) -> TrainResult:
    """Train a :class:`CompressibleHead` jointly with an objective: ``loss = D + lam * bits_per_vector``.

    Args:
        features: float (N, C[, T | H, W]) numpy or torch backbone features (or the inputs of
            ``feature_fn``, e.g. preprocessed frames, when the backbone is in the loop).
        labels: int (N,) class labels (``task``), float (N, K) teacher logits (``distill`` without a
            teacher module), or None.
        config: a :class:`~featcomp.train.config.TrainConfig` with the run's options (default: its
            defaults); keyword ``options`` below override its fields (``train_head(x, y, lam=1e-2,
            steps=500)``), and an unknown keyword is a ``ConfigError``.
        objective: a registered objective name (``task``, ``distill``, ``reconstruct``) or an instance
            (a name may also come from ``config.objective``).
        lam: lambda, nats (or objective units) per bit per vector. A sequence of lambdas trains one
            **variable-rate** head: level ``l`` (lambdas sorted ascending, level 0 = most bits) has a learned
            per-channel gain; each batch draws a level uniformly and uses its lambda; the entropy model is
            shared by all levels (see docs/training.md, "Variable rate").
        entropy_model: ``"factorized"``, ``"temporal"`` (features must be clips (N, C, T), e.g. from
            :func:`clip_windows`; R is bits per frame) or ``"hyperprior"`` (maps (N, C, H, W)); the prior
            is trained jointly and frozen into the head's codec.
        prior: keyword options of the temporal / hyperprior prior.
        head: an existing head to train further, or None to build one from the keyword options
            (``latent_channels``, ``analysis``, ``synthesis`` (default: ``linear`` for ``reconstruct`` and for
            ``distill`` with a teacher, else ``none``), ``standardize``, ``init_scale``,
            ``objective_quant``, ``density``).
        objective_options: keyword options of the objective factory (e.g. ``hidden``, ``tau``,
            ``metric``, ``num_classes``, ``student``).
        teacher: the ``distill`` teacher classifier (module or callable on backbone features).
        val: None, a fraction of the training data to hold out (seeded), or ``(features, labels)``.
        epochs: passes over the training data, unless ``steps`` is given.
        steps: optimizer steps to run (overrides ``epochs``; the last pass may be partial). Counting
            steps, not epochs, keeps small data sets from being silently under-trained: 497 vectors at
            batch 256 are 2 steps an epoch.
        min_steps: at least this many steps when counting in epochs (more epochs are run as needed).
        patience: with validation data, stop after this many epochs without a lower validation loss
            (None: run to the end).
        restore_best: with validation data, keep the parameters of the epoch with the lowest
            validation loss (the sum over levels for a variable-rate head) rather than the last ones.
        batch_size, lr, lr_schedule (``cosine``/``step``/``constant``), warmup_steps,
        weight_decay: optimization (AdamW); ``head_lr``/``density_lr`` override ``lr`` for the head
            transforms / the entropy model's density.
        device: ``"cpu"``, ``"cuda"``, ...
        seed: seeds torch, numpy, the shuffling and the validation split.
        checkpoint: path of a checkpoint written after every epoch (resumed from when ``resume``).
        progress: show a tqdm bar (loss, bits per vector, metric).
        feature_fn: maps a batch of ``features`` to backbone features (backbone in the loop).
        extra_params: further parameters to train (a fine-tuned backbone), at ``extra_lr``.
        in_channels: C when ``feature_fn`` is given and ``head`` is None.
        init_analysis: None (random init) or ``"teacher_svd"``: start the linear analysis/synthesis from
            the SVD of the distill teacher's weight (:func:`featcomp.head.init_from_classifier`).

    Returns:
        A :class:`TrainResult` (head and objective in eval mode, per-epoch history).

    Raises:
        ConfigError: bad shapes or options; ``RegistryError`` for unknown objectives.

    Warns:
        RateNotConvergedWarning: the training rate was still falling at the end (:func:`rate_converged`).
    """
    from tqdm.auto import tqdm

    obj_instance = objective if isinstance(objective, Objective) else None
    if objective is not None and obj_instance is None:
        options["objective"] = objective
    cfg = (config or TrainConfig()).replace(**options)
    lam = list(cfg.lam) if cfg.variable_rate else cfg.lam
    objective = obj_instance if obj_instance is not None else cfg.objective
    (entropy_model, prior, latent_channels, analysis, synthesis, standardize, init_scale, objective_quant, density,
     objective_options, epochs, steps, min_steps, patience, restore_best, batch_size, lr, lr_schedule,
     warmup_steps, weight_decay, head_lr, density_lr, device, seed, checkpoint, resume, progress, extra_lr,
     init_analysis) = (cfg.entropy_model, cfg.prior, cfg.latent_channels, cfg.analysis, cfg.synthesis,
                       cfg.standardize, cfg.init_scale, cfg.objective_quant, cfg.density, cfg.objective_options,
                       cfg.epochs, cfg.steps, cfg.min_steps, cfg.patience, cfg.restore_best, cfg.batch_size,
                       cfg.lr, cfg.lr_schedule, cfg.warmup_steps, cfg.weight_decay, cfg.head_lr,
                       cfg.density_lr, cfg.device, cfg.seed, cfg.checkpoint, cfg.resume, cfg.progress,
                       cfg.extra_lr, cfg.init_analysis)

    device = torch.device(device)
    g = _seed_all(seed)
    x = features if isinstance(features, Tensor) else _as_tensor(features)
    if x.ndim < 2:
        raise ConfigError(f"fit_head: features must be (N, C, *), got shape {tuple(x.shape)}")
    y = None
    if labels is not None:
        la = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
        y = la.long() if la.ndim == 1 else la.float()
        if y.shape[0] != x.shape[0]:
            raise ConfigError(f"fit_head: {x.shape[0]} feature rows but {y.shape[0]} labels")
    x_tr, y_tr, x_val, y_val = _split_val(x, y, val, g)

    obj_name = objective if isinstance(objective, str) else objective.name
    variable = isinstance(lam, (list, tuple, np.ndarray))
    lams = tuple(sorted(float(v) for v in lam)) if variable else ()
    if head is not None and variable and tuple(head.config.rate_lams) != lams:
        raise ConfigError(f"fit_head: the head's rate_lams {head.config.rate_lams} differ from lam={lams}")
    if head is None:
        c = in_channels if feature_fn is not None else x.shape[1]
        if c is None:
            raise ConfigError("fit_head: give in_channels when feature_fn is used")
        cl = c if analysis == "identity" or latent_channels is None else int(latent_channels)
        head_cfg = HeadConfig(in_channels=int(c), latent_channels=cl, analysis=analysis,
                         synthesis=synthesis or _default_synthesis(obj_name, teacher, objective_options), standardize=standardize,
                         init_scale=init_scale, objective_quant=objective_quant, density=dict(density or {}),
                         entropy_model=entropy_model, prior=dict(prior or {}), rate_lams=lams)
        head = CompressibleHead(head_cfg)
        if standardize:
            if feature_fn is None:
                head.set_input_stats(x_tr)
            else:
                with torch.no_grad():
                    head.set_input_stats(feature_fn(x_tr[: min(512, x_tr.shape[0])].to(device)).cpu())
        if init_analysis == "teacher_svd":
            from featcomp.head import init_from_classifier

            w = getattr(teacher, "weight", None)
            if w is None:
                raise ConfigError("init_analysis='teacher_svd' needs a teacher with a .weight (an nn.Linear)")
            init_from_classifier(head, w)
        elif init_analysis is not None:
            raise ConfigError(f"init_analysis must be None or 'teacher_svd', got {init_analysis!r}")
    head.to(device)
    if isinstance(objective, str):
        opts = dict(objective_options or {})
        if obj_name in ("distill", "distill_reconstruct"):
            opts.setdefault("teacher", teacher)
        obj = get_objective(objective)(head, labels=(None if y is None else y.numpy()), **opts)
    else:
        obj = objective
    obj.to(device)
    if obj.needs_labels and y is None:
        raise ConfigError(f"objective {obj_name!r} needs labels")
    with torch.no_grad():  # objectives that fit statistics of the training features (whitening); a
        # checkpoint's state_dict overwrites them below when training resumes
        sample = x_tr if feature_fn is None else feature_fn(x_tr[: min(512, x_tr.shape[0])].to(device)).cpu()
        obj.prepare(sample.to(device))

    # parameter groups: head transforms, density, objective, extra
    dens_params = head.entropy_parameters()
    dens_ids = {id(p) for p in dens_params}
    head_params = [p for p in head.parameters() if id(p) not in dens_ids and p.requires_grad]
    groups = [
        {"params": head_params, "lr": head_lr or lr, "weight_decay": 0.0},
        {"params": dens_params, "lr": density_lr or lr, "weight_decay": 0.0},
        {"params": [p for p in obj.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay},
    ]
    if extra_params:
        groups.append({"params": list(extra_params), "lr": extra_lr or lr * 0.1, "weight_decay": 0.0})
    groups = [gr for gr in groups if gr["params"]]
    for gr in groups:
        gr["base_lr"] = gr["lr"]
    opt = torch.optim.AdamW(groups)

    n = x_tr.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = int(steps) if steps is not None else max(steps_per_epoch * int(epochs), int(min_steps))
    epochs = math.ceil(total / steps_per_epoch)
    options = dict(objective=obj_name, lam=(list(lams) if variable else float(lam)),
                   entropy_model=head.config.entropy_model, epochs=int(epochs), steps=int(total),
                   batch_size=int(batch_size), lr=float(lr),
                   lr_schedule=lr_schedule, weight_decay=float(weight_decay), seed=int(seed),
                   objective_options={k: v for k, v in (objective_options or {}).items()
                                      if isinstance(v, (int, float, str, bool, type(None)))},
                   n_train=int(x_tr.shape[0]), n_val=int(0 if x_val is None else x_val.shape[0]))
    history: list[dict[str, float]] = []
    step_bits: list[float] = []
    step_lrs: list[float] = []
    best: dict[str, Any] = {"loss": math.inf, "epoch": None, "state": None, "bad": 0}
    start_epoch = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        head.load_state_dict(state["head"])
        obj.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        history = list(state["history"])
        step_bits = list(state.get("step_bits", []))
        step_lrs = list(state.get("step_lrs", []))
        best = state.get("best", best)
        start_epoch = int(state["epoch"]) + 1
        g.set_state(state["generator"])

    metric = obj.metric
    stopped_early = False
    for epoch in range(start_epoch, epochs):
        if stopped_early:
            break
        head.train()
        obj.train()
        t0 = time.time()
        perm = torch.randperm(n, generator=g)
        sums = {"loss": 0.0, "bits": 0.0, "metric": 0.0}
        seen = 0
        in_epoch = min(steps_per_epoch, total - epoch * steps_per_epoch)
        bar = tqdm(range(in_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for s in bar:
            step = epoch * steps_per_epoch + s
            for gr in opt.param_groups:
                gr["lr"] = _lr_at(lr_schedule, gr["base_lr"], step, total, warmup_steps)
            idx = perm[s * batch_size:(s + 1) * batch_size]
            xb = x_tr[idx].to(device, non_blocking=True)
            if feature_fn is not None:
                xb = feature_fn(xb)
            yb = None if y_tr is None else y_tr[idx].to(device, non_blocking=True)
            if variable:  # one level per batch, drawn uniformly (seeded)
                level = int(torch.randint(len(lams), (1,), generator=g))
                out = head(xb, level)
                lam_b = lams[level]
            else:
                out = head(xb)
                lam_b = lam
            d, metrics = obj(out, xb, yb)
            rate = rate_per_vector(out.bits, xb).mean()
            loss = d + lam_b * rate
            aux = getattr(head.bottleneck, "aux_loss", None)
            if callable(aux):
                loss = loss + aux()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            m = xb.shape[0]
            seen += m
            sums["loss"] += loss.item() * m
            sums["bits"] += rate.item() * m
            step_bits.append(rate.item())
            step_lrs.append(opt.param_groups[0]["lr"])
            if metric:
                sums["metric"] += metrics.get(metric, 0.0) * m
            post = {"loss": f"{sums['loss'] / seen:.4f}", "bits": f"{sums['bits'] / seen:.1f}"}
            if metric:
                post[metric] = f"{sums['metric'] / seen:.4f}"
            bar.set_postfix(post)
        bar.close()
        rec: dict[str, float] = {"epoch": epoch + 1, "step": epoch * steps_per_epoch + in_epoch,
                                 "lr": opt.param_groups[0]["lr"],
                                 "loss": sums["loss"] / seen, "bits": sums["bits"] / seen,
                                 "time_s": time.time() - t0}
        if metric:
            rec[metric] = sums["metric"] / seen
        if x_val is not None:
            for level in (range(len(lams)) if variable else [None]):
                ev = evaluate_head(head, obj, x_val, y_val, device=device, feature_fn=feature_fn,
                                   batch_size=max(batch_size, 1024), rate=level)
                suffix = "" if level is None else f"_L{level}"
                rec.update({f"val_{k}{suffix}": v for k, v in ev.items()})
            vloss = sum(v for k, v in rec.items() if k == "val_loss" or k.startswith("val_loss_L"))
            if vloss < best["loss"]:
                best.update(loss=vloss, epoch=epoch + 1, bad=0,
                            state=({"head": copy.deepcopy(head.state_dict()), "objective": copy.deepcopy(obj.state_dict())}
                                   if restore_best else None))
            else:
                best["bad"] += 1
                stopped_early = patience is not None and best["bad"] >= int(patience)
        history.append(rec)
        if progress:
            msg = " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k != "epoch")
            tqdm.write(f"epoch {epoch + 1}/{epochs}: {msg}")
        if ckpt is not None:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
            torch.save({"head": head.state_dict(), "objective": obj.state_dict(), "optimizer": opt.state_dict(),
                        "history": history, "epoch": epoch, "generator": g.get_state(),
                        "step_bits": step_bits, "step_lrs": step_lrs, "best": best,
                        "head_config": head.config.to_dict(), "options": options}, tmp)
            tmp.replace(ckpt)
    if restore_best and best["state"] is not None and best["epoch"] != (history[-1]["epoch"] if history else None):
        head.load_state_dict(best["state"]["head"])
        obj.load_state_dict(best["state"]["objective"])
    options["steps"] = len(step_bits)
    options["best_epoch"] = best["epoch"] if restore_best else None
    options["stopped_early"] = bool(stopped_early)
    converged = rate_converged(step_bits, step_lrs if len(step_lrs) == len(step_bits) else None)
    options["rate_converged"] = converged
    if not converged and not stopped_early:
        n10 = max(1, len(step_bits) // 10)
        why = (f"only {len(step_bits)} optimizer steps ran, too few to tell whether the rate converged"
               if len(step_bits) < 20 else
               f"the training rate was still falling after {len(step_bits)} steps ({np.mean(step_bits[:n10]):.1f} -> "
               f"{np.mean(step_bits[-n10:]):.1f} bits per vector from the first to the last tenth, as fast at the "
               "end as the learning rate allowed)")
        warnings.warn(RateNotConvergedWarning(
            f"{why}: train longer (steps= / --steps, or min_steps= / --min-steps) for a cheaper head"), stacklevel=2)
    head.eval()
    obj.eval()
    return TrainResult(head=head, objective=obj, history=history, options=options, config=cfg)


def fit_head(features: Any, labels: Any = None, *, objective: str | Objective = "task", lam: float = 1e-2,
             **kwargs: Any) -> CompressibleHead:
    """Train a compressibility head on cached features and return it (what ``featcomp.save_model`` takes).

    A thin wrapper of :func:`train_head` (same arguments); the trained objective and the history are
    attached to the returned head as ``head.train_result`` (a :class:`TrainResult`, not a submodule).

    Example::

        head = featcomp.fit_head(feats, labels, objective="task", lam=1e-2, latent_channels=64, epochs=20)
        featcomp.save_model("m.safetensors", head, backbone=spec, sampling=sampling)
    """
    res = train_head(features, labels, objective=objective, lam=lam, **kwargs)
    object.__setattr__(res.head, "train_result", res)
    return res.head


def train_with_backbone(backbone: nn.Module, frames: Any, labels: Any = None, *, finetune: bool = False,
                        backbone_lr: float | None = None, **kwargs: Any) -> TrainResult:
    """Train with the backbone in the loop: frames -> ``backbone.preprocess`` -> ``backbone`` -> head.

    Args:
        backbone: a :class:`featcomp.backbones.Backbone` (``preprocess`` + ``forward``), frozen unless
            ``finetune``; its ``out_channels`` gives C.
        frames: uint8 (N, H, W, 3) frames (numpy or torch).
        labels: as in :func:`train_head`.
        finetune: also train the backbone's parameters (at ``backbone_lr``, default ``lr / 10``).
        **kwargs: :func:`train_head` options (``device``, ``objective``, ``lam``, ...).

    Returns:
        A :class:`TrainResult`. With ``finetune`` the backbone is modified in place.
    """
    device = torch.device(kwargs.get("device", "cpu"))
    backbone.to(device)
    frames_t = frames if isinstance(frames, Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    for p in backbone.parameters():
        p.requires_grad_(bool(finetune))
    if not finetune:
        backbone.eval()

    def feature_fn(fr: Tensor) -> Tensor:
        xb = backbone.preprocess(fr).to(device)
        if finetune:
            return backbone(xb)
        with torch.no_grad():
            return backbone(xb)

    c = getattr(backbone, "out_channels", None)
    if c is None:
        with torch.no_grad():
            c = feature_fn(frames_t[:1]).shape[1]
    extra = list(backbone.parameters()) if finetune else []
    return train_head(frames_t, labels, feature_fn=feature_fn, in_channels=int(c), extra_params=extra,
                      extra_lr=backbone_lr, **kwargs)

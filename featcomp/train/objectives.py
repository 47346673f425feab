"""Training objectives for the compressibility head (plug-ins: ``register_objective``/``get_objective``).

The training loss of "End-to-end learning of compressible features" (arXiv:2007.11797, Eq. 1) is
``L = D(objective) + lambda * R``. An objective provides ``D`` and any parameters it trains beside the
head (a classifier), and reports its metrics. Three are registered:

* ``task``: a classifier (linear or MLP) on the quantized latent ``y_hat``, cross-entropy with labels
  (nats per example). Clips ``(N, C', T)`` and maps ``(N, C', H, W)`` are mean-pooled over positions.
* ``distill``: label-free. KL divergence (nats per example, temperature ``tau``, scaled by ``tau**2``)
  from the backbone's own classifier on the original features (the teacher) to the same classifier on
  the compressed features ``g_s(y_hat)`` (the head's synthesis transform). The teacher is a module or
  callable on backbone features (e.g. ``Backbone.classify`` or EfficientNet's ``_fc``), kept frozen, or
  precomputed teacher logits (N, K) — then the student is a fresh classifier on ``y_hat``. Choice and
  reason: the frozen teacher through the synthesis transform keeps the backbone's classifier as the
  model of record (the store's features stay "backbone features"), and in our runs it generalized to
  unseen videos better than a student copy; ``student="copy"`` fine-tunes a copy instead.
* ``reconstruct``: mean squared error (per element, averaged over channels and positions),
  ``1 - cosine`` similarity (per vector), or the squared error in a **whitened** metric between
  ``g_s(y_hat)`` and ``x``. Plain MSE spends the rate on the high-variance directions and drops the
  low-variance ones that a future probe may need; the whitened metric (ZCA whitening fitted on the
  training features by :meth:`Objective.prepare`) weighs every direction of the feature space equally.
* ``distill_reconstruct``: label-free, ``distill`` plus ``alpha`` times the whitened reconstruction: the
  teacher's decisions and the rest of the feature space.
* ``pairs``: self-supervised on pairs of nearby frames of one video (clips ``(N, C, 2)``, e.g. from
  :func:`featcomp.train.loop.frame_pairs`): an InfoNCE bound (van den Oord et al. 2018,
  arXiv:1807.03748) on the information the two frames' quantized latents share, in the spirit of the
  Perceptual Information Metric (Bhardwaj et al. 2020, arXiv:2006.06752): keep what persists across
  frames of a video, not what a frame alone holds; optionally plus ``beta`` times the whitened
  reconstruction.

Each objective is an ``nn.Module``: ``forward(out: HeadOutput, x, target) -> (loss (scalar), metrics)``
where ``metrics`` maps names to floats (e.g. ``{"acc": 0.87}``); ``predict(out)`` gives logits for
evaluation; ``prepare(x)`` (optional) sees the training features once before training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from featcomp.errors import ConfigError
from featcomp.head import CompressibleHead, HeadOutput
from featcomp.registry import Registry

__all__ = [
    "Objective",
    "TaskObjective",
    "DistillObjective",
    "ReconstructObjective",
    "DistillReconstructObjective",
    "PairObjective",
    "whitening_matrix",
    "register_objective",
    "get_objective",
    "objective_names",
    "pool_positions",
]

_OBJECTIVES: Registry[Callable[..., "Objective"]] = Registry("objective")


def register_objective(name: str, factory: Callable[..., Objective] | None = None, *, overwrite: bool = False):
    """Register an objective factory ``factory(head, **options) -> Objective`` (usable as a decorator)."""
    return _OBJECTIVES.register(name, factory, overwrite=overwrite)


def get_objective(name: str) -> Callable[..., Objective]:
    """The factory registered under ``name``; raises :class:`~featcomp.errors.RegistryError` if unknown."""
    return _OBJECTIVES.get(name)


def objective_names() -> list[str]:
    return _OBJECTIVES.names()


def pool_positions(y: Tensor) -> Tensor:
    """Mean over every axis after the channel axis: (N, C, *) -> (N, C) (temporal/spatial pooling)."""
    return y if y.ndim == 2 else y.flatten(2).mean(-1)


class Objective(nn.Module):
    """Base class: the distortion term ``D`` of the loss, plus its own trainable parameters.

    Attributes:
        name: the registry name.
        needs_labels: whether ``target`` must be given (labels for ``task``).
        metric: the name of the headline metric in ``forward``'s metrics (higher is better), or None.
    """

    name = "objective"
    needs_labels = False
    metric: str | None = None

    def forward(self, out: HeadOutput, x: Tensor, target: Tensor | None) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def predict(self, out: HeadOutput) -> Tensor:
        raise NotImplementedError(f"objective {self.name!r} has no predictions")

    def prepare(self, x: Tensor) -> None:
        """See the training features (N, C, *) once before training (default: nothing)."""


def whitening_matrix(x: Tensor, eps: float = 1e-3) -> Tensor:
    """ZCA whitening (C, C) of features (N, C, *): ``P = U diag((lam + eps * mean(lam)) ** -0.5) U^T``.

    Vectors are the channel vectors at every position. ``eps`` (relative to the mean eigenvalue) keeps
    directions with no variance in the training data from being amplified without bound.
    """
    v = x.detach().double()
    v = v.reshape(v.shape[0], v.shape[1], -1).transpose(1, 2).reshape(-1, v.shape[1]) if v.ndim > 2 else v
    v = v - v.mean(0, keepdim=True)
    cov = v.T @ v / max(1, v.shape[0] - 1)
    lam, U = torch.linalg.eigh(cov)
    lam = lam.clamp_min(0.0)
    inv = (lam + eps * lam.mean().clamp_min(1e-12)).rsqrt()
    return ((U * inv) @ U.T).float()


def _whitened_sq_error(x_hat: Tensor, x: Tensor, P: Tensor) -> Tensor:
    """Mean over vectors of ``||P (x_hat - x)||^2 / C`` (channel axis 1)."""
    d = (x_hat.float() - x.float())
    d = d.movedim(1, -1) @ P.to(d.device).T
    return (d * d).mean()


def _mlp(c_in: int, c_out: int, hidden: int | None, dropout: float) -> nn.Module:
    if not hidden:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, c_out)) if dropout else nn.Linear(c_in, c_out)
    return nn.Sequential(nn.Linear(c_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, c_out))


class TaskObjective(Objective):
    """Cross-entropy of a classifier on the (pooled) quantized latent ``y_hat``.

    Args:
        latent_channels: C'.
        num_classes: K.
        hidden: hidden width of an MLP classifier, or None/0 for a linear classifier.
        dropout: dropout before the last layer.
        label_smoothing: passed to ``F.cross_entropy``.

    Loss unit: nats per example (mean over the batch).
    """

    name = "task"
    needs_labels = True
    metric = "acc"

    def __init__(self, latent_channels: int, num_classes: int, *, hidden: int | None = None,
                 dropout: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.classifier = _mlp(latent_channels, num_classes, hidden, dropout)
        self.label_smoothing = float(label_smoothing)

    def predict(self, out: HeadOutput) -> Tensor:
        return self.classifier(pool_positions(out.y_hat))

    def forward(self, out, x, target):
        if target is None:
            raise ConfigError("objective 'task' needs labels (pass labels= to fit_head)")
        logits = self.predict(out)
        loss = F.cross_entropy(logits, target.long(), label_smoothing=self.label_smoothing)
        acc = (logits.argmax(1) == target).float().mean().item()
        return loss, {"acc": acc}


class _TeacherWrap(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class DistillObjective(Objective):
    """KL(teacher(x) || student(y_hat)) with temperature ``tau``: label-free, the backbone's own classifier.

    Args:
        head: the head being trained (needs a synthesis transform when ``teacher`` is a module/callable).
        teacher: ``nn.Module`` or callable mapping backbone features (N, C[, *]) to logits (N, K)
            (e.g. ``Backbone.classify``); or None when teacher logits come with every batch as ``target``.
        num_classes: K, only when ``teacher`` is None (the student is then a fresh classifier on y_hat).
        student: ``"teacher"`` (frozen teacher on ``g_s(y_hat)``), or ``"copy"`` (a trainable copy of the
            teacher module, initialized from it, on ``g_s(y_hat)``).
        tau: softmax temperature (loss is multiplied by ``tau**2``, Hinton et al. 2015).
        hidden: hidden width of the fresh student classifier (teacher=None only).

    Loss unit: nats per example (mean over the batch). Metric ``agree``: top-1 agreement.
    """

    name = "distill"
    metric = "agree"

    def __init__(self, head: CompressibleHead, teacher: Any = None, *, num_classes: int | None = None,
                 student: str = "teacher", tau: float = 1.0, hidden: int | None = None) -> None:
        super().__init__()
        self.tau = float(tau)
        if teacher is None:
            if not num_classes:
                raise ConfigError("objective 'distill': give a teacher module/callable, or num_classes with teacher logits")
            self.teacher = None
            self.student = _mlp(head.latent_channels, int(num_classes), hidden, 0.0)
            self.uses_synthesis = False
        else:
            if head.synthesis is None:
                raise ConfigError("objective 'distill' with a teacher classifier needs a head with a synthesis transform "
                                  "(synthesis='linear')")
            t = teacher if isinstance(teacher, nn.Module) else _TeacherWrap(teacher)
            if student == "copy":
                if not isinstance(teacher, nn.Module):
                    raise ConfigError("objective 'distill': student='copy' needs the teacher as an nn.Module")
                self.student = copy.deepcopy(t)
                for p in self.student.parameters():
                    p.requires_grad_(True)
            elif student == "teacher":
                self.student = None
            else:
                raise ConfigError(f"objective 'distill': student must be 'teacher' or 'copy', got {student!r}")
            # the teacher is frozen and not part of the objective's parameters
            object.__setattr__(self, "teacher", t)
            for p in t.parameters():
                p.requires_grad_(False)
            self.uses_synthesis = True

    def teacher_logits(self, x: Tensor) -> Tensor:
        if self.teacher is None:
            raise ConfigError("objective 'distill': no teacher module; teacher logits must be given as targets")
        self.teacher.to(x.device)
        with torch.no_grad():
            return self.teacher(x).float()

    def predict(self, out: HeadOutput) -> Tensor:
        if not self.uses_synthesis:
            return self.student(pool_positions(out.y_hat))
        net = self.student if self.student is not None else self.teacher
        net.to(out.x_hat.device)
        return net(out.x_hat)

    def forward(self, out, x, target):
        t = target.float() if target is not None and target.ndim == 2 and self.teacher is None else self.teacher_logits(x)
        s = self.predict(out)
        tau = self.tau
        loss = F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), log_target=True,
                        reduction="batchmean") * tau * tau
        agree = (s.argmax(1) == t.argmax(1)).float().mean().item()
        return loss, {"agree": agree}


class ReconstructObjective(Objective):
    """Distortion between ``g_s(y_hat)`` and the backbone features ``x``.

    Args:
        head: the head being trained (must have a synthesis transform).
        metric: ``"mse"`` (mean squared error per element, backbone feature units squared) or
            ``"cosine"`` (``1 - cos`` per C-vector, averaged over vectors).

    Metric reported: ``mse`` or ``cos`` (cosine similarity, higher is better).
    """

    name = "reconstruct"

    def __init__(self, head: CompressibleHead, *, metric: str = "mse", eps: float = 1e-3) -> None:
        super().__init__()
        if head.synthesis is None:
            raise ConfigError("objective 'reconstruct' needs a head with a synthesis transform (synthesis='linear')")
        if metric not in ("mse", "cosine", "whitened"):
            raise ConfigError(f"objective 'reconstruct': metric must be 'mse', 'cosine' or 'whitened', got {metric!r}")
        self.kind = metric
        self.metric = "cos"
        self.eps = float(eps)
        self.register_buffer("whiten", torch.eye(head.config.in_channels))

    def prepare(self, x: Tensor) -> None:
        if self.kind == "whitened":
            self.whiten = whitening_matrix(x, self.eps).to(self.whiten.device)

    def forward(self, out, x, target):
        xh = out.x_hat
        cos = F.cosine_similarity(xh.float(), x.float(), dim=1).mean()
        metrics = {"cos": cos.item(), "mse": F.mse_loss(xh.detach(), x).item()}
        if self.kind == "mse":
            loss = F.mse_loss(xh.float(), x.float())
        elif self.kind == "whitened":
            loss = _whitened_sq_error(xh, x, self.whiten)
            metrics["wmse"] = loss.item()
        else:
            loss = 1.0 - cos
        return loss, metrics


class DistillReconstructObjective(Objective):
    """``distill`` + ``alpha`` x whitened reconstruction: the teacher's decisions and the feature space.

    Args:
        head: the head (needs a synthesis transform).
        teacher, tau, student: as :class:`DistillObjective` (a teacher module or callable is required).
        alpha: weight of the whitened squared error (per element) against the KL (nats per example).
        eps: the whitening's regularizer (:func:`whitening_matrix`).

    Metric ``agree`` (top-1 agreement with the teacher); also reports ``kl`` and ``wmse``.
    """

    name = "distill_reconstruct"
    metric = "agree"

    def __init__(self, head: CompressibleHead, teacher: Any = None, *, alpha: float = 1.0, tau: float = 1.0,
                 student: str = "teacher", eps: float = 1e-3) -> None:
        super().__init__()
        if teacher is None:
            raise ConfigError("objective 'distill_reconstruct' needs a teacher classifier (module or callable)")
        self.distill = DistillObjective(head, teacher, tau=tau, student=student)
        self.recon = ReconstructObjective(head, metric="whitened", eps=eps)
        self.alpha = float(alpha)

    def prepare(self, x: Tensor) -> None:
        self.recon.prepare(x)

    def predict(self, out: HeadOutput) -> Tensor:
        return self.distill.predict(out)

    def forward(self, out, x, target):
        kl, m = self.distill(out, x, None)
        w, r = self.recon(out, x, None)
        return kl + self.alpha * w, {"agree": m["agree"], "kl": kl.item(), "wmse": r["wmse"], "mse": r["mse"]}


class PairObjective(Objective):
    """InfoNCE on pairs of nearby frames: the information two frames of one video share survives coding.

    Input clips ``(N, C, 2)``: frame 0 and a frame a few steps later of the same video (see
    :func:`featcomp.train.loop.frame_pairs`); the rate is bits per frame. Each frame's quantized latent
    is mapped by a small trainable projection to ``dim`` unit vectors; the loss is the symmetric
    cross-entropy of finding a frame's partner among the batch's other frames (similarity / ``temperature``),
    ``log(batch) - loss`` being a lower bound on the two latents' mutual information (arXiv:1807.03748).

    Args:
        head: the head being trained.
        dim: projection width. temperature: softmax temperature of the similarities.
        beta: weight of an added whitened reconstruction of both frames (needs a synthesis transform), or 0.
        eps: the whitening's regularizer.

    Metric ``pair_acc``: fraction of frames whose partner is the most similar in the batch.
    """

    name = "pairs"
    metric = "pair_acc"

    def __init__(self, head: CompressibleHead, *, dim: int = 128, temperature: float = 0.1, beta: float = 0.0,
                 eps: float = 1e-3) -> None:
        super().__init__()
        c = head.latent_channels
        self.proj = nn.Sequential(nn.Linear(c, max(dim, c)), nn.GELU(), nn.Linear(max(dim, c), dim))
        self.temperature = float(temperature)
        self.beta = float(beta)
        if self.beta > 0:
            self.recon = ReconstructObjective(head, metric="whitened", eps=eps)
        else:
            self.recon = None

    def prepare(self, x: Tensor) -> None:
        if self.recon is not None:
            self.recon.prepare(x)

    def forward(self, out, x, target):
        y = out.y_hat
        if y.ndim != 3 or y.shape[2] != 2:
            raise ConfigError(f"objective 'pairs' trains on frame pairs (N, C, 2); got latents {tuple(y.shape)}")
        z = F.normalize(self.proj(y.movedim(2, 1).float()), dim=-1)  # (N, 2, dim)
        sim = z[:, 0] @ z[:, 1].T / self.temperature
        idx = torch.arange(sim.shape[0], device=sim.device)
        loss = 0.5 * (F.cross_entropy(sim, idx) + F.cross_entropy(sim.T, idx))
        acc = (sim.argmax(1) == idx).float().mean().item()
        metrics = {"pair_acc": acc, "nce": loss.item()}
        if self.recon is not None:
            w, r = self.recon(out, x, None)
            loss = loss + self.beta * w
            metrics["wmse"] = r["wmse"]
        return loss, metrics


def _task_factory(head: CompressibleHead, *, num_classes: int | None = None, labels: Any = None, **opts) -> Objective:
    if num_classes is None:
        if labels is None:
            raise ConfigError("objective 'task' needs labels (or num_classes)")
        num_classes = int(np.asarray(labels).max()) + 1
    return TaskObjective(head.latent_channels, int(num_classes), **opts)


def _distill_factory(head: CompressibleHead, *, teacher: Any = None, labels: Any = None, **opts) -> Objective:
    if teacher is None and labels is not None and np.asarray(labels).ndim == 2:
        opts.setdefault("num_classes", np.asarray(labels).shape[1])
    return DistillObjective(head, teacher, **opts)


def _reconstruct_factory(head: CompressibleHead, *, labels: Any = None, **opts) -> Objective:
    return ReconstructObjective(head, **opts)


def _distill_reconstruct_factory(head: CompressibleHead, *, teacher: Any = None, labels: Any = None,
                                 **opts) -> Objective:
    return DistillReconstructObjective(head, teacher, **opts)


def _pairs_factory(head: CompressibleHead, *, labels: Any = None, **opts) -> Objective:
    return PairObjective(head, **opts)


register_objective("task", _task_factory)
register_objective("distill", _distill_factory)
register_objective("reconstruct", _reconstruct_factory)
register_objective("distill_reconstruct", _distill_reconstruct_factory)
register_objective("pairs", _pairs_factory)

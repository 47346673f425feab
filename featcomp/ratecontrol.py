"""Per-frame rate control: the encoder keeps the teacher's decision with as few bits as it can (layer 2).

A variable-rate head (``HeadConfig.rate_lams``: levels 0 = finest step ... L-1 = coarsest) with a
factorized codec shares **one** set of integer tables across its levels: the level only sets the
quantization step, i.e. how the encoder rounds and how the decoder dequantizes. So the encoder is free
to pick a level **per frame**, and the decoder needs nothing but that level (a few bits per frame) to
dequantize. This is encoder-side rate control, the way video encoders spend bits where a metric needs
them: the encoder runs the backbone anyway, so it has the backbone's own classifier (the ``distill``
teacher) and can check each candidate level against it.

Rule (:class:`RateControl`, :func:`choose_levels`), for a batch of frames with features ``x``:

1. the reference decision is the teacher's top-1 on ``x``;
2. for every candidate level, the frame is quantized at that level, dequantized, mapped back by the
   head's synthesis and classified by the teacher; a level *keeps* the frame when the top-1 is unchanged;
3. each frame gets the **coarsest** level that keeps it; a frame that no level keeps (rare: the
   projection itself flips it) gets the finest level (best fidelity);
4. with ``target_agreement < 1``, the encoder may give up on ``floor((1 - target) * n)`` frames of the
   batch (frames that no level keeps count against this quota first): the ones whose kept level costs
   the most bits over the coarsest level's (the codec's ideal per-frame cost) are moved to the coarsest
   level. The agreement of the batch is then >= ``target_agreement`` by construction, on any video.

**Generic fidelity targets** (backbones with no classifier, or a budget instead of a decision):
``RateControl(criterion="distortion", budget=D)`` keeps a frame when its decoded features are within a
relative squared error ``||x_hat - x||^2 / ||x||^2 <= D`` of the originals (no teacher needed);
``criterion="kl", budget=B`` keeps it when ``KL(softmax(teacher(x)) || softmax(teacher(x_hat))) <= B``
nats. Steps 3 and 4 are the same: the coarsest level that keeps the frame, and the give-up quota.

The quota applies per call: per clip in :meth:`featcomp.Extractor.compress`, per batch of frames in
other callers. Decoding needs no teacher, no backbone and no float context: the levels are stored
integers (clip format version 3, :class:`featcomp.model.CompressedClip`).

**With a temporal codec** (``entropy_model="temporal"``, :func:`featcomp.train.fit_temporal_codec` with
``rate_control=``): the levels still only set the step, so the same rule applies; frame t's integers are
coded given frame t-1's integers as they were coded, whatever its level (the context does not know the
levels, docs/decisions.md). The give-up ranking prices frames in sequence (:func:`frame_bits`): each
frame's cost at its chosen level within the chosen sequence against its cost within the all-coarse
sequence, the call's frames as one chunk. That is an approximation (moving a frame also changes its
successor's context, and clips restart every 256 frames); the agreement guarantee does not depend on it.

The shared tables should match what the rate control produces (mostly coarse levels, a few fine ones):
:func:`fit_rate_control_codec` refits them on **training** features run through the same rule. This
module needs torch (the head and the teacher) and numpy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from featcomp.config import Config, require
from featcomp.errors import ConfigError

__all__ = ["RateControl", "LevelChoice", "choose_levels", "fit_rate_control_codec", "step_ladder_head",
           "teacher_ladder_head", "check_rate_controllable", "frame_bits", "MAX_LEVELS", "CRITERIA", "DEFAULT_LADDER"]

MAX_LEVELS = 256  # levels are stored as unsigned bytes / packed bit fields
CRITERIA = ("top1", "distortion", "kl")
#: the 11-step ladder of docs/rd.md and docs/generality.md (steps of the teacher-SVD latents, finest first)
DEFAULT_LADDER = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
_POOLED_FIT_ROWS = 4096  # rows per level for the shared tables' first fit (the rule's refit then sees every row)


@dataclasses.dataclass(frozen=True)
class RateControl(Config):
    """Per-frame level choice that keeps a fidelity criterion (see the module docstring).

    Attributes:
        target_agreement: fraction of frames that must meet the criterion (1.0 = every frame that
            some level keeps). Below 1, the most expensive ``floor((1 - target) * n)`` frames of a call
            are coded at the coarsest level.
        levels: candidate levels (ints of the head), empty = all of the head's levels.
        batch_size: frames per teacher call while trying levels (memory bound, not a result).
        criterion: what "keeps a frame" means: ``"top1"`` (the teacher's top-1 is unchanged, the default),
            ``"distortion"`` (relative squared error of the decoded features <= ``budget``; needs no
            teacher) or ``"kl"`` (KL divergence of the teacher's softmax <= ``budget`` nats).
        budget: the criterion's bound (``"distortion"``, ``"kl"``); None for ``"top1"``.
    """

    target_agreement: float = 1.0
    levels: tuple = ()
    batch_size: int = 256
    criterion: str = "top1"
    budget: float | None = None

    @property
    def needs_teacher(self) -> bool:
        """Whether choosing levels calls the backbone's classifier."""
        return self.criterion != "distortion"

    def __post_init__(self) -> None:
        require(0.0 < float(self.target_agreement) <= 1.0,
                f"RateControl.target_agreement must be in (0, 1], got {self.target_agreement}")
        require(self.criterion in CRITERIA,
                f"RateControl.criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        if self.criterion == "top1":
            require(self.budget is None, "RateControl: criterion 'top1' takes no budget (the teacher's top-1 is kept)")
        else:
            ok = isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool)
            require(ok and math.isfinite(float(self.budget)) and float(self.budget) > 0.0,
                    f"RateControl: criterion {self.criterion!r} needs a finite budget > 0, got {self.budget!r}")
            object.__setattr__(self, "budget", float(self.budget))
        lv = tuple(int(v) for v in self.levels)
        require(all(0 <= v < MAX_LEVELS for v in lv), f"RateControl.levels must be in [0, {MAX_LEVELS}), got {lv}")
        require(len(set(lv)) == len(lv), f"RateControl.levels has duplicates: {lv}")
        require(int(self.batch_size) >= 1, f"RateControl.batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "levels", tuple(sorted(lv)))


@dataclasses.dataclass
class LevelChoice:
    """What :func:`choose_levels` returns for n frames.

    Attributes:
        k: int32 (n, C') the latents to code (frame i quantized at ``levels[i]``).
        levels: uint8 (n,) the level of each frame.
        kept: bool (n,) the decoded frame meets the criterion (default: the teacher's top-1 on it equals
            its top-1 on the original).
        bits: float64 (n,) the codec's ideal cost of each frame (no level index, no framing).
    """

    k: np.ndarray
    levels: np.ndarray
    kept: np.ndarray
    bits: np.ndarray

    @property
    def agreement(self) -> float:
        return float(self.kept.mean()) if self.kept.size else 1.0


def check_rate_controllable(head) -> tuple[int, ...]:
    """The head's levels (0..L-1), or a :class:`ConfigError` saying why this head cannot be rate-controlled
    per frame (fixed rate, too many levels, a conditional entropy model, no synthesis)."""
    levels = int(getattr(head.config, "rate_levels", 0))
    if levels < 2:
        raise ConfigError("per-frame rate control needs a variable-rate head (HeadConfig.rate_lams with >= 2 levels); "
                          "this head has a fixed rate")
    if levels > MAX_LEVELS:
        raise ConfigError(f"per-frame rate control stores levels in one byte; this head has {levels} levels")
    from featcomp.entropy.kinds import codec_kind, entropy_kind

    if not entropy_kind(codec_kind(head)).rate_control:
        raise ConfigError(f"per-frame rate control needs an entropy model whose frames may change level (such as "
                          f"'factorized' or 'temporal'); this head's entropy model is {codec_kind(head)!r}")
    if head.config.synthesis == "none":
        raise ConfigError("per-frame rate control checks the teacher on the decoded features, so the head needs a "
                          "synthesis transform (HeadConfig.synthesis)")
    return tuple(range(levels))


@torch.no_grad()
def choose_levels(head, features: Tensor | np.ndarray, teacher: Callable[[Tensor], Tensor] | None,
                  control: RateControl | None = None) -> LevelChoice:
    """Pick each frame's rate level (module docstring) and quantize it there.

    Args:
        head: a variable-rate :class:`~featcomp.head.FrozenHead` with a factorized codec and a synthesis.
        features: float (n, C) backbone features (pooled: the teacher classifies them).
        teacher: features (m, C) -> logits (m, K), e.g. ``backbone.classify``; may be None with
            ``criterion="distortion"``.
        control: the rule's settings (default :class:`RateControl`()).

    Returns:
        :class:`LevelChoice`.

    Raises:
        ConfigError: a fixed-rate head or a hyperprior one, no synthesis, a candidate level the head lacks,
            or no teacher for a criterion that needs one.
    """
    control = control or RateControl()
    if teacher is None and control.needs_teacher:
        raise ConfigError(f"choose_levels: criterion {control.criterion!r} needs a teacher (the backbone's "
                          "classifier); use criterion='distortion' for a backbone with none")
    all_levels = check_rate_controllable(head)
    cands = control.levels or all_levels
    bad = [v for v in cands if v not in all_levels]
    if bad:
        raise ConfigError(f"RateControl.levels {bad} are not levels of this head (it has {len(all_levels)})")
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features).float()
    if x.ndim != 2 or x.shape[1] != head.in_channels:
        raise ConfigError(f"choose_levels: expected pooled features (n, {head.in_channels}), got {tuple(x.shape)}")
    x = x.to(head.scale.device)
    n = x.shape[0]
    if n == 0:
        z = np.zeros(0)
        return LevelChoice(np.zeros((0, head.latent_channels), np.int32), z.astype(np.uint8), z.astype(bool), z)
    bs = int(control.batch_size)
    keeps = _criterion(control, x, teacher)
    ks, ok = [], []
    for lv in cands:
        k = head.encode(x, rate=lv)
        y = torch.from_numpy(head.decode(k, levels=np.full(n, lv)))
        ks.append(k)
        ok.append(np.concatenate([keeps(i, head.synthesize(y[i:i + bs]).to(x.device)) for i in range(0, n, bs)]))
    okm = np.stack(ok)  # (levels, n)
    kstack = np.stack(ks)  # (levels, n, C')
    idx = np.arange(n)
    any_ok = okm.any(0)
    # coarsest keeping candidate (candidates ascend: finest first); none keeps -> the finest
    pick = np.where(any_ok, len(cands) - 1 - np.argmax(okm[::-1], axis=0), 0)
    quota = math.floor((1.0 - float(control.target_agreement)) * n + 1e-9) - int((~any_ok).sum())
    coarse = len(cands) - 1
    if quota > 0:
        chosen_bits = frame_bits(head.codec, kstack[pick, idx])
        coarse_bits = frame_bits(head.codec, ks[coarse])
        saving = np.where(any_ok & (pick != coarse), chosen_bits - coarse_bits, -np.inf)
        order = np.argsort(-saving, kind="stable")[:quota]
        pick[order[np.isfinite(saving[order])]] = coarse
    k = kstack[pick, idx]
    kept = okm[pick, idx]
    levels = np.asarray(cands, np.uint8)[pick]
    return LevelChoice(k=np.ascontiguousarray(k, np.int32), levels=levels, kept=kept, bits=frame_bits(head.codec, k))


def frame_bits(codec, k: np.ndarray) -> np.ndarray:
    """float64 (n,) the codec's ideal cost of each frame of ``k`` (n, C'): independent frames for a
    factorized codec (``example_bits``), frames coded in sequence, each given its predecessor, for a
    temporal one (``frame_bits``: the frames of one call are one time-ordered sequence)."""
    per_frame = getattr(codec, "frame_bits", None)
    return per_frame(k) if callable(per_frame) else codec.example_bits(k)


def _criterion(control: RateControl, x: Tensor, teacher) -> Callable[[int, Tensor], np.ndarray]:
    """``keeps(i, x_hat)``: bool per frame of the batch starting at frame ``i`` whose decoded features are
    ``x_hat``, under ``control``'s criterion (the teacher's reference outputs computed once here)."""
    bs = int(control.batch_size)
    n = x.shape[0]
    if control.criterion == "distortion":
        energy = x.pow(2).sum(1).clamp_min(1e-12)

        def keeps(i, xh):
            err = (xh.float() - x[i:i + len(xh)]).pow(2).sum(1) / energy[i:i + len(xh)]
            return (err <= control.budget).cpu().numpy()

        return keeps
    logits = torch.cat([teacher(x[i:i + bs]).float() for i in range(0, n, bs)])
    if control.criterion == "top1":
        ref = logits.argmax(1)

        def keeps(i, xh):
            return (teacher(xh).argmax(1) == ref[i:i + len(xh)]).cpu().numpy()

        return keeps
    logp = torch.log_softmax(logits, 1)

    def keeps(i, xh):
        lp = logp[i:i + len(xh)]
        kl = (lp.exp() * (lp - torch.log_softmax(teacher(xh).float(), 1))).sum(1)
        return (kl <= control.budget).cpu().numpy()

    return keeps


def fit_rate_control_codec(head, features: Tensor | np.ndarray, teacher: Callable[[Tensor], Tensor] | None,
                           control: RateControl | None = None, *, rounds: int = 2, precision: int = 16,
                           chunk: int = 4096):
    """Refit a variable-rate head's shared tables to the symbols per-frame rate control produces.

    The head's own tables price every level alike (training mixes them); under rate control most frames
    sit at coarse levels. This runs :func:`choose_levels` on **training** features (never on the clips
    you evaluate on) and fits :meth:`~featcomp.entropy.EntropyCodec.fit` tables on the chosen latents,
    keeping the head's quantization offsets (so the latents do not change). ``rounds`` repeats the choice
    with the new tables (the give-up ranking depends on them).

    Args:
        head: a variable-rate :class:`~featcomp.head.FrozenHead` (factorized, with synthesis).
        features: float (N, C) training features.
        teacher: features -> logits (None with ``criterion="distortion"``).
        control: the rule used at extraction (its ``target_agreement`` shapes the level mix).
        rounds: fit passes (>= 1).
        precision: table precision in bits.
        chunk: frames per :func:`choose_levels` call (the give-up quota applies per call, as it does per
            clip at extraction).

    Returns:
        a new FrozenHead with the same weights and the refitted codec (new digest).
    """
    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead

    check_rate_controllable(head)
    from featcomp.entropy.kinds import codec_kind

    if codec_kind(head) != "factorized":
        raise ConfigError(f"fit_rate_control_codec refits factorized tables; this head's entropy model is "
                          f"{codec_kind(head)!r} (fit a temporal codec under rate control with "
                          "featcomp.train.fit_temporal_codec(head, sequences, rate_control=...))")
    if rounds < 1:
        raise ConfigError(f"fit_rate_control_codec: rounds must be >= 1, got {rounds}")
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features).float()
    if x.shape[0] == 0:
        raise ConfigError("fit_rate_control_codec: no training features")
    cur = head
    state = head.state_tensors()
    offsets = np.asarray(head.codec.offsets, np.float32)
    for _ in range(rounds):
        k = np.concatenate([choose_levels(cur, x[i:i + chunk], teacher, control).k for i in range(0, len(x), chunk)])
        codec = EntropyCodec.fit(k, precision=precision, offsets=offsets)
        cur = FrozenHead(head.config, state, codec, rate=head.rate)
    return cur


def step_ladder_head(in_channels: int, latent_channels: int, steps, *, lams=None, **head_options):
    """A variable-rate :class:`~featcomp.head.CompressibleHead` whose level ``l`` quantizes every latent
    channel with step ``steps[l]`` (ascending), for rate control over a hand-set ladder of steps.

    The gains are set, not learned: ``scale = 1``, ``log_gains[l] = -log(steps[l])``. The head's
    ``rate_lams`` are nominal (``steps[l] ** 2``, the lambda a step corresponds to at high rate up to a
    constant); they only label the levels unless the head is trained further. ``lams`` (ascending, one per
    step) replaces them with real training lambdas, so that :func:`featcomp.train.train_head` can start
    joint training from the ladder (``train_head(x, head=head, lam=lams, objective="distill", ...)``
    needs ``lam == head.config.rate_lams``). ``head_options`` go to :class:`~featcomp.head.HeadConfig`
    (e.g. ``analysis``, ``synthesis``, ``standardize``). Initialize the transforms afterwards (e.g.
    :func:`featcomp.head.init_from_classifier`) and freeze with a codec fitted by
    :func:`fit_rate_control_codec`.

    Raises:
        ConfigError: fewer than 2 steps, more than :data:`MAX_LEVELS`, steps not positive and ascending, or
            ``lams`` not one positive ascending lambda per step.
    """
    from featcomp.head import CompressibleHead

    st = [float(v) for v in steps]
    if (not 2 <= len(st) <= MAX_LEVELS or not all(math.isfinite(v) and v > 0 for v in st)
            or any(a >= b for a, b in zip(st, st[1:]))):
        raise ConfigError(f"step_ladder_head: give 2..{MAX_LEVELS} positive ascending steps, got {st}")
    if lams is None:
        lv = tuple(v * v for v in st)
    else:
        lv = tuple(float(v) for v in lams)
        if len(lv) != len(st) or any(not v > 0 for v in lv) or any(a >= b for a, b in zip(lv, lv[1:])):
            raise ConfigError(f"step_ladder_head: lams must be {len(st)} positive ascending lambdas (one per "
                              f"step), got {list(lv)}")
    head = CompressibleHead(in_channels=in_channels, latent_channels=latent_channels, init_scale=1.0,
                            rate_lams=lv, **head_options)
    with torch.no_grad():
        head.log_scale.zero_()
        head.log_gains.copy_(-torch.log(torch.tensor(st, dtype=torch.float64))[:, None].expand_as(head.log_gains))
    return head


def _linear_weight(teacher) -> Tensor:
    """The (K, C) weight of a linear teacher: an ``nn.Linear``, or a Sequential of dropout/identity layers
    around one (torchvision's ``classifier`` blocks)."""
    w = getattr(teacher, "weight", None)
    if isinstance(w, Tensor) and w.ndim == 2:
        return w
    if isinstance(teacher, torch.nn.Sequential):
        lins = [m for m in teacher if isinstance(m, torch.nn.Linear)]
        rest = [m for m in teacher if not isinstance(m, (torch.nn.Linear, torch.nn.Dropout, torch.nn.Identity))]
        if len(lins) == 1 and not rest:
            return lins[0].weight
    raise ConfigError(f"the teacher-SVD ladder needs a linear teacher (an nn.Linear, or dropout + one Linear); got "
                      f"{type(teacher).__name__}")


@torch.no_grad()
def teacher_ladder_head(features: Tensor | np.ndarray, teacher, *, latent_channels: int = 1000,
                        steps=DEFAULT_LADDER, control: RateControl | None = None, rounds: int = 2):
    """The hand-built rate-control head of docs/rd.md: a teacher-SVD projection quantized on a step ladder.

    The analysis is the projection onto the ``d`` right singular directions of the teacher's weight
    (:func:`featcomp.head.init_from_classifier`, no training, so nothing is fitted to the training
    videos but the input mean and the tables), ``d = min(latent_channels, rank)``; level ``l`` quantizes
    every latent with step ``steps[l]`` (:func:`step_ladder_head`); the shared tables are fitted on every
    level's symbols, then refitted under ``control`` on the training features
    (:func:`fit_rate_control_codec`). On unseen clips this head beat every jointly trained one
    (docs/decisions.md, issue 18 item 4). CLI: ``featcomp train --objective distill --teacher ... --ladder``.

    Args:
        features: float (N, C) training features (pooled, the teacher's input).
        teacher: the linear classifier (``nn.Linear`` or dropout + ``nn.Linear``): features -> logits.
        latent_channels: the most latents (the teacher's rank bounds it).
        steps: the ladder, ascending (default :data:`DEFAULT_LADDER`).
        control: the rate control the tables are fitted for (default ``RateControl(0.95)``), the one to
            extract with.
        rounds: :func:`fit_rate_control_codec` passes.

    Returns:
        a variable-rate factorized :class:`~featcomp.head.FrozenHead` with a linear synthesis.

    Raises:
        ConfigError: a teacher that is not linear, features of the wrong shape, a bad ladder.
    """
    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead, init_from_classifier

    control = control or RateControl(target_agreement=0.95)
    w = _linear_weight(teacher).detach().float().cpu()
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features).float().cpu()
    if x.ndim != 2 or x.shape[1] != w.shape[1] or x.shape[0] < 2:
        raise ConfigError(f"teacher_ladder_head: expected pooled features (N >= 2, {w.shape[1]}) for a teacher of "
                          f"{w.shape[1]} inputs, got {tuple(x.shape)}")
    if int(latent_channels) < 1:
        raise ConfigError(f"teacher_ladder_head: latent_channels must be >= 1, got {latent_channels}")
    d = min(int(latent_channels), *w.shape)
    head = step_ladder_head(x.shape[1], d, steps, analysis="linear", synthesis="linear")
    head.set_input_stats(x)
    init_from_classifier(head, w)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, d), np.int32)))
    rows = x[torch.from_numpy(np.random.default_rng(0).permutation(len(x))[:_POOLED_FIT_ROWS])]
    pooled = np.concatenate([probe.encode(rows, rate=lv) for lv in range(head.config.rate_levels)])
    frozen = FrozenHead.from_head(head, EntropyCodec.fit(pooled))
    was = getattr(teacher, "training", None)
    if was is not None:
        teacher.eval()
    try:
        return fit_rate_control_codec(frozen, x, teacher if control.needs_teacher else None, control, rounds=rounds)
    finally:
        if was is not None:
            teacher.train(was)

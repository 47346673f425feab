"""Fit a temporal entropy model to a trained head's own integers: same latents, fewer bits.

Training a head with the factorized rate and then coding its latents with a temporal prior fitted to
them afterwards is the recipe that codes held-out video with the fewest bits at a given quality in our
measurements (docs/temporal.md, "same integers"): 1.53-1.54x fewer bits than the factorized codec at
the two highest rates on later segments of real clips at 5 fps. The fit changes only the entropy model,
so the reconstruction and task quality stay exactly those of the head. Joint training with the temporal
rate was measured at 1.10-1.31x on the same data.

:func:`fit_temporal_codec` does the second step: it encodes the training sequences with the frozen
head, fits a :class:`~featcomp.entropy.temporal_prior.TemporalPrior` to the integers
(:func:`~featcomp.entropy.temporal_prior.fit_temporal_prior`), and returns a head with the same weights
and the frozen temporal codec on the same quantization grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from featcomp.entropy import EntropyCodec, HyperpriorCodec, codec_kind
from featcomp.entropy.temporal_prior import TemporalPrior, fit_temporal_prior
from featcomp.errors import ConfigError

__all__ = ["fit_hyperprior_fallback", "fit_temporal_codec"]


def fit_temporal_codec(head: Any, sequences: Sequence[Any], *, window: int = 4, steps: int = 1000,
                       batch: int = 64, lr: float = 3e-2, prior: dict | None = None, seed: int = 0,
                       val: Sequence[Any] | None = None, eval_every: int = 100, history: list | None = None,
                       init_scales: str = "data", rate_control: Any = None,
                       teacher: Callable[[Any], Any] | None = None) -> Any:
    """A copy of ``head`` whose codec is a temporal codec fitted to ``head``'s integer latents.

    Args:
        head: a fixed-rate factorized :class:`~featcomp.head.FrozenHead` (a trained
            :class:`~featcomp.head.CompressibleHead` is frozen first).
        sequences: training feature sequences, each float (T_i, C, *) in time order at the sampling rate
            the head will be used at (e.g. 5 fps). Those shorter than ``window`` are skipped.
        window, steps, batch, lr, seed: the fit (:func:`~featcomp.entropy.temporal_prior.fit_temporal_prior`).
            With ``val``, ``steps`` is the most it runs (give more, e.g. 3000).
        val: held-out feature sequences (T_i, C, *), ideally other videos or later segments (not
            near-duplicates of training sequences, such as other sampling phases of the same frames):
            the fit keeps the parameters that code their integers (each sequence as one chunk) in the
            fewest bits, checked every ``eval_every`` steps (early stopping; ``history`` receives
            ``(step, bits per frame)``). Without it all ``steps`` run: the default 1000 is about the
            median of the steps validation chose on our clips (700-3000, docs/temporal.md).
        prior: :class:`~featcomp.entropy.temporal_prior.TemporalPrior` options (default: diagonal
            context, restart flags).
        init_scales: ``"data"`` (default): the prior's scales start at the training latents' own
            (:meth:`~featcomp.entropy.temporal_prior.TemporalPrior.init_scales_from`); ``"unit"``: at
            sigma = 1 (before 2026-12: mostly-zero latents then cost 1.6-3.3x more after 400 steps).
        rate_control: with a **variable-rate** head, the per-frame rate control the codec will serve
            (:class:`~featcomp.ratecontrol.RateControl` or its dict): every training and validation
            sequence is encoded the way extraction will encode it (:func:`~featcomp.ratecontrol.choose_levels`
            over the whole sequence, its give-up quota per sequence, as per clip at extraction), and the
            prior is fitted on those integers. Sequences are pooled features (T, C). Required for a
            variable-rate head, refused for a fixed-rate one.
        teacher: features (n, C) -> logits, e.g. ``backbone.classify``: the teacher ``rate_control``'s
            criterion needs (None for ``criterion="distortion"``).

    Returns:
        a :class:`~featcomp.head.FrozenHead` with the same weights and config (``entropy_model`` set to
        ``"temporal"``), whose ``encode`` gives exactly ``head.encode``'s integers and whose codec codes
        them as time chunks (``codec.compress_symbols(k)`` with k (T, C', *)).

    Raises:
        ConfigError: a non-factorized head; a variable-rate head without ``rate_control`` (or a fixed-rate
            one with it); a criterion that needs a teacher without one; no sequence of at least
            ``window`` frames.
    """
    from featcomp.head import FrozenHead

    if not isinstance(head, FrozenHead) and hasattr(head, "freeze"):
        head = head.freeze()
    if not isinstance(getattr(head, "codec", None), EntropyCodec):
        raise ConfigError("fit_temporal_codec: give a head with the factorized codec "
                          f"(got kind {getattr(head, 'kind', None)!r})")
    encode = sequence_encoder(head, rate_control, teacher)
    opts = dict(prior or {})
    ks = []
    with torch.no_grad():
        for s in sequences:
            if len(s) >= window:
                ks.append(encode(s))
    if not ks:
        raise ConfigError(f"fit_temporal_codec: no training sequence has {window} or more frames")
    with torch.no_grad():
        vks = [encode(s) for s in (val or []) if len(s) >= 2]
    offsets = np.asarray(head.codec.offsets, np.float32)
    if init_scales not in ("data", "unit"):
        raise ConfigError(f"fit_temporal_codec: init_scales must be 'data' or 'unit', got {init_scales!r}")
    p = TemporalPrior(offsets.size, **opts)
    if init_scales == "data":
        p.init_scales_from([np.asarray(k) for k in ks])
    fit_temporal_prior(p, ks, window=window, steps=steps, batch=batch, lr=lr, seed=seed, val=vks or None,
                       eval_every=eval_every, history=history)
    codec = p.freeze(offsets)
    config = dataclasses.replace(head.config, entropy_model=codec_kind(codec), prior=opts)
    return FrozenHead(config, head.state_tensors(), codec, rate=head.rate)


def sequence_encoder(head: Any, rate_control: Any, teacher: Any) -> Callable[[Any], np.ndarray]:
    """``encode(sequence) -> int latents``: the head's own integers at its rate (fixed-rate head), or the
    rate-controlled ones (variable-rate head with ``rate_control``), as extraction will code them. The one
    rule for every caller that fits or judges a temporal codec (:func:`fit_temporal_codec`, ``featcomp train
    --temporal auto``, ``featcomp refit-temporal``'s summary)."""
    if not head.config.rate_levels:
        if rate_control is not None:
            raise ConfigError("fit_temporal_codec: rate_control is for a variable-rate head (HeadConfig.rate_lams); "
                              "this head has a fixed rate")
        return lambda s: head.encode(torch.as_tensor(np.asarray(s, np.float32)))
    from featcomp.ratecontrol import RateControl, check_rate_controllable, choose_levels

    if rate_control is None:
        raise ConfigError(f"fit_temporal_codec: this head has {head.config.rate_levels} rate levels; give "
                          "rate_control= (the per-frame rate control extraction will use), so the codec is fitted "
                          "on the integers it will code")
    control = RateControl.from_dict(rate_control) if isinstance(rate_control, dict) else rate_control
    if not isinstance(control, RateControl):
        raise ConfigError(f"fit_temporal_codec: rate_control must be a RateControl, got {type(control).__name__}")
    check_rate_controllable(head)
    if control.needs_teacher and teacher is None:
        raise ConfigError(f"fit_temporal_codec: rate-control criterion {control.criterion!r} needs teacher= (the "
                          "backbone's classifier); criterion 'distortion' needs none")

    def encode(s: Any) -> np.ndarray:
        x = np.asarray(s, np.float32)
        if x.ndim != 2:
            raise ConfigError(f"fit_temporal_codec: rate control codes pooled features (T, C); got a sequence of "
                              f"shape {x.shape}")
        return choose_levels(head, x, teacher, control).k

    return encode


def fit_hyperprior_fallback(head: Any, maps: Any, *, batch: int = 256) -> Any:
    """A copy of a hyperprior ``head`` whose codec (version 3) may code a stream with a factorized fallback.

    The fallback is a per-channel :class:`~featcomp.entropy.EntropyCodec` fitted (``EntropyCodec.fit``)
    to the head's own integer latents of ``maps``; each stream is then coded with the side information
    and the Laplace tables or with the fallback, whichever is shorter (docs/entropy.md, hyperprior
    layout 3). The integers and the reconstruction are exactly the head's. It matters where the side
    information collapses (the lowest rates): there a density fitted to y costs less than the Laplace
    tables of one constant scale (docs/temporal.md).

    Args:
        head: a hyperprior :class:`~featcomp.head.FrozenHead` (a trained head is frozen first), codec
            version 2 (version-1 codecs cannot take a fallback).
        maps: float (N, C, H, W) training feature maps (not the maps you will evaluate on).
        batch: maps encoded per call.

    Returns:
        a :class:`~featcomp.head.FrozenHead` with the same weights and config and the version-3 codec.

    Raises:
        ConfigError: not a hyperprior head, or no maps.
    """
    from featcomp.head import FrozenHead

    if not isinstance(head, FrozenHead) and hasattr(head, "freeze"):
        head = head.freeze()
    if not isinstance(getattr(head, "codec", None), HyperpriorCodec):
        raise ConfigError(f"fit_hyperprior_fallback: give a hyperprior head (got kind {getattr(head, 'kind', None)!r})")
    x = np.asarray(maps, np.float32)
    if x.ndim != 4 or len(x) == 0:
        raise ConfigError(f"fit_hyperprior_fallback: maps must be a non-empty (N, C, H, W) array, got {x.shape}")
    with torch.no_grad():
        k = np.concatenate([np.asarray(head.encode(torch.from_numpy(x[i : i + batch]))) for i in range(0, len(x), batch)])
    codec = head.codec.with_fallback(EntropyCodec.fit(k))
    return FrozenHead(head.config, head.state_tensors(), codec, rate=head.rate)

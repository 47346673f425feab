"""The compressibility head (layer 2): analysis transform, learned quantization scale, entropy bottleneck.

Implements the head of "End-to-end learning of compressible features" (Singh, Abu-El-Haija, Johnston,
Ballé, Shrivastava, Toderici, ICIP 2020, arXiv:2007.11797): backbone features ``x`` pass through an
analysis transform ``y = g_a(x)`` and a per-channel quantization scale ``s`` (the "gain"); the latent
``y / s`` is quantized to integers and entropy-coded with the factorized prior of Ballé et al. 2018
(arXiv:1802.01436, :class:`featcomp.entropy.EntropyBottleneck`). An optional synthesis transform
``g_s`` maps the quantized latent back to the backbone's feature space (for the ``distill`` and
``reconstruct`` objectives).

Quantization during training (paper, Sec. 2):

* the **rate** path uses additive uniform noise ``U(-1/2, 1/2)`` (a differentiable upper bound of the
  bits the rounded latent costs);
* the **objective** path uses straight-through rounding by default (``objective_quant="ste"``): the
  objective sees exactly the values that will be stored, with identity gradients. ``"noise"`` feeds the
  noisy latent to the objective instead (the paper's variant for the rate term only).

Units: ``HeadOutput.bits`` is the entropy model's cost of each example's whole latent in **bits**
(summed over channels and any time/space positions), shape ``(N,)``.

After training, :meth:`CompressibleHead.freeze` returns a :class:`FrozenHead`: the analysis weights, the
frozen :class:`featcomp.entropy.EntropyCodec` (integer CDF tables and a digest) and the dequantization
``features = (k + offsets) * scale``. Its integer latents ``k`` are exactly what
``codec.compress_symbols`` codes; tables are never rebuilt on the decoding side.

Works on ``(N, C)``, ``(N, C, T)`` and ``(N, C, H, W)``: every transform acts on the channel axis 1
(a 1x1 convolution), positions are independent.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.entropy.kinds import entropy_kind
from featcomp.errors import ConfigError
from featcomp.head.config import HeadConfig
from featcomp.head.frozen import FrozenHead
from featcomp.head.layers import GDN, ChannelLinear, _bcast, _interp_log_gain

__all__ = ["CompressibleHead", "HeadOutput", "init_from_classifier"]


@dataclasses.dataclass
class HeadOutput:
    """What :meth:`CompressibleHead.forward` returns.

    Attributes:
        y_hat: float (N, C', *) the quantized latent in dequantized units, ``(k + offsets) * scale``
            (straight-through rounded in training with ``objective_quant="ste"``, noisy with ``"noise"``,
            rounded in eval). This is what a store decodes to and what the objective sees.
        bits: float (N,) bits of each example's latent (noisy upper bound in training, rounded
            estimate in eval), differentiable.
        x_hat: float (N, C, *) the synthesis transform of ``y_hat``, or None without synthesis.
        y: float (N, C', *) the unquantized latent in quantization units (``g_a(x) / scale``).
    """

    y_hat: Tensor
    bits: Tensor
    x_hat: Tensor | None
    y: Tensor


# --------------------------------------------------------------------------------------------------
# the head


class CompressibleHead(nn.Module):
    """Analysis transform + learned quantization scale + entropy bottleneck (+ optional synthesis).

    Args:
        config: a :class:`HeadConfig`, or None to build one from ``**kwargs``.
        **kwargs: :class:`HeadConfig` fields when ``config`` is None.

    Shapes:
        input ``x``: float (N, C, *) with C = ``config.in_channels`` (2-D, 3-D or 4-D);
        see :class:`HeadOutput` for the outputs.
    """

    def __init__(self, config: HeadConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            if "latent_channels" not in kwargs and kwargs.get("analysis") == "identity":
                kwargs["latent_channels"] = kwargs.get("in_channels")
            config = HeadConfig(**kwargs)
        elif kwargs:
            config = config.replace(**kwargs)
        self.config = config
        c, cl = config.in_channels, config.latent_channels
        self.register_buffer("input_mean", torch.zeros(c))
        self.register_buffer("input_std", torch.ones(c))
        if config.analysis == "identity":
            self.analysis = nn.Identity()
        elif config.analysis == "linear":
            self.analysis = ChannelLinear(c, cl)
        else:
            self.analysis = nn.Sequential(ChannelLinear(c, cl), GDN(cl))
        # quantization step per latent channel, log-parameterized (positive)
        self.log_scale = nn.Parameter(torch.full((cl,), math.log(config.init_scale)))
        # the entropy model, built by its registered kind's trainable half: a factorized bottleneck
        # (held as ``bottleneck``) or a conditional prior (held as ``prior``); the other stays None
        self._kind = entropy_kind(config.entropy_model).adapter()
        self.bottleneck = None
        self.prior = None
        setattr(self, self._kind.attr, self._kind.build(cl, config))
        # variable rate: one log-gain vector per level; step ~ sqrt(lambda) at high rate, hence the init
        if config.rate_levels:
            lams = torch.tensor(config.rate_lams, dtype=torch.float64)
            init = -0.5 * torch.log(lams / lams.log().mean().exp())
            self.log_gains = nn.Parameter(init[:, None].repeat(1, cl).float())
        else:
            self.log_gains = None
        if config.synthesis == "none":
            self.synthesis = None
        elif config.synthesis == "linear":
            self.synthesis = ChannelLinear(cl, c)
        else:
            self.synthesis = nn.Sequential(GDN(cl, inverse=True), ChannelLinear(cl, c))

    # ---------------------------------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scale(self) -> Tensor:
        """float (C',) the quantization step per latent channel (dequantization multiplies by it)."""
        return self.log_scale.exp()

    @torch.no_grad()
    def set_input_stats(self, features: Tensor | np.ndarray) -> None:
        """Set the standardization buffers from training features (N, C, *) (per-channel mean/std)."""
        x = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
        x = x.float().movedim(1, -1).reshape(-1, self.in_channels)
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp_min(1e-6))

    def _check(self, x: Tensor) -> None:
        if x.ndim < 2 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"CompressibleHead: expected features (N, {self.in_channels}, *), got shape {tuple(x.shape)}"
            )

    def log_gain(self, rate: float | None = None) -> Tensor | None:
        """float (C',) log of the gain of rate ``rate`` (a level, or a float between levels), or None.

        Between levels ``l`` and ``l + 1`` the log-gains are interpolated linearly (geometric
        interpolation of the gains). ``rate=None`` is level 0. A fixed-rate head returns None.

        Raises:
            ConfigError: a rate outside ``[0, levels - 1]`` or a rate given to a fixed-rate head.
        """
        return _interp_log_gain(self.log_gains, rate, "CompressibleHead")

    def effective_scale(self, rate: float | None = None) -> Tensor:
        """float (C',) the quantization step at ``rate``: ``scale / gain(rate)`` (``scale`` at fixed rate)."""
        lg = self.log_gain(rate)
        return self.scale if lg is None else self.scale * torch.exp(-lg)

    def quant_offsets(self, like: Tensor | None = None) -> Tensor:
        """float (C',) the quantization offsets (detached): the factorized bottleneck's medians, the
        hyperprior's learned offsets, or zeros for the temporal prior (its context predicts locations)."""
        off = self._kind.offsets(self.entropy_module, self.latent_channels, self.log_scale.device)
        return off if like is None else off.to(like.dtype)

    @property
    def entropy_module(self) -> nn.Module:
        """The trained entropy model (the factorized bottleneck or the conditional prior)."""
        return getattr(self, self._kind.attr)

    def entropy_parameters(self) -> list[nn.Parameter]:
        """The entropy model's parameters (bottleneck or prior), for a separate optimizer group."""
        return list(self.entropy_module.parameters())

    def analyze(self, x: Tensor, rate: float | None = None) -> Tensor:
        """The latent in quantization units: ``g_a(standardize(x)) / effective_scale(rate)``, (N, C', *)."""
        self._check(x)
        x = x.float()
        if self.config.standardize:
            x = (x - _bcast(self.input_mean, x.ndim)) / _bcast(self.input_std, x.ndim)
        y = self.analysis(x)
        return y / _bcast(self.effective_scale(rate), y.ndim)

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """Map a dequantized latent (N, C', *) back to the backbone feature space (N, C, *).

        Raises:
            ConfigError: if the head has no synthesis transform.
        """
        if self.synthesis is None:
            raise ConfigError("CompressibleHead: this head has no synthesis transform (config.synthesis='none')")
        x = self.synthesis(y_hat)
        if self.config.standardize:
            x = x * _bcast(self.input_std, x.ndim) + _bcast(self.input_mean, x.ndim)
        return x

    def forward(self, x: Tensor, rate: float | None = None) -> HeadOutput:
        """Quantize ``x`` (N, C, *) at ``rate`` (variable-rate heads; None = level 0) and price it.

        See :class:`HeadOutput` and the module docstring. With ``entropy_model="temporal"`` the input
        must be clips (N, C, T); with ``"hyperprior"`` maps (N, C, H, W).
        """
        y = self.analyze(x, rate)
        off = _bcast(self.quant_offsets(y), y.ndim)
        q, bits = self._kind.quantize(self.entropy_module, y, off, training=self.training,
                                      objective_quant=self.config.objective_quant)
        y_hat = q * _bcast(self.effective_scale(rate), q.ndim)
        x_hat = self.synthesize(y_hat) if self.synthesis is not None else None
        return HeadOutput(y_hat=y_hat, bits=bits, x_hat=x_hat, y=y)

    @torch.no_grad()
    def freeze_codec(self, *, precision: int = 16):
        """Freeze the entropy model alone into its integer codec (``EntropyCodec``, ``TemporalCodec``
        or ``HyperpriorCodec``: the registered trainable half of ``config.entropy_model`` freezes it)."""
        return self._kind.freeze(self.entropy_module, self.quant_offsets(), precision=precision)

    def freeze(self, *, precision: int = 16, rate: float | None = None) -> FrozenHead:
        """Freeze into integer tables: returns an immutable :class:`FrozenHead` (copies the weights).

        Args:
            precision: table precision in bits.
            rate: the rate the frozen head encodes at (variable-rate heads; None = level 0); change it
                later with :meth:`FrozenHead.at_rate`.
        """
        codec = self.freeze_codec(precision=precision)
        return FrozenHead.from_head(self, codec, rate=rate)


@torch.no_grad()
def init_from_classifier(head: CompressibleHead, weight: Tensor | np.ndarray) -> None:
    """Initialize a linear analysis/synthesis pair from a linear classifier's weight (data-independent).

    With ``W = U S V^T`` (K x C, the teacher's last layer), the analysis starts as the projection
    ``y = S_d V_d^T (x - mean)`` onto the d = C' right singular directions the logits are most sensitive
    to (scaled by their singular values, so a unit quantization step costs the same logit error in every
    latent channel), and the synthesis as its pseudo-inverse. Unlike a projection learned on a few
    videos (or PCA of them), it does not depend on the training images, so it generalizes to unseen
    videos; training then adapts steps, rates and the transforms. Used by the ``distill`` runs of
    ``scripts/rd_eval.py``.

    Args:
        head: a head with ``analysis="linear"`` and ``synthesis="linear"`` (or ``"none"``).
        weight: float (K, C) classifier weight (logits = weight @ x + bias).

    Raises:
        ConfigError: wrong head kind or shapes.
    """
    if head.config.analysis != "linear":
        raise ConfigError("init_from_classifier needs analysis='linear'")
    w = torch.as_tensor(np.asarray(weight.detach().cpu() if isinstance(weight, Tensor) else weight), dtype=torch.float64)
    if w.ndim != 2 or w.shape[1] != head.in_channels:
        raise ConfigError(f"init_from_classifier: weight must be (K, {head.in_channels}), got {tuple(w.shape)}")
    d = head.latent_channels
    _, s, vt = torch.linalg.svd(w, full_matrices=False)
    if d > s.numel():
        raise ConfigError(f"init_from_classifier: latent_channels={d} > rank bound {s.numel()}")
    p = vt[:d] * s[:d, None]  # (d, C)
    std = head.input_std.double() if head.config.standardize else torch.ones(head.in_channels, dtype=torch.float64)
    head.analysis.weight.copy_((p * std[None, :]).float())
    head.analysis.bias.zero_()
    if head.synthesis is not None and head.config.synthesis == "linear":
        pinv = torch.linalg.pinv(p)  # (C, d)
        head.synthesis.weight.copy_((pinv / std[:, None]).float())
        head.synthesis.bias.zero_()
        if not head.config.standardize:
            head.synthesis.bias.zero_()

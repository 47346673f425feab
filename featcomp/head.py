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

from featcomp.config import Config, require
from featcomp.errors import CodecError, ConfigError
from featcomp.entropy.kinds import DEFAULT_KIND, codec_kind, entropy_kind, entropy_kinds

__all__ = [
    "HeadConfig",
    "HeadOutput",
    "GDN",
    "NonnegativeParameter",
    "ChannelLinear",
    "CompressibleHead",
    "FrozenHead",
]

ANALYSES = ("identity", "linear", "linear_gdn")
SYNTHESES = ("none", "linear", "igdn_linear")
OBJECTIVE_QUANT = ("ste", "noise")


@dataclasses.dataclass(frozen=True)
class HeadConfig(Config):
    """Configuration of a :class:`CompressibleHead` (stored in model files).

    Attributes:
        in_channels: C, channels of the backbone features.
        latent_channels: C', channels of the latent; must equal ``in_channels`` for ``"identity"``.
        analysis: ``"identity"`` (per-channel scale only), ``"linear"`` (1x1 projection C -> C'),
            ``"linear_gdn"`` (projection followed by GDN, arXiv:1802.00847).
        synthesis: ``"none"``, ``"linear"`` (C' -> C) or ``"igdn_linear"`` (inverse GDN then C' -> C).
        standardize: subtract a per-channel mean and divide by a per-channel std (buffers set from data
            by :meth:`CompressibleHead.set_input_stats`) before the analysis transform.
        init_scale: initial quantization step ``s`` (all channels), in analysis-output units.
        objective_quant: ``"ste"`` (straight-through rounding) or ``"noise"`` for the objective path.
        density: keyword options passed to :class:`featcomp.entropy.EntropyBottleneck`.
        entropy_model: the prior trained jointly with the head and frozen into its codec:
            ``"factorized"`` (:class:`~featcomp.entropy.EntropyBottleneck` -> ``EntropyCodec``, frames
            independent), ``"temporal"`` (:class:`~featcomp.entropy.temporal_prior.TemporalPrior` ->
            ``TemporalCodec``; trains on clips (N, C, T), frozen axis 0 is time) or ``"hyperprior"``
            (:class:`~featcomp.entropy.hyperprior_prior.HyperpriorPrior` -> ``HyperpriorCodec``; maps
            (N, C, H, W)).
        prior: keyword options of the temporal / hyperprior prior (ignored for ``"factorized"``).
        rate_lams: variable rate: the lambda of each rate level, ascending (level 0 = most bits). Empty
            for a fixed-rate head. Each level has a learned per-channel gain applied before quantization
            (``y * gain_l``) and undone at dequantization; the entropy model is shared by all levels.
    """

    FORMAT_VERSION = 1

    in_channels: int
    latent_channels: int
    analysis: str = "linear"
    synthesis: str = "none"
    standardize: bool = True
    init_scale: float = 1.0
    objective_quant: str = "ste"
    density: dict = dataclasses.field(default_factory=dict)
    entropy_model: str = DEFAULT_KIND
    prior: dict = dataclasses.field(default_factory=dict)
    rate_lams: tuple = ()

    @property
    def rate_levels(self) -> int:
        """Number of rate levels (0 for a fixed-rate head)."""
        return len(self.rate_lams)

    def __post_init__(self) -> None:
        require(int(self.in_channels) > 0, f"HeadConfig.in_channels must be > 0, got {self.in_channels}")
        require(int(self.latent_channels) > 0, f"HeadConfig.latent_channels must be > 0, got {self.latent_channels}")
        require(self.analysis in ANALYSES, f"HeadConfig.analysis must be one of {ANALYSES}, got {self.analysis!r}")
        require(self.synthesis in SYNTHESES, f"HeadConfig.synthesis must be one of {SYNTHESES}, got {self.synthesis!r}")
        require(
            self.analysis != "identity" or self.latent_channels == self.in_channels,
            "HeadConfig: the identity analysis needs latent_channels == in_channels",
        )
        require(self.init_scale > 0, f"HeadConfig.init_scale must be > 0, got {self.init_scale}")
        require(
            self.objective_quant in OBJECTIVE_QUANT,
            f"HeadConfig.objective_quant must be one of {OBJECTIVE_QUANT}, got {self.objective_quant!r}",
        )
        trainable = tuple(entropy_kinds(trainable=True))
        require(
            self.entropy_model in trainable,
            f"HeadConfig.entropy_model must be one of {trainable}, got {self.entropy_model!r}",
        )
        lams = tuple(float(v) for v in self.rate_lams)
        require(all(v > 0 for v in lams), f"HeadConfig.rate_lams must be positive, got {lams}")
        require(
            all(a < b for a, b in zip(lams, lams[1:])),
            f"HeadConfig.rate_lams must be strictly ascending (level 0 = most bits), got {lams}",
        )
        require(len(lams) != 1, "HeadConfig.rate_lams: give at least two levels (or none for a fixed rate)")
        object.__setattr__(self, "rate_lams", lams)


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
# building blocks


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient also passes where it would move ``x`` up from below the bound.

    Used by the nonnegative reparameterization of GDN (Ballé et al., arXiv:1511.06281, appendix):
    a plain clamp would stop all gradient once a parameter hits the bound, so it could never leave.
    """

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


class NonnegativeParameter(nn.Module):
    """A parameter constrained to ``value >= minimum`` through ``value = max(p, sqrt(min + e))**2 - e``.

    The square reparameterization (arXiv:1511.06281) keeps gradients well scaled near zero, where GDN's
    ``beta`` and ``gamma`` live. ``e`` (the pedestal, ``2**-36``) keeps the square root differentiable.

    Args:
        initial: float tensor, the initial value (any shape), every entry ``>= minimum``.
        minimum: the lower bound of the value.
    """

    PEDESTAL = 2.0**-36

    def __init__(self, initial: Tensor, minimum: float = 0.0) -> None:
        super().__init__()
        self.minimum = float(minimum)
        self.bound = math.sqrt(self.minimum + self.PEDESTAL)
        self.raw = nn.Parameter(torch.sqrt(torch.clamp(initial.float(), min=self.minimum) + self.PEDESTAL))

    def forward(self) -> Tensor:
        return _LowerBound.apply(self.raw, self.bound) ** 2 - self.PEDESTAL


class GDN(nn.Module):
    """Generalized divisive normalization over the channel axis (Ballé, Laparra, Simoncelli,
    arXiv:1511.06281; used in the transforms of arXiv:1802.00847 and arXiv:1802.01436).

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j**2)``; the inverse (IGDN) multiplies instead
    of dividing, an approximate inverse used in synthesis transforms. ``beta >= beta_min > 0`` and
    ``gamma >= 0`` are reparameterized (:class:`NonnegativeParameter`), so the denominator is always
    positive and the map is sign-preserving and smooth.

    Args:
        channels: C.
        inverse: IGDN instead of GDN.
        beta_min: lower bound of ``beta``.
        gamma_init: initial diagonal of ``gamma`` (off-diagonal entries start at 0).

    Shapes: input and output (N, C, *).
    """

    def __init__(self, channels: int, *, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.channels = int(channels)
        self.inverse = bool(inverse)
        self.beta = NonnegativeParameter(torch.ones(channels), minimum=beta_min)
        self.gamma = NonnegativeParameter(gamma_init * torch.eye(channels), minimum=0.0)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != self.channels:
            raise ConfigError(f"GDN: expected {self.channels} channels on axis 1, got shape {tuple(x.shape)}")
        xc = x.movedim(1, -1)
        norm = self.beta() + (xc * xc) @ self.gamma().t()
        out = xc * torch.sqrt(norm) if self.inverse else xc * torch.rsqrt(norm)
        return out.movedim(-1, 1)


class ChannelLinear(nn.Module):
    """A 1x1 convolution: a linear map on axis 1 of (N, C_in, *) -> (N, C_out, *)."""

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        out = x.movedim(1, -1) @ self.weight.t()
        if self.bias is not None:
            out = out + self.bias
        return out.movedim(-1, 1)


def _bcast(v: Tensor, ndim: int) -> Tensor:
    """(C,) -> (1, C, 1, ...) to broadcast against an (N, C, *) tensor of ``ndim`` dims."""
    return v.view(1, -1, *([1] * (ndim - 2)))


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


def _interp_log_gain(log_gains: Tensor | None, rate: float | None, who: str) -> Tensor | None:
    """Log-gain (C',) at a level or between two levels (linear in log-gain); None for fixed rate."""
    if log_gains is None:
        if rate is not None:
            raise ConfigError(f"{who}: rate={rate!r} given, but this head has a fixed rate (no rate_lams)")
        return None
    L = log_gains.shape[0]
    r = 0.0 if rate is None else float(rate)
    if not (0.0 <= r <= L - 1) or math.isnan(r):
        raise ConfigError(f"{who}: rate must be a level in [0, {L - 1}] (floats interpolate), got {rate!r}")
    lo = min(int(math.floor(r)), L - 1)
    t = r - lo
    if t == 0.0:
        return log_gains[lo]
    return (1.0 - t) * log_gains[lo] + t * log_gains[lo + 1]


# --------------------------------------------------------------------------------------------------
# the frozen head


class FrozenHead(nn.Module):
    """The deployable head: analysis weights, the frozen codec, dequantization, optional synthesis.

    Built by :meth:`CompressibleHead.freeze` or :func:`featcomp.load_model`. It holds no entropy model,
    only the :class:`~featcomp.entropy.EntropyCodec` (integer tables + digest): the latents ``k`` that
    :meth:`encode` returns are exactly what ``codec.compress_symbols`` codes, and
    ``decode(k) = (k + offsets) * scale`` (float32, per channel) is what stores decode to.

    Args:
        config: the head's :class:`HeadConfig`.
        state: tensors ``input_mean``, ``input_std``, ``scale`` (C',) and the analysis/synthesis weights
            under ``analysis.*`` / ``synthesis.*`` (as in the trainable head's ``state_dict``, with GDN
            parameters already reparameterized to their values).
        codec: the frozen codec of the head's kind (any :class:`~featcomp.entropy.FrozenCodec`:
            ``EntropyCodec``, ``TemporalCodec``, ``HyperpriorCodec``).
        rate: variable-rate heads (``config.rate_lams``, state ``log_gains`` (L, C')): the level (or a
            float between levels) this head encodes at; None = level 0. Must be None at fixed rate.

    Attributes:
        scale: float32 (C',) the **effective** quantization step at ``rate`` (``base_scale / gain``);
            what dequantization multiplies by and what a store's model card records.
        base_scale: float32 (C',) the learned step before gains (== ``scale`` at fixed rate).
        rate: float level or None (fixed rate).
    """

    def __init__(self, config: HeadConfig, state: dict[str, Tensor], codec, *, rate: float | None = None) -> None:
        super().__init__()
        self.config = config
        self.codec = codec
        c, cl = config.in_channels, config.latent_channels
        if codec.channels != cl:
            raise CodecError(f"FrozenHead: codec has {codec.channels} channels, head latent has {cl}")
        self.register_buffer("input_mean", state["input_mean"].float().clone())
        self.register_buffer("input_std", state["input_std"].float().clone())
        self.register_buffer("base_scale", state["scale"].float().clone())
        lg = state.get("log_gains")
        if config.rate_levels:
            if lg is None or tuple(lg.shape) != (config.rate_levels, cl):
                raise CodecError(f"FrozenHead: a variable-rate head needs log_gains ({config.rate_levels}, {cl}), "
                                 f"got {None if lg is None else tuple(lg.shape)}")
            self.register_buffer("log_gains", lg.float().clone())
            self.rate: float | None = 0.0 if rate is None else float(rate)
        else:
            self.log_gains = None
            self.rate = None
        self.register_buffer("scale", self.scale_at(rate).clone())
        self.register_buffer("offsets", torch.tensor(np.array(codec.offsets, np.float32)))
        self._analysis_w = _FrozenTransforms(config.analysis, state, "analysis", c, cl)
        self._synthesis_w = (
            None if config.synthesis == "none" else _FrozenTransforms(config.synthesis, state, "synthesis", cl, c)
        )
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_head(cls, head: CompressibleHead, codec, *, rate: float | None = None) -> FrozenHead:
        state = frozen_state(head)
        return cls(head.config, state, codec, rate=rate)

    @property
    def kind(self) -> str:
        """The entropy model's kind (``"factorized"``, ``"temporal"``, ``"hyperprior"``)."""
        return codec_kind(self.codec)

    @property
    def rate_lams(self) -> tuple[float, ...]:
        """The lambda of each rate level (empty at fixed rate)."""
        return tuple(self.config.rate_lams)

    def lam_at(self, rate: float | None = None) -> float | None:
        """The lambda of ``rate`` (default: this head's rate), geometric between levels; None at fixed rate."""
        if not self.config.rate_levels:
            return None
        r = self.rate if rate is None else float(rate)
        lams = np.log(np.asarray(self.config.rate_lams, np.float64))
        return float(np.exp(np.interp(r, np.arange(lams.size), lams)))

    def scale_at(self, rate: float | None) -> Tensor:
        """float32 (C',) the effective quantization step at ``rate`` (a level or a float between
        levels; None = level 0), without building another head. Fixed-rate heads: ``rate`` must be None.

        Raises:
            ConfigError: a fixed-rate head given a rate, or a rate outside ``[0, levels - 1]``.
        """
        g = _interp_log_gain(None if self.log_gains is None else self.log_gains.double(), rate, "FrozenHead")
        return self.base_scale if g is None else (self.base_scale.double() * torch.exp(-g)).float()

    def at_rate(self, rate: float | None) -> FrozenHead:
        """The same head (weights, codec) encoding at another rate level (or a float between levels).

        Raises:
            ConfigError: a fixed-rate head given a rate, or a rate outside ``[0, levels - 1]``.
        """
        return FrozenHead(self.config, self.state_tensors(), self.codec, rate=rate)

    def state_tensors(self) -> dict[str, Tensor]:
        """Flat name -> tensor dict of everything needed to rebuild this head (with the codec)."""
        out = {
            "input_mean": self.input_mean,
            "input_std": self.input_std,
            "scale": self.base_scale,
        }
        if self.log_gains is not None:
            out["log_gains"] = self.log_gains
        out.update(self._analysis_w.tensors("analysis"))
        if self._synthesis_w is not None:
            out.update(self._synthesis_w.tensors("synthesis"))
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @torch.no_grad()
    def latent(self, x: Tensor, rate: float | None | str = "head") -> Tensor:
        """The unquantized latent in quantization units (N, C', *) float32 (before ``- offsets``).

        ``rate``: the rate level to quantize at (variable-rate heads); by default this head's own rate.
        """
        if x.ndim < 2 or x.shape[1] != self.in_channels:
            raise ConfigError(f"FrozenHead: expected features (N, {self.in_channels}, *), got {tuple(x.shape)}")
        x = x.float()
        if self.config.standardize:
            x = (x - _bcast(self.input_mean, x.ndim)) / _bcast(self.input_std, x.ndim)
        y = self._analysis_w(x)
        scale = self.scale if isinstance(rate, str) else self.scale_at(rate).to(y.device)
        return y / _bcast(scale, y.ndim)

    @torch.no_grad()
    def encode(self, x: Tensor | np.ndarray, rate: float | None | str = "head") -> np.ndarray:
        """Features (N, C, *) -> int32 latents (N, C', *), ``codec.quantize(latent(x, rate))``.

        ``rate``: the level to quantize at (variable-rate heads); by default this head's own rate.
        """
        x = torch.as_tensor(x) if not isinstance(x, Tensor) else x
        y = self.latent(x, rate)
        return np.ascontiguousarray(self.codec.quantize(y.float().cpu().numpy()), dtype=np.int32)

    def decode(self, k: np.ndarray | Tensor, levels: np.ndarray | None = None) -> np.ndarray:
        """int latents (N, C', *) -> float32 dequantized latents ``(k + offsets) * scale`` (N, C', *).

        ``levels``: int (N,) the rate level of each example (per-frame rate control,
        :mod:`featcomp.ratecontrol`): example i is dequantized with the step of level ``levels[i]``.
        None: every example at this head's rate.

        Raises:
            CodecError: latents of the wrong shape, or ``levels`` of the wrong length.
            ConfigError: a level outside the head's levels, or levels for a fixed-rate head.
        """
        k = np.asarray(k.cpu() if isinstance(k, Tensor) else k)
        if k.ndim < 2 or k.shape[1] != self.latent_channels:
            raise CodecError(f"FrozenHead.decode: expected latents (N, {self.latent_channels}, *), got {k.shape}")
        shape = (1, -1) + (1,) * (k.ndim - 2)
        off = np.asarray(self.offsets.cpu(), np.float32).reshape(shape)
        if levels is None:
            sc = np.asarray(self.scale.cpu(), np.float32).reshape(shape)
            return ((k.astype(np.float32) + off) * sc).astype(np.float32)
        levels = np.asarray(levels)
        if levels.shape != (k.shape[0],):
            raise CodecError(f"FrozenHead.decode: {k.shape[0]} examples but levels of shape {levels.shape}")
        out = np.empty(k.shape, np.float32)
        for lv in np.unique(levels):
            rows = levels == lv
            sc = np.asarray(self.scale_at(int(lv)).cpu(), np.float32).reshape(shape)
            out[rows] = (k[rows].astype(np.float32) + off) * sc
        return out

    @torch.no_grad()
    def synthesize(self, y_hat: Tensor | np.ndarray) -> Tensor:
        """Dequantized latents (N, C', *) -> backbone-space features (N, C, *) float32.

        Raises:
            ConfigError: without a synthesis transform.
        """
        if self._synthesis_w is None:
            raise ConfigError("FrozenHead: this head has no synthesis transform")
        y = torch.as_tensor(y_hat).float().to(self.scale.device)
        x = self._synthesis_w(y)
        if self.config.standardize:
            x = x * _bcast(self.input_std, x.ndim) + _bcast(self.input_mean, x.ndim)
        return x

    def compress(self, x: Tensor | np.ndarray) -> bytes:
        """Features (N, C, *) -> one entropy-coded stream of their latents."""
        return self.codec.compress_symbols(self.encode(x))

    def decompress(self, data: bytes) -> np.ndarray:
        """One stream -> float32 dequantized latents (N, C', *)."""
        return self.decode(self.codec.decompress_symbols(data))

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - convenience
        return torch.from_numpy(self.decode(self.encode(x)))


class _FrozenTransforms(nn.Module):
    """Inference-only linear / GDN chains from a flat tensor dict (no reparameterization left)."""

    def __init__(self, kind: str, state: dict[str, Tensor], prefix: str, c_in: int, c_out: int) -> None:
        super().__init__()
        self.kind = kind
        names = {
            "identity": [],
            "linear": ["weight", "bias"],
            "linear_gdn": ["weight", "bias", "gdn_beta", "gdn_gamma"],
            "igdn_linear": ["gdn_beta", "gdn_gamma", "weight", "bias"],
        }[kind]
        for n in names:
            key = f"{prefix}.{n}"
            if key not in state:
                raise CodecError(f"frozen head: missing tensor {key!r}")
            self.register_buffer(n, state[key].float().clone())

    def tensors(self, prefix: str) -> dict[str, Tensor]:
        return {f"{prefix}.{n}": b for n, b in self.named_buffers()}

    def _gdn(self, x: Tensor, inverse: bool) -> Tensor:
        xc = x.movedim(1, -1)
        norm = self.gdn_beta + (xc * xc) @ self.gdn_gamma.t()
        out = xc * torch.sqrt(norm) if inverse else xc * torch.rsqrt(norm)
        return out.movedim(-1, 1)

    def _linear(self, x: Tensor) -> Tensor:
        return (x.movedim(1, -1) @ self.weight.t() + self.bias).movedim(-1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "identity":
            return x
        if self.kind == "linear":
            return self._linear(x)
        if self.kind == "linear_gdn":
            return self._gdn(self._linear(x), inverse=False)
        return self._linear(self._gdn(x, inverse=True))


@torch.no_grad()
def frozen_state(head: CompressibleHead) -> dict[str, Tensor]:
    """Flat inference tensors of a trainable head (GDN reparameterizations evaluated)."""
    cfg = head.config
    out: dict[str, Tensor] = {
        "input_mean": head.input_mean.detach().cpu(),
        "input_std": head.input_std.detach().cpu(),
        "scale": head.scale.detach().cpu(),
    }
    if head.log_gains is not None:
        out["log_gains"] = head.log_gains.detach().cpu()

    def lin(prefix: str, m: ChannelLinear) -> None:
        out[f"{prefix}.weight"] = m.weight.detach().cpu()
        out[f"{prefix}.bias"] = (m.bias if m.bias is not None else torch.zeros(m.weight.shape[0])).detach().cpu()

    def gdn(prefix: str, m: GDN) -> None:
        out[f"{prefix}.gdn_beta"] = m.beta().detach().cpu()
        out[f"{prefix}.gdn_gamma"] = m.gamma().detach().cpu()

    if cfg.analysis == "linear":
        lin("analysis", head.analysis)
    elif cfg.analysis == "linear_gdn":
        lin("analysis", head.analysis[0])
        gdn("analysis", head.analysis[1])
    if cfg.synthesis == "linear":
        lin("synthesis", head.synthesis)
    elif cfg.synthesis == "igdn_linear":
        gdn("synthesis", head.synthesis[0])
        lin("synthesis", head.synthesis[1])
    return {k: v.float().contiguous() for k, v in out.items()}


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

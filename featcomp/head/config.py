"""The head's configuration (stored in model files): :class:`HeadConfig`."""

from __future__ import annotations

import dataclasses

from featcomp.config import Config, require
from featcomp.entropy.kinds import DEFAULT_KIND, entropy_kinds

__all__ = ["HeadConfig", "ANALYSES", "SYNTHESES", "OBJECTIVE_QUANT"]

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

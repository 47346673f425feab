"""The frozen head: immutable inference weights + the integer codec + dequantization (:class:`FrozenHead`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.entropy.kinds import codec_kind
from featcomp.errors import CodecError, ConfigError
from featcomp.head.config import HeadConfig
from featcomp.head.layers import GDN, ChannelLinear, _bcast, _interp_log_gain

if TYPE_CHECKING:
    from featcomp.head.trainable import CompressibleHead

__all__ = ["FrozenHead", "frozen_state"]

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

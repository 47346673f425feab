"""The trainable half of each registered entropy-model kind (torch).

A :class:`TrainablePrior` adapter tells a :class:`~featcomp.head.CompressibleHead` how to build its kind's
prior, where the quantization grid sits (``offsets``), how to quantize and price a latent in training and
evaluation, and how to freeze the prior into the kind's integer codec. The head holds the built module
under ``adapter.attr`` (``"bottleneck"`` for the factorized kind, ``"prior"`` for conditional priors),
so the parameter names of saved trainable heads do not change.

The registry entry (:class:`featcomp.entropy.kinds.EntropyKind`) names the adapter class by import
reference; ``featcomp.entropy.kinds`` itself stays free of torch. A new kind writes its codec, its prior
and one adapter subclass here (or in its own module) and registers them together.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from featcomp.errors import ConfigError

__all__ = ["TrainablePrior", "FactorizedPrior", "TemporalPriorAdapter", "HyperpriorAdapter"]


def _bcast(v: Tensor, ndim: int) -> Tensor:
    """(C,) -> (1, C, 1, ...) with ``ndim`` dimensions."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class TrainablePrior:
    """How a head trains and freezes one entropy-model kind (subclass per kind).

    The default :meth:`quantize` is the conditional-prior path: price ``y`` with :meth:`rate_bits`, then
    round around :meth:`offsets` (straight-through in training with ``objective_quant="ste"``, uniform
    noise with ``"noise"``).
    """

    #: the head attribute holding the built module (keeps state-dict names stable)
    attr = "prior"

    def build(self, channels: int, config: Any) -> nn.Module:
        """The prior module for ``channels`` latent channels from the head's ``config``."""
        raise NotImplementedError

    def offsets(self, module: nn.Module, channels: int, device: torch.device) -> Tensor:
        """float (C,) the quantization offsets (detached)."""
        return torch.zeros(channels, device=device)

    def rate_bits(self, module: nn.Module, y: Tensor, off: Tensor) -> Tensor:
        """Bits (N,) of ``y`` (quantization units; ``off`` broadcast like ``y``) under the prior."""
        raise NotImplementedError

    def quantize(self, module: nn.Module, y: Tensor, off: Tensor, *, training: bool,
                 objective_quant: str) -> tuple[Tensor, Tensor]:
        """-> (q, bits): the quantized latent the objective sees (quantization units) and bits (N,)."""
        bits = self.rate_bits(module, y, off)
        r = y - off
        if training and objective_quant == "noise":
            q = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        elif training:
            q = r + (torch.round(r) - r).detach() + off
        else:
            q = torch.round(r) + off
        return q, bits

    def freeze(self, module: nn.Module, offsets: Tensor, *, precision: int) -> Any:
        """The frozen integer codec of the trained prior."""
        raise NotImplementedError


class FactorizedPrior(TrainablePrior):
    """``"factorized"``: :class:`~featcomp.entropy.EntropyBottleneck` (``config.density`` options) ->
    :class:`~featcomp.entropy.EntropyCodec`; offsets are the bottleneck's medians."""

    attr = "bottleneck"

    def build(self, channels: int, config: Any) -> nn.Module:
        from featcomp.entropy.bottleneck import EntropyBottleneck

        return EntropyBottleneck(channels, **dict(config.density))

    def offsets(self, module: nn.Module, channels: int, device: torch.device) -> Tensor:
        return module.offsets.detach()

    def quantize(self, module: nn.Module, y: Tensor, off: Tensor, *, training: bool,
                 objective_quant: str) -> tuple[Tensor, Tensor]:
        from featcomp.entropy.quantization import QuantizationMode

        if not training:
            return module(y, mode=QuantizationMode.ROUND)
        y_noisy, bits = module(y, mode=QuantizationMode.NOISE)
        if objective_quant != "ste":
            return y_noisy, bits
        o = _bcast(module.offsets.detach().to(y.dtype), y.ndim)
        r = y - o
        return r + (torch.round(r) - r).detach() + o, bits

    def freeze(self, module: nn.Module, offsets: Tensor, *, precision: int) -> Any:
        return module.freeze(precision=precision)


class TemporalPriorAdapter(TrainablePrior):
    """``"temporal"``: :class:`~featcomp.entropy.temporal_prior.TemporalPrior` (``config.prior`` options)
    on clips (N, C, T) -> :class:`~featcomp.entropy.TemporalCodec`; zero offsets (the context predicts
    locations)."""

    def build(self, channels: int, config: Any) -> nn.Module:
        from featcomp.entropy.temporal_prior import TemporalPrior

        return TemporalPrior(channels, **dict(config.prior))

    def rate_bits(self, module: nn.Module, y: Tensor, off: Tensor) -> Tensor:
        if y.ndim != 3:
            raise ConfigError(
                "CompressibleHead: the temporal entropy model prices clips (N, C, T) (frames in time order on "
                f"axis 2), got latents of shape {tuple(y.shape)}"
            )
        return module.bits((y - off).movedim(2, 1)).sum(1)

    def freeze(self, module: nn.Module, offsets: Tensor, *, precision: int) -> Any:
        return module.freeze(offsets.cpu(), precision=precision)


class HyperpriorAdapter(TrainablePrior):
    """``"hyperprior"``: :class:`~featcomp.entropy.hyperprior_prior.HyperpriorPrior` (``config.prior``
    options) on maps (N, C, H, W) -> :class:`~featcomp.entropy.HyperpriorCodec`; learned offsets."""

    def build(self, channels: int, config: Any) -> nn.Module:
        from featcomp.entropy.hyperprior_prior import HyperpriorPrior

        return HyperpriorPrior(channels, **dict(config.prior))

    def offsets(self, module: nn.Module, channels: int, device: torch.device) -> Tensor:
        return module.offsets.detach()

    def rate_bits(self, module: nn.Module, y: Tensor, off: Tensor) -> Tensor:
        if y.ndim != 4:
            raise ConfigError(f"CompressibleHead: the hyperprior prices maps (N, C, H, W), got {tuple(y.shape)}")
        _, bits = module(y)
        return bits

    def freeze(self, module: nn.Module, offsets: Tensor, *, precision: int) -> Any:
        return module.freeze(precision=precision)

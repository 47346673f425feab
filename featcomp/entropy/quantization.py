"""Quantization proxies for training with a rate term (Ballé et al. 2018, arXiv:1802.01436).

All proxies quantize *around per-channel offsets* (the medians of the prior):
``y_hat = Q(y - offsets) + offsets`` with channels on axis 1.

* :attr:`QuantizationMode.NOISE`: additive ``U(-1/2, 1/2)`` noise (the training proxy whose rate is
  a differentiable upper bound on the coded rate; offsets do not change its distribution).
* :attr:`QuantizationMode.STE`: hard rounding in the forward pass, identity gradient
  (straight-through estimator).
* :attr:`QuantizationMode.ROUND`: hard rounding, zero gradient; what the frozen codec reproduces.
"""

from __future__ import annotations

import enum

import torch

__all__ = ["QuantizationMode", "quantize"]


class QuantizationMode(enum.Enum):
    """How :func:`quantize` (and :class:`~featcomp.entropy.EntropyBottleneck`) quantizes."""

    NOISE = "noise"
    STE = "ste"
    ROUND = "round"


def _broadcast_offsets(offsets: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return offsets.reshape((1, -1) + (1,) * (y.dim() - 2)).to(dtype=y.dtype)


def quantize(y: torch.Tensor, mode: QuantizationMode, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize ``y`` (N, C, *) float around ``offsets`` (C,) with ``mode``.

    Returns:
        A tensor of y's shape and dtype. For ROUND/STE, ``round(y - offsets) + offsets`` computed in
        y's dtype (float32: bit-identical to :meth:`EntropyCodec.dequantize` of
        :meth:`EntropyCodec.quantize`); torch.round rounds half to even like numpy.
    """
    if not isinstance(mode, QuantizationMode):
        raise TypeError(f"mode must be a QuantizationMode, got {mode!r}")
    if mode is QuantizationMode.NOISE:
        return y + torch.empty_like(y).uniform_(-0.5, 0.5)
    off = torch.zeros((), dtype=y.dtype, device=y.device) if offsets is None else _broadcast_offsets(offsets, y)
    hard = torch.round(y - off) + off
    if mode is QuantizationMode.ROUND:
        return hard.detach()
    return y + (hard - y).detach()

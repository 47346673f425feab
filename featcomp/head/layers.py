"""The head's building blocks: GDN (arXiv:1802.00847), a channel-wise linear map (1x1 convolution), a
reparameterized non-negative parameter, and rate-level gain interpolation shared by both heads."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from featcomp.errors import ConfigError

__all__ = ["GDN", "NonnegativeParameter", "ChannelLinear"]

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

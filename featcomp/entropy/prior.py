"""Trainable univariate densities (priors). They know nothing of coding.

:class:`DeepFactorizedDensity` is the non-parametric "deep factorized" density of Ballé et al. 2018
(arXiv:1802.01436, appendix 6.1): per channel, the CDF is a composition of small dense layers with
positive matrices (softplus-reparametrized), biases and ``tanh`` gates ``x + a * tanh(x)`` with
``a >= -1`` (``tanh``-reparametrized), ending in a sigmoid. Monotonicity of the CDF holds by
construction. The density of the *noisy* variable ``y + U(-1/2, 1/2)`` is ``CDF(y + 1/2) - CDF(y - 1/2)``,
computed from logits with the sign trick so that it stays accurate far in the tails.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DeepFactorizedDensity", "lower_bound"]


class _LowerBound(torch.autograd.Function):
    """max(x, bound) whose gradient still flows where it would push x up (so it never gets stuck)."""

    @staticmethod
    def forward(ctx, x, bound: float):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``max(x, bound)`` with a gradient that can still raise x from below the bound."""
    return _LowerBound.apply(x, bound)


class DeepFactorizedDensity(nn.Module):
    """Per-channel learned CDF (Ballé et al. 2018, appendix 6.1).

    Args:
        channels: C, one independent density per channel.
        filters: widths of the hidden layers (default ``(3, 3, 3)``: a 1-3-3-3-1 network).
        init_scale: the initial density is roughly uniform-ish over ``[-init_scale, init_scale]``.

    Shapes: :meth:`logits_cdf` and :meth:`likelihood` take ``x`` (C, M) and return (C, M).
    """

    def __init__(self, channels: int, *, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        dims = (1, *self.filters, 1)
        scale = init_scale ** (1.0 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """Logit of the CDF at ``x`` (C, M) -> (C, M); increasing in x for every channel."""
        h = x.unsqueeze(1)  # (C, 1, M)
        n = len(self.matrices)
        for i in range(n):
            h = torch.matmul(F.softplus(self.matrices[i]), h) + self.biases[i]
            if i < n - 1:
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h.squeeze(1)

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """CDF at ``x`` (C, M)."""
        return torch.sigmoid(self.logits_cdf(x))

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Density of ``x + U(-1/2, 1/2)`` at x, i.e. ``CDF(x + 1/2) - CDF(x - 1/2)``, (C, M).

        Uses the sign trick: with ``s = -sign(l + u)`` of the two logits, ``|sigmoid(s u) - sigmoid(s l)|``
        subtracts two small numbers in the right tail instead of two numbers near 1.
        """
        lower = self.logits_cdf(x - 0.5)
        upper = self.logits_cdf(x + 0.5)
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    @torch.no_grad()
    def quantile(self, q: float | torch.Tensor, *, iters: int = 60) -> torch.Tensor:
        """Per-channel ``x`` with ``CDF(x) = q`` (C,), by bracketing then bisection on the logits.

        Deterministic for fixed parameters; used for the medians (offsets) and table ranges.
        """
        p = next(self.parameters())
        target = torch.as_tensor(q, dtype=p.dtype, device=p.device)
        target = torch.logit(target).expand(self.channels).reshape(self.channels, 1)
        lo = torch.full((self.channels, 1), -1.0, dtype=p.dtype, device=p.device)
        hi = torch.ones_like(lo)
        for _ in range(64):  # expand the bracket (|x| up to 2**64)
            lo_bad = self.logits_cdf(lo) > target
            hi_bad = self.logits_cdf(hi) < target
            if not (lo_bad.any() or hi_bad.any()):
                break
            lo = torch.where(lo_bad, lo * 2, lo)
            hi = torch.where(hi_bad, hi * 2, hi)
        for i in range(iters):
            mid = 0.5 * (lo + hi)
            below = self.logits_cdf(mid) < target
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
            if i % 8 == 7:
                nxt = 0.5 * (lo + hi)
                if bool(((nxt == lo) | (nxt == hi)).all()):
                    break  # converged to the dtype's resolution
        return (0.5 * (lo + hi)).squeeze(1)

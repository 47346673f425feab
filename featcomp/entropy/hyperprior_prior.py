"""The float training twin of :class:`~featcomp.entropy.hyperprior.HyperpriorCodec` (torch).

:class:`HyperpriorPrior` is a trainable scale hyperprior (Ballé et al. 2018, arXiv:1802.01436) for
spatial latents ``y`` (N, C, H, W): ``z = A @ cellmean(log2(1 + |y - offsets|)) + b`` over p x p cells,
``z`` goes through a factorized :class:`~featcomp.entropy.EntropyBottleneck`, and the scale index
``u = B @ (z_hat - z_offsets) + c`` (nearest-upsampled to H x W) picks ``sigma = scale_min *
exp(step * clamp(u, 0, S - 1))`` of a zero-centred discretized Laplace for each element of ``y``.
Training uses additive uniform noise (the usual relaxation); ``forward`` returns the noisy or
rounded ``y`` and the bits per image (z's + y's).

:meth:`HyperpriorPrior.freeze` rounds the weights to ``2**-F`` fixed point and builds the integer
tables once; the frozen codec computes the same quantities with integers only (``log2(1 + |k|)``
through a fixed 2**-8 lookup table), so its scale indices are bit-identical on every machine. Store
reading never imports this module.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from featcomp.entropy.bottleneck import EntropyBottleneck
from featcomp.entropy.hyperprior import LUT_BITS, HyperpriorCodec
from featcomp.entropy.indexed import TableFamily, scale_grid

__all__ = ["HyperpriorPrior"]


def _cell_mean(x: torch.Tensor, p: int) -> torch.Tensor:
    """Mean over p x p cells (partial cells at the far edges average their real elements)."""
    N, C, H, W = x.shape
    h, w = -(-H // p), -(-W // p)
    xp = torch.nn.functional.pad(x, (0, w * p - W, 0, h * p - H))
    ones = torch.nn.functional.pad(torch.ones(1, 1, H, W, device=x.device, dtype=x.dtype), (0, w * p - W, 0, h * p - H))
    s = xp.reshape(N, C, h, p, w, p).sum((3, 5))
    cnt = ones.reshape(1, 1, h, p, w, p).sum((3, 5))
    return s / cnt


class HyperpriorPrior(nn.Module):
    """Trainable scale hyperprior for (N, C, H, W) latents.

    Args:
        channels: C. z_channels: Cz (default ``max(2, C // 4)``). pool: p, side-information cell size.
        levels, scale_min, scale_max: the log grid of scales (S entries). radius: table half-width.
        frac_bits: F, fixed-point fraction bits of the frozen weights.
    """

    def __init__(self, channels: int, *, z_channels: int | None = None, pool: int = 2, levels: int = 64,
                 scale_min: float = 0.11, scale_max: float = 48.0, radius: int = 48, frac_bits: int = 12) -> None:
        super().__init__()
        C = int(channels)
        Cz = int(z_channels or max(2, C // 4))
        self.channels, self.z_channels, self.pool, self.levels = C, Cz, int(pool), int(levels)
        self.scale_min, self.scale_max, self.radius, self.frac_bits = float(scale_min), float(scale_max), int(radius), int(frac_bits)
        self.step = math.log(scale_max / scale_min) / (levels - 1)
        u1 = math.log(1.0 / scale_min) / self.step  # index of sigma = 1
        g = torch.Generator().manual_seed(0)
        self.offsets = nn.Parameter(torch.zeros(C))
        self.A = nn.Parameter(torch.randn(Cz, C, generator=g) / math.sqrt(C))
        self.b = nn.Parameter(torch.zeros(Cz))
        self.B = nn.Parameter(torch.randn(C, Cz, generator=g) * 0.1)
        self.c = nn.Parameter(torch.full((C,), u1))
        self.z_bottleneck = EntropyBottleneck(Cz)

    def sigma(self, u: torch.Tensor) -> torch.Tensor:
        return self.scale_min * torch.exp(self.step * u.clamp(0, self.levels - 1))

    def forward(self, y: torch.Tensor, *, noise: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y float (N, C, H, W) -> (y_hat same shape, bits float (N,)): noisy (training) or rounded
        around ``offsets``; bits = z's (factorized bottleneck) + y's (discretized Laplace)."""
        noise = self.training if noise is None else noise
        off = self.offsets[None, :, None, None]
        r0 = y - off
        rq = r0 + (torch.round(r0) - r0).detach()  # straight-through rounding: the integers k the codec sees
        r = r0 + torch.empty_like(r0).uniform_(-0.5, 0.5) if noise else rq
        N, C, H, W = y.shape
        # the side information is computed from the rounded latents in training too, as the frozen codec
        # computes it from k (log2(1 + |k|)); from the noisy latents it is biased (log2(1 + |u|) > 0 where
        # k = 0), and the scales learned on it do not fit the coded latents.
        feat = _cell_mean(torch.log2(1.0 + rq.abs()), self.pool)
        z = torch.einsum("zc,nchw->nzhw", self.A, feat) + self.b[None, :, None, None]
        from featcomp.entropy.quantization import QuantizationMode

        z_hat, z_bits = self.z_bottleneck(z, mode=QuantizationMode.NOISE if noise else QuantizationMode.ROUND)
        kz = z_hat - self.z_bottleneck.offsets[None, :, None, None].to(z_hat)
        u = torch.einsum("cz,nzhw->nchw", self.B, kz) + self.c[None, :, None, None]
        u = u.repeat_interleave(self.pool, 2).repeat_interleave(self.pool, 3)[:, :, :H, :W]
        sig = self.sigma(u)
        hi, lo = (r + 0.5) / sig, (r - 0.5) / sig
        # discretized zero-centred Laplace, evaluated on the side of the mode for accuracy
        upper = r > 0
        cdf = lambda x: torch.where(x < 0, 0.5 * torch.exp(x.clamp(max=0)), 1 - 0.5 * torch.exp(-x.clamp(min=0)))  # noqa: E731
        p = torch.where(upper, cdf(-lo) - cdf(-hi), cdf(hi) - cdf(lo)).clamp_min(1e-9)
        bits = -torch.log2(p).sum((1, 2, 3)) + z_bits
        return r + off, bits

    @torch.no_grad()
    def freeze(self, *, precision: int = 16) -> HyperpriorCodec:
        """Integer tables and fixed-point weights, built once: the frozen :class:`HyperpriorCodec`."""
        F = self.frac_bits
        fam = TableFamily.build(scale_grid(self.scale_min, self.scale_max, self.levels), Q=1, radius=self.radius,
                                precision=precision, shape="laplace")
        A = torch.round(self.A * 2**F).cpu().numpy().astype(np.int64)
        # the bottleneck codes k_z = round(z - z_offsets): fold its offsets into the analysis bias
        zoff = self.z_bottleneck.offsets.detach().double().cpu()
        b = torch.round((self.b.double().cpu() - zoff) * 2 ** (F + LUT_BITS)).numpy().astype(np.int64)
        B = torch.round(self.B * 2**F).cpu().numpy().astype(np.int64)
        c = torch.round(self.c.double() * 2**F).cpu().numpy().astype(np.int64)
        lim = (1 << 20) - 1
        return HyperpriorCodec(self.offsets.detach().cpu().numpy(), self.z_bottleneck.freeze(precision=precision), fam,
                               np.clip(A, -lim, lim).astype(np.int32), b, np.clip(B, -lim, lim).astype(np.int32), c,
                               pool=self.pool, frac_bits=F)

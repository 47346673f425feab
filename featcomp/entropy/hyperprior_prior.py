"""The float training twin of :class:`~featcomp.entropy.hyperprior.HyperpriorCodec` (torch).

:class:`HyperpriorPrior` is a trainable scale hyperprior (Ballé et al. 2018, arXiv:1802.01436) for
spatial latents ``y`` (N, C, H, W): ``z = A @ cellmean(log2(1 + |k|)) + b`` over p x p cells
(``k = round(y - offsets)``, straight-through), ``z`` goes through a factorized
:class:`~featcomp.entropy.EntropyBottleneck` (``z_hat = z + noise`` in training, ``round(z - m) + m``
in evaluation, ``m`` its medians), and the scale index
``u = (B_ln @ z_hat + c_ln - ln(scale_min)) / step`` (nearest-upsampled to H x W) picks ``sigma = scale_min *
exp(step * clamp(u, 0, S - 1))`` of a zero-centred discretized Laplace (or Gaussian, ``shape=``) for
each element of ``y``. Training uses additive uniform noise (the usual relaxation); ``forward`` returns
the noisy or rounded ``y`` and the bits per image (z's + y's).

Parameterization (what made training unstable before, docs/temporal.md part 2):

* the synthesis reads ``z_hat``, not ``z_hat - m``: the medians ``m`` are re-estimated without
  gradients whenever the bottleneck's density moves, so subtracting them shifted every scale behind
  the optimizer's back; on real maps ``z`` and ``m`` drifted apart together (|m| 3 -> 70 in 600 steps),
  the training loss rose and coded sizes grew with lambda. :meth:`freeze` folds ``B m`` into the
  integer bias, so the frozen codec (and its format) is unchanged;
* ``B_ln``, ``c_ln`` are in natural-log units of sigma (``ln sigma = B_ln @ z_hat + c_ln``; the
  index is ``(ln sigma - ln scale_min) / step``): an optimizer step moves sigma by the same factor
  whatever the grid's resolution (in index units AdamW at lr 3e-3 moved sigma ~10x slower);
* ``scale_min`` is 0.04 (was 0.11): a zero at sigma 0.11 still costs 0.0175 bits (16-bit table), 40 bits
  per 64 x 6 x 6 map, most of the whole rate at the low end (the factorized head codes such maps in ~60
  bits); at 0.04 a full row's floor is 0.0021 bits (every one of the 2 * radius + 2 entries has frequency
  >= 1), which the frozen codec's stream layout 2 removes (narrowed rows with the floors reclaimed: 6.6e-5 bits);
* the clamp to ``[0, S - 1]`` passes gradients that point back into the grid (tensorflow-compression's
  bounds), so an index that left the grid can return.

:meth:`HyperpriorPrior.freeze` rounds the weights to ``2**-F`` fixed point and builds the integer
tables once; the frozen codec computes the same quantities with integers only (``log2(1 + |k|)``
through a fixed 2**-8 lookup table), so its scale indices are bit-identical on every machine. Store
reading never imports this module. Checkpoints of the old parameterization (``B``, ``c`` in index
units applied to ``z_hat - m``) are converted on ``load_state_dict``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from featcomp.entropy.bottleneck import EntropyBottleneck
from featcomp.entropy.hyperprior import LUT_BITS, HyperpriorCodec
from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.entropy.prior import lower_bound
from featcomp.entropy.quantization import QuantizationMode

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
        shape: ``"laplace"`` (default) or ``"gaussian"``, the zero-centred density of y given its scale
            (the frozen tables use the same shape).
    """

    def __init__(self, channels: int, *, z_channels: int | None = None, pool: int = 2, levels: int = 64,
                 scale_min: float = 0.04, scale_max: float = 48.0, radius: int = 48, frac_bits: int = 12,
                 shape: str = "laplace") -> None:
        super().__init__()
        C = int(channels)
        Cz = int(z_channels or max(2, C // 4))
        if shape not in ("laplace", "gaussian"):
            raise ValueError(f"shape must be 'laplace' or 'gaussian', got {shape!r}")
        self.channels, self.z_channels, self.pool, self.levels = C, Cz, int(pool), int(levels)
        self.scale_min, self.scale_max, self.radius, self.frac_bits = float(scale_min), float(scale_max), int(radius), int(frac_bits)
        self.shape = shape
        self.step = math.log(scale_max / scale_min) / (levels - 1)
        g = torch.Generator().manual_seed(0)
        self.offsets = nn.Parameter(torch.zeros(C))
        self.A = nn.Parameter(torch.randn(Cz, C, generator=g) / math.sqrt(C))
        self.b = nn.Parameter(torch.zeros(Cz))
        # synthesis in natural-log units of sigma, ln(sigma) = B_ln @ z_hat + c_ln (not grid indices: an
        # optimizer step of the same size moves sigma by the same factor whatever the grid); starts at sigma = 1
        self.B_ln = nn.Parameter(torch.randn(C, Cz, generator=g) * (0.1 * self.step))
        self.c_ln = nn.Parameter(torch.zeros(C))
        self.z_bottleneck = EntropyBottleneck(Cz)
        self._register_load_state_dict_pre_hook(self._upgrade_state_dict)
        self.register_load_state_dict_post_hook(HyperpriorPrior._finish_upgrade)
        self._legacy: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ old checkpoints
    def _upgrade_state_dict(self, state_dict, prefix, *args) -> None:
        """Checkpoints written before the synthesis moved to log units hold ``B``, ``c`` (grid-index units,
        applied to ``z_hat - z_offsets``); they are converted once the z bottleneck is loaded. The grid
        must be the one they were trained on (the default ``scale_min`` was 0.11 then: pass it in ``prior``)."""
        if prefix + "B" in state_dict and prefix + "B_ln" not in state_dict:
            B, c = state_dict.pop(prefix + "B"), state_dict.pop(prefix + "c")
            self._legacy = (B.detach().clone(), c.detach().clone())
            state_dict[prefix + "B_ln"] = B * self.step
            state_dict[prefix + "c_ln"] = c * self.step + math.log(self.scale_min)

    @staticmethod
    def _finish_upgrade(module: nn.Module, incompatible) -> None:
        if getattr(module, "_legacy", None) is None:
            return
        B, c = module._legacy
        module._legacy = None
        with torch.no_grad():
            m = module.z_bottleneck.offsets.detach().to(B)
            module.B_ln.copy_(B * module.step)
            module.c_ln.copy_((c - B @ m) * module.step + math.log(module.scale_min))

    # ------------------------------------------------------------------ the model
    def scale_index(self, z_hat: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Continuous scale index u (N, C, H, W) in ``[0, S - 1]`` of (dequantized or noisy) side
        information ``z_hat`` (N, Cz, h, w). The bound passes gradients that point back into the grid
        (as tensorflow-compression's bounds), so an index that left it can come back."""
        ln_rel = torch.einsum("cz,nzhw->nchw", self.B_ln, z_hat) + (self.c_ln - math.log(self.scale_min))[None, :, None, None]
        u = ln_rel / self.step
        u = -lower_bound(-lower_bound(u, 0.0), -float(self.levels - 1))
        return u.repeat_interleave(self.pool, 2).repeat_interleave(self.pool, 3)[:, :, :H, :W]

    def sigma(self, u: torch.Tensor) -> torch.Tensor:
        return self.scale_min * torch.exp(self.step * u.clamp(0, self.levels - 1))

    def forward(self, y: torch.Tensor, *, noise: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y float (N, C, H, W) -> (y_hat same shape, bits float (N,)): noisy (training) or rounded
        around ``offsets``; bits = z's (factorized bottleneck) + y's (discretized Laplace or Gaussian)."""
        noise = self.training if noise is None else noise
        off = self.offsets[None, :, None, None]
        r0 = y - off
        rq = r0 + (torch.round(r0) - r0).detach()  # straight-through rounding: the integers k the codec sees
        r = r0 + torch.empty_like(r0).uniform_(-0.5, 0.5) if noise else rq
        H, W = y.shape[2:]
        # the side information is computed from the rounded latents in training too, as the frozen codec
        # computes it from k (log2(1 + |k|)); from the noisy latents it is biased (log2(1 + |u|) > 0 where
        # k = 0), and the scales learned on it do not fit the coded latents.
        feat = _cell_mean(torch.log2(1.0 + rq.abs()), self.pool)
        z = torch.einsum("zc,nchw->nzhw", self.A, feat) + self.b[None, :, None, None]
        # the synthesis reads z_hat itself (noisy, or round(z - m) + m), never z_hat - m: the bottleneck's
        # median m is re-estimated without gradients as its density moves, and subtracting it let every
        # move of the density shift all the scales behind the optimizer's back (z and m drifted apart
        # together, training loss rose; docs/temporal.md). freeze() folds B m into the integer bias.
        z_hat, z_bits = self.z_bottleneck(z, mode=QuantizationMode.NOISE if noise else QuantizationMode.ROUND)
        sig = self.scale_min * torch.exp(self.step * self.scale_index(z_hat, H, W))
        a = r.abs()
        if self.shape == "laplace":
            # discretized zero-centred Laplace on the side of the mode (accurate tails):
            # P = F(-(a - 1/2)) - F(-(a + 1/2)); for a < 1/2 the interval holds the mode
            lo, hi = (a - 0.5) / sig, (a + 0.5) / sig
            p = torch.where(lo < 0, 1 - 0.5 * torch.exp(lo.clamp(max=0)) - 0.5 * torch.exp(-hi),
                            0.5 * torch.exp(-lo.clamp(min=0)) - 0.5 * torch.exp(-hi))
        else:
            p = torch.special.ndtr((0.5 - a) / sig) - torch.special.ndtr((-0.5 - a) / sig)
        bits = -torch.log2(p.clamp_min(1e-9)).sum((1, 2, 3)) + z_bits
        return r + off, bits

    @torch.no_grad()
    def freeze(self, *, precision: int = 16) -> HyperpriorCodec:
        """Integer tables and fixed-point weights, built once: the frozen :class:`HyperpriorCodec`."""
        F = self.frac_bits
        fam = TableFamily.build(scale_grid(self.scale_min, self.scale_max, self.levels), Q=1, radius=self.radius,
                                precision=precision, shape=self.shape)
        A = torch.round(self.A * 2**F).cpu().numpy().astype(np.int64)
        # the bottleneck codes k_z = round(z - z_offsets): fold its offsets into the analysis bias, and
        # z_hat = k_z + z_offsets into the synthesis bias (index units: divide the log units by the step)
        zoff = self.z_bottleneck.offsets.detach().double().cpu()
        b = torch.round((self.b.double().cpu() - zoff) * 2 ** (F + LUT_BITS)).numpy().astype(np.int64)
        Bi = self.B_ln.detach().double().cpu() / self.step
        B = torch.round(Bi * 2**F).numpy().astype(np.int64)
        ci = (self.c_ln.detach().double().cpu() - math.log(self.scale_min)) / self.step + Bi @ zoff
        c = torch.round(ci * 2**F).numpy().astype(np.int64)
        lim = (1 << 20) - 1
        return HyperpriorCodec(self.offsets.detach().cpu().numpy(), self.z_bottleneck.freeze(precision=precision), fam,
                               np.clip(A, -lim, lim).astype(np.int32), b, np.clip(B, -lim, lim).astype(np.int32), c,
                               pool=self.pool, frac_bits=F)

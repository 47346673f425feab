"""The trainable entropy bottleneck (Ballé et al. 2018, arXiv:1802.01436; Singh et al. 2020).

:class:`EntropyBottleneck` quantizes a latent ``y`` (N, C, *) per channel and returns its rate in
bits per example under a learned :class:`~featcomp.entropy.prior.DeepFactorizedDensity`.
``freeze()`` turns it into an immutable integer-table :class:`~featcomp.entropy.EntropyCodec`.

Offsets (medians) without an auxiliary optimizer
------------------------------------------------
The quantization offsets are the *medians of the current density*, found by bisection on its CDF
(no gradient) whenever the density's parameters change (cached on their version counters). They
are a pure function of the density, so there is no auxiliary loss, no ``update()`` step and no
state that can go stale: ``freeze()`` is correct at any point, and an eval-mode forward pass uses
exactly the offsets that ``freeze()`` records. Table ranges are likewise computed at freeze time
from the density's tail quantiles.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from featcomp.entropy.codec import EntropyCodec
from featcomp.entropy.prior import DeepFactorizedDensity, lower_bound
from featcomp.entropy.quantization import QuantizationMode, quantize
from featcomp.errors import CodecError

__all__ = ["EntropyBottleneck"]

_LIKELIHOOD_BOUND = 1e-9


class EntropyBottleneck(nn.Module):
    """Per-channel learned entropy model with quantization; ``forward(y) -> (y_hat, bits)``.

    Args:
        channels: C, the size of axis 1 of the inputs.
        **density_options: passed to :class:`DeepFactorizedDensity` (``filters``, ``init_scale``).

    Invariants:
        * ``offsets`` is always the median of the current density (no update step).
        * In eval mode (``ROUND``), ``y_hat`` equals ``freeze().decompress(freeze().compress(y))``
          element for element for float32 ``y``.
    """

    def __init__(self, channels: int, **density_options) -> None:
        super().__init__()
        self.channels = int(channels)
        self.density = DeepFactorizedDensity(self.channels, **density_options)
        self._offsets_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ offsets
    @torch.no_grad()
    def _param_snapshot(self) -> torch.Tensor:
        # The density has ~40 parameters per channel: comparing a copy is cheap and, unlike version
        # counters, also sees writes through ``.data`` and ``load_state_dict``.
        return torch.cat([p.detach().reshape(-1) for p in self.density.parameters()])

    @property
    def offsets(self) -> torch.Tensor:
        """float32 (C,): the medians of the density (recomputed only when parameters change)."""
        snap = self._param_snapshot()
        cache = self._offsets_cache
        if cache is None or cache[0].shape != snap.shape or cache[0].device != snap.device or not torch.equal(cache[0], snap):
            med = self.density.quantile(0.5).to(torch.float32)
            self._offsets_cache = (snap.clone(), med)
        return self._offsets_cache[1]

    # ------------------------------------------------------------------ forward
    def forward(self, y: torch.Tensor, *, mode: QuantizationMode | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize ``y`` and estimate its rate.

        Args:
            y: float (N, C, *) with channels on axis 1.
            mode: a :class:`QuantizationMode`; default NOISE in training, ROUND in eval.

        Returns:
            ``(y_hat, bits)``: y_hat (N, C, *) like y; bits float (N,), the sum over channels and
            trailing dims of ``-log2 p(y_hat)`` where ``p = CDF(. + 1/2) - CDF(. - 1/2)``. With
            NOISE this is the differentiable upper bound used for training; with ROUND/STE it is
            the estimate of the coded size (the frozen codec codes within a fraction of a percent
            of it). Always differentiable w.r.t. y (straight-through for ROUND) and the density.
        """
        if y.dim() < 2 or y.shape[1] != self.channels:
            raise ValueError(f"expected y of shape (N, {self.channels}, *), got {tuple(y.shape)}")
        if mode is None:
            mode = QuantizationMode.NOISE if self.training else QuantizationMode.ROUND
        if not isinstance(mode, QuantizationMode):
            raise TypeError(f"mode must be a QuantizationMode, got {mode!r}")
        # NOISE does not depend on the offsets (U(-1/2, 1/2) noise is shift-invariant), so the
        # median is only computed for STE/ROUND.
        offsets = None if mode is QuantizationMode.NOISE else self.offsets.to(y.device)
        y_hat = quantize(y, mode, offsets)
        rate_input = y_hat if mode is not QuantizationMode.ROUND else quantize(y, QuantizationMode.STE, offsets)
        N = y.shape[0]
        flat = rate_input.movedim(1, 0).reshape(self.channels, -1)  # (C, N * prod(*))
        lik = self.density.likelihood(flat.to(self.density.matrices[0].dtype))
        bits = -torch.log2(lower_bound(lik, _LIKELIHOOD_BOUND))
        bits = bits.reshape(self.channels, N, -1).sum(dim=(0, 2))
        return y_hat, bits

    # ------------------------------------------------------------------ freezing
    @torch.no_grad()
    def freeze(self, *, precision: int = 16, tail_mass: float = 1e-9, max_table_size: int = 2048) -> EntropyCodec:
        """Make the immutable integer-table codec of the current density.

        Args:
            precision: table bits (<= 16).
            tail_mass: probability left outside each channel's table (escape-coded exactly).
            max_table_size: cap on the number of in-table values per channel.

        Returns:
            An :class:`EntropyCodec` whose offsets are ``self.offsets`` and whose tables are the
            quantized ``p(k + offset)`` for k in the range, with the tails' mass on the escape.
            The floats are evaluated once, here (in float64); decoding never touches them again.
        """
        offsets = self.offsets.detach().cpu().to(torch.float32)
        dens = copy.deepcopy(self.density).to(device="cpu", dtype=torch.float64)
        off64 = offsets.to(torch.float64)
        lo_q = dens.quantile(tail_mass / 2)
        hi_q = dens.quantile(1 - tail_mass / 2)
        tmin = torch.floor(lo_q - off64)
        tmax = torch.ceil(hi_q - off64)
        size = (tmax - tmin + 1).clamp(1, max_table_size)
        # keep tables centred on the median when capped
        tmin = torch.where(tmax - tmin + 1 > max_table_size, -torch.floor(size / 2), tmin)
        L = int(size.max().item())
        k = tmin[:, None] + torch.arange(L, dtype=torch.float64)[None, :]
        pmf = dens.likelihood(k + off64[:, None])
        valid = torch.arange(L)[None, :] < size[:, None]
        pmf = torch.where(valid, pmf, torch.zeros_like(pmf))
        escape = (1.0 - pmf.sum(dim=1)).clamp_min(0.0)
        return EntropyCodec.from_pmf(
            pmf.numpy(),
            tmin.numpy().astype(np.int64),
            size.numpy().astype(np.int64),
            escape.numpy(),
            offsets=offsets.numpy(),
            precision=precision,
        )

    def compress(self, y) -> bytes:  # pragma: no cover - guidance only
        """Not available on a trainable model.

        Raises:
            CodecError: always; call ``codec = bottleneck.freeze()`` then ``codec.compress(y)``.
        """
        raise CodecError(
            "EntropyBottleneck is trainable and has no coding tables; call "
            "codec = bottleneck.freeze() and use codec.compress(y) / codec.decompress(data)"
        )

"""The trainable temporal prior (torch) and its joint training with a head; freezes to a TemporalCodec.

:class:`TemporalPrior` is the float, differentiable twin of :func:`featcomp.entropy.temporal.integer_context`:
for a sequence of latents ``x_t = y_t - offsets`` (quantization units, (B, T, C, *)) it predicts

* ``mu_t = w_loc @ xr_{t-1} + b_loc`` and ``u_t = w_scale @ |xr_{t-1}| + b_scale`` for ``t >= 1``, where
  ``xr`` is the straight-through rounded latent (what the decoder will have: ``k_{t-1}``);
* ``mu_0 = fresh_loc``, ``u_0 = fresh_scale`` for the first frame of a chunk;
* with ``restarts`` (default), every later frame costs the smaller of its context cost and its cost
  under the fresh context, plus the restart flag's cost: what the version-3 codec's encoder pays, since
  it restarts a frame from the fresh context wherever that is cheaper (a shot change);

with ``sigma = scale_min * exp(step * clamp(u, 0, S-1))`` (``u`` is the continuous scale index on the
family's log grid), and the rate ``-log2 P(x_t)`` where ``P`` is the Laplace density of location ``mu``
and scale ``sigma`` convolved with ``U(-1/2, 1/2)`` (the training proxy of Ballé et al. 2018,
arXiv:1802.01436): with noisy ``x_t`` it is a differentiable upper bound on the coded rate.

The context matrices are parameterized by ``context``:

* ``"diagonal"`` (default): ``w_loc = diag(a) + U_l V_l^T`` and ``w_scale = diag(d) + U_s V_s^T`` with
  ranks ``rank`` / ``scale_rank`` (0 by default: each channel is predicted from its own previous value
  only, 2C context parameters). On real video (docs/temporal.md) this generalizes from a few hundred
  training clips to later segments of the same videos, where the unconstrained matrices do not;
* ``"full"``: two free C x C matrices (2C^2 parameters; over-fits ~200 clips of 128 channels and then
  codes held-out segments with *more* bits than a factorized prior).

Either way :meth:`freeze` writes the same dense integer matrices, so the codec is unchanged.

:meth:`TemporalPrior.freeze` quantizes the weights to ``2**-frac_bits`` fixed point, builds the table
family once and returns an immutable :class:`~featcomp.entropy.temporal.TemporalCodec`; from then on
only integers are used (the rate may move slightly with the fixed-point rounding; correctness cannot).

:func:`fit_temporal_head` trains a head and a prior jointly on sequences with ``objective + lam *
rate`` (Singh et al. 2020, arXiv:2007.11797). The head is duck-typed (``analyze``, ``scale``,
``bottleneck``, ``synthesize``: :class:`featcomp.head.CompressibleHead`), so this layer-1 module does
not import layer 2. With ``prior=None`` the same loop trains the factorized baseline.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.entropy.temporal import DIAGONAL_BODY_MAX_CHANNELS, RESTART_FLAG_BITS, TemporalCodec
from featcomp.errors import ConfigError

__all__ = ["TemporalPrior", "laplace_bits", "fit_temporal_head", "fit_temporal_prior", "ste_round"]

_LOG2 = math.log(2.0)
CONTEXTS = ("full", "diagonal")


def ste_round(x: Tensor) -> Tensor:
    """Round half to even in the forward pass, identity gradient."""
    return x + (torch.round(x) - x).detach()


def laplace_bits(r: Tensor, sigma: Tensor) -> Tensor:
    """``-log2`` of the Laplace(0, sigma) mass on ``[r - 1/2, r + 1/2]``, elementwise, stable in the tails.

    Args:
        r: float residuals (any shape). sigma: positive float scales (broadcastable).
    """
    a = r.abs()
    inv = 1.0 / sigma
    # a >= 1/2: p = 0.5 * exp(-(a - 1/2)/sigma) * (1 - exp(-1/sigma))
    log_far = math.log(0.5) - (a - 0.5) * inv + torch.log(-torch.expm1(-inv))
    # a < 1/2: p = 1 - 0.5 exp(-(1/2 - a)/sigma) - 0.5 exp(-(1/2 + a)/sigma)
    near = 1.0 - 0.5 * torch.exp(-(0.5 - a).clamp_min(0) * inv) - 0.5 * torch.exp(-(0.5 + a) * inv)
    log_near = torch.log(near.clamp_min(1e-12))
    logp = torch.where(a >= 0.5, log_far, log_near)
    return -logp.clamp_min(math.log(1e-9)) / _LOG2


class TemporalPrior(nn.Module):
    """Float temporal context model, frozen into a :class:`TemporalCodec`.

    Args:
        channels: C, latent channels.
        levels: S, scale indices. scale_min, scale_max: the log grid of scales.
        Q: fractional location steps of the tables. radius: table half-width (escapes beyond).
        frac_bits: fixed-point fraction bits of the frozen weights.
        init_rho: initial diagonal of ``w_loc`` (temporal correlation guess).
        context: ``"diagonal"`` (own previous value + optional low-rank terms) or ``"full"`` (free matrices).
        rank, scale_rank: ranks of the shared low-rank terms of ``w_loc`` / ``w_scale`` (``"diagonal"`` only).
        restarts: price later frames as the version-3 codec codes them (the cheaper of the context and
            the fresh context, plus the flag); False prices every later frame with its context (layout 2).

    Shapes: ``bits(x)`` takes x float (B, T, C, *) in quantization units (``y - offsets``) and returns
    float (B, T): bits per frame.
    """

    def __init__(self, channels: int, *, levels: int = 64, scale_min: float = 0.11, scale_max: float = 48.0,
                 Q: int = 4, radius: int = 48, frac_bits: int = 12, init_rho: float = 0.5,
                 context: str = "diagonal", rank: int = 0, scale_rank: int = 0, restarts: bool = True) -> None:
        super().__init__()
        C = int(channels)
        if context not in CONTEXTS:
            raise ConfigError(f"TemporalPrior: context must be one of {CONTEXTS}, got {context!r}")
        if context == "full" and (rank or scale_rank):
            raise ConfigError("TemporalPrior: rank / scale_rank apply to context='diagonal' only")
        if not (0 <= int(rank) <= C and 0 <= int(scale_rank) <= C):
            raise ConfigError(f"TemporalPrior: rank and scale_rank must be in [0, {C}], got {rank}, {scale_rank}")
        self.channels, self.levels, self.Q, self.radius, self.frac_bits = C, int(levels), int(Q), int(radius), int(frac_bits)
        self.context, self.rank, self.scale_rank = context, int(rank), int(scale_rank)
        self.restarts = bool(restarts)
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.step = math.log(scale_max / scale_min) / (levels - 1)
        u1 = math.log(1.0 / scale_min) / self.step  # index of sigma = 1
        if context == "full":
            self.w_loc = nn.Parameter(init_rho * torch.eye(C))
            self.w_scale = nn.Parameter(torch.zeros(C, C))
        else:
            # each channel predicted from its own previous value, plus optional low-rank shared terms
            # (U V^T, U starts at zero so training begins from the diagonal model)
            g = torch.Generator().manual_seed(0)
            self.loc_diag = nn.Parameter(torch.full((C,), float(init_rho)))
            self.scale_diag = nn.Parameter(torch.zeros(C))
            self.loc_u = nn.Parameter(torch.zeros(C, self.rank))
            self.loc_v = nn.Parameter(torch.randn(self.rank, C, generator=g) / math.sqrt(C))
            self.scale_u = nn.Parameter(torch.zeros(C, self.scale_rank))
            self.scale_v = nn.Parameter(torch.randn(self.scale_rank, C, generator=g) / math.sqrt(C))
        self.b_loc = nn.Parameter(torch.zeros(C))
        self.b_scale = nn.Parameter(torch.full((C,), u1))
        self.fresh_loc = nn.Parameter(torch.zeros(C))
        self.fresh_scale = nn.Parameter(torch.full((C,), u1 + 1.0 / self.step))

    @torch.no_grad()
    def init_scales_from(self, seqs: list) -> None:
        """Start the scale intercepts at the data's instead of at sigma = 1: ``fresh_scale`` at each
        channel's mean ``|k|``, ``b_scale`` at its mean ``|k_t - init_rho * k_{t-1}|`` (the residual of the
        initial context), both clipped to the scale grid.

        Every scale starts at index ~25 of 64 otherwise, and Adam moves an index by about ``lr`` per step:
        latents that are mostly zero (coarse steps, rate-controlled levels; scales ~0.1) are then not
        reached in a few hundred steps, and the fitted codec costs several times what it should.

        Args:
            seqs: integer latent sequences, each (T_i, C, *) in time order.
        """
        arrs = [np.asarray(s, np.float64).reshape(len(s), self.channels, -1) for s in seqs if len(s)]
        if not arrs:
            return
        k = np.concatenate([a.transpose(0, 2, 1).reshape(-1, self.channels) for a in arrs])
        rho = float(self.loc_diag.mean()) if self.context != "full" else float(torch.diagonal(self.w_loc).mean())
        res = [(a[1:] - rho * a[:-1]).transpose(0, 2, 1).reshape(-1, self.channels) for a in arrs if len(a) > 1]

        def index(m: np.ndarray) -> Tensor:
            sig = np.clip(m, self.scale_min, self.scale_max)
            return torch.as_tensor(np.log(sig / self.scale_min) / self.step, dtype=torch.float32)

        self.fresh_scale.copy_(index(np.abs(k).mean(0)))
        if res:
            self.b_scale.copy_(index(np.abs(np.concatenate(res)).mean(0)))

    def context_weights(self) -> tuple[Tensor, Tensor]:
        """The (C, C) float context matrices ``(w_loc, w_scale)`` (what :meth:`freeze` quantizes)."""
        if self.context == "full":
            return self.w_loc, self.w_scale
        w_loc = torch.diag(self.loc_diag) + self.loc_u @ self.loc_v
        w_scale = torch.diag(self.scale_diag) + self.scale_u @ self.scale_v
        return w_loc, w_scale

    def sigma(self, u: Tensor) -> Tensor:
        """Scale of continuous index ``u`` on the grid (clamped to ``[0, S-1]``)."""
        return self.scale_min * torch.exp(self.step * u.clamp(0, self.levels - 1))

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Location and continuous scale index of every frame: x (B, T, C, *) -> (mu, u) like x."""
        B, T, C = x.shape[:3]
        xr = ste_round(x[:, :-1]).reshape(B, T - 1, C, math.prod(x.shape[3:]))  # (B, T-1, C, M); T = 1 works
        extra = (1,) * (x.dim() - 3)
        mu0 = self.fresh_loc.reshape(1, 1, C, *extra).expand(B, 1, C, *x.shape[3:])
        u0 = self.fresh_scale.reshape(1, 1, C, *extra).expand(B, 1, C, *x.shape[3:])
        w_loc, w_scale = self.context_weights()
        mu = torch.einsum("cd,btdm->btcm", w_loc, xr) + self.b_loc[:, None]
        u = torch.einsum("cd,btdm->btcm", w_scale, xr.abs()) + self.b_scale[:, None]
        mu = torch.cat([mu0, mu.reshape(B, T - 1, C, *x.shape[3:])], 1)
        u = torch.cat([u0, u.reshape(B, T - 1, C, *x.shape[3:])], 1)
        return mu, u

    def bits(self, x: Tensor, x_coded: Tensor | None = None) -> Tensor:
        """Bits per frame (B, T) of ``x_coded`` (default: x + U(-1/2,1/2) noise in training, round(x) in eval)
        given the context from the rounded ``x``."""
        if x_coded is None:
            x_coded = x + torch.empty_like(x).uniform_(-0.5, 0.5) if self.training else torch.round(x)
        mu, u = self.predict(x)
        b = laplace_bits(x_coded - mu, self.sigma(u))
        b = b.reshape(b.shape[0], b.shape[1], -1).sum(-1)
        if not self.restarts or b.shape[1] < 2:
            return b
        # later frames: the cheaper of the context and the fresh context, plus the restart flag
        mu0, u0 = mu[:, :1], u[:, :1]
        bf = laplace_bits(x_coded[:, 1:] - mu0, self.sigma(u0))
        bf = bf.reshape(bf.shape[0], bf.shape[1], -1).sum(-1)
        later = torch.minimum(b[:, 1:] + RESTART_FLAG_BITS[0], bf + RESTART_FLAG_BITS[1])
        return torch.cat([b[:, :1], later], 1)

    @torch.no_grad()
    def freeze(self, offsets: Any, *, precision: int = 16) -> TemporalCodec:
        """Fixed-point weights + the table family built once -> an immutable :class:`TemporalCodec`.

        Args:
            offsets: float (C,) the quantization offsets of the latents (the head's medians).
            precision: table bits (<= 16).
        """
        F = self.frac_bits
        lim = (1 << 20) - 1

        def fx(p: Tensor, scale: float, limit: int) -> np.ndarray:
            return np.clip(np.round(p.detach().cpu().double().numpy() * scale), -limit, limit).astype(np.int64)

        w_loc, w_scale = self.context_weights()
        wl, ws = fx(w_loc, 2.0**F, lim).astype(np.int32), fx(w_scale, 2.0**F, lim).astype(np.int32)
        diagonal = (wl.shape[0] <= DIAGONAL_BODY_MAX_CHANNELS
                    and not np.count_nonzero(wl - np.diag(np.diagonal(wl)))
                    and not np.count_nonzero(ws - np.diag(np.diagonal(ws))))
        fam = TableFamily.build(scale_grid(self.scale_min, self.scale_max, self.levels), Q=self.Q,
                                radius=self.radius, precision=precision, shape="laplace")
        return TemporalCodec(
            np.asarray(offsets.detach().cpu().numpy() if hasattr(offsets, "detach") else offsets, np.float32),
            fam,
            wl,
            fx(self.b_loc, 2.0**F, (1 << 40) - 1),
            ws,
            fx(self.b_scale, 2.0**F, (1 << 40) - 1),
            fx(self.fresh_loc, float(self.Q), (1 << 30) - 1),
            np.clip(np.round(self.fresh_scale.detach().cpu().numpy()), 0, self.levels - 1).astype(np.int32),
            frac_bits=F,
            version=3 if self.restarts else 2,  # the stream layout whose cost the prior was trained on
            diagonal_body=diagonal,  # C values per weight matrix in the codec's bytes instead of C x C
        )


def _windows(seqs: list[np.ndarray], length: int, batch: int, g: np.random.Generator) -> np.ndarray:
    """A batch of random windows (batch, length, C, *) from a list of (T_i, C, *) sequences."""
    out = []
    lens = np.array([len(s) for s in seqs])
    p = np.maximum(lens - length + 1, 0).astype(np.float64)
    p /= p.sum()
    for i in g.choice(len(seqs), size=batch, p=p):
        s = seqs[i]
        a = int(g.integers(0, len(s) - length + 1))
        out.append(s[a : a + length])
    return np.stack(out)


def fit_temporal_prior(prior: TemporalPrior, seqs: list[np.ndarray], *, window: int = 4, steps: int = 600,
                       batch: int = 64, lr: float = 3e-2, seed: int = 0, val: list[np.ndarray] | None = None,
                       eval_every: int = 100, history: list | None = None) -> TemporalPrior:
    """Fit ``prior`` alone to fixed integer latents (e.g. a trained factorized head's ``k``), in place.

    Minimizes the exact discrete cost (bits per frame of the integers themselves, no noise) of random
    windows, Adam with a cosine-decayed ``lr``. Coding the same integers with the frozen result compares
    the two entropy models at *identical* quality.

    With ``val`` (held-out integer sequences, each coded from the fresh context like a chunk), the
    prior's exact cost on them is measured every ``eval_every`` steps and at the end, and the parameters
    with the lowest validation cost are kept (early stopping): the training windows can be far cheaper
    than held-out video (e.g. synthetic pans), so the training loss alone does not say when to stop.

    Args:
        prior: the :class:`TemporalPrior` to fit. seqs: integer-valued (T_i, C, *) sequences, T_i >= window.
        window, steps, batch, lr, seed: optimization.
        val: optional validation sequences (T_i, C, *); those of fewer than 2 frames are skipped (no
            early stopping when none is left). eval_every: steps between checks.
        history: a list that receives ``(step, validation bits per frame)`` at every check.

    Returns:
        ``prior``, in eval mode (with the best validation parameters when ``val`` is given).
    """
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    seqs = [np.asarray(s, np.float32) for s in seqs if len(s) >= window]
    # a 1-frame sequence is coded with the fresh context only: it says nothing about when to stop
    vals = [torch.as_tensor(np.asarray(s, np.float32))[None] for s in (val or []) if len(s) >= 2]
    n_val = sum(v.shape[1] for v in vals)
    opt = torch.optim.Adam(prior.parameters(), lr=lr)
    best: tuple[float, dict] | None = None

    def check(step: int) -> None:
        nonlocal best
        prior.eval()
        with torch.no_grad():
            cost = float(sum(prior.bits(v, v).sum() for v in vals)) / n_val
        if history is not None:
            history.append((step, cost))
        if best is None or cost < best[0]:
            best = (cost, copy.deepcopy(prior.state_dict()))

    for step in range(steps):
        if vals and step % max(int(eval_every), 1) == 0 and step:
            check(step)
        prior.train()
        for grp in opt.param_groups:
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x = torch.as_tensor(_windows(seqs, window, batch, g))
        loss = prior.bits(x, x).mean() / window
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if vals:
        check(steps)
        prior.load_state_dict(best[1])
    prior.eval()
    return prior


def fit_temporal_head(
    head: Any,
    seqs: list[np.ndarray],
    distortion: Callable[[Tensor, Tensor], Tensor],
    *,
    prior: TemporalPrior | None,
    lam: float,
    steps: int = 1000,
    window: int = 8,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    offsets_every: int = 25,
) -> tuple[Any, TemporalPrior | None]:
    """Train ``head`` (and ``prior``) jointly: ``distortion(x, x_hat) + lam * bits per frame``.

    Args:
        head: a :class:`featcomp.head.CompressibleHead` with a synthesis transform.
        seqs: list of float32 (T_i, C_in, *) feature sequences (frames in time order, T_i >= window).
        distortion: ``(x, x_hat) -> scalar`` on flattened frames (N, C_in, *).
        prior: a :class:`TemporalPrior` (temporal rate) or None (the head's factorized rate).
        lam: rate weight (per bit per frame). steps, window, batch, lr, seed: optimization.
        offsets_every: refresh the quantization offsets (the bottleneck's medians) every this many steps.

    Returns:
        ``(head, prior)`` trained, in eval mode.
    """
    torch.manual_seed(seed)
    g = np.random.default_rng(seed)
    params = list(head.parameters()) + (list(prior.parameters()) if prior is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    head.train()
    if prior is not None:
        prior.train()
    for step in range(steps):
        for grp in opt.param_groups:  # cosine decay
            grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        xb = torch.as_tensor(_windows(seqs, window, batch, g))  # (B, W, C_in, *)
        B, W = xb.shape[:2]
        x = xb.flatten(0, 1)
        y = head.analyze(x)  # (N, C', *) quantization units
        if step % offsets_every == 0:  # the medians' bisection is costly; they move slowly
            off = head.bottleneck.offsets.detach()
        offb = off.reshape((1, -1) + (1,) * (y.dim() - 2)).to(y.dtype)
        q = ste_round(y - offb) + offb
        x_hat = head.synthesize(q * head.scale.reshape((1, -1) + (1,) * (y.dim() - 2)))
        if prior is None:
            _, bits = head.bottleneck(y)
            rate = bits.mean()
        else:
            rate = prior.bits((y - offb).reshape(B, W, *y.shape[1:])).mean()
            # keep the factorized bottleneck's medians meaningful (they define the quantization grid)
            _, fb = head.bottleneck(y.detach())
            rate = rate + 1e-3 * fb.mean()
        loss = distortion(x, x_hat) + lam * rate
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    head.eval()
    if prior is not None:
        prior.eval()
    return head, prior

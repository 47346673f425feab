"""Properties of the trainable EntropyBottleneck, its prior and its quantization proxies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcomp.entropy import DeepFactorizedDensity, EntropyBottleneck, EntropyCodec, QuantizationMode, quantize
from featcomp.errors import CodecError


def _laplace(n: int, c: int, *trailing: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((n, c, *trailing), generator=g) - 0.5
    scales = torch.linspace(0.5, 4.0, c).reshape((1, c) + (1,) * len(trailing))
    return (-torch.sign(u) * torch.log1p(-2 * u.abs()) * scales + 0.3).float()


def _train(eb: EntropyBottleneck, steps: int, c: int, seed: int = 0) -> None:
    opt = torch.optim.Adam(eb.parameters(), lr=2e-2)
    eb.train()
    for i in range(steps):
        _, bits = eb(_laplace(256, c, seed=seed + i))
        opt.zero_grad()
        bits.mean().backward()
        opt.step()


@pytest.fixture(scope="module")
def trained() -> EntropyBottleneck:
    torch.manual_seed(0)
    eb = EntropyBottleneck(6)
    _train(eb, 300, 6)
    return eb


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 7), (2, 6, 3, 4)])
def test_shapes_and_modes(shape):
    eb = EntropyBottleneck(6)
    y = torch.randn(shape) * 3
    for training, mode in [(True, None), (False, None), (True, QuantizationMode.STE), (False, QuantizationMode.NOISE)]:
        eb.train(training)
        y_hat, bits = eb(y, mode=mode)
        assert y_hat.shape == y.shape and bits.shape == (shape[0],)
        assert torch.isfinite(bits).all() and (bits > 0).all()
    eb.eval()
    y_hat, _ = eb(y)
    off = eb.offsets.reshape((1, -1) + (1,) * (len(shape) - 2))
    assert torch.equal(y_hat, torch.round(y - off) + off)
    with pytest.raises(ValueError):
        eb(torch.randn(5, 7))
    with pytest.raises(TypeError):
        eb(y, mode="round")  # type: ignore[arg-type]


def test_bits_are_per_example_sums():
    eb = EntropyBottleneck(4).eval()
    y = torch.randn(3, 4, 5) * 2
    _, bits = eb(y)
    parts = torch.stack([eb(y[i : i + 1])[1][0] for i in range(3)])
    torch.testing.assert_close(bits, parts)


def test_quantization_proxies():
    y = torch.tensor([[0.2, 1.7, -2.5, 3.49]], requires_grad=True)
    off = torch.tensor([0.5, 0.0, 0.0, -0.25])
    ste = quantize(y, QuantizationMode.STE, off)
    assert torch.equal(ste.detach(), torch.round(y.detach() - off) + off)
    (ste * torch.arange(1.0, 5.0)).sum().backward()
    assert torch.equal(y.grad, torch.arange(1.0, 5.0)[None])  # straight-through: identity gradient
    r = quantize(y, QuantizationMode.ROUND, off)
    assert not r.requires_grad
    torch.manual_seed(0)
    big = torch.zeros(20000, 1)
    noisy = quantize(big, QuantizationMode.NOISE)
    assert noisy.abs().max() <= 0.5 and abs(noisy.mean().item()) < 0.01 and abs(noisy.var().item() - 1 / 12) < 0.005
    with pytest.raises(TypeError):
        quantize(y, "noise")  # type: ignore[arg-type]


def test_straight_through_gradients_reach_input_and_density():
    eb = EntropyBottleneck(3)
    y = (torch.randn(8, 3) * 2).requires_grad_()
    for mode in (QuantizationMode.STE, QuantizationMode.ROUND, QuantizationMode.NOISE):
        eb.zero_grad()
        y.grad = None
        y_hat, bits = eb(y, mode=mode)
        (bits.sum() + (y_hat**2).sum() * (mode is QuantizationMode.STE)).backward()
        assert y.grad is not None and y.grad.abs().sum() > 0
        assert all(p.grad is not None for p in eb.density.parameters())
        assert sum(p.grad.abs().sum() for p in eb.density.parameters()) > 0


def test_likelihood_is_stable_far_in_the_tails():
    d = DeepFactorizedDensity(2).double()
    x = torch.tensor([[-1e4, -200.0, 0.0, 200.0, 1e4]] * 2, dtype=torch.float64)
    lik = d.likelihood(x)
    assert torch.isfinite(lik).all() and (lik >= 0).all()
    # right tail: CDF(x+1/2) - CDF(x-1/2) would be 1 - 1 = 0 without the sign trick
    assert (lik[:, 3] > 0).all() and (lik[:, 1] > 0).all()
    cdf = d.cdf(torch.linspace(-50, 50, 1001, dtype=torch.float64).repeat(2, 1))
    assert (cdf.diff(dim=1) >= 0).all()  # monotone by construction
    # densities of the noisy variable sum to ~1 over integers
    grid = torch.arange(-300, 301, dtype=torch.float64).repeat(2, 1)
    torch.testing.assert_close(d.likelihood(grid).sum(1), torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)


def test_offsets_are_medians_and_follow_parameter_changes():
    eb = EntropyBottleneck(3)
    med = eb.offsets
    torch.testing.assert_close(eb.density.cdf(med[:, None]).squeeze(1), torch.full((3,), 0.5), atol=1e-5, rtol=0)
    with torch.no_grad():
        eb.density.biases[-1].data.add_(1.0)  # shifts every CDF: medians must move
    assert not torch.equal(eb.offsets, med)
    torch.testing.assert_close(eb.density.cdf(eb.offsets[:, None]).squeeze(1), torch.full((3,), 0.5), atol=1e-5, rtol=0)


def test_training_lowers_bits_and_noisy_bits_bound_eval_bits(trained):
    fresh = EntropyBottleneck(6).eval()
    x = _laplace(8192, 6, seed=10_000)
    trained.eval()
    eval_bits = trained(x)[1].mean().item()
    before = fresh(x)[1].mean().item()
    assert eval_bits < 0.8 * before
    # entropy of the rounded Laplacians (channels independent): the model cannot beat it by much
    k = torch.round(x - trained.offsets[None]).long()
    ent = 0.0
    for c in range(6):
        _, counts = torch.unique(k[:, c], return_counts=True)
        p = counts.double() / counts.sum()
        ent += -(p * torch.log2(p)).sum().item()
    assert ent - 0.1 < eval_bits < ent * 1.05 + 0.3
    trained.train()
    torch.manual_seed(1)
    noisy_bits = torch.stack([trained(x)[1].mean() for _ in range(4)]).mean().item()
    trained.eval()
    assert noisy_bits >= eval_bits
    # the learned medians sit near the data's median (0.3)
    assert (trained.offsets - 0.3).abs().max() < 0.35


def test_freeze_matches_eval_mode_exactly(trained):
    trained.eval()
    codec = trained.freeze()
    assert isinstance(codec, EntropyCodec) and codec.channels == 6 and codec.precision == 16
    again = trained.freeze()
    assert again.digest == codec.digest  # freezing is deterministic, no hidden state
    for shape in [(300, 6), (40, 6, 5), (7, 6, 3, 4)]:
        y = _laplace(*shape, seed=sum(shape)) * 1.5
        y.view(-1)[:3] = torch.tensor([1e5, -3e4, 77.7])  # far outside the tables
        y_hat, bits = trained(y)
        data = codec.compress(y)
        out = codec.decompress(data)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, y_hat.numpy())
        np.testing.assert_array_equal(codec.offsets, trained.offsets.numpy())
    # the coded size follows the model's eval estimate (few escapes; header + flush aside)
    y = _laplace(4000, 6, seed=99)
    _, bits = trained(y)
    coded = 8 * len(codec.compress(y))
    assert abs(coded - bits.sum().item()) / bits.sum().item() < 0.01
    with pytest.raises(CodecError, match="freeze"):
        trained.compress(y)


def test_state_dict_round_trip_gives_identical_codec(trained):
    eb = EntropyBottleneck(6)
    eb.load_state_dict(trained.state_dict())
    assert eb.freeze().digest == trained.freeze().digest

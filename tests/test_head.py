"""Tests of the compressibility head: GDN, shapes, quantization paths, freezing, rate vs lambda."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcomp.errors import ConfigError
from featcomp.head import GDN, CompressibleHead, HeadConfig, NonnegativeParameter
from featcomp.train import train_head


def _data(n=800, c=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c)).astype(np.float32) * np.linspace(0.2, 3.0, c, dtype=np.float32)
    y = ((x[:, 0] + x[:, 1] - 0.5 * x[:, 2]) > 0).astype(np.int64) + 2 * (x[:, 3] > 0.5)
    return x, y


def test_nonnegative_parameter_stays_above_minimum_and_recovers():
    p = NonnegativeParameter(torch.full((5,), 0.5), minimum=0.1)
    opt = torch.optim.SGD(p.parameters(), lr=1.0)
    for _ in range(50):  # push the value down hard
        opt.zero_grad()
        p().sum().backward()
        opt.step()
    v = p()
    assert torch.all(v >= 0.1 - 1e-7)
    assert torch.allclose(v, torch.full((5,), 0.1), atol=1e-5)
    # the gradient still flows when it pushes the value back up from the bound
    opt.zero_grad()
    (-p().sum()).backward()
    assert torch.all(p.raw.grad < 0)


def test_gdn_positive_denominator_sign_preserving_and_igdn_roughly_inverts():
    torch.manual_seed(0)
    g = GDN(16)
    ig = GDN(16, inverse=True)
    ig.load_state_dict(g.state_dict())
    # random (nonnegative) gamma off-diagonals too
    with torch.no_grad():
        g.gamma.raw.add_(0.05 * torch.rand(16, 16))
        ig.gamma.raw.copy_(g.gamma.raw)
    assert torch.all(g.beta() > 0) and torch.all(g.gamma() >= 0)
    x = torch.rand(64, 16, 3) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert torch.all(torch.sign(y) == torch.sign(x))
    assert torch.all(y.abs() <= x.abs() / torch.sqrt(g.beta()).min() + 1e-6)
    rel = (ig(y) - x).norm() / x.norm()
    assert rel < 0.05
    with pytest.raises(ConfigError):
        g(torch.zeros(2, 15))


@pytest.mark.parametrize("shape", [(6, 12), (6, 12, 5), (6, 12, 3, 4)])
@pytest.mark.parametrize("analysis", ["identity", "linear", "linear_gdn"])
def test_head_shapes_and_frozen_equivalence(shape, analysis):
    torch.manual_seed(1)
    cl = 12 if analysis == "identity" else 7
    head = CompressibleHead(in_channels=12, latent_channels=cl, analysis=analysis, synthesis="igdn_linear")
    x = torch.randn(*shape) * 3
    head.train()
    out = head(x)
    assert out.y_hat.shape == (shape[0], cl, *shape[2:])
    assert out.x_hat.shape == x.shape
    assert out.bits.shape == (shape[0],)
    assert torch.all(out.bits > 0)
    # straight-through: the objective sees values on the quantization grid, with gradient
    off = head.bottleneck.offsets.view(1, -1, *([1] * (x.ndim - 2)))
    k = out.y_hat / head.scale.view(1, -1, *([1] * (x.ndim - 2))) - off
    assert torch.allclose(k, torch.round(k), atol=1e-4)
    out.y_hat.sum().backward()
    assert head.log_scale.grad is not None
    # eval == frozen head, and the codec codes exactly the frozen head's latents
    head.eval()
    with torch.no_grad():
        ev = head(x)
    frozen = head.freeze()
    k = frozen.encode(x)
    assert k.dtype == np.int32 and k.shape == tuple(ev.y_hat.shape)
    np.testing.assert_array_equal(frozen.decode(k), ev.y_hat.numpy())
    data = frozen.codec.compress_symbols(k)
    np.testing.assert_array_equal(frozen.codec.decompress_symbols(data), k)
    np.testing.assert_allclose(frozen.synthesize(frozen.decode(k)).numpy(), ev.x_hat.numpy(), rtol=1e-5, atol=1e-5)


def test_head_rejects_bad_input_and_config():
    head = CompressibleHead(in_channels=8, latent_channels=4)
    with pytest.raises(ConfigError):
        head(torch.zeros(3, 9))
    with pytest.raises(ConfigError):
        HeadConfig(in_channels=8, latent_channels=4, analysis="identity")
    with pytest.raises(ConfigError):
        HeadConfig(in_channels=8, latent_channels=4, analysis="mlp")
    with pytest.raises(ConfigError):
        head.synthesize(torch.zeros(3, 4))


def test_headconfig_json_roundtrip():
    cfg = HeadConfig(in_channels=8, latent_channels=4, analysis="linear_gdn", synthesis="linear", density={"filters": [3, 3]})
    assert HeadConfig.from_json(cfg.to_json()) == cfg


def test_rate_decreases_as_lambda_grows_and_coded_size_matches_estimate():
    x, y = _data()
    bits = []
    for lam in (1e-3, 3e-2, 1.0):
        res = train_head(x, y, lam=lam, latent_channels=8, epochs=5, batch_size=200, lr=3e-2, seed=0, progress=False)
        head = res.head
        with torch.no_grad():
            est = head(torch.from_numpy(x)).bits.sum().item()
        frozen = head.freeze()
        k = frozen.encode(x)
        coded = 8 * len(frozen.codec.compress_symbols(k))
        # coded size within 1% (plus the fixed header) of the head's rounded estimate
        assert abs(coded - est) <= 0.01 * est + 8 * 24
        bits.append(coded / len(x))
    assert bits[0] > bits[1] > bits[2]

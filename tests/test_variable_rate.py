"""Variable rate: one gain-based head serving several rates, chosen at extraction time (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import featcomp
from featcomp.errors import ConfigError
from featcomp.model import CompressedClip, Extractor, decode_clip, load_model, save_model
from featcomp.store import StoreWriter, open_store

LAMS = (3e-3, 1e-2, 3e-2, 1e-1)
C, CL = 16, 8


class FeatureBackbone(nn.Module):
    def preprocess(self, frames):
        return torch.as_tensor(np.asarray(frames), dtype=torch.float32)

    def forward(self, x):
        return x


@pytest.fixture(scope="module")
def vr(tmp_path_factory):
    """One reconstruct head trained over four lambdas, its model file and held-out features."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(C, C)).astype(np.float32)
    x = (rng.normal(size=(1400, C)).astype(np.float32) * np.linspace(3, 0.3, C, dtype=np.float32)) @ mix
    train, test = x[:1000], x[1000:]
    head = featcomp.fit_head(train, objective="reconstruct", lam=list(LAMS), latent_channels=CL, epochs=12,
                             batch_size=50, lr=3e-3, progress=False)
    path = save_model(tmp_path_factory.mktemp("vr") / "m.safetensors", head, sampling={"mode": "all"})
    return head, path, test


def _bits_and_mse(model, test, rate):
    m = model.at_rate(rate)
    k = m.head.encode(test)
    bits = 8 * len(m.codec.compress_symbols(k)) / len(test)
    x_hat = m.head.synthesize(m.head.decode(k)).numpy()
    return bits, float(((x_hat - test) ** 2).mean())


def test_bits_fall_and_distortion_rises_with_the_level(vr):
    _, path, test = vr
    model = load_model(path)
    bits, mse = zip(*(_bits_and_mse(model, test, r) for r in range(len(LAMS))))
    assert all(b1 < b0 for b0, b1 in zip(bits, bits[1:])), bits
    assert all(m1 > m0 for m0, m1 in zip(mse, mse[1:])), mse
    assert bits[0] > 1.15 * bits[-1]  # the levels span a real range of rates (33.8 -> 27.6 bits here)
    # an interpolated rate lands between its neighbours
    b15, m15 = _bits_and_mse(model, test, 1.5)
    assert bits[2] < b15 < bits[1] and mse[1] < m15 < mse[2]


def test_model_file_records_levels_and_default_rate(vr):
    head, path, _ = vr
    m = load_model(path)
    assert m.head.config.rate_lams == LAMS and m.rate == 0.0
    assert m.head.log_gains.shape == (len(LAMS), CL)
    card = m.at_rate(2).model_card()
    assert card["rate"] == {"level": 2.0, "levels": 4, "lams": list(LAMS), "lam": pytest.approx(LAMS[2])}
    np.testing.assert_array_equal(np.asarray(card["dequantization"]["scale"], np.float32), m.at_rate(2).head.scale.numpy())
    # the steps grow with the level (coarser quantization at higher lambda)
    steps = [m.at_rate(r).head.scale.numpy() for r in range(len(LAMS))]
    assert all((s1 > s0).mean() > 0.5 for s0, s1 in zip(steps, steps[1:]))
    with pytest.raises(ConfigError):
        m.at_rate(len(LAMS) - 0.5 + 1)
    with pytest.raises(ConfigError):
        m.at_rate(-1)


def test_one_head_re_extracts_at_two_rates_and_both_decode_exactly(vr):
    _, path, test = vr
    model = load_model(path)
    clips = {}
    for rate in (0, 2.5):
        ex = Extractor(model, backbone=FeatureBackbone(), rate=rate)
        k = ex.encode_frames(test)
        clip = CompressedClip.from_bytes(ex.compress_latents(k, np.arange(len(k)) / 5.0).to_bytes())
        assert clip.rate == rate and clip.made_by(model.codec.digest)  # one shared entropy model
        np.testing.assert_array_equal(ex.decompress_latents(clip), k)
        # the base model (level 0) decodes a clip at the rate recorded in it
        np.testing.assert_array_equal(decode_clip(model, clip), model.at_rate(rate).head.decode(k))
        clips[rate] = clip
    assert len(clips[2.5].data) < len(clips[0].data)


def test_store_records_the_rate_and_decodes_without_the_model(vr, tmp_path):
    _, path, test = vr
    model = load_model(path).at_rate(3)
    k = model.head.encode(test)
    with StoreWriter(tmp_path / "s.zarr", model) as w:
        w.write("v", k, np.arange(len(k)) / 5.0)
    st = open_store(tmp_path / "s.zarr")
    card = st.model_card
    assert card["rate"]["level"] == 3.0 and card["rate"]["lam"] == pytest.approx(LAMS[3])
    scale = np.asarray(card["dequantization"]["scale"], np.float32)
    off = np.asarray(card["dequantization"]["offsets"], np.float32)
    np.testing.assert_array_equal(st["v"].features(), (k.astype(np.float32) + off) * scale)
    np.testing.assert_array_equal(st["v"].features(), model.head.decode(k))


def test_fixed_rate_model_refuses_a_rate():
    head = featcomp.head.CompressibleHead(in_channels=C, latent_channels=CL)
    with pytest.raises(ConfigError, match="fixed rate"):
        head.freeze().at_rate(1)

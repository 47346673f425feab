"""fit_temporal_codec: a factorized head's own integers coded by a temporal codec fitted afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import featcomp
from featcomp.entropy import TemporalCodec
from featcomp.errors import ConfigError
from featcomp.model import CompressedClip, Extractor, decode_clip, load_model, save_model
from featcomp.train.refit import fit_temporal_codec
from tests.test_entropy_kinds_model import C, FeatureBackbone, ar_sequences


def shots(rng, n_seq: int, T: int = 30):
    """AR(1) sequences with a shot change in the middle (a new, independent start, shifted)."""
    out = []
    for a, b in zip(ar_sequences(rng, n_seq, T), ar_sequences(rng, n_seq, T)):
        s = a.copy()
        s[T // 2 :] = b[: T - T // 2] + rng.choice([-6.0, 6.0], C).astype(np.float32)
        out.append(s)
    return out


@pytest.fixture(scope="module")
def heads():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    seqs = shots(rng, 8)
    head = featcomp.fit_head(np.concatenate(seqs[:6]), objective="reconstruct", lam=1e-2, latent_channels=C,
                             epochs=4, batch_size=32, lr=3e-3, progress=False).freeze()
    return head, fit_temporal_codec(head, seqs[:6], steps=200), seqs[6:]


def test_same_integers_same_reconstruction_fewer_bits(heads):
    head, th, test = heads
    assert th.kind == "temporal" and isinstance(th.codec, TemporalCodec) and th.codec.version == 3
    assert th.config.entropy_model == "temporal" and head.kind == "factorized"
    for s in test:
        k = head.encode(torch.as_tensor(s))
        np.testing.assert_array_equal(th.encode(torch.as_tensor(s)), k)  # same grid, same integers
        np.testing.assert_array_equal(th.decode(k), head.decode(k))  # same reconstruction
        ts, fs = th.codec.compress_symbols(k), head.codec.compress_symbols(k)
        np.testing.assert_array_equal(th.codec.decompress_symbols(ts), k)
        assert len(ts) < 0.8 * len(fs)  # AR(0.9) latents: far fewer bits than frame by frame


def test_the_refitted_head_round_trips_through_a_model_file_and_a_clip(heads, tmp_path):
    _, th, test = heads
    path = save_model(tmp_path / "t.safetensors", th, sampling={"mode": "all"})
    m = load_model(path)
    assert m.head.codec == th.codec and m.head.kind == "temporal" and m.head.config.entropy_model == "temporal"
    ex = Extractor(path, backbone=FeatureBackbone(), chunk_frames=10)
    k = ex.encode_frames(test[0])
    np.testing.assert_array_equal(k, th.encode(torch.as_tensor(test[0])))
    clip = CompressedClip.from_bytes(ex.compress_latents(k, np.arange(len(k)) / 5.0).to_bytes())
    assert clip.kind == "temporal" and len(clip.streams) == 3
    np.testing.assert_array_equal(decode_clip(m, clip), th.decode(k))


def test_refusals(heads):
    head, th, test = heads
    with pytest.raises(ConfigError, match="factorized"):
        fit_temporal_codec(th, test)
    with pytest.raises(ConfigError, match="frames"):
        fit_temporal_codec(head, [s[:3] for s in test])


def test_early_stopping_keeps_the_parameters_with_the_cheapest_validation_code():
    """Training windows unlike the held-out video (near-constant vs AR(0.9) with large steps): the
    validation cost rises as the fit goes on, and the fit must return the best checked parameters."""
    from featcomp.entropy.temporal_prior import TemporalPrior, fit_temporal_prior

    rng = np.random.default_rng(0)
    train = [np.round(rng.normal(0, 0.3, (12, 4))).astype(np.float32) for _ in range(20)]
    val = []
    for _ in range(4):
        x = np.zeros((10, 4))
        for t in range(1, 10):
            x[t] = 0.9 * x[t - 1] + rng.normal(0, 3, 4)
        val.append(np.round(x).astype(np.float32))
    hist: list = []
    p = fit_temporal_prior(TemporalPrior(4), train, steps=200, val=val, eval_every=20, history=hist)
    assert [s for s, _ in hist] == list(range(20, 201, 20))
    costs = [c for _, c in hist]
    assert costs.index(min(costs)) < len(costs) - 1 and costs[-1] > min(costs) + 0.5  # the fit overshoots
    with torch.no_grad():
        kept = sum(float(p.bits(torch.as_tensor(v)[None], torch.as_tensor(v)[None]).sum()) for v in val) / 40
    assert kept == pytest.approx(min(costs), rel=1e-5)
    codec = p.freeze(np.zeros(4, np.float32))  # and the frozen codec codes them at about that cost
    coded = sum(8 * len(codec.compress_symbols(v.astype(np.int32))) for v in val) / 40
    assert coded < costs[-1] + 8 * 16 / 10  # headers (~16 bytes a stream) aside, no worse than the last check


def test_fit_temporal_codec_early_stops_on_validation_features(heads):
    head, _, test = heads
    hist: list = []
    th = fit_temporal_codec(head, test, steps=60, eval_every=20, val=test[:1], history=hist)
    assert [s for s, _ in hist] == [20, 40, 60]
    k = head.encode(torch.as_tensor(test[0]))
    np.testing.assert_array_equal(th.encode(torch.as_tensor(test[0])), k)
    best = min(c for _, c in hist)
    coded = 8 * len(th.codec.compress_symbols(k)) / len(k)
    assert coded == pytest.approx(best, abs=8 * 24 / len(k) + 0.05 * best)  # the kept fit codes val at its checked cost


def test_one_frame_validation_sequences_do_not_drive_early_stopping():
    from featcomp.entropy.temporal_prior import TemporalPrior, fit_temporal_prior

    rng = np.random.default_rng(1)
    train = [np.round(rng.normal(0, 2, (8, 3))).astype(np.float32) for _ in range(6)]
    hist: list = []
    fit_temporal_prior(TemporalPrior(3), train, steps=40, val=[train[0][:1], train[1][:1]], eval_every=10, history=hist)
    assert hist == []  # only the fresh context would have been measured: no checks, the full fit is kept
    fit_temporal_prior(TemporalPrior(3), train, steps=40, val=[train[0][:1], train[1][:2]], eval_every=10, history=hist)
    assert [s for s, _ in hist] == [10, 20, 30, 40]


def test_scales_start_at_the_datas_own():
    """Latents far from unit scale: the data-initialized prior codes them in far fewer bits after a short fit,
    and init_scales_from puts each channel's fresh scale at its mean |k| (on the scale grid)."""
    from featcomp.entropy import EntropyCodec
    from featcomp.entropy.temporal_prior import TemporalPrior
    from featcomp.head import CompressibleHead, FrozenHead

    rng = np.random.default_rng(3)
    c, T = 8, 40
    scales = np.array([0.15, 0.2, 0.3, 0.5, 6.0, 10.0, 15.0, 25.0], np.float32)

    def seq():
        z = np.zeros((T, c), np.float32)
        for t in range(T):
            z[t] = 0.9 * z[t - 1] + rng.laplace(0, 1, c) * scales if t else rng.laplace(0, 1, c) * scales
        return z

    train, test = [seq() for _ in range(12)], [seq() for _ in range(4)]
    head = CompressibleHead(in_channels=c, latent_channels=c, analysis="identity", synthesis="none", init_scale=1.0)
    frozen = FrozenHead.from_head(head, EntropyCodec.fit(np.concatenate([head.freeze().encode(s) for s in train])))
    ks = [frozen.encode(s) for s in train]
    p = TemporalPrior(c)
    p.init_scales_from(ks)
    want = np.clip(np.abs(np.concatenate(ks)).mean(0), p.scale_min, p.scale_max)
    got = p.scale_min * np.exp(p.step * p.fresh_scale.detach().numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5)

    def bits(h):
        return sum(8 * len(h.codec.compress_symbols(h.encode(s))) for s in test)

    torch.manual_seed(0)
    unit = bits(fit_temporal_codec(frozen, train, steps=60, init_scales="unit"))
    torch.manual_seed(0)
    data = bits(fit_temporal_codec(frozen, train, steps=60, init_scales="data"))
    assert data < 0.9 * unit, (data, unit)
    with pytest.raises(ConfigError, match="init_scales"):
        fit_temporal_codec(frozen, train, steps=1, init_scales="ones")

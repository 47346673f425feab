"""Per-frame rate control with a temporal codec (issue 18 item 6): a variable-rate head's temporal codec is
fitted on the rate-controlled integers, the level choice is the codec's business only through the give-up
ranking, and clips, stores and the refit command carry levels and temporal chunks together."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcomp.cli import main as cli
from featcomp.entropy import EntropyCodec
from featcomp.errors import CodecError, ConfigError
from featcomp.head import FrozenHead, init_from_classifier
from featcomp.model import CompressedClip, Extractor, decode_clip, load_model, save_model
from featcomp.ratecontrol import RateControl, choose_levels, fit_rate_control_codec, frame_bits, step_ladder_head
from featcomp.store import StoreWriter, open_store
from featcomp.train import fit_temporal_codec
from tests.test_ratecontrol import STEPS, C, K, Teacher, _wb

RC = RateControl(target_agreement=0.95)


def _sequences(rng, n, T, rho=0.95):
    """AR(1) feature sequences (consecutive frames correlated like video features at a few fps)."""
    out = []
    for _ in range(n):
        x = np.empty((T, C), np.float32)
        x[0] = rng.normal(size=C)
        for t in range(1, T):
            x[t] = rho * x[t - 1] + np.sqrt(1 - rho ** 2) * rng.normal(size=C)
        out.append((x * np.linspace(2.0, 0.5, C)).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def heads():
    rng = np.random.default_rng(0)
    w, b = _wb()
    train, test = _sequences(rng, 8, 60), _sequences(rng, 2, 60)
    head = step_ladder_head(C, K, STEPS, analysis="linear", synthesis="linear")
    head.set_input_stats(np.concatenate(train))
    init_from_classifier(head, w)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, K), np.int32)))
    pooled = np.concatenate([probe.encode(np.concatenate(train), rate=lv) for lv in range(len(STEPS))])
    teacher = Teacher(w, b)
    factorized = fit_rate_control_codec(FrozenHead.from_head(head, EntropyCodec.fit(pooled)), np.concatenate(train),
                                        teacher.classify, RC)
    temporal = fit_temporal_codec(factorized, train, rate_control=RC, teacher=teacher.classify, steps=300)
    return factorized, temporal, teacher, train, test


def test_the_temporal_codec_codes_the_rate_controlled_integers_in_fewer_bits(heads, tmp_path):
    factorized, temporal, teacher, _, test = heads
    assert temporal.kind == "temporal" and temporal.config.rate_levels == len(STEPS)
    np.testing.assert_array_equal(temporal.codec.offsets, factorized.codec.offsets)  # same quantization grid
    paths = {n: save_model(tmp_path / f"{n}.safetensors", h, sampling={"mode": "all"})
             for n, h in (("factorized", factorized), ("temporal", temporal))}
    sizes = {n: 0 for n in paths}
    for s in test:
        # every frame meeting the criterion: the level choice does not depend on the codec at all
        full = RateControl()
        a, b = choose_levels(factorized, s, teacher.classify, full), choose_levels(temporal, s, teacher.classify, full)
        np.testing.assert_array_equal(a.levels, b.levels)
        np.testing.assert_array_equal(a.k, b.k)
        for name, p in paths.items():
            ex = Extractor(p, backbone=teacher, rate_control=RC)
            clip = CompressedClip.from_bytes(ex.compress_features(s, np.arange(len(s)) / 5.0).to_bytes())
            ch = choose_levels(ex.model.head, s, teacher.classify, RC)
            assert ch.agreement >= 0.95
            np.testing.assert_array_equal(clip.levels, ch.levels)
            assert (clip.chunks is not None) == (name == "temporal")
            np.testing.assert_array_equal(ex.decompress_latents(clip), ch.k)
            y = decode_clip(load_model(p), clip.to_bytes())  # the model alone, no teacher, no backbone
            np.testing.assert_array_equal(y, ex.model.head.decode(ch.k, levels=ch.levels))
            sizes[name] += len(clip.to_bytes())
    # AR(0.95) features: the temporal codec codes the same kind of integers in far fewer bytes
    assert sizes["temporal"] < 0.85 * sizes["factorized"], sizes


def test_frame_bits_split_the_sequence_cost(heads):
    factorized, temporal, teacher, _, test = heads
    k = choose_levels(temporal, test[0], teacher.classify, RC).k
    per = temporal.codec.frame_bits(k)
    assert per.shape == (len(k),) and (per > 0).all()
    assert per.sum() == pytest.approx(temporal.codec.estimate_bits(k), rel=1e-9)
    assert per[0] == pytest.approx(temporal.codec.estimate_bits(k[:1]), rel=1e-9)  # frame 0: the fresh context
    # in sequence, later frames cost less than alone (their predecessor predicts them)
    alone = np.array([temporal.codec.estimate_bits(k[i:i + 1]) for i in range(len(k))])
    assert per[1:].sum() < 0.9 * alone[1:].sum()
    np.testing.assert_array_equal(frame_bits(temporal.codec, k), per)
    np.testing.assert_array_equal(frame_bits(factorized.codec, k), factorized.codec.example_bits(k))
    assert temporal.codec.frame_bits(k[:0]).shape == (0,)
    c = temporal.codec
    v1 = type(c)(c.offsets, c.family, c.w_loc, c.b_loc, c.w_scale, c.b_scale, c.fresh_loc, c.fresh_scale,
                 c.frac_bits, c.clip, version=1)
    assert v1.version == 1
    with pytest.raises(CodecError, match="version 2 or 3"):
        v1.frame_bits(k)


def test_the_give_up_quota_holds_with_a_temporal_codec(heads):
    _, temporal, teacher, _, test = heads
    for target in (0.9, 0.8):
        ch = choose_levels(temporal, test[1], teacher.classify, RateControl(target_agreement=target))
        assert ch.agreement >= target
        full = choose_levels(temporal, test[1], teacher.classify, RateControl())
        moved = ch.levels != full.levels
        assert moved.any() and (ch.levels[moved] == len(STEPS) - 1).all()  # given-up frames go to the coarsest
        # the ones given up are those whose chosen level costs the most over the coarsest, priced in sequence
        coarse = len(STEPS) - 1
        k_coarse = temporal.encode(test[1], rate=coarse)
        saving = temporal.codec.frame_bits(full.k) - temporal.codec.frame_bits(k_coarse)
        cand = np.flatnonzero(full.kept & (full.levels != coarse))
        quota = int(np.floor((1 - target) * len(full.k) + 1e-9)) - int((~full.kept).sum())
        want = set(cand[np.argsort(-saving[cand], kind="stable")[:quota]].tolist())
        assert set(np.flatnonzero(moved).tolist()) == want
        np.testing.assert_allclose(ch.bits, temporal.codec.frame_bits(ch.k))


def test_fit_refusals_name_the_problem(heads):
    factorized, temporal, teacher, train, _ = heads
    with pytest.raises(ConfigError, match="rate_control="):
        fit_temporal_codec(factorized, train, steps=5)
    with pytest.raises(ConfigError, match="teacher="):
        fit_temporal_codec(factorized, train, rate_control=RC, steps=5)
    with pytest.raises(ConfigError, match="pooled"):
        fit_temporal_codec(factorized, [np.zeros((8, C, 2, 2), np.float32)], rate_control=RC,
                           teacher=teacher.classify, steps=5)
    with pytest.raises(ConfigError, match="RateControl"):
        fit_temporal_codec(factorized, train, rate_control=0.95, teacher=teacher.classify, steps=5)
    from featcomp.head import CompressibleHead

    one_rate = CompressibleHead(in_channels=C, latent_channels=K, synthesis="linear").freeze()
    with pytest.raises(ConfigError, match="fixed rate"):
        fit_temporal_codec(one_rate, train, rate_control=RC, teacher=teacher.classify, steps=5)
    with pytest.raises(ConfigError, match="factorized"):  # a temporal head is not refitted again
        fit_temporal_codec(temporal, train, rate_control=RC, teacher=teacher.classify, steps=5)
    with pytest.raises(ConfigError, match="factorized tables"):
        fit_rate_control_codec(temporal, np.concatenate(train), teacher.classify, RC)
    # with the distortion criterion no teacher is needed
    dist = fit_temporal_codec(factorized, train, rate_control={"criterion": "distortion", "budget": 0.05}, steps=20)
    assert dist.kind == "temporal"


def test_a_store_holds_levels_and_temporal_chunks_together(heads, tmp_path):
    _, temporal, teacher, _, test = heads
    from featcomp.model import Model

    model = Model(head=temporal, backbone=None, sampling=None, digest="cd" * 32)
    path = tmp_path / "s.zarr"
    want = {}
    with StoreWriter(path, model, levels=True, chunk_frames=16, shard_chunks=2) as w:
        for i, s in enumerate(test):
            ch = choose_levels(temporal, s, teacher.classify, RC)
            w.write(f"v{i}", ch.k, np.arange(len(s)) / 5.0, levels=ch.levels)
            want[f"v{i}"] = ch
    st = open_store(path)
    assert st.rate_levels == len(STEPS) and st.codec.kind == "temporal"
    for vid, ch in want.items():
        v = st[vid]
        np.testing.assert_array_equal(v.latents(), ch.k)
        np.testing.assert_array_equal(v.levels, ch.levels)
        np.testing.assert_array_equal(v.features(), temporal.decode(ch.k, levels=ch.levels))
        np.testing.assert_array_equal(v.window(5, 37).features(), temporal.decode(ch.k, levels=ch.levels)[5:37])


def test_refit_temporal_cli_under_rate_control(heads, tmp_path, capsys):
    factorized, _, _, train, test = heads
    src = save_model(tmp_path / "ladder.safetensors", factorized, sampling={"mode": "all"})
    np.savez(tmp_path / "seqs.npz", **{f"s{i}": s for i, s in enumerate(train + test)})
    out = tmp_path / "t.safetensors"
    args = ["refit-temporal", str(src), str(tmp_path / "seqs.npz"), "-o", str(out), "--steps", "200",
            "--eval-every", "50", "--val", "0.2"]
    assert cli(args) == 1  # a variable-rate head needs the rate control it will serve
    assert "--keep-top1, --max-distortion or --max-kl" in capsys.readouterr().err
    assert cli(args + ["--keep-top1", "0.95"]) == 1  # the top-1 needs the model's backbone: it names none
    assert "no backbone" in capsys.readouterr().err
    assert cli(args + ["--max-distortion", "0.05", "--keep-fraction", "0.9"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rc = {"criterion": "distortion", "budget": 0.05, "target_agreement": 0.9}
    assert summary["rate_control"] == {**RateControl(**rc).to_dict()}
    assert summary["val_bits_per_frame_temporal"] < summary["val_bits_per_frame_factorized"]
    m = load_model(out)
    assert m.head.kind == "temporal" and m.head.config.rate_levels == len(STEPS)
    assert m.training["refit_temporal"]["rate_control"] == summary["rate_control"]
    ex = Extractor(m, backbone=Teacher(*_wb()), rate_control=rc)
    clip = ex.compress_features(test[0], np.arange(len(test[0])) / 5.0)
    np.testing.assert_array_equal(ex.decompress_latents(clip.to_bytes()),
                                  choose_levels(m.head, test[0], None, RateControl(**rc)).k)
    # a fixed-rate head with a rate-control flag is refused
    from featcomp.head import CompressibleHead

    fixed = save_model(tmp_path / "fixed.safetensors", CompressibleHead(in_channels=C, latent_channels=K),
                       sampling={"mode": "all"})
    assert cli(["refit-temporal", str(fixed), str(tmp_path / "seqs.npz"), "-o", str(tmp_path / "x.safetensors"),
                "--steps", "5", "--max-distortion", "0.05"]) == 1
    assert "fixed rate" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()

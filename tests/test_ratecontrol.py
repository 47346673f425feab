"""Per-frame rate control (featcomp.ratecontrol) and clips that carry per-frame levels (clip format 3)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

from featcomp.entropy import EntropyCodec
from featcomp.errors import CodecError, ConfigError
from featcomp.head import CompressibleHead, FrozenHead, init_from_classifier
from featcomp.model import CompressedClip, Extractor, decode_clip, load_model, save_model
from featcomp.ratecontrol import RateControl, choose_levels, fit_rate_control_codec, step_ladder_head

C, K = 32, 20  # feature channels, teacher classes; latents = K (the full rank of the teacher)
STEPS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class Teacher(nn.Module):
    """A feature 'backbone' (identity) with a linear classifier, like a pooled torchvision tap."""

    def __init__(self, w, b):
        super().__init__()
        self.fc = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w))
            self.fc.bias.copy_(torch.from_numpy(b))

    def preprocess(self, frames):
        return torch.as_tensor(np.asarray(frames), dtype=torch.float32)

    def forward(self, x):
        return x

    def classify(self, f):
        return self.fc(f)


def _wb():
    rng = np.random.default_rng(0)
    return rng.normal(size=(K, C)).astype(np.float32), (0.1 * rng.normal(size=K)).astype(np.float32)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(K, C)).astype(np.float32)
    b = (0.1 * rng.normal(size=K)).astype(np.float32)
    x = (rng.normal(size=(900, C)) * np.linspace(2.0, 0.5, C)).astype(np.float32)
    head = step_ladder_head(C, K, STEPS, analysis="linear", synthesis="linear")
    head.set_input_stats(x[:600])
    init_from_classifier(head, w)
    # shared tables fitted on every level's training symbols alike (what a head trained over levels gives)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, K), np.int32)))
    pooled = np.concatenate([probe.encode(x[:600], rate=lv) for lv in range(len(STEPS))])
    frozen = FrozenHead.from_head(head, EntropyCodec.fit(pooled))
    teacher = Teacher(w, b)
    return frozen, teacher, x[:600], x[600:]


def _top1(teacher, head, k, levels):
    with torch.no_grad():
        return teacher.classify(head.synthesize(head.decode(k, levels=levels))).argmax(1).numpy()


def test_step_ladder_sets_the_steps():
    head = step_ladder_head(8, 8, (0.5, 1.0, 3.0), analysis="identity")
    for lv, st in enumerate((0.5, 1.0, 3.0)):
        np.testing.assert_allclose(head.effective_scale(lv).detach().numpy(), st, rtol=1e-6)
    for bad in ((1.0,), (1.0, 0.5), (0.0, 1.0)):
        with pytest.raises(ConfigError):
            step_ladder_head(8, 8, bad, analysis="identity")


def test_step_ladder_lams_are_training_lambdas_and_train_head_starts_from_the_ladder():
    """``lams`` replaces the nominal lambdas (steps ** 2) so train_head can continue the ladder head; the
    steps (gains) are unchanged by it, and training moves them away from the ladder."""
    from featcomp.train import train_head

    steps = (0.5, 1.0, 2.0)
    nominal = step_ladder_head(8, 8, steps, analysis="linear", synthesis="linear")
    assert nominal.config.rate_lams == (0.25, 1.0, 4.0)
    lams = (1e-3, 4e-3, 1.6e-2)
    head = step_ladder_head(8, 8, steps, lams=lams, analysis="linear", synthesis="linear")
    assert head.config.rate_lams == lams
    for lv, st in enumerate(steps):
        np.testing.assert_allclose(head.effective_scale(lv).detach().numpy(), st, rtol=1e-6)
    for bad in ((1.0, 2.0), (1.0, 0.5, 2.0), (0.0, 1.0, 2.0)):
        with pytest.raises(ConfigError, match="lams"):
            step_ladder_head(8, 8, steps, lams=bad, analysis="identity")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="rate_lams"):  # the nominal head cannot train at other lambdas
        train_head(x, None, head=nominal, objective="reconstruct", lam=lams, steps=2, progress=False)
    before = head.log_gains.detach().clone()
    res = train_head(x, None, head=head, objective="reconstruct", lam=lams, steps=20, lr=1e-2, progress=False)
    assert res.head is head and res.options["lam"] == list(lams)
    assert not torch.allclose(head.log_gains.detach(), before)


def test_each_frame_gets_the_coarsest_level_that_keeps_the_teachers_top1(setup):
    head, teacher, _, test = setup
    ch = choose_levels(head, test, teacher.classify, RateControl())
    ref = teacher.classify(torch.from_numpy(test)).argmax(1).numpy()
    # what the choice says is what the decoder gets
    np.testing.assert_array_equal(_top1(teacher, head, ch.k, ch.levels) == ref, ch.kept)
    for lv in range(len(STEPS)):  # the latents of a frame are exactly the head's latents at its level
        rows = ch.levels == lv
        np.testing.assert_array_equal(ch.k[rows], head.encode(test[rows], rate=lv))
    assert ch.kept.mean() > 0.97  # full-rank latents: almost every frame has a level that keeps it
    # no coarser level would have kept a kept frame
    for lv in range(len(STEPS) - 1):
        rows = np.flatnonzero(ch.kept & (ch.levels == lv))
        for coarser in range(lv + 1, len(STEPS)):
            k = head.encode(test[rows], rate=coarser)
            assert not (_top1(teacher, head, k, np.full(len(rows), coarser)) == ref[rows]).any()
    # frames are spread over levels (otherwise one fixed rate would do)
    assert len(np.unique(ch.levels)) >= 3
    np.testing.assert_allclose(ch.bits, head.codec.example_bits(ch.k))


def test_target_agreement_gives_up_the_most_expensive_frames(setup):
    head, teacher, _, test = setup
    full = choose_levels(head, test, teacher.classify, RateControl())
    part = choose_levels(head, test, teacher.classify, RateControl(target_agreement=0.9))
    n = len(test)
    assert part.agreement >= 0.9 and part.agreement < full.agreement
    quota = math.floor(0.1 * n + 1e-9) - int((~full.kept).sum())
    moved = np.flatnonzero(part.levels != full.levels)
    assert len(moved) == quota and np.all(part.levels[moved] == len(STEPS) - 1)
    # the moved frames are the ones whose kept level cost the most over the coarsest level
    coarse = head.codec.example_bits(head.encode(test, rate=len(STEPS) - 1))
    saving = np.where(full.kept & (full.levels != len(STEPS) - 1), full.bits - coarse, -np.inf)
    assert saving[moved].min() >= np.sort(saving)[-quota]
    assert part.bits.sum() < full.bits.sum() - 0.5 * (full.bits[moved] - coarse[moved]).sum()


def test_refitted_tables_code_the_rate_controlled_latents_in_fewer_bits(setup):
    head, teacher, train, test = setup
    rc = RateControl(target_agreement=0.95)
    fitted = fit_rate_control_codec(head, train, teacher.classify, rc)
    assert fitted.codec.digest != head.codec.digest
    np.testing.assert_array_equal(fitted.offsets.numpy(), head.offsets.numpy())
    a = choose_levels(head, test, teacher.classify, rc)
    b = choose_levels(fitted, test, teacher.classify, rc)
    np.testing.assert_array_equal(a.kept.mean(), b.kept.mean())
    old = 8 * len(head.codec.compress_symbols(b.k))
    new = 8 * len(fitted.codec.compress_symbols(b.k))
    assert new < 0.9 * old, (new, old)


def test_rate_control_refuses_heads_it_cannot_drive(setup):
    head, teacher, _, test = setup
    fixed = CompressibleHead(in_channels=C, latent_channels=K, synthesis="linear").freeze()
    with pytest.raises(ConfigError, match="variable-rate"):
        choose_levels(fixed, test, teacher.classify)
    nosyn = step_ladder_head(C, K, STEPS, analysis="linear").freeze()
    with pytest.raises(ConfigError, match="synthesis"):
        choose_levels(nosyn, test, teacher.classify)
    with pytest.raises(ConfigError, match="not levels"):
        choose_levels(head, test, teacher.classify, RateControl(levels=(0, 9)))
    with pytest.raises(ConfigError, match="pooled"):
        choose_levels(head, test[:, :5], teacher.classify)
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError):
            RateControl(target_agreement=bad)


@pytest.fixture(scope="module")
def model_path(setup, tmp_path_factory):
    head, teacher, train, _ = setup
    fitted = fit_rate_control_codec(head, train, teacher.classify, RateControl(target_agreement=0.95))
    return save_model(tmp_path_factory.mktemp("rc") / "m.safetensors", fitted, sampling={"mode": "all"})


def test_extractor_clip_carries_levels_and_decodes_exactly(setup, model_path):
    _, teacher, _, test = setup
    rc = RateControl(target_agreement=0.95)
    ex = Extractor(model_path, backbone=teacher, rate_control=rc)
    ts = np.arange(len(test)) / 5.0
    clip = ex.compress_features(test, ts)
    ch = choose_levels(ex.model.head, test, teacher.classify, rc)
    np.testing.assert_array_equal(clip.levels, ch.levels)
    back = CompressedClip.from_bytes(clip.to_bytes())
    assert back.to_bytes()[4] == 5  # clip format 5 (the default) with its per-frame levels flag
    assert back.to_bytes()[5] & 32
    np.testing.assert_array_equal(back.levels, ch.levels)
    assert back.rate is None and back.level_bits == 3  # 6 levels -> 3-bit fields
    np.testing.assert_array_equal(ex.decompress_latents(back), ch.k)
    y = ex.decompress(back)
    np.testing.assert_array_equal(y, ex.model.head.decode(ch.k, levels=ch.levels))
    # the decoder alone (no teacher, no backbone) reproduces the agreement the encoder promised
    ref = teacher.classify(torch.from_numpy(test)).argmax(1).numpy()
    agree = (teacher.classify(ex.model.head.synthesize(y)).argmax(1).numpy() == ref).mean()
    assert agree == pytest.approx(ch.agreement) and agree >= 0.95
    # stored size counts the level fields
    assert clip.bits_per_frame == pytest.approx(8 * (len(clip.data) + math.ceil(3 * len(test) / 8)) / len(test))
    # through the model alone as well
    np.testing.assert_array_equal(decode_clip(load_model(model_path), back.to_bytes()), y)


def test_extractor_rate_control_errors(setup, model_path):
    _, teacher, _, test = setup

    class NoClassifier(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="not both"):
        Extractor(model_path, backbone=teacher, rate=1, rate_control=RateControl())
    with pytest.raises(ConfigError, match="classifier"):
        Extractor(model_path, backbone=NoClassifier(), rate_control=RateControl())

    class HeadlessBackbone(Teacher):  # has classify() (like every featcomp Backbone) but no classifier behind it
        has_classifier = False

    with pytest.raises(ConfigError, match="classifier"):
        Extractor(model_path, backbone=HeadlessBackbone(*_wb()), rate_control=RateControl())
    ex = Extractor(model_path, backbone=teacher, rate_control={"target_agreement": 0.9})
    with pytest.raises(ConfigError, match="levels"):
        ex.encode_frames(test[:4])
    k, lv = ex.encode_frames_with_levels(test[:10])
    assert k.shape == (10, K) and lv.shape == (10,) and lv.dtype == np.uint8
    fixed = save_model(model_path.parent / "fixed.safetensors",
                       CompressibleHead(in_channels=C, latent_channels=K, synthesis="linear"), sampling={"mode": "all"})
    with pytest.raises(ConfigError, match="variable-rate"):
        Extractor(fixed, backbone=teacher, rate_control=RateControl())
    # a clip whose levels exceed the model's levels is refused by the decoder
    clip = ex.compress_features(test[:8], np.arange(8.0))
    bad = CompressedClip(data=clip.data, shape=clip.shape, timestamps=clip.timestamps, frame_indices=clip.frame_indices,
                         codec_digest=clip.codec_digest, levels=np.full(8, 7), level_bits=3)
    with pytest.raises(CodecError, match="rate levels"):
        decode_clip(ex.model, bad)


@pytest.mark.parametrize("w", range(1, 9))
def test_level_fields_round_trip_at_every_width(w):
    rng = np.random.default_rng(w)
    for n in (0, 1, 7, 8, 9, 101):
        lv = rng.integers(0, 1 << w, n)
        clip = CompressedClip(data=b"\x01\x02", shape=(n, 3), timestamps=np.arange(n) * 0.2,
                              frame_indices=np.arange(n), codec_digest="ab" * 32, levels=lv, level_bits=w)
        b = clip.to_bytes()
        back = CompressedClip.from_bytes(b)
        np.testing.assert_array_equal(back.levels, lv)
        assert back.data == b"\x01\x02" and back.level_bits == w and back.to_bytes() == b
        if n:
            with pytest.raises(CodecError):  # cut inside the level fields (the stream is 2 bytes)
                CompressedClip.from_bytes(b[: len(b) - 3])
    with pytest.raises(CodecError):
        CompressedClip(data=b"", shape=(2, 3), timestamps=np.zeros(2), frame_indices=np.arange(2),
                       codec_digest="ab" * 32, levels=np.array([0, 1 << w]), level_bits=w)
    with pytest.raises(CodecError):
        CompressedClip(data=b"", shape=(2, 3), timestamps=np.zeros(2), frame_indices=np.arange(2),
                       codec_digest="ab" * 32, levels=np.zeros(3), level_bits=w)
    with pytest.raises(CodecError):
        CompressedClip(data=b"", shape=(2, 3), timestamps=np.zeros(2), frame_indices=np.arange(2),
                       codec_digest="ab" * 32, rate=1.0, levels=np.zeros(2), level_bits=w)


def test_version_3_header_is_checked():
    clip = CompressedClip(data=b"", shape=(4, 3), timestamps=np.zeros(4), frame_indices=np.arange(4),
                          codec_digest="ab" * 32, levels=np.array([0, 1, 2, 3]), level_bits=2, format_version=3)
    b = clip.to_bytes()
    hl = struct.unpack_from("<I", b, 5)[0]
    hdr = b[9:9 + hl].replace(b'"levels":2', b'"levels":9')
    with pytest.raises(CodecError, match="width"):
        CompressedClip.from_bytes(b[:5] + struct.pack("<I", len(hdr)) + hdr + b[9 + hl:])


@pytest.mark.timeout(300)
def test_compress_cli_keep_top1_on_a_video(tmp_path, capsys):
    """End to end: a video, a torchvision backbone with its own classifier (random init, 32 px), the CLI."""
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.cli import main as cli
    from featcomp.video import SamplingConfig, SamplingMode, sample_frames
    from tests.clips import make_clip

    clip_path = make_clip(tmp_path / "clip.mp4", num_frames=60, fps=25, width=64, height=48)
    # a random-init resnet18 (512-d features, fc classifier) saved to a file, so the CLI builds the same one
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.safetensors")
    spec = BackboneSpec(name="resnet18", weights=None, input_size=32, weights_path=str(tmp_path / "r18.safetensors"))
    bb = build_backbone(spec).eval()
    sampling = SamplingConfig(mode=SamplingMode.ALL, batch_size=32)
    frames = np.concatenate([b.frames for b in sample_frames(str(clip_path), sampling)])
    with torch.no_grad():
        feats = bb(bb.preprocess(frames))
    head = step_ladder_head(feats.shape[1], 256, (0.01, 0.03, 0.1, 0.3), analysis="linear", synthesis="linear")
    head.set_input_stats(feats)
    init_from_classifier(head, bb.classifier.weight)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, 256), np.int32)))
    pooled = FrozenHead.from_head(head, EntropyCodec.fit(np.concatenate([probe.encode(feats, rate=lv) for lv in range(4)])))
    path = save_model(tmp_path / "m.safetensors", pooled, backbone=spec, sampling=sampling)
    out = tmp_path / "c.fcc"
    assert cli(["compress", str(clip_path), "--model", str(path), "--keep-top1", "0.9", "-o", str(out)]) == 0
    clip = CompressedClip.from_bytes(out.read_bytes())
    assert clip.num_frames == len(frames) and clip.levels is not None and clip.level_bits == 2
    assert len(np.unique(clip.levels)) >= 2  # the frames do not all sit at one level
    npy = tmp_path / "f.npy"
    assert cli(["compress", str(out), "--model", str(path), "--decompress", "-o", str(npy)]) == 0
    y = np.load(npy)
    model = load_model(path)
    with torch.no_grad():
        ref = bb.classify(feats).argmax(1).numpy()
        got = bb.classify(model.head.synthesize(y)).argmax(1).numpy()
    assert (got == ref).mean() >= 0.9
    assert cli(["compress", str(clip_path), "--model", str(path), "--keep-top1", "0.9", "--rate", "1",
                "-o", str(tmp_path / "x.fcc")]) != 0
    assert not (tmp_path / "x.fcc").exists()
    # a generic fidelity target: every decoded frame within the relative squared error budget
    with torch.no_grad():
        x = feats.numpy()
        errs = [((model.head.synthesize(model.head.decode(model.head.encode(x, rate=lv), levels=np.full(len(x), lv)))
                  .numpy() - x) ** 2).sum(1) / (x ** 2).sum(1) for lv in range(4)]
    budget = 1.01 * float(errs[0].max())
    out2 = tmp_path / "d.fcc"
    assert cli(["compress", str(clip_path), "--model", str(path), "--max-distortion", str(budget), "-o", str(out2)]) == 0
    assert cli(["compress", str(out2), "--model", str(path), "--decompress", "-o", str(npy)]) == 0
    with torch.no_grad():
        err = ((model.head.synthesize(np.load(npy)).numpy() - x) ** 2).sum(1) / (x ** 2).sum(1)
    assert (err <= budget * (1 + 1e-5)).all()
    clip2 = CompressedClip.from_bytes(out2.read_bytes())
    assert clip2.levels is not None and clip2.levels.max() > 0
    capsys.readouterr()
    for bad, msg in ((["--max-distortion", "0.1", "--keep-top1", "0.9"], "--keep-top1 and --max-distortion"),
                     (["--keep-fraction", "0.9"], "--keep-fraction goes with --max-distortion or --max-kl")):
        assert cli(["compress", str(clip_path), "--model", str(path), *bad, "-o", str(tmp_path / "y.fcc")]) != 0
        err = capsys.readouterr().err
        assert msg in err and "inference." not in err, err  # the flags' names, not the job config's
    assert not (tmp_path / "y.fcc").exists()


# ----------------------------------------------------------------- generic fidelity targets (issue 18, item 3)
def _rel_err(head, x, k, levels):
    xh = head.synthesize(head.decode(k, levels=levels)).detach().numpy()
    return ((xh - x) ** 2).sum(1) / (x ** 2).sum(1)


def _kl(teacher, head, x, k, levels):
    with torch.no_grad():
        lp = torch.log_softmax(teacher.classify(torch.from_numpy(x)), 1)
        lq = torch.log_softmax(teacher.classify(head.synthesize(head.decode(k, levels=levels))), 1)
        return (lp.exp() * (lp - lq)).sum(1).numpy()


def test_distortion_target_needs_no_teacher_and_picks_the_coarsest_level_within_budget(setup):
    head, _, _, test = setup
    errs = np.stack([_rel_err(head, test, head.encode(test, rate=lv), np.full(len(test), lv))
                     for lv in range(len(STEPS))])
    budget = 1.01 * float(errs[0].max())  # every frame meets it at the finest level (the projection's floor)
    ch = choose_levels(head, test, None, RateControl(criterion="distortion", budget=budget))
    got = _rel_err(head, test, ch.k, ch.levels)
    np.testing.assert_array_equal(ch.kept, got <= budget)
    assert ch.kept.all()
    for i in range(len(test)):  # the coarsest level within the budget, frame by frame
        ok = np.flatnonzero(errs[:, i] <= budget)
        assert ch.levels[i] == ok.max()
    assert len(np.unique(ch.levels)) >= 2
    # a looser budget costs fewer bits
    loose = choose_levels(head, test, None, RateControl(criterion="distortion", budget=budget * 1.3))
    assert loose.bits.sum() < ch.bits.sum()
    # the give-up quota works the same way as for the top-1
    part = choose_levels(head, test, None, RateControl(criterion="distortion", budget=budget, target_agreement=0.8))
    assert 0.8 <= part.agreement < 1.0 and part.bits.sum() < ch.bits.sum()


def test_kl_target_bounds_the_teachers_divergence(setup):
    head, teacher, _, test = setup
    budget = 0.05
    ch = choose_levels(head, test, teacher.classify, RateControl(criterion="kl", budget=budget))
    kl = _kl(teacher, head, test, ch.k, ch.levels)
    np.testing.assert_array_equal(ch.kept, kl <= budget + 1e-6)
    assert ch.agreement > 0.9
    coarser = np.minimum(ch.levels + 1, len(STEPS) - 1)
    rows = np.flatnonzero(ch.kept & (ch.levels < len(STEPS) - 1))
    k1 = np.stack([head.encode(test[i:i + 1], rate=int(coarser[i]))[0] for i in rows])
    assert (_kl(teacher, head, test[rows], k1, coarser[rows]) > budget - 1e-6).all()  # one level coarser breaks it


def test_fidelity_target_settings_are_checked(setup):
    head, teacher, _, test = setup
    for kw in ({"criterion": "top1", "budget": 0.1}, {"criterion": "distortion"}, {"criterion": "kl", "budget": 0.0},
               {"criterion": "distortion", "budget": float("nan")}, {"criterion": "psnr", "budget": 1.0}):
        with pytest.raises(ConfigError):
            RateControl(**kw)
    for rc in (RateControl(), RateControl(criterion="kl", budget=0.1)):
        with pytest.raises(ConfigError, match="teacher"):
            choose_levels(head, test, None, rc)
    rc = RateControl.from_dict(RateControl(criterion="distortion", budget=0.2).to_dict())
    assert rc.criterion == "distortion" and rc.budget == 0.2 and not rc.needs_teacher


def test_extractor_distortion_target_on_a_backbone_without_classifier(setup, model_path):
    head, _, _, test = setup

    class NoClassifier(nn.Module):
        def preprocess(self, frames):
            return torch.as_tensor(np.asarray(frames), dtype=torch.float32)

        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match="classifier"):
        Extractor(model_path, backbone=NoClassifier(), rate_control=RateControl(criterion="kl", budget=0.1))
    errs = np.stack([_rel_err(head, test, head.encode(test, rate=lv), np.full(len(test), lv)) for lv in range(3)])
    budget = 1.01 * float(errs[0].max())
    rc = RateControl(criterion="distortion", budget=budget)
    ex = Extractor(model_path, backbone=NoClassifier(), rate_control=rc)
    clip = ex.compress_features(test, np.arange(len(test)) / 5.0)
    y = ex.decompress(CompressedClip.from_bytes(clip.to_bytes()))
    err = ((ex.model.head.synthesize(y).detach().numpy() - test) ** 2).sum(1) / (test ** 2).sum(1)
    assert (err <= budget + 1e-6).all()
    assert clip.levels is not None and len(np.unique(clip.levels)) >= 2

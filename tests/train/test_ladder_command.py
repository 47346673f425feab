"""`featcomp train --ladder`: the hand-built rate-control head (teacher-SVD projection on a step ladder) from
the command line, its tables fitted for --keep-top1, and (store input) a temporal codec fitted on the
rate-controlled integers when it wins on held-out videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featcomp.cli import main as cli
from featcomp.errors import ConfigError
from featcomp.model import Extractor, load_model
from featcomp.ratecontrol import RateControl, choose_levels, teacher_ladder_head
from featcomp.store import StoreWriter
from tests.test_ratecontrol import C, K, Teacher, _wb
from tests.test_ratecontrol_temporal import _sequences

STEPS = "0.5,1,2,4,8,16"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ladder")
    w, b = _wb()
    np.savez(d / "teacher.npz", weight=w, bias=b)
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(400, C)) * np.linspace(2.0, 0.5, C)).astype(np.float32)
    np.savez(d / "feats.npz", features=x)
    return d, x, Teacher(w, b)


def test_ladder_builds_the_rate_control_head_the_library_builds(files, capsys):
    d, x, teacher = files
    out = d / "ladder.safetensors"
    args = ["train", str(d / "feats.npz"), "--objective", "distill", "--teacher", str(d / "teacher.npz"), "--ladder",
            STEPS, "--keep-top1", "0.9", "--latent", "16", "--val", "0.25", "--no-progress", "-o", str(out)]
    assert cli(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = summary["ladder"]
    assert rec["steps"] == [0.5, 1, 2, 4, 8, 16] and rec["latent"] == 16 and rec["train_rows"] == 300
    assert rec["rate_control"]["target_agreement"] == 0.9
    assert rec["val"]["rows"] == 100 and rec["val"]["top1_agreement"] >= 0.9  # the rule's guarantee
    m = load_model(out)
    assert m.head.kind == "factorized" and m.head.config.rate_levels == 6 and m.head.latent_channels == 16
    assert m.training["ladder"] == rec
    # exactly the library's head (same projection, steps and tables)
    lib = teacher_ladder_head(x[:300], teacher.fc, latent_channels=16, steps=(0.5, 1, 2, 4, 8, 16),
                              control=RateControl(0.9))
    assert lib.codec.digest == m.head.codec.digest
    for lv in (0, 3, 5):
        np.testing.assert_array_equal(lib.encode(x[300:], rate=lv), m.head.encode(x[300:], rate=lv))
    # extraction with the same target keeps it on the held-out rows, decoded by the model alone
    ex = Extractor(m, backbone=teacher, rate_control=RateControl(0.9))
    clip = ex.compress_features(x[300:], np.arange(100) / 5.0)
    y = ex.decompress(clip.to_bytes())
    with torch.no_grad():
        ref = teacher.classify(torch.from_numpy(x[300:])).argmax(1)
        got = teacher.classify(m.head.synthesize(y)).argmax(1)
    assert int((ref == got).sum()) >= 90  # of 100


def test_ladder_refusals_name_the_problem(files, capsys, tmp_path):
    d, _, _ = files
    base = ["train", str(d / "feats.npz"), "--no-progress", "-o", str(tmp_path / "x.safetensors")]
    teacher = ["--teacher", str(d / "teacher.npz")]
    cases = [
        (["--objective", "task", "--ladder", "default"], "--objective distill"),
        (["--objective", "distill", "--ladder", "default"], "teacher"),
        (["--objective", "distill", *teacher, "--ladder", "default", "--min-agreement", "0.9"], "lambdas"),
        (["--objective", "distill", *teacher, "--keep-top1", "0.9"], "--ladder"),
        (["--objective", "distill", *teacher, "--ladder", "1,0.5"], "ascending"),
        (["--objective", "distill", *teacher, "--ladder", "1,x"], "comma-separated"),
        (["--objective", "distill", *teacher, "--ladder", "default", "--keep-top1", "1.5"], "--keep-top1 must be in"),
    ]
    for extra, msg in cases:
        assert cli(base + extra) == 1, extra
        assert msg in capsys.readouterr().err, (extra, msg)
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(ConfigError, match="linear teacher"):
        teacher_ladder_head(np.zeros((4, C), np.float32), torch.nn.ReLU())
    seq = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(C, K))  # torchvision's classifier blocks
    h = teacher_ladder_head(np.random.default_rng(0).normal(size=(64, C)).astype(np.float32), seq, latent_channels=8,
                            steps=(1.0, 2.0))
    assert h.latent_channels == 8 and seq.training  # the teacher's mode is restored


@pytest.mark.timeout(300)
def test_ladder_on_a_store_keeps_a_temporal_codec_fitted_under_rate_control(files, capsys, tmp_path):
    d, _, teacher = files
    store = tmp_path / "raw.zarr"
    seqs = _sequences(np.random.default_rng(5), 8, 50, rho=0.99)
    with StoreWriter(store, raw=True, model_card={}) as w:
        for i, s in enumerate(seqs):
            w.write(f"v{i}", s, np.arange(len(s)) / 5.0)
    out = tmp_path / "t.safetensors"
    assert cli(["train", str(store), "--objective", "distill", "--teacher", str(d / "teacher.npz"), "--ladder", "0.25,0.5,1,2,4",
                "--latent", "16", "--temporal-steps", "300", "--temporal-val", "0.25", "--no-progress",
                "-o", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bits = summary["val_bits_per_frame"]
    # the ladder's tables never saw the two videos the codecs are judged on
    assert summary["ladder"]["train_rows"] == 6 * 50 and summary["ladder"]["val"]["rows"] == 2 * 50
    # AR(0.99) videos: the temporal codec wins on the held-out videos' rate-controlled integers
    assert summary["codec"] == "temporal" and bits["temporal"] < 0.98 * bits["factorized"]
    m = load_model(out)
    assert m.head.kind == "temporal" and m.head.config.rate_levels == 5
    assert m.training["temporal"]["chosen"] == "temporal"
    rc = RateControl(**m.training["ladder"]["rate_control"])
    ch = choose_levels(m.head, seqs[-1], teacher.classify, rc)
    np.testing.assert_array_equal(m.head.codec.decompress_symbols(m.head.codec.compress_symbols(ch.k)), ch.k)
    assert ch.agreement >= 0.95


def test_a_model_built_for_rate_control_warns_when_used_without_it(files, tmp_path, caplog):
    """A ladder model coded without rate control puts every frame at level 0 (3-4x the bits): the job and
    `featcomp compress` say which option to add; a rate or a rate control silences it."""
    import logging

    from featcomp.model import save_model
    from featcomp.pipelines.config import ExtractConfig
    from featcomp.pipelines.plan import ExtractPlan

    _, x, teacher = files
    head = teacher_ladder_head(x[:200], teacher.fc, latent_channels=8, steps=(1.0, 2.0, 4.0), control=RateControl(0.9))
    p = save_model(tmp_path / "l.safetensors", head, training={"ladder": {"rate_control": RateControl(0.9).to_dict()}})
    m = load_model(p)
    assert m.recorded_rate_control() == RateControl(0.9).to_dict()
    assert "--keep-top1 0.9" in m.rate_control_hint("l.safetensors")
    with caplog.at_level(logging.WARNING, logger="featcomp.pipelines.extract"):
        ExtractPlan.build(ExtractConfig(progress=False), str(p))
    assert any("--keep-top1 0.9" in r.getMessage() and "level 0" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="featcomp.pipelines.extract"):
        ExtractPlan.build(ExtractConfig(progress=False).with_overrides(inference={"rate": 0}), str(p))
    assert not caplog.records
    # a temporal refit under a distortion target records that one (it wins over the ladder's)
    rc = {"criterion": "distortion", "budget": 0.05, "target_agreement": 0.9}
    p2 = save_model(tmp_path / "t.safetensors", head, training={"ladder": {"rate_control": RateControl(0.9).to_dict()},
                                                                "refit_temporal": {"rate_control": rc}})
    assert "--max-distortion 0.05 --keep-fraction 0.9" in load_model(p2).rate_control_hint("t")
    # models without a recorded rate control (or fixed-rate ones) give no hint
    plain = save_model(tmp_path / "p.safetensors", head)
    assert load_model(plain).recorded_rate_control() is None and load_model(plain).rate_control_hint("p") is None

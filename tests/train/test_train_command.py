"""`featcomp train` over a store written with --raw (float16 backbone features + per-video labels)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featcomp.backbones import BackboneSpec
from featcomp.cli import main as cli
from featcomp.model import load_model
from featcomp.store import StoreWriter


def _raw_store(path, rng, spec, *, label_missing=False):
    centers = rng.normal(size=(3, 24)).astype(np.float32) * 3
    with StoreWriter(path, raw=True, model_card={"backbone": spec.to_dict()}) as w:
        for i in range(9):
            label = i % 3
            x = centers[label] + rng.normal(size=(30, 24)).astype(np.float32)
            meta = {} if (label_missing and i == 4) else {"label": label}
            w.write(f"v{i}", x, np.arange(30) / 5.0, metadata=meta)
    return centers


def test_train_from_a_raw_store_learns_the_labels_and_records_the_backbone(tmp_path, capsys):
    rng = np.random.default_rng(0)
    spec = BackboneSpec(name="resnet18", weights=None)
    centers = _raw_store(tmp_path / "raw.zarr", rng, spec)
    out = tmp_path / "m.safetensors"
    rc = cli(["train", str(tmp_path / "raw.zarr"), "--label-key", "label", "-o", str(out), "--latent", "8",
              "--epochs", "10", "--lam", "1e-3", "--batch-size", "64", "--val", "0", "--no-progress", "--seed", "0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["examples"] == 9 * 30
    m = load_model(out)
    # the head was fitted on the store's features: it separates the three classes through its latents
    k = m.head.encode(centers)
    assert len({tuple(row) for row in k.tolist()}) == 3
    # and the model file names the backbone recorded in the raw store's model card
    assert m.backbone is not None and m.backbone.name == "resnet18"


def test_train_names_the_video_without_a_label(tmp_path, capsys):
    rng = np.random.default_rng(1)
    _raw_store(tmp_path / "raw.zarr", rng, BackboneSpec(name="resnet18", weights=None), label_missing=True)
    rc = cli(["train", str(tmp_path / "raw.zarr"), "--label-key", "label", "-o", str(tmp_path / "m.safetensors"),
              "--epochs", "1", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "'v4'" in err and "label" in err
    assert not (tmp_path / "m.safetensors").exists()


def _teacher_data(rng, n, C=32, K=10):
    w = rng.normal(size=(K, C)).astype(np.float32)
    b = rng.normal(size=K).astype(np.float32)
    x = rng.normal(size=(n, C)).astype(np.float32) * 2
    return x, w, b


def test_train_distill_with_a_teacher_file_counts_steps_and_keeps_the_teachers_top1(tmp_path, capsys):
    rng = np.random.default_rng(5)
    x, w, b = _teacher_data(rng, 900)
    np.save(tmp_path / "x.npy", x[:600])
    np.savez(tmp_path / "teacher.npz", weight=w, bias=b)
    out = tmp_path / "d.safetensors"
    rc = cli(["train", str(tmp_path / "x.npy"), "--objective", "distill", "--teacher", str(tmp_path / "teacher.npz"),
              "--init-analysis", "teacher_svd", "--tau", "2", "--latent", "8", "--lam", "1e-3", "--steps", "300",
              "--batch-size", "128", "--val", "0.1", "--no-progress", "-o", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 300
    m = load_model(out)
    import torch

    with torch.no_grad():
        xt = torch.from_numpy(x[600:])
        y_hat = m.head.synthesize(m.head.decode(m.head.encode(x[600:])))
        ref = (xt @ torch.from_numpy(w).T + torch.from_numpy(b)).argmax(1)
        got = (y_hat @ torch.from_numpy(w).T + torch.from_numpy(b)).argmax(1)
    assert (ref == got).float().mean().item() > 0.6  # held-out top-1 agreement with the teacher (chance: 0.1)
    opts = m.training["options"]
    assert opts["steps"] == 300 and opts["objective"] == "distill"


def test_train_min_steps_and_teacher_errors(tmp_path, capsys):
    rng = np.random.default_rng(6)
    x, w, b = _teacher_data(rng, 100)
    np.save(tmp_path / "x.npy", x)
    out = str(tmp_path / "m.safetensors")
    assert cli(["train", str(tmp_path / "x.npy"), "--objective", "distill", "-o", out, "--no-progress"]) == 1
    assert "needs a teacher" in capsys.readouterr().err
    assert cli(["train", str(tmp_path / "x.npy"), "--objective", "distill", "--teacher", "nope.npz", "-o", out]) == 1
    assert "no such file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", w=w)
    assert cli(["train", str(tmp_path / "x.npy"), "--objective", "distill", "--teacher", str(tmp_path / "bad.npz"),
                "-o", out]) == 1
    assert "'weight'" in capsys.readouterr().err
    # 100 vectors at batch 64 are 2 steps an epoch: 3 epochs are raised to --min-steps
    np.save(tmp_path / "y.npy", (x @ w.T).argmax(1))
    assert cli(["train", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--epochs", "3",
                "--min-steps", "50", "--batch-size", "64", "--val", "0", "--latent", "4", "--no-progress", "-o", out]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 50


def test_train_distill_from_the_recorded_backbones_classifier(tmp_path, capsys):
    """--teacher backbone: the classifier of the backbone named in the raw store's model card."""
    spec = BackboneSpec(name="resnet18", weights=None)  # random weights: no download; fc is 512 -> 1000
    rng = np.random.default_rng(7)
    with StoreWriter(tmp_path / "raw.zarr", raw=True, model_card={"backbone": spec.to_dict()}) as w:
        for i in range(4):
            w.write(f"v{i}", np.abs(rng.normal(size=(40, 512))).astype(np.float32), np.arange(40) / 5.0)
    out = tmp_path / "d.safetensors"
    rc = cli(["train", str(tmp_path / "raw.zarr"), "--objective", "distill", "--teacher", "backbone",
              "--init-analysis", "teacher_svd", "--latent", "16", "--steps", "40", "--val", "0", "--no-progress",
              "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 40
    m = load_model(out)
    assert m.backbone.name == "resnet18" and m.head.latent_channels == 16
    # a backbone without a recorded spec cannot give a teacher
    np.save(tmp_path / "x.npy", rng.normal(size=(50, 512)).astype(np.float32))
    assert cli(["train", str(tmp_path / "x.npy"), "--objective", "distill", "--teacher", "backbone",
                "-o", str(out)]) == 1
    assert "no backbone is recorded" in capsys.readouterr().err


@pytest.mark.timeout(600)
@pytest.mark.parametrize("rho, steps, expect", [(0.95, 200, "temporal"), (0.0, 3000, "factorized")])
def test_train_on_a_raw_store_keeps_the_temporal_codec_only_where_it_wins(tmp_path, capsys, rho, steps, expect):
    """`featcomp train STORE` (issue 18): on videos whose features move slowly (AR 0.95) the temporal codec
    fitted to the head's integers codes the held-out videos in fewer bits and is kept; on frames with no
    temporal correlation (and a converged factorized density: after 200 steps the temporal prior's marginal
    alone beats it) it saves nothing and the factorized codec stays. Same integers either way."""
    import json

    import torch

    from featcomp.cli import main as cli
    from featcomp.model import load_model
    from featcomp.store import StoreWriter
    from tests.test_entropy_kinds_model import ar_sequences

    seqs = ar_sequences(np.random.default_rng(1), 8, 40, rho=rho)
    store = tmp_path / "raw.zarr"
    with StoreWriter(store, raw=True, model_card={}) as w:
        for i, s in enumerate(seqs):
            w.write(f"v{i}", s, np.arange(len(s)) / 5.0)
    out = tmp_path / "m.safetensors"
    assert cli(["train", str(store), "--objective", "reconstruct", "--lam", "0.01", "--latent", "6", "--steps", str(steps),
                "--batch-size", "64", "--temporal-steps", "200", "--no-progress", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    m = load_model(out)
    rec = m.training["options"]["temporal"]
    bits = rec["val_bits_per_frame"]
    assert summary["codec"] == rec["chosen"] == expect == m.head.kind
    assert rec["val_videos"] == ["v6", "v7"] and rec["train_videos"] == 6
    if expect == "temporal":
        assert bits["temporal"] < 0.9 * bits["factorized"]
    else:  # no temporal structure: the temporal codec saves nothing worth its slower decoding
        assert bits["temporal"] >= 0.98 * bits["factorized"]
    # --temporal off keeps the factorized codec, with the very same integers
    off = tmp_path / "off.safetensors"
    assert cli(["train", str(store), "--objective", "reconstruct", "--lam", "0.01", "--latent", "6", "--steps", str(steps),
                "--batch-size", "64", "--temporal", "off", "--no-progress", "-o", str(off)]) == 0
    f = load_model(off)
    assert f.head.kind == "factorized" and "temporal" not in f.training["options"]
    np.testing.assert_array_equal(f.head.encode(torch.as_tensor(seqs[7])), m.head.encode(torch.as_tensor(seqs[7])))

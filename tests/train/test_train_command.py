"""`featcomp train` over a store written with --raw (float16 backbone features + per-video labels)."""

from __future__ import annotations

import json

import numpy as np

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

"""`featcomp refit-temporal`: a factorized model file + sequences in time order -> a temporal model file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import featcomp
from featcomp.cli import main as cli
from featcomp.model import load_model, save_model
from featcomp.store import StoreWriter
from tests.test_entropy_kinds_model import C, ar_sequences


@pytest.fixture(scope="module")
def factorized(tmp_path_factory):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    seqs = ar_sequences(rng, 10, 30)
    head = featcomp.fit_head(np.concatenate(seqs[:4]), objective="reconstruct", lam=1e-2, latent_channels=C,
                             epochs=4, batch_size=32, lr=3e-3, progress=False)
    path = save_model(tmp_path_factory.mktemp("m") / "f.safetensors", head, sampling={"mode": "fps", "fps": 5.0},
                      metadata={"note": "kept"})
    return path, seqs


def test_refit_from_a_raw_store_writes_a_temporal_model_with_the_same_integers(factorized, tmp_path, capsys):
    path, seqs = factorized
    store = tmp_path / "raw.zarr"
    with StoreWriter(store, raw=True, model_card={}) as w:
        for i, s in enumerate(seqs):
            w.write(f"v{i:02d}", s, np.arange(len(s)) / 5.0)
    out = tmp_path / "t.safetensors"
    rc = cli(["refit-temporal", str(path), str(store), "-o", str(out), "--val", "0.2", "--steps", "200",
              "--eval-every", "50"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train_sequences"] == 8 and summary["val_sequences"] == 2 and summary["best_step"] in (50, 100, 150, 200)
    # AR(0.9) features: the held-out videos cost far fewer bits under the temporal codec
    assert summary["val_ratio"] > 1.2
    assert summary["val_bits_per_frame_temporal"] < summary["val_bits_per_frame_factorized"]
    f, t = load_model(path), load_model(out)
    assert t.head.kind == "temporal" and t.head.codec.version == 3 and f.head.kind == "factorized"
    assert t.metadata == {"note": "kept"} and t.sampling == f.sampling
    assert t.training["refit_temporal"]["val"] == ["v08", "v09"]
    k = f.head.encode(torch.as_tensor(seqs[9]))
    np.testing.assert_array_equal(t.head.encode(torch.as_tensor(seqs[9])), k)  # same integers
    np.testing.assert_array_equal(t.head.decode(k), f.head.decode(k))  # same reconstruction
    np.testing.assert_array_equal(t.head.codec.decompress_symbols(t.head.codec.compress_symbols(k)), k)


def test_refit_from_an_npz_without_validation(factorized, tmp_path, capsys):
    path, seqs = factorized
    np.savez(tmp_path / "s.npz", **{f"s{i}": s for i, s in enumerate(seqs[:5])})
    out = tmp_path / "t.safetensors"
    assert cli(["refit-temporal", str(path), str(tmp_path / "s.npz"), "-o", str(out), "--val", "0",
                "--steps", "50"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == {"output": str(out), "train_sequences": 5, "val_sequences": 0}
    assert load_model(out).head.kind == "temporal"


def test_refit_refusals_name_the_problem(factorized, tmp_path, capsys):
    path, seqs = factorized
    np.savez(tmp_path / "s.npz", a=seqs[0], b=seqs[1])
    t = tmp_path / "t.safetensors"
    assert cli(["refit-temporal", str(path), str(tmp_path / "s.npz"), "-o", str(t), "--steps", "20"]) == 0
    capsys.readouterr()
    # a temporal model cannot be refitted again; a coded store is not backbone features; short sequences
    assert cli(["refit-temporal", str(t), str(tmp_path / "s.npz"), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "factorized" in capsys.readouterr().err
    coded = tmp_path / "coded.zarr"
    m = load_model(path)
    with StoreWriter(coded, m) as w:
        w.write("v", m.head.encode(torch.as_tensor(seqs[0])), np.arange(len(seqs[0])) / 5.0)
    assert cli(["refit-temporal", str(path), str(coded), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "--raw" in capsys.readouterr().err
    np.savez(tmp_path / "short.npz", a=seqs[0][:3], b=seqs[1][:3])
    assert cli(["refit-temporal", str(path), str(tmp_path / "short.npz"), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "frames" in capsys.readouterr().err
    np.savez(tmp_path / "one.npz", a=seqs[0], b=seqs[1][:1])  # the held-out sequence has one frame
    assert cli(["refit-temporal", str(path), str(tmp_path / "one.npz"), "-o", str(tmp_path / "x.safetensors"),
                "--val", "0.5"]) == 1
    assert "2 or more frames" in capsys.readouterr().err
    assert cli(["refit-temporal", str(path), str(tmp_path / "nope.txt"), "-o", str(tmp_path / "x.safetensors")]) == 1
    assert "nope.txt" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()

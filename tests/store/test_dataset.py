"""FeatureDataset / collate_features, including DataLoader(num_workers=2)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from featcomp.data import FeatureDataset, collate_features
from featcomp.store import StoreWriter, open_store

from .conftest import laplace_latents


@pytest.fixture()
def store(tmp_path, codec, rng):
    vids = {}
    with StoreWriter(tmp_path / "s", codec, chunk_frames=8) as w:
        for i, t in enumerate([5, 23, 40, 17]):
            k = laplace_latents(rng, t)
            w.write(f"v{i}", k, np.arange(t) / 5)
            vids[f"v{i}"] = k
    return tmp_path / "s", vids


def test_per_video_with_csv_labels(tmp_path, store, codec):
    path, vids = store
    csv = tmp_path / "labels.csv"
    csv.write_text("video_id,label\nv0,cat\nv1,dog\nv2,cat\n")  # v3 unlabelled
    ds = FeatureDataset(path, csv)
    assert len(ds) == 3 and ds.missing_labels == 1 and ds.classes == ["cat", "dog"]
    item = ds[1]
    assert item["video_id"] == "v1" and int(item["label"]) == 1
    np.testing.assert_array_equal(item["features"].numpy(), codec.dequantize(vids["v1"]))
    batch = collate_features([ds[i] for i in range(3)])
    assert batch["features"].shape == (3, 40, 16)
    assert batch["lengths"].tolist() == [5, 23, 40]
    assert batch["mask"].sum(1).tolist() == [5, 23, 40]
    assert torch.all(batch["features"][0, 5:] == 0)
    assert batch["labels"].tolist() == [0, 1, 0]


def test_windows(store):
    path, vids = store
    ds = FeatureDataset(path, {"v0": 0, "v1": 1, "v2": 2, "v3": 3}, window=10, stride=5, latents=True)
    # v0 (5 frames): 1 short item; v1 (23): starts 0,5,10; v2 (40): 0..30 step 5 -> 7; v3 (17): 0,5
    assert len(ds) == 1 + 3 + 7 + 2
    for i in range(len(ds)):
        it = ds[i]
        k = vids[it["video_id"]]
        assert np.array_equal(it["latents"].numpy(), k[it["start"] : it["start"] + it["length"]])


@pytest.mark.timeout(120)
def test_dataloader_two_workers(store):
    path, vids = store
    ds = FeatureDataset(open_store(path), {v: i for i, v in enumerate(vids)}, window=8, stride=4)
    pickle.dumps(ds)  # nothing unpicklable is held
    dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_features, shuffle=True,
                                     generator=torch.Generator().manual_seed(0))
    seen = []
    for b in dl:
        for j, vid in enumerate(b["video_ids"]):
            s, n = int(b["starts"][j]), int(b["lengths"][j])
            k = vids[vid]
            expect = torch.from_numpy(open_store(path).dequantize(k[s : s + n]))
            assert torch.equal(b["features"][j, :n], expect)
            seen.append((vid, s))
    assert len(seen) == len(ds) and len(set(seen)) == len(ds)

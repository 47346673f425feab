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


def test_items_carry_timestamps_and_windows_cut_by_seconds(tmp_path, codec, rng):
    # v0: 5 fps regular; v1: irregular times with a gap between 2.0 s and 5.0 s
    t_irregular = np.concatenate([np.arange(0, 2.0, 0.25), np.arange(5.0, 6.0, 0.5)])
    vids = {"v0": (laplace_latents(rng, 23), np.arange(23) / 5), "v1": (laplace_latents(rng, len(t_irregular)), t_irregular)}
    with StoreWriter(tmp_path / "s", codec, chunk_frames=8) as w:
        for v, (k, t) in vids.items():
            w.write(v, k, t)
    ds = FeatureDataset(tmp_path / "s", window_s=1.0, latents=True)
    seen = {v: [] for v in vids}
    for i in range(len(ds)):
        it = ds[i]
        k, t = vids[it["video_id"]]
        got_t = it["timestamps"].numpy()
        assert it["timestamps"].dtype == torch.float64 and got_t.shape == (it["length"],)
        np.testing.assert_array_equal(got_t, t[it["start"] : it["start"] + it["length"]])
        np.testing.assert_array_equal(it["latents"].numpy(), k[it["start"] : it["start"] + it["length"]])
        assert got_t[-1] - got_t[0] < 1.0  # every frame of the window lies within one second
        seen[it["video_id"]].append((it["start"], it["length"]))
    # v0: 23 frames at 5 fps = 4.4 s -> windows [0,1), [1,2), ..., [4,5): 5, 5, 5, 5, 3 frames
    assert seen["v0"] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
    # v1: [0,1) 4 frames, [1,2) 4 frames, [2,3) [3,4) [4,5) empty (skipped), [5,6) 2 frames
    assert seen["v1"] == [(0, 4), (4, 4), (8, 2)]
    # overlapping windows: 2 s every 1 s
    ds2 = FeatureDataset(tmp_path / "s", window_s=2.0, stride_s=1.0, video_ids=["v0"])
    assert [(ds2[i]["start"], ds2[i]["length"]) for i in range(len(ds2))] == [(0, 10), (5, 10), (10, 10), (15, 8), (20, 3)]
    batch = collate_features([ds2[0], ds2[4]])
    assert batch["timestamps"].shape == (2, 10)
    np.testing.assert_array_equal(batch["timestamps"][1, :3].numpy(), np.arange(20, 23) / 5)
    assert torch.isnan(batch["timestamps"][1, 3:]).all()
    # a time window of one video through the reader
    v = open_store(tmp_path / "s")["v1"].between(1.0, 5.5)
    np.testing.assert_array_equal(v.timestamps, t_irregular[(t_irregular >= 1.0) & (t_irregular < 5.5)])


def test_seconds_window_mistakes_are_store_errors(store):
    from featcomp.errors import StoreError

    path, _ = store
    with pytest.raises(StoreError, match="not both"):
        FeatureDataset(path, window=4, window_s=1.0)
    with pytest.raises(StoreError, match="window_s must be > 0"):
        FeatureDataset(path, window_s=0)
    with pytest.raises(StoreError, match="stride_s needs window_s"):
        FeatureDataset(path, stride_s=1.0)
    with pytest.raises(StoreError, match="not valid"):
        open_store(path)["v1"].between(2.0, 1.0)

"""Stores with per-frame rate levels (format version 3): levels round-trip, every frame dequantizes at
its own level exactly as the model's head does, windows and the Dataset agree, stores without levels
are unchanged, and bad levels are refused with errors that name the store and the video."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from featcomp.errors import StoreError
from featcomp.head import CompressibleHead
from featcomp.model import Model
from featcomp.store import StoreWriter, compact_store, open_store, verify_store
from featcomp.store.dataset import FeatureDataset, collate_features
from featcomp.store.format import FACTORIZED_FORMAT_VERSION, LEVELS_FORMAT_VERSION

from .conftest import FakeModel, laplace_latents

CIN, C, L = 12, 6, 4


def _model(seed: int = 0, rate_lams=(0.001, 0.004, 0.016, 0.064)) -> Model:
    """A variable-rate model whose per-level steps differ by channel (random gains)."""
    torch.manual_seed(seed)
    head = CompressibleHead(in_channels=CIN, latent_channels=C, rate_lams=rate_lams)
    with torch.no_grad():
        head.log_gains.add_(0.3 * torch.randn_like(head.log_gains))
        head.log_scale.add_(0.2 * torch.randn_like(head.log_scale))
    return Model(head=head.freeze(), backbone=None, sampling=None, digest="ab" * 32)


@pytest.fixture(scope="module")
def model() -> Model:
    return _model()


def _videos(rng, lengths=(21, 3, 40, 9)):
    out = {}
    for i, t in enumerate(lengths):
        k = laplace_latents(rng, t, C)
        lv = rng.integers(0, L, t).astype(np.uint8)
        out[f"v{i}"] = (k, lv)
    return out


def test_levels_round_trip_and_each_frame_dequantizes_at_its_level(tmp_path, model, rng):
    path = tmp_path / "s"
    vids = _videos(rng)
    w = StoreWriter(path, model, levels=True, chunk_frames=8, shard_chunks=2, writer_id="w")
    for j, (vid, (k, lv)) in enumerate(vids.items()):
        ts = np.arange(len(k)) / 5.0 if j != 2 else np.cumsum(rng.uniform(0.1, 0.3, len(k)))  # times/ too
        rec = w.write(vid, k, ts, levels=lv.astype(np.int64) if j == 1 else lv)  # any integer dtype
        assert rec.levels
    live = open_store(path)  # readable from the commit log while the writer is open
    np.testing.assert_array_equal(live["v2"].levels, vids["v2"][1])
    w.close()

    st = open_store(path)
    assert st.header["format_version"] == LEVELS_FORMAT_VERSION == 3
    assert st.rate_levels == L and st.info()["rate_levels"] == L
    want_scale = np.stack([model.head.scale_at(lv).numpy() for lv in range(L)])
    np.testing.assert_array_equal(st.level_scale, want_scale)
    assert (path / "levels" / "zarr.json").exists() and (path / "levels" / "w" / "zarr.json").exists()
    for vid, (k, lv) in vids.items():
        v = st[vid]
        np.testing.assert_array_equal(v.latents(), k)  # integers unchanged
        assert v.levels.dtype == np.uint8
        np.testing.assert_array_equal(v.levels, lv)
        want = model.head.decode(k, levels=lv)
        np.testing.assert_array_equal(v.features(), want)  # bit for bit, no model file needed
        for a, b in ((0, 1), (5, 17), (len(k) - 2, len(k))):
            win = v.window(a, b)
            np.testing.assert_array_equal(win.levels, lv[a:b])
            np.testing.assert_array_equal(win.features(), want[a:b])
    # the levels matter: one step for every frame would give other floats
    k, lv = vids["v2"]
    assert not np.array_equal(st.dequantize(k), model.head.decode(k, levels=lv))
    assert verify_store(path).ok

    # a second writer appends; compaction folds both index files; levels survive
    with StoreWriter(path, model, levels=True, chunk_frames=8, writer_id="w2") as w2:
        k2, lv2 = laplace_latents(rng, 11, C), np.full(11, L - 1, np.uint8)
        w2.write("late", k2, np.arange(11) / 5.0, levels=lv2)
    assert compact_store(path) == 2
    (merged,) = (path / "index").iterdir()
    # it holds the levels_crc column and, as v2's timestamps are stored in times/, the times_crc column
    # (version 4 in the old layout; written as version 5, the names block, since issue 14)
    assert merged.read_bytes()[6] == 5
    assert b'"levels_crc"' in merged.read_bytes() and b'"times_crc"' in merged.read_bytes()
    st = open_store(path)
    np.testing.assert_array_equal(st["late"].features(), model.head.decode(k2, levels=lv2))
    np.testing.assert_array_equal(st["v0"].levels, vids["v0"][1])
    assert verify_store(path).ok


def test_dataset_windows_dequantize_each_frame_at_its_level(tmp_path, model, rng):
    path = tmp_path / "s"
    vids = _videos(rng)
    with StoreWriter(path, model, levels=True, chunk_frames=8) as w:
        for vid, (k, lv) in vids.items():
            w.write(vid, k, np.arange(len(k)) / 5.0, levels=lv)
    ds = FeatureDataset(path, window=8, stride=5)
    assert len(ds) > len(vids)
    for i in range(len(ds)):
        item = ds[i]
        k, lv = vids[item["video_id"]]
        s, n = item["start"], item["length"]
        np.testing.assert_array_equal(item["features"].numpy(), model.head.decode(k[s:s + n], levels=lv[s:s + n]))
    lat = FeatureDataset(path, window=8, stride=5, latents=True)
    batch = collate_features([lat[i] for i in range(len(lat))])
    for b, vid in enumerate(batch["video_ids"]):
        k, lv = vids[vid]
        s, n = int(batch["starts"][b]), int(batch["lengths"][b])
        np.testing.assert_array_equal(batch["latents"][b, :n].numpy(), k[s:s + n])
        np.testing.assert_array_equal(batch["levels"][b, :n].numpy(), lv[s:s + n])
        assert not batch["levels"][b, n:].any()


def test_stores_without_levels_are_written_as_before(tmp_path, model, rng):
    path = tmp_path / "s"
    k = laplace_latents(rng, 20, C)
    with StoreWriter(path, model, chunk_frames=8, writer_id="w") as w:  # variable-rate model, one rate for all
        w.write("a", k, np.arange(20) / 5.0)
        rec = json.loads((path / "index" / "w.log").read_text())
        # the record is as before, plus its line checksum (which every reader of a record ignores or checks)
        assert sorted(rec) == ["ck", "crc", "id", "length", "start", "ts", "written"]
    st = open_store(path)
    assert st.header["format_version"] == FACTORIZED_FORMAT_VERSION and "rate_levels" not in st.header
    assert "level_scale" not in st.header["dequantization"] and st.rate_levels == 0 and st.level_scale is None
    assert not (path / "levels").exists()
    assert st["a"].levels is None
    np.testing.assert_array_equal(st["a"].features(), model.head.decode(k))
    (idx,) = (path / "index").iterdir()
    data = idx.read_bytes()
    assert data[6] == 5 and b"levels_crc" not in data  # index file version 5 (names block), no levels column
    with pytest.raises(StoreError, match="rate levels"):
        StoreWriter(path, model, levels=True)  # a store is created with levels or without
    with StoreWriter(path, model) as w, pytest.raises(StoreError, match="no per-frame rate levels"):
        w.write("b", k, np.arange(20) / 5.0, levels=np.zeros(20, np.uint8))
    assert "b" not in open_store(path)


def test_bad_levels_are_store_errors_naming_store_and_video(tmp_path, model, codec, rng):
    path = tmp_path / "s"
    k = laplace_latents(rng, 10, C)
    ts = np.arange(10) / 5.0
    with StoreWriter(path, model, levels=True) as w:
        bad = {
            "shape": np.zeros(9, np.uint8),
            "2-d": np.zeros((10, 1), np.uint8),
            "float": np.zeros(10, np.float32),
            "bool": np.zeros(10, bool),
            "high": np.full(10, L),
            "negative": np.full(10, -1),
        }
        for vid, lv in bad.items():
            with pytest.raises(StoreError) as e:
                w.write(vid, k, ts, levels=lv)
            assert str(path) in str(e.value) and repr(vid) in str(e.value)
        with pytest.raises(StoreError, match="give levels="):
            w.write("none", k, ts)
        w.write("ok", k, ts, levels=np.arange(10) % L)
    st = open_store(path)
    assert list(st) == ["ok"]  # nothing of the refused videos is visible
    # writers must agree with the store
    with pytest.raises(StoreError, match="levels=True"):
        StoreWriter(path, model)
    with pytest.raises(StoreError, match="steps differ"):
        StoreWriter(path, _model(seed=0, rate_lams=(0.001, 0.004, 0.016, 0.03)), levels=True)
    # raw stores and fixed-rate models have no levels
    with pytest.raises(StoreError, match="raw"):
        StoreWriter(tmp_path / "raw", raw=True, levels=True)
    with pytest.raises(StoreError, match="variable-rate"):
        StoreWriter(tmp_path / "fixed", FakeModel(codec, np.ones(codec.channels, np.float32)), levels=True)
    fixed = CompressibleHead(in_channels=CIN, latent_channels=C).freeze()
    with pytest.raises(StoreError, match="variable-rate"):
        StoreWriter(tmp_path / "fixed2", Model(head=fixed, backbone=None, sampling=None, digest="0" * 64), levels=True)
    with StoreWriter(tmp_path / "raw2", raw=True) as w, pytest.raises(StoreError, match="raw"):
        w.write("a", rng.normal(size=(4, 3)), np.arange(4.0), levels=np.zeros(4, np.uint8))
    # a card without a model: dequantization.level_scale must be (L, C)
    card = {"dequantization": {"level_scale": [[1.0] * (codec.channels - 1)] * 3}}
    with pytest.raises(StoreError, match="level_scale"):
        StoreWriter(tmp_path / "card", codec, model_card=card, levels=True)
    assert not (tmp_path / "card").exists() and not (tmp_path / "fixed").exists()


def test_corrupt_or_missing_levels_name_the_video(tmp_path, model, rng):
    path = tmp_path / "s"
    vids = _videos(rng)
    with StoreWriter(path, model, levels=True, writer_id="w") as w:
        for vid, (k, lv) in vids.items():
            w.write(vid, k, np.arange(len(k)) / 5.0, levels=lv)
    arr = zarr.open_array(str(path), path="levels/w", mode="r+")
    arr[22] = (int(arr[22]) + 1) % L  # frame 1 of v1 (v0 has 21 frames)
    st = open_store(path)
    with pytest.raises(StoreError, match=r"'v1'.*CRC"):
        st["v1"].features()
    np.testing.assert_array_equal(st["v2"].levels, vids["v2"][1])
    rep = verify_store(path)
    assert not rep.ok and any("'v1'" in p for p in rep.problems)


def test_a_video_whose_record_is_not_committed_stays_invisible(tmp_path, model, rng, monkeypatch):
    """Crash between the levels and the commit record: the video does not exist, the others are intact."""
    from featcomp.store import _fs

    path = tmp_path / "s"
    vids = _videos(rng)
    w = StoreWriter(path, model, levels=True, writer_id="w")
    names = list(vids)
    for vid in names[:2]:
        w.write(vid, vids[vid][0], np.arange(len(vids[vid][0])) / 5.0, levels=vids[vid][1])

    def crash(self, record):
        raise OSError("disk gone")

    monkeypatch.setattr(_fs.AppendLog, "append", crash)
    with pytest.raises(OSError):
        w.write(names[2], vids[names[2]][0], np.arange(len(vids[names[2]][0])) / 5.0, levels=vids[names[2]][1])
    monkeypatch.undo()
    st = open_store(path)  # as a reader sees the store of a writer killed here
    assert sorted(st) == sorted(names[:2])
    for vid in names[:2]:
        np.testing.assert_array_equal(st[vid].features(), model.head.decode(vids[vid][0], levels=vids[vid][1]))
    assert verify_store(path).ok


def test_older_readers_refuse_level_stores(tmp_path, model, rng, monkeypatch):
    import featcomp.store.index as index_mod

    path = tmp_path / "s"
    with StoreWriter(path, model, levels=True) as w:
        w.write("a", laplace_latents(rng, 4, C), np.arange(4.0), levels=np.zeros(4, np.uint8))
    monkeypatch.setattr(index_mod, "FORMAT_VERSION", 2)  # what a reader of store versions 1-2 checks
    with pytest.raises(StoreError, match="upgrade featcomp"):
        open_store(path)


def test_level_stores_read_without_torch_and_info_shows_the_levels(capsys):
    """Reading a version-3 store (the committed golden one) imports no torch; `featcomp info` names the levels."""
    import subprocess
    import sys
    from pathlib import Path

    from featcomp.cli import main as cli_main

    golden = Path(__file__).resolve().parents[1] / "fixtures" / "store" / "golden_levels"
    code = (
        "import sys, featcomp\n"
        f"st = featcomp.open_store({str(golden)!r})\n"
        "v = st['video-1']; assert v.levels is not None; v.features(); v.window(3, 9).features(); st.info()\n"
        "bad = [m for m in ('torch', 'torchvision', 'decord', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert cli_main(["info", str(golden)]) == 0
    out = capsys.readouterr().out
    assert "featcomp.store v3" in out and "rate levels      3" in out


def test_steps_come_from_the_model_card_only(tmp_path, model, rng):
    """Model.model_card() carries every level's step; the writer takes them from the card alone (never the
    head) and records the card without the table (it lives in the header), as stores were written before."""
    card = model.model_card()
    want = np.stack([model.head.scale_at(lv).numpy() for lv in range(L)])
    np.testing.assert_array_equal(np.asarray(card["dequantization"]["level_scale"], np.float32), want)

    class NoHead:  # a model whose head cannot be asked anything: only .codec and .model_card()
        codec = model.codec

        @property
        def head(self):
            raise AssertionError("the writer asked the head")

        def model_card(self):
            return card

    k, lv = laplace_latents(rng, 9, C), (np.arange(9) % L).astype(np.uint8)
    with StoreWriter(tmp_path / "s", NoHead(), levels=True, writer_id="w") as w:
        w.write("v", k, np.arange(9) / 5.0, levels=lv)
    st = open_store(tmp_path / "s")
    np.testing.assert_array_equal(st.level_scale, want)
    recorded = st.header["model_card"]
    assert "level_scale" not in recorded["dequantization"]
    assert recorded == json.loads(json.dumps({**card, "dequantization": {
        k_: v for k_, v in card["dequantization"].items() if k_ != "level_scale"}}))
    np.testing.assert_array_equal(st["v"].features(), model.head.decode(k, levels=lv))

    class CardWithoutSteps(NoHead):  # a variable-rate head, but a card without the table: refused
        def model_card(self):
            return {**card, "dequantization": {k_: v for k_, v in card["dequantization"].items()
                                               if k_ != "level_scale"}}

    with pytest.raises(StoreError, match="level_scale") as e:
        StoreWriter(tmp_path / "t", CardWithoutSteps(), levels=True)
    assert str(tmp_path / "t") in str(e.value) and not (tmp_path / "t").exists()
    # a fixed-rate model's card has no table
    fixed = Model(head=CompressibleHead(in_channels=CIN, latent_channels=C).freeze(), backbone=None, sampling=None,
                  digest="0" * 64)
    assert "level_scale" not in fixed.model_card()["dequantization"]

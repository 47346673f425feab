"""scripts/evals: the protocol shared by the evaluations (metrics, splits, representations, report).

Properties that hold for any data: kNN recall of identical features is 1 and of unrelated ones about
k / (n - 1); agreement of a teacher with itself is total with zero KL; bits are the stored bytes x 8; no
split ever puts a video (or a frame) in both training and test; the validation choice never looks at test
numbers; a report section replaces only itself.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from scripts.evals import metrics, report, representations, sources, splits

# ------------------------------------------------------------------------------------------------ metrics


def test_knn_recall_is_one_for_identical_and_order_preserving_features_and_chance_for_unrelated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    assert metrics.knn_recall(x, x) == 1.0
    assert metrics.knn_recall(x, 3.0 * x + 1.0) == 1.0  # distances scaled: same neighbours
    chance = 10 / 199
    r = metrics.knn_recall(x, rng.normal(size=x.shape))
    assert 0.3 * chance < r < 2.5 * chance, r
    r_shuffled = metrics.knn_recall(x, x[rng.permutation(len(x))])
    assert r_shuffled < 2.5 * chance, r_shuffled
    assert 0.0 < metrics.knn_recall(x, x + rng.normal(scale=0.3, size=x.shape)) < 1.0
    assert metrics.knn_recall(x[:5], x[:5], k=10) == 1.0  # k clipped to n - 1


def _teacher(c: int = 16, k: int = 12) -> torch.nn.Linear:
    lin = torch.nn.Linear(c, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, c, generator=torch.Generator().manual_seed(0)))
        lin.bias.zero_()
    return lin


def test_teacher_metrics_of_the_features_themselves_agree_fully_with_zero_kl():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 16)).astype(np.float32)
    t = _teacher()
    with torch.no_grad():
        ref = t(torch.from_numpy(x)).numpy()
    m = metrics.teacher_metrics(t, ref, x)
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and abs(m["kl"]) < 1e-5
    other = metrics.teacher_metrics(t, ref, rng.normal(size=x.shape))
    assert other["top1"] < 0.5 and other["top5"] >= other["top1"] and other["kl"] > 0.1
    assert metrics.top1_agreement(ref, ref) == 1.0
    assert metrics.top1_agreement(torch.from_numpy(ref), ref) == 1.0


def test_stored_bits_are_the_bytes_times_eight():
    assert metrics.stored_bits(b"abc", b"de") == 40
    assert metrics.stored_bits() == 0


def test_probe_accuracy_separates_separable_classes():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    x = (np.eye(3)[y] * 4 + rng.normal(scale=0.3, size=(300, 3))).astype(np.float32)
    assert metrics.probe_accuracy(x[:200], y[:200], x[200:], y[200:]) > 0.95
    assert metrics.probe_accuracy(x[:200], rng.permutation(y[:200]), x[200:], y[200:]) < 0.7


def test_bits_at_and_equal_quality_read_the_curves():
    a = [(100.0, 0.5), (200.0, 0.7), (400.0, 0.9)]
    assert metrics.bits_at(a, 0.7) == pytest.approx(200.0)
    assert metrics.bits_at(a, 0.6) == pytest.approx(np.sqrt(100 * 200))  # linear in log bits
    assert np.isnan(metrics.bits_at(a, 0.95))
    same = metrics.equal_quality(a, a, n=5)
    assert len(same) == 5 and all(ba == pytest.approx(bb) for _, ba, bb in same)
    half = metrics.equal_quality(a, [(b / 2, q) for b, q in a], n=3)
    assert all(bb == pytest.approx(ba / 2) for _, ba, bb in half)
    assert metrics.equal_quality(a, [(10.0, 0.1), (20.0, 0.2)]) == []


def test_summarize_video_names_the_worst_held_out_video():
    row = {"videos": {"a": {"test": {"bits": 10.0, "knn": 0.9, "top1": 0.97, "top5": 1.0, "kl": 0.1}},
                      "b": {"test": {"bits": 30.0, "knn": 0.95, "top1": 0.91, "top5": 0.99, "kl": 0.3}}}}
    s = metrics.summarize_video(row)
    assert s["worst"] == "b" and s["top1_min"] == 0.91 and s["bits_max"] == 30.0 and s["knn_min"] == 0.9
    assert s["bits_mean"] == 20.0 and s["n_videos"] == 2
    for v in row["videos"].values():
        for k in ("top1", "top5", "kl"):
            del v["test"][k]
    assert metrics.summarize_video(row)["worst"] == "a"  # no teacher: the lowest kNN recall
    assert metrics.summarize_video({}) == {}


# ------------------------------------------------------------------------------------------------ splits


def _ids(n: int, base: int) -> np.ndarray:
    """Features whose single value is a global frame id, so any overlap between splits is visible."""
    return (base + np.arange(n, dtype=np.float32))[:, None]


def test_leave_one_video_out_never_puts_the_test_video_in_training_or_validation():
    clips = ["a", "b", "c"]
    feats = {}
    for i, c in enumerate(clips):
        x = _ids(50 + 10 * i, 1000 * i)
        feats[c] = {"x": x, "cut": np.int64(40), "x_aug": x[:40] + 0.5, "fps": np.float64(25 + i),
                    "logits": np.repeat(x, 3, 1)}
    for test in clips:
        f = splits.leave_one_video_out(feats, clips, test, teacher=True)
        assert test not in f["train"] and sorted(f["train"] + [test]) == clips
        te = set(f["x_test"][:, 0].tolist())
        assert te == set(feats[test]["x"][:, 0].tolist()) and f["fps"] == float(feats[test]["fps"])
        assert not te & set(np.floor(f["x_train"][:, 0]).tolist())
        assert not te & set(f["x_val"][:, 0].tolist())
        assert not set(f["x_train"][:, 0].tolist()) & set(f["x_val"][:, 0].tolist())  # training part vs the rest
        assert len(f["x_val_parts"]) == 2 and len(f["logits_val"]) == len(f["x_val"])
        assert splits.leave_one_video_out(feats, clips, test, teacher=False)["logits_test"] is None


@pytest.mark.parametrize("mode", ["time", "phase", "video"])
@pytest.mark.parametrize("fps", [5.0, 1.0])
def test_clip_sequences_keep_test_frames_out_of_training_and_validation(mode, fps):
    clips = {"bikes": 25.0, "bigbuckbunny": 25.0, "carphone_pristine": 30000 / 1001}
    feats = {c: (_ids(n, 10_000 * i), np.repeat(_ids(n, 10_000 * i), 4, 1))
             for i, (c, n) in enumerate((("bikes", 250), ("bigbuckbunny", 300), ("carphone_pristine", 300)))}
    train, val, test = splits.clip_sequences(feats, clips, fps, mode)
    ids = {name: {float(v) for s in seqs for v in s[:, 0]} for name, seqs in
           (("train", train), ("val", val), ("test", [x for x, _ in test]))}
    assert ids["test"] and ids["train"]
    assert not ids["test"] & ids["train"] and not ids["test"] & ids["val"] and not ids["train"] & ids["val"]
    for x, lg in test:
        np.testing.assert_array_equal(lg[:, 0], x[:, 0])  # logits travel with their frames
    for s in train + [x for x, _ in test]:
        assert np.all(np.diff(s[:, 0]) > 0)  # time order
    if mode == "video":
        assert all(v < 10_000 for v in ids["test"]) and all(10_000 <= v < 20_000 for v in ids["train"])
    if mode == "time":  # test frames come after every training frame of their clip
        assert max(v for v in ids["train"] if v < 10_000) < min(v for v in ids["test"] if v < 10_000)


def test_phase_sequences_hold_every_frame_once():
    x = _ids(103, 0)
    seqs = splits.phase_sequences(x, 25.0, 5.0)
    assert len(seqs) == 5
    assert sorted(float(v) for s in seqs for v in s[:, 0]) == list(map(float, range(103)))
    assert len(splits.phase_sequences(x, 5.0, 5.0)) == 1


def test_pick_on_validation_takes_the_cheapest_meeting_the_rule_else_the_best():
    items = [{"bits": 10, "q": 0.90}, {"bits": 20, "q": 0.96}, {"bits": 30, "q": 0.99}]
    kw = {"bits": lambda r: r["bits"], "quality": lambda r: r["q"]}
    assert splits.pick_on_validation(items, lambda r: r["q"] >= 0.95, **kw) is items[1]
    assert splits.pick_on_validation(items, lambda r: r["q"] >= 0.999, **kw) is items[2]
    assert splits.pick_on_validation(items, lambda r: False, fallback=False, **kw) is None


def test_choose_density_lr_picks_the_lowest_validation_objective():
    class H:
        def __init__(self, loss, bits):
            self.history = [{"val_loss": loss, "val_bits": bits}]

    scores = {1e-3: H(1.0, 100.0), 1e-2: H(0.9, 50.0)}
    assert splits.choose_density_lr(lambda kind, lam, dlr: scores[dlr], "f", 0.01, [1e-3, 1e-2]) == 1e-2
    assert splits.choose_density_lr(lambda *a: 1 / 0, "f", 0.01, [3e-3]) == 3e-3  # nothing trained


# ------------------------------------------------------------------------------------------------ representations


@pytest.mark.parametrize("name,opts", [("float16_zstd", {}), ("int8_zstd", {}), ("pca8", {"dims": 8}),
                                       ("pca_ec", {"dims": 8, "step": 0.2})])
def test_baseline_bits_are_the_stored_bytes_and_decode_to_feature_space(name, opts):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 32)).astype(np.float32)
    rep = representations.BaselineRep(name, name, **opts).fit(x[:200])
    bits, dec = rep.code(x[200:])
    assert bits == 8 * len(rep.b.encode(x[200:]))
    assert dec.shape == (100, 32)
    err = float(((dec - x[200:]) ** 2).mean())
    assert err < (0.01 if name in ("float16_zstd", "int8_zstd") else 1.0)


def test_faiss_pq_stores_m_bytes_per_vector():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 32)).astype(np.float32)
    for opq in (False, True):
        rep = representations.FaissRep(8, opq).fit(x[:300])
        bits, dec = rep.code(x[300:])
        assert bits == 8 * 8 * 100 and dec.shape == (100, 32)
        assert float(((dec - x[300:]) ** 2).mean()) < float((x[300:] ** 2).mean())


def test_baselines_list_only_what_fits_the_dimension():
    reps = representations.baselines(48, [8, 64], [(8, 0.2), (64, 0.1)], [8, 7], [16])
    labels = [(type(r).__name__, getattr(r, "opts", {}).get("dims"), getattr(r, "m", None)) for r in reps]
    assert ("BaselineRep", 64, None) not in labels and ("FaissRep", None, 7) not in labels
    assert len(reps) == 2 + 1 + 1 + 1 + 1


# ------------------------------------------------------------------------------------------------ sources


def test_read_idx_round_trips_an_idx_file(tmp_path):
    a = np.random.default_rng(5).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    with gzip.open(tmp_path / "x-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in a.shape) + a.tobytes())
    lab = np.arange(7, dtype=np.uint8)
    with gzip.open(tmp_path / "x-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (7).to_bytes(4, "big") + lab.tobytes())
    np.testing.assert_array_equal(sources.read_idx(tmp_path / "x-images-idx3-ubyte.gz"), a)
    imgs, labels = sources.read_fmnist(tmp_path, "x")
    np.testing.assert_array_equal(imgs, a)
    assert labels.dtype == np.int64 and labels.tolist() == list(range(7))


def test_augment_is_seeded_and_keeps_the_frame_shape():
    f = np.random.default_rng(6).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    a = sources.augment(f, 2, np.random.default_rng(0))
    assert a.shape == (6, 20, 30, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, sources.augment(f, 2, np.random.default_rng(0)))
    assert not np.array_equal(a, sources.augment(f, 2, np.random.default_rng(1)))
    u = sources.augment(f, 2, np.random.default_rng(0), uint8_crop=True)
    assert u.shape == a.shape and np.abs(u.astype(int) - a.astype(int)).max() <= 2  # truncation before resize
    assert sources.augment(f, 0, np.random.default_rng(0)).shape == (0, 20, 30, 3)


# ------------------------------------------------------------------------------------------------ report


def test_write_section_replaces_only_its_own_section(tmp_path):
    p = tmp_path / "doc.md"
    p.write_text("# Doc\n\nkept text\n")
    report.write_section("a", "first", p, machine_line="M1", date="2026-01-01")
    report.write_section("b", "other", p, stamp=False)
    report.write_section("a", "second", p, machine_line="M2", date="2026-01-02")
    text = p.read_text()
    assert text.startswith("# Doc\n\nkept text\n")
    assert "second" in text and "first" not in text and text.count("<!-- begin:a -->") == 1
    assert "_Machine: M2. Date: 2026-01-02._" in text and "M1" not in text
    assert "<!-- begin:b -->\nother\n<!-- end:b -->" in text
    new = report.write_section("c", "x", tmp_path / "new.md", stamp=False, header="# H\n")
    assert new.read_text() == "# H\n\n<!-- begin:c -->\nx\n<!-- end:c -->\n"


def test_tables_render_every_row_and_cell():
    t = report.markdown_table(["a", "b"], [[1, "x"], [2, "y"]]).split("\n")
    assert t == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]
    d = report.dict_table([{"k": 1}, {"k": 2, "v": "z"}], [("k", "K"), ("v", "V")]).split("\n")
    assert d == ["| K | V |", "|---|---|", "| 1 |  |", "| 2 | z |"]
    assert "cores" in report.machine() and len(report.today()) == 10


def test_feature_caches_are_used_and_sliced_without_running_a_backbone(tmp_path):
    rng = np.random.default_rng(7)
    big = {"x_train": rng.normal(size=(20, 4)), "y_train": np.arange(20), "x_val": rng.normal(size=(6, 4)),
           "y_val": np.arange(6), "x_test": rng.normal(size=(9, 4)), "y_test": np.arange(9)}
    np.savez(tmp_path / "generality_fm_bb_32_20_6_9.npz", **big)

    def no_backbone():
        raise AssertionError("the cache should have been used")

    d = sources.fmnist_features(no_backbone, tmp_path, tmp_path, "bb", 32, 10, 3, 4, log=lambda m: None)
    np.testing.assert_array_equal(d["x_train"], big["x_train"][:10])
    np.testing.assert_array_equal(d["x_test"], big["x_test"][:4])
    assert len(d["y_val"]) == 3
    with pytest.raises(FileNotFoundError):  # a cache too small: the data is read (and missing here)
        sources.fmnist_features(no_backbone, tmp_path, tmp_path, "bb", 32, 30, 3, 4)
    x = rng.normal(size=(10, 4))
    np.savez(tmp_path / "generality_clip_bb_32_a_aug3.npz", x=x, fps=np.float64(25), cut=np.int64(8),
             x_aug=rng.normal(size=(24, 4)), logits=x, logits_aug=rng.normal(size=(24, 4)))
    c = sources.clip_features(no_backbone, tmp_path, tmp_path, "bb", 32, ["a"], 2, log=lambda m: None)["a"]
    assert c["x_aug"].shape == (16, 4) and c["logits_aug"].shape == (16, 4)  # the first 2 of 3 rounds
    np.testing.assert_array_equal(c["x"], x)

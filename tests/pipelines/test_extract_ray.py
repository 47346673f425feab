"""The extraction job end to end on a local Ray: results, failures, resume, and kill -9 of the driver
and of an encoder actor (the library's own output is the reference)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featcomp.pipelines.config import ExtractConfig
from featcomp.pipelines.extract import run_extract
from tests.pipelines.conftest import BAD, GOOD

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**inference) -> ExtractConfig:
    cfg = ExtractConfig(progress=False)
    return cfg.with_overrides(inference={"batch_size": 8, **inference}, decode={"timeout_s": 30.0})


def _check_store(store, expected=tuple(GOOD)):
    import featcomp

    s = featcomp.open_store(store)
    assert sorted(s) == sorted(expected)
    ids = list(s.index.ids)
    assert len(ids) == len(set(ids)), f"duplicate videos in the index: {ids}"
    report = featcomp.verify_store(store)
    assert report.ok, report.problems
    return s


@pytest.mark.timeout(240)
def test_extract_end_to_end_records_failures_and_rerun_skips(ray_local, clip_dir, tiny_model, tmp_path):
    import featcomp
    from featcomp.video import sample_frames

    store = tmp_path / "feat.zarr"
    summary = run_extract([str(clip_dir)], str(store), str(tiny_model), config=_cfg())
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (9, 6, 0, 3)

    s = _check_store(store)
    model = featcomp.load_model(tiny_model)
    extractor = featcomp.Extractor(model)
    sampling = model.sampling
    total_frames = 0
    for vid in GOOD:
        batches = list(sample_frames(clip_dir / vid, sampling))
        frames = np.concatenate([b.frames for b in batches])
        ts = np.concatenate([b.timestamps for b in batches])
        stored = s[vid]
        total_frames += len(frames)
        # the store holds exactly what the library computes for the same frames, in time order
        np.testing.assert_array_equal(stored.latents(), extractor.encode_frames(frames))
        np.testing.assert_allclose(stored.timestamps, ts)
        assert stored.metadata["path"] == str(clip_dir / vid)
    assert summary.frames == total_frames
    assert summary.payload_bits > 0 and summary.bytes_written > 0 and summary.float16_bytes == total_frames * 576 * 2

    failures = {f["id"]: f for f in s.failures()}
    assert set(failures) == set(BAD)
    for vid, f in failures.items():
        assert f["path"] == str(clip_dir / vid) and vid in f["error"] and "VideoError" in f["error"]
    assert {v for v, _, _ in summary.failures} == set(BAD)

    again = run_extract([str(clip_dir)], str(store), str(tiny_model), config=_cfg())
    assert (again.done, again.skipped, again.failed, again.frames) == (0, 6, 3, 0)
    _check_store(store)


@pytest.mark.timeout(120)
def test_raw_mode_writes_float16_backbone_features(ray_local, clip_dir, tiny_model, tmp_path):
    import featcomp
    from featcomp.video import sample_frames

    store = tmp_path / "raw.zarr"
    videos = [str(clip_dir / "a.mp4"), str(clip_dir / "sub" / "c.mp4")]
    cfg = _cfg().with_overrides(output={"raw": True})
    summary = run_extract(videos, str(store), str(tiny_model), config=cfg)
    assert (summary.done, summary.failed) == (2, 0)
    s = featcomp.open_store(store)
    assert s.mode == "raw" and sorted(s) == ["a.mp4", "c.mp4"]
    extractor = featcomp.Extractor(featcomp.load_model(tiny_model))
    frames = np.concatenate([b.frames for b in sample_frames(clip_dir / "a.mp4", extractor.model.sampling)])
    want = extractor.features(frames).numpy().astype(np.float16)
    np.testing.assert_array_equal(s["a.mp4"].features().astype(np.float16), want)
    assert featcomp.verify_store(store).ok


@pytest.mark.timeout(240)
def test_keep_top1_writes_per_frame_levels_that_decode_like_the_model(ray_local, clip_dir, rate_control_model,
                                                                      tmp_path):
    import torch

    import featcomp
    from featcomp.errors import StoreError
    from featcomp.ratecontrol import RateControl
    from featcomp.video import sample_frames

    store = tmp_path / "rc.zarr"
    videos = [str(clip_dir / "b.mp4"), str(clip_dir / "sub" / "deep" / "e.mp4")]
    target = 0.8
    cfg = _cfg(keep_top1=target).with_overrides(inference={"batch_size": 16})
    summary = run_extract(videos, str(store), str(rate_control_model), config=cfg)
    assert (summary.done, summary.failed) == (2, 0)

    s = featcomp.open_store(store)
    # levels: version 3; this 128-latent, 4-level header (~25 KB of JSON) gets the header sidecar: version 5
    assert s.header["format_version"] == 5 and "sidecar" in s.header and s.rate_levels == 4
    assert featcomp.verify_store(store).ok
    model = featcomp.load_model(rate_control_model)
    np.testing.assert_array_equal(s.level_scale, np.stack([model.head.scale_at(lv).numpy() for lv in range(4)]))
    extractor = featcomp.Extractor(model, rate_control=RateControl(target_agreement=target))
    sampling = model.sampling.replace(batch_size=16)  # the job's chunks: inference.batch_size frames
    all_levels = []
    for vid in ("b.mp4", "e.mp4"):
        v = s[vid]
        k, levels = v.latents(), v.levels
        assert levels.dtype == np.uint8 and levels.shape == (len(k),)
        # what the store decodes to, with no model file, is what the model's head decodes
        np.testing.assert_array_equal(v.features(), model.head.decode(k, levels=levels))
        # the job's levels and latents are the library's, chunk by chunk (the quota applies per chunk)
        batches = list(sample_frames(v.metadata["path"], sampling))
        want = [extractor.encode_frames_with_levels(b.frames) for b in batches]
        np.testing.assert_array_equal(k, np.concatenate([w[0] for w in want]))
        np.testing.assert_array_equal(levels, np.concatenate([w[1] for w in want]))
        assert v.metadata["keep_top1"] == target
        # the rule, seen from the decoded store: a frame at an intermediate level keeps the teacher's
        # top-1; a frame that does not sits at the finest level (no level keeps it) or at the coarsest
        # (given up), and each chunk gives up at most its quota minus the frames no level keeps
        feats = extractor.frame_features(np.concatenate([b.frames for b in batches]))
        with torch.no_grad():
            ref = extractor.backbone.classify(feats).argmax(1).numpy()
            kept = extractor.backbone.classify(model.head.synthesize(v.features())).argmax(1).numpy() == ref
        assert np.all(kept | (levels == 0) | (levels == 3))
        for a in range(0, len(k), 16):
            lk, kk = levels[a:a + 16], kept[a:a + 16]
            quota = int(np.floor((1 - target) * len(lk) + 1e-9))
            assert (~kk & (lk == 3)).sum() <= max(0, quota - int((~kk & (lk == 0)).sum()))
        all_levels.append(levels)
    assert len(np.unique(np.concatenate(all_levels))) >= 2  # the frames do not all sit at one level

    again = run_extract(videos, str(store), str(rate_control_model), config=cfg)  # resumes: nothing to do
    assert (again.done, again.skipped) == (0, 2)
    with pytest.raises(StoreError, match="keep_top1"):  # the store records levels: a run without them is refused
        run_extract(videos, str(store), str(rate_control_model), config=_cfg())


@pytest.mark.timeout(240)
def test_max_distortion_job_keeps_every_frame_within_its_budget(ray_local, clip_dir, rate_control_model, tmp_path):
    """The generic fidelity target through the Ray job: no teacher, levels per frame, the budget held."""
    import torch

    import featcomp
    from featcomp.video import sample_frames

    model = featcomp.load_model(rate_control_model)
    videos = [str(clip_dir / "b.mp4"), str(clip_dir / "sub" / "deep" / "e.mp4")]
    ex = featcomp.Extractor(model)
    sampling = model.sampling.replace(batch_size=16)
    feats = {Path(p).name: ex.frame_features(np.concatenate([b.frames for b in sample_frames(p, sampling)])).numpy()
             for p in videos}

    def rel_err(x, y):
        with torch.no_grad():
            return ((model.head.synthesize(y).numpy() - x) ** 2).sum(1) / (x ** 2).sum(1)

    finest = np.concatenate([rel_err(x, model.head.decode(model.head.encode(x, rate=0), levels=np.zeros(len(x), int)))
                             for x in feats.values()])
    budget = 1.05 * float(finest.max())
    store = tmp_path / "dist.zarr"
    cfg = _cfg().with_overrides(inference={"batch_size": 16, "max_distortion": budget})
    summary = run_extract(videos, str(store), str(rate_control_model), config=cfg)
    assert (summary.done, summary.failed) == (2, 0)
    s = featcomp.open_store(store)
    assert s.rate_levels == 4 and featcomp.verify_store(store).ok
    levels = []
    for vid, x in feats.items():
        v = s[vid]
        assert v.metadata["rate_control"] == {"criterion": "distortion", "budget": budget, "target_agreement": 1.0}
        assert (rel_err(x, v.features()) <= budget * (1 + 1e-5)).all()
        levels.append(v.levels)
    assert np.concatenate(levels).max() > 0  # coarser levels where the budget allows


@pytest.mark.timeout(240)
def test_rate_control_with_a_temporal_codec_through_the_job(ray_local, clip_dir, rate_control_model, tmp_path):
    """Per-frame levels and temporal chunks in one store (issue 18 item 6): the ladder's temporal codec is
    fitted under the job's rate control; the job's integers and levels are the library's, chunk by chunk."""
    import featcomp
    from featcomp.ratecontrol import RateControl
    from featcomp.train import fit_temporal_codec
    from featcomp.video import sample_frames

    model = featcomp.load_model(rate_control_model)
    videos = [str(clip_dir / "b.mp4"), str(clip_dir / "sub" / "deep" / "e.mp4")]
    sampling = model.sampling.replace(batch_size=16)
    ex = featcomp.Extractor(model)
    batches = {Path(p).name: list(sample_frames(p, sampling)) for p in videos}
    feats = [ex.frame_features(np.concatenate([b.frames for b in bs])).numpy() for bs in batches.values()]
    rc = {"criterion": "distortion", "budget": 0.05, "target_agreement": 1.0}
    head = fit_temporal_codec(model.head, feats, rate_control=rc, steps=100)  # (a plumbing test: fitted on them)
    path = featcomp.save_model(tmp_path / "ladder_temporal.safetensors", head, backbone=model.backbone,
                               sampling=model.sampling)
    store = tmp_path / "rct.zarr"
    cfg = _cfg().with_overrides(inference={"batch_size": 16, "max_distortion": 0.05})
    summary = run_extract(videos, str(store), str(path), config=cfg)
    assert (summary.done, summary.failed) == (2, 0)
    s = featcomp.open_store(store)
    assert s.rate_levels == 4 and s.codec.kind == "temporal" and featcomp.verify_store(store).ok
    lib = featcomp.Extractor(featcomp.load_model(path), rate_control=RateControl(**rc))
    for vid, bs in batches.items():
        v = s[vid]
        want = [lib.encode_frames_with_levels(b.frames) for b in bs]
        np.testing.assert_array_equal(v.latents(), np.concatenate([w[0] for w in want]))
        np.testing.assert_array_equal(v.levels, np.concatenate([w[1] for w in want]))
        np.testing.assert_array_equal(v.features(), head.decode(v.latents(), levels=v.levels))


def _spawn_job(clip_dir, store, model, address) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "featcomp.pipelines.extract", str(clip_dir), "--store", str(store), "--model", str(model),
           "--address", address, "--batch-size", "4", "--no-progress", "-v"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_writes(proc: subprocess.Popen, n: int, timeout: float = 120.0) -> list[str]:
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if sum("wrote " in ln for ln in lines) >= n:
            return lines
    raise AssertionError("the job did not write videos in time:\n" + "".join(lines))


@pytest.mark.timeout(300)
def test_kill_9_of_the_driver_mid_job_then_rerun_finishes_without_duplicates(ray_local, tiny_model, tmp_path):
    import featcomp
    from tests.pipelines.conftest import make_clip_dir

    clips = make_clip_dir(tmp_path / "videos", good={f"v{i:02d}.mp4": 60 for i in range(12)}, bad=("zero.mp4",))
    store = tmp_path / "feat.zarr"
    proc = _spawn_job(clips, store, tiny_model, ray_local)
    try:
        _wait_for_writes(proc, 2)
        assert proc.poll() is None, "the job finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    committed = featcomp.open_store(store)
    k = len(committed)
    assert 2 <= k < 12
    assert featcomp.verify_store(store).ok  # what a killed driver leaves is a valid store

    summary = run_extract([str(clips)], str(store), str(tiny_model), config=_cfg())
    assert summary.skipped == k and summary.done == 12 - k and summary.failed == 1
    s = featcomp.open_store(store)
    assert sorted(s) == [f"v{i:02d}.mp4" for i in range(12)]
    ids = list(s.index.ids)
    assert len(ids) == len(set(ids)) == 12
    assert all(len(s[v]) == 24 for v in s)  # 60 frames at 25 fps sampled at 10 fps: no partial videos
    assert featcomp.verify_store(store).ok


@pytest.mark.timeout(300)
def test_kill_9_of_an_encoder_actor_is_retried(ray_local, tiny_model, tmp_path):
    import psutil

    from tests.pipelines.conftest import make_clip_dir

    good = {f"v{i:02d}.mp4": 60 for i in range(12)}
    clips = make_clip_dir(tmp_path / "videos", good=good, bad=("corrupt.mp4",))
    store = tmp_path / "feat.zarr"
    proc = _spawn_job(clips, store, tiny_model, ray_local)
    killed = []
    try:
        before = _wait_for_writes(proc, 1)
        for p in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "EncodeChunks" in cmd and "MapWorker" in cmd:
                os.kill(p.info["pid"], signal.SIGKILL)
                killed.append(p.info["pid"])
        assert proc.poll() is None, "the job finished before the actor could be killed"
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert killed, "no encoder actor process found"
    written_before_kill = sum("wrote " in ln for ln in before)
    assert written_before_kill < 12
    assert proc.returncode == 3, out  # 3: finished, with the bad file recorded as a failure
    assert "12 done" in out and "1 failed" in out
    s = _check_store(store, good)
    assert all(len(s[v]) == 24 for v in s)
    assert [f["id"] for f in s.failures()] == ["corrupt.mp4"]


@pytest.mark.timeout(240)
def test_truncated_video_fails_by_default_and_is_kept_partial_when_allowed(ray_local, tiny_model, tmp_path):
    """Issue 14: the first 30% of a 17-frame AVI is no complete 4-frame video. Default: a failure row
    (TruncatedVideoError); decode.allow_partial: stored, marked partial, shown by info and verify."""
    import featcomp
    from featcomp.store.verify import describe
    from tests.clips import make_clip, make_truncated

    d = tmp_path / "videos"
    d.mkdir()
    make_clip(d / "ok.mp4", 20, fps=25, width=64, height=48)
    full = make_clip(tmp_path / "full.avi", 17, codec="mpeg4", gop=5, width=960, height=540)
    make_truncated(full, d / "cut.avi", keep=0.3)

    store = tmp_path / "strict.zarr"
    summary = run_extract([str(d)], str(store), str(tiny_model), config=_cfg())
    assert (summary.done, summary.failed) == (1, 1)
    s = featcomp.open_store(store)
    assert sorted(s) == ["ok.mp4"] and s.info()["partial"] == 0
    (f,) = s.failures()
    assert f["id"] == "cut.avi" and f["error"].startswith("TruncatedVideoError: ") and "of the 17 frames" in f["error"]
    report = featcomp.verify_store(store)
    assert report.ok and report.failures == 1 and "1 video(s) failed" in describe(report)

    store = tmp_path / "partial.zarr"
    cfg = _cfg().with_overrides(decode={"allow_partial": True})
    summary = run_extract([str(d)], str(store), str(tiny_model), config=cfg)
    assert (summary.done, summary.failed) == (2, 0)
    s = featcomp.open_store(store)
    assert sorted(s) == ["cut.avi", "ok.mp4"] and s.failures() == []
    reason = s["cut.avi"].metadata["partial"]
    assert "of the 17 frames the container declares" in reason and "partial" not in s["ok.mp4"].metadata
    assert s.info()["partial"] == 1 and s.partial_videos() == {"cut.avi": reason}
    report = featcomp.verify_store(store)
    assert report.ok and report.partial == {"cut.avi": reason}
    assert f"PARTIAL: video 'cut.avi'" in describe(report)


@pytest.mark.video
@pytest.mark.timeout(180)
def test_a_frames_folder_is_extracted_beside_a_clip(ray_local, tiny_model, tmp_path):
    from PIL import Image

    import featcomp
    from featcomp.video import sample_frames
    from tests.clips import barcode_frame, make_clip

    root = tmp_path / "inputs"
    root.mkdir()
    make_clip(root / "a.mp4", 30, fps=25, width=64, height=48)
    cam = root / "shots" / "cam1"
    cam.mkdir(parents=True)
    for i in range(40):  # natural order: frame_2 before frame_10
        Image.fromarray(barcode_frame(i, 64, 48)).save(cam / f"frame_{i}.png")
    bad = root / "shots" / "bad"
    bad.mkdir()
    Image.fromarray(barcode_frame(0, 64, 48)).save(bad / "0.png")
    Image.fromarray(barcode_frame(1, 32, 48)).save(bad / "1.png")

    store = tmp_path / "frames.zarr"
    cfg = _cfg().with_overrides(decode={"frames_fps": 20.0})
    summary = run_extract([str(root)], str(store), str(tiny_model), config=cfg)
    assert (summary.total, summary.done, summary.failed) == (3, 2, 1)

    s = _check_store(store, expected=("a.mp4", "shots/cam1"))
    model = featcomp.load_model(tiny_model)
    extractor = featcomp.Extractor(model)
    assert model.sampling.fps == 10.0  # 10 of the folder's 20 frames per second: every second frame
    batches = list(sample_frames(cam, model.sampling, frames_fps=20.0))
    frames = np.concatenate([b.frames for b in batches])
    from tests.clips import read_barcodes

    np.testing.assert_array_equal(read_barcodes(frames), np.arange(0, 40, 2))  # frames 0, 2, ..., 38 in order
    v = s["shots/cam1"]
    np.testing.assert_allclose(v.timestamps, np.arange(20) / 10.0)
    np.testing.assert_array_equal(v.latents(), extractor.encode_frames(frames))
    assert v.metadata["path"] == str(cam)
    clip = np.concatenate([b.frames for b in sample_frames(root / "a.mp4", model.sampling)])
    np.testing.assert_array_equal(s["a.mp4"].latents(), extractor.encode_frames(clip))

    failures = {f["id"]: f for f in s.failures()}
    assert set(failures) == {"shots/bad"}
    assert "VideoError" in failures["shots/bad"]["error"] and "1.png" in failures["shots/bad"]["error"]

"""Sampling: which frames and which timestamps, exactly, for every mode; batching bounds memory."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp import ConfigError
from featcomp.video import SamplingConfig, SamplingMode, open_video, plan_samples, sample_frames
from tests.clips import read_barcodes
from tests.video.conftest import VFR_PTS

pytestmark = [pytest.mark.video, pytest.mark.timeout(120)]


def _expected_at_fps(ts: np.ndarray, fps: float) -> list[int]:
    """The reference rule, written independently: the frame on screen at each k/fps."""
    out: list[int] = []
    k = 0
    while k / fps <= ts[-1] + 1e-9:
        t = k / fps
        i = max(j for j in range(len(ts)) if ts[j] <= t + 1e-9)
        if i not in out:
            out.append(i)
        k += 1
    return out


def _collect(batches):
    batches = list(batches)
    return batches, np.concatenate([b.indices for b in batches]), np.concatenate([b.timestamps for b in batches])


@pytest.mark.parametrize("fps", [1, 5, 7.5])
def test_fps_cfr(clips, fps):
    batches, idx, ts = _collect(sample_frames(clips["cfr"], SamplingConfig.at_fps(fps, batch_size=4)))
    expect = _expected_at_fps(np.arange(60) / 25, fps)
    assert idx.tolist() == expect
    np.testing.assert_allclose(ts, np.asarray(expect) / 25, atol=1e-6)
    for b in batches:
        assert len(b) <= 4
        assert read_barcodes(b.frames).tolist() == b.indices.tolist()


@pytest.mark.parametrize("fps", [1, 5])
def test_fps_vfr_uses_presentation_time(clips, fps):
    batches, idx, ts = _collect(sample_frames(clips["vfr"], SamplingConfig.at_fps(fps, batch_size=8)))
    expect = _expected_at_fps(VFR_PTS, fps)
    assert idx.tolist() == expect
    np.testing.assert_allclose(ts, VFR_PTS[expect], atol=1e-3)
    assert read_barcodes(np.concatenate([b.frames for b in batches])).tolist() == expect
    # index-based sampling (every round(avg_fps/fps)-th frame) would pick different frames
    avg = (len(VFR_PTS) - 1) / VFR_PTS[-1]
    naive = list(range(0, len(VFR_PTS), max(1, round(avg / fps))))
    assert naive != expect


def test_fps_above_source_rate_gives_each_frame_once(clips):
    _, idx, _ = _collect(sample_frames(clips["cfr"], SamplingConfig.at_fps(100)))
    assert idx.tolist() == list(range(60))


def test_uniform(clips):
    batches, idx, ts = _collect(sample_frames(clips["cfr"], SamplingConfig.uniform(6)))
    assert len(idx) == 6 and (np.diff(idx) > 0).all()
    # centres of 6 equal segments of [0, 59/25] -> nearest frames
    centres = (59 / 25) * (np.arange(6) + 0.5) / 6
    expect = [int(np.argmin(np.abs(np.arange(60) / 25 - c))) for c in centres]
    assert idx.tolist() == expect
    assert read_barcodes(batches[0].frames).tolist() == expect
    # more than the video has: every frame, once
    _, idx, _ = _collect(sample_frames(clips["short"], SamplingConfig.uniform(16)))
    assert idx.tolist() == [0, 1, 2, 3, 4]


def test_all_frames_in_bounded_batches(clips):
    batches, idx, ts = _collect(sample_frames(clips["cfr"], SamplingConfig.all_frames(batch_size=7)))
    assert [len(b) for b in batches] == [7] * 8 + [4]
    assert idx.tolist() == list(range(60))
    assert max(b.frames.shape[0] for b in batches) == 7


def test_windows(clips):
    cfg = SamplingConfig.windows(8, 4, batch_size=3)
    batches, idx, ts = _collect(sample_frames(clips["cfr"], cfg))
    starts = list(range(0, 60 - 8 + 1, 4))
    assert idx.tolist() == starts
    np.testing.assert_allclose(ts, np.asarray(starts) / 25, atol=1e-6)
    for b in batches:
        assert b.frames.shape[1:] == (8, 64, 96, 3) and len(b) <= 3
        assert (read_barcodes(b.frames) == b.window_indices).all()
        assert (b.window_indices == b.indices[:, None] + np.arange(8)).all()


def test_windows_at_fps_use_sampled_frames(clips):
    _, idx, _ = _collect(sample_frames(clips["vfr"], SamplingConfig.windows(3, 2, fps=5)))
    base = _expected_at_fps(VFR_PTS, 5)
    assert idx.tolist() == [base[s] for s in range(0, len(base) - 3 + 1, 2)]


def test_short_video_gives_one_padded_window(clips):
    batches, idx, ts = _collect(sample_frames(clips["short"], SamplingConfig.windows(8)))
    assert len(batches) == 1 and idx.tolist() == [0] and ts.tolist() == [0.0]
    assert batches[0].window_indices.tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]
    assert read_barcodes(batches[0].frames).tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]


def test_sample_from_open_decoder_keeps_it_open(clips):
    with open_video(clips["cfr"], backend="pyav", short_side=32) as dec:
        b = next(iter(sample_frames(dec, SamplingConfig.at_fps(2))))
        assert b.frames.shape[1:] == (32, 48, 3)
        assert read_barcodes(dec.get_frames([3])).tolist() == [3]


def test_plan_is_pure_and_handles_one_frame():
    plan = plan_samples(np.array([0.0]), SamplingConfig.at_fps(5))
    assert plan.indices.tolist() == [0]
    plan = plan_samples(np.array([0.0]), SamplingConfig.windows(4))
    assert plan.indices.tolist() == [[0, 0, 0, 0]]


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError):
        SamplingConfig(mode=SamplingMode.UNIFORM)
    with pytest.raises(ConfigError):
        SamplingConfig(mode="windows")
    with pytest.raises(ConfigError):
        SamplingConfig.all_frames(fps=3)
    with pytest.raises(ConfigError):
        SamplingConfig.at_fps(-1)
    with pytest.raises(ConfigError):
        SamplingConfig.at_fps(1, batch_size=0)
    with pytest.raises(ConfigError):
        SamplingConfig.at_fps(1, short_side=224, width=100)
    assert SamplingConfig().fps == 1.0
    for cfg in [SamplingConfig.windows(16, 8, fps=5, short_side=128), SamplingConfig.uniform(4), SamplingConfig.all_frames()]:
        assert SamplingConfig.from_json(cfg.to_json()) == cfg
        assert SamplingConfig.from_yaml(cfg.to_yaml()) == cfg

"""Synthetic clips for the video tests (made once per session with PyAV; see tests/clips.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.clips import make_clip, make_empty, make_not_video, make_truncated

# A variable-frame-rate schedule: bursts at 50 fps, holds of 0.1 s and 0.3 s (seconds per frame).
VFR_DURATIONS = np.random.default_rng(7).choice([0.02, 0.1, 0.3], size=39)
VFR_PTS = np.concatenate([[0.0], np.cumsum(VFR_DURATIONS)]).round(3)


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Paths of the synthetic clips: cfr (60 frames, 25 fps, GOP 12, B-frames), vfr (40 frames),
    mkv (no frame count in the header), truncated (faststart mp4 cut at 60%: header says 60),
    nomoov (mp4 cut before its index), text, empty, missing."""
    d = tmp_path_factory.mktemp("clips")
    cfr = make_clip(d / "cfr.mp4", 60, fps=25, width=96, height=64, gop=12)
    fast = make_clip(d / "fast.mp4", 60, fps=25, width=96, height=64, gop=12, faststart=True)
    return {
        "cfr": cfr,
        "vfr": make_clip(d / "vfr.mp4", len(VFR_PTS), pts_seconds=VFR_PTS.tolist(), width=96, height=64),
        "mkv": make_clip(d / "cfr.mkv", 30, fps=10, width=96, height=64, codec="mpeg4", gop=5),
        "short": make_clip(d / "short.mp4", 5, fps=25, width=96, height=64),
        "fast": fast,
        "truncated": make_truncated(fast, d / "truncated.mp4", keep=0.6),
        "nomoov": make_truncated(cfr, d / "nomoov.mp4", keep=0.6),
        "text": make_not_video(d / "notes.mp4"),
        "empty": make_empty(d / "empty.mp4"),
        "missing": d / "does_not_exist.mp4",
    }

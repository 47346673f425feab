"""Truncated videos (issue 14): a stream that ends before what its container declares is a
``TruncatedVideoError`` by default, or, with ``allow_partial``, its decodable part marked partial.

The clips are made here with PyAV and cut with :func:`tests.clips.make_truncated`; every decoded
frame's barcode is checked, so "the decodable part" means exactly frames ``0 .. n-1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featcomp import TruncatedVideoError, VideoError
from featcomp.video import SamplingConfig, available_decoders, build_index, open_video, sample_frames
from tests.clips import make_clip, make_truncated, read_barcodes

pytestmark = [pytest.mark.video, pytest.mark.timeout(180)]

BACKENDS = available_decoders()  # pyav, and decord / torchcodec where installed

# (name, suffix, make_clip arguments, fraction of bytes kept): the cut lands inside the frame data
CASES = [
    ("avi_mpeg4_30", ".avi", dict(num_frames=17, codec="mpeg4", gop=5, width=960, height=540), 0.3),
    ("avi_mpeg4_60", ".avi", dict(num_frames=60, codec="mpeg4", gop=12, width=160, height=120), 0.6),
    ("mp4_faststart_mid_mdat", ".mp4", dict(num_frames=60, gop=12, width=160, height=120, faststart=True), 0.6),
    ("mkv_h264", ".mkv", dict(num_frames=60, gop=12, width=160, height=120), 0.6),
    ("mkv_mpeg4_30", ".mkv", dict(num_frames=60, codec="mpeg4", gop=12, width=160, height=120), 0.3),
    ("mkv_mpeg4_95", ".mkv", dict(num_frames=60, codec="mpeg4", gop=12, width=160, height=120), 0.95),
    ("webm_vp8", ".webm", dict(num_frames=60, codec="libvpx", gop=12, width=160, height=120), 0.6),
]


def _make(path, num_frames, **kw):
    """``make_clip``; VP8 (webm) in a fresh interpreter: once decord is imported, its bundled libvpx
    displaces PyAV's and PyAV's VP8 *encoder* refuses to open (decoding is unaffected)."""
    if kw.get("codec") != "libvpx":
        return make_clip(path, num_frames, **kw)
    code = f"from tests.clips import make_clip; make_clip({str(path)!r}, {num_frames!r}, **{kw!r})"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])})
    return Path(path)


@pytest.fixture(scope="module")
def cut(tmp_path_factory):
    d = tmp_path_factory.mktemp("truncated")
    out = {}
    for name, suffix, kw, keep in CASES:
        n = kw.pop("num_frames")
        src = _make(d / f"{name}_full{suffix}", n, **kw)
        out[name] = (src, make_truncated(src, d / f"{name}{suffix}", keep=keep), n)
    return out


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_truncated_file_is_an_error_naming_file_counts_and_remedy(cut, name):
    _, path, n = cut[name]
    index = build_index(path)
    assert 0 < index.num_frames < n
    with pytest.raises(TruncatedVideoError) as info:
        open_video(path)
    e = info.value
    msg = str(e)
    assert isinstance(e, VideoError)
    assert str(path) in msg and "allow_partial" in msg and "truncated" in msg
    assert e.decoded == index.num_frames and e.path == str(path)
    assert e.declared > e.decoded
    if index.header_frames:  # an exact count in the header (mp4, avi): the message gives it
        assert e.declared == n and f"decoded {e.decoded} of the {n} frames" in msg
    # and so does sampling a path (the single-clip and pipeline route)
    with pytest.raises(TruncatedVideoError):
        list(sample_frames(path, SamplingConfig.all_frames()))


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_allow_partial_keeps_the_decodable_frames_and_says_why(cut, name, backend):
    _, path, n = cut[name]
    index = build_index(path)
    try:
        dec = open_video(path, backend=backend, allow_partial=True)
    except VideoError as e:
        # decord cannot open some cut files at all (no index), torchcodec fails on the last frames before
        # the damage of some: they must say so, never return fewer frames
        assert backend in ("decord", "torchcodec") and str(path) in str(e)
        return
    with dec:
        k = dec.num_frames
        assert k == index.num_frames and 0 < k < n
        assert dec.partial and "declares" in dec.partial
        assert read_barcodes(dec.get_frames(np.arange(k))).tolist() == list(range(k))
        assert read_barcodes(dec.get_frames([k - 1, 0])).tolist() == [k - 1, 0]


def test_sampling_a_partial_video_marks_every_batch(cut):
    _, path, _ = cut["avi_mpeg4_30"]
    batches = list(sample_frames(path, SamplingConfig.all_frames(batch_size=2), allow_partial=True))
    assert batches and all(b.partial and "of the 17 frames" in b.partial for b in batches)
    idx = np.concatenate([b.indices for b in batches])
    assert read_barcodes(np.concatenate([b.frames for b in batches])).tolist() == idx.tolist()


def test_the_issue_case_4_of_17_frames(cut):
    """The first 30% of a 17-frame AVI: 4 frames decode; that is not a complete 4-frame video."""
    _, path, _ = cut["avi_mpeg4_30"]
    with pytest.raises(TruncatedVideoError, match=r"decoded \d+ of the 17 frames the container declares"):
        open_video(path)


def test_mp4_cut_before_its_index_stays_unreadable(cut, tmp_path):
    """An mp4 whose moov is at the end, cut mid-mdat, has no index at all: a VideoError (not a
    partial video, since nothing says where its frames are)."""
    src = make_clip(tmp_path / "tail_moov.mp4", 60, gop=12, width=160, height=120)
    path = make_truncated(src, tmp_path / "cut.mp4", keep=0.5)
    for allow in (False, True):
        with pytest.raises(VideoError, match="not a readable video container"):
            open_video(path, allow_partial=allow)


_VFR = [0, 0.02, 0.3, 0.4, 0.42, 1.9, 1.92, 3.5]  # seconds: bursts and long holds, the last frame included
_COMPLETE = [
    (".mp4", dict(gop=12)),
    (".mp4", dict(gop=12, faststart=True)),
    (".mkv", dict(codec="mpeg4", gop=5)),
    (".mkv", dict(gop=12)),
    (".mkv", dict(fps=60, gop=12)),
    (".webm", dict(codec="libvpx", gop=12)),
    (".avi", dict(codec="mpeg4", gop=5)),
    (".avi", dict(codec="mjpeg")),
    (".mov", dict(gop=12)),
]
_COMPLETE_PARAMS = [(suf, kw, n) for suf, kw in _COMPLETE for n in (1, 2, 8, 60)] + [
    (suf, dict(pts_seconds=_VFR[:n]), n) for suf in (".mp4", ".mkv") for n in (1, 2, 8)  # VFR, mkv without a count
]


@pytest.mark.parametrize("suffix, kw, num_frames", _COMPLETE_PARAMS)
def test_complete_files_are_never_called_truncated(tmp_path, suffix, kw, num_frames):
    """No false positives: complete clips of every container, count-less and variable-rate ones
    included, open without allow_partial and report every frame."""
    path = _make(tmp_path / f"c{suffix}", num_frames, **kw)
    index = build_index(path)
    assert index.truncation() is None, index
    for backend in BACKENDS:
        try:
            dec = open_video(path, backend=backend)
        except VideoError as e:  # a backend that reads this file wrong refuses it with the reason
            assert backend != "pyav" and "wrong frames" in str(e), e
            continue
        with dec:
            assert dec.partial is None and dec.num_frames == num_frames
            assert read_barcodes(dec.get_frames(np.arange(num_frames))).tolist() == list(range(num_frames))


def test_session_clips_are_not_truncated_except_the_cut_one(clips):
    for name in ("cfr", "vfr", "mkv", "short", "fast"):
        assert build_index(clips[name]).truncation() is None, name
    assert build_index(clips["truncated"]).truncation() is not None

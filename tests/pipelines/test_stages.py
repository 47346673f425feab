"""The decode stage without Ray: chunking, last flags, failure rows and the hang watchdog."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from featcomp.video import SamplingConfig
from featcomp.pipelines.stages import ERROR_CHUNK, decode_videos
from tests.clips import make_clip, make_empty, make_not_video, make_truncated, read_barcodes

pytestmark = pytest.mark.video


def _run(path, sampling, timeout_s=30.0):
    return list(decode_videos({"video_id": np.array(["v"]), "path": np.array([str(path)])}, sampling=sampling, timeout_s=timeout_s))


def test_chunks_cover_the_sampled_frames_in_order_and_only_the_last_says_so(tmp_path):
    path = make_clip(tmp_path / "a.mp4", 50, fps=25)
    rows = _run(path, SamplingConfig(fps=10.0, batch_size=6))
    assert [int(r["chunk"][0]) for r in rows] == list(range(len(rows)))
    assert [bool(r["last"][0]) for r in rows] == [False] * (len(rows) - 1) + [True]
    frames = np.concatenate([r["frames"][0] for r in rows])
    idx = np.concatenate([r["indices"][0] for r in rows])
    ts = np.concatenate([r["timestamps"][0] for r in rows])
    assert all(len(r["frames"][0]) <= 6 for r in rows) and len(frames) == 20
    assert (read_barcodes(frames) == idx).all()  # the frames are the ones the indices name
    assert np.all(np.diff(ts) > 0) and ts[0] == pytest.approx(0.0)
    assert all(r["error"][0] == "" for r in rows)


@pytest.mark.parametrize("maker", [make_empty, make_not_video])
def test_bad_files_give_one_failure_row_naming_the_file(tmp_path, maker):
    path = maker(tmp_path / "bad.mp4")
    (row,) = _run(path, SamplingConfig(batch_size=4))
    assert int(row["chunk"][0]) == ERROR_CHUNK and "VideoError" in row["error"][0] and "bad.mp4" in row["error"][0]


def test_watchdog_reports_a_decoder_that_stops_producing(tmp_path, monkeypatch):
    import featcomp.video

    release = threading.Event()

    def hanging(path, sampling, **kw):  # accepts the stage's threads=/allow_partial= arguments
        release.wait(30)  # a decoder stuck in native code
        yield from ()

    monkeypatch.setattr(featcomp.video, "sample_frames", hanging)
    t0 = time.perf_counter()
    try:
        (row,) = _run(tmp_path / "x.mp4", SamplingConfig(), timeout_s=0.5)
    finally:
        release.set()
    assert time.perf_counter() - t0 < 5
    assert int(row["chunk"][0]) == ERROR_CHUNK and "produced no frames" in row["error"][0]


@pytest.mark.timeout(120)
def test_truncated_video_is_one_failure_row_unless_partial_is_allowed(tmp_path):
    """Issue 14: the first 30% of a 17-frame AVI decodes to 4 frames; by default that is a failure row
    (TruncatedVideoError naming the file and the counts), with allow_partial chunk rows marked partial."""
    src = make_clip(tmp_path / "full.avi", 17, codec="mpeg4", gop=5, width=960, height=540)
    path = make_truncated(src, tmp_path / "cut.avi", keep=0.3)
    (row,) = _run(path, SamplingConfig.all_frames(batch_size=2))
    err = row["error"][0]
    assert int(row["chunk"][0]) == ERROR_CHUNK and err.startswith("TruncatedVideoError: ")
    assert "cut.avi" in err and "of the 17 frames" in err and "allow_partial" in err
    assert row["partial"][0] == ""

    rows = list(decode_videos({"video_id": np.array(["v"]), "path": np.array([str(path)])},
                              sampling=SamplingConfig.all_frames(batch_size=2), timeout_s=30.0, allow_partial=True))
    assert all(r["error"][0] == "" and "of the 17 frames" in r["partial"][0] for r in rows)
    frames = np.concatenate([r["frames"][0] for r in rows])
    assert 0 < len(frames) < 17 and read_barcodes(frames).tolist() == list(range(len(frames)))


def test_complete_videos_carry_an_empty_partial_column(tmp_path):
    rows = _run(make_clip(tmp_path / "a.mp4", 10, fps=25), SamplingConfig.all_frames(batch_size=4))
    assert len(rows) == 3 and all(r["partial"][0] == "" for r in rows)


@pytest.mark.timeout(60)
def test_a_non_utf8_file_name_decodes_through_its_transport_path(tmp_path):
    from featcomp.pipelines.inputs import discover

    root = tmp_path / "v"
    root.mkdir()
    make_clip(root / os.fsdecode(b"caf\xe9.mp4"), 20, fps=25)
    (v,) = discover([str(root)])
    rows = list(decode_videos({"video_id": np.array([v.video_id]), "path": np.array([v.path])},
                              sampling=SamplingConfig(fps=10.0, batch_size=64), timeout_s=30.0))
    assert [r["error"][0] for r in rows] == [""] and len(rows[0]["frames"][0]) == 8


@pytest.mark.timeout(60)
def test_a_fifo_named_mp4_is_one_failure_row(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    try:
        (row,) = _run(fifo, SamplingConfig(batch_size=4), timeout_s=2.0)
    finally:  # release a decoder thread blocked in open() (a writer end opened and closed)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass
    assert int(row["chunk"][0]) == ERROR_CHUNK and "pipe.mp4" in row["error"][0]

"""Decoders: exact frames by index, VFR timestamps, resize on decode, broken inputs, hang guard."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from featcomp import VideoError
from featcomp.video import DecordDecoder, PyAVDecoder, available_decoders, build_index, open_video
from featcomp.video import base as video_base
from tests.clips import read_barcodes
from tests.video.conftest import VFR_PTS

pytestmark = [pytest.mark.video, pytest.mark.timeout(120)]

BACKENDS = available_decoders()  # pyav, and decord / torchcodec where installed


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_access_is_frame_exact(clips, backend):
    with open_video(clips["cfr"], backend=backend) as dec:
        assert dec.num_frames == 60
        assert (dec.width, dec.height) == (96, 64)
        # backwards, repeated, across keyframes (GOP 12), and the last frame
        idx = [59, 0, 13, 13, 12, 11, 35, 1, 47, 24]
        frames = dec.get_frames(idx)
        assert frames.dtype == np.uint8 and frames.shape == (len(idx), 64, 96, 3)
        assert read_barcodes(frames).tolist() == idx
        assert read_barcodes(dec.get_frames(np.arange(60))).tolist() == list(range(60))


@pytest.mark.parametrize("backend", BACKENDS)
def test_timestamps_cfr(clips, backend):
    with open_video(clips["cfr"], backend=backend) as dec:
        np.testing.assert_allclose(dec.timestamps, np.arange(60) / 25, atol=1e-6)
        assert dec.fps == pytest.approx(25.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vfr_timestamps_come_from_pts(clips, backend):
    with open_video(clips["vfr"], backend=backend) as dec:
        assert dec.num_frames == len(VFR_PTS)
        np.testing.assert_allclose(dec.timestamps, VFR_PTS, atol=1e-3)
        # index*fps would be wrong here: the average rate does not give these times
        assert not np.allclose(dec.timestamps, np.arange(len(VFR_PTS)) / dec.fps, atol=1e-2)
        assert read_barcodes(dec.get_frames([39, 3, 20])).tolist() == [39, 3, 20]


@pytest.mark.parametrize("backend", BACKENDS)
def test_resize_on_decode(clips, backend):
    with open_video(clips["cfr"], backend=backend, width=64, height=32) as dec:
        f = dec.get_frames([7, 30])
        assert f.shape == (2, 32, 64, 3)
        assert read_barcodes(f).tolist() == [7, 30]
    with open_video(clips["cfr"], backend=backend, short_side=40) as dec:
        assert (dec.width, dec.height) == (60, 40)
        assert read_barcodes(dec.get_frames([5])).tolist() == [5]


def test_auto_prefers_pyav_and_falls_back_to_decord(clips, monkeypatch):
    with open_video(clips["cfr"]) as dec:
        assert isinstance(dec, PyAVDecoder)
    # decord cannot open the truncated faststart file; PyAV can (asked to keep the partial video)
    with pytest.raises(VideoError, match="truncated.mp4"):
        open_video(clips["truncated"], backend="decord", allow_partial=True)
    with open_video(clips["truncated"], allow_partial=True) as dec:
        assert isinstance(dec, PyAVDecoder)
    if "decord" not in BACKENDS:
        return
    # a file PyAV cannot index goes to decord
    def unreadable(path):
        raise VideoError(f"{path}: not a readable video container (simulated)")

    monkeypatch.setattr(video_base, "_index_with_pyav", unreadable)
    with open_video(clips["cfr"]) as dec:
        assert isinstance(dec, DecordDecoder)
        assert read_barcodes(dec.get_frames([59, 0])).tolist() == [59, 0]


def test_mkv_without_header_count(clips):
    idx = build_index(clips["mkv"])
    assert idx.header_frames == 0 and idx.num_frames == 30
    for backend in BACKENDS:
        with open_video(clips["mkv"], backend=backend) as dec:
            assert dec.num_frames == 30
            assert read_barcodes(dec.get_frames([29, 0, 14])).tolist() == [29, 0, 14]


def test_truncated_file_counts_frames_by_packets(clips):
    index = build_index(clips["truncated"])
    assert index.header_frames == 60  # the header still claims the whole clip
    assert 0 < index.num_frames < 60 and index.damaged
    with open_video(clips["truncated"], allow_partial=True) as dec:
        n = dec.num_frames
        assert n == index.num_frames
        # every counted frame decodes, and is the right one
        assert read_barcodes(dec.get_frames(np.arange(n))).tolist() == list(range(n))
        assert read_barcodes(dec.get_frames([n - 1, 0])).tolist() == [n - 1, 0]
        with pytest.raises(VideoError, match="indices"):
            dec.get_frames([n])


@pytest.mark.parametrize(
    "name, reason",
    [
        ("missing", "no such file"),
        ("empty", "empty file"),
        ("text", "not a readable video"),
        ("nomoov", "not a readable video"),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_bad_inputs_raise_video_error_naming_the_path(clips, name, reason, backend):
    with pytest.raises(VideoError) as info:
        open_video(clips[name], backend=backend)
    msg = str(info.value)
    assert str(clips[name]) in msg and reason in msg


def test_directory_without_image_frames_is_not_a_video(tmp_path):
    # a directory is read as a frames folder (tests/video/test_frames.py); one without images is an error
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(VideoError, match="no image files") as info:
        open_video(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(VideoError, match="not 'pyav'"):
        open_video(tmp_path, backend="pyav")


def test_out_of_range_index(clips):
    with open_video(clips["cfr"], backend="pyav") as dec, pytest.raises(VideoError, match=r"\[0, 60\)"):
        dec.get_frames([60])


def test_hanging_probe_becomes_video_error(clips, monkeypatch):
    def hang(path):
        time.sleep(30)

    monkeypatch.setattr(video_base, "_index_with_pyav", hang)
    t = time.perf_counter()
    with pytest.raises(VideoError, match="did not finish within 0.5 s"):
        open_video(clips["cfr"], timeout_s=0.5)
    assert time.perf_counter() - t < 5


def test_hanging_decode_becomes_video_error(clips):
    with open_video(clips["cfr"], backend="decord", timeout_s=2.0) as dec:

        class Stuck:
            def get_batch(self, idx):
                time.sleep(30)

        dec._vr = Stuck()
        with pytest.raises(VideoError, match="did not finish"):
            dec.get_frames([0])
        with pytest.raises(VideoError, match="unusable"):
            dec.get_frames([1])


def test_video_package_does_not_import_torch():
    import subprocess

    code = "import sys, featcomp.video; print('torch' in sys.modules, 'decord' in sys.modules, 'av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "False"]


def test_auto_sends_long_videos_to_pyav(clips, monkeypatch):
    """Even where decord comes first in the order, videos over AUTO_DECORD_MAX_FRAMES go to it last."""
    if "decord" not in BACKENDS:
        pytest.skip("decord is not installed")
    monkeypatch.setattr(video_base, "AUTO_ORDER", ("decord", "pyav"))
    monkeypatch.setattr(video_base, "AUTO_DECORD_MAX_FRAMES", 59)
    with open_video(clips["cfr"]) as dec:  # 60 frames > 59
        assert isinstance(dec, PyAVDecoder)
    monkeypatch.setattr(video_base, "AUTO_DECORD_MAX_FRAMES", 60)
    with open_video(clips["cfr"]) as dec:
        assert isinstance(dec, DecordDecoder)


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_indices_name_the_file(clips, backend):
    with open_video(clips["cfr"], backend=backend) as dec:
        assert dec.get_frames([]).shape == (0, 64, 96, 3)
        for bad in ([60], [-1], [3, 61]):
            with pytest.raises(VideoError, match=r"cfr\.mp4.*\[0, 60\)"):
                dec.get_frames(bad)
        # a refused request leaves the decoder usable
        assert read_barcodes(dec.get_frames([2])).tolist() == [2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_decoder_threads_decode_the_same_frames(clips, backend, threads):
    with open_video(clips["cfr"], backend=backend) as ref, open_video(clips["cfr"], backend=backend, threads=threads) as dec:
        idx = [59, 0, 13, 12, 35, 1]
        np.testing.assert_array_equal(dec.get_frames(idx), ref.get_frames(idx))
        assert read_barcodes(dec.get_frames(np.arange(60))).tolist() == list(range(60))


def test_threads_reach_the_backend_only_when_given(clips, monkeypatch):
    """A registered decoder without a ``threads`` argument keeps working; a given value is passed on."""
    seen = []

    def factory(path, *, index, width, height, short_side, timeout_s, **kw):
        seen.append(kw)
        return DecordDecoder(path, index=index, width=width, height=height, short_side=short_side, timeout_s=timeout_s, **kw)

    monkeypatch.setattr(video_base, "get_decoder", lambda name: factory)
    open_video(clips["cfr"], backend="decord").close()
    open_video(clips["cfr"], backend="decord", threads=1).close()
    assert seen == [{}, {"threads": 1}]

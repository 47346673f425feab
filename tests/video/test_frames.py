"""The ``frames`` backend: a directory of image frames read as one video (Pillow writes the frames here)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from featcomp.errors import VideoError
from featcomp.video import (
    DEFAULT_FRAMES_FPS,
    FramesDecoder,
    SamplingConfig,
    available_decoders,
    open_video,
    sample_frames,
)
from featcomp.video.frames_backend import image_files, natural_key
from tests.clips import barcode_frame, read_barcodes

pytestmark = [pytest.mark.video, pytest.mark.timeout(120)]


def write_frames(d: Path, n: int, *, ext: str = ".png", width: int = 96, height: int = 64, name: str = "frame_{}",
                 start: int = 0) -> Path:
    """``n`` barcoded frames ``name.format(i) + ext`` (frame i shows barcode i), written in shuffled order."""
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    order = list(range(n))
    random.Random(n).shuffle(order)  # creation order must not matter
    for i in order:
        img = Image.fromarray(barcode_frame(i, width, height))
        img.save(d / (name.format(i + start) + ext), quality=95) if ext.lower() in (".jpg", ".jpeg") else img.save(
            d / (name.format(i + start) + ext))
    return d


def test_natural_order_exact_frames_and_timestamps(tmp_path):
    d = write_frames(tmp_path / "clip", 23)  # frame_0 .. frame_22: lexical order would put frame_10 before frame_2
    (d / "notes.txt").write_text("not a frame")
    (d / ".hidden.png").write_bytes(b"junk")  # hidden: ignored, although it is not an image
    (d / "sub").mkdir()
    with open_video(d, frames_fps=10) as dec:
        assert isinstance(dec, FramesDecoder) and dec.backend == "frames" and dec.partial is None
        assert (dec.num_frames, dec.width, dec.height, dec.fps) == (23, 96, 64, 10.0)
        np.testing.assert_allclose(dec.timestamps, np.arange(23) / 10.0)
        assert [Path(f).name for f in dec.files][:12] == [f"frame_{i}.png" for i in range(12)]
        np.testing.assert_array_equal(read_barcodes(dec.get_frames(np.arange(23))), np.arange(23))
        # any order, repeats, exact pixels (PNG is lossless)
        got = dec.get_frames([22, 3, 10, 3])
        np.testing.assert_array_equal(read_barcodes(got), [22, 3, 10, 3])
        np.testing.assert_array_equal(got[0], barcode_frame(22))
        assert dec.get_frames([]).shape == (0, 64, 96, 3)
        with pytest.raises(VideoError, match=r"\[0, 23\)"):
            dec.get_frames([23])


def test_default_fps_and_every_extension_case_insensitive(tmp_path):
    d = tmp_path / "mixed"
    for i, ext in enumerate([".png", ".JPG", ".jpeg", ".bmp", ".WebP", ".PNG"]):
        write_frames(d, 1, ext=ext, start=i, name="f{}")
    with open_video(d) as dec:
        assert dec.fps == DEFAULT_FRAMES_FPS == 25.0
        np.testing.assert_allclose(dec.timestamps, np.arange(6) / 25.0)
        assert [Path(f).suffix for f in dec.files] == [".png", ".JPG", ".jpeg", ".bmp", ".WebP", ".PNG"]
        # write_frames(start=i) labels each file's frame 0, so every barcode reads 0: check the lossy ones decode
        assert (read_barcodes(dec.get_frames(range(6))) == 0).all()


def test_natural_key_orders_numbers_as_numbers():
    names = ["img10.png", "img2.png", "IMG3.png", "img1.png", "img02.png", "a.png", "img100.png"]
    assert sorted(names, key=natural_key) == ["a.png", "img1.png", "img02.png", "img2.png", "IMG3.png",
                                              "img10.png", "img100.png"]
    # multi-number names: each run of digits compares as a number
    assert sorted(["s2_f10", "s10_f1", "s2_f9"], key=natural_key) == ["s2_f9", "s2_f10", "s10_f1"]


def test_sampling_at_a_lower_fps_picks_frames_by_time(tmp_path):
    d = write_frames(tmp_path / "clip", 50)
    batches = list(sample_frames(d, SamplingConfig(fps=5.0, batch_size=4), frames_fps=25))
    idx = np.concatenate([b.indices for b in batches])
    ts = np.concatenate([b.timestamps for b in batches])
    np.testing.assert_array_equal(idx, np.arange(0, 50, 5))
    np.testing.assert_allclose(ts, np.arange(10) / 5.0)
    np.testing.assert_array_equal(read_barcodes(np.concatenate([b.frames for b in batches])), idx)
    assert max(len(b) for b in batches) == 4
    # the same folder at 10 fps: 5 frames per second of 10 -> every second frame
    idx10 = np.concatenate([b.indices for b in sample_frames(d, SamplingConfig(fps=5.0), frames_fps=10)])
    np.testing.assert_array_equal(idx10, np.arange(0, 50, 2))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_resize_on_decode_matches_the_other_backends_options(tmp_path, ext):
    d = write_frames(tmp_path / "clip", 8, ext=ext, width=192, height=128)
    with open_video(d, short_side=32) as dec:
        assert (dec.width, dec.height) == (48, 32)
        f = dec.get_frames(range(8))
        assert f.shape == (8, 32, 48, 3) and f.dtype == np.uint8
        np.testing.assert_array_equal(read_barcodes(f), np.arange(8))
    with open_video(d, width=64) as dec:  # one side given: aspect kept
        assert (dec.width, dec.height) == (64, 43)
        np.testing.assert_array_equal(read_barcodes(dec.get_frames([7, 0])), [7, 0])
    with open_video(d, width=300, height=100) as dec:  # both sides: exact, upscaling allowed
        assert dec.get_frames([5]).shape == (1, 100, 300, 3)
        assert read_barcodes(dec.get_frames([5]))[0] == 5
    with pytest.raises(VideoError, match="not both"):
        open_video(d, short_side=32, width=10)


def test_grayscale_and_rgba_frames_become_rgb(tmp_path):
    from PIL import Image

    d = tmp_path / "modes"
    d.mkdir()
    Image.fromarray(barcode_frame(1)[..., 0]).save(d / "0.png")  # L
    rgba = np.concatenate([barcode_frame(2), np.full((64, 96, 1), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(d / "1.png")  # RGBA: alpha dropped
    with open_video(d) as dec:
        f = dec.get_frames([0, 1])
    assert f.shape == (2, 64, 96, 3)
    np.testing.assert_array_equal(f[0], barcode_frame(1))
    np.testing.assert_array_equal(f[1], barcode_frame(2))


def test_a_corrupt_frame_is_a_video_error_naming_the_file(tmp_path):
    d = write_frames(tmp_path / "clip", 10)
    bad = d / "frame_4.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(VideoError, match=r"frame_4\.png: not a readable image frame"):
        open_video(d)
    # a frame whose header reads but whose pixels are cut: found when that frame is decoded
    write_frames(d, 10)
    data = (d / "frame_7.png").read_bytes()
    (d / "frame_7.png").write_bytes(data[: len(data) // 2])
    with open_video(d) as dec:
        np.testing.assert_array_equal(read_barcodes(dec.get_frames([0, 6])), [0, 6])
        with pytest.raises(VideoError, match=r"frame_7\.png"):
            dec.get_frames([5, 7])
        assert read_barcodes(dec.get_frames([8]))[0] == 8  # the decoder stays usable


def test_frames_of_different_sizes_are_an_error_naming_the_file(tmp_path):
    from PIL import Image

    d = write_frames(tmp_path / "clip", 12)
    Image.fromarray(barcode_frame(9, 80, 64)).save(d / "frame_9.png")
    with pytest.raises(VideoError, match=r"frame_9\.png: frame of size 80x64.*96x64"):
        open_video(d)


def test_sampling_errors_surface_as_video_errors(tmp_path):
    d = write_frames(tmp_path / "clip", 6)
    (d / "frame_3.png").write_bytes(b"")
    with pytest.raises(VideoError, match=r"frame_3\.png"):
        list(sample_frames(d, SamplingConfig.all_frames()))


def test_bad_folders_and_options(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(VideoError, match="no image files"):
        open_video(empty)
    d = write_frames(tmp_path / "clip", 3)
    with pytest.raises(VideoError, match="positive"):
        open_video(d, frames_fps=0)
    with pytest.raises(VideoError, match="backend 'frames' or 'auto', not 'pyav'"):
        open_video(d, backend="pyav")
    with pytest.raises(VideoError, match="not a directory"):
        open_video(d / "frame_0.png", backend="frames")
    with open_video(d, backend="frames", frames_fps=2.5, threads=1) as dec:
        np.testing.assert_allclose(dec.timestamps, [0.0, 0.4, 0.8])
    assert "frames" not in available_decoders()  # it reads directories: not a video-file backend


def test_image_files_lists_only_this_folder(tmp_path):
    d = write_frames(tmp_path / "clip", 3)
    write_frames(d / "nested", 2)
    os.symlink(d / "frame_0.png", d / "frame_9.png")  # a link to a frame counts as a frame
    assert [Path(p).name for p in image_files(d)] == ["frame_0.png", "frame_1.png", "frame_2.png", "frame_9.png"]


def test_extract_features_reads_a_frames_folder(tmp_path):
    import featcomp
    from featcomp.video.frames_backend import frames_native_size

    d = write_frames(tmp_path / "clip", 30, ext=".jpg")
    assert frames_native_size(d) == (96, 64)
    f = featcomp.extract_features(d, backbone="mobilenet_v3_small", weights=None, fps=5, input_size=32)
    np.testing.assert_allclose(f.timestamps, np.arange(6) / 5.0)  # 25 fps folder sampled at 5 fps
    assert f.data.shape[0] == 6 and f.config["decoder"] == "frames" and f.config["video_frames"] == 30

"""Frames folders on object storage (issue 17): an ``s3://bucket/videos/`` prefix holding
``clipA/0001.jpg ...`` beside ``b.mp4`` is two videos, ``clipA`` and ``b.mp4``, as a local copy of it is;
the decode task stages the folder's images in its bounded scratch directory. Tested against a real S3
API server on 127.0.0.1 (moto, tests/s3.py) and a local Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featcomp.pipelines.config import ExtractConfig
from featcomp.pipelines.inputs import discover
from tests.clips import barcode_frame, make_clip, read_barcodes

pytestmark = pytest.mark.video


def _cfg(opts=None) -> ExtractConfig:
    cfg = ExtractConfig(progress=False).with_overrides(inference={"batch_size": 8},
                                                       decode={"timeout_s": 30.0, "frames_fps": 20.0})
    return cfg.replace(storage_options=dict(opts or {}))


def _upload(server, local_dir: Path, url_prefix: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{url_prefix}/{p.relative_to(local_dir).as_posix()}")


def _frames(d: Path, n: int, ext: str = ".jpg", name: str = "{:04d}") -> Path:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(barcode_frame(i, 64, 48)).save(d / (name.format(i + 1) + ext), quality=95)
    return d


def _layout(root: Path) -> Path:
    """videos/clipA (40 JPEG frames), videos/b.mp4, videos/sub/cam (3 PNG frames named frame_1..frame_10
    order), videos/stray (one image: not a video), videos/clipA/extra/x.mp4 (inside a frames folder: not
    searched)."""
    _frames(root / "clipA", 40)
    _frames(root / "sub" / "cam", 3, ".png", "frame_{}")
    _frames(root / "stray", 1)
    (root / "clipA" / "extra").mkdir()
    make_clip(root / "b.mp4", 30, fps=25, width=64, height=48)
    make_clip(root / "clipA" / "extra" / "x.mp4", 5, fps=25, width=64, height=48)
    return root


@pytest.mark.timeout(120)
def test_an_s3_prefix_lists_frames_folders_as_videos_like_a_local_directory(s3_server, s3_bucket, tmp_path):
    opts = s3_server.storage_options
    local = _layout(tmp_path / "videos")
    _upload(s3_server, local, f"{s3_bucket}/videos")
    want = [(v.video_id) for v in discover([str(local)])]
    assert want == ["b.mp4", "clipA", "sub/cam"]
    got = discover([f"s3://{s3_bucket}/videos/"], storage_options=opts)
    assert [v.video_id for v in got] == want
    assert {v.video_id: v.path for v in got}["clipA"] == f"s3://{s3_bucket}/videos/clipA"
    # the folder given as the input is named like a file input, as locally
    (one,) = discover([f"s3://{s3_bucket}/videos/clipA"], storage_options=opts)
    assert (one.video_id, one.path) == ("clipA", f"s3://{s3_bucket}/videos/clipA")
    # a prefix with neither videos nor frames folders says so
    from featcomp.errors import PipelineError

    with pytest.raises(PipelineError, match="no video files.*no frames folder"):
        discover([f"s3://{s3_bucket}/videos/stray"], storage_options=opts)


@pytest.mark.timeout(120)
def test_the_decode_task_stages_an_s3_frames_folder_within_the_scratch_bound(s3_server, s3_bucket, tmp_path):
    from featcomp.errors import StorageError
    from featcomp.pipelines.stages import decode_videos
    from featcomp.storage import stage_to_local
    from featcomp.video import SamplingConfig, sample_frames

    opts = s3_server.storage_options
    local = _frames(tmp_path / "in" / "clipA", 40)
    _upload(s3_server, tmp_path / "in", f"{s3_bucket}/v")
    url = f"s3://{s3_bucket}/v/clipA"
    sampling = SamplingConfig(fps=10.0, batch_size=8)
    scratch = tmp_path / "scratch"
    rows = list(decode_videos({"video_id": np.array(["clipA"]), "path": np.array([url])}, sampling=sampling,
                              storage_options=opts, scratch_dir=str(scratch), scratch_mb=64, frames_fps=20.0))
    assert all(r["error"][0] == "" for r in rows), [r["error"][0] for r in rows]
    frames = np.concatenate([r["frames"][0] for r in rows])
    want = list(sample_frames(local, sampling, frames_fps=20.0))
    np.testing.assert_array_equal(frames, np.concatenate([b.frames for b in want]))
    np.testing.assert_array_equal(read_barcodes(frames), np.arange(0, 40, 2))  # every second frame, in order
    np.testing.assert_allclose(np.concatenate([r["timestamps"][0] for r in rows]), np.arange(20) / 10.0)
    assert list(scratch.iterdir()) == []  # the staged folder is gone once the video is done
    # over the scratch bound: refused before anything is copied
    with pytest.raises(StorageError, match="scratch"):
        stage_to_local(url, str(tmp_path / "x"), opts, max_bytes=1024)
    assert not (tmp_path / "x").exists()
    rows = list(decode_videos({"video_id": np.array(["clipA"]), "path": np.array([url])}, sampling=sampling,
                              storage_options=opts, scratch_dir=str(scratch), scratch_mb=0, frames_fps=20.0))
    assert len(rows) == 1 and "scratch" in rows[0]["error"][0] and url in rows[0]["error"][0]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_job_over_an_s3_prefix_with_a_frames_folder_and_an_mp4_equals_the_local_job(ray_local, s3_server, s3_bucket,
                                                                                    tiny_model, tmp_path):
    import featcomp
    from featcomp.pipelines.extract import run_extract

    opts = s3_server.storage_options
    local = tmp_path / "videos"
    _frames(local / "clipA", 40)
    make_clip(local / "b.mp4", 30, fps=25, width=64, height=48)
    _upload(s3_server, local, f"{s3_bucket}/videos")
    store = f"s3://{s3_bucket}/feat.zarr"
    summary = run_extract([f"s3://{s3_bucket}/videos/"], store, str(tiny_model), config=_cfg(opts))
    assert (summary.total, summary.done, summary.failed) == (2, 2, 0), summary.failures

    run_extract([str(local)], str(tmp_path / "local.zarr"), str(tiny_model), config=_cfg())
    s, l = featcomp.open_store(store, storage_options=opts), featcomp.open_store(tmp_path / "local.zarr")
    assert sorted(s) == sorted(l) == ["b.mp4", "clipA"]
    for vid in l:  # the same frames, model and coder: the same integers
        np.testing.assert_array_equal(s[vid].latents(), l[vid].latents())
        np.testing.assert_allclose(s[vid].timestamps, l[vid].timestamps)
        assert s[vid].metadata["path"] == f"s3://{s3_bucket}/videos/{vid}"
        assert s[vid].metadata["frame_indices"] == l[vid].metadata["frame_indices"]
    assert len(s["clipA"]) == 20  # 40 frames at 20 fps sampled at the model's 10 fps
    np.testing.assert_allclose(s["clipA"].timestamps, np.arange(20) / 10.0)
    assert featcomp.verify_store(store, storage_options=opts).ok
    again = run_extract([f"s3://{s3_bucket}/videos/"], store, str(tiny_model), config=_cfg(opts))
    assert (again.done, again.skipped) == (0, 2)

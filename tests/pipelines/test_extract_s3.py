"""The extraction job with inputs, store and model on object storage: a real S3 API server on
127.0.0.1 (moto, tests/s3.py), a local Ray. The store must hold exactly what the same job writes to
local disk; a kill -9 of the driver and a re-run lose nothing; readers (FeatureDataset in 2
DataLoader workers, verify, info) work on the S3 store; model files load from s3://."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from featcomp.errors import ModelFileError
from featcomp.pipelines.config import ExtractConfig
from featcomp.pipelines.extract import run_extract
from tests.pipelines.conftest import make_clip_dir

ROOT = Path(__file__).resolve().parents[2]


def _cfg(opts=None) -> ExtractConfig:
    cfg = ExtractConfig(progress=False).with_overrides(inference={"batch_size": 8}, decode={"timeout_s": 30.0})
    return cfg.replace(storage_options=dict(opts or {}))


def _upload(server, local_dir: Path, url_prefix: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{url_prefix}/{p.relative_to(local_dir).as_posix()}")


@pytest.mark.timeout(60)
def test_model_file_from_s3_loads_like_the_local_file(s3_server, s3_bucket, tiny_model):
    import featcomp

    _upload(s3_server, tiny_model.parent, f"{s3_bucket}/models")
    url = f"s3://{s3_bucket}/models/{tiny_model.name}"
    remote = featcomp.load_model(url, storage_options=s3_server.storage_options)
    local = featcomp.load_model(tiny_model)
    assert remote.digest == local.digest and remote.codec.digest == local.codec.digest
    assert remote.path == url
    ex = featcomp.Extractor(url, storage_options=s3_server.storage_options)
    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ex.encode_frames(frames), featcomp.Extractor(local).encode_frames(frames))
    with pytest.raises(ModelFileError, match="does not exist"):
        featcomp.load_model(f"s3://{s3_bucket}/models/nope.safetensors", storage_options=s3_server.storage_options)


@pytest.mark.timeout(60)
def test_decode_task_stages_an_s3_video_within_the_scratch_bound(s3_server, s3_bucket, tmp_path):
    from featcomp.video import SamplingConfig
    from featcomp.pipelines.stages import ERROR_CHUNK, decode_videos
    from tests.clips import make_clip

    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mp4", 30, fps=25, width=64, height=48)
    _upload(s3_server, tmp_path / "in", f"{s3_bucket}/v")
    url = f"s3://{s3_bucket}/v/a.mp4"
    batch = {"video_id": np.array(["a.mp4"]), "path": np.array([url])}
    sampling = SamplingConfig(fps=10.0, batch_size=4)
    scratch = tmp_path / "scratch"
    rows = list(decode_videos(batch, sampling=sampling, storage_options=s3_server.storage_options,
                              scratch_dir=str(scratch), scratch_mb=64))
    assert [int(r["chunk"][0]) for r in rows] == [0, 1, 2] and all(r["error"][0] == "" for r in rows)
    assert sum(r["frames"].shape[1] for r in rows) == 12
    assert list(scratch.iterdir()) == []  # the staged copy is gone once the video is done
    # a video over the scratch bound is refused before it is copied, as a failure row
    size = (tmp_path / "in" / "a.mp4").stat().st_size
    assert size > 1024
    from featcomp.storage import copy_to_local
    from featcomp.errors import StorageError

    with pytest.raises(StorageError, match="scratch"):
        copy_to_local(url, str(tmp_path / "x.mp4"), s3_server.storage_options, max_bytes=1024)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_job_with_inputs_store_and_model_on_s3_equals_the_local_job(ray_local, s3_server, s3_bucket, tiny_model,
                                                                   tmp_path):
    import torch

    import featcomp
    from featcomp.data import FeatureDataset, collate_features

    opts = s3_server.storage_options
    clips = make_clip_dir(tmp_path / "videos", good={"a.mp4": 30, "sub/b.mp4": 45, "c.mp4": 40}, bad=("corrupt.mp4",))
    _upload(s3_server, clips, f"{s3_bucket}/videos")
    _upload(s3_server, tiny_model.parent, f"{s3_bucket}/models")
    store = f"s3://{s3_bucket}/feat.zarr"
    model = f"s3://{s3_bucket}/models/{tiny_model.name}"
    summary = run_extract([f"s3://{s3_bucket}/videos"], store, model, config=_cfg(opts))
    assert (summary.total, summary.done, summary.failed) == (4, 3, 1)
    assert summary.bytes_written > 0

    local = tmp_path / "local.zarr"
    run_extract([str(clips)], str(local), str(tiny_model), config=_cfg())
    s, l = featcomp.open_store(store, storage_options=opts), featcomp.open_store(local)
    assert sorted(s) == sorted(l) == ["a.mp4", "c.mp4", "sub/b.mp4"]
    for vid in l:  # the same decoder, model and coder: the same integers
        np.testing.assert_array_equal(s[vid].latents(), l[vid].latents())
        np.testing.assert_allclose(s[vid].timestamps, l[vid].timestamps)
        assert s[vid].metadata["path"] == f"s3://{s3_bucket}/videos/{vid}"
    fails = s.failures()
    assert [f["id"] for f in fails] == ["corrupt.mp4"] and "VideoError" in fails[0]["error"]
    assert f"s3://{s3_bucket}/videos/corrupt.mp4" in fails[0]["error"]  # the URL, not the scratch copy
    assert "featcomp-decode-" not in fails[0]["error"]
    assert s.info()["videos"] == 3 and s.info()["failures"] == 1
    rep = featcomp.verify_store(store, storage_options=opts)
    assert rep.ok, rep.problems

    again = run_extract([f"s3://{s3_bucket}/videos"], store, model, config=_cfg(opts))
    assert (again.done, again.skipped) == (0, 3)

    # FeatureDataset on the S3 store, read by 2 DataLoader workers (each reopens the store)
    ds = FeatureDataset(store, storage_options=opts, window=4)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_features)
    got = {}
    for batch in loader:
        for vid, start, n, f in zip(batch["video_ids"], batch["starts"].tolist(), batch["lengths"].tolist(),
                                    batch["features"]):
            got[(vid, start)] = f[:n].numpy()
    assert len(got) == len(ds)
    for (vid, start), f in got.items():
        np.testing.assert_array_equal(f, l[vid].features()[start : start + 4])


def _spawn(args: list[str], env_extra: dict) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(env_extra, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "featcomp.pipelines.extract", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_of_the_driver_writing_to_s3_then_rerun_finishes_without_duplicates(ray_local, s3_server, s3_bucket,
                                                                                  tiny_model, tmp_path):
    import featcomp

    opts = s3_server.storage_options
    clips = make_clip_dir(tmp_path / "videos", good={f"v{i:02d}.mp4": 60 for i in range(12)}, bad=("zero.mp4",))
    _upload(s3_server, clips, f"{s3_bucket}/videos")
    store = f"s3://{s3_bucket}/feat.zarr"
    # the driver gets its credentials from the environment, the Ray workers (started before) from options
    proc = _spawn([f"s3://{s3_bucket}/videos", "--store", store, "--model", str(tiny_model), "--address", ray_local,
                   "--batch-size", "4", "--no-progress", "-v", *s3_server.cli_options()], s3_server.env)
    lines, t0 = [], time.monotonic()
    try:
        while time.monotonic() - t0 < 150:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if sum("wrote " in ln for ln in lines) >= 2:
                break
        assert sum("wrote " in ln for ln in lines) >= 2, "".join(lines)
        assert proc.poll() is None, "the job finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    committed = featcomp.open_store(store, storage_options=opts)
    k = len(committed)
    assert 2 <= k < 12
    assert featcomp.verify_store(store, storage_options=opts).ok  # what a killed driver leaves is valid

    summary = run_extract([f"s3://{s3_bucket}/videos"], store, str(tiny_model), config=_cfg(opts))
    assert summary.skipped == k and summary.done == 12 - k and summary.failed == 1
    s = featcomp.open_store(store, storage_options=opts)
    ids = list(s.index.ids)
    assert sorted(set(ids)) == [f"v{i:02d}.mp4" for i in range(12)] and len(ids) == 12
    assert all(len(s[v]) == 24 for v in s)  # no partial videos
    assert featcomp.verify_store(store, storage_options=opts).ok


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_compress_command_reads_video_and_model_from_s3(s3_server, s3_bucket, tiny_model, tmp_path):
    import argparse

    import featcomp
    from featcomp.model import CompressedClip
    from featcomp.model_commands import configure, main
    from tests.clips import make_clip

    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mp4", 30, fps=25, width=64, height=48)
    _upload(s3_server, tmp_path / "in", f"{s3_bucket}/v")
    _upload(s3_server, tiny_model.parent, f"{s3_bucket}/models")
    parser = argparse.ArgumentParser()
    configure(parser)
    out = tmp_path / "a.fcc"
    args = parser.parse_args([f"s3://{s3_bucket}/v/a.mp4", "--model", f"s3://{s3_bucket}/models/{tiny_model.name}",
                              "-o", str(out), *s3_server.cli_options()])
    assert main(args) == 0
    local = featcomp.compress(tmp_path / "in" / "a.mp4", str(tiny_model))
    clip = CompressedClip.from_bytes(out.read_bytes())
    assert clip.num_frames == local.num_frames == 12 and clip.data == local.data

"""Stores on object storage, against a real S3 API server on 127.0.0.1 (moto, tests/s3.py): write,
read back equal to a local store, info, verify on a good and a damaged store, repair by compaction,
plain zarr.open_group with the registered codec, environment credentials, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import featcomp
from featcomp.errors import BucketNotFoundError, StorageAccessError, StorageBackendMissing, StoreError
from featcomp.store import StoreWriter, compact_store, open_store, verify_store

from .conftest import C, FakeModel, laplace_latents

pytestmark = [pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


def _videos(rng, n=9):
    out = {}
    for i in range(n):
        t = int(rng.integers(5, 70))
        ts = np.arange(t) / 5.0 if i % 3 else np.cumsum(rng.uniform(0.05, 0.4, t))  # some irregular
        out[f"clips/v{i:02d}.mp4"] = (laplace_latents(rng, t), ts)
    return out


def _write(url, codec, videos, **kw):
    scale = np.linspace(0.5, 2.0, C).astype(np.float32)
    with StoreWriter(url, FakeModel(codec, scale), chunk_frames=8, shard_chunks=4, **kw) as w:
        for vid, (k, ts) in videos.items():
            assert w.write(vid, k, ts, metadata={"n": len(k)}) is not None


def _s3fs(server):
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **server.storage_options)


def test_write_read_info_verify_equal_to_local(s3_server, s3_bucket, tmp_path, codec, rng):
    videos = _videos(rng)
    url = f"s3://{s3_bucket}/feat.zarr"
    _write(url, codec, videos, storage_options=s3_server.storage_options)
    _write(tmp_path / "local.zarr", codec, videos)
    remote = open_store(url, storage_options=s3_server.storage_options)
    local = open_store(tmp_path / "local.zarr")
    assert sorted(remote) == sorted(local) == sorted(videos)
    for vid, (k, ts) in videos.items():
        np.testing.assert_array_equal(remote[vid].latents(), k)
        np.testing.assert_array_equal(remote[vid].features(), local[vid].features())
        np.testing.assert_array_equal(remote[vid].timestamps, ts)
        np.testing.assert_array_equal(remote[vid].window(3, 11).latents(), k[3:11])
        assert remote[vid].metadata == {"n": len(k)}
    ri, li = remote.info(), local.info()
    for key in ("videos", "frames", "parts", "data_bytes", "sample_shape", "digest"):
        assert ri[key] == li[key], key
    rep = verify_store(url, storage_options=s3_server.storage_options)
    assert rep.ok, rep.problems
    assert rep.videos == len(videos) and rep.chunks > 0


def test_environment_credentials_work_unchanged(s3_server, s3_bucket, codec, rng):
    """s3_bucket puts AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL in the environment:
    no storage options at all."""
    videos = _videos(rng, 3)
    url = f"s3://{s3_bucket}/env.zarr"
    _write(url, codec, videos)
    st = open_store(url)
    assert sorted(st) == sorted(videos)
    np.testing.assert_array_equal(st["clips/v01.mp4"].latents(), videos["clips/v01.mp4"][0])


def test_verify_reports_a_damaged_store_and_compaction_repairs_logs(s3_server, s3_bucket, codec, rng):
    opts = s3_server.storage_options
    videos = _videos(rng, 6)
    url = f"s3://{s3_bucket}/dmg.zarr"
    _write(url, codec, videos, storage_options=opts, compact_on_close=False)  # commit logs stay as objects
    fs = _s3fs(s3_server)
    logs = [p for p in fs.find(f"{s3_bucket}/dmg.zarr/index") if ".log.d/" in p]
    assert logs, "a remote writer commits one object per record"
    assert compact_store(url, include_remote_logs=True, storage_options=opts) >= 1
    assert not [p for p in fs.find(f"{s3_bucket}/dmg.zarr/index") if ".log.d/" in p]
    assert sorted(open_store(url, storage_options=opts)) == sorted(videos)
    assert verify_store(url, storage_options=opts).ok
    # damage: flip bytes in the middle of one shard (its data, not its index)
    shard = sorted(p for p in fs.find(f"{s3_bucket}/dmg.zarr/parts") if "/c/" in p)[0]
    data = bytearray(fs.cat_file(shard))
    for i in range(8, min(len(data) - 200, 64)):
        data[i] ^= 0x5A
    fs.pipe_file(shard, bytes(data))
    rep = verify_store(url, storage_options=opts)
    assert not rep.ok
    assert any(shard.split("/dmg.zarr/", 1)[1] in p for p in rep.problems), rep.problems


def test_plain_zarr_reads_the_s3_store_with_the_registered_codec(s3_server, s3_bucket, codec, rng):
    import zarr

    import featcomp.store  # noqa: F401 - registers the codec

    videos = _videos(rng, 4)
    url = f"s3://{s3_bucket}/plain.zarr"
    _write(url, codec, videos, storage_options=s3_server.storage_options)
    st = open_store(url, storage_options=s3_server.storage_options)
    g = zarr.open_group(url, mode="r", storage_options=s3_server.storage_options)
    assert g.attrs["featcomp"]["format"] == "featcomp.store"
    ix = st.index
    for j, vid in enumerate(ix.ids):
        arr = g["parts"][ix.parts[int(ix.part[j])]]
        s, n = int(ix.start[j]), int(ix.length[j])
        np.testing.assert_array_equal(arr[s : s + n], videos[vid][0])


def test_concurrent_writers_lose_nothing(s3_server, s3_bucket, codec, rng):
    """Two writers open on the same S3 store at once (interleaved writes): every video of both is there."""
    opts = s3_server.storage_options
    url = f"s3://{s3_bucket}/two.zarr"
    a, b = _videos(rng, 5), {f"b/{k}": v for k, v in _videos(rng, 5).items()}
    scale = np.ones(C, np.float32)
    with StoreWriter(url, FakeModel(codec, scale), chunk_frames=8, storage_options=opts) as wa, \
            StoreWriter(url, FakeModel(codec, scale), chunk_frames=8, storage_options=opts) as wb:
        for (va, (ka, ta)), (vb, (kb, tb)) in zip(a.items(), b.items()):
            wa.write(va, ka, ta)
            wb.write(vb, kb, tb)
            # committed videos are visible to a new reader while both writers are still open
            assert va in open_store(url, storage_options=opts)
    st = open_store(url, storage_options=opts)
    assert sorted(st) == sorted([*a, *b])
    for vid, (k, _) in {**a, **b}.items():
        np.testing.assert_array_equal(st[vid].latents(), k)
    assert verify_store(url, storage_options=opts).ok


def test_a_video_is_invisible_until_its_commit_record(s3_server, s3_bucket, codec, rng):
    opts = s3_server.storage_options
    url = f"s3://{s3_bucket}/vis.zarr"
    k = laplace_latents(rng, 30)
    w = StoreWriter(url, codec, chunk_frames=8, storage_options=opts)
    try:
        w.write("first", k, np.arange(30) / 5)
        # the frames of a second video are written, but its record is not (a crash in between)
        w._ensure_part(k.shape[1:])
        w._grow(60)
        w._arr[30:60] = k
        st = open_store(url, storage_options=opts)
        assert list(st) == ["first"]
        assert verify_store(url, storage_options=opts).ok
    finally:
        w.close()


def test_missing_bucket_and_missing_package_are_clear_errors(s3_server, s3_bucket, codec):
    opts = s3_server.storage_options
    with pytest.raises(BucketNotFoundError, match="bucket does not exist"):
        open_store("s3://no-such-bucket-here/feat.zarr", storage_options=opts)
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
        StoreWriter("s3://no-such-bucket-here/feat.zarr", codec, storage_options=opts)
    with pytest.raises(StoreError, match="not a featcomp store"):  # the bucket exists, the store does not
        open_store(f"s3://{s3_bucket}/nothing.zarr", storage_options=opts)
    with pytest.raises(StorageBackendMissing, match="pip install gcsfs"):
        open_store("gs://bucket/feat.zarr")


@pytest.mark.slow
def test_cli_info_and_verify_with_storage_options(s3_server, s3_bucket, codec, rng):
    videos = _videos(rng, 3)
    url = f"s3://{s3_bucket}/cli.zarr"
    _write(url, codec, videos, storage_options=s3_server.storage_options, compact_on_close=False)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("AWS_")}  # options only
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["PYTHONPATH"] = str(ROOT)
    run = lambda *a: subprocess.run([sys.executable, "-m", "featcomp.cli", *a], capture_output=True, text=True,
                                    env=env, cwd=ROOT, timeout=60)
    r = run("info", url, "--json", *s3_server.cli_options())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["videos"] == 3
    r = run("verify", url, *s3_server.cli_options())
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    r = run("verify", url, "--compact", "--no-live-writers", *s3_server.cli_options())
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
    assert "compacted 1 index files/logs into one" in r.stdout  # the commit log of the (finished) writer
    assert sorted(open_store(url, storage_options=s3_server.storage_options)) == sorted(videos)
    r = run("info", "s3://no-such-bucket-here/x.zarr", *s3_server.cli_options())
    assert r.returncode == 1 and "bucket does not exist" in r.stderr and "Traceback" not in r.stderr


def test_a_local_store_copied_to_s3_verifies_and_reads_the_same(s3_server, s3_bucket, tmp_path, codec, rng):
    videos = _videos(rng, 7)
    _write(tmp_path / "local.zarr", codec, videos)
    fs = _s3fs(s3_server)
    fs.put(str(tmp_path / "local.zarr"), f"{s3_bucket}/copied.zarr", recursive=True)
    url = f"s3://{s3_bucket}/copied.zarr"
    rep = verify_store(url, storage_options=s3_server.storage_options)
    assert rep.ok, rep.problems
    local = open_store(tmp_path / "local.zarr")
    remote = open_store(url, storage_options=s3_server.storage_options)
    assert remote.info()["bytes"] == local.info()["bytes"]
    for vid in videos:
        np.testing.assert_array_equal(remote[vid].features(), local[vid].features())


@pytest.mark.timeout(60)
def test_refused_credentials_are_a_clear_error(tmp_path, monkeypatch):
    """A server that checks credentials (moto with its IAM on) refuses unknown keys: StorageAccessError."""
    from tests.s3 import start_server, stop_server

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = start_server(tmp_path / "moto-auth.log", authenticate=True)
    try:
        opts = {"endpoint_url": server.endpoint, "key": "not-a-key", "secret": "nope",
                "client_kwargs": {"region_name": "us-east-1"}}
        with pytest.raises(StorageAccessError, match="credentials refused"):
            open_store("s3://some-bucket/feat.zarr", storage_options=opts)
        with pytest.raises(StorageAccessError, match="AWS_ACCESS_KEY_ID"):
            featcomp.load_model("s3://some-bucket/model.safetensors", storage_options=opts)
    finally:
        stop_server(server)

"""Corrupt/truncated chunks, tampered tables, concurrent writers, kill -9 mid-write, info/verify CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from featcomp.cli import main as cli_main
from featcomp.errors import StoreError
from featcomp.store import StoreWriter, compact_store, open_store, verify_store

from .conftest import laplace_latents

ROOT = Path(__file__).resolve().parents[2]


def _store(tmp_path, codec, rng, n=4, t=40):
    vids = {}
    with StoreWriter(tmp_path / "s", codec, chunk_frames=8, shard_chunks=4, writer_id="w1") as w:
        for i in range(n):
            k = laplace_latents(rng, t)
            w.write(f"v{i}", k, np.arange(t) / 5)
            vids[f"v{i}"] = k
    return tmp_path / "s", vids


def _shard(path: Path, s: int) -> Path:
    return path / "parts" / "w1" / "c" / str(s) / "0"


def test_corrupt_chunk_names_video_and_chunk(tmp_path, codec, rng):
    path, vids = _store(tmp_path, codec, rng)
    shard = _shard(path, 0)  # frames 0..31: video v0 only
    data = bytearray(shard.read_bytes())
    n = 4
    idx = np.frombuffer(bytes(data[-(16 * n + 4) : -4]), dtype="<u8").reshape(n, 2)
    off, nb = int(idx[1, 0]), int(idx[1, 1])  # chunk 1 = frames 8..15
    data[off + nb // 2] ^= 0x5A
    shard.write_bytes(bytes(data))
    st = open_store(path)
    with pytest.raises(StoreError) as e:
        st["v0"].latents()
    msg = str(e.value)
    assert "v0" in msg and "chunk 1" in msg and str(path) in msg and "c/0/0" in msg
    # a window that avoids the damaged chunk still reads, other videos are intact
    assert np.array_equal(st["v0"].window(16, 40).latents(), vids["v0"][16:40])
    assert np.array_equal(st["v3"].latents(), vids["v3"])
    rep = verify_store(path)
    assert not rep.ok and any("chunk 1" in p for p in rep.problems)


def test_truncated_shard(tmp_path, codec, rng):
    path, _ = _store(tmp_path, codec, rng)
    shard = _shard(path, 1)
    shard.write_bytes(shard.read_bytes()[:-30])
    st = open_store(path)
    with pytest.raises(StoreError, match=r"v1.*(truncated|CRC)"):
        st["v1"].latents()
    shard.unlink()
    with pytest.raises(StoreError, match="missing"):
        open_store(path)["v1"].latents()
    assert cli_main(["verify", str(path)]) == 1


def test_tampered_tables_digest(tmp_path, codec, rng):
    path, _ = _store(tmp_path, codec, rng)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["featcomp"]["codec"]["digest"] = "f" * 64
    (path / "zarr.json").write_text(json.dumps(doc))
    st = open_store(path)
    with pytest.raises(StoreError, match="digest mismatch"):
        st["v0"].latents()
    assert not verify_store(path).ok


def test_info_and_verify_commands(tmp_path, codec, rng, capsys):
    path, vids = _store(tmp_path, codec, rng)
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "videos           4" in out and "bits per frame" in out and "vs float16 latents" in out
    assert cli_main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["videos"] == 4 and info["frames"] == 160
    assert cli_main(["verify", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    (tmp_path / "empty").mkdir()
    assert cli_main(["verify", str(tmp_path / "empty")]) == 1
    assert "not a featcomp store" in capsys.readouterr().err



def test_info_reports_ratio_against_the_backbone_features_the_latents_replace(tmp_path, codec, rng, capsys):
    t, cin = 50, 1280
    card = {"head": {"in_channels": cin, "latent_channels": codec.channels}}
    with StoreWriter(tmp_path / "m", codec, model_card=card) as w:
        w.write("a", laplace_latents(rng, t), np.arange(t) / 5)
    info = open_store(tmp_path / "m").info()
    assert info["backbone_float16_bytes"] == t * cin * 2
    assert info["ratio_vs_backbone_float16"] == pytest.approx(t * cin * 2 / info["data_bytes"])
    assert info["backbone_ratio_on_disk"] == pytest.approx(t * cin * 2 / info["bytes"])
    # a bigger backbone dimension is a bigger ratio: the figure follows the card, not the latents
    assert info["ratio_vs_backbone_float16"] > info["ratio_vs_float16"] * cin / codec.channels * 0.99
    assert cli_main(["info", str(tmp_path / "m")]) == 0
    assert "smaller than float16 backbone features" in capsys.readouterr().out
    # without a head description (e.g. the tests' codec-only stores) there is no such figure
    path, _ = _store(tmp_path, codec, rng)
    assert open_store(path).info()["ratio_vs_backbone_float16"] is None


WRITER = textwrap.dedent(
    """
    import sys, time, numpy as np
    from featcomp.entropy import EntropyCodec
    from featcomp.store import StoreWriter
    path, tag, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    rng = np.random.default_rng(0)
    codec = EntropyCodec.fit(np.rint(rng.laplace(0, 1.2, (4000, 16))).astype(np.int32))
    rng = np.random.default_rng(abs(hash(tag)) % 2**32)
    with StoreWriter(path, codec, chunk_frames=8, shard_chunks=4) as w:
        for i in range(n):
            t = int(rng.integers(5, 60))
            k = np.rint(rng.laplace(0, 1.2, (t, 16))).astype(np.int32)
            w.write(f"{tag}-{i}", k, np.arange(t) / 5.0, metadata={"sum": int(k.sum())})
            print(f"{tag}-{i}", flush=True)
            time.sleep(delay)
    """
)


def _spawn(path, tag, n, delay):
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(n), str(delay)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


@pytest.mark.timeout(120)
def test_concurrent_writers(tmp_path):
    path = tmp_path / "s"
    procs = [_spawn(path, f"p{j}", 25, 0.0) for j in range(3)]
    outs = [p.communicate(timeout=100)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    st = open_store(path)
    assert set(st) == {v for o in outs for v in o} and len(st) == 75
    for vid in st:
        assert int(st[vid].latents().sum()) == st[vid].metadata["sum"]
    rep = verify_store(path, compact=True)
    assert rep.ok and rep.parts == 3
    assert len(open_store(path)) == 75
    assert [n for n in os.listdir(path / "index")].__len__() == 1


@pytest.mark.timeout(120)
def test_kill_9_mid_write_keeps_finished_videos(tmp_path):
    path = tmp_path / "s"
    p = _spawn(path, "k", 10_000, 0.002)
    done = []
    deadline = time.time() + 60
    while len(done) < 30 and time.time() < deadline:
        line = p.stdout.readline()
        if line:
            done.append(line.strip())
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert len(done) >= 30
    st = open_store(path)
    missing = [v for v in done if v not in st]
    assert not missing  # every video whose write() returned survived
    assert len(st) >= len(done)
    for vid in st:
        assert int(st[vid].latents().sum()) == st[vid].metadata["sum"]
    assert verify_store(path).ok
    # the store stays writable; a new writer appends and compaction folds the dead writer's log
    q = _spawn(path, "after", 3, 0.0)
    q.communicate(timeout=60)
    assert q.returncode == 0
    assert compact_store(path) >= 2
    st = open_store(path)
    assert all(v in st for v in done) and "after-2" in st
    assert verify_store(path).ok


def test_unknown_part_codec_is_store_error(tmp_path, codec, rng):
    path, _ = _store(tmp_path, codec, rng)
    meta_path = path / "parts" / "w1" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["codecs"][0]["configuration"]["codecs"][0]["name"] = "featcomp.ans99"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"part 'w1'.*featcomp.ans99"):
        open_store(path)["v0"].latents()


def test_info_separates_fixed_bytes_and_agrees_with_the_job_summary(tmp_path, codec, rng, capsys):
    """A small store is dominated by its fixed bytes (tables, index); info's bits per frame and ratio are
    of the per-frame data, so they agree with what the extraction job's summary reports (payload bits
    estimated from the codec, float16 backbone features), within the per-chunk framing."""
    cin = 1280
    card = {"head": {"in_channels": cin, "latent_channels": codec.channels}}
    payload_bits, frames = 0.0, 0
    with StoreWriter(tmp_path / "m", codec, model_card=card, chunk_frames=64) as w:
        for i, t in enumerate([300, 200, 180]):
            k = laplace_latents(rng, t)
            w.write(f"v{i}", k, np.arange(t) / 5)
            payload_bits += float(codec.estimate_bits(k))  # what featcomp/pipelines/extract.py adds to the summary
            frames += t
    info = open_store(tmp_path / "m").info()
    assert info["fixed_bytes"] == info["bytes"] - info["data_bytes"]
    assert info["fixed_bytes"] == info["header_bytes"] + info["index_bytes"] + info["shard_index_bytes"] + info["other_bytes"]
    assert info["shard_index_bytes"] == 32 * 16 + 4  # one shard file of 32 chunk slots
    assert info["header_bytes"] > 0 and info["index_bytes"] > 0
    job_bits_per_frame = payload_bits / frames
    job_ratio = frames * cin * 2 * 8 / payload_bits
    # chunk framing and the shard index are a few percent at most of this tiny 16-channel payload
    assert job_bits_per_frame <= info["bits_per_frame"] <= 1.06 * job_bits_per_frame, (info, job_bits_per_frame)
    assert 0.94 * job_ratio <= info["ratio_vs_backbone_float16"] <= job_ratio
    assert info["total_bits_per_frame"] > info["bits_per_frame"]
    assert cli_main(["info", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"bits per frame   {info['bits_per_frame']:,.1f} of per-frame data" in out
    assert f"{info['ratio_vs_backbone_float16']:.1f}x smaller than float16 backbone features" in out
    assert f"fixed {info['fixed_bytes']:,}" in out


def test_compaction_while_a_writer_creates_its_log_loses_nothing(tmp_path, monkeypatch):
    """Issue 14: a compaction that ran between a writer creating its commit log and locking it folded
    the empty log and deleted it; the writer's records then went into an unlinked file and its video
    vanished. The log now appears under its name only once locked."""
    import fcntl

    from featcomp.store import StoreWriter, compact_store, open_store

    path = tmp_path / "s.zarr"
    with StoreWriter(path, raw=True) as w:  # an earlier writer: a store with something to compact
        w.write("first", np.ones((3, 4), np.float32), np.arange(3) / 5.0)
    real_flock = fcntl.flock
    ran, inside = [], []

    def flock_then_compact(fd, op):
        # the first lock the new writer takes (on its new log): run a whole compaction right before it
        if not ran and not inside and op & fcntl.LOCK_EX:
            inside.append(True)
            try:
                ran.append(compact_store(path))
            finally:
                inside.clear()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_then_compact)
    with StoreWriter(path, raw=True) as w:
        w.write("second", np.full((2, 4), 2.0, np.float32), np.arange(2) / 5.0)
        monkeypatch.setattr(fcntl, "flock", real_flock)
        assert ran, "the compaction did not run while the log was being created"
        assert set(open_store(path)) == {"first", "second"}  # visible while the writer is still open
    st = open_store(path)
    assert set(st) == {"first", "second"}
    np.testing.assert_array_equal(st["second"].features(), np.full((2, 4), 2.0, np.float32))


def test_verify_names_the_videos_of_a_deleted_index_file(tmp_path):
    """Issue 14: deleting an index file made its videos vanish with verify OK. A closed writer's table
    (videos/<writer>/id, written) still lists them, so verify now names each lost video."""
    from featcomp.store import StoreWriter, open_store, verify_store

    path = tmp_path / "s.zarr"
    for names in (("a", "b"), ("c",)):
        with StoreWriter(path, raw=True) as w:
            for n in names:
                w.write(n, np.ones((3, 4), np.float32), np.arange(3) / 5.0)
    assert verify_store(path).ok and set(open_store(path)) == {"a", "b", "c"}
    st = open_store(path)
    writer_of_a = st.index.parts[int(st.index.part[st.index.ids.index("a")])]
    files = [f for f in os.listdir(path / "index") if writer_of_a in f]
    assert files, os.listdir(path / "index")
    for f in files:
        os.remove(path / "index" / f)
    assert set(open_store(path)) == {"c"}
    rep = verify_store(path)
    assert not rep.ok
    lost = {i["video"] for i in rep.issues}
    assert lost == {"a", "b"}, rep.problems
    assert all("re-run the job" in p for p in rep.problems)

"""Issue 14: a store written by the Ray job, damaged (its index file and one video's coded chunk), repaired
with `featcomp repair`, then the job resumed: it ends with every video, and `featcomp verify` is OK."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp.pipelines.config import ExtractConfig
from featcomp.pipelines.extract import run_extract
from tests.pipelines.conftest import BAD, GOOD

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _cfg() -> ExtractConfig:
    cfg = ExtractConfig(progress=False)
    # 4 frames per chunk, so that a chunk lies inside one video
    return cfg.with_overrides(inference={"batch_size": 8}, decode={"timeout_s": 30.0}, output={"chunk_frames": 4})


@pytest.mark.timeout(420)
def test_a_damaged_store_is_repaired_and_the_resumed_job_ends_with_every_video(ray_local, clip_dir, tiny_model,
                                                                              tmp_path, capsys):
    import featcomp
    from featcomp.cli import main as cli_main

    store = tmp_path / "feat.zarr"
    first = run_extract([str(clip_dir)], str(store), str(tiny_model), config=_cfg())
    assert (first.done, first.failed) == (len(GOOD), len(BAD))
    st = featcomp.open_store(store)
    want = {vid: st[vid].latents() for vid in GOOD}
    times = {vid: st[vid].timestamps for vid in GOOD}
    (ix,) = (store / "index").iterdir()  # the job's writer closed: one index file (version 5)
    assert ix.read_bytes()[6] == 5

    # damage 1: a coded chunk that lies inside the longest video
    victim = "sub/deep/e.mp4"
    row = st.index.ids.index(victim)
    part = st._part(int(st.index.part[row]))
    start, n = int(st.index.start[row]), int(st.index.length[row])
    j = -(-start // part.chunk_frames)  # the first chunk that starts inside the video
    assert (j + 1) * part.chunk_frames <= start + n
    shard = store / part.shard_key(j // part.chunks_per_shard)
    raw = bytearray(shard.read_bytes())
    idx = np.frombuffer(bytes(raw[-(16 * part.chunks_per_shard + 4) : -4]), "<u8").reshape(-1, 2)
    off, nb = (int(x) for x in idx[j % part.chunks_per_shard])
    raw[off + nb // 2] ^= 0x5A
    shard.write_bytes(bytes(raw))
    # damage 2: the index file's columns
    data = bytearray(ix.read_bytes())
    data[-5] ^= 0xFF
    ix.write_bytes(bytes(data))

    st = featcomp.open_store(store)
    assert len(st) == 0 and sorted(st.lost_videos) == sorted(GOOD)  # the damaged file still names its videos
    assert not featcomp.verify_store(store).ok

    assert cli_main(["repair", "--json", str(store)]) == 1  # exit status 1: a video was lost
    import json

    rep = json.loads(capsys.readouterr().out)
    assert list(rep["lost_videos"]) == [victim]
    assert sorted(rep["recovered"]) == sorted(set(GOOD) - {victim})
    after = featcomp.verify_store(store)
    assert after.ok and list(after.lost) == [victim]
    for vid in set(GOOD) - {victim}:
        np.testing.assert_array_equal(featcomp.open_store(store)[vid].latents(), want[vid])

    again = run_extract([str(clip_dir)], str(store), str(tiny_model), config=_cfg())
    assert (again.done, again.skipped, again.failed) == (1, len(GOOD) - 1, len(BAD))
    st = featcomp.open_store(store)
    assert sorted(st) == sorted(GOOD)
    assert len(st.index.ids) == len(set(st.index.ids))
    for vid in GOOD:
        np.testing.assert_array_equal(st[vid].latents(), want[vid])
        np.testing.assert_array_equal(st[vid].timestamps, times[vid])
    final = featcomp.verify_store(store)
    assert final.ok and not final.lost, final.problems
    assert {f["id"] for f in st.failures()} == set(BAD)

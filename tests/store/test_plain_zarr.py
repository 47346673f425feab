"""A plain ``zarr.open_group`` user finds each video's frames and timestamps (docs/format.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from featcomp.store import StoreWriter, open_store

from .conftest import FakeModel, laplace_latents

# What docs/format.md tells a plain zarr user to do; run in a fresh interpreter that never imports
# featcomp by name (zarr finds the featcomp.ans codec through its entry point when featcomp is installed).
PLAIN = r"""
import json, sys
import numpy as np
import zarr

root = zarr.open_group(sys.argv[1], mode="r")
deq = root.attrs["featcomp"]["dequantization"]
offsets = np.asarray(deq["offsets"], np.float32)
scale = np.asarray(deq["scale"], np.float32)
out = {}
for name, part in root["parts"].arrays():
    table = root[part.attrs["featcomp"]["videos"]]          # the group videos/<writer>
    ids, span, time = table["id"][:], table["span"][:], table["time"][:]
    for j, vid in enumerate(ids):
        s, n = span[j]
        k = part[s:s + n]
        t0, dt = time[j]
        if np.isnan(t0):
            t = root[table.attrs["featcomp"]["times"]][s:s + n]
        else:
            t = t0 + np.arange(n) * dt
        x = (k + offsets) * scale
        out[str(vid)] = {"k": k.tolist(), "x": x.tolist(), "t": t.tolist()}
print(json.dumps(out))
"""


@pytest.mark.timeout(120)
def test_plain_zarr_user_finds_frames_timestamps_and_dequantizes(tmp_path, codec, rng):
    scale = np.linspace(0.5, 2.0, codec.channels).astype(np.float32)
    irregular = np.array([0.0, 0.04, 0.1, 0.5, 0.52, 1.7])
    vids = {
        "a.mp4": (laplace_latents(rng, 30), np.arange(30) / 5),        # 5 fps: ticks
        "dir/b.mp4": (laplace_latents(rng, 6), irregular),              # irregular: times/<part>
        "c.mp4": (laplace_latents(rng, 9), 0.3 + np.arange(9) * 0.1),  # regular floats
    }
    path = tmp_path / "s"
    with StoreWriter(path, FakeModel(codec, scale), chunk_frames=8) as w:
        for v, (k, t) in vids.items():
            w.write(v, k, t)
    with StoreWriter(path, FakeModel(codec, scale), chunk_frames=8) as w:  # a second writer, a second part
        k = laplace_latents(rng, 12)
        w.write("d.mp4", k, np.arange(12) / 25)
        vids["d.mp4"] = (k, np.arange(12) / 25)
    r = subprocess.run([sys.executable, "-c", PLAIN, str(path)], capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert sorted(got) == sorted(vids)
    st = open_store(path)
    for v, (k, t) in vids.items():
        np.testing.assert_array_equal(np.asarray(got[v]["k"]), k)
        np.testing.assert_allclose(np.asarray(got[v]["t"]), t, rtol=0, atol=1e-9)
        # the documented dequantization is what featcomp's reader returns
        np.testing.assert_allclose(np.asarray(got[v]["x"], np.float32), st[v].features(), rtol=1e-6, atol=1e-6)

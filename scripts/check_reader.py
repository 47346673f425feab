"""Read stores with the plain reader (`pip install featcomp`, no extras) and check nothing heavy is imported.

Usage: python scripts/check_reader.py STORE [STORE ...]

Opens each store, reads every video's features and timestamps, verifies it and prints its info; then
fails if torch, torchvision, decord, ray, av or featcomp.pipelines (the Ray jobs) were imported. `make reader-check` runs it in a fresh
virtual environment holding only `pip install .` (what CI does, .ci/run).
"""

import sys

if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    print(__doc__)
    sys.exit(0 if len(sys.argv) > 1 else 2)
import featcomp  # noqa: E402

for p in sys.argv[1:]:
    st = featcomp.open_store(p)
    n = 0
    for v in st:
        x = st[v].features(); t = st[v].timestamps
        assert x.shape[0] == t.shape[0] > 0
        n += x.shape[0]
    rep = featcomp.verify_store(p)
    assert rep.ok, p
    info = featcomp.store_info(p)
    print(p, len(st), "videos", n, "frames", f"{info['bits_per_frame']:.1f} bits/frame")
bad = [m for m in ("torch", "torchvision", "decord", "ray", "av", "featcomp.pipelines") if m in sys.modules]
assert not bad, bad
print("reader OK, imported none of torch/torchvision/decord/ray/av/featcomp.pipelines")

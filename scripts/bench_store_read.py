"""Benchmark the two chunk read paths of a store side by side: featcomp's shard reader vs zarr's API.

    .venv/bin/python scripts/bench_store_read.py [--videos 200] [--channels 128] [--no-write]

One run, the same stores on local disk, the two paths interleaved (best of N; the machine may be
shared): ``open_store(read_path="hand")`` (featcomp parses the shard index itself, keeps the edge
chunks that neighbouring videos share) against ``open_store(read_path="zarr")`` (``zarr.open_array``
+ slicing: zarr's sharding codec and batched codec pipeline decode ``featcomp.ans`` through the
registered codec; every whole video is still proven by its CRC). Rows: whole-video reads in store
order and in shuffled order, random 16-frame windows (the chunk source alone, no cache), and one
epoch over a :class:`FeatureDataset` (shuffled), for a coded store and a raw float16 store; then the
coded store on a local S3 API server (moto; ``--no-object-storage`` skips it). Writes
the "store_read" section of docs/benchmarks.md (the decision it supports: docs/decisions.md, "store
reads through zarr").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.evals.report import markdown_table, write_section  # noqa: E402


def interleaved(fns: dict, repeat: int) -> dict:
    """Best-of-``repeat`` seconds of each function, the functions taking turns."""
    best = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def object_storage_rows(work: Path, ids: list[str], repeat: int) -> list[tuple]:
    """The coded store copied to a local S3 API server (moto, tests/s3.py): whole videos (first read
    of each, a fresh store per pass) and random 16-frame windows of proven videos, both paths."""
    import fsspec

    from featcomp.store import open_store
    from tests.s3 import start_server, stop_server

    server = start_server(work / "moto.log")
    rows = []
    try:
        server.make_bucket("bench")
        opts = server.storage_options
        url = "s3://bench/coded"
        fs = fsspec.filesystem("s3", **opts)
        fs.put(str(work / "coded"), "bench/coded", recursive=True)
        frames = sum(open_store(url, storage_options=opts)[v].frames for v in ids)

        def whole(mode):
            s = open_store(url, storage_options=opts, read_path=mode)
            for vid in ids:
                s[vid].latents()

        t = interleaved({m: (lambda m=m: whole(m)) for m in ("hand", "zarr")}, max(2, repeat // 2))
        rows.append(("coded, S3 API server", f"whole videos, store order ({len(ids)})",
                     f"{frames / t['hand'] / 1e3:.1f}k frames/s", f"{frames / t['zarr'] / 1e3:.1f}k frames/s",
                     t["zarr"] / t["hand"]))
        print(rows[-1], flush=True)
        r = np.random.default_rng(4)
        stores = {m: open_store(url, storage_options=opts, read_path=m) for m in ("hand", "zarr")}
        for m, s in stores.items():
            for vid in ids:
                s[vid].latents()  # proven: the zarr path then serves windows too
        lat = {m: [] for m in stores}
        for j in r.integers(0, len(ids), 60):
            a = int(r.integers(0, stores["hand"][ids[j]].frames - 16))
            for m, s in stores.items():
                s._chunk_cache.max_items = 0
                t0 = time.perf_counter()
                s[ids[j]].window(a, a + 16).latents()
                lat[m].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) * 1e3 for m, v in lat.items()}
        rows.append(("coded, S3 API server", "16-frame windows of read videos (median)", f"{med['hand']:.2f} ms",
                     f"{med['zarr']:.2f} ms", med["zarr"] / med["hand"]))
        print(rows[-1], flush=True)
    finally:
        stop_server(server)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--float-dim", type=int, default=256)
    ap.add_argument("--min-frames", type=int, default=100)
    ap.add_argument("--max-frames", type=int, default=300)
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-write", action="store_true", help="print, do not update docs/benchmarks.md")
    ap.add_argument("--no-object-storage", action="store_true", help="skip the rows on a local S3 API server")
    ap.add_argument("--s3-videos", type=int, default=40, help="videos of the coded store read on the S3 server")
    args = ap.parse_args()

    from featcomp.entropy import EntropyCodec
    from featcomp.store import StoreWriter, open_store
    from featcomp.data import FeatureDataset

    rng = np.random.default_rng(0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="featcomp-bench-read-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scales = rng.uniform(0.3, 2.0, args.channels)
    vids = []
    for i in range(args.videos):
        t = int(rng.integers(args.min_frames, args.max_frames))
        k = np.rint(rng.laplace(0, 1, (t, args.channels)) * scales).astype(np.int32)
        f = np.maximum(rng.normal(0, 1, (t, args.float_dim)), 0).astype(np.float32)
        vids.append((f"videos/clip-{i:06d}.mp4", k, f, np.arange(t) / 5.0))
    codec = EntropyCodec.fit(np.concatenate([v[1] for v in vids[:20]]))
    with StoreWriter(work / "coded", codec, writer_id="bench") as w:
        for vid, k, _f, ts in vids:
            w.write(vid, k, ts)
    with StoreWriter(work / "f16", raw=True, writer_id="bench") as w:
        for vid, _k, f, ts in vids:
            w.write(vid, f, ts)
    ids = [v[0] for v in vids]
    frames = sum(len(v[1]) for v in vids)
    shuffled = [ids[j] for j in np.random.default_rng(1).permutation(len(ids))]
    labels = {v: i % 10 for i, v in enumerate(ids)}
    print(f"{len(ids)} videos, {frames} frames, latents {args.channels}, floats {args.float_dim}", flush=True)

    rows = []
    for name, path, get in (("coded", work / "coded", lambda v: v.latents()),
                            ("raw float16", work / "f16", lambda v: v.stored())):
        # the same arrays from both paths (the benchmark measures equal work)
        h, z = open_store(path, read_path="hand"), open_store(path, read_path="zarr")
        for vid in ids[:20]:
            assert np.array_equal(get(h[vid]), get(z[vid]))

        def whole(mode, order, path=path, get=get):
            s = open_store(path, read_path=mode)
            for vid in order:
                get(s[vid])

        for label, order in (("whole videos, store order", ids), ("whole videos, shuffled", shuffled)):
            t = interleaved({m: (lambda m=m: whole(m, order)) for m in ("hand", "zarr")}, args.repeat)
            rows.append((name, label, f"{frames / t['hand'] / 1e3:.0f}k frames/s",
                         f"{frames / t['zarr'] / 1e3:.0f}k frames/s", t["zarr"] / t["hand"]))
            print(rows[-1], flush=True)

        # random 16-frame windows: the chunk source alone (no chunk cache, no CRC proof)
        st = open_store(path, read_path="hand")
        st._chunk_cache.max_items = 0
        ix = st.index
        r = np.random.default_rng(2)
        picks = []
        for j in r.integers(0, len(ids), args.windows):
            s0, n = int(ix.start[j]), int(ix.length[j])
            a = s0 + int(r.integers(0, n - 16))
            picks.append((int(ix.part[j]), a))
        parts = {p: st._part(p) for p, _ in picks}
        srcs = {"hand": lambda p, a: parts[p].read(a, a + 16, "bench"),
                "zarr": lambda p, a: parts[p].zarr_chunks().read(a, a + 16, "bench")}
        for p, a in picks[:20]:
            assert np.array_equal(srcs["hand"](p, a), srcs["zarr"](p, a))
        lat = {m: [] for m in srcs}
        for p, a in picks:
            for m, fn in srcs.items():
                t0 = time.perf_counter()
                fn(p, a)
                lat[m].append(time.perf_counter() - t0)
        med = {m: statistics.median(v) * 1e3 for m, v in lat.items()}
        rows.append((name, "random 16-frame windows (median)", f"{med['hand']:.2f} ms", f"{med['zarr']:.2f} ms",
                     med["zarr"] / med["hand"]))
        print(rows[-1], flush=True)

        # one epoch over a FeatureDataset (whole videos, shuffled order), in process
        def epoch(mode, path=path):
            ds = FeatureDataset(open_store(path, read_path=mode), labels, latents=(name == "coded"))
            for i in np.random.default_rng(3).permutation(len(ds)):
                ds[int(i)]

        t = interleaved({m: (lambda m=m: epoch(m)) for m in ("hand", "zarr")}, max(2, args.repeat // 2))
        rows.append((name, "FeatureDataset epoch, shuffled", f"{t['hand']:.2f} s", f"{t['zarr']:.2f} s",
                     t["zarr"] / t["hand"]))
        print(rows[-1], flush=True)

    if not args.no_object_storage:
        rows += object_storage_rows(work, ids[: args.s3_videos], args.repeat)

    table = markdown_table(["store", "read", "hand path", "zarr path", "zarr / hand time"],
                           [[a, b, c, d, f"{e:.2f}x"] for a, b, c, d, e in rows])
    body = (
        f"`scripts/bench_store_read.py --videos {args.videos}` "
        f"({frames} frames; coded: {args.channels} latent channels, factorized codec, default chunking; raw: "
        f"float16 of {args.float_dim} dims), local disk, both paths interleaved, best of {args.repeat}. "
        "*hand*: featcomp's shard reader (`open_store(read_path=\"hand\")`); *zarr*: `zarr.open_array` + "
        "slicing, every whole video then proven by its CRC as on the hand path (`read_path=\"zarr\"`). "
        "Windows: the chunk source alone, no chunk cache. *S3 API server*: the coded store copied to a local moto "
        "server (the first videos; sealed shards are fetched whole and cached by the hand path, zarr issues "
        "ranged GETs per shard index and chunk). Ratio > 1: zarr is slower. The decision these "
        "numbers support is in docs/decisions.md (\"store reads through zarr\").\n\n" + table + "\n"
    )
    print(table)
    if not args.no_write:
        write_section("store_read", "## Store reads: featcomp's shard reader vs zarr's API\n\n" + body)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

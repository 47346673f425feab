"""Decode throughput of the temporal conditional codec vs the factorized codec (one core, numpy).

    .venv/bin/python scripts/bench_temporal.py [--baseline-rev eff6f15] [--repeat 5]

Codecs: a TemporalCodec with the default ``TemporalPrior.freeze`` family (64 log-spaced Laplace scales
0.11..48, Q=4, radius 48, 16-bit tables) and an AR(0.9) integer context; an EntropyCodec fitted to
the same latents. Data: AR(1) latents (rho 0.9, unit innovations), 100-frame chunks of 64 latents
(pooled) and of 64 x 7 x 7 (spatial). Reported: frames/s decoding one chunk at a time
(``decompress_symbols``) and 16 chunks of one video in lockstep (``decompress_chunks``, what a store
read of several chunks uses), and the same for the implementation at ``--baseline-rev`` (loaded from
git, one chunk at a time) for a before/after. Every decode is checked against the coded latents.
Writes the "temporal" section of docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: BLAS threads only add contention here
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, machine, markdown_table, today, write_section  # noqa: E402

from featcomp.entropy import EntropyCodec  # noqa: E402
from featcomp.entropy.indexed import TableFamily, scale_grid  # noqa: E402
from featcomp.entropy.temporal import TemporalCodec  # noqa: E402

C, T, F = 64, 100, 12


def make_codec(cls=TemporalCodec) -> TemporalCodec:
    rng = np.random.default_rng(0)
    fam = TableFamily.build(scale_grid(0.11, 48.0, 64), Q=4, radius=48)
    w_loc = np.round(0.9 * np.eye(C) * 2**F).astype(np.int32) + rng.integers(-40, 40, (C, C)).astype(np.int32)
    w_scale = (np.eye(C) * 300).astype(np.int32)
    u1 = int(np.log(1 / 0.11) / (np.log(48 / 0.11) / 63))  # index of scale 1
    return cls(np.zeros(C, np.float32), fam, w_loc, np.zeros(C, np.int64), w_scale, np.full(C, u1 << F, np.int64),
               np.zeros(C, np.int64), np.full(C, u1 + 10, np.int32), frac_bits=F)


def chunks(rng, trailing: tuple[int, ...], n: int) -> list[np.ndarray]:
    y = np.zeros((n * T, C) + trailing)
    for t in range(1, n * T):
        y[t] = 0.9 * y[t - 1] + rng.normal(0, 1.0, (C,) + trailing)
    k = np.round(y).astype(np.int32)
    return [k[i * T : (i + 1) * T] for i in range(n)]


def rate(fn, frames: int, repeat: int) -> float:
    fn()  # warm up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return frames / best


def load_baseline(rev: str):
    """The TemporalCodec class of featcomp/entropy/temporal.py at git revision ``rev`` (or None)."""
    try:
        src = subprocess.run(["git", "show", f"{rev}:featcomp/entropy/temporal.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    path = Path(tempfile.mkdtemp()) / "temporal_baseline.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("temporal_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["temporal_baseline"] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod.TemporalCodec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline-rev", default="eff6f15")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunks", type=int, default=16)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    codec = make_codec()
    old_cls = load_baseline(args.baseline_rev)
    old = make_codec(old_cls) if old_cls is not None else None
    rows = []
    for label, trailing in (("100 x 64", ()), ("100 x 64 x 7 x 7", (7, 7))):
        ks = chunks(rng, trailing, args.chunks)
        fac = EntropyCodec.fit(np.concatenate(ks))
        st = [codec.compress_symbols(k) for k in ks]
        sf = [fac.compress_symbols(k) for k in ks]
        for k, s in zip(ks, codec.decompress_chunks(st)):
            assert np.array_equal(k, s)
        n = len(ks) * T
        r_fac = rate(lambda: [fac.decompress_symbols(s) for s in sf], n, args.repeat)
        r_one = rate(lambda: [codec.decompress_symbols(s) for s in st], n, args.repeat)
        r_many = rate(lambda: codec.decompress_chunks(st), n, args.repeat)
        r_old = float("nan")
        if old is not None:
            assert old.digest == codec.digest and old.compress_symbols(ks[0]) == st[0]
            assert np.array_equal(old.decompress_symbols(st[0]), ks[0])
            r_old = rate(lambda: [old.decompress_symbols(s) for s in st], n, args.repeat)
        bits_t = 8 * sum(map(len, st)) / n
        bits_f = 8 * sum(map(len, sf)) / n
        rows.append([label, f"{bits_f:,.0f} / {bits_t:,.0f}", f"{r_fac:,.0f}", f"{r_old:,.0f} ({r_old / r_fac:.2f}x)",
                     f"{r_one:,.0f} ({r_one / r_fac:.2f}x)", f"{r_many:,.0f} ({r_many / r_fac:.2f}x)"])
        print(rows[-1], flush=True)
    table = markdown_table(
        ["chunk (frames x latents)", "bits/frame factorized / temporal", "factorized frames/s",
         f"temporal before ({args.baseline_rev}), one chunk at a time", "temporal now, one chunk at a time",
         f"temporal now, {args.chunks} chunks in lockstep"], rows)
    write_section("temporal", f"""Temporal vs factorized decode, {today()}, {machine()} (scripts/bench_temporal.py;
one thread, best of {args.repeat}; {args.chunks} chunks of AR(1) latents, ratios are vs factorized decode
of the same chunks). The temporal stream format is unchanged (golden fixture decodes and re-encodes
bit-exactly); the speed-up comes from exact float64 BLAS context sums, precomputed fresh rows, fewer
numpy temporaries and lockstep decoding of independent chunks.

{table}
""")
    print(table)


if __name__ == "__main__":
    main()

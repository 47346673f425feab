#!/usr/bin/env python
"""Rate control + temporal coding through the library, in stored clip bytes (issue 18 item 6).

``scripts/bench_rc_temporal.py`` measured what stacking per-frame rate control and temporal coding could
save, with its own fitting code. This script measures what the library now does: the same rate-control
model (EfficientNet-Lite1 teacher, teacher-SVD ``--rc-latent``-d step ladder, shared tables refitted under
the rule, target 95%), leave one video out over the bundled clips, and

1. ``factorized``: the ladder model as ``Extractor(..., rate_control=...)`` codes a clip today;
2. ``temporal``: the same head with ``featcomp.train.fit_temporal_codec(head, sequences, rate_control=...,
   teacher=..., val=...)`` (what ``featcomp refit-temporal --keep-top1`` runs): the temporal codec fitted on
   the training clips' rate-controlled 5 fps sequences (first 80% of each clip; the last 20% is the
   validation that stops the fit), then the same ``Extractor`` call.

Each held-out clip is coded as its 5 fps sequences (every sampling phase, one clip each). Bits/frame are
``8 * len(clip.to_bytes())`` over the frames: clip header, timestamps, level fields and chunk table
included. Top-1 agreement is measured on the decoded clip (``decode_clip``, the model alone) against the
teacher on the original features. Writes docs/benchmarks.md (section ``rc_temporal_lib``). Needs the clips
and Lite1 weights (``scripts/fetch_data.py --only weights clips --data DIR``); features cached under ``--cache``.

Usage::

    .venv/bin/python scripts/bench_rc_temporal_lib.py --data /tmp/rct_data --cache /tmp/rct_cache
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.bench_rc_temporal import add_common_arguments, five_fps_sequences, quick_setup, rc_head  # noqa: E402
from scripts.evals.report import markdown_table, write_section  # noqa: E402
from scripts.evals.representations import RC_LADDER  # noqa: E402
from scripts.generality_eval import BACKBONES, build, clip_features  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench_rc_temporal_lib {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def code_clips(model_path: Path, bb, rc, seqs: list[np.ndarray]) -> dict:
    """Code every sequence as one clip with the library; stored bits and decoded top-1 agreement."""
    from featcomp.model import Extractor, decode_clip, load_model

    model = load_model(model_path)
    ex = Extractor(model, backbone=bb, rate_control=rc)
    bits = frames = agree = 0
    for s in seqs:
        clip = ex.compress_features(torch.from_numpy(s), np.arange(len(s)) / 5.0)
        data = clip.to_bytes()
        y = decode_clip(model, data)
        with torch.no_grad():
            ref = bb.classify(torch.from_numpy(s)).argmax(1)
            got = bb.classify(model.head.synthesize(y)).argmax(1)
        bits += 8 * len(data)
        frames += len(s)
        agree += int((ref == got).sum())
    return {"bits_per_frame": bits / frames, "top1": agree / frames, "frames": frames}


def run(args) -> dict:
    from featcomp.model import save_model
    from featcomp.train import fit_temporal_codec

    feats = clip_features(args.backbone, args)
    _, bb = build(args.backbone, args.video_size or BACKBONES[args.backbone]["video_size"])
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="rct_lib_"))
    for test in args.folds or args.clips:
        t0 = time.time()
        train = [c for c in args.clips if c != test]
        xtr = np.concatenate([feats[c]["x"][:int(feats[c]["cut"])] for c in train] + [feats[c]["x_aug"] for c in train])
        d = min(args.rc_latent, xtr.shape[1])
        ladder, rc = rc_head(xtr, bb, d, args.target)
        tr = [s for c in train for s in five_fps_sequences(feats[c]["x"][:int(feats[c]["cut"])], float(feats[c]["fps"]))]
        va = [s for c in train for s in five_fps_sequences(feats[c]["x"][int(feats[c]["cut"]):], float(feats[c]["fps"]))]
        hist: list = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            temporal = fit_temporal_codec(ladder, tr, rate_control=rc, teacher=bb.classify, val=va, steps=args.steps,
                                          eval_every=args.eval_every, window=args.window, history=hist)
        te = five_fps_sequences(feats[test]["x"], float(feats[test]["fps"]))
        r = {"train_seqs": len(tr), "val_seqs": len(va), "best_step": min(hist, key=lambda h: h[1])[0] if hist else None}
        for name, head in (("factorized", ladder), ("temporal", temporal)):
            p = save_model(tmp / f"{test}_{name}.safetensors", head, sampling={"mode": "fps", "fps": 5.0})
            r[name] = code_clips(p, bb, rc, te)
        results[test] = r
        log(f"[{test}] {json.dumps(r)} [{time.time() - t0:.0f}s]")
    return results


def report(results: dict, args) -> str:
    rows = []
    for v, r in results.items():
        f, t = r["factorized"], r["temporal"]
        rows.append([v, f["frames"], f"{100 * f['top1']:.1f}%", f"{100 * t['top1']:.1f}%", f"{f['bits_per_frame']:,.1f}",
                     f"{t['bits_per_frame']:,.1f}", f"{100 * (1 - t['bits_per_frame'] / f['bits_per_frame']):+.1f}%",
                     r["best_step"]])
    worst = max(results, key=lambda v: results[v]["factorized"]["bits_per_frame"])
    w = results[worst]["temporal"]
    met = w["bits_per_frame"] <= 500 and w["top1"] >= 0.95
    return "\n".join([
        f"Rate control + temporal coding through the library (scripts/bench_rc_temporal_lib.py; issue 18 item 6). "
        f"{BACKBONES[args.backbone]['label']} as the teacher, teacher-SVD {args.rc_latent}-d step ladder "
        f"({len(RC_LADDER)} levels), target {100 * args.target:g}%, leave one video out; each held-out clip coded as "
        f"its 5 fps sequences, one `CompressedClip` each, by `Extractor(..., rate_control=...)`. *temporal*: "
        f"`fit_temporal_codec(ladder, sequences, rate_control=..., teacher=..., val=...)` on the training clips' "
        f"rate-controlled 5 fps sequences (at most {args.steps} steps, window {args.window}, early-stopped on their "
        f"last 20% every {args.eval_every} steps). Bits/frame: the clips' bytes (header, timestamps, level fields, "
        "chunk table included); top-1: decoded clip vs the teacher on the original features.",
        "",
        markdown_table(["held-out video", "frames", "top-1, factorized", "top-1, temporal",
                        "factorized bits/frame", "temporal bits/frame", "saving", "fit's best step"], rows),
        "",
        f"Worst video (most bits, factorized): {worst}: temporal {w['bits_per_frame']:,.1f} bits/frame at "
        f"{100 * w['top1']:.1f}% -> the <= 500 target is **{'met' if met else 'not met'}**.",
    ])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--steps", type=int, default=1000, help="most Adam steps of the temporal fit (early-stopped)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    p.add_argument("--quick", action="store_true", help="smoke mode: synthetic clips (made under --data if missing), "
                   "the tiny random backbone with a classifier, 16 latents, 40 steps; never writes the docs")
    args = p.parse_args(argv)
    if args.quick:
        quick_setup(args, 40)
        args.eval_every = min(args.eval_every, 20)
    args.cache = args.cache or args.data / "cache"
    torch.set_num_threads(args.threads)
    res = run(args)
    (args.cache / "rc_temporal_lib_results.json").write_text(json.dumps(res, indent=1))
    body = report(res, args)
    print(body)
    if not args.no_write:
        write_section("rc_temporal_lib", body)


if __name__ == "__main__":
    main()

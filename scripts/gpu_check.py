#!/usr/bin/env python3
"""featcomp on one CUDA GPU: correctness (CPU vs GPU latents, integer contexts, bitstreams, autocast
deviations) and speed (backbone-only vs extract_features vs Extractor vs the Ray job, video decode,
peak memory), in one time-budgeted run that never crashes as a whole.

On the GPU machine (no network; the wheels it lacks come from ``scripts/gpu_wheels.sh``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_check.py --out $OUT

writes ``$OUT/gpu_results.json`` (every number, and every error with its traceback),
``$OUT/gpu_report.md`` (the tables) and ``$OUT/pytest_gpu.log`` (the ``-m gpu`` tests). Back on the
development machine::

    python scripts/gpu_check.py --write-doc path/to/gpu_results.json

replaces the ``gpu`` section of docs/benchmarks.md with those tables, stamped with the GPU machine's
description and the date of the run (not this machine's). ``--dry-run`` runs every part that needs
no CUDA at tiny sizes on the CPU (CUDA rows are recorded as ``skipped: no CUDA``); a test runs it.

Each section runs in its own ``try``; an error is recorded in the results (with the traceback) and
the next section runs. The results file is rewritten after every section, so a run killed by an
outer timeout still leaves what it measured. ``--time-budget`` (seconds) bounds the whole run: speed
rows that no longer fit are skipped with a note. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTION = "gpu"
SCHEMA = 1


# ------------------------------------------------------------------------------------------------
# budget and results


class Budget:
    """Seconds left of ``total`` since construction."""

    def __init__(self, total: float) -> None:
        self.t0 = time.perf_counter()
        self.total = float(total)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.total - self.elapsed()

    def until(self, fraction: float) -> float:
        """Seconds left until ``fraction`` of the budget is spent (negative when past)."""
        return self.total * fraction - self.elapsed()


class Results:
    """The results document, saved (atomically) after every section."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.doc: dict[str, Any] = {"schema": SCHEMA, **meta, "sections": {}}

    @contextlib.contextmanager
    def section(self, name: str):
        rec: dict[str, Any] = {"status": "running"}
        self.doc["sections"][name] = rec
        t0 = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            yield rec
            if rec.get("status") == "running":
                rec["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - recorded, the next section runs
            rec["status"] = "error"
            rec["error"] = f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc()
            print(f"[gpu_check] {name}: ERROR {rec['error']}", flush=True)
        finally:
            rec["seconds"] = round(time.perf_counter() - t0, 2)
            print(f"[gpu_check] {name}: {rec['status']} in {rec['seconds']} s", flush=True)
            self.save()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_results.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=1, default=_json_default))
        os.replace(tmp, self.out / "gpu_results.json")


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


# ------------------------------------------------------------------------------------------------
# sizes


def sizes(dry: bool) -> dict[str, Any]:
    """What each part runs on: tiny for ``--dry-run``, real for the GPU."""
    if dry:
        return dict(clip_w=160, clip_h=96, clip_frames=32, clip_fps=25, input_size=64, decode_short=72,
                    corr_frames=12, corr_backbone="resnet18", head_latent=8, head_epochs=1,
                    speed_backbones=["resnet18"], speed_batches=[4, 8], speed_trial_s=0.05, speed_trials=2,
                    e2e_rows=[("resnet18", "bf16", True, 8)],
                    ray_copies=2, ray_batch=8, pytest_timeout=120, reps=1)
    return dict(clip_w=1280, clip_h=720, clip_frames=300, clip_fps=30, input_size=None, decode_short=None,
                corr_frames=64, corr_backbone="resnet18", head_latent=32, head_epochs=3,
                speed_backbones=["resnet50", "resnet18"], speed_batches=[64, 128, 256, 512], speed_trial_s=0.4,
                speed_trials=3,
                e2e_rows=[("resnet50", "bf16", True, 256), ("resnet18", "bf16", True, 256),
                          ("resnet50", "fp32", True, 256), ("resnet50", "bf16", False, 256),
                          ("resnet50", "bf16", True, 512)],
                ray_copies=16, ray_batch=256, pytest_timeout=240, reps=2)


DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def _torch_dtype(name: str):
    import torch

    return None if DTYPES[name] is None else getattr(torch, DTYPES[name])


# ------------------------------------------------------------------------------------------------
# sections


def section_env(rec: dict[str, Any], dev: str) -> None:
    import importlib

    import torch

    rec["python"] = platform.python_version()
    rec["torch"] = torch.__version__
    rec["torch_cuda"] = torch.version.cuda
    rec["cpu_count"] = os.cpu_count()
    rec["device"] = dev
    if dev == "cuda":
        p = torch.cuda.get_device_properties(0)
        rec["gpu"] = torch.cuda.get_device_name(0)
        rec["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        rec["gpu_capability"] = f"{p.major}.{p.minor}"
        rec["cudnn"] = torch.backends.cudnn.version()
        rec["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    pk: dict[str, str] = {}
    for name in ("numpy", "torchvision", "constriction", "zarr", "numcodecs", "av", "decord", "torchcodec", "ray",
                 "safetensors", "pyarrow"):
        try:
            m = importlib.import_module(name)
            pk[name] = str(getattr(m, "__version__", "?"))
        except Exception as e:  # noqa: BLE001 - absent or broken: reported
            pk[name] = f"unavailable ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
    rec["packages"] = pk
    from scripts.evals.report import machine

    rec["machine"] = machine()


def make_clip(path: Path, width: int, height: int, frames: int, fps: int) -> Path:
    """A synthetic H.264 clip with texture and motion (a drifting noise field + a moving gradient).

    Content resembling natural video matters here: decode speed depends on it, and flat frames make
    latents trivially equal. Frames are made vectorized from one noise field so that making the clip
    costs mostly the encoder.
    """
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    # smooth-ish texture: low-resolution noise upsampled, plus fine noise
    lo = rng.integers(0, 256, (height // 8 + 2, (width + frames * 4) // 8 + 2, 3), dtype=np.uint8)
    field = np.repeat(np.repeat(lo, 8, axis=0), 8, axis=1)[:height]
    fine = rng.integers(0, 48, field.shape, dtype=np.uint8)
    field = (field // 2 + fine).astype(np.uint8)
    ramp = (np.linspace(0, 96, width, dtype=np.float32)[None, :, None]).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        st = out.add_stream("libx264", rate=Fraction(fps))
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.options = {"preset": "veryfast", "crf": "23"}
        st.thread_type = "AUTO"
        for i in range(frames):
            x0 = 4 * i
            img = field[:, x0:x0 + width]
            img = (img // 2 + np.roll(ramp, 3 * i, axis=1) + (i % 32)).astype(np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


def decode_all(path: Path, *, short_side: int | None, backend: str = "pyav", batch: int = 64,
               threads: int | None = None):
    """All frames of ``path`` as uint8 (T, H, W, 3) through featcomp's decoder."""
    import numpy as np

    from featcomp.video import SamplingConfig, SamplingMode, open_video, sample_frames

    s = SamplingConfig(mode=SamplingMode.ALL, batch_size=batch, backend=backend, short_side=short_side)
    with open_video(path, backend=backend, short_side=short_side, threads=threads) as dec:
        return np.concatenate([b.frames for b in sample_frames(dec, s)])


def section_pytest(rec: dict[str, Any], out: Path, timeout_s: float) -> None:
    files = sorted({str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                    if "mark.gpu" in p.read_text(errors="replace")})
    rec["files"] = files
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-rA", "-p", "no:cacheprovider", "--timeout", "120", *files]
    rec["command"] = " ".join(cmd)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    log = out / "pytest_gpu.log"
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
        text, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\n[gpu_check] pytest killed after {timeout_s:.0f} s\n"
        rc = "timeout"
    log.write_text(text)
    rec["returncode"] = rc
    counts = {}
    tail = [ln for ln in text.splitlines() if ln.startswith("=") and (" in " in ln)]
    if tail:
        import re

        for n, what in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected|xfailed|xpassed)", tail[-1]):
            counts[what] = int(n)
        rec["summary_line"] = tail[-1].strip("= ")
    rec["counts"] = counts
    rec["tests"] = [ln.strip() for ln in text.splitlines() if ln.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR"))]
    if rc not in (0, 5):  # 5: nothing collected
        rec["status"] = "failed"


def _frozen_heads(feats_pooled, feats_spatial, latent: int, epochs: int, tmp: Path, spec_pooled, spec_spatial):
    """Model files of small heads of the three kinds, trained briefly on the CPU features of the clip."""
    import numpy as np
    import torch

    import featcomp
    from featcomp.train import clip_windows

    paths = {}
    torch.manual_seed(0)
    f = feats_pooled.numpy()
    head = featcomp.fit_head(f, objective="reconstruct", lam=1e-2, latent_channels=latent, epochs=epochs,
                             batch_size=32, progress=False)
    paths["factorized"] = featcomp.save_model(tmp / "factorized.safetensors", head, backbone=spec_pooled)
    torch.manual_seed(0)
    win = clip_windows([f], 4, stride=2)
    head = featcomp.fit_head(win, objective="reconstruct", lam=1e-2, latent_channels=latent, entropy_model="temporal",
                             epochs=epochs, batch_size=16, progress=False)
    paths["temporal"] = featcomp.save_model(tmp / "temporal.safetensors", head, backbone=spec_pooled)
    torch.manual_seed(0)
    head = featcomp.fit_head(np.ascontiguousarray(feats_spatial.numpy()), objective="reconstruct", lam=1e-2,
                             latent_channels=max(4, latent // 2), entropy_model="hyperprior", epochs=epochs,
                             batch_size=16, progress=False)
    paths["hyperprior"] = featcomp.save_model(tmp / "hyperprior.safetensors", head, backbone=spec_spatial)
    return paths


def _compare_latents(ex_a, ex_b, frames, feats_a, feats_b) -> dict[str, Any]:
    """int32 latents of the same frames through extractors a (reference, CPU) and b; where they differ,
    whether each difference is a rounding-boundary case (the reference's value lies within the
    float difference of a .5 boundary)."""
    import numpy as np
    import torch

    k_a = ex_a.encode_frames(frames)
    k_b = ex_b.encode_frames(frames)
    off = np.asarray(ex_a.model.head.offsets.cpu(), np.float32).reshape((1, -1) + (1,) * (k_a.ndim - 2))
    with torch.inference_mode():
        y_a = ex_a.head.latent(feats_a.to(ex_a.device)).float().cpu().numpy() - off
        y_b = ex_b.head.latent(feats_b.to(ex_b.device)).float().cpu().numpy() - off
        # the head alone on the reference's own features (isolates the head's float work on device b)
        k_head = ex_b.head.encode(feats_a.to(ex_b.device))
    mism = k_a != k_b
    n = int(mism.sum())
    dy = np.abs(y_b - y_a)
    dist = np.abs((y_a - np.floor(y_a)) - 0.5)  # distance to the nearest rounding boundary
    rec: dict[str, Any] = {
        "latents": int(k_a.size),
        "identical": bool(n == 0),
        "identical_fraction": float(1 - n / max(1, k_a.size)),
        "mismatches": n,
        "max_abs_latent_difference": int(np.abs(k_a.astype(np.int64) - k_b).max()) if k_a.size else 0,
        "max_abs_feature_difference": float((feats_b.cpu().float() - feats_a.cpu().float()).abs().max()),
        "max_abs_feature": float(feats_a.abs().max()),
        "max_abs_y_difference_q_units": float(dy.max()) if dy.size else 0.0,
        "head_only_mismatches": int((k_head != k_a).sum()),
    }
    if n:
        rec["mismatch_boundary_distance_max"] = float(dist[mism].max())
        rec["mismatch_y_difference_min"] = float(dy[mism].min())
        rec["all_mismatches_rounding_boundary"] = bool(np.all(dist[mism] <= dy[mism] + 1e-6)
                                                       and rec["max_abs_latent_difference"] <= 1)
    rec["_k"] = (k_a, k_b)
    return rec


def section_correctness(rec: dict[str, Any], dev: str, clip: Path, sz: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """CPU vs ``dev`` in float32 (TF32 off): latents, contexts, tables, bitstreams. On a machine with no
    CUDA the second device is the CPU with one torch thread (exercises the same code)."""
    import numpy as np
    import torch

    from featcomp.backbones import build_backbone
    from featcomp.model import Extractor, load_model

    if dev == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        rec["tf32"] = False
        rec["devices"] = "cpu vs cuda"
    else:
        rec["devices"] = "cpu vs cpu (1 torch thread): skipped: no CUDA for the real comparison"
    frames = decode_all(clip, short_side=256 if sz["decode_short"] is None else sz["decode_short"])[: sz["corr_frames"]]
    rec["frames"] = int(len(frames))
    rec["frame_size"] = list(frames.shape[1:3])
    name = sz["corr_backbone"]
    kw = dict(weights=None, amp="none")
    if sz["input_size"]:
        kw["input_size"] = sz["input_size"]
    torch.manual_seed(0)
    bb_cpu = build_backbone(name, **kw)
    torch.manual_seed(0)
    bb_cpu_sp = build_backbone(name, pool=False, layer="layer4", **kw)
    threads = torch.get_num_threads()
    with torch.inference_mode():
        f_cpu = bb_cpu.extract(frames).float()
        s_cpu = bb_cpu_sp.extract(frames).float()
    rec["backbone"] = name
    rec["feature_shapes"] = {"pooled": list(f_cpu.shape), "spatial": list(s_cpu.shape)}
    paths = _frozen_heads(f_cpu, s_cpu, sz["head_latent"], sz["head_epochs"], tmp, bb_cpu.spec, bb_cpu_sp.spec)

    def on_dev(bb_ref, pool):
        b = build_backbone(name, device=dev, pool=pool, **({} if pool else {"layer": "layer4"}), **kw)
        b.load_state_dict({k: v.clone() for k, v in bb_ref.state_dict().items()})
        return b

    bb_dev, bb_dev_sp = on_dev(bb_cpu, True), on_dev(bb_cpu_sp, False)
    if dev == "cpu":
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            f_dev = bb_dev.extract(frames).float()
            s_dev = bb_dev_sp.extract(frames).float()
        kinds: dict[str, Any] = {}
        for kind, path in paths.items():
            bb_a, bb_b = (bb_cpu, bb_dev) if kind != "hyperprior" else (bb_cpu_sp, bb_dev_sp)
            fa, fb = (f_cpu, f_dev) if kind != "hyperprior" else (s_cpu, s_dev)
            ex_a = Extractor(load_model(path), device="cpu", backbone=bb_a, batch_size=32)
            ex_b = Extractor(load_model(path), device=dev, backbone=bb_b, batch_size=32)
            r = _compare_latents(ex_a, ex_b, frames, fa, fb)
            k_a, k_b = r.pop("_k")
            codec = ex_a.codec
            r["codec_digest"] = codec.digest[:16]
            # streams from each device's latents (identical bytes exactly when the latents are)
            if kind == "temporal":
                sa, sb = codec.compress_chunks(k_a, 16), codec.compress_chunks(k_b, 16)
                r["bitstreams_identical"] = sa == sb
                r["stream_bytes"] = sum(len(s) for s in sa)
                r["decodes_to_device_latents"] = bool(all(np.array_equal(codec.decompress_symbols(s), k_b[i * 16:(i + 1) * 16])
                                                          for i, s in enumerate(sb)))
                # the integer context: numpy on the CPU vs torch on the device, from the same integers
                kp = k_a.reshape(k_a.shape[0], k_a.shape[1], -1).astype(np.int64)
                mu_ref, tab_ref = codec.context(kp)
                mu, tab = codec.context(torch.from_numpy(kp).to(dev))
                r["context_identical"] = bool(np.array_equal(mu.cpu().numpy(), mu_ref)
                                              and np.array_equal(tab.cpu().numpy(), tab_ref))
                wide = np.random.default_rng(1).integers(-40000, 40000, kp.shape)  # beyond the clip too
                mu_ref, tab_ref = codec.context(wide)
                mu, tab = codec.context(torch.from_numpy(wide).to(dev))
                r["context_identical_wide_range"] = bool(np.array_equal(mu.cpu().numpy(), mu_ref)
                                                         and np.array_equal(tab.cpu().numpy(), tab_ref))
                r["context_elements"] = int(tab_ref.size)
            else:
                sa, sb = codec.compress_symbols(k_a), codec.compress_symbols(k_b)
                r["bitstreams_identical"] = sa == sb
                r["stream_bytes"] = len(sa)
                r["decodes_to_device_latents"] = bool(np.array_equal(codec.decompress_symbols(sb), k_b))
            if kind == "hyperprior":
                z = codec.side_information(k_a)
                H, W = k_a.shape[2:]
                ref = codec.tables(z, H, W)
                got = codec.tables(torch.from_numpy(z.astype(np.int64)).to(dev), H, W)
                r["scale_index_identical"] = bool(np.array_equal(got.cpu().numpy(), ref))
                r["scale_index_elements"] = int(ref.size)
            # the same integers from the device give the same stream as from the CPU
            r["bitstream_from_same_integers_identical"] = (
                (codec.compress_chunks(np.array(k_a), 16) == sa) if kind == "temporal"
                else codec.compress_symbols(np.array(k_a)) == sa)
            kinds[kind] = r
        rec["kinds"] = kinds
    finally:
        torch.set_num_threads(threads)
    return {"frames": frames, "bb_dev": bb_dev, "f_dev": f_dev, "factorized_path": paths["factorized"], "kw": kw}


def section_autocast(rec: dict[str, Any], dev: str, ctx: dict[str, Any]) -> None:
    """bf16 / fp16 autocast vs float32 on ``dev``: features, the classifier's top-1, latents."""
    import numpy as np
    import torch

    from featcomp.model import Extractor, load_model

    frames, bb, f32 = ctx["frames"], ctx["bb_dev"], ctx["f_dev"]
    ex = Extractor(load_model(ctx["factorized_path"]), device=dev, backbone=bb, batch_size=32)
    k32 = ex.head.encode(f32)
    with torch.inference_mode():
        top32 = bb.classify(f32).argmax(1).cpu()
    rows = {}
    for name in ("bf16", "fp16"):
        if dev != "cuda" and name == "fp16":
            rows[name] = {"status": "skipped: no CUDA (fp16 autocast is CUDA only in featcomp)"}
            continue
        try:
            with torch.inference_mode(), torch.autocast(dev, dtype=_torch_dtype(name)):
                f = bb.forward(bb.preprocess(frames)).float()
            with torch.inference_mode():
                top = bb.classify(f).argmax(1).cpu()
            k = ex.head.encode(f)
            d = (f - f32).abs()
            rows[name] = {
                "max_abs": float(d.max()),
                "mean_abs": float(d.mean()),
                "max_abs_relative_to_max_feature": float(d.max() / f32.abs().max().clamp_min(1e-12)),
                "top1_agreement": float((top == top32).float().mean()),
                "latent_mismatch_rate": float(np.mean(k != k32)),
                "max_abs_latent_difference": int(np.abs(k.astype(np.int64) - k32).max()),
            }
        except Exception as e:  # noqa: BLE001
            rows[name] = {"status": f"error: {type(e).__name__}: {e}"}
    rec["device"] = dev
    rec["classifier"] = "the backbone's own fc (random init: agreement is about the arithmetic, not accuracy)"
    rec["rows"] = rows


def _timeit(fn, sync, trial_s: float, trials: int) -> float:
    """Best-of-``trials`` seconds per call of ``fn`` (each trial runs enough calls to last ~trial_s)."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, int(trial_s / one))
    best = one
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def section_decode(rec: dict[str, Any], dev: str, clip: Path, budget: Budget) -> None:
    """Frames/s of decoding the whole clip: PyAV and decord (featcomp's decoders) on the CPU, torchcodec on
    the CPU and on the GPU where it loads."""
    import numpy as np

    rows = []

    def add(decoder, where, size, threads, fn):
        row = {"decoder": decoder, "device": where, "size": size, "threads": threads}
        if budget.left() < 20:
            row["status"] = "skipped: time budget"
            rows.append(row)
            return
        try:
            t0 = time.perf_counter()
            n = fn()
            dt = time.perf_counter() - t0
            row.update(frames=int(n), seconds=round(dt, 3), fps=n / dt)
        except Exception as e:  # noqa: BLE001
            row["status"] = f"error: {type(e).__name__}: {str(e)[:300]}"
        rows.append(row)

    short = 256
    for backend in ("pyav", "decord"):
        add(backend, "cpu", f"short side {short}", "auto", lambda b=backend: len(decode_all(clip, short_side=short, backend=b)))
        add(backend, "cpu", f"short side {short}", 1,
            lambda b=backend: len(decode_all(clip, short_side=short, backend=b, threads=1)))
        add(backend, "cpu", "native", "auto", lambda b=backend: len(decode_all(clip, short_side=None, backend=b)))

    def torchcodec(device):
        import torch
        from torchcodec.decoders import VideoDecoder

        d = VideoDecoder(str(clip), device=device)
        n = 0
        total = len(d)
        for i in range(0, total, 64):
            fb = d.get_frames_in_range(i, min(total, i + 64))
            n += int(fb.data.shape[0])
        if device == "cuda":
            torch.cuda.synchronize()
        return n

    add("torchcodec", "cpu", "native", "auto", lambda: torchcodec("cpu"))
    if dev == "cuda":
        add("torchcodec", "cuda", "native", "nvdec", lambda: torchcodec("cuda"))
    else:
        rows.append({"decoder": "torchcodec", "device": "cuda", "size": "native", "threads": "nvdec",
                     "status": "skipped: no CUDA"})
    rec["rows"] = rows
    rec["clip"] = str(clip.name)
    ok = [r for r in rows if "fps" in r and r["device"] == "cpu" and r["size"].startswith("short")]
    if ok:
        rec["best_cpu_fps_short_side"] = max(r["fps"] for r in ok)
    _ = np  # numpy imported for decode_all's arrays


def _build(name: str, dev: str, dtype: str, cl: bool, batch: int, input_size: int | None):
    import torch

    from featcomp.backbones import build_backbone

    kw = dict(weights=None, device=dev, amp="none" if dtype == "fp32" else dtype, channels_last=cl, batch_size=batch)
    if input_size:
        kw["input_size"] = input_size
    torch.manual_seed(0)
    return build_backbone(name, **kw)


def _sync(dev: str):
    import torch

    return torch.cuda.synchronize if dev == "cuda" else (lambda: None)


def section_backbone_speed(rec: dict[str, Any], dev: str, sz: dict[str, Any], budget: Budget, deadline: float) -> None:
    """Backbone-only frames/s: preprocessed batches already on the device, forward only."""
    import numpy as np
    import torch

    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    combos = []
    for name in sz["speed_backbones"]:
        for dtype in ("bf16", "fp32"):
            for cl in (True, False):
                combos.append((name, dtype, cl))
    # the headline (resnet50 bf16 channels_last) first, so that a short budget still measures it
    combos.sort(key=lambda c: (c[0] != sz["speed_backbones"][0], c[1] != "bf16", not c[2]))
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (max(sz["speed_batches"]), 256, 256, 3), dtype=np.uint8)
    for ci, (name, dtype, cl) in enumerate(combos):
        if ci and budget.until(deadline) < 5:  # the headline combination is always measured
            for b in sz["speed_batches"]:
                rows.append({"backbone": name, "dtype": dtype, "channels_last": cl, "batch": b,
                             "status": "skipped: time budget"})
            continue
        try:
            bb = _build(name, dev, dtype, cl, max(sz["speed_batches"]), sz["input_size"])
        except Exception as e:  # noqa: BLE001
            rows.append({"backbone": name, "dtype": dtype, "channels_last": cl, "status": f"error: {e}"})
            continue
        for b in sz["speed_batches"]:
            row: dict[str, Any] = {"backbone": name, "dtype": dtype, "channels_last": cl, "batch": b,
                                   "channels_last_effective": bool(bb.channels_last)}
            if (ci or b != sz["speed_batches"][0]) and budget.until(deadline) < 2:
                row["status"] = "skipped: time budget"
                rows.append(row)
                continue
            try:
                with torch.inference_mode():
                    x = bb.preprocess(src[:b])
                if dev == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()

                def fwd():
                    with torch.inference_mode():
                        bb.forward(x)

                s = _timeit(fwd, _sync(dev), sz["speed_trial_s"], sz["speed_trials"])
                row["fps"] = b / s
                if dev == "cuda":
                    row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
                del x
            except Exception as e:  # noqa: BLE001 (e.g. out of memory at batch 512)
                row["status"] = f"error: {type(e).__name__}: {str(e)[:200]}"
            rows.append(row)
        del bb
        if dev == "cuda":
            torch.cuda.empty_cache()
    rec["rows"] = rows
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32) if dev == "cuda" else False
    rec["input"] = (f"{sz['input_size'] or 224} px crop, preprocessed on the device before timing; "
                    f"fp32 rows with TF32 {'on' if tf32 else 'off'}")


def _backbone_fps(speed: dict[str, Any], name, dtype, cl, batch) -> float | None:
    for r in speed.get("rows", []):
        if (r.get("backbone"), r.get("dtype"), r.get("channels_last"), r.get("batch")) == (name, dtype, cl, batch):
            return r.get("fps")
    return None


def section_end_to_end(rec: dict[str, Any], dev: str, clip: Path, sz: dict[str, Any], budget: Budget,
                       deadline: float, speed: dict[str, Any], tmp: Path) -> None:
    """extract_features (decode in a prefetch thread + backbone) and Extractor.compress (+ head + coding)
    on the whole clip, and Extractor.encode_frames on frames already in memory (no decoding)."""
    import numpy as np
    import torch

    import featcomp
    from featcomp.features import extract_features
    from featcomp.head import CompressibleHead
    from featcomp.model import Extractor
    from featcomp.video import SamplingConfig, SamplingMode

    rows = []
    short = sz["decode_short"] or 256
    frames_mem = None
    for name, dtype, cl, batch in sz["e2e_rows"]:
        row: dict[str, Any] = {"backbone": name, "dtype": dtype, "channels_last": cl, "batch": batch}
        rows.append(row)
        if rows[0] is not row and budget.until(deadline) < 10:  # the headline row always runs
            row["status"] = "skipped: time budget"
            continue
        try:
            bb = _build(name, dev, dtype, cl, batch, sz["input_size"])
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            best = None
            for _ in range(sz["reps"]):
                t0 = time.perf_counter()
                feats = extract_features(clip, bb, batch_size=batch, backend="pyav", prefetch=2)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            n = len(feats)
            row["frames"] = n
            row["extract_features_fps"] = n / best
            # a model file for this backbone: a factorized head (untrained; speed only)
            head = CompressibleHead(in_channels=feats.data.shape[1], latent_channels=64, init_scale=0.5)
            head.set_input_stats(torch.from_numpy(feats.data))
            head.eval()
            spec = bb.spec
            sampling = SamplingConfig(mode=SamplingMode.ALL, batch_size=batch, backend="pyav", short_side=short)
            path = featcomp.save_model(tmp / f"e2e_{name}.safetensors", head, backbone=spec, sampling=sampling)
            del bb
            ex = Extractor(path, device=dev, dtype=_torch_dtype(dtype), batch_size=batch)
            row["extractor_backbone_device"] = str(getattr(ex.backbone, "device", "?"))
            best = None
            for _ in range(sz["reps"]):
                t0 = time.perf_counter()
                c = ex.compress(clip)
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            row["extractor_compress_fps"] = c.num_frames / best
            row["bits_per_frame"] = c.bits_per_frame
            if frames_mem is None:
                frames_mem = decode_all(clip, short_side=short)
            s = _timeit(lambda: ex.encode_frames(frames_mem), _sync(dev), 0.0, sz["reps"])
            row["encode_frames_in_memory_fps"] = len(frames_mem) / s
            if dev == "cuda":
                row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
            ref = _backbone_fps(speed, name, dtype, cl, batch)
            if ref:
                row["backbone_only_fps"] = ref
                row["ratio_extract_features"] = row["extract_features_fps"] / ref
                row["ratio_extractor_compress"] = row["extractor_compress_fps"] / ref
                row["ratio_in_memory"] = row["encode_frames_in_memory_fps"] / ref
            del ex
            if dev == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            row["status"] = f"error: {type(e).__name__}: {str(e)[:300]}"
            row["traceback"] = traceback.format_exc()
    rec["rows"] = rows
    rec["decode"] = f"PyAV, resized on decode to short side {short}, one decoder (its own threads) per call"
    _ = np


_RAY_DRIVER = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from featcomp.pipelines.config import ExtractConfig
from featcomp.pipelines.extract import run_extract
cfg = ExtractConfig(progress=False).with_overrides(
    ray={ray!r}, decode={decode!r}, inference={inference!r})
import ray
t0 = time.perf_counter()
s = run_extract([{videos!r}], {store!r} + "/cold.zarr", {model!r}, config=cfg, shutdown=False)
out = dict(total=s.total, done=s.done, failed=s.failed, frames=s.frames, wall_s=s.wall_s,
           bytes_written=s.bytes_written, failures=[list(map(str, f)) for f in s.failures][:5],
           driver_s=time.perf_counter() - t0)
print("RESULT " + json.dumps(out), flush=True)
# again with Ray already up (a new store, so nothing is skipped): the job's own throughput
w = run_extract([{videos!r}], {store!r} + "/warm.zarr", {model!r}, config=cfg, shutdown=False)
out.update(warm_done=w.done, warm_frames=w.frames, warm_wall_s=w.wall_s)
print("RESULT " + json.dumps(out), flush=True)
ray.shutdown()
"""


def section_ray(rec: dict[str, Any], dev: str, clip: Path, sz: dict[str, Any], budget: Budget, tmp: Path,
                e2e: dict[str, Any]) -> None:
    """The Ray extraction job (featcomp/pipelines/extract.py) on copies of the clip, in a subprocess with a timeout."""
    import torch

    import featcomp
    from featcomp.head import CompressibleHead
    from featcomp.video import SamplingConfig, SamplingMode

    if budget.left() < 60:
        rec["status"] = "skipped: time budget"
        return
    name = sz["e2e_rows"][0][0]
    bb = _build(name, "cpu", "fp32", True, sz["ray_batch"], sz["input_size"])
    head = CompressibleHead(in_channels=bb.out_channels, latent_channels=64, init_scale=0.5)
    head.eval()
    short = sz["decode_short"] or 256
    sampling = SamplingConfig(mode=SamplingMode.ALL, batch_size=sz["ray_batch"], short_side=short)
    model = featcomp.save_model(tmp / "ray_model.safetensors", head, backbone=bb.spec, sampling=sampling)
    vids = tmp / "ray_videos"
    vids.mkdir(exist_ok=True)
    (tmp / "ray_stores").mkdir(exist_ok=True)
    for i in range(sz["ray_copies"]):
        dst = vids / f"v{i:03d}.mp4"
        if not dst.exists():
            try:
                os.link(clip, dst)
            except OSError:
                shutil.copy(clip, dst)
    cpus = os.cpu_count() or 2
    ray_cfg = {"num_cpus": cpus, "object_store_memory_mb": 4096 if dev == "cuda" else 256, "include_dashboard": False}
    decode = {"backend": "pyav", "timeout_s": 60.0, "num_cpus": 1.0}
    inference = {"device": dev, "dtype": "bfloat16" if dev == "cuda" else "float32", "batch_size": sz["ray_batch"],
                  "num_gpus": 1.0 if dev == "cuda" else 0.0, "num_cpus": 2.0 if cpus > 4 else 1.0, "actors": 1}
    rec["config"] = {"ray": ray_cfg, "decode": decode, "inference": inference, "videos": sz["ray_copies"],
                     "backbone": name}
    code = _RAY_DRIVER.format(root=str(ROOT), ray=ray_cfg, decode=decode, inference=inference, videos=str(vids),
                              store=str(tmp / "ray_stores"), model=str(model))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    timeout = max(30.0, min(240.0, budget.left() - 15))
    rec["timeout_s"] = round(timeout)
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
        text = p.stdout + p.stderr
        rec["returncode"] = p.returncode
    except subprocess.TimeoutExpired as e:
        text = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rec["status"] = f"timeout after {timeout:.0f} s"
    rec["log_tail"] = text[-3000:]
    line = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if line:
        res = json.loads(line[-1][7:])
        rec.update(res)
        if res["wall_s"] > 0:
            rec["fps_including_startup"] = res["frames"] / res["wall_s"]
        if res.get("warm_wall_s"):
            rec["fps_warm"] = res["warm_frames"] / res["warm_wall_s"]
        ref = _backbone_fps({"rows": e2e.get("backbone_rows", [])}, name, "bf16", True, sz["ray_batch"])
        if ref:
            rec["backbone_only_fps"] = ref
    elif rec.get("status") in (None, "running"):
        rec["status"] = "failed"
    del torch


# ------------------------------------------------------------------------------------------------
# report


def _f(x: Any, nd: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if abs(x) >= 10 ** (-nd) or x == 0 else f"{x:.2e}"
    return str(x)


def render(doc: dict[str, Any]) -> str:
    """The markdown tables of a results document (the report file and the docs section)."""
    from scripts.evals.report import markdown_table

    S = doc.get("sections", {})
    env = S.get("env", {})
    out = ["## GPU check (`scripts/gpu_check.py`)", ""]
    if doc.get("dry_run"):
        out += ["**Dry run** (tiny sizes, CPU only): the numbers only show that every part runs.", ""]
    out.append(f"GPU: {env.get('gpu', 'none (' + str(env.get('device')) + ')')}; torch {env.get('torch')} "
               f"(CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn', '–')}); {env.get('cpu_count')} CPU cores; "
               f"budget {doc.get('time_budget_s')} s, ran {doc.get('elapsed_s', '?')} s.")
    pk = env.get("packages", {})
    if pk:
        out.append("Packages: " + ", ".join(f"{k} {v}" for k, v in pk.items()) + ".")
    bad = [f"`{k}`: {v.get('error') or v.get('status')}" for k, v in S.items()
           if v.get("status") not in ("ok",) and not str(v.get("status", "")).startswith("skipped")]
    if bad:
        out += ["", "Sections that did not finish cleanly: " + "; ".join(bad) + "."]
    pt = S.get("pytest_gpu")
    if pt:
        out += ["", "### CUDA tests (`pytest -m gpu`)", "",
                f"{pt.get('summary_line', pt.get('status'))} (return code {pt.get('returncode')}); "
                + "; ".join(pt.get("tests", [])[:10])]
    c = S.get("correctness")
    if c and c.get("kinds"):
        out += ["", f"### Correctness: {c.get('devices')}, float32"
                + (", TF32 off" if c.get("tf32") is False else ""), "",
                f"{c.get('frames')} frames of the synthetic clip ({c.get('frame_size')}), backbone {c.get('backbone')} "
                "(random weights), heads trained briefly on the CPU features; the same uint8 frames go to both devices.",
                ""]
        rows = []
        for kind, r in c["kinds"].items():
            rows.append([kind, r.get("latents"), _f(r.get("identical")), _f(r.get("identical_fraction"), 6),
                         r.get("mismatches"), r.get("head_only_mismatches"),
                         _f(r.get("all_mismatches_rounding_boundary")) if r.get("mismatches") else "–",
                         _f(r.get("max_abs_feature_difference"), 6), _f(r.get("max_abs_y_difference_q_units"), 6),
                         _f(r.get("bitstreams_identical")), _f(r.get("bitstream_from_same_integers_identical")),
                         _f(r.get("context_identical", r.get("scale_index_identical"))) if kind != "factorized" else "–"])
        out.append(markdown_table(
            ["kind", "latents", "identical", "identical fraction", "mismatches", "mismatches, head only (CPU features)",
             "all at rounding boundaries", "max abs feature diff", "max abs latent diff (q units)",
             "streams identical", "same integers → same stream", "context / scale index identical (torch on device vs numpy)"],
            rows))
        t = c["kinds"].get("temporal", {})
        if "context_identical_wide_range" in t:
            out.append(f"\nTemporal context on {t.get('context_elements')} elements with values in ±40000: "
                       f"identical = {_f(t.get('context_identical_wide_range'))}.")
    a = S.get("autocast")
    if a and a.get("rows"):
        out += ["", f"### Autocast vs float32 on {a.get('device')}", ""]
        rows = []
        for name, r in a["rows"].items():
            if "max_abs" in r:
                rows.append([name, _f(r["max_abs"], 4), _f(r["mean_abs"], 5), _f(r["max_abs_relative_to_max_feature"], 4),
                             _f(r["top1_agreement"], 4), _f(r["latent_mismatch_rate"], 4), r["max_abs_latent_difference"]])
            else:
                rows.append([name, r.get("status"), "", "", "", "", ""])
        out.append(markdown_table(["autocast", "max abs feature diff", "mean abs", "max abs / max abs feature",
                                   "top-1 agreement (fc)", "latent mismatch rate", "max abs latent diff"], rows))
        out.append(f"\nClassifier: {a.get('classifier')}.")
    d = S.get("decode")
    if d and d.get("rows"):
        out += ["", "### Video decode, whole clip", ""]
        rows = [[r["decoder"], r["device"], r["size"], r["threads"], _f(r.get("fps"), 0) if "fps" in r else r.get("status")]
                for r in d["rows"]]
        out.append(markdown_table(["decoder", "device", "output size", "threads", "frames/s"], rows))
        out.append(f"\nClip: {S.get('clip', {}).get('description', '')}.")
    b = S.get("backbone_speed")
    if b and b.get("rows"):
        out += ["", "### Backbone only (frames/s, " + str(b.get("input")) + ")", ""]
        rows = [[r["backbone"], r["dtype"], "on" if r["channels_last"] else "off", r.get("batch", "–"),
                 _f(r.get("fps"), 0) if "fps" in r else r.get("status"), _f(r.get("peak_mem_gib"), 2)]
                for r in b["rows"]]
        out.append(markdown_table(["backbone", "dtype", "channels_last", "batch", "frames/s", "peak GPU GiB"], rows))
    e = S.get("end_to_end")
    if e and e.get("rows"):
        out += ["", "### End to end on the clip vs backbone only", "",
                f"Decode: {e.get('decode')}. Ratios are end-to-end frames/s over the backbone-only frames/s of the "
                "same backbone, dtype, channels_last and batch (target ≥ 0.8 for resnet50 bf16).", ""]
        rows = []
        for r in e["rows"]:
            if "status" in r and "extract_features_fps" not in r:
                rows.append([r["backbone"], r["dtype"], "on" if r["channels_last"] else "off", r["batch"], r["status"],
                             "", "", "", "", "", "", ""])
                continue
            rows.append([r["backbone"], r["dtype"], "on" if r["channels_last"] else "off", r["batch"],
                         _f(r.get("backbone_only_fps"), 0), _f(r.get("extract_features_fps"), 0),
                         _f(r.get("ratio_extract_features"), 2), _f(r.get("extractor_compress_fps"), 0),
                         _f(r.get("ratio_extractor_compress"), 2), _f(r.get("encode_frames_in_memory_fps"), 0),
                         _f(r.get("ratio_in_memory"), 2), _f(r.get("peak_mem_gib"), 2)])
        out.append(markdown_table(["backbone", "dtype", "channels_last", "batch", "backbone only", "extract_features",
                                   "ratio", "Extractor.compress", "ratio", "encode_frames (frames in memory)", "ratio",
                                   "peak GPU GiB"], rows))
        dec = (S.get("decode") or {}).get("best_cpu_fps_short_side")
        if dec:
            out.append(f"\nOne PyAV/decord decoder decodes this clip at up to {dec:.0f} frames/s (short side 256); "
                       "where that is below the backbone-only rate, decoding starves the GPU in a single-process "
                       "extraction, and the Ray job's parallel decode tasks are what feed it.")
    r = S.get("ray")
    if r:
        out += ["", "### Ray job (`featcomp/pipelines/extract.py`)", ""]
        if "frames" in r:
            out.append(f"{r.get('done')}/{r.get('total')} videos, {r.get('frames')} frames in {r.get('wall_s', 0):.1f} s "
                       f"wall (Ray start-up included): {r.get('fps_including_startup', 0):.0f} frames/s.")
            if r.get("fps_warm"):
                out.append(f"Second run, Ray already up (new store): {r.get('warm_frames')} frames in "
                           f"{r.get('warm_wall_s', 0):.1f} s: **{r['fps_warm']:.0f} frames/s**"
                           + (f" ({r['fps_warm'] / r['backbone_only_fps']:.2f}x the backbone-only rate of "
                              f"{r['backbone_only_fps']:.0f} frames/s)" if r.get("backbone_only_fps") else "") + ".")
            out.append(f"\nConfig: `{json.dumps(r.get('config', {}))}`.")
        else:
            out.append(f"{r.get('status')}: {r.get('error', '')} {r.get('log_tail', '')[-400:]}".strip())
    return "\n".join(out) + "\n"


def write_doc(results: Path, doc_path: Path | None = None) -> Path:
    """Write the ``gpu`` section of docs/benchmarks.md (or ``doc_path``) from a results file."""
    from scripts.evals.report import DOCS, write_section

    doc = json.loads(Path(results).read_text())
    env = doc.get("sections", {}).get("env", {})
    return write_section(SECTION, render(doc), doc_path or DOCS / "benchmarks.md",
                         machine_line=env.get("machine") or "unknown machine", date=doc.get("date"))


# ------------------------------------------------------------------------------------------------
# main


def run(out: Path, *, dry: bool, budget_s: float, skip: set[str]) -> dict[str, Any]:
    import torch

    budget = Budget(budget_s)
    has_cuda = torch.cuda.is_available()
    dev = "cuda" if has_cuda and not dry else "cpu"
    sz = sizes(dry)
    res = Results(out, {"dry_run": dry, "date": _dt.date.today().isoformat(), "time_budget_s": budget_s,
                        "device": dev, "sizes": {k: v for k, v in sz.items()}})
    if dry:
        torch.set_num_threads(min(2, torch.get_num_threads()))
    tmp = Path(tempfile.mkdtemp(prefix="featcomp_gpu_check_"))
    res.doc["tmp"] = str(tmp)
    try:
        with res.section("env") as rec:
            section_env(rec, dev)
        clip = tmp / "clip.mp4"
        with res.section("clip") as rec:
            t0 = time.perf_counter()
            make_clip(clip, sz["clip_w"], sz["clip_h"], sz["clip_frames"], sz["clip_fps"])
            rec["encode_s"] = round(time.perf_counter() - t0, 2)
            rec["description"] = (f"synthetic H.264 {sz['clip_w']}x{sz['clip_h']}, {sz['clip_frames']} frames at "
                                  f"{sz['clip_fps']} fps, {clip.stat().st_size / 1e6:.1f} MB")
        if "pytest" not in skip:
            with res.section("pytest_gpu") as rec:
                section_pytest(rec, out, min(sz["pytest_timeout"], max(30.0, budget.left() * 0.3)))
        ctx: dict[str, Any] = {}
        if "correctness" not in skip:
            with res.section("correctness") as rec:
                ctx = section_correctness(rec, dev, clip, sz, tmp)
            with res.section("autocast") as rec:
                if not ctx:
                    raise RuntimeError("correctness did not finish; nothing to compare against")
                section_autocast(rec, dev, ctx)
        ctx.clear()
        if has_cuda and not dry:
            torch.cuda.empty_cache()
        if "decode" not in skip:
            with res.section("decode") as rec:
                section_decode(rec, dev, clip, budget)
        speed: dict[str, Any] = {}
        if "speed" not in skip:
            with res.section("backbone_speed") as speed:
                section_backbone_speed(speed, dev, sz, budget, deadline=0.5)
            with res.section("end_to_end") as rec:
                section_end_to_end(rec, dev, clip, sz, budget, 0.7, speed, tmp)
        if "ray" not in skip:
            with res.section("ray") as rec:
                section_ray(rec, dev, clip, sz, budget, tmp, {"backbone_rows": speed.get("rows", [])})
    finally:
        res.doc["elapsed_s"] = round(budget.elapsed(), 1)
        res.save()
        (out / "gpu_report.md").write_text(render(res.doc))
        shutil.rmtree(tmp, ignore_errors=True)
    return res.doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")),
                    help="directory for gpu_results.json, gpu_report.md, pytest_gpu.log (default $OUT)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, no CUDA (< 60 s)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds for the whole run (default 360; 55 with --dry-run)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: pytest,correctness,decode,speed,ray")
    ap.add_argument("--write-doc", type=Path, metavar="RESULTS_JSON",
                    help="write the 'gpu' section of docs/benchmarks.md from a results file and exit")
    ap.add_argument("--doc", type=Path, default=None, help="with --write-doc: the markdown file (default docs/benchmarks.md)")
    args = ap.parse_args(argv)
    if args.write_doc:
        p = write_doc(args.write_doc, args.doc)
        print(f"wrote section '{SECTION}' of {p}")
        return 0
    budget = args.time_budget if args.time_budget is not None else (55.0 if args.dry_run else 360.0)
    doc = run(args.out, dry=args.dry_run, budget_s=budget, skip={s for s in args.skip.split(",") if s})
    bad = {k: v.get("status") for k, v in doc["sections"].items() if v.get("status") != "ok"}
    print(f"[gpu_check] done in {doc['elapsed_s']} s; results in {args.out}; sections not ok: {bad or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

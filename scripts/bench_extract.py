"""Benchmark decoding, backbones and single-clip extraction; writes the ``decoders`` and ``extract``
sections of docs/benchmarks.md.

Rows:

* ``decoders`` (also alone with ``--decode-only``, about a minute): every installed decoder backend
  side by side (PyAV, decord, torchcodec) at 224p and 720p: sequential frames/s with FFmpeg's
  automatic threads and with one thread (what the extraction job's decode tasks use), random-access
  frames/s and seek accuracy (64 random frames vs the same backend's sequential decode), exact frame
  equality with PyAV, open cost, and which backends read the B-frame AVI of issue 17. Backends are
  measured in interleaved rounds in one run (the machine is shared: compare the ratios);
* backbone images/s (preprocess + forward on frames already in memory);
* end-to-end ``extract_features`` features/s vs backbone-only on the same frames (target >= 0.85x);
* peak RSS of ``extract_features`` on a 30-minute 360p clip at 5 fps, measured in a subprocess
  (target < 2 GB).

Clips: ``data/clips/bikes.mp4`` (640x272) transcoded to 224p and ``data/clips/bigbuckbunny.mp4``
(720p) when ``scripts/fetch_data.py`` has put them there, else synthetic barcode clips. The long
clip is synthesized with PyAV (cheap low-complexity frames) and cached under ``data/cache/``.

Usage::

    .venv/bin/python scripts/bench_extract.py [--quick] [--no-write] [--decode-only] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.evals.report import markdown_table, write_section  # noqa: E402
from tests.clips import barcode_frame, make_clip  # noqa: E402

CACHE = ROOT / "data" / "cache"
CLIPS = ROOT / "data" / "clips"


def transcode(src: Path, dst: Path, height: int, max_frames: int | None = None) -> Path:
    """Re-encode ``src`` at ``height`` pixels (aspect kept, even width) with libx264."""
    import av

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        w = int(round(s_in.width * height / s_in.height / 2) * 2)
        rate = s_in.average_rate or 25
        s = out.add_stream("libx264", rate=rate)
        s.codec_context.time_base = 1 / rate
        s.width, s.height, s.pix_fmt = w, height, "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast", "g": "50"}
        for i, frame in enumerate(inp.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                break
            f = frame.reformat(width=w, height=height, format="yuv420p")
            f.pts = i
            f.time_base = s.codec_context.time_base
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return dst


def long_clip(minutes: float, fps: int = 10, width: int = 640, height: int = 360) -> Path:
    """A ``minutes``-long 360p clip of moving barcode frames (cheap to encode), cached."""
    import av

    path = CACHE / f"bench_long_{int(minutes)}min_{height}p_{fps}fps.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tiles = [av.VideoFrame.from_ndarray(barcode_frame(i * 37 % 4096, width, height), format="rgb24").reformat(format="yuv420p")
             for i in range(64)]
    n = int(minutes * 60 * fps)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "30", "preset": "ultrafast", "g": str(fps * 10)}
        for i in range(n):
            f = tiles[(i // fps) % 64]
            f.pts = i
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    tmp.rename(path)
    return path


def decoder_rows(path: Path, label: str, backends: list[str], rounds: int, device: str | None) -> tuple[list, dict]:
    """One row per backend for ``path``; returns the rows and {backend: sequential frames/s (auto threads)}."""
    from featcomp.video import open_video

    def opened(backend: str, **kw):
        extra = {"device": device} if (device and backend == "torchcodec") else {}
        return open_video(path, backend=backend, **extra, **kw)

    with opened("pyav") as dec:
        n = dec.num_frames
        ref_frames = dec.get_frames(np.arange(n))
    rng = np.random.default_rng(0)
    access = rng.integers(0, n, 64)

    def seq(backend: str, threads: int | None) -> float:
        with opened(backend, threads=threads) as dec:
            t = time.perf_counter()
            for s in range(0, n, 32):
                dec.get_frames(np.arange(s, min(n, s + 32)))
            return n / (time.perf_counter() - t)

    def rand(backend: str) -> tuple[float, int]:
        with opened(backend) as dec:
            t = time.perf_counter()
            got = [dec.get_frames([int(i)])[0] for i in access]  # one frame per call: a seek each time
            rate = len(access) / (time.perf_counter() - t)
        exact = sum(int(np.array_equal(g, ref_frames[i])) for g, i in zip(got, access))
        return rate, exact

    def open_ms(backend: str) -> float:
        t = time.perf_counter()
        with opened(backend) as dec:
            dec.get_frames([0])
        return 1000 * (time.perf_counter() - t)

    for b in backends:  # warm the page cache and each library's one-time imports
        seq(b, None)
    res: dict[str, dict] = {b: {"seq": [], "seq1": [], "rand": [], "open": []} for b in backends}
    exact_rand: dict[str, int] = {}
    for _ in range(rounds):  # interleaved, so load changes hit every backend alike
        for b in backends:
            res[b]["seq"].append(seq(b, None))
            res[b]["seq1"].append(seq(b, 1))
            r, e = rand(b)
            res[b]["rand"].append(r)
            exact_rand[b] = min(exact_rand.get(b, e), e)
            res[b]["open"].append(open_ms(b))
    rows, seq_rate = [], {}
    base = {k: float(np.median(res["pyav"][k])) for k in ("seq", "seq1", "rand")}
    for b in backends:
        med = {k: float(np.median(v)) for k, v in res[b].items()}
        seq_rate[b] = med["seq"]
        with opened(b) as dec:
            frames = dec.get_frames(np.arange(n))
        same = int(sum(np.array_equal(a, c) for a, c in zip(frames, ref_frames)))
        maxdiff = int(np.abs(frames.astype(np.int16) - ref_frames.astype(np.int16)).max())
        rows.append([label, b + (f" ({device})" if device and b == "torchcodec" else ""), n,
                     f"{med['seq']:,.0f} ({med['seq'] / base['seq']:.2f}x)",
                     f"{med['seq1']:,.0f} ({med['seq1'] / base['seq1']:.2f}x)",
                     f"{med['rand']:,.0f} ({med['rand'] / base['rand']:.2f}x)",
                     f"{exact_rand[b]}/{len(access)}", f"{same}/{n}" + ("" if same == n else f" (max diff {maxdiff})"),
                     f"{med['open']:.0f}"])
        print("decoders", label, b, {k: round(v, 1) for k, v in med.items()}, f"exact {same}/{n}", flush=True)
    return rows, seq_rate


def issue_file_rows(backends: list[str]) -> list[list[str]]:
    """Which backend reads the B-frame AVIs of issue 17 (barcoded: each frame names its index)."""
    from featcomp import VideoError
    from featcomp.video import open_video
    from tests.clips import read_barcodes
    from tests.video.test_backends import make_bframes_avi

    CACHE.mkdir(parents=True, exist_ok=True)
    files = {"MPEG-4 Part 2, B-frames, GOP 5, AVI, non-UTF-8 title": make_bframes_avi(CACHE / "bench_issue17_mpeg4.avi"),
             "H.264, B-frames, GOP 12, AVI": make_bframes_avi(CACHE / "bench_issue17_h264.avi", codec="libx264", gop=12)}
    access = [17, 3, 39, 20, 8, 30, 30, 29, 0, 12, 13, 11, 5, 38]
    rows = []
    for what, path in files.items():
        cells = []
        for b in backends:
            try:
                with open_video(path, backend=b) as dec:
                    ok = read_barcodes(dec.get_frames(access)).tolist() == access
                cells.append("reads, exact" if ok else "WRONG FRAMES")
            except VideoError as e:  # the backend's own reason, without the path and open_video's wrapping
                cells.append("refuses: " + str(e).split(f"{path}: ")[-1].split(";")[0])
        rows.append([what, *cells])
    return rows


def decoders_section(c224: Path, c720: Path, src224: str, src720: str, quick: bool, device: str | None) -> str:
    from featcomp.video import AUTO_ORDER, available_decoders

    backends = ["pyav", *[b for b in available_decoders() if b != "pyav"]]
    rounds = 1 if quick else 3
    rows, rates = [], {}
    for label, path in (("224p", c224), ("720p", c720)):
        r, rate = decoder_rows(path, label, backends, rounds, device)
        rows += r
        rates[label] = rate
    lines = [
        "## Decoders (`scripts/bench_extract.py --decode-only`)", "",
        f"Every installed backend side by side, in {rounds} interleaved round(s) (medians); ratios are to PyAV in "
        "the same run, which is what to compare on a shared machine. Sequential: all frames, batches of 32, native "
        "size, RGB uint8. Random: 64 random frames (seed 0), one `get_frames` call each (a seek per frame); "
        "accurate = pixel-identical to PyAV's sequential decode of that frame (seek accuracy). "
        "Identical to PyAV: frames whose pixels equal PyAV's exactly. Open: `open_video` + first frame, ms "
        "(the packet index PyAV builds for every backend included).", "",
        markdown_table(["clip", "backend", "frames", "sequential frames/s (auto threads)", "sequential frames/s (1 thread)",
                        "random frames/s", "random accurate", "identical to PyAV", "open (ms)"], rows), "",
        f"224p: {src224}; 720p: {src720}.", "",
        "### The files of issue 17 (barcoded clips made by `tests/video/test_backends.py`)", "",
        markdown_table(["file", *backends], issue_file_rows(backends)), "",
        f"`backend=\"auto\"` order: {', '.join(AUTO_ORDER)} (the installed ones; see docs/decisions.md, \"Default decoder\").", "",
    ]
    return "\n".join(lines)


RSS_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import featcomp
t = time.perf_counter()
f = featcomp.extract_features(sys.argv[2], "mobilenet_v3_small", weights=None, input_size=96, fps=5, batch_size=64)
dt = time.perf_counter() - t
print(json.dumps({"frames": len(f), "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "data_mb": f.data.nbytes / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short clips and a 3-minute long clip")
    ap.add_argument("--no-write", action="store_true", help="print, do not write docs/benchmarks.md")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--decode-only", action="store_true", help="only the decoders section (about a minute)")
    ap.add_argument("--device", default=None, help="torchcodec's device for the decoders section (e.g. cuda)")
    args = ap.parse_args()

    import torch

    import featcomp
    from featcomp.backbones import build_backbone
    from featcomp.video import open_video

    # --- clips -----------------------------------------------------------------------------
    if (CLIPS / "bikes.mp4").exists():
        c224 = transcode(CLIPS / "bikes.mp4", CACHE / "bench_bikes_224p.mp4", 224)
        src224 = "bikes.mp4 re-encoded to 528x224 (250 frames)"
    else:
        c224 = make_clip(CACHE / "bench_synth_224p.mp4", 250, width=398, height=224)
        src224 = "synthetic 398x224 barcode clip (250 frames)"
    if (CLIPS / "bigbuckbunny.mp4").exists():
        c720 = CLIPS / "bigbuckbunny.mp4"
        src720 = "bigbuckbunny.mp4 1280x720 (132 frames)"
    else:
        c720 = make_clip(CACHE / "bench_synth_720p.mp4", 132, width=1280, height=720)
        src720 = "synthetic 1280x720 barcode clip (132 frames)"
    lines: list[str] = []

    # --- decoders, side by side -------------------------------------------------------------
    body = decoders_section(c224, c720, src224, src720, args.quick, args.device)
    print(body)
    if not args.no_write:
        print("wrote", write_section("decoders", body))
    if args.decode_only:
        return
    lines += ["Decoding speed of every backend: the `decoders` section above.", ""]

    # --- backbone vs end-to-end ------------------------------------------------------------
    bb = build_backbone(args.backbone, weights=None)  # random init: same speed as pretrained
    rows = []
    e2e_rows = []
    for label, path in (("224p", c224), ("720p", c720)):
        with open_video(path) as probe:  # decode as extract_features does: downscale to the hint, never upscale
            short = bb.decode_short_side if min(probe.width, probe.height) > bb.decode_short_side else None
        with open_video(path, short_side=short) as dec:
            n = dec.num_frames if not args.quick else min(dec.num_frames, 64)
            frames = dec.get_frames(np.arange(n))
        bs = bb.spec.batch_size
        with torch.inference_mode():
            bb.extract(frames[:bs])  # warm-up
            t = time.perf_counter()
            for s in range(0, n, bs):
                bb.extract(frames[s : s + bs])
            bb_ips = n / (time.perf_counter() - t)
        sampling = None
        if args.quick:
            from featcomp.video import SamplingConfig

            sampling = SamplingConfig.uniform(n, batch_size=bs)
        t = time.perf_counter()
        feats = featcomp.extract_features(path, bb, sampling=sampling)
        e2e = len(feats) / (time.perf_counter() - t)
        assert len(feats) == n, (len(feats), n)
        rows.append([label, args.backbone, f"{frames.shape[2]}x{frames.shape[1]}", n, f"{bb_ips:.1f}"])
        e2e_rows.append([label, args.backbone, n, f"{bb_ips:.1f}", f"{e2e:.1f}", f"{e2e / bb_ips:.2f}x"])
        print("backbone", label, f"{bb_ips:.1f} img/s", "e2e", f"{e2e:.1f} feat/s", f"ratio {e2e / bb_ips:.2f}", flush=True)
    lines += [f"### Backbone ({args.backbone}, 224x224 after the weights' transforms, batch {bb.spec.batch_size}, CPU, "
              f"{torch.get_num_threads()} threads)", "",
              markdown_table(["clip", "backbone", "decoded size", "frames", "images/s (preprocess + forward)"], rows), "",
              "### Single clip end to end (`extract_features`, all frames, decode in a prefetch thread) vs backbone only "
              "(same frames already decoded in memory). Target >= 0.85x.", "",
              markdown_table(["clip", "backbone", "frames", "backbone-only features/s", "end-to-end features/s", "ratio"], e2e_rows), ""]

    # --- long video RSS ----------------------------------------------------------------------
    minutes = 3 if args.quick else 30
    t = time.perf_counter()
    lp = long_clip(minutes)
    gen = time.perf_counter() - t
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ROOT), str(lp)], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print("rss", r, f"(clip generated in {gen:.0f} s)", flush=True)
    lines += [f"### Long video: {minutes}-minute 640x360 clip (10 fps source, {int(minutes * 600)} frames), 5 fps sampling", "",
              markdown_table(["backbone", "features", "seconds", "features/s", "peak RSS (MB)", "features array (MB)"],
                             [["mobilenet_v3_small @ 96 px (a small backbone, to keep the run short)", r["frames"],
                               f"{r['seconds']:.0f}", f"{r['frames'] / r['seconds']:.0f}", f"{r['peak_rss_mb']:.0f}",
                               f"{r['data_mb']:.1f}"]]), "",
              "Peak RSS is `ru_maxrss` of a fresh subprocess (interpreter, torch and the model included); target < 2,048 MB. "
              "Memory is bounded by the batch (frames stream through `sample_frames`), so it does not grow with the video.", ""]
    body = "## Extraction (`scripts/bench_extract.py`)\n\n" + "\n".join(lines)
    print(body)
    if not args.no_write:
        print("wrote", write_section("extract", body))


if __name__ == "__main__":
    main()

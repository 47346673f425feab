"""``featcomp compress``: compress one clip with a model file (or decompress one with ``--decompress``).

Examples::

    featcomp compress clip.mp4 --model head.safetensors -o clip.fcc
    featcomp compress clip.fcc --model head.safetensors --decompress -o features.npy
    featcomp compress clip.mp4 --model ladder.safetensors --keep-top1 0.95 -o clip.fcc
    featcomp compress clip.mp4 --model ladder.safetensors --max-distortion 0.05 -o clip.fcc
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="video file or URL (or a compressed clip with --decompress)")
    parser.add_argument("--model", "-m", required=True, help="model file (path or URL) written by featcomp.save_model / featcomp train")
    parser.add_argument("-o", "--output", required=True, help="output: compressed clip (.fcc) or features (.npy)")
    parser.add_argument("--decompress", action="store_true", help="decode a compressed clip to float32 features (.npy)")
    parser.add_argument("--device", default="cpu", help="torch device for the backbone and head (default cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="frames per backbone call")
    parser.add_argument("--fps", type=float, default=None, help="override the model's sampling rate (frames per second)")
    parser.add_argument("--rate", type=float, default=None,
                        help="variable-rate models: rate level to encode at (0 = most bits; floats interpolate)")
    add_rate_control_arguments(parser, excludes_rate=True)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    from featcomp.storage import add_storage_option_argument

    add_storage_option_argument(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")


def add_rate_control_arguments(parser: argparse.ArgumentParser, *, excludes_rate: bool = False) -> None:
    """--keep-top1 / --max-distortion / --max-kl / --keep-fraction: per-frame rate control, meaning what the
    job's ``inference`` options of the same names mean (``featcomp compress``, ``featcomp refit-temporal``)."""
    rate = " Excludes --rate." if excludes_rate else ""
    parser.add_argument("--keep-top1", type=float, default=None, metavar="TARGET",
                        help="per-frame rate control (variable-rate models with a synthesis): give each frame the "
                             "coarsest level at which the backbone's own classifier keeps its top-1 on the decoded "
                             "features; TARGET in (0, 1] is the fraction of frames to keep (below 1 the most "
                             "expensive frames are given up)." + rate)
    parser.add_argument("--max-distortion", type=float, default=None, metavar="D",
                        help="per-frame rate control by a fidelity target, for any backbone (no classifier needed): "
                             "each frame gets the coarsest level whose decoded features are within relative squared "
                             "error D (||x_hat - x||^2 / ||x||^2). Excludes --keep-top1" + (" and --rate." if excludes_rate else "."))
    parser.add_argument("--max-kl", type=float, default=None, metavar="B",
                        help="per-frame rate control by a KL budget: KL of the backbone classifier's softmax on the "
                             "original vs decoded features <= B nats per frame")
    parser.add_argument("--keep-fraction", type=float, default=None, metavar="T",
                        help="with --max-distortion/--max-kl: the fraction of frames that must meet the budget "
                             "(default 1; below 1 the most expensive frames get the coarsest level)")


def rate_control_from_args(args: argparse.Namespace):
    """The ``RateControl`` that --keep-top1 / --max-distortion / --max-kl (+ --keep-fraction) ask for, or None.

    The flags mean what the job's ``inference`` options of the same names mean, so they are checked (which
    exclude each other, --keep-fraction only with a budget, --rate) by the same ``InferenceConfig``."""
    import re

    from featcomp.errors import ConfigError
    from featcomp.pipelines.config import InferenceConfig

    try:
        rc = InferenceConfig(rate=getattr(args, "rate", None), keep_top1=args.keep_top1,
                             max_distortion=args.max_distortion, max_kl=args.max_kl,
                             keep_fraction=args.keep_fraction).rate_control
    except ConfigError as e:  # the same rules, said in the command line's words
        raise ConfigError(re.sub(r"inference\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(e))) from None
    if rc is None:
        return None
    from featcomp.ratecontrol import RateControl

    return RateControl(**rc)


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from featcomp.model import CompressedClip, Extractor, decode_clip, load_model

    from featcomp.storage import storage_options_from_args

    opts = storage_options_from_args(args)
    model = load_model(args.model, storage_options=opts)
    out = Path(args.output)
    if args.decompress:
        from featcomp.errors import CodecError

        try:
            blob = Path(args.input).read_bytes()
        except OSError as e:
            raise CodecError(f"cannot read compressed clip {args.input}: {e}") from None
        clip = CompressedClip.from_bytes(blob)
        if not clip.made_by(model.codec.digest):
            raise CodecError(f"{args.input} was made by codec {clip.codec_digest[:12]}..., model {args.model} has "
                             f"{model.codec.digest[:12]}...")
        feats = decode_clip(model, clip)  # any codec kind; the clip's recorded rate
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, feats)
        summary = {"input": args.input, "output": str(out), "frames": clip.num_frames, "shape": list(feats.shape)}
    else:
        sampling = model.sampling
        if args.fps is not None:
            from featcomp.video import SamplingConfig, SamplingMode

            base = sampling if not isinstance(sampling, dict) and sampling is not None else None
            sampling = (base.replace(mode=SamplingMode.FPS, fps=args.fps) if base is not None
                        else SamplingConfig(mode=SamplingMode.FPS, fps=args.fps))
        rc = rate_control_from_args(args)
        hint = model.rate_control_hint(args.model) if rc is None and args.rate is None else None
        if hint:  # a warning, shown even with --quiet
            print(f"featcomp compress: warning: {hint}", file=sys.stderr, flush=True)
        if not args.quiet:
            name = getattr(model.backbone, "name", None) or (model.backbone or {}).get("name", "?")
            print(f"featcomp compress: building backbone {name} on {args.device}...", file=sys.stderr, flush=True)
        ex = Extractor(model, device=args.device, batch_size=args.batch_size, sampling=sampling, rate=args.rate,
                       rate_control=rc)
        from featcomp.storage import is_url

        if is_url(args.input):  # a video URL: staged in a temporary file, like the job's decode tasks
            import tempfile

            from featcomp.storage import copy_to_local

            with tempfile.TemporaryDirectory(prefix="featcomp-compress-") as d:
                local = copy_to_local(args.input, str(Path(d) / (Path(args.input.split("?")[0]).name or "video")), opts)
                clip = _compress_with_progress(ex, local, quiet=args.quiet)
        else:
            clip = _compress_with_progress(ex, args.input, quiet=args.quiet)
        blob = clip.to_bytes()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
        summary = {"input": args.input, "output": str(out), "frames": clip.num_frames, "latent_shape": list(clip.shape),
                   "stream_bytes": len(clip.data), "file_bytes": len(blob),
                   "bits_per_frame": round(clip.bits_per_frame, 2), "codec_digest": clip.codec_digest[:16],
                   "entropy_model": clip.kind, "rate": clip.rate}
        if clip.levels is not None:
            summary["levels"] = np.bincount(clip.levels, minlength=model.head.config.rate_levels).tolist()
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stdout)
    return 0


def _compress_with_progress(ex, video: str, *, quiet: bool):
    """``ex.compress(video)`` with a progress line on stderr: frames done, frames/s, position in the video."""
    if quiet:
        return ex.compress(video)
    from tqdm import tqdm

    bar = tqdm(desc=f"compress {Path(video).name}", unit="frame", file=sys.stderr, dynamic_ncols=True, disable=False,
               mininterval=0.5)

    def step(n: int, t: float) -> None:
        bar.set_postfix_str(f"at {t:,.1f} s of video", refresh=False)
        bar.update(n)

    try:
        return ex.compress(video, progress=step)
    finally:
        bar.close()

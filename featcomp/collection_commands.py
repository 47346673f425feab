"""``featcomp transcode`` and ``featcomp import``: collections of features without decoding video.

Heavy imports stay inside the functions (``featcomp --help`` imports no torch).
"""

from __future__ import annotations

import argparse
import json
import sys


def _bar(total: int | None, what: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="video", file=sys.stderr, disable=quiet, dynamic_ncols=True)


def configure_transcode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raw_store", metavar="RAW_STORE",
                        help="raw store, float16 or int8 (featcomp extract --backbone / --raw, featcomp import)")
    parser.add_argument("--model", "-m", required=True, help="model file whose frozen head codes the features")
    parser.add_argument("-o", "--output", required=True, metavar="CODED_STORE",
                        help="coded store to write (created, or resumed: videos already there are skipped)")
    parser.add_argument("--rate", type=float, default=None, help="variable-rate models: the rate level")
    parser.add_argument("--chunk-frames", type=int, default=None, help="frames per chunk (default automatic)")
    parser.add_argument("--device", default="cpu", help="torch device for the head (default cpu)")
    parser.add_argument("--allow-other-backbone", action="store_true",
                        help="code features whose recorded backbone differs from the model's")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")


def main_transcode(args: argparse.Namespace) -> int:
    from featcomp.collection import transcode_store
    from featcomp.store import open_store

    total = len(open_store(args.raw_store))
    with _bar(total, "transcode", args.quiet) as bar:
        res = transcode_store(args.raw_store, args.model, args.output, rate=args.rate, chunk_frames=args.chunk_frames,
                              device=args.device, allow_other_backbone=args.allow_other_backbone,
                              progress=lambda vid, n: bar.update(1))
    res["bits_per_frame"] = round(res["payload_bits"] / res["frames"], 2) if res["frames"] else None
    res["output"] = args.output
    print(json.dumps(res) if args.json else " ".join(f"{k}={v}" for k, v in res.items()))
    return 0


def configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="DIR",
                        help="directory of per-video feature files (.npy, or .h5 with h5py), e.g. video_features' output")
    parser.add_argument("-o", "--output", required=True, metavar="RAW_STORE", help="raw store to write (or resume)")
    parser.add_argument("--fps", type=float, required=True,
                        help="features per second: feature i of a video is at t0 + i / fps seconds")
    parser.add_argument("--t0", type=float, default=0.0, help="time of each video's first feature (default 0)")
    parser.add_argument("--key", default=None,
                        help="video_features' feature key: only <video>_<key>.npy files, ids without _<key>")
    parser.add_argument("--dataset", default=None, help=".h5 files: the dataset to read (default: the only one)")
    parser.add_argument("--backbone", default=None, help="name of the backbone that made them, recorded in the store")
    parser.add_argument("--raw-dtype", choices=("float16", "int8"), default="float16",
                        help="stored values: float16 (default), or int8 quantized per video and channel with float32 "
                             "scales (half the bytes; readers return float32)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress line on stderr")


def main_import(args: argparse.Namespace) -> int:
    from featcomp.store.importer import find_feature_files, import_features

    total = len(find_feature_files(args.src, args.key))
    with _bar(total, "import", args.quiet) as bar:
        res = import_features(args.src, args.output, fps=args.fps, t0=args.t0, key=args.key, dataset=args.dataset,
                              backbone={"name": args.backbone} if args.backbone else None, raw_dtype=args.raw_dtype,
                              progress=lambda vid, n: bar.update(1))
    res["output"] = args.output
    print(json.dumps(res) if args.json else " ".join(f"{k}={v}" for k, v in res.items()))
    return 0

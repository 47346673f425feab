"""``featcomp train``: train a compressibility head on cached features or a ``--raw`` store.

Inputs:

* ``.npy``: features (N, C[, T]); labels from ``--labels FILE.npy`` (int (N,)) if given;
* ``.npz``: arrays ``features`` (or ``x``) and optionally ``labels`` (or ``y``);
* ``.safetensors``: tensors ``features`` and optionally ``labels``;
* a directory or URL: a featcomp store written with ``--raw`` (float16 features), read with
  ``featcomp.open_store``; every frame of every video is one example; labels come from the videos'
  metadata key ``--label-key`` if given (one label per video, shared by its frames).

Writes one model file (``-o``) with :func:`featcomp.save_model` and prints the final metrics.

Example::

    featcomp train feats.npz --objective task --lam 0.01 --latent 64 --epochs 30 -o head.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from featcomp.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("features", help="features file (.npy/.npz/.safetensors) or a --raw store")
    parser.add_argument("--labels", help="labels .npy (int (N,)) for a .npy features file")
    parser.add_argument("--label-key", help="store input: the video metadata key that holds each video's label")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--objective", default="task", help="task | distill | reconstruct (default task)")
    parser.add_argument("--lam", type=float, default=1e-2, help="lambda: objective units per bit per vector")
    parser.add_argument("--latent", type=int, default=64, help="latent channels C' (default 64)")
    parser.add_argument("--analysis", default="linear", help="identity | linear | linear_gdn")
    parser.add_argument("--synthesis", default=None, help="none | linear | igdn_linear (default: by objective)")
    parser.add_argument("--metric", default=None, help="reconstruct objective: mse | cosine")
    parser.add_argument("--hidden", type=int, default=None, help="task objective: MLP hidden width (default linear)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val", type=float, default=0.1, help="fraction held out for validation (0 for none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="checkpoint path (resumed if it exists)")
    parser.add_argument("--backbone", help="backbone spec JSON (file or string) to record in the model file")
    parser.add_argument("--sampling", help="sampling config JSON (file or string) to record in the model file")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")


def _json_arg(value: str | None) -> Any:
    if value is None:
        return None
    p = Path(value)
    text = p.read_text() if p.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"featcomp train: {value!r} is neither a JSON file nor JSON ({e})") from None


def load_training_data(path: str, labels: str | None = None, label_key: str | None = None):
    """(features float32 (N, C[, T]), labels or None, info dict) from a file or a store (see module doc)."""
    import numpy as np

    p = Path(path)
    info: dict[str, Any] = {"source": str(path)}
    y = None
    if p.is_file() and p.suffix == ".npy":
        x = np.load(p)
    elif p.is_file() and p.suffix == ".npz":
        z = np.load(p)
        key = "features" if "features" in z else "x" if "x" in z else None
        if key is None:
            raise ConfigError(f"{path}: an .npz needs an array 'features' (or 'x'); has {list(z.keys())}")
        x = z[key]
        lk = "labels" if "labels" in z else "y" if "y" in z else None
        y = z[lk] if lk else None
    elif p.is_file() and p.suffix == ".safetensors":
        from safetensors.numpy import load_file

        t = load_file(str(p))
        if "features" not in t:
            raise ConfigError(f"{path}: a .safetensors input needs a tensor 'features'; has {sorted(t)}")
        x, y = t["features"], t.get("labels")
    elif p.is_dir() or "://" in str(path):
        from featcomp.store import open_store

        store = open_store(str(path))
        xs, ys = [], []
        for vid, video in store.items():
            f = video.features()
            xs.append(f)
            if label_key:
                meta = video.metadata or {}
                if label_key not in meta:
                    raise ConfigError(f"store {path}: video {vid!r} has no metadata key {label_key!r}")
                ys.append(np.full(len(f), int(meta[label_key]), np.int64))
        if not xs:
            raise ConfigError(f"store {path} holds no complete videos")
        x = np.concatenate(xs)
        y = np.concatenate(ys) if ys else None
        info["videos"] = len(xs)
        info["store_model_card"] = store.model_card or None
    else:
        raise ConfigError(f"featcomp train: {path} is not a .npy/.npz/.safetensors file or a store directory")
    if labels is not None:
        y = np.load(labels)
    x = np.asarray(x, np.float32)
    if y is not None:
        y = np.asarray(y)
        if len(y) != len(x):
            raise ConfigError(f"featcomp train: {len(x)} feature rows but {len(y)} labels")
    return x, y, info


def main(args: argparse.Namespace) -> int:
    from featcomp.model import save_model
    from featcomp.train.loop import train_head

    x, y, info = load_training_data(args.features, args.labels, args.label_key)
    opts: dict[str, Any] = {}
    if args.metric:
        opts["metric"] = args.metric
    if args.hidden:
        opts["hidden"] = args.hidden
    res = train_head(x, y, objective=args.objective, lam=args.lam, latent_channels=args.latent,
                     analysis=args.analysis, synthesis=args.synthesis, objective_options=opts,
                     val=(args.val if args.val and args.val > 0 else None), epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
                     checkpoint=args.checkpoint, progress=not args.no_progress)
    backbone = _json_arg(args.backbone)
    sampling = _json_arg(args.sampling)
    card = info.get("store_model_card")
    if isinstance(card, dict):  # a store made by `featcomp extract --backbone` records both
        backbone = backbone if backbone is not None else card.get("backbone")
        sampling = sampling if sampling is not None else card.get("sampling")
    last = res.history[-1] if res.history else {}
    save_model(args.output, res.head, backbone=backbone, sampling=sampling,
               training={"options": res.options, "history_last": last, "source": info.get("source")},
               extra=res.objective)
    print(json.dumps({"output": args.output, "examples": int(len(x)), **{k: round(v, 5) for k, v in last.items()}}))
    return 0

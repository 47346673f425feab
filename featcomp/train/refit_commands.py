"""``featcomp refit-temporal``: give a trained factorized head a temporal codec fitted to its own latents.

The recipe that codes video in the fewest bits at a given quality in our measurements
(docs/training.md, docs/temporal.md): train the head with the factorized rate (``featcomp train``),
then fit a temporal conditional codec to the head's integer latents on feature sequences in time
order, at the sampling rate you extract at. The integers, reconstruction and task quality stay
exactly the head's; only the bits change. This command does the second step
(:func:`featcomp.train.refit.fit_temporal_codec`) and writes a new model file.

Sequences:

* a directory or URL: a featcomp store written with ``--raw`` (backbone features, float16); each
  video is one sequence, in time order;
* ``.npz``: every array is one sequence, float (T_i, C, *), in time order.

``--val`` holds out that fraction of the sequences (the last ones in name order, at least one when
there are two or more) and keeps the fit that codes them in the fewest bits (early stopping, checked
every ``--eval-every`` steps); the summary line compares them under both codecs.

**Variable-rate heads** (per-frame rate control): give the rate control extraction will use
(``--keep-top1``, ``--max-distortion`` or ``--max-kl``, with ``--keep-fraction``; the flags of
``featcomp compress``). Each sequence is then encoded the way extraction encodes a clip (a level per
frame, the give-up quota per sequence) and the temporal codec is fitted on those integers; the top-1 and
KL targets build the model's backbone (its classifier is the teacher). Sequences are pooled features.

Examples::

    featcomp refit-temporal head.safetensors raw_5fps.zarr -o head_temporal.safetensors
    featcomp refit-temporal ladder.safetensors raw_5fps.zarr --keep-top1 0.95 -o ladder_temporal.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from featcomp.errors import ConfigError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file of a head trained with the factorized codec (featcomp train); "
                                      "a variable-rate one with a rate-control flag")
    parser.add_argument("sequences", help="a --raw store (one sequence per video) or an .npz of (T_i, C) arrays")
    parser.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    parser.add_argument("--val", type=float, default=0.1,
                        help="fraction of the sequences held out for early stopping (default 0.1; 0: none)")
    parser.add_argument("--window", type=int, default=4, help="frames per training window (default 4)")
    parser.add_argument("--steps", type=int, default=None,
                        help="Adam steps: the most with --val (default 3000), the count without (default 1000)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between validation checks (default 100)")
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--prior", help='TemporalPrior options as JSON (default {"context": "diagonal"})')
    parser.add_argument("--seed", type=int, default=0)
    from featcomp.model_commands import add_rate_control_arguments

    add_rate_control_arguments(parser)


def load_sequences(path: str) -> list[tuple[str, Any]]:
    """``(name, float32 (T, C, *))`` sequences in name order from a --raw store or an .npz (module doc)."""
    import numpy as np

    p = Path(path)
    if p.is_file() and p.suffix == ".npz":
        with np.load(p) as z:
            seqs = [(k, np.asarray(z[k], np.float32)) for k in sorted(z.files)]
    elif p.is_dir() or "://" in str(path):
        from featcomp.store import open_store

        store = open_store(str(path))
        if store.mode != "raw":
            raise ConfigError(f"store {path} holds coded latents, not backbone features: give a store written "
                              "with --raw (the head's input)")
        seqs = [(vid, np.asarray(video.features(), np.float32)) for vid, video in sorted(store.items())]
    else:
        raise ConfigError(f"featcomp refit-temporal: {path} is not an .npz file or a store directory")
    for name, s in seqs:
        if s.ndim < 2:
            raise ConfigError(f"{path}: sequence {name!r} must be (T, C, *), got shape {s.shape}")
    if not seqs:
        raise ConfigError(f"{path} holds no sequences")
    return seqs


def _teacher(model: Any, path: str):
    """The model's backbone classifier (``classify``), the teacher of the top-1 and KL rate-control targets."""
    if model.backbone is None:
        raise ConfigError(f"{path}: the model names no backbone, so there is no classifier to keep the top-1 (or KL) "
                          "of; --max-distortion needs none")
    from featcomp.backbones import build_backbone

    bb = build_backbone(model.backbone, device="cpu", amp="none").eval()
    if not getattr(bb, "has_classifier", True):
        raise ConfigError(f"{path}: backbone {getattr(model.backbone, 'name', model.backbone)!r} has no classifier; "
                          "--max-distortion needs none")
    return bb.classify


def main(args: argparse.Namespace) -> int:
    import torch

    from featcomp.model_commands import rate_control_from_args

    from featcomp.model import load_model, save_model
    from featcomp.train.refit import fit_temporal_codec, sequence_encoder

    if not 0 <= args.val < 1:
        raise ConfigError(f"--val must be in [0, 1), got {args.val}")
    m = load_model(args.model)
    seqs = load_sequences(args.sequences)
    n_val = 0 if args.val == 0 or len(seqs) < 2 else max(1, math.floor(args.val * len(seqs)))
    if any(len(s) < 2 for _, s in seqs[len(seqs) - n_val :]):
        raise ConfigError(f"{args.sequences}: the held-out sequences need 2 or more frames each "
                          "(lower --val, or 0 for none)")
    train, val = seqs[: len(seqs) - n_val], seqs[len(seqs) - n_val :]
    prior = json.loads(args.prior) if args.prior else None
    rc = rate_control_from_args(args)
    if rc is None and m.head.config.rate_levels:
        raise ConfigError(f"{args.model} is a variable-rate model ({m.head.config.rate_levels} levels): give the per-frame "
                          "rate control extraction will use (--keep-top1, --max-distortion or --max-kl), so the "
                          "codec is fitted on the integers it will code")
    teacher = _teacher(m, args.model) if rc is not None and rc.needs_teacher else None
    hist: list = []
    steps = args.steps or (3000 if val else 1000)
    head = fit_temporal_codec(m.head, [s for _, s in train], window=args.window, steps=steps, lr=args.lr,
                              prior=prior, seed=args.seed, val=[s for _, s in val] or None,
                              eval_every=args.eval_every, history=hist, rate_control=rc, teacher=teacher)
    summary: dict[str, Any] = {"output": args.output, "train_sequences": len(train), "val_sequences": len(val)}
    if rc is not None:
        summary["rate_control"] = rc.to_dict()
    if val:
        frames = fac = tem = 0
        encode = sequence_encoder(m.head, rc, teacher)
        with torch.no_grad():
            for _, s in val:
                k = encode(s)
                frames += len(k)
                fac += 8 * len(m.head.codec.compress_symbols(k))
                tem += 8 * len(head.codec.compress_symbols(k))
        best = min(hist, key=lambda h: h[1])
        summary |= {"best_step": best[0], "val_bits_per_frame_factorized": round(fac / frames, 2),
                    "val_bits_per_frame_temporal": round(tem / frames, 2), "val_ratio": round(fac / tem, 3)}
    training = dict(m.training or {})
    training["refit_temporal"] = {"source": str(args.sequences), "window": args.window, "steps": steps,
                                  "rate_control": None if rc is None else rc.to_dict(),
                                  "lr": args.lr, "prior": prior, "seed": args.seed,
                                  "val": [name for name, _ in val], **{k: v for k, v in summary.items() if k != "output"}}
    save_model(args.output, head, backbone=m.backbone, sampling=m.sampling, training=training,
               metadata=m.metadata or None, extra=m.extra or None)
    print(json.dumps(summary))
    return 0

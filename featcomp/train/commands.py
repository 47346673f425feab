"""``featcomp train``: train a compressibility head on cached features or a ``--raw`` store.

Inputs:

* ``.npy``: features (N, C[, T]); labels from ``--labels FILE.npy`` (int (N,)) if given;
* ``.npz``: arrays ``features`` (or ``x``) and optionally ``labels`` (or ``y``);
* ``.safetensors``: tensors ``features`` and optionally ``labels``;
* a directory or URL: a featcomp store written with ``--raw`` (float16 features), read with
  ``featcomp.open_store``; every frame of every video is one example; labels come from the videos'
  metadata key ``--label-key`` if given (one label per video, shared by its frames).

Writes one model file (``-o``) with :func:`featcomp.save_model` and prints the final metrics.

Training length is counted in optimizer steps: ``--steps N``, or ``--epochs`` raised to at least
``--min-steps`` (default 500), so a small feature set is not silently under-trained; with a validation
split the epoch with the lowest validation loss is kept (``--patience`` stops early), and a warning says
when the rate was still falling at the end.

The label-free ``distill`` objective needs a teacher classifier: ``--teacher backbone`` takes the
classifier of the backbone recorded with the features (``--backbone`` or the store's model card),
``--teacher FILE`` a linear classifier saved as ``.safetensors``/``.pt``/``.npz`` with ``weight`` (K, C)
and optionally ``bias`` (K,). ``--init-analysis teacher_svd`` starts the head from the SVD of that
classifier's weight (docs/training.md).

Temporal coding by default where it wins: when the features come from a store of two or more videos
(sequences in time order), ``--temporal auto`` (the default) also fits a temporal codec to the trained
head's own integers on the videos it trains on (:func:`featcomp.train.refit.fit_temporal_codec`), codes
the held-out videos (the last ``--temporal-val`` fraction in name order, at least one) with both codecs,
and keeps the temporal one only when it codes them in fewer bits (at least 2% fewer: it decodes frame
after frame, so a gain within noise is not worth its speed); the choice and both figures are
printed and recorded in the model file (``training["temporal"]``). The integers, and so the quality, are
the head's either way. ``--temporal off`` keeps the factorized codec.

Examples::

    featcomp train feats.npz --objective task --lam 0.01 --latent 64 --steps 3000 -o head.safetensors
    featcomp train raw.zarr --objective distill --teacher backbone --init-analysis teacher_svd --tau 2 -o d.safetensors
    featcomp train raw.zarr --objective distill --teacher backbone --ladder default --keep-top1 0.95 -o ladder.safetensors

``--ladder`` builds instead the hand-built head of docs/rd.md for per-frame rate control (no training): the
teacher-SVD projection quantized on a ladder of steps, its tables fitted for ``--keep-top1``
(:func:`featcomp.ratecontrol.teacher_ladder_head`); with a store of 2+ videos ``--temporal auto`` also fits a
temporal codec on the rate-controlled integers and keeps it when it wins on held-out videos. Extract with the
same target: ``featcomp extract ... --keep-top1 0.95`` / ``featcomp compress ... --keep-top1 0.95``.
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
    parser.add_argument("--latent", type=int, default=None,
                        help="latent channels C' (default 64; with --ladder: 1000, bounded by the teacher's rank)")
    parser.add_argument("--analysis", default="linear", help="identity | linear | linear_gdn")
    parser.add_argument("--synthesis", default=None, help="none | linear | igdn_linear (default: by objective)")
    parser.add_argument("--metric", default=None, help="reconstruct objective: mse | cosine")
    parser.add_argument("--hidden", type=int, default=None, help="task objective: MLP hidden width (default linear)")
    parser.add_argument("--epochs", type=int, default=20, help="passes over the data (raised to --min-steps)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps to run (overrides --epochs)")
    parser.add_argument("--min-steps", type=int, default=500,
                        help="at least this many optimizer steps when counting in epochs (default 500)")
    parser.add_argument("--patience", type=int, default=None,
                        help="with --val: stop after this many epochs without a lower validation loss")
    parser.add_argument("--teacher", default=None,
                        help="distill: 'backbone' (the recorded backbone's classifier) or a linear classifier file "
                             "(.safetensors/.pt/.npz with weight (K, C) and optional bias (K,))")
    parser.add_argument("--tau", type=float, default=None, help="distill: softmax temperature (default 1)")
    parser.add_argument("--student", default=None, help="distill: teacher (frozen, default) | copy (trainable copy)")
    parser.add_argument("--init-analysis", default=None, choices=["teacher_svd"],
                        help="start the linear analysis/synthesis from the SVD of the teacher's weight")
    target = parser.add_argument_group(
        "rate selection (instead of --lam): train over lambdas, keep the cheapest head that holds the target on --val")
    target.add_argument("--max-drop", type=float, default=None,
                        help="task: accuracy points below a linear probe on the float features (e.g. 0.5)")
    target.add_argument("--min-agreement", type=float, default=None,
                        help="distill: teacher top-1 agreement on the decoded features (e.g. 0.95)")
    target.add_argument("--max-distortion", type=float, default=None, help="reconstruct: mean squared error")
    target.add_argument("--lams", default=None, help="comma-separated lambda grid (default 1e-4 .. 1, 9 values)")
    ladder = parser.add_argument_group(
        "rate-control ladder (instead of training): the hand-built head of docs/rd.md, for per-frame rate control")
    ladder.add_argument("--ladder", default=None, metavar="STEPS",
                        help="'default' (11 steps 0.25..8) or comma-separated ascending steps: build the teacher-SVD "
                             "projection quantized on this step ladder (no training; needs --objective distill and "
                             "--teacher), its tables fitted for per-frame rate control; extract with the same "
                             "--keep-top1. Uses --latent, --val (rows held out; a store with --temporal auto holds "
                             "out the --temporal-val videos instead), --temporal*, --seed; the training options (--lam, "
                             "--steps, --epochs, --analysis, --synthesis, --init-analysis, --tau, ...) do not apply")
    ladder.add_argument("--keep-top1", type=float, default=None, metavar="TARGET",
                        help="with --ladder: the fraction of frames whose teacher top-1 the rate control keeps, which "
                             "the tables are fitted for (default 0.95)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--val", type=float, default=0.1, help="fraction held out for validation (0 for none)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="checkpoint path (resumed if it exists)")
    parser.add_argument("--backbone", help="backbone spec JSON (file or string) to record in the model file")
    parser.add_argument("--sampling", help="sampling config JSON (file or string) to record in the model file")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    temporal = parser.add_argument_group("temporal coding (store inputs with 2+ videos)")
    temporal.add_argument("--temporal", choices=["auto", "off"], default="auto",
                          help="auto (default): fit a temporal codec to the head's latents and keep it when it codes "
                               "held-out videos in fewer bits; off: keep the factorized codec")
    temporal.add_argument("--temporal-val", type=float, default=0.2,
                          help="fraction of the videos held out to choose the codec (default 0.2, at least one)")
    temporal.add_argument("--temporal-steps", type=int, default=2000,
                          help="most Adam steps of the temporal fit (validation keeps the best; default 2000)")


def _json_arg(value: str | None) -> Any:
    if value is None:
        return None
    p = Path(value)
    text = p.read_text() if p.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"featcomp train: {value!r} is neither a JSON file nor JSON ({e})") from None


def _sweep(args: argparse.Namespace, x: Any, y: Any, cfg: Any, teacher: Any):
    """Run :func:`featcomp.train.sweep.sweep_lambda` for the command line; prints the curve to stderr."""
    import sys

    from featcomp.train.sweep import QualityTarget, sweep_lambda

    target = QualityTarget(max_drop=args.max_drop, min_agreement=args.min_agreement,
                           max_distortion=args.max_distortion)
    if args.objective != target.objective:
        raise ConfigError(f"--{ {'task': 'max-drop', 'distill': 'min-agreement', 'reconstruct': 'max-distortion'}[target.objective]}"
                          f" is a target for --objective {target.objective}, not {args.objective}")
    if not (args.val and 0 < args.val < 1):
        raise ConfigError("rate selection chooses on a validation split: give --val in (0, 1)")
    try:
        lams = None if args.lams is None else [float(v) for v in args.lams.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--lams: expected comma-separated numbers, got {args.lams!r}") from None
    say = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    # every trained point shares the run's options except lambda, the checkpoint and the per-run bar
    cfg = cfg.replace(checkpoint=None, progress=False)
    res = sweep_lambda(x, y, target=target, val=float(args.val), lams=lams, progress=say, teacher=teacher,
                       seed=cfg.seed, config=cfg)
    print(res.table(), file=sys.stderr)
    if res.result is None:
        raise ConfigError(f"no lambda of {[p.lam for p in res.points]} holds the target ({target.describe()}); "
                          "try smaller lambdas (--lams), more latents (--latent) or more steps (--steps)")
    return res


def temporal_split(x: Any, runs: list, val: float, window: int = 4) -> tuple[list, list] | None:
    """The videos :func:`choose_temporal` trains on and judges on: ``(train, held)`` lists of ``(name, rows)``,
    the last ``val`` fraction in name order held out (at least one), videos shorter than ``window`` left
    out; None with fewer than two usable videos. ``runs``: ``info["sequences"]`` (name, frames) in row order."""
    seqs, pos = [], 0
    for name, n in runs:
        seqs.append((name, x[pos:pos + n]))
        pos += n
    seqs = sorted((s for s in seqs if len(s[1]) >= window), key=lambda s: s[0])
    if len(seqs) < 2:
        return None
    n_val = min(len(seqs) - 1, max(1, round(len(seqs) * val)))
    return seqs[: len(seqs) - n_val], seqs[len(seqs) - n_val:]


def choose_temporal(head: Any, x: Any, info: dict[str, Any], *, val: float = 0.2, steps: int = 2000, seed: int = 0,
                    window: int = 4, min_gain: float = 0.02, progress: bool = True, rate_control: Any = None,
                    teacher: Any = None) -> tuple[Any, dict[str, Any] | None]:
    """Keep a temporal codec fitted to ``head``'s latents when it codes held-out videos in fewer bits.

    Args:
        head: the trained head (factorized; fixed-rate, or variable-rate with ``rate_control``; anything
            else is returned unchanged).
        x: the training rows, float (N, C, *), videos one after another in time order.
        info: :func:`load_training_data`'s info; ``info["sequences"]`` (name, frames) splits ``x`` into videos.
        val: fraction of the videos (the last ones in name order, at least one) held out to choose.
        steps: most steps of the temporal fit (:func:`featcomp.train.refit.fit_temporal_codec`, validated).
        min_gain: the temporal codec is kept only when it saves at least this fraction of the held-out bits:
            it decodes frame after frame (slower than the factorized codec), so a gain within noise is not
            worth it.
        rate_control, teacher: a variable-rate head's per-frame rate control (and its teacher): both codecs
            are judged on the rate-controlled integers, and the temporal one is fitted on them.

    Returns:
        ``(head, record)``: the head to save (the temporal one when it won) and what was measured (None when
        the input has no sequences to judge on: fewer than two videos of ``window`` frames).
    """
    import sys

    import torch

    from featcomp.train.refit import fit_temporal_codec, sequence_encoder

    runs = info.get("sequences") or []
    if not 0 < val < 1:
        raise ConfigError(f"--temporal-val must be in (0, 1), got {val}")
    frozen = head.freeze() if hasattr(head, "freeze") else head
    if getattr(frozen, "kind", None) != "factorized" or (frozen.config.rate_levels and rate_control is None):
        return head, None
    encode = sequence_encoder(frozen, rate_control, teacher)
    split = temporal_split(x, runs, val, window)
    if split is None:
        return head, None
    train, held = split
    temporal = fit_temporal_codec(frozen, [s for _, s in train], window=window, steps=steps, seed=seed,
                                  val=[s for _, s in held], rate_control=rate_control, teacher=teacher)
    frames = fac = tem = 0
    with torch.no_grad():
        for _, s in held:
            k = encode(s)
            frames += len(k)
            fac += 8 * len(frozen.codec.compress_symbols(k))
            tem += 8 * len(temporal.codec.compress_symbols(k))
    won = tem < (1.0 - min_gain) * fac
    record = {"chosen": "temporal" if won else "factorized", "val_videos": [n for n, _ in held],
              "train_videos": len(train), "steps": steps, "min_gain": min_gain,
              "val_bits_per_frame": {"factorized": round(fac / frames, 2), "temporal": round(tem / frames, 2)}}
    if progress:
        print(f"temporal codec: {tem / frames:.1f} bits/frame on {len(held)} held-out video(s) against "
              f"{fac / frames:.1f} factorized: keeping the {record['chosen']} codec", file=sys.stderr)
    return (temporal if won else head), record


def _ladder_main(args: argparse.Namespace, x: Any, info: dict[str, Any], teacher: Any, backbone: Any,
                 sampling: Any) -> int:
    """``featcomp train --ladder``: the teacher-SVD step-ladder head for per-frame rate control (no training)."""
    import math
    import sys

    from featcomp.model import save_model
    from featcomp.ratecontrol import DEFAULT_LADDER, RateControl, choose_levels, teacher_ladder_head

    if args.objective != "distill" or teacher is None:
        raise ConfigError("--ladder builds the distill recipe's head: give --objective distill and --teacher "
                          "(backbone or a linear classifier file)")
    if any(v is not None for v in (args.max_drop, args.min_agreement, args.max_distortion)):
        raise ConfigError("--ladder is not trained over lambdas: drop --max-drop / --min-agreement / --max-distortion")
    if x.ndim != 2:
        raise ConfigError(f"--ladder needs pooled features (N, C); got shape {x.shape}")
    if args.ladder == "default":
        steps = DEFAULT_LADDER
    else:
        try:
            steps = tuple(float(v) for v in args.ladder.split(",") if v.strip())
        except ValueError:
            raise ConfigError(f"--ladder: expected 'default' or comma-separated steps, got {args.ladder!r}") from None
    if args.keep_top1 is not None and not 0.0 < args.keep_top1 <= 1.0:
        raise ConfigError(f"--keep-top1 must be in (0, 1], got {args.keep_top1}")
    rc = RateControl(target_agreement=0.95 if args.keep_top1 is None else args.keep_top1)
    split = (temporal_split(x, info.get("sequences") or [], args.temporal_val)
             if args.temporal == "auto" and 0 < args.temporal_val < 1 else None)
    if split is not None:  # a store: hold out the videos choose_temporal judges the codecs on, so neither has seen them
        import numpy as np

        x_tr, x_val = np.concatenate([r for _, r in split[0]]), np.concatenate([r for _, r in split[1]])
        n_val = len(x_val)
    else:
        n_val = math.floor(args.val * len(x)) if args.val and 0 < args.val < 1 else 0
        x_tr, x_val = x[: len(x) - n_val], x[len(x) - n_val:]
    head = teacher_ladder_head(x_tr, teacher, latent_channels=1000 if args.latent is None else args.latent, steps=steps, control=rc)
    record: dict[str, Any] = {"steps": list(steps), "latent": head.latent_channels, "rate_control": rc.to_dict(),
                              "train_rows": int(len(x_tr))}
    if n_val:
        ch = choose_levels(head, x_val, teacher, rc)
        level_bits = max(1, math.ceil(math.log2(len(steps))))
        record["val"] = {"rows": int(n_val), "top1_agreement": round(ch.agreement, 4),
                         "bits_per_frame": round(8 * len(head.codec.compress_symbols(ch.k)) / n_val + level_bits, 2)}
    temporal = None
    if args.temporal == "auto":
        head, temporal = choose_temporal(head, x, info, val=args.temporal_val, steps=args.temporal_steps,
                                         seed=args.seed, progress=not args.no_progress, rate_control=rc, teacher=teacher)
    if not args.no_progress:
        print(f"ladder head: {head.latent_channels} latents, {len(steps)} levels, tables fitted for "
              f"--keep-top1 {rc.target_agreement:g}" + (f"; held-out rows: {record['val']}" if n_val else ""),
              file=sys.stderr)
    save_model(args.output, head, backbone=backbone, sampling=sampling,
               training={"ladder": record, **({} if temporal is None else {"temporal": temporal}),
                         "source": info.get("source")})
    print(json.dumps({"output": args.output, "examples": int(len(x)), "ladder": record,
                      **({} if temporal is None else {"codec": temporal["chosen"],
                                                      "val_bits_per_frame": temporal["val_bits_per_frame"]})}))
    return 0


def load_teacher(value: str, backbone: Any):
    """The ``--teacher`` classifier: ``backbone`` (the classifier of ``backbone``, a spec dict) or a file.

    Returns:
        an ``nn.Module`` mapping features (N, C) to logits (N, K).

    Raises:
        ConfigError: no backbone to take a classifier from, a backbone without one, or a bad file.
    """
    import numpy as np
    import torch
    from torch import nn

    if value == "backbone":
        if not backbone:
            raise ConfigError("--teacher backbone: no backbone is recorded with these features; give --backbone SPEC")
        from featcomp.backbones import BackboneSpec, build_backbone

        spec = backbone if isinstance(backbone, BackboneSpec) else BackboneSpec.from_dict(dict(backbone))
        bb = build_backbone(spec)
        if bb.classifier is None:
            raise ConfigError(f"--teacher backbone: backbone {spec.name!r} has no classifier module to distill from; "
                              "give --teacher FILE with a linear classifier")
        return bb.classifier.eval()
    p = Path(value)
    if not p.is_file():
        raise ConfigError(f"--teacher {value!r}: not 'backbone' and no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            t = dict(load_file(str(p)))
        elif p.suffix == ".npz":
            t = dict(np.load(p))
        else:
            t = {k: v.numpy() for k, v in torch.load(p, map_location="cpu", weights_only=True).items()}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ConfigError(f"--teacher {value}: cannot read it ({type(e).__name__}: {e})") from None
    w = t.get("weight")
    if w is None or np.asarray(w).ndim != 2:
        raise ConfigError(f"--teacher {value}: needs a 2-d 'weight' (K, C); has {sorted(t)}")
    w = np.asarray(w, np.float32)
    b = t.get("bias")
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
        if b is not None:
            lin.bias.copy_(torch.from_numpy(np.asarray(b, np.float32).reshape(-1)))
    return lin.eval()


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
        xs, ys, names = [], [], []
        for vid, video in store.items():
            f = video.features()
            xs.append(f)
            names.append(vid)
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
        info["sequences"] = [(n, len(f)) for n, f in zip(names, xs)]  # time-ordered runs of rows of x
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
    if args.tau is not None:
        opts["tau"] = args.tau
    if args.student:
        opts["student"] = args.student
    backbone = _json_arg(args.backbone)
    sampling = _json_arg(args.sampling)
    card = info.get("store_model_card")
    if isinstance(card, dict):  # a store made by `featcomp extract --backbone` records both
        backbone = backbone if backbone is not None else card.get("backbone")
        sampling = sampling if sampling is not None else card.get("sampling")
    teacher = load_teacher(args.teacher, backbone) if args.teacher else None
    if args.objective == "distill" and teacher is None and y is None:
        raise ConfigError("featcomp train --objective distill needs a teacher: --teacher backbone or --teacher FILE "
                          "(or teacher logits as the labels)")
    if args.init_analysis and teacher is None:
        raise ConfigError("--init-analysis teacher_svd needs --teacher")
    if args.patience is not None and not (args.val and args.val > 0):
        raise ConfigError("--patience needs a validation split (--val > 0)")
    from featcomp.train.config import TrainConfig

    if args.ladder is not None:
        return _ladder_main(args, x, info, teacher, backbone, sampling)
    if args.keep_top1 is not None:
        raise ConfigError("--keep-top1 goes with --ladder (the rate control a ladder's tables are fitted for)")
    cfg = TrainConfig(objective=args.objective, lam=args.lam, latent_channels=64 if args.latent is None else args.latent, analysis=args.analysis,
                      synthesis=args.synthesis, objective_options=opts, init_analysis=args.init_analysis,
                      epochs=args.epochs, steps=args.steps, min_steps=args.min_steps, patience=args.patience,
                      batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
                      checkpoint=args.checkpoint, progress=not args.no_progress)
    sweep = None
    if any(v is not None for v in (args.max_drop, args.min_agreement, args.max_distortion)):
        sweep = _sweep(args, x, y, cfg, teacher)
        res = sweep.result
    else:
        res = train_head(x, y, config=cfg, teacher=teacher, val=(args.val if args.val and args.val > 0 else None))
    head, temporal = res.head, None
    if args.temporal == "auto":
        head, temporal = choose_temporal(res.head, x, info, val=args.temporal_val, steps=args.temporal_steps,
                                         seed=args.seed, progress=not args.no_progress)
    if temporal is not None:
        res.options["temporal"] = temporal
    last = res.history[-1] if res.history else {}
    if sweep is not None:
        res.options["sweep"] = {"target": sweep.target.describe(), "lam": sweep.lam,
                                "reference": sweep.reference, "points": [p.to_dict() for p in sweep.points]}
    save_model(args.output, head, backbone=backbone, sampling=sampling,
               training={"options": res.options, "history_last": last, "source": info.get("source")},
               extra=res.objective)
    print(json.dumps({"output": args.output, "examples": int(len(x)), "steps": res.options["steps"],
                      **({} if sweep is None else {"lam": sweep.lam}),
                      **({} if temporal is None else {"codec": temporal["chosen"],
                                                      "val_bits_per_frame": temporal["val_bits_per_frame"]}),
                      "best_epoch": res.options.get("best_epoch"), "rate_converged": res.options["rate_converged"],
                      **{k: round(v, 5) for k, v in last.items()}}))
    return 0

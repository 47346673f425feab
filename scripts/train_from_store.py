"""Train a linear classifier on features read from a featcomp store (copy this to start).

    .venv/bin/python scripts/train_from_store.py STORE --labels labels.csv [--window 16 --stride 8]
    .venv/bin/python scripts/train_from_store.py --demo        # builds a small synthetic store first

``labels.csv`` has a header ``video_id,label``. Each item is a whole video (or a window of it); the
classifier sees the masked mean of its frames' features (``(k + offsets) * scale``, decoded from the
store with no model file). Reports train/validation accuracy per epoch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featcomp.data import FeatureDataset, collate_features  # noqa: E402
from featcomp.store import open_store  # noqa: E402


def make_demo_store(path: Path, n_videos: int = 120, channels: int = 32, classes: int = 4) -> dict[str, int]:
    """A synthetic store whose latents carry their class in a few channels' means; returns labels."""
    from featcomp.entropy import EntropyCodec
    from featcomp.store import StoreWriter

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 0.25, (classes, channels))
    videos, labels = [], {}
    for i in range(n_videos):
        y = int(i % classes)
        t = int(rng.integers(20, 80))
        k = np.rint(centers[y] + rng.laplace(0, 1.0, (t, channels))).astype(np.int32)
        videos.append((f"demo/video-{i:04d}.mp4", k, np.arange(t) / 5.0))
        labels[videos[-1][0]] = y
    codec = EntropyCodec.fit(np.concatenate([v[1] for v in videos]))
    with StoreWriter(path, codec, model_card={"backbone": {"name": "synthetic"}}) as w:
        for vid, k, ts in videos:
            w.write(vid, k, ts)
    return labels


def masked_mean(batch: dict) -> torch.Tensor:
    """(B, L, C[, H, W]) features -> (B, C) mean over real frames (and spatial positions)."""
    x = batch["features"]
    if x.ndim > 3:
        x = x.flatten(3).mean(-1)
    m = batch["mask"].unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="train a linear probe from a featcomp store")
    ap.add_argument("store", nargs="?", help="store path or URL")
    ap.add_argument("--labels", help="CSV with video_id,label")
    ap.add_argument("--demo", action="store_true", help="build and use a small synthetic store")
    ap.add_argument("--window", type=int, default=None, help="frames per item (default: whole videos)")
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--val-fraction", type=float, default=0.25)
    args = ap.parse_args(argv)

    tmp = None
    if args.demo:
        tmp = tempfile.TemporaryDirectory()
        args.store = str(Path(tmp.name) / "demo-store")
        labels: object = make_demo_store(Path(args.store))
    elif args.store and args.labels:
        labels = args.labels
    else:
        ap.error("give STORE and --labels, or --demo")

    store = open_store(args.store)
    print(store, "| info:", {k: store.info()[k] for k in ("videos", "frames", "bits_per_frame")})
    ids = sorted(store)
    rng = np.random.default_rng(0)
    rng.shuffle(ids)
    n_val = int(len(ids) * args.val_fraction)
    train = FeatureDataset(store, labels, window=args.window, stride=args.stride, video_ids=ids[n_val:])
    val = FeatureDataset(store, labels, window=args.window, stride=args.stride, video_ids=ids[:n_val],
                         classes=train.classes)
    classes = train.classes
    n_classes = len(classes) if classes else int(max(train._labels.values())) + 1
    dim = int(np.prod(store[ids[0]].sample_shape[:1]))

    def loader(ds, shuffle):
        return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=shuffle, num_workers=args.workers,
                                           collate_fn=collate_features, persistent_workers=args.workers > 0)

    tl, vl = loader(train, True), loader(val, False)
    model = torch.nn.Linear(dim, n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    acc = 0.0
    for epoch in range(args.epochs):
        model.train()
        for b in tl:
            loss = torch.nn.functional.cross_entropy(model(masked_mean(b)), b["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for b in vl:
                correct += int((model(masked_mean(b)).argmax(1) == b["labels"]).sum())
                total += len(b["labels"])
        acc = correct / max(total, 1)
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, validation accuracy {acc:.3f} ({total} items)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

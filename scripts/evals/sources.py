"""Where the evaluations' features come from: Fashion-MNIST files, decoded clips, the natural images of
``data/images``, frame augmentations, and a backbone run over frames (with an on-disk cache).

Moved from ``scripts/rd_eval.py``, ``scripts/temporal_eval.py`` and ``scripts/generality_eval.py``
unchanged, so that their numbers stay the same.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array of a gzipped IDX file (the Fashion-MNIST format): images (n, 28, 28), labels (n,)."""
    with gzip.open(path) as f:
        b = f.read()
    nd = b[3]
    shape = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * nd).reshape(shape)


def read_fmnist(src: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels int64 (n,)) of Fashion-MNIST split ``train`` or ``t10k`` under ``src``."""
    return (read_idx(src / f"{split}-images-idx3-ubyte.gz"),
            read_idx(src / f"{split}-labels-idx1-ubyte.gz").astype(np.int64))


def fm_images(imgs: np.ndarray, size: int) -> np.ndarray:
    """28x28 grey uint8 -> (n, size, size, 3) uint8, float bilinear upsampling."""
    x = torch.from_numpy(np.array(imgs)).float().unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.round().clamp(0, 255).byte().expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous().numpy()


def clip_fps(path: Path) -> float:
    """The average frame rate of a video file (25 when the container does not say)."""
    import av

    with av.open(str(path)) as c:
        r = c.streams.video[0].average_rate
        return float(r) if r else 25.0


def decode_clip(path: Path) -> np.ndarray:
    """Every frame of a video, uint8 (n, H, W, 3), through featcomp's frame sampling (``SamplingMode.ALL``)."""
    from featcomp.video import SamplingConfig, SamplingMode, sample_frames

    return np.concatenate([b.frames for b in sample_frames(str(path), SamplingConfig(mode=SamplingMode.ALL,
                                                                                     batch_size=64))])


def decode_clip_pyav(path: Path) -> np.ndarray:
    """Every frame of a video, uint8 (n, H, W, 3), decoded by PyAV directly (``temporal_eval``'s clips)."""
    import av

    with av.open(str(path)) as f:
        return np.stack([fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)])


def natural_images(root: Path, min_side: int) -> list[np.ndarray]:
    """RGB uint8 images under ``root`` (``data/images``: scikit-image's and matplotlib's bundled samples,
    ``scripts/fetch_data.py --only images``) whose short side is at least ``min_side``, sorted by path."""
    from PIL import Image

    out = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
            im = np.asarray(Image.open(p).convert("RGB"))
            if min(im.shape[:2]) >= min_side:
                out.append(im)
    return out


def augment(frames: np.ndarray, n_aug: int, rng: np.random.Generator, *, uint8_crop: bool = False) -> np.ndarray:
    """``n_aug`` random crops (40-100% of the area, aspect 3/4-4/3), flips and brightness/contrast jitter of
    each frame, resized back to the frame size (uint8 (n_aug * n, H, W, 3)). ``uint8_crop``: the jittered
    crop is truncated to uint8 before the resize (``rd_eval``'s variant), else resized in float."""
    out = []
    n, h, w, _ = frames.shape
    for _ in range(n_aug):
        for f in frames:
            area = rng.uniform(0.4, 1.0) * h * w
            ar = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            ch, cw = int(min(h, round(np.sqrt(area / ar)))), int(min(w, round(np.sqrt(area * ar))))
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            c = f[y0:y0 + ch, x0:x0 + cw].astype(np.float32)
            if rng.random() < 0.5:
                c = c[:, ::-1]
            c = (c - 128) * rng.uniform(0.75, 1.25) + 128 + rng.uniform(-25, 25)
            c = np.clip(c, 0, 255)
            if uint8_crop:
                c = c.astype(np.uint8)
            t = torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1)[None].float()
            t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
            out.append(t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy())
    return np.stack(out) if out else np.zeros((0, h, w, 3), np.uint8)


def has_teacher(bb) -> bool:
    """Whether a featcomp ``Backbone`` has a classifier (a teacher for the agreement metrics)."""
    h = getattr(bb, "has_classifier", None)
    return bool(h() if callable(h) else h)


def run_backbone(bb, frames: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 frames (n, H, W, 3) -> (features float32 (n, C), teacher logits (n, K) or None)."""
    feats = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch):
            feats.append(bb(bb.preprocess(frames[i:i + batch])).float())
        f = torch.cat(feats)
        lg = bb.classify(f).float().numpy() if has_teacher(bb) else None
    return f.numpy(), lg


def cached_features(path: Path, frames: Callable[[], np.ndarray], bb,
                    log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, C), teacher logits (n, K)) of the frames ``frames()`` through ``bb`` (which has a
    classifier), cached in the ``.npz`` file ``path``: a rerun with the file present runs no backbone."""
    if path.is_file():
        z = np.load(path)
        return z["features"], z["logits"]
    x = frames()
    log(f"extracting {len(x)} frames through {getattr(bb, 'name', 'the backbone')} -> {path.name}")
    f, lg = run_backbone(bb, x, 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=f, logits=lg)
    return f, lg


def fmnist_features(build: Callable[[], object], data: Path, cache: Path, tag: str, size: int, n_train: int,
                    n_val: int, n_test: int, log: Callable[[str], None] = print) -> dict:
    """Fashion-MNIST features of one backbone: ``x_train`` / ``y_train`` = the first ``n_train`` training
    images, ``x_val`` / ``y_val`` = the next ``n_val``, ``x_test`` / ``y_test`` = the first ``n_test`` official
    test images, upsampled to ``size`` px (:func:`fm_images`) through the backbone ``build()``. Cached as
    ``<cache>/generality_fm_<tag>_<size>_<n_train>_<n_val>_<n_test>.npz``; a larger cache is sliced."""
    n_tr, n_va, n_te = n_train, n_val, n_test
    p = cache / f"generality_fm_{tag}_{size}_{n_tr}_{n_va}_{n_te}.npz"
    if p.is_file():
        z = np.load(p)
        return {k: z[k] for k in z.files}
    for q in sorted(cache.glob(f"generality_fm_{tag}_{size}_*_*_*.npz")):  # a larger cache, sliced
        a, b, c = (int(v) for v in q.stem.rsplit("_", 3)[1:])
        if a >= n_tr and b >= n_va and c >= n_te:
            z = np.load(q)
            return {"x_train": z["x_train"][:n_tr], "y_train": z["y_train"][:n_tr], "x_val": z["x_val"][:n_va],
                    "y_val": z["y_val"][:n_va], "x_test": z["x_test"][:n_te], "y_test": z["y_test"][:n_te]}
    src = data / "fashion-mnist"
    tr_i, tr_l = read_fmnist(src, "train")
    te_i, te_l = read_fmnist(src, "t10k")
    if len(tr_i) < n_tr + n_va or len(te_i) < n_te:
        raise SystemExit(f"Fashion-MNIST under {src} has {len(tr_i)}/{len(te_i)} images; need {n_tr + n_va}/{n_te}")
    bb = build()
    out = {}
    t0 = time.time()
    for name, imgs, lab in (("train", tr_i[:n_tr], tr_l[:n_tr]), ("val", tr_i[n_tr:n_tr + n_va], tr_l[n_tr:n_tr + n_va]),
                            ("test", te_i[:n_te], te_l[:n_te])):
        feats = []
        for i in range(0, len(imgs), 500):
            feats.append(run_backbone(bb, fm_images(imgs[i:i + 500], size), 250)[0])
        out[f"x_{name}"] = np.concatenate(feats)
        out[f"y_{name}"] = lab
    log(f"{tag}: Fashion-MNIST features {out['x_train'].shape} + {len(out['x_val'])} + {len(out['x_test'])} "
        f"at {size} px in {time.time() - t0:.0f}s")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(p, **out)
    return out


def clip_features(build: Callable[[], object], data: Path, cache: Path, tag: str, size: int, clips: list[str],
                  n_aug: int, log: Callable[[str], None] = print) -> dict[str, dict]:
    """Per clip of ``<data>/clips/<clip>.mp4``: every frame's features ``x`` (+ teacher ``logits``), ``fps``,
    the train/val ``cut`` (80% of the frames), and the features ``x_aug`` (+ ``logits_aug``) of ``n_aug``
    augmentations of the training part (:func:`augment`, seed 100 + the clip's position); the backbone is
    ``build()``, made only when a clip is not cached in ``<cache>/generality_clip_<tag>_<size>_<clip>_aug<n>.npz``
    (a cache with more augmentation rounds is sliced)."""
    out = {}
    bb = None
    for ci, name in enumerate(clips):
        p = cache / f"generality_clip_{tag}_{size}_{name}_aug{n_aug}.npz"
        have = [q for q in [p] + sorted(cache.glob(f"generality_clip_{tag}_{size}_{name}_aug*.npz"))
                if q.is_file() and int(q.stem.rsplit("aug", 1)[1]) >= n_aug]
        if have:  # augmentations are stored round by round: the first n_aug rounds of a larger cache
            z = np.load(have[0], allow_pickle=False)
            d = {k: z[k] for k in z.files}
            m = int(d["cut"]) * n_aug
            d["x_aug"] = d["x_aug"][:m]
            if "logits_aug" in d:
                d["logits_aug"] = d["logits_aug"][:m]
            out[name] = d
            continue
        if bb is None:
            bb = build()
        t0 = time.time()
        path = data / "clips" / f"{name}.mp4"
        frames = decode_clip(path)
        n = len(frames)
        cut = int(round(0.8 * n))
        x, lg = run_backbone(bb, frames)
        xa, lga = run_backbone(bb, augment(frames[:cut], n_aug, np.random.default_rng(100 + ci)))
        d = {"x": x, "fps": np.float64(clip_fps(path)), "cut": np.int64(cut), "x_aug": xa}
        if lg is not None:
            d["logits"], d["logits_aug"] = lg, lga
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(p, **d)
        out[name] = d
        log(f"{tag}: {name}: {n} frames + {len(xa)} augmented at {size} px in {time.time() - t0:.0f}s")
    return out

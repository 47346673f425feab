"""Bring features extracted elsewhere into a raw store (layer 2; numpy only, h5py when reading .h5).

``import_features("feats_dir/", "raw.zarr", fps=5)`` takes one file per video, the layout that
v-iashin/video_features writes (``<video stem>_<feature key>.npy``, or ``.h5`` files), and writes a raw
(float16 + zstd, or int8 with per-video scales) store with timestamps ``t0 + i / fps`` seconds. ``featcomp train`` fits a head on that store and ``featcomp transcode`` codes it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from featcomp.errors import ConfigError, StoreError

__all__ = ["import_features", "find_feature_files"]

SUFFIXES = (".npy", ".h5", ".hdf5")


def find_feature_files(src: str | os.PathLike, key: str | None = None) -> list[tuple[str, Path]]:
    """``(video_id, file)`` for every ``.npy``/``.h5`` under ``src`` (recursive), sorted by id.

    The id is the file's path relative to ``src`` without its suffix, and without a trailing
    ``_<key>`` when ``key`` is given (video_features names files ``<stem>_<key>.npy``); files of other
    keys are skipped then.

    Raises:
        ConfigError: ``src`` is not a directory, or holds no feature file (of ``key``).
    """
    root = Path(src)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory of per-video .npy/.h5 feature files")
    out: list[tuple[str, Path]] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in SUFFIXES:
            continue
        rel = p.relative_to(root).with_suffix("").as_posix()
        if key is not None:
            if not rel.endswith("_" + key):
                continue
            rel = rel[: -len(key) - 1]
        out.append((rel, p))
    if not out:
        what = f" of key {key!r} (files named <video>_{key}.npy)" if key else ""
        raise ConfigError(f"no .npy/.h5 feature files{what} under {root}")
    ids = [v for v, _ in out]
    dup = sorted({v for v in ids if ids.count(v) > 1})
    if dup:
        raise ConfigError(f"several files map to the same video id, e.g. {dup[:3]}; "
                          "keep one format per video or give --key")
    return out


def _load(path: Path, dataset: str | None) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise StoreError(f"{path}: not a readable .npy array ({e})") from None
    try:
        import h5py
    except ModuleNotFoundError:
        from featcomp.errors import missing_extra

        raise missing_extra(ModuleNotFoundError("No module named 'h5py'", name="h5py"),
                            f"featcomp import of {path}") from None
    try:
        with h5py.File(path, "r") as f:
            names: list[str] = []
            f.visit(lambda n: names.append(n) if isinstance(f[n], h5py.Dataset) else None)
            if dataset is None:
                if len(names) != 1:
                    raise StoreError(f"{path} holds datasets {names[:10]}; name one with --dataset")
                dataset = names[0]
            if dataset not in f:
                raise StoreError(f"{path} has no dataset {dataset!r} (it has {names[:10]})")
            return np.asarray(f[dataset])
    except OSError as e:
        raise StoreError(f"{path}: not a readable HDF5 file ({e})") from None


def import_features(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fps: float,
    t0: float = 0.0,
    key: str | None = None,
    dataset: str | None = None,
    backbone: dict | None = None,
    chunk_frames: int | None = None,
    raw_dtype: str = "float16",
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Write every per-video feature file under ``src`` into the raw store ``out``.

    Args:
        src: a directory of per-video ``.npy`` (or ``.h5``, needs h5py) files, each ``(T, C[, ...])``.
        out: the raw store to create or append to (videos already there are skipped).
        fps: feature rate, in features per second: feature ``i`` gets timestamp ``t0 + i / fps``.
        t0: the first feature's time in seconds.
        key: video_features' feature key (``"resnet"``, ``"rgb"``...): only ``<video>_<key>.npy`` files,
            ids without the suffix.
        dataset: the dataset to read in ``.h5`` files (default: the only one).
        backbone: recorded in the store's card (what produced the features), e.g. ``{"name": "resnet50"}``.
        chunk_frames: frames per chunk (default automatic).
        raw_dtype: ``"float16"`` (default) or ``"int8"``: values quantized per video and per channel
            with float32 scales (docs/format.md, "int8 raw stores"); readers return float32 either way.
        progress: called with ``(video_id, frames)`` after each video.

    Returns:
        ``{"videos": written, "skipped": already there, "frames": written frames}``.

    Raises:
        ConfigError: bad ``fps``, no files. StoreError: an unreadable file, a 1-D or empty array,
        non-finite values in float16, shapes that differ between videos; a store of the other
        ``raw_dtype``.
    """
    from featcomp.store.writer import StoreWriter

    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise ConfigError(f"--fps must be > 0 features per second, got {fps}")
    files = find_feature_files(src, key)
    card = {"features": f"imported from {Path(src).name}/ by featcomp import", "fps": fps, "t0": float(t0)}
    if backbone:
        card["backbone"] = backbone
    done = skipped = frames = 0
    with StoreWriter(out, raw=True, model_card=card, chunk_frames=chunk_frames, raw_dtype=raw_dtype) as w:
        for vid, path in files:
            if vid in w:
                skipped += 1
                continue
            x = _load(path, dataset)
            if x.ndim == 1:
                raise StoreError(f"{path} is 1-D {x.shape}; expected (T, C[, ...]) per video")
            if x.shape[0] == 0:
                raise StoreError(f"{path} holds no frames")
            t = float(t0) + np.arange(x.shape[0], dtype=np.float64) / fps
            try:
                w.write(vid, x, t, metadata={"source": str(path)})
            except StoreError as e:
                raise StoreError(f"{path}: {e}") from None
            done += 1
            frames += int(x.shape[0])
            if progress is not None:
                progress(vid, int(x.shape[0]))
    return {"videos": done, "skipped": skipped, "frames": frames}



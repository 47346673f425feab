"""The Ray Data stages of the extraction job: decode (CPU tasks) and encode (an actor pool).

Each stage is a thin adapter over featcomp's public API:

* :func:`decode_videos` — one video per call: ``featcomp.video.open_video`` + ``sample_frames``
  (resized on decode; a frames folder is read by the ``frames`` backend at ``decode.frames_fps``),
  yielding one row per chunk of at most ``inference.batch_size`` frames. A watchdog turns a decoder
  that stops producing frames into a failure row instead of a hung job.
* :class:`EncodeChunks` — ``__init__`` builds ``featcomp.Extractor(featcomp.load_model(path))``
  once per actor; ``__call__`` makes one library call per batch (``encode_frames``, or the raw
  backbone features with ``--raw``). With per-frame rate control (``keep_top1``) it runs the
  backbone once on the whole batch (``frame_features``) and chooses the levels per decoded chunk
  (``encode_features``), so the give-up quota applies to one video's chunk, whatever chunks Ray
  groups into a call; rows then also carry ``levels``.

Rows carry ``video_id``, ``path``, ``chunk`` (0-based), ``last`` (the final chunk of the video),
``timestamps`` (seconds), ``indices`` (frame numbers), ``error`` (empty when fine) and ``partial``
(empty, or why a truncated video decoded with ``allow_partial`` is incomplete). A failed
video yields exactly one row with ``chunk == -1`` and the error text; the driver records it in the
store's failures table. A truncated video is such a failure (``TruncatedVideoError``) unless the
job allows partial videos; then its decodable part goes on, marked partial. Exceptions never escape a stage for bad input: a Ray Data UDF exception
would fail the whole dataset. Process deaths (kill -9, OOM) do escape, and Ray retries them.

This module is imported by Ray workers; it imports ray only for typing-free helpers (none at import).
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["decode_videos", "EncodeChunks", "failure_row", "ERROR_CHUNK"]

ERROR_CHUNK = -1
_DONE = object()


def _err_text(e: BaseException) -> str:
    text = str(e).strip() or repr(e)
    return f"{type(e).__name__}: {text}"


def failure_row(video_id: str, path: str, error: str) -> dict[str, Any]:
    """A one-row batch saying that ``video_id`` failed with ``error``."""
    return {
        "video_id": np.array([video_id]),
        "path": np.array([path]),
        "chunk": np.array([ERROR_CHUNK], dtype=np.int64),
        "last": np.array([True]),
        "frames": np.zeros((1, 0, 1, 1, 3), dtype=np.uint8),
        "timestamps": np.zeros((1, 0), dtype=np.float64),
        "indices": np.zeros((1, 0), dtype=np.int64),
        "error": np.array([error]),
        "partial": np.array([""]),
    }


def _chunk_row(video_id: str, path: str, chunk: int, last: bool, frames, timestamps, indices,
               partial: str | None = None) -> dict[str, Any]:
    return {
        "video_id": np.array([video_id]),
        "path": np.array([path]),
        "chunk": np.array([chunk], dtype=np.int64),
        "last": np.array([last]),
        "frames": np.ascontiguousarray(frames)[None],
        "timestamps": np.asarray(timestamps, dtype=np.float64)[None],
        "indices": np.asarray(indices, dtype=np.int64)[None],
        "error": np.array([""]),
        "partial": np.array([partial or ""]),
    }


def _staged_path(path: str, tmpdir: str) -> str | None:
    """Where :func:`_localize` stages a URL video (None for local paths)."""
    from featcomp.storage import is_url

    return os.path.join(tmpdir, os.path.basename(path.split("?")[0].rstrip("/")) or "video") if is_url(path) else None


def _localize(path: str, tmpdir: str, storage_options: dict | None = None, scratch_mb: int | None = None) -> str:
    """Stage a remote (fsspec URL) video in ``tmpdir`` and return the local path; local paths as is.

    The object is streamed to the local file in 8 MiB ranged reads and refused beyond ``scratch_mb``
    MiB (``decode.scratch_mb``), so a decode task's scratch space is bounded; the caller deletes
    ``tmpdir`` when the video is done. A URL that names a prefix (a *frames folder* on object storage)
    is staged as a local directory of its image files, bounded the same way, and decoded by the
    ``frames`` backend like a local frames folder.
    """
    from featcomp.storage import is_url, stage_to_local
    from featcomp.pipelines.inputs import local_path

    if not is_url(path):
        path = local_path(path)
        return path[len("file://"):] if path.startswith("file://") else path
    local = _staged_path(path, tmpdir)
    return stage_to_local(path, local, storage_options,
                          max_bytes=None if scratch_mb is None else int(scratch_mb) << 20)


def _produce(path: str, sampling: Any, out: queue.Queue, tmpdir: str, storage_options: dict | None = None,
             scratch_mb: int | None = None, allow_partial: bool = False, frames_fps: float | None = None) -> None:
    """Decode ``path`` (a video file or a frames folder) into ``out``: FrameBatch items, then _DONE, or an exception."""
    try:
        from featcomp.video import sample_frames

        local = _localize(path, tmpdir, storage_options, scratch_mb)
        # one decoder thread: each decode task holds one CPU, and a single-threaded decoder spends
        # 10-25% less CPU per frame than FFmpeg's automatic threading (docs/pipeline.md)
        extra: dict[str, Any] = {"allow_partial": True} if allow_partial else {}
        if frames_fps is not None:
            extra["frames_fps"] = frames_fps
        for fb in sample_frames(local, sampling, threads=1, **extra):
            out.put(fb)
        out.put(_DONE)
    except BaseException as e:  # noqa: BLE001 - reported as a failure row
        out.put(e)


def decode_videos(batch: dict[str, np.ndarray], *, sampling: Any, timeout_s: float = 60.0,
                  storage_options: dict | None = None, scratch_dir: str | None = None,
                  scratch_mb: int | None = None, allow_partial: bool = False,
                  frames_fps: float | None = None) -> Iterator[dict[str, Any]]:
    """Ray Data UDF: decode the videos of ``batch`` into chunk rows (see the module docstring).

    Args:
        batch: Columns ``video_id`` and ``path`` (usually one row: one video per task).
        sampling: The ``featcomp.video.SamplingConfig`` to decode with (size, backend, the decoder's
            own deadline); its ``batch_size`` is the number of frames per chunk, so memory is
            bounded by it, not by the video's length.
        timeout_s: Watchdog: a video that produces no chunk for this long is reported as hanging
            (a second line of defence behind the decoder's own ``sampling.timeout_s``).
        storage_options: Options of the filesystem of URL inputs (:mod:`featcomp.storage`).
        scratch_dir: Where URL inputs are staged (``None``: the system temporary directory).
        scratch_mb: Largest video staged (MiB); a larger one becomes a failure row.
        allow_partial: Keep the decodable part of a truncated video (rows carry ``partial``, the
            reason) instead of a ``TruncatedVideoError`` failure row.
        frames_fps: Frame rate of frames-folder inputs (a directory of images; ``None``: 25).

    Yields:
        One-row batches: chunks of frames uint8 ``(1, n, H, W, 3)``, or a failure row.
    """
    for video_id, path in zip(batch["video_id"], batch["path"]):
        video_id, path = str(video_id), str(path)
        if scratch_dir:
            os.makedirs(scratch_dir, exist_ok=True)
        tmpdir = tempfile.mkdtemp(prefix="featcomp-decode-", dir=scratch_dir or None)
        q: queue.Queue = queue.Queue(maxsize=2)  # bounded: the decoder runs at most 2 chunks ahead
        worker = threading.Thread(
            target=_produce, args=(path, sampling, q, tmpdir, storage_options, scratch_mb, allow_partial, frames_fps),
            daemon=True,
            name=f"decode {video_id}",
        )
        worker.start()
        held = None  # one chunk of look-ahead, so the final chunk can say last=True
        chunk = 0
        try:
            while True:
                try:
                    item = q.get(timeout=timeout_s)
                except queue.Empty:
                    yield failure_row(
                        video_id, path, f"VideoError: {path}: the decoder produced no frames for {timeout_s:g} s (hanging file?)"
                    )
                    held = None
                    break  # the daemon thread is abandoned; it holds no lock the next video needs
                if item is _DONE:
                    if held is None:
                        yield failure_row(video_id, path, f"VideoError: {path}: no frames could be decoded (empty video?)")
                    else:
                        yield _chunk_row(video_id, path, chunk, True, *held)
                    held = None
                    break
                if isinstance(item, BaseException):
                    text = _err_text(item)
                    staged = _staged_path(path, tmpdir)
                    yield failure_row(video_id, path, text.replace(staged, path) if staged else text)
                    held = None
                    break
                if held is not None:
                    yield _chunk_row(video_id, path, chunk, False, *held)
                    chunk += 1
                held = (item.frames, item.timestamps, item.indices, getattr(item, "partial", None))
        finally:
            # also when a hung decoder still holds the staged file: on POSIX its space is freed
            # once the file is closed, so scratch never outlives the task
            shutil.rmtree(tmpdir, ignore_errors=True)


class EncodeChunks:
    """Ray Data callable class: backbone + head (or backbone only with ``raw``) on decoded chunks.

    One instance lives in each actor of the pool; the frozen model is built once in ``__init__``.

    Args:
        model_path: A featcomp model file or URL readable from the actor's node; None with ``backbone``.
        backbone: No model: the backbone spec dict (``featcomp extract --backbone``); rows then carry
            raw float16 backbone features. A custom backbone's ``factory`` must import on this node.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``.
        batch_size: Frames per model call.
        torch_threads: torch intra-op threads in this actor (``None``: leave torch's setting).
        raw: Output float16 backbone features instead of int32 latents.
        rate: Rate level of a variable-rate model (``None``: the model's default).
        keep_top1: Per-frame rate control target (``RateControl(target_agreement=keep_top1)``):
            rows carry uint8 ``levels`` beside the latents; the quota applies per chunk (see above).
        storage_options: Options of the filesystem of a model URL (:mod:`featcomp.storage`).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        backbone: dict | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        torch_threads: int | None = None,
        raw: bool = False,
        rate: float | None = None,
        keep_top1: float | None = None,
        storage_options: dict | None = None,
    ) -> None:
        import torch

        import featcomp

        rate_control = None
        if keep_top1 is not None:
            from featcomp.ratecontrol import RateControl

            rate_control = RateControl(target_agreement=float(keep_top1))

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device == "cuda" else "float32"
        self.raw = raw or model_path is None
        self.device = device
        self.backbone = None
        self.extractor = None
        self.rate_controlled = rate_control is not None
        self._feature_elems: int | None = None  # backbone values per frame, for the float16 baseline
        if model_path is None:
            from featcomp.backbones import build_backbone

            if backbone is None:
                raise ValueError("EncodeChunks needs model_path or backbone")
            self.backbone = build_backbone(backbone, device=device)
            return
        self.extractor = featcomp.Extractor(
            featcomp.load_model(model_path, storage_options=storage_options), device=device, batch_size=batch_size,
            dtype=None if dtype == "float32" else getattr(torch, dtype), rate=rate, rate_control=rate_control,
        )

    def _call_model(self, frames: np.ndarray, sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """frames of several chunks (sizes) -> per-chunk outputs, and per-chunk levels (rate control) or None."""
        if self.backbone is not None:  # no model: the backbone's features
            import torch

            with torch.inference_mode():
                out = self.backbone.forward(self.backbone.preprocess(frames)).float().cpu().numpy().astype(np.float16)
            self._feature_elems = int(np.prod(out.shape[1:]))
            return _split(out, sizes), None
        if self.raw:
            out = self.extractor.features(frames).cpu().numpy().astype(np.float16)
            self._feature_elems = int(np.prod(out.shape[1:]))
            return _split(out, sizes), None
        if self.rate_controlled:
            feats = self.extractor.frame_features(frames)  # one backbone pass for the whole call
            self._feature_elems = int(np.prod(feats.shape[1:]))
            outs, levels = [], []
            for a, b in zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist()):
                k, lv = self.extractor.encode_features(feats[a:b])  # quota per chunk: one video's frames
                outs.append(np.asarray(k, dtype=np.int32))
                levels.append(np.asarray(lv, dtype=np.uint8))
            return outs, levels
        if self._feature_elems is None:  # once per actor: the backbone's output size on one frame
            self._feature_elems = int(np.prod(self.extractor.features(frames[:1]).shape[1:]))
        return _split(np.asarray(self.extractor.encode_frames(frames)), sizes), None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["video_id"])
        errors = [str(e) for e in batch["error"]]
        ok = [i for i in range(n) if not errors[i] and len(batch["frames"][i])]
        outputs: list[Any] = [None] * n
        levels: list[Any] = [None] * n
        if ok:
            parts = [np.asarray(batch["frames"][i]) for i in ok]
            sizes = [len(p) for p in parts]
            try:
                outs, lvs = self._call_model(parts[0] if len(parts) == 1 else np.concatenate(parts), sizes)
            except Exception as e:  # noqa: BLE001 - a bad chunk fails its videos, not the job
                msg = _err_text(e)
                for i in ok:
                    errors[i] = msg
                    batch["chunk"][i] = ERROR_CHUNK
            else:
                for j, i in enumerate(ok):
                    outputs[i] = outs[j]
                    if lvs is not None:
                        levels[i] = lvs[j]
        shape = next((o.shape[1:] for o in outputs if o is not None), (0,))
        dtype = np.float16 if self.raw else np.int32
        for i in range(n):
            if outputs[i] is None:
                outputs[i] = np.zeros((0, *shape), dtype=dtype)
            if levels[i] is None:
                levels[i] = np.zeros(0, dtype=np.uint8)
        extra = {"levels": levels} if self.rate_controlled else {}
        return {
            "video_id": batch["video_id"],
            "path": batch["path"],
            "chunk": batch["chunk"],
            "last": batch["last"],
            "latents": outputs,
            "timestamps": list(batch["timestamps"]),
            "indices": list(batch["indices"]),
            "error": np.array(errors),
            "partial": np.array([str(x) for x in batch.get("partial", [""] * n)]),
            # what the same frames' backbone features would take as float16 (the summary's baseline)
            "float16_bytes": np.array([2 * len(o) * (self._feature_elems or 0) for o in outputs], dtype=np.int64),
            **extra,
        }


def _split(out: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Rows of ``out`` cut into consecutive pieces of ``sizes`` rows."""
    return np.split(out, np.cumsum(sizes)[:-1].tolist()) if len(sizes) > 1 else [out]

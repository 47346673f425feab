"""The Ray Data stages of the extraction job: decode (CPU tasks) and encode (an actor pool).

Each stage is a thin adapter over featcomp's public API:

* :func:`decode_videos` — one video per call: ``featcomp.video.open_video`` + ``sample_frames``
  (resized on decode; a frames folder is read by the ``frames`` backend at ``decode.frames_fps``),
  yielding one row per chunk of at most ``inference.batch_size`` frames. A watchdog turns a decoder
  that stops producing frames into a failure row instead of a hung job.
* :class:`EncodeChunks` — ``__init__`` builds ``featcomp.Extractor`` once per actor on the model the
  driver loaded and put at the job's rate (``plan.model`` of the
  :class:`~featcomp.pipelines.plan.ExtractPlan`); ``__call__`` makes one library call per batch
  (``encode_frames``, or the raw backbone features for a raw job). With per-frame rate control (the
  plan's ``rate_control``, decided from ``keep_top1`` on the driver) it runs the backbone once on the
  whole batch (``frame_features``) and chooses the levels per decoded chunk (``encode_features``), so
  the give-up quota applies to one video's chunk, whatever chunks Ray groups into a call; rows then
  also carry ``levels``.

What flows between the stages are the typed records of :mod:`featcomp.pipelines.rows`
(:class:`~featcomp.pipelines.rows.VideoTask` in, :class:`~featcomp.pipelines.rows.FrameChunk` between
decode and encode, :class:`~featcomp.pipelines.rows.ChunkRow` out), converted to Ray Data's dict batches
at the edge. A failed video yields exactly one :class:`~featcomp.pipelines.rows.FailureRow`: its
``error`` text is the one failure signal (the ``chunk`` column holds the filler ``-1`` only because
every row needs a value there); the driver records it in the store's failures table. A truncated video
is such a failure (``TruncatedVideoError``) unless the job allows partial videos; then its decodable
part goes on, marked partial. Exceptions never escape a stage for bad input: a Ray Data UDF exception
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

from featcomp.pipelines.rows import (
    FILLER_CHUNK,
    ChunkRow,
    FailureRow,
    FrameChunk,
    VideoTask,
    encoded_batch,
    error_text,
    parse_decoded,
)

__all__ = ["decode_videos", "EncodeChunks", "failure_row", "ERROR_CHUNK"]

ERROR_CHUNK = FILLER_CHUNK  # the chunk column of a failure row (a filler: failure is the ``error`` text)
_DONE = object()


def failure_row(video_id: str, path: str, error: str) -> dict[str, Any]:
    """A one-row batch saying that ``video_id`` failed with ``error`` (``FailureRow(...).to_batch()``)."""
    return FailureRow(video_id, path, error).to_batch()


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
    for task in VideoTask.from_batch(batch):
        for rec in _decode_one(task, sampling=sampling, timeout_s=timeout_s, storage_options=storage_options,
                               scratch_dir=scratch_dir, scratch_mb=scratch_mb, allow_partial=allow_partial,
                               frames_fps=frames_fps):
            yield rec.to_batch()


def _decode_one(task: VideoTask, *, sampling: Any, timeout_s: float, storage_options: dict | None,
                scratch_dir: str | None, scratch_mb: int | None, allow_partial: bool,
                frames_fps: float | None) -> Iterator[FrameChunk | FailureRow]:
    """The chunks of one video, or its one failure (after any chunks already yielded)."""
    video_id, path = task.video_id, task.path
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

    def chunk_of(last: bool) -> FrameChunk:
        frames, timestamps, indices, partial = held
        return FrameChunk(video_id, path, chunk, last, frames, timestamps, indices, partial or "")

    try:
        while True:
            try:
                item = q.get(timeout=timeout_s)
            except queue.Empty:
                yield FailureRow(video_id, path,
                                 f"VideoError: {path}: the decoder produced no frames for {timeout_s:g} s (hanging file?)")
                break  # the daemon thread is abandoned; it holds no lock the next video needs
            if item is _DONE:
                if held is None:
                    yield FailureRow(video_id, path, f"VideoError: {path}: no frames could be decoded (empty video?)")
                else:
                    yield chunk_of(True)
                break
            if isinstance(item, BaseException):
                text = error_text(item)
                staged = _staged_path(path, tmpdir)
                yield FailureRow(video_id, path, text.replace(staged, path) if staged else text)
                break
            if held is not None:
                yield chunk_of(False)
                chunk += 1
            held = (item.frames, item.timestamps, item.indices, getattr(item, "partial", None))
    finally:
        # also when a hung decoder still holds the staged file: on POSIX its space is freed
        # once the file is closed, so scratch never outlives the task
        shutil.rmtree(tmpdir, ignore_errors=True)


class EncodeChunks:
    """Ray Data callable class: backbone + head (or backbone only for a raw job) on decoded chunks.

    One instance lives in each actor of the pool; ``__init__`` builds the ``featcomp.Extractor`` once, on
    the model the driver loaded and put at the job's rate (``plan.model``), with the driver's
    ``plan.rate_control``: nothing about the model or the rate is decided again here.

    Args:
        plan: The job's :class:`~featcomp.pipelines.plan.ExtractPlan` (with its resources): the model or
            the head-less backbone spec (a custom backbone's ``factory`` must import on this node), raw or
            coded output, rate control, ``inference.dtype``/``batch_size``, the device and torch threads.
    """

    def __init__(self, plan: Any) -> None:
        import torch

        import featcomp

        inf = plan.config.inference
        res = plan.resources
        device = res.device if res is not None else inf.device
        torch_threads = res.torch_threads if res is not None else inf.torch_threads
        dtype = inf.dtype
        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device == "cuda" else "float32"
        self.raw = bool(plan.raw)
        self.device = device
        self.backbone = None
        self.extractor = None
        self.rate_controlled = plan.rate_control is not None
        self._feature_elems: int | None = None  # backbone values per frame, for the float16 baseline
        if plan.model is None:
            from featcomp.backbones import build_backbone

            if plan.backbone is None:
                raise ValueError("EncodeChunks needs a plan with a model or a backbone")
            self.backbone = build_backbone(plan.backbone, device=device)
            return
        self.extractor = featcomp.Extractor(
            plan.model, device=device, batch_size=inf.batch_size,
            dtype=None if dtype == "float32" else getattr(torch, dtype), rate_control=plan.rate_control,
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

    def encode(self, records: list[FrameChunk | FailureRow]) -> list[ChunkRow | FailureRow]:
        """Encode the chunks of ``records`` in one model call; failures pass through, and a model call
        that raises turns every chunk of the call into a failure of its video (never of the job)."""
        ok = [i for i, r in enumerate(records) if isinstance(r, FrameChunk) and len(r.frames)]
        out: list[ChunkRow | FailureRow | None] = [r if isinstance(r, FailureRow) else None for r in records]
        outputs: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        if ok:
            parts = [records[i].frames for i in ok]
            sizes = [len(p) for p in parts]
            try:
                outs, lvs = self._call_model(parts[0] if len(parts) == 1 else np.concatenate(parts), sizes)
            except Exception as e:  # noqa: BLE001 - a bad chunk fails its videos, not the job
                for i in ok:
                    out[i] = FailureRow.from_exception(records[i].video_id, records[i].path, e)
            else:
                for j, i in enumerate(ok):
                    outputs[i] = (outs[j], None if lvs is None else lvs[j])
        shape = next((o.shape[1:] for o, _ in outputs.values()), (0,))
        dtype = np.float16 if self.raw else np.int32
        for i, r in enumerate(records):
            if out[i] is not None:
                continue
            lat, lv = outputs.get(i, (np.zeros((0, *shape), dtype=dtype), None))
            if self.rate_controlled and lv is None:
                lv = np.zeros(0, dtype=np.uint8)
            out[i] = ChunkRow(r.video_id, r.path, r.chunk, r.last, lat, r.timestamps, r.indices,
                              # what the same frames' backbone features would take as float16 (the baseline)
                              float16_bytes=2 * len(lat) * (self._feature_elems or 0), levels=lv, partial=r.partial)
        return out  # type: ignore[return-value]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return encoded_batch(self.encode(parse_decoded(batch)), raw=self.raw, with_levels=self.rate_controlled)


def _split(out: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Rows of ``out`` cut into consecutive pieces of ``sizes`` rows."""
    return np.split(out, np.cumsum(sizes)[:-1].tolist()) if len(sizes) > 1 else [out]

"""decord decoder: the default backend (layer 1; imports ``decord`` on open).

Uses ``VideoReader.get_batch`` only, which is frame-accurate; ``seek()`` + ``next()`` lands on
keyframes and is never used. Resizing happens inside decord (``width``/``height``), so a 1080p file
is never materialized at full size. Opening and every ``get_batch`` are guarded by a timeout because
decord can hang on broken files (decord issue #269).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from featcomp.errors import VideoError
from featcomp.video.base import (
    DEFAULT_TIMEOUT_S,
    VideoIndex,
    call_with_timeout,
    checked_indices,
    register_decoder,
    resolve_size,
)

__all__ = ["DecordDecoder"]


def decord_unreliable(index: VideoIndex) -> str | None:
    """Why decord's ``get_batch`` cannot be trusted on this file, or None.

    Measured with barcoded clips (tests/video/test_backends.py): once a file has more than one keyframe,
    decord 0.6.0 returns wrong frames, silently, after a seek on (a) MPEG-4 Part 2 with B-frames in any
    container (asked 24, got 14) and (b) AVI holding H.264/HEVC or any codec with B-frames (AVI keeps
    decode times only). Sequential reads from frame 0 are right; random access is what it gets wrong.
    """
    if index.keyframe_pts.size < 2:
        return None
    fmt = index.container_format.split(",")[0]
    if index.codec == "mpeg4" and index.reordered:
        return "MPEG-4 Part 2 video with B-frames"
    if fmt == "avi" and (index.reordered or index.codec in ("h264", "hevc")):
        return f"{index.codec} in AVI" + (" with B-frames" if index.reordered else "")
    return None


def _to_numpy(batch: Any) -> np.ndarray:
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    if hasattr(batch, "numpy"):  # the torch bridge was set globally by someone else
        return batch.numpy()
    return np.asarray(batch)


class DecordDecoder:
    """A :class:`~featcomp.video.base.VideoDecoder` built on decord.

    Args:
        path: Video file.
        index: Packet index from :func:`~featcomp.video.base.build_index` (frame count and VFR-correct
            timestamps); when None, decord's own frame count and timestamps are used.
        width: Output width in pixels (resize on decode).
        height: Output height in pixels.
        short_side: Shorter output side in pixels (aspect kept); exclusive with width/height.
        timeout_s: Deadline in seconds for opening and for each ``get_frames`` call.
        num_threads: decord decoding threads (0: decord's default).
        threads: Same as ``num_threads`` (the name :func:`~featcomp.video.open_video` passes); wins when given.
        device: ``"cpu"`` only (anything else is a ``VideoError``).
    """

    backend = "decord"

    def __init__(
        self,
        path: str,
        *,
        index: VideoIndex | None = None,
        width: int | None = None,
        height: int | None = None,
        short_side: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        num_threads: int = 0,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        from featcomp.video.base import backend_import

        if str(device) != "cpu":
            raise VideoError(f"{path}: the decord backend decodes on the CPU only, not {device!r}; "
                             "use backend='torchcodec' for GPU decoding")
        (decord,) = backend_import("decord")

        if threads is not None:
            num_threads = int(threads)

        self.path = str(path)
        self.timeout_s = timeout_s
        self.partial: str | None = None  # set by open_video(allow_partial=True) on a truncated file
        self._broken: str | None = None

        def _open(w: int, h: int) -> Any:
            try:
                return decord.VideoReader(self.path, ctx=decord.cpu(0), width=w, height=h, num_threads=num_threads)
            except Exception as e:  # decord raises RuntimeError / DECORDError with C++ logs
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else e.__class__.__name__
                raise VideoError(f"{self.path}: decord cannot open it ({msg})") from None

        why = decord_unreliable(index) if index is not None else None
        if why:
            raise VideoError(f"{self.path}: decord's random access returns wrong frames on {why}; open it "
                             "with backend='pyav' or 'torchcodec' (backend='auto' does)")
        if index is not None:
            nw, nh = index.width, index.height
        else:
            probe = call_with_timeout(lambda: _open(-1, -1), timeout_s, self.path, "opening with decord")
            nh, nw = probe[0].shape[:2]
            del probe
        self.width, self.height = resolve_size(nw, nh, width, height, short_side)
        w, h = (-1, -1) if (self.width, self.height) == (nw, nh) else (self.width, self.height)

        def _open_checked() -> Any:
            vr = _open(w, h)
            try:  # decode one frame: decord opens some files it cannot decode, and mis-sizes a few widths
                first = _to_numpy(vr.get_batch([0]))
            except Exception as e:
                msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
                raise VideoError(f"{self.path}: decord cannot decode it at {self.width}x{self.height} ({msg})") from None
            if first.shape[1:] != (self.height, self.width, 3):
                raise VideoError(f"{self.path}: decord returned {first.shape[1:]} frames, expected {(self.height, self.width, 3)}")
            return vr

        self._vr = call_with_timeout(_open_checked, timeout_s, self.path, "opening with decord")
        n_decord = len(self._vr)
        if index is not None:
            if n_decord < index.num_frames:  # never a silently shorter video: auto falls back to PyAV
                raise VideoError(f"{self.path}: decord sees only {n_decord} of the {index.num_frames} frames "
                                 "the packets hold; open it with backend='pyav'")
            self.num_frames = index.num_frames
            self.timestamps = index.timestamps[: self.num_frames]
        else:
            self.num_frames = n_decord
            ts = np.asarray(self._vr.get_frame_timestamp(list(range(n_decord))), dtype=np.float64)[:, 0]
            self.timestamps = ts - ts[0] if ts.size else ts
        if self.num_frames <= 0:
            raise VideoError(f"{self.path}: zero decodable frames")
        ts = self.timestamps
        self.fps = float((ts.shape[0] - 1) / ts[-1]) if ts.shape[0] > 1 and ts[-1] > 0 else 0.0

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode frames by index with ``get_batch``. See :meth:`VideoDecoder.get_frames`.

        Returns:
            np.ndarray uint8 ``(len(indices), height, width, 3)`` RGB.
        """
        idx = checked_indices(self.path, self.num_frames, self._broken, indices)
        if idx.size == 0:
            return np.empty((0, self.height, self.width, 3), dtype=np.uint8)
        vr = self._vr

        def _get() -> np.ndarray:
            try:
                return _to_numpy(vr.get_batch(idx.tolist()))
            except Exception as e:
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else e.__class__.__name__
                raise VideoError(f"{self.path}: decord failed to decode frames {idx.min()}..{idx.max()} ({msg})") from None

        try:
            frames = call_with_timeout(_get, self.timeout_s, self.path, "decoding (decord)")
        except VideoError as e:
            if "did not finish" in str(e):
                self._broken = str(e)
            raise
        if frames.shape[1:] != (self.height, self.width, 3):  # pragma: no cover - defensive
            raise VideoError(f"{self.path}: decord returned frames of shape {frames.shape[1:]}, expected {(self.height, self.width, 3)}")
        return frames

    def close(self) -> None:
        self._vr = None

    def __enter__(self) -> DecordDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DecordDecoder({self.path!r}, frames={self.num_frames}, size={self.width}x{self.height})"


register_decoder("decord", DecordDecoder)

"""PyAV decoder: the fallback for files decord cannot open (layer 1; imports ``av`` on open).

Random access is frame-accurate: a requested frame is identified by its presentation timestamp
(from the packet index), never by counting frames after a seek. The decoder seeks to the last
keyframe at or before the target only when that keyframe lies beyond the current decode position;
otherwise it decodes forward, so sequential batches never seek.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from featcomp.errors import VideoError
from featcomp.video.base import (
    DEFAULT_TIMEOUT_S,
    VideoIndex,
    build_index,
    call_with_timeout,
    checked_indices,
    register_decoder,
    resolve_size,
)

__all__ = ["PyAVDecoder"]


class PyAVDecoder:
    """A :class:`~featcomp.video.base.VideoDecoder` built on PyAV (FFmpeg).

    Args:
        path: Video file.
        index: Packet index from :func:`~featcomp.video.base.build_index` (built when None).
        width: Output width in pixels (frames are rescaled by libswscale on decode).
        height: Output height in pixels.
        short_side: Shorter output side in pixels (aspect kept); exclusive with width/height.
        timeout_s: Deadline in seconds for opening and for each ``get_frames`` call.
        threads: FFmpeg threading: ``True``/``0``/``None`` automatic ("AUTO"), ``False``/``1`` none, ``n > 1``
            automatic with at most ``n`` threads.
    """

    backend = "pyav"

    def __init__(
        self,
        path: str,
        *,
        index: VideoIndex | None = None,
        width: int | None = None,
        height: int | None = None,
        short_side: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        threads: bool | int | None = True,
    ) -> None:
        import av

        self.path = str(path)
        self._index = index if index is not None else build_index(self.path, timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self.width, self.height = resolve_size(self._index.width, self._index.height, width, height, short_side)
        self.num_frames = self._index.num_frames
        self.timestamps = self._index.timestamps
        self.fps = self._index.fps
        self._pts = self._index.pts
        self._keys = self._index.keyframe_pts
        self._broken: str | None = None
        self.partial: str | None = None  # set by open_video(allow_partial=True) on a truncated file

        def _open() -> Any:
            c = av.open(self.path, metadata_errors="ignore")
            s = c.streams.video[0]
            # frame threading loses the frames buffered around a damaged packet: slices only then
            single = threads is False or (not isinstance(threads, bool) and threads == 1)
            s.thread_type = "NONE" if single else ("SLICE" if self._index.damaged else "AUTO")
            if not single and not isinstance(threads, bool) and threads and threads > 1:
                s.thread_count = int(threads)
            return c

        try:
            self._container = call_with_timeout(_open, timeout_s, self.path, "opening with PyAV")
        except av.error.FFmpegError as e:
            raise VideoError(f"{self.path}: PyAV cannot open it ({e})") from None
        self._stream = self._container.streams.video[0]
        self._frames: Iterator[Any] | None = None
        self._pos = 0  # position in self._pts of the next frame the iterator would give

    # -- decoding -------------------------------------------------------------------------------
    def _decode_from(self, seek_pts: int | None) -> Iterator[Any]:
        """Decoded frames from the keyframe at ``seek_pts`` on, skipping damaged packets, flushing at the end."""
        import av

        if seek_pts is not None:
            self._container.seek(int(seek_pts), stream=self._stream, backward=True, any_frame=False)
        ctx = self._stream.codec_context
        demux = self._container.demux(self._stream)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError:
                break  # the demuxer hit the damage (truncated file): flush what is buffered
            if packet.size == 0:
                continue  # PyAV's end-of-stream marker; we flush below
            try:
                frames = ctx.decode(packet)
            except av.error.InvalidDataError:
                continue  # a damaged packet: its frame is missing, the next keyframe recovers
            yield from frames
        try:
            yield from ctx.decode(None)  # drain frames held back for reordering (B-frames)
        except av.error.FFmpegError:
            return

    def _restart_for(self, pos: int) -> None:
        target = self._pts[pos]
        k = np.searchsorted(self._keys, target, side="right") - 1
        seek_pts = int(self._keys[k]) if k >= 0 else int(self._pts[0])
        self._frames = self._decode_from(seek_pts)
        self._pos = int(np.searchsorted(self._pts, seek_pts, side="left"))

    def _to_rgb(self, frame: Any) -> np.ndarray:
        if frame.width == self.width and frame.height == self.height:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", width=self.width, height=self.height, interpolation="AREA")

    def _get_sorted(self, want: np.ndarray) -> np.ndarray:
        out = np.empty((want.shape[0], self.height, self.width, 3), dtype=np.uint8)
        for j, pos in enumerate(want):
            pos = int(pos)
            target = int(self._pts[pos])
            k = np.searchsorted(self._keys, target, side="right") - 1
            key_pos = int(np.searchsorted(self._pts, self._keys[k], side="left")) if k >= 0 else 0
            if self._frames is None or pos < self._pos or key_pos > self._pos:
                self._restart_for(pos)
            assert self._frames is not None
            found = False
            for frame in self._frames:
                fpts = frame.pts
                if fpts is None:
                    continue
                self._pos = int(np.searchsorted(self._pts, fpts, side="right"))
                if fpts == target:
                    out[j] = self._to_rgb(frame)
                    found = True
                    break
                if fpts > target:
                    break
            if not found:
                self._frames = None
                raise VideoError(
                    f"{self.path}: frame {pos} (t={self.timestamps[pos]:.3f} s) could not be decoded "
                    "(corrupt or truncated stream)"
                )
        return out

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode frames by index. See :meth:`VideoDecoder.get_frames`.

        Returns:
            np.ndarray uint8 ``(len(indices), height, width, 3)`` RGB.
        """
        import av

        idx = checked_indices(self.path, self.num_frames, self._broken, indices)
        if idx.size == 0:
            return np.empty((0, self.height, self.width, 3), dtype=np.uint8)
        want, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = call_with_timeout(lambda: self._get_sorted(want), self.timeout_s, self.path, "decoding (PyAV)")
        except VideoError as e:
            if "did not finish" in str(e):
                self._broken = str(e)
            raise
        except av.error.FFmpegError as e:
            self._frames = None
            raise VideoError(f"{self.path}: decoding failed ({e})") from None
        return frames if want.shape[0] == idx.shape[0] and (inverse == np.arange(idx.shape[0])).all() else frames[inverse]

    def close(self) -> None:
        c = getattr(self, "_container", None)
        if c is not None:
            self._frames = None
            c.close()
            self._container = None

    def __enter__(self) -> PyAVDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PyAVDecoder({self.path!r}, frames={self.num_frames}, size={self.width}x{self.height})"


register_decoder("pyav", PyAVDecoder)

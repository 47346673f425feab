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


class _OutOfOrder(Exception):
    """The decoder returned a frame with a smaller pts than the one before (decode-order labels)."""


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
        device: ``"cpu"`` only (anything else is a ``VideoError``).
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
        device: str = "cpu",
    ) -> None:
        if str(device) != "cpu":
            raise VideoError(f"{path}: the pyav backend decodes on the CPU only, not {device!r}; "
                             "use backend='torchcodec' for GPU decoding")
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
        self._frames: Iterator[tuple[int, Any]] | None = None
        self._pos = 0  # position in self._pts of the next frame the iterator would give
        # True once the decoder returned frames out of pts order: the container's pts are decode-order
        # labels (AVI stores no presentation times; its demuxer makes them up from the decode order),
        # so frames are then identified by their position in the output, counted from the keyframe
        self._count_frames = self._index.reordered and self._index.container_format.split(",")[0] == "avi"

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

    def _labelled(self, frames: Iterator[Any]) -> Iterator[tuple[int, Any]]:
        """``(pts, frame)`` in output (presentation) order: the frame's own pts, or, once the labels are
        known to be decode-order ones, the pts of its display position counted from the first frame
        after the seek (a keyframe, whose label is right: it is first in both orders of a closed GOP)."""
        first: int | None = None
        n = 0
        last: int | None = None
        for frame in frames:
            fpts = frame.pts
            if fpts is None:
                continue
            if not self._count_frames and last is not None and fpts < last:
                self._count_frames = True
                raise _OutOfOrder()
            last = fpts
            if not self._count_frames:
                yield int(fpts), frame
                continue
            if first is None:
                first = int(np.searchsorted(self._pts, fpts, side="left"))
            p = first + n
            n += 1
            if p >= self._pts.shape[0]:
                return
            yield int(self._pts[p]), frame

    def _restart_for(self, pos: int, back: int = 0) -> None:
        """Seek so that decoding starts at or before the keyframe ``back`` keyframes before frame ``pos``'s.

        The seek goes to the keyframe's dts when it is earlier than its pts (``VideoIndex.seek_target``):
        demuxers seek on decode timestamps, and AVI knows no others, so with B-frames a seek to the
        keyframe's pts lands on a later keyframe, past the frame wanted.
        """
        target = self._pts[pos]
        k = int(np.searchsorted(self._keys, target, side="right")) - 1 - back
        if k >= 0:
            seek_ts, key_pts = self._index.seek_target(k), int(self._keys[k])
        else:
            seek_ts = key_pts = int(self._pts[0])
        self._frames = self._labelled(self._decode_from(seek_ts))
        self._pos = int(np.searchsorted(self._pts, min(key_pts, seek_ts), side="left"))

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
            # a miss is retried from one keyframe earlier, then from the start of the file, before it
            # is called undecodable: a seek that lands late, or a decoder that returns frames out of
            # presentation order, must not make a valid file look corrupt
            attempts = [1, len(self._keys) + 1, None]
            while attempts:
                try:
                    if self._find(target, out, j):
                        break
                except _OutOfOrder:  # now counting frames: decode this one again, from its keyframe
                    self._restart_for(pos)
                    continue
                attempt = attempts.pop(0)
                if attempt is None:
                    self._frames = None
                    raise VideoError(
                        f"{self.path}: frame {pos} (t={self.timestamps[pos]:.3f} s) could not be decoded "
                        "(corrupt or truncated stream)"
                    )
                self._restart_for(pos, back=attempt)
        return out

    _LATE = 16  # frames past the target after which it is not coming (deeper than any B-frame reordering)

    def _find(self, target: int, out: np.ndarray, j: int) -> bool:
        """Decode forward until the frame with pts ``target`` (into ``out[j]``); False when it did not come."""
        assert self._frames is not None
        late = 0
        for fpts, frame in self._frames:
            if fpts == target:
                out[j] = self._to_rgb(frame)
                self._pos = max(self._pos, int(np.searchsorted(self._pts, fpts, side="right")))
                return True
            self._pos = max(self._pos, int(np.searchsorted(self._pts, fpts, side="right")))
            if fpts > target:
                late += 1
                if late >= self._LATE:
                    break
        self._frames = None
        return False

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

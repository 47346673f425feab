"""torchcodec decoder: PyTorch's maintained video decoder, CPU and CUDA (layer 1; imports ``torchcodec``,
and with it torch, only when a file is opened).

``torchcodec.decoders.VideoDecoder`` in ``seek_mode="exact"`` scans the packets once and then decodes
any frame by index; resizing happens inside the decoder (``torchcodec.transforms.Resize``). Frame
count and timestamps still come from featcomp's own packet index (:func:`~featcomp.video.base.build_index`),
so every backend numbers frames the same way; every batch's presentation times are checked against
that index, so a frame torchcodec would return for the wrong index becomes a ``VideoError`` instead of
a silently wrong frame.

Install: ``pip install torchcodec`` at the release matching the installed torch (torchcodec's
compatibility table: 0.16 for torch 2.14); it loads the system's FFmpeg libraries (4 to 8; Debian:
``apt-get install ffmpeg``). CUDA decoding: ``device="cuda"`` (NVDEC; frames come back to host memory
as uint8 numpy like every backend).
"""

from __future__ import annotations

from collections.abc import Sequence
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

__all__ = ["TorchCodecDecoder", "PTS_TOLERANCE_S"]

PTS_TOLERANCE_S = 1e-3  # seconds: a returned frame's pts must match the index's within this


class TorchCodecDecoder:
    """A :class:`~featcomp.video.base.VideoDecoder` built on torchcodec.

    Args:
        path: Video file.
        index: Packet index from :func:`~featcomp.video.base.build_index` (built when None).
        width: Output width in pixels (resized inside the decoder).
        height: Output height in pixels.
        short_side: Shorter output side in pixels (aspect kept); exclusive with width/height.
        timeout_s: Deadline in seconds for opening and for each ``get_frames`` call.
        threads: FFmpeg decoding threads (``None``/``0``: FFmpeg decides; ``1``: one).
        device: ``"cpu"`` or ``"cuda"``/``"cuda:N"`` (NVDEC hardware decoding).
    """

    backend = "torchcodec"

    def __init__(
        self,
        path: str,
        *,
        index: VideoIndex | None = None,
        width: int | None = None,
        height: int | None = None,
        short_side: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        threads: int | None = None,
        device: str | None = None,
    ) -> None:
        from featcomp.video.base import backend_import

        decoders, transforms = backend_import("torchcodec")
        if index is not None and index.reordered and index.container_format.split(",")[0] == "avi":
            # measured: frames 15/16 for 17, and presentation times shifted by a frame, on H.264 and MPEG-4
            # with B-frames in AVI (which stores decode times only); some such files stop decoding early
            raise VideoError(f"{path}: torchcodec returns wrong frames on AVI files with B-frames (reordered "
                             "frames); open it with backend='pyav' (backend='auto' does)")
        self.path = str(path)
        self.timeout_s = timeout_s
        self.partial: str | None = None  # set by open_video(allow_partial=True) on a truncated file
        self._broken: str | None = None
        self._index = index if index is not None else build_index(self.path, timeout_s=timeout_s)
        self.width, self.height = resolve_size(self._index.width, self._index.height, width, height, short_side)
        self.device = str(device or "cpu")
        tf = None
        if (self.width, self.height) != (self._index.width, self._index.height):
            tf = [transforms.Resize(size=(self.height, self.width))]

        def _open() -> Any:
            try:
                return decoders.VideoDecoder(self.path, dimension_order="NHWC", seek_mode="exact",
                                             num_ffmpeg_threads=int(threads or 0), device=self.device, transforms=tf)
            except Exception as e:  # torchcodec raises RuntimeError/ValueError with FFmpeg's text
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else e.__class__.__name__
                raise VideoError(f"{self.path}: torchcodec cannot open it on {self.device} ({msg})") from None

        self._dec = call_with_timeout(_open, timeout_s, self.path, "opening with torchcodec")
        n_tc = int(self._dec.metadata.num_frames or 0)
        if n_tc < self._index.num_frames:  # never a silently shorter video: auto moves on
            raise VideoError(f"{self.path}: torchcodec sees only {n_tc} of the {self._index.num_frames} frames "
                             "the packets hold; open it with backend='pyav'")
        self.num_frames = self._index.num_frames
        self.timestamps = self._index.timestamps
        self.fps = self._index.fps
        # presentation times as torchcodec reports them: the index's, shifted so that frame 0 agrees
        # (containers without stored pts, e.g. AVI, get them made up from 0 or from 1 frame)
        first = call_with_timeout(lambda: self._dec.get_frames_at(indices=[0]), timeout_s, self.path,
                                  "decoding (torchcodec)")
        self._pts_s = self.timestamps + float(first.pts_seconds.cpu().numpy()[0])
        if self._index.damaged:  # measured: on a cut mp4 torchcodec fails on the last 2 frames PyAV decodes
            last = self.num_frames - 1
            try:
                call_with_timeout(lambda: self._dec.get_frames_at(indices=[last]), timeout_s, self.path,
                                  "decoding (torchcodec)")
            except Exception as e:
                if "did not finish" in str(e):
                    raise
                raise VideoError(f"{self.path}: torchcodec cannot decode the last frames before the damage in this "
                                 f"file (frame {last}), which PyAV decodes; open it with backend='pyav'") from None

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode frames by index with ``get_frames_at``. See :meth:`VideoDecoder.get_frames`.

        Returns:
            np.ndarray uint8 ``(len(indices), height, width, 3)`` RGB.

        Raises:
            VideoError: out of range, a decode failure, a hang, or a frame whose presentation time is
                not the index's for that frame (torchcodec numbered the frames differently).
        """
        idx = checked_indices(self.path, self.num_frames, self._broken, indices)
        if idx.size == 0:
            return np.empty((0, self.height, self.width, 3), dtype=np.uint8)
        dec = self._dec

        def _get() -> Any:
            try:
                return dec.get_frames_at(indices=idx.tolist())
            except Exception as e:
                msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else e.__class__.__name__
                raise VideoError(f"{self.path}: torchcodec failed to decode frames {idx.min()}..{idx.max()} ({msg})") from None

        try:
            batch = call_with_timeout(_get, self.timeout_s, self.path, "decoding (torchcodec)")
        except VideoError as e:
            if "did not finish" in str(e):
                self._broken = str(e)
            raise
        got = batch.pts_seconds.cpu().numpy().astype(np.float64)
        want = self._pts_s[idx]
        bad = np.flatnonzero(np.abs(got - want) > PTS_TOLERANCE_S)
        if bad.size:
            j = int(bad[0])
            raise VideoError(
                f"{self.path}: torchcodec returned the frame at t={got[j]:.3f} s for frame {int(idx[j])} "
                f"(t={want[j]:.3f} s): it numbers this file's frames differently; open it with backend='pyav'"
            )
        frames = batch.data.cpu().numpy()
        if frames.shape[1:] != (self.height, self.width, 3):  # pragma: no cover - defensive
            raise VideoError(f"{self.path}: torchcodec returned frames of shape {frames.shape[1:]}, "
                             f"expected {(self.height, self.width, 3)}")
        return np.ascontiguousarray(frames, dtype=np.uint8)

    def close(self) -> None:
        self._dec = None

    def __enter__(self) -> TorchCodecDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"TorchCodecDecoder({self.path!r}, frames={self.num_frames}, size={self.width}x{self.height}, "
                f"device={self.device!r})")


register_decoder("torchcodec", TorchCodecDecoder)

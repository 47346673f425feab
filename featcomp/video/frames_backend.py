"""Frames-folder decoder: a directory of image files read as one video (layer 1; imports Pillow on open).

The frames are the directory's image files (:data:`IMAGE_EXTENSIONS`, case-insensitive; names that
start with ``.`` and subdirectories are ignored) in natural order of their names (``frame_2``
before ``frame_10``; :func:`natural_key`). Frame ``i`` is shown at ``i / fps`` seconds, ``fps``
given by the caller (:data:`DEFAULT_FRAMES_FPS` when none is). Random access is exact: a frame is
a file. Every frame must have the size of the first one; a frame of another size, or a file that
is not a readable image, is a :class:`~featcomp.errors.VideoError` naming the file. Sizes are
checked from the image headers when the folder is opened, pixels when a frame is decoded.

Pixels are taken as stored: the EXIF orientation tag is not applied (frames dumped from a video
carry none), an alpha channel is dropped, grayscale and palette images become RGB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from featcomp.errors import VideoError
from featcomp.video.base import DEFAULT_TIMEOUT_S, call_with_timeout, checked_indices, register_decoder, resolve_size

__all__ = ["FramesDecoder", "IMAGE_EXTENSIONS", "DEFAULT_FRAMES_FPS", "natural_key", "image_files",
           "frames_native_size", "is_image_name"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_FRAMES_FPS = 25.0  # frames per second of a frames folder when the caller gives none

_DIGITS = re.compile(r"([0-9]+)")


def natural_key(name: str) -> tuple[list[Any], str]:
    """Sort key of a file name in natural order: runs of ASCII digits compare as numbers, the rest
    case-insensitively (``frame_2`` < ``frame_10`` < ``Frame_11``); ties (``f01``/``f1``) fall back
    to the plain name, so the order is total and deterministic."""
    parts = _DIGITS.split(name)
    # split() alternates text (even positions) and digit runs (odd positions): same types line up
    return [int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)], name


def is_image_name(name: str) -> bool:
    """True for a non-hidden name ending in one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def image_files(directory: str | os.PathLike[str]) -> list[str]:
    """The image files of ``directory`` (not its subdirectories), full paths in natural order.

    Raises:
        VideoError: the directory cannot be listed.
    """
    d = os.fspath(directory)
    try:
        names = [e.name for e in os.scandir(d) if is_image_name(e.name) and e.is_file()]
    except OSError as e:
        raise VideoError(f"{d}: cannot list the frames folder ({e})") from None
    return [os.path.join(d, n) for n in sorted(names, key=natural_key)]


def _image_error(path: str, e: BaseException) -> VideoError:
    return VideoError(f"{path}: not a readable image frame ({type(e).__name__}: {e}); "
                      "replace or remove the file")


def _header_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except Exception as e:  # UnidentifiedImageError, OSError, DecompressionBombError...
        raise _image_error(path, e) from None


def frames_native_size(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of a frames folder's first frame (its header only), pixels.

    Raises:
        VideoError: no image files, or the first one is not a readable image.
    """
    files = image_files(directory)
    if not files:
        raise VideoError(f"{os.fspath(directory)}: the frames folder holds no image files "
                         f"({', '.join(IMAGE_EXTENSIONS)})")
    return _header_size(files[0])


class FramesDecoder:
    """A :class:`~featcomp.video.base.VideoDecoder` over a directory of image frames (Pillow).

    Args:
        path: The directory.
        index: Unused (frames folders have no packet index); must be None.
        width: Output width in pixels (frames are resized on decode; JPEGs are decoded at a reduced
            DCT scale first when the output is at most half the native size).
        height: Output height in pixels.
        short_side: Shorter output side in pixels (aspect kept); exclusive with width/height.
        timeout_s: Deadline in seconds for opening (listing and reading the headers) and for each
            ``get_frames`` call.
        threads: Accepted for symmetry with the other backends; frames are decoded one by one.
        device: ``"cpu"`` only.
        fps: Frames per second: frame ``i`` is at ``i / fps`` seconds (default :data:`DEFAULT_FRAMES_FPS`).

    Raises:
        VideoError: not a directory, no image files, a file that is not an image, frames of
            different sizes (naming the first file of another size), a bad ``fps``.
    """

    backend = "frames"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        index: Any = None,
        width: int | None = None,
        height: int | None = None,
        short_side: int | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        threads: bool | int | None = None,
        device: str = "cpu",
        fps: float | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if str(device) != "cpu":
            raise VideoError(f"{self.path}: the frames backend decodes on the CPU only, not {device!r}")
        if index is not None:
            raise VideoError(f"{self.path}: a frames folder has no packet index; do not pass index=")
        fps = DEFAULT_FRAMES_FPS if fps is None else float(fps)
        if not np.isfinite(fps) or fps <= 0:
            raise VideoError(f"{self.path}: frames fps must be a positive number, got {fps!r}")
        if not os.path.isdir(self.path):
            raise VideoError(f"{self.path}: not a directory (the frames backend reads a folder of images)")
        self.timeout_s = timeout_s
        self._files = call_with_timeout(lambda: self._scan(), timeout_s, self.path, "reading the frame headers")
        nw, nh = self.native_size
        self.width, self.height = resolve_size(nw, nh, width, height, short_side)
        self.num_frames = len(self._files)
        self.fps = fps
        self.timestamps = np.arange(self.num_frames, dtype=np.float64) / fps
        self.partial: str | None = None
        self._broken: str | None = None

    def _scan(self) -> list[str]:
        files = image_files(self.path)
        if not files:
            raise VideoError(f"{self.path}: the frames folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        size = _header_size(files[0])
        for f in files[1:]:
            s = _header_size(f)
            if s != size:
                raise VideoError(f"{f}: frame of size {s[0]}x{s[1]}, but the folder's first frame {files[0]} is "
                                 f"{size[0]}x{size[1]}; every frame of a frames folder must have the same size")
        self.native_size = size
        return files

    @property
    def files(self) -> list[str]:
        """The frame files, in frame order."""
        return list(self._files)

    def _load(self, path: str) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                if (im.width, im.height) != self.native_size:
                    raise VideoError(f"{path}: frame of size {im.width}x{im.height}, but the folder's frames are "
                                     f"{self.native_size[0]}x{self.native_size[1]} (did the file change?)")
                w, h = self.width, self.height
                if im.format == "JPEG" and 2 * w <= im.width and 2 * h <= im.height:
                    im.draft("RGB", (w, h))  # decode at 1/2, 1/4 or 1/8 scale: never below (w, h)
                rgb = im.convert("RGB")
                if rgb.size != (w, h):
                    down = w <= rgb.width and h <= rgb.height
                    rgb = rgb.resize((w, h), Image.Resampling.BOX if down else Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
        except VideoError:
            raise
        except Exception as e:  # a truncated or corrupt image
            raise _image_error(path, e) from None

    def _get_sorted(self, want: np.ndarray) -> np.ndarray:
        out = np.empty((want.shape[0], self.height, self.width, 3), dtype=np.uint8)
        for j, i in enumerate(want):
            out[j] = self._load(self._files[int(i)])
        return out

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode frames by index. See :meth:`VideoDecoder.get_frames`.

        Returns:
            np.ndarray uint8 ``(len(indices), height, width, 3)`` RGB.
        """
        idx = checked_indices(self.path, self.num_frames, self._broken, indices)
        if idx.size == 0:
            return np.empty((0, self.height, self.width, 3), dtype=np.uint8)
        want, inverse = np.unique(idx, return_inverse=True)
        try:
            frames = call_with_timeout(lambda: self._get_sorted(want), self.timeout_s, self.path, "decoding (frames)")
        except VideoError as e:
            if "did not finish" in str(e):
                self._broken = str(e)
            raise
        return frames[inverse.reshape(-1)]

    def close(self) -> None:
        pass

    def __enter__(self) -> FramesDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"FramesDecoder({self.path!r}, frames={self.num_frames}, fps={self.fps:g}, "
                f"size={self.width}x{self.height})")


register_decoder("frames", FramesDecoder)

"""Synthetic test clips made with PyAV while the tests run (shared by every test area).

Every frame carries its own index as a barcode: a 3 x 4 grid of big black/white blocks, one bit per
block (most significant bit top-left), which survives H.264 at modest quality and downscaling to a
few dozen pixels. :func:`read_barcode` recovers the index from a decoded RGB frame, so tests can check
exactly which frames a decoder or sampler returned.

Example::

    from tests.clips import make_clip, read_barcode
    path = make_clip(tmp_path / "a.mp4", num_frames=50, fps=25)
    # frame i of the file shows read_barcode(frame) == i

Helpers for broken inputs: :func:`make_truncated` (cut a file), :func:`make_not_video`,
:func:`make_empty`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "BARCODE_BITS",
    "barcode_frame",
    "read_barcode",
    "read_barcodes",
    "make_clip",
    "make_truncated",
    "make_not_video",
    "make_empty",
]

_ROWS, _COLS = 3, 4
BARCODE_BITS = _ROWS * _COLS  # frames 0 .. 4095 can be labelled


def barcode_frame(index: int, width: int = 96, height: int = 64) -> np.ndarray:
    """An RGB frame showing ``index`` as a barcode.

    Args:
        index: Frame index, ``0 <= index < 2**BARCODE_BITS``.
        width: Frame width in pixels (>= 2 * columns).
        height: Frame height in pixels (>= 2 * rows).

    Returns:
        np.ndarray uint8 of shape ``(height, width, 3)``: a white block for each 1 bit, black for 0.
    """
    if not 0 <= index < 2**BARCODE_BITS:
        raise ValueError(f"index {index} does not fit in {BARCODE_BITS} bits")
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    ys = np.linspace(0, height, _ROWS + 1).round().astype(int)
    xs = np.linspace(0, width, _COLS + 1).round().astype(int)
    for bit in range(BARCODE_BITS):
        if (index >> (BARCODE_BITS - 1 - bit)) & 1:
            r, c = divmod(bit, _COLS)
            frame[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = 255
    return frame


def read_barcode(frame: np.ndarray) -> int:
    """Recover the index drawn by :func:`barcode_frame` from a decoded (possibly resized) frame.

    Args:
        frame: uint8 ``(H, W, 3)`` RGB (or ``(H, W)`` gray).

    Returns:
        The index (int), reading each block's central half against mid-gray.
    """
    img = np.asarray(frame, dtype=np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    h, w = img.shape
    value = 0
    for bit in range(BARCODE_BITS):
        r, c = divmod(bit, _COLS)
        y0, y1 = h * r / _ROWS, h * (r + 1) / _ROWS
        x0, x1 = w * c / _COLS, w * (c + 1) / _COLS
        cy0, cy1 = int(y0 + (y1 - y0) / 4), int(np.ceil(y1 - (y1 - y0) / 4))
        cx0, cx1 = int(x0 + (x1 - x0) / 4), int(np.ceil(x1 - (x1 - x0) / 4))
        value = (value << 1) | int(img[cy0:cy1, cx0:cx1].mean() > 127.5)
    return value


def read_barcodes(frames: np.ndarray) -> np.ndarray:
    """:func:`read_barcode` over a batch ``(n, H, W, 3)`` (or ``(n, T, H, W, 3)``); int64 of shape ``frames.shape[:-3]``."""
    frames = np.asarray(frames)
    lead = frames.shape[:-3]
    flat = frames.reshape((-1, *frames.shape[-3:]))
    return np.array([read_barcode(f) for f in flat], dtype=np.int64).reshape(lead)


def make_clip(
    path: str | Path,
    num_frames: int = 50,
    *,
    fps: float = 25,
    width: int = 96,
    height: int = 64,
    codec: str = "libx264",
    pts_seconds: Sequence[float] | None = None,
    gop: int = 12,
    crf: int = 23,
    faststart: bool = False,
    bframes: bool = True,
) -> Path:
    """Write a clip whose frame ``i`` shows barcode ``i``.

    Args:
        path: Output file; the container follows the suffix (``.mp4``, ``.mkv``, ``.avi``...).
        num_frames: Number of frames.
        fps: Nominal frame rate (frames per second) for constant-rate clips.
        width: Width in pixels (even for yuv420p).
        height: Height in pixels (even for yuv420p).
        codec: PyAV encoder name (``libx264``, ``mpeg4``, ``mjpeg``...).
        pts_seconds: Presentation time (seconds, strictly increasing) of each frame for a
            variable-frame-rate clip; ``None`` for constant rate ``i / fps``.
        gop: Keyframe interval in frames (so random access has to seek past keyframes).
        crf: x264 quality (lower is better).
        faststart: Put the mp4 index (moov) first, so a truncated copy still opens and its header
            overstates the number of frames.
        bframes: Allow B-frames (frame reordering: decode order differs from presentation order).

    Returns:
        The path written.
    """
    import av

    path = Path(path)
    options: dict[str, str] = {}
    if faststart:
        options["movflags"] = "+faststart"
    if pts_seconds is not None and len(pts_seconds) != num_frames:
        raise ValueError("pts_seconds must give one time per frame")
    with av.open(str(path), mode="w", options=options) as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "ultrafast" if not bframes else "veryfast", "g": str(gop),
                              "keyint_min": str(gop), "bf": "2" if bframes else "0"}
        else:
            stream.gop_size = gop
            stream.bit_rate = 2_000_000
        if pts_seconds is not None:
            time_base = Fraction(1, 1000)
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        else:
            time_base = 1 / rate
            stream.codec_context.time_base = time_base
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(barcode_frame(i, width, height), format="rgb24")
            if pts_seconds is not None:
                frame.pts = int(round(pts_seconds[i] * 1000))
                frame.time_base = time_base
            else:
                frame.pts = i
                frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_truncated(src: str | Path, dst: str | Path, keep: float = 0.6) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dst`` (a truncated file)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def make_not_video(path: str | Path) -> Path:
    """A text file with a video suffix."""
    path = Path(path)
    path.write_text("this is not a video file\n" * 200)
    return path


def make_empty(path: str | Path) -> Path:
    """A zero-byte file."""
    path = Path(path)
    path.write_bytes(b"")
    return path

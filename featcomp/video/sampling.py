"""Frame sampling with timestamps, streamed in bounded batches (layer 1; numpy only).

Sampling is decided on presentation timestamps (seconds), so it is correct on variable-frame-rate
files. Rules (also in docs/video.md):

* ``FPS``: sample times ``k / fps`` for ``k = 0, 1, ...`` while ``k / fps <= t_last``; each picks the
  frame on screen at that time (the last frame with ``t <= k / fps``). A frame is never returned twice,
  so asking for more than the source rate gives every frame once.
* ``UNIFORM``: ``num_frames`` sample times at the centres of ``num_frames`` equal segments of
  ``[0, t_last]``, each taking the nearest frame; repeats are dropped, so a video with fewer frames
  gives all of its frames (fewer than ``num_frames``).
* ``WINDOWS``: windows of ``window`` consecutive frames (of all frames, or of the frames picked at
  ``fps`` when ``fps`` is set) starting every ``stride`` frames; a window that would run past the end
  is dropped. A video shorter than one window gives exactly **one** window padded by repeating its
  last frame. Each window's timestamp is its first frame's.
* ``ALL``: every frame.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Iterator

import numpy as np

from featcomp.config import Config, require
from featcomp.video.base import DEFAULT_TIMEOUT_S, VideoDecoder, open_video

__all__ = ["SamplingMode", "SamplingConfig", "FrameBatch", "SamplePlan", "plan_samples", "sample_frames"]

_EPS = 1e-6  # seconds: float slack when comparing sample times with frame times


class SamplingMode(enum.Enum):
    """How frames are picked from a video."""

    FPS = "fps"
    UNIFORM = "uniform"
    WINDOWS = "windows"
    ALL = "all"


@dataclasses.dataclass(frozen=True)
class SamplingConfig(Config):
    """Which frames to decode, at what size, in batches of what size.

    Attributes:
        mode: A :class:`SamplingMode`.
        fps: Target rate in frames per second (``FPS``, default 1.0; optional pre-rate for ``WINDOWS``;
            must be None for ``UNIFORM`` and ``ALL``).
        num_frames: Number of frames for ``UNIFORM``.
        window: Frames per window for ``WINDOWS`` (3D clip models).
        stride: Frames between window starts (default: ``window``, non-overlapping).
        width: Output width in pixels (resize on decode), None for native/aspect-kept.
        height: Output height in pixels.
        short_side: Resize so the shorter side has this many pixels; exclusive with width/height.
        batch_size: Frames (or windows) per :class:`FrameBatch`; bounds memory.
        backend: Decoder name (``"auto"``, ``"pyav"``, ``"decord"``, ``"torchcodec"``).
        timeout_s: Deadline in seconds for opening and for each batch's decode.
    """

    FORMAT_VERSION = 1

    mode: SamplingMode = SamplingMode.FPS
    fps: float | None = None
    num_frames: int | None = None
    window: int | None = None
    stride: int | None = None
    width: int | None = None
    height: int | None = None
    short_side: int | None = None
    batch_size: int = 32
    backend: str = "auto"
    timeout_s: float | None = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if isinstance(self.mode, str):
            try:
                object.__setattr__(self, "mode", SamplingMode(self.mode))
            except ValueError:
                require(False, f"SamplingConfig.mode: {self.mode!r} is not one of {[m.value for m in SamplingMode]}")
        m = self.mode
        require(isinstance(m, SamplingMode), f"SamplingConfig.mode must be a SamplingMode, got {m!r}")
        if m is SamplingMode.FPS and self.fps is None:
            object.__setattr__(self, "fps", 1.0)  # the default sampling: 1 frame per second
        require(self.fps is None or m in (SamplingMode.FPS, SamplingMode.WINDOWS),
                f"SamplingConfig: fps applies to modes 'fps' and 'windows', not {m.value!r}")
        if self.fps is not None:
            require(self.fps > 0, f"SamplingConfig.fps must be > 0, got {self.fps}")
        if m is SamplingMode.UNIFORM:
            require(self.num_frames is not None and self.num_frames >= 1,
                    f"SamplingConfig: mode 'uniform' needs num_frames >= 1, got {self.num_frames}")
        if m is SamplingMode.WINDOWS:
            require(self.window is not None and self.window >= 1,
                    f"SamplingConfig: mode 'windows' needs window >= 1, got {self.window}")
            require(self.stride is None or self.stride >= 1, f"SamplingConfig.stride must be >= 1, got {self.stride}")
        for name in ("width", "height", "short_side"):
            v = getattr(self, name)
            require(v is None or v >= 1, f"SamplingConfig.{name} must be >= 1, got {v}")
        require(self.short_side is None or (self.width is None and self.height is None),
                "SamplingConfig: give short_side or width/height, not both")
        require(self.batch_size >= 1, f"SamplingConfig.batch_size must be >= 1, got {self.batch_size}")

    # convenience constructors
    @classmethod
    def at_fps(cls, fps: float, **kw: object) -> SamplingConfig:
        """Frames at ``fps`` frames per second."""
        return cls(mode=SamplingMode.FPS, fps=fps, **kw)  # type: ignore[arg-type]

    @classmethod
    def uniform(cls, num_frames: int, **kw: object) -> SamplingConfig:
        """``num_frames`` frames spread uniformly over the video."""
        return cls(mode=SamplingMode.UNIFORM, num_frames=num_frames, **kw)  # type: ignore[arg-type]

    @classmethod
    def windows(cls, window: int, stride: int | None = None, *, fps: float | None = None, **kw: object) -> SamplingConfig:
        """Windows of ``window`` frames every ``stride`` frames (of the frames at ``fps`` if given)."""
        return cls(mode=SamplingMode.WINDOWS, fps=fps, window=window, stride=stride, **kw)  # type: ignore[arg-type]

    @classmethod
    def all_frames(cls, **kw: object) -> SamplingConfig:
        """Every frame."""
        return cls(mode=SamplingMode.ALL, **kw)  # type: ignore[arg-type]


@dataclasses.dataclass
class FrameBatch:
    """One batch of sampled frames.

    Attributes:
        frames: uint8 RGB ``(n, H, W, 3)``, or ``(n, window, H, W, 3)`` for ``WINDOWS``.
        indices: int64 ``(n,)`` frame index in the video (first frame of each window).
        timestamps: float64 ``(n,)`` presentation time in seconds (first frame of each window).
        window_indices: int64 ``(n, window)`` for ``WINDOWS`` (padding repeats the last index), else None.
        partial: None, or why the video is incomplete (a truncated file opened with ``allow_partial``).
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    window_indices: np.ndarray | None = None
    partial: str | None = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])


@dataclasses.dataclass(frozen=True)
class SamplePlan:
    """Which frames a sampling picks, before any decoding.

    Attributes:
        indices: int64 ``(n,)`` frames, or ``(n, window)`` for ``WINDOWS``.
        timestamps: float64 ``(n,)`` seconds (first frame of each window).
    """

    indices: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _at_fps(ts: np.ndarray, fps: float) -> np.ndarray:
    n_samples = int(np.floor(ts[-1] * fps + _EPS)) + 1
    times = np.arange(n_samples, dtype=np.float64) / fps
    idx = np.searchsorted(ts, times + _EPS, side="right") - 1
    idx = np.clip(idx, 0, ts.shape[0] - 1)
    return np.unique(idx)  # sorted, each frame once


def _uniform(ts: np.ndarray, n: int) -> np.ndarray:
    times = ts[-1] * (np.arange(n, dtype=np.float64) + 0.5) / n
    right = np.clip(np.searchsorted(ts, times, side="left"), 0, ts.shape[0] - 1)
    left = np.clip(right - 1, 0, ts.shape[0] - 1)
    idx = np.where(np.abs(ts[left] - times) <= np.abs(ts[right] - times) + _EPS, left, right)
    return np.unique(idx)


def plan_samples(timestamps: np.ndarray, sampling: SamplingConfig) -> SamplePlan:
    """Pick frames from a video's frame timestamps (no decoding).

    Args:
        timestamps: float64 ``(num_frames,)`` seconds, increasing (a decoder's ``timestamps``).
        sampling: The rule (see the module docstring).

    Returns:
        A :class:`SamplePlan`; ``indices`` is ``(n,)`` or ``(n, window)`` for ``WINDOWS``.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    n = ts.shape[0]
    if n == 0:
        return SamplePlan(np.zeros((0,), np.int64), np.zeros((0,), np.float64))
    m = sampling.mode
    if m is SamplingMode.ALL:
        idx = np.arange(n, dtype=np.int64)
    elif m is SamplingMode.FPS:
        assert sampling.fps is not None
        idx = _at_fps(ts, sampling.fps)
    elif m is SamplingMode.UNIFORM:
        assert sampling.num_frames is not None
        idx = _uniform(ts, sampling.num_frames)
    else:
        assert sampling.window is not None
        base = _at_fps(ts, sampling.fps) if sampling.fps is not None else np.arange(n, dtype=np.int64)
        w = sampling.window
        stride = sampling.stride or w
        if base.shape[0] >= w:
            starts = np.arange(0, base.shape[0] - w + 1, stride)
            win = base[starts[:, None] + np.arange(w)[None, :]]
        else:  # shorter than one window: one window padded by repeating the last frame
            win = np.concatenate([base, np.full(w - base.shape[0], base[-1])])[None, :]
        win = win.astype(np.int64)
        return SamplePlan(win, ts[win[:, 0]])
    idx = idx.astype(np.int64)
    return SamplePlan(idx, ts[idx])


def sample_frames(
    path_or_decoder: str | os.PathLike[str] | VideoDecoder,
    sampling: SamplingConfig | None = None,
    *,
    threads: int | None = None,
    allow_partial: bool = False,
    frames_fps: float | None = None,
) -> Iterator[FrameBatch]:
    """Decode the frames a sampling picks, as a stream of bounded batches.

    Memory is bounded by ``sampling.batch_size`` frames (windows), not by the video's length.

    Args:
        path_or_decoder: A video file or a directory of image frames (opened with ``sampling.backend`` and its size options, closed at
            the end) or an open :class:`~featcomp.video.base.VideoDecoder` (left open; its size is used).
        sampling: The rule; defaults to 1 frame per second.
        threads: Decoder threads when a path is opened here (see :func:`~featcomp.video.open_video`).
        allow_partial: Decode the decodable part of a truncated file (each batch's ``partial`` says
            why it is incomplete) instead of raising :class:`~featcomp.errors.TruncatedVideoError`.
        frames_fps: Frame rate of a directory of image frames opened here (``None``: 25 fps; see
            :func:`~featcomp.video.open_video`); sampling then picks frames on ``i / frames_fps``.

    Yields:
        :class:`FrameBatch` of at most ``batch_size`` frames (windows), in time order.

    Raises:
        TruncatedVideoError: the file ends before what its container declares (without ``allow_partial``).
        VideoError: the file cannot be opened or decoded (names the path and the reason).
    """
    sampling = sampling or SamplingConfig()
    own = not hasattr(path_or_decoder, "get_frames")
    dec: VideoDecoder = (
        open_video(
            path_or_decoder,  # type: ignore[arg-type]
            backend=sampling.backend,
            width=sampling.width,
            height=sampling.height,
            short_side=sampling.short_side,
            timeout_s=sampling.timeout_s,
            threads=threads,
            allow_partial=allow_partial,
            frames_fps=frames_fps,
        )
        if own
        else path_or_decoder  # type: ignore[assignment]
    )
    try:
        plan = plan_samples(dec.timestamps, sampling)
        partial = getattr(dec, "partial", None)
        bs = sampling.batch_size
        for start in range(0, len(plan), bs):
            sel = plan.indices[start : start + bs]
            ts = plan.timestamps[start : start + bs]
            if sel.ndim == 2:
                uniq, inverse = np.unique(sel, return_inverse=True)
                frames = dec.get_frames(uniq)[inverse.reshape(sel.shape)]
                yield FrameBatch(frames, sel[:, 0].copy(), ts.copy(), sel.copy(), partial=partial)
            else:
                yield FrameBatch(dec.get_frames(sel), sel.copy(), ts.copy(), partial=partial)
    finally:
        if own:
            dec.close()

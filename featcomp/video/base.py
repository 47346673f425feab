"""The video decoder protocol, the packet index, hang guards and ``open_video`` (layer 1).

Imports numpy only at import time; PyAV and decord are imported when a file is opened, torch never.

Timestamps are **presentation times** in seconds, taken from the packets' pts (not ``index / fps``),
so variable-frame-rate files are sampled correctly; the first frame is at ``0.0``. The number of
frames comes from demuxing the packets, not from the container header, which can be wrong
(truncated files, files written without a count); when the header and the packets disagree, the
tail of the file is decoded to find the last frame that really decodes.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from featcomp.errors import TruncatedVideoError, VideoError
from featcomp.registry import Registry

__all__ = [
    "AUTO_ORDER",
    "BACKEND_PACKAGES",
    "DIRECTORY_BACKENDS",
    "available_decoders",
    "backend_import",
    "decoder_available",
    "VideoDecoder",
    "VideoIndex",
    "build_index",
    "call_with_timeout",
    "open_video",
    "register_decoder",
    "get_decoder",
    "resolve_size",
    "DEFAULT_TIMEOUT_S",
]

DEFAULT_TIMEOUT_S = 60.0
# backend="auto" sends videos longer than this to PyAV first: decord's memory grows with the frames
# it decodes (decord issue #208; measured here: +1.3 GB over 9,000 frames of a 30-minute 360p clip,
# and re-creating the VideoReader does not release it), while PyAV stays flat.
AUTO_DECORD_MAX_FRAMES = 5000
T = TypeVar("T")


@runtime_checkable
class VideoDecoder(Protocol):
    """Frame-accurate random access to one video's frames.

    Attributes:
        path: The file.
        num_frames: Number of decodable frames (counted from packets, not the header).
        fps: Average frame rate (frames per second), ``(num_frames - 1) / duration`` when known.
        width: Width of the frames returned (after resize on decode), pixels.
        height: Height of the frames returned, pixels.
        timestamps: float64 ``(num_frames,)`` presentation time of each frame in seconds, increasing,
            first frame at 0.0.
    """

    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    timestamps: np.ndarray

    def get_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed).

        Returns:
            np.ndarray uint8 ``(len(indices), height, width, 3)`` RGB, in the order asked.

        Raises:
            VideoError: an index out of range, a decode failure or a decoder hang (timeout).
        """
        ...

    def close(self) -> None: ...

    def __enter__(self) -> VideoDecoder: ...

    def __exit__(self, *exc: object) -> None: ...


def call_with_timeout(fn: Callable[[], T], timeout_s: float | None, path: str, what: str) -> T:
    """Run ``fn()`` in a daemon thread and wait at most ``timeout_s`` seconds.

    Decoder libraries can hang on broken files (decord issue #269). A hang becomes a
    :class:`VideoError`; the stuck thread is a daemon, so it never keeps the process alive.

    Args:
        fn: A callable of no arguments.
        timeout_s: Deadline in seconds; ``None`` or ``<= 0`` calls ``fn`` directly.
        path: The video (for the error message).
        what: What ``fn`` does (for the error message), e.g. ``"opening"``.

    Raises:
        VideoError: on timeout. Exceptions raised by ``fn`` are re-raised unchanged.
    """
    if not timeout_s or timeout_s <= 0:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=run, name=f"featcomp-video-{what}", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise VideoError(
            f"{path}: {what} did not finish within {timeout_s:g} s (the decoder hangs on this file; "
            "it is probably corrupt). Re-encode it or raise timeout_s."
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def checked_indices(path: str, num_frames: int, broken: str | None, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Validate frame indices for ``get_frames`` (shared by every backend).

    Args:
        path: the video, for messages.
        num_frames: frames the decoder can return.
        broken: the reason an earlier call left the decoder unusable, or None.
        indices: requested frame numbers.

    Returns:
        int64 (n,) indices (possibly empty).

    Raises:
        VideoError: the decoder is unusable, or an index lies outside ``[0, num_frames)``.
    """
    if broken:
        raise VideoError(f"{path}: decoder unusable after an earlier failure ({broken})")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        raise VideoError(f"{path}: frame indices must lie in [0, {num_frames}), got {idx.min()}..{idx.max()}")
    return idx


@dataclasses.dataclass(frozen=True)
class VideoIndex:
    """What demuxing a video's packets tells (no frames decoded unless the header disagrees).

    Attributes:
        path: The file.
        pts: int64 ``(n,)`` presentation timestamps of the decodable frames in stream time base,
            sorted increasing (display order).
        time_base: Seconds per pts tick.
        keyframe_pts: int64 sorted pts of keyframes (random-access points).
        width: Native width in pixels.
        height: Native height in pixels.
        header_frames: Frame count the container header claims (0 when it has none).
        codec: Codec name.
        damaged: True when the packets disagree with the header or some are corrupt (the tail was
            verified by decoding); decoders then avoid frame threading, which drops frames around damage.
        declared_duration: Duration of the video stream the container declares, seconds (0.0 when it
            declares none): the stream's own duration, the ``DURATION`` tag Matroska muxers write, or
            the container's duration when the video is its only stream.
        end_pts: Presentation end of the last demuxed frame (its pts plus its duration) in stream
            time base, or 0 when unknown; with ``start_pts`` it measures what the packets cover.
        start_pts: The stream's start time in stream time base (``pts[0]`` when unknown).
        empty_packets: Zero-byte packets carrying a timestamp (AVI "repeat the previous frame"
            markers): counted by the header, never frames of their own.
        keyframe_seek: int64, aligned with ``keyframe_pts``: the timestamp to seek to for each
            keyframe, ``min(pts, dts)``. Demuxers seek on decode timestamps (AVI stores only those),
            so seeking to a keyframe's pts lands on a *later* keyframe when frames are reordered
            (B-frames); None means ``keyframe_pts``.
        reordered: True when frames are reordered (B-frames): packets arrive out of presentation
            order, or the codec declares a reordering delay (AVI packets carry no presentation times).
        container_format: FFmpeg's name of the container format (``"avi"``, ``"mov,mp4,m4a,3gp,3g2,mj2"``...).
    """

    path: str
    pts: np.ndarray
    time_base: float
    keyframe_pts: np.ndarray
    width: int
    height: int
    header_frames: int
    codec: str
    damaged: bool = False
    declared_duration: float = 0.0
    end_pts: int = 0
    start_pts: int | None = None
    empty_packets: int = 0
    keyframe_seek: np.ndarray | None = None
    reordered: bool = False
    container_format: str = ""

    def seek_target(self, k: int) -> int:
        """The timestamp to seek to so that decoding starts at or before keyframe ``k`` (its position
        in ``keyframe_pts``): its dts when that is earlier than its pts."""
        if self.keyframe_seek is not None and self.keyframe_seek.shape == self.keyframe_pts.shape:
            return int(self.keyframe_seek[k])
        return int(self.keyframe_pts[k])

    @property
    def num_frames(self) -> int:
        return int(self.pts.shape[0])

    @property
    def timestamps(self) -> np.ndarray:
        """float64 ``(n,)`` seconds from the first frame."""
        return (self.pts - self.pts[0]).astype(np.float64) * self.time_base

    @property
    def fps(self) -> float:
        ts = self.timestamps
        if ts.shape[0] < 2 or ts[-1] <= 0:
            return 0.0
        return float((ts.shape[0] - 1) / ts[-1])

    def truncation(self) -> tuple[int, str] | None:
        """Whether the decodable frames fall short of what the container declares.

        Two checks, by what the container declares (docs/video.md, "Truncated videos"):

        * an exact frame count (mp4/mov sample tables, AVI headers): short when fewer frames decode
          than the header counts (zero-byte repeat markers are not missing frames). No tolerance:
          the count is exact, and it matched the packets on every test and real clip.
        * only a duration (Matroska/WebM): short when the decoded frames end more than
          ``max(1.5 frame intervals, 50 ms)`` before the declared duration. The end of the decoded
          part is the last frame's pts plus its own demuxed duration (so a long-held last frame of
          a variable-rate file is not taken for missing frames), or plus the median frame interval
          when the tail is damaged. On complete mkv/webm clips (constant and variable rate,
          1-60 frames, 16.7-100 ms frames) the gap measured 0-1 ms; a cut that loses a single
          frame can go unnoticed.

        Returns:
            None when nothing is missing (or nothing is declared); else ``(declared_frames, reason)``,
            declared_frames being the header's count or ``round(duration * fps)``.
        """
        n = self.num_frames
        if self.header_frames > 0:
            declared = self.header_frames - self.empty_packets
            if n < declared:
                return declared, f"decoded {n} of the {declared} frames the container declares"
            return None
        if self.declared_duration <= 0 or self.time_base <= 0:
            return None
        start = self.start_pts if self.start_pts is not None else int(self.pts[0])
        start = min(start, int(self.pts[0]))
        diffs = np.diff(self.pts)
        step = float(np.median(diffs)) * self.time_base if diffs.size else 0.0
        last = int(self.pts[-1])
        # the last frame's own duration (demuxed), unless the tail was cut (then it is unknown)
        end = self.end_pts if self.end_pts > last and not self.damaged else last + (step / self.time_base)
        covered = (end - start) * self.time_base
        missing = self.declared_duration - covered
        if missing > max(1.5 * step, 0.05):
            declared = int(round(n * self.declared_duration / covered)) if covered > 0 else n + 1
            declared = max(declared, n + 1)
            return declared, (f"decoded {n} frames covering {covered:.3f} s of the {self.declared_duration:.3f} s "
                              f"the container declares (about {declared - n} frames missing)")
        return None


def check_file(path: str | os.PathLike[str]) -> str:
    """Return ``str(path)`` after checking it is an existing, non-empty regular file.

    Raises:
        VideoError: missing, a directory, unreadable or zero bytes.
    """
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such file")
    if not p.is_file():
        raise VideoError(f"{p}: not a regular file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise VideoError(f"{p}: cannot stat: {e}") from None
    if size == 0:
        raise VideoError(f"{p}: empty file (0 bytes), not a video")
    if not os.access(p, os.R_OK):
        raise VideoError(f"{p}: not readable (permissions)")
    return str(p)


def _index_with_pyav(path: str) -> VideoIndex:
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video container ({e.__class__.__name__}: {e})") from None
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.name if ctx is not None else "?"
        if ctx is None or av.codec.Codec(codec, "r") is None:  # pragma: no cover - defensive
            raise VideoError(f"{path}: unsupported codec {codec!r}")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        tb = float(stream.time_base) if stream.time_base else 0.0
        pts_list: list[int] = []
        key_list: list[int] = []
        any_corrupt = False
        dts_only = False
        empty = 0
        end_pts = 0
        key_seek: dict[int, int] = {}
        reordered = False
        max_pts: int | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    if packet.pts is not None or packet.dts is not None:
                        empty += 1  # a zero-byte repeat marker (AVI), not PyAV's end-of-stream packet
                    continue
                if packet.is_corrupt:
                    any_corrupt = True
                    continue
                p = packet.pts
                if p is None:
                    p = packet.dts
                    dts_only = True
                if p is None:
                    continue
                pts_list.append(int(p))
                if max_pts is not None and p < max_pts:
                    reordered = True
                max_pts = p if max_pts is None else max(max_pts, p)
                if packet.duration:
                    end_pts = max(end_pts, int(p) + int(packet.duration))
                if packet.is_keyframe:
                    key_list.append(int(p))
                    d = packet.dts
                    key_seek[int(p)] = min(int(p), int(d)) if d is not None else int(p)
        except av.error.FFmpegError:
            any_corrupt = True  # the demuxer stops at the damage; keep what came before
        header = int(stream.frames or 0)
        declared_s = _declared_duration(container, stream, tb)
        start_pts = int(stream.start_time) if stream.start_time is not None else None
        fmt = str(getattr(container.format, "name", "") or "")
        # AVI stores no presentation times: its packets look ordered even with B-frames; the codec knows
        reordered = reordered or bool(getattr(ctx, "has_b_frames", 0))
    finally:
        container.close()
    if not pts_list:
        raise VideoError(f"{path}: zero decodable frames (no video packets could be read)")
    if tb <= 0:
        raise VideoError(f"{path}: the video stream has no time base; cannot time its frames")
    pts = np.unique(np.asarray(pts_list, dtype=np.int64))
    keys = np.unique(np.asarray(key_list, dtype=np.int64))
    if width <= 0 or height <= 0:
        raise VideoError(f"{path}: the video stream has no frame size (codec {codec!r} unsupported?)")
    seek = np.asarray([key_seek[int(k)] for k in keys], dtype=np.int64)
    index = VideoIndex(path, pts, tb, keys, width, height, header, codec, declared_duration=declared_s,
                       end_pts=end_pts, start_pts=start_pts, empty_packets=empty, keyframe_seek=seek,
                       reordered=reordered, container_format=fmt)
    if any_corrupt or dts_only or (header > 0 and header != pts.shape[0] + empty):
        index = _verify_tail(index)
    return index


def _declared_duration(container: Any, stream: Any, tb: float) -> float:
    """Seconds of video the container declares, 0.0 when it declares none (see ``VideoIndex``)."""
    if stream.duration and tb > 0:
        return float(stream.duration) * tb
    tag = {str(k).upper(): v for k, v in (stream.metadata or {}).items()}.get("DURATION")
    if tag:  # Matroska muxers write the track's duration as "HH:MM:SS.nnnnnnnnn"
        try:
            h, m, sec = str(tag).strip().split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
    if container.duration and len(container.streams) == 1:  # another stream may run longer than the video
        return float(container.duration) / 1e6
    return 0.0


def _verify_tail(index: VideoIndex) -> VideoIndex:
    """Decode from the last keyframe to the end and drop trailing frames that do not decode."""
    import av

    path = index.path
    start = int(index.keyframe_pts[-1]) if index.keyframe_pts.size else int(index.pts[0])
    seek_to = index.seek_target(index.keyframe_pts.size - 1) if index.keyframe_pts.size else start
    decoded: list[int] = []
    with av.open(path, metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        try:
            container.seek(seek_to, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            container.seek(0)
        try:
            for packet in container.demux(stream):
                try:
                    for frame in packet.decode():
                        if frame.pts is not None:
                            decoded.append(int(frame.pts))
                except av.error.FFmpegError:
                    continue
        except av.error.FFmpegError:
            pass
    if not decoded:
        # nothing decodes after the last keyframe: fall back to the previous keyframes
        keep = index.pts < start
        if not keep.any():
            raise VideoError(f"{path}: zero decodable frames (the stream is corrupt or truncated)")
        pts = index.pts[keep]
    else:
        pts = index.pts[index.pts <= max(decoded)]
    keep_keys = index.keyframe_pts <= pts[-1]
    keys = index.keyframe_pts[keep_keys]
    seek = index.keyframe_seek[keep_keys] if index.keyframe_seek is not None else None
    return dataclasses.replace(index, pts=pts, keyframe_pts=keys, keyframe_seek=seek, damaged=True)


def build_index(path: str | os.PathLike[str], *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> VideoIndex:
    """Demux ``path``'s packets (PyAV) into a :class:`VideoIndex`, guarded by a timeout.

    Args:
        path: Video file.
        timeout_s: Deadline in seconds for the whole probe.

    Returns:
        The index: sorted frame pts, keyframes, native size, header count.

    Raises:
        VideoError: missing/empty file, not a video, no video stream, zero decodable frames, hang.
    """
    p = check_file(path)
    return call_with_timeout(lambda: _index_with_pyav(p), timeout_s, p, "probing (demuxing packets)")


def resolve_size(
    native_w: int, native_h: int, width: int | None, height: int | None, short_side: int | None
) -> tuple[int, int]:
    """The output frame size for resize-on-decode.

    Args:
        native_w: Native width (pixels).
        native_h: Native height (pixels).
        width: Wanted width, or None.
        height: Wanted height, or None.
        short_side: Wanted length of the shorter side (aspect ratio kept), or None. Exclusive with
            width/height.

    Returns:
        ``(width, height)`` in pixels; the native size when nothing is asked; a single given side
        keeps the aspect ratio.
    """
    if short_side is not None:
        s = short_side / min(native_w, native_h)
        return max(1, round(native_w * s)), max(1, round(native_h * s))
    if width is None and height is None:
        return native_w, native_h
    if width is None:
        assert height is not None
        return max(1, round(native_w * height / native_h)), height
    if height is None:
        return width, max(1, round(native_h * width / native_w))
    return width, height


_DECODERS: Registry[Callable[..., VideoDecoder]] = Registry("video decoder")

# backend -> (modules it imports, how to install them). decord and torchcodec are optional extras;
# PyAV is a core dependency (it also builds the packet index every backend shares).
BACKEND_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "pyav": (("av",), "pip install av"),
    "decord": (("decord",), "pip install decord (or featcomp[decord]); wheels exist for x86-64 Linux and Windows"),
    "frames": (("PIL.Image",), "pip install pillow (or featcomp[extract])"),
    "torchcodec": (
        ("torchcodec.decoders", "torchcodec.transforms"),
        "pip install torchcodec at the release matching your torch (0.16 for torch 2.14; or featcomp[torchcodec]), "
        "plus FFmpeg 4-8 shared libraries (Debian/Ubuntu: apt-get install ffmpeg)",
    ),
}
_IMPORTED: dict[str, tuple[Any, ...] | str] = {}  # backend -> modules, or why they do not import
_IMPORT_LOCK = threading.Lock()


def backend_import(name: str) -> tuple[Any, ...]:
    """Import the packages of decoder backend ``name`` (cached), or say precisely what is missing.

    Returns:
        The imported modules, in the order of ``BACKEND_PACKAGES[name][0]``.

    Raises:
        VideoError: a package is missing or fails to load (e.g. torchcodec without FFmpeg libraries);
            the message names the backend, the failure and the pip package to install.
    """
    import importlib

    modules, hint = BACKEND_PACKAGES.get(name, ((), ""))
    with _IMPORT_LOCK:
        got = _IMPORTED.get(name)
        if got is None:
            try:
                got = tuple(importlib.import_module(m) for m in modules)
            except Exception as e:  # ImportError, or OSError/RuntimeError from native libraries
                text = str(e).strip().splitlines()
                got = f"{type(e).__name__}: {text[0][:200] if text else ''}"
                if "FFmpeg" in str(e) and name == "torchcodec":
                    got += " (torchcodec found no loadable FFmpeg libraries)"
            _IMPORTED[name] = got
    if isinstance(got, str):
        raise VideoError(f"video backend {name!r} is not available ({got}). Install it: {hint}")
    return got


def decoder_available(name: str) -> bool:
    """True when backend ``name`` is registered and its packages import (see :func:`backend_import`)."""
    if name not in _DECODERS.names():
        return False
    if name not in BACKEND_PACKAGES:
        return True  # a user-registered decoder: its factory reports its own needs
    try:
        backend_import(name)
    except VideoError:
        return False
    return True


# backends that read a directory of image frames, not a video file: open_video sends directories to them
DIRECTORY_BACKENDS: tuple[str, ...] = ("frames",)


def available_decoders() -> list[str]:
    """The registered video *file* backends whose packages import here (``["pyav", "decord", "torchcodec"]``
    at most for the built-in ones; the ``"frames"`` backend, which reads directories, is not listed)."""
    return [n for n in decoder_names() if n not in DIRECTORY_BACKENDS and decoder_available(n)]


# backend="auto" tries these in order, skipping the ones not installed (docs/decisions.md, "Default decoder"):
# PyAV reads every file the others read, is 2x decord at 720p (1 thread), flat in memory and always
# installed; decord (1.2x PyAV at 224p) only for files PyAV cannot open. torchcodec is for explicit use
# (CUDA decoding): on the CPU it was 0.1-0.15x PyAV at 224p, and it needs PyAV's packet index anyway.
AUTO_ORDER: tuple[str, ...] = ("pyav", "decord")


def register_decoder(name: str, factory: Callable[..., VideoDecoder] | None = None, *, overwrite: bool = False):
    """Register a decoder factory ``factory(path, *, index, width, height, timeout_s) -> VideoDecoder``.

    ``index`` is the :class:`VideoIndex` from :func:`build_index` (or None when PyAV cannot demux the
    file). Usable as a decorator. Raises :class:`~featcomp.errors.RegistryError` on duplicates.
    """
    return _DECODERS.register(name, factory, overwrite=overwrite)


def get_decoder(name: str) -> Callable[..., VideoDecoder]:
    """The decoder factory registered under ``name`` (``"decord"``, ``"pyav"``, ...)."""
    return _DECODERS.get(name)


def decoder_names() -> list[str]:
    return _DECODERS.names()


def open_video(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    width: int | None = None,
    height: int | None = None,
    short_side: int | None = None,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    index: VideoIndex | None = None,
    threads: int | None = None,
    allow_partial: bool = False,
    device: str | None = None,
    frames_fps: float | None = None,
) -> VideoDecoder:
    """Open a video for frame-accurate random access.

    Args:
        path: Video file, or a directory of image frames (one video, read by the ``"frames"``
            backend whatever ``backend`` says when it is ``"auto"``; docs/video.md, "Frames folders").
        backend: ``"pyav"``, ``"decord"``, ``"torchcodec"``, any registered decoder name, or ``"auto"``:
            the installed backends of ``AUTO_ORDER`` in turn, each falling back to the next for files it
            cannot open or cannot read correctly (decord goes last for videos of more than
            ``AUTO_DECORD_MAX_FRAMES`` frames, because its memory grows with the frames decoded).
            A named backend that is not installed raises a ``VideoError`` naming its pip package.
        width: Output width in pixels (resize on decode); ``None`` keeps the aspect ratio / native.
        height: Output height in pixels.
        short_side: Resize so the shorter side is this many pixels (aspect kept); exclusive with
            width/height.
        timeout_s: Deadline (seconds) for opening/probing and for each ``get_frames`` call.
        index: A :class:`VideoIndex` already built for ``path`` by :func:`build_index` (skips the probe).
        threads: Decoder threads (``None``: the backend's default, usually one per core; ``1`` when the
            caller already runs one decoder per core, as the extraction job's decode tasks do: it
            spends less CPU per frame). Passed to the backend as ``threads=`` only when given.
        device: Decoding device, passed to the backend only when given: ``"cuda"`` for torchcodec's
            NVDEC decoding; decord and PyAV decode on the CPU only (``"cpu"``).
        allow_partial: Open a truncated video (one whose frames end before the count or duration
            its container declares, :meth:`VideoIndex.truncation`) instead of raising; the decoder
            then gives the frames that decode and its ``partial`` attribute says why.
        frames_fps: Frame rate of a directory of frames (frame ``i`` at ``i / frames_fps`` seconds;
            ``None``: 25). Ignored for video files, which carry their own timestamps.

    Returns:
        A :class:`VideoDecoder` (also a context manager) whose ``partial`` attribute is None, or,
        with ``allow_partial``, the reason the video is incomplete.

    Raises:
        TruncatedVideoError: the video is truncated and ``allow_partial`` is False (names the file,
            the frames decoded and declared, and what to do).
        VideoError: naming the path and the reason (missing, empty, not a video, truncated without
            an index, zero decodable frames, unsupported codec, decoder hang).
    """
    if short_side is not None and (width is not None or height is not None):
        raise VideoError(f"{path}: give short_side or width/height, not both")
    if os.path.isdir(path) or backend in DIRECTORY_BACKENDS:
        return _open_directory(path, backend, width=width, height=height, short_side=short_side,
                               timeout_s=timeout_s, threads=threads, device=device, frames_fps=frames_fps)
    p = check_file(path)
    index_error: VideoError | None = None
    try:
        if index is None:
            index = build_index(p, timeout_s=timeout_s)
    except VideoError as e:
        if "no such file" in str(e) or "empty file" in str(e) or "did not finish" in str(e):
            raise
        index, index_error = None, e
    partial: str | None = None
    short = index.truncation() if index is not None else None
    if short is not None:
        if not allow_partial:
            raise TruncatedVideoError(p, index.num_frames, short[0], short[1])  # type: ignore[union-attr]
        partial = short[1]
    if backend == "auto":
        names = [n for n in AUTO_ORDER if decoder_available(n)] or ["pyav"]
        long_video = index is not None and index.num_frames > AUTO_DECORD_MAX_FRAMES
        if long_video and "decord" in names:  # decord's memory grows with the frames decoded
            names = [n for n in names if n != "decord"] + ["decord"]
    else:
        get_decoder(backend)  # RegistryError for an unknown name, listing the known ones
        if backend in BACKEND_PACKAGES:
            backend_import(backend)  # VideoError naming the pip package when it is missing
        names = [backend]
    errors: list[str] = []
    for name in names:
        factory = get_decoder(name)
        if index is None and name in ("pyav", "torchcodec"):
            errors.append(f"{name}: {index_error}")
            continue
        try:
            extra: dict[str, Any] = {} if threads is None else {"threads": threads}
            if device is not None:
                extra["device"] = device
            dec = factory(p, index=index, width=width, height=height, short_side=short_side, timeout_s=timeout_s,
                          **extra)
            dec.partial = partial
            return dec
        except VideoError as e:
            errors.append(f"{name}: {e}")
            if "did not finish" in str(e):
                break
        except ImportError as e:
            errors.append(f"{name}: not installed ({e})")
    if index is None and index_error is not None and len(errors) == len(names):
        # PyAV could not read it and neither could anything else: report PyAV's diagnosis first
        raise VideoError(f"{index_error} [tried: {'; '.join(errors)}]")
    raise VideoError(f"{p}: cannot decode with {', '.join(names)}: " + "; ".join(errors))


def _open_directory(path: str | os.PathLike[str], backend: str, *, frames_fps: float | None, threads: int | None,
                    device: str | None, **size_and_timeout: Any) -> VideoDecoder:
    """open_video for a directory of frames (or backend="frames")."""
    p = str(path)
    if not os.path.isdir(p):
        raise VideoError(f"{p}: backend {backend!r} reads a directory of image frames; this is not a directory")
    name = "frames" if backend == "auto" else backend
    if name not in DIRECTORY_BACKENDS:
        raise VideoError(f"{p}: a directory (a folder of image frames) is read by backend 'frames' or 'auto', "
                         f"not {backend!r}")
    backend_import(name)  # VideoError naming the pip package when Pillow is missing
    extra: dict[str, Any] = {"fps": frames_fps}
    if threads is not None:
        extra["threads"] = threads
    if device is not None:
        extra["device"] = device
    dec = get_decoder(name)(p, **size_and_timeout, **extra)
    dec.partial = None
    return dec

"""Single-clip feature extraction: decode + backbone (layer 1.5).

``extract_features(path, backbone="resnet18", fps=5)`` decodes the sampled frames (resized on decode
to what the backbone's preprocessing needs), runs the backbone batch by batch and returns
:class:`Features`. Decoding runs in a prefetch thread so that it overlaps inference; memory is
bounded by ``prefetch + 1`` batches, not by the video's length. Works on CPU with no GPU.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Any

import numpy as np

from featcomp.errors import ConfigError

__all__ = ["Features", "extract_features", "default_sampling"]


@dataclasses.dataclass
class Features:
    """Features of one video.

    Attributes:
        data: float32 ``(T, C)`` pooled, or ``(T, C, H, W)`` (``(T, C, t, H, W)`` for 3D) spatial.
        timestamps: float64 ``(T,)`` presentation time in seconds of each sampled frame (first frame
            of each window for 3D models).
        frame_indices: int64 ``(T,)`` frame index in the video (first frame of each window).
        config: JSON-safe dict of what produced them: ``video``, ``backbone`` (spec dict + ``tap``),
            ``sampling`` (dict), ``decoder``, ``video_frames``, ``featcomp_version``.
    """

    data: np.ndarray
    timestamps: np.ndarray
    frame_indices: np.ndarray
    config: dict[str, Any]

    def __len__(self) -> int:
        return int(self.data.shape[0])


def default_sampling(
    is_3d: bool,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 32,
    backend: str = "auto",
    timeout_s: float | None = 60.0,
):
    """The :class:`~featcomp.video.SamplingConfig` that ``extract_features`` uses for its arguments.

    2D models: ``fps`` -> FPS, ``num_frames`` -> UNIFORM, neither -> ALL frames. 3D models: WINDOWS
    of ``window`` (default 16) frames every ``stride`` (default ``window``), at ``fps`` if given.
    """
    from featcomp.video import SamplingConfig, SamplingMode

    common = dict(batch_size=batch_size, backend=backend, timeout_s=timeout_s)
    if is_3d or window is not None:
        if num_frames is not None:
            raise ConfigError("num_frames does not apply to windows (3D models); use fps, window, stride")
        return SamplingConfig(mode=SamplingMode.WINDOWS, fps=fps, window=window or 16, stride=stride, **common)
    if fps is not None and num_frames is not None:
        raise ConfigError("give fps or num_frames, not both")
    if fps is not None:
        return SamplingConfig(mode=SamplingMode.FPS, fps=fps, **common)
    if num_frames is not None:
        return SamplingConfig(mode=SamplingMode.UNIFORM, num_frames=num_frames, **common)
    return SamplingConfig(mode=SamplingMode.ALL, **common)


_DONE = object()


def _prefetch(iterator, depth: int):
    """Run ``iterator`` in a daemon thread, ``depth`` items ahead; re-raise its errors here."""
    if depth <= 0:
        yield from iterator
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and stop.is_set():
                try:
                    close()
                except Exception:  # pragma: no cover
                    pass

    t = threading.Thread(target=work, name="featcomp-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=5.0)


def extract_features(
    path: str | os.PathLike[str],
    backbone: Any = "resnet18",
    weights: Any = "DEFAULT",
    layer: str | None = None,
    fps: float | None = None,
    *,
    num_frames: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    sampling: Any = None,
    pool: bool = True,
    batch_size: int | None = None,
    device: str = "cpu",
    amp: str = "auto",
    backend: str = "auto",
    weights_path: str | None = None,
    key_remap: str | dict[str, str] | None = None,
    download: bool = True,
    input_size: int | None = None,
    resize_on_decode: bool = True,
    prefetch: int = 2,
    timeout_s: float | None = 60.0,
    allow_partial: bool = False,
) -> Features:
    """Extract CNN features from one video.

    Args:
        path: Video file, or a directory of image frames (one video at 25 fps; docs/video.md).
        backbone: A backbone name (registered or torchvision), a :class:`~featcomp.backbones.BackboneSpec`,
            a built :class:`~featcomp.backbones.Backbone` (then ``weights``/``layer``/``pool``/
            ``device``... are ignored) or an ``nn.Module`` (ImageNet normalization at decode size).
        weights: torchvision weights (``"DEFAULT"``, ``"IMAGENET1K_V2"``, an enum member) or None.
        layer: Node to tap; None = the pre-classifier features.
        fps: Frames per second to sample (2D), or the rate windows are cut from (3D).
        num_frames: Sample this many frames uniformly instead (2D).
        window: Frames per window (3D models; default 16).
        stride: Frames between window starts (default ``window``).
        sampling: A full :class:`~featcomp.video.SamplingConfig` (overrides fps/num_frames/window/stride).
        pool: Global-average pool the tapped output.
        batch_size: Frames (windows) per forward pass; default the spec's (32).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        amp: Autocast mode (``"auto"``: bf16 on CUDA, none on CPU).
        backend: Decoder: ``"auto"``, ``"pyav"``, ``"decord"``, ``"torchcodec"`` (docs/video.md).
        weights_path: Local state-dict file.
        key_remap: ``"by_position"`` or ``{regex: replacement}`` for ``weights_path``.
        download: Download torchvision weights missing from the torch cache (default, as torchvision
            does); False (or ``FEATCOMP_DOWNLOAD=0``) forbids it. A failed download raises WeightsNotFoundError.
        input_size: Override the preprocessing size (shorter side and square crop).
        resize_on_decode: Decode at the preprocessing's resize size (never upscaling) when the
            sampling sets no size.
        prefetch: Batches decoded ahead in a background thread (0 decodes inline).
        timeout_s: Deadline in seconds for opening the video and for each batch's decode.
        allow_partial: Extract the decodable part of a truncated video (``config["partial"]`` says
            why it is incomplete) instead of raising ``TruncatedVideoError``.

    Returns:
        :class:`Features` with float32 data ``(T, C[, ...])``, timestamps (s) and frame indices.

    Raises:
        TruncatedVideoError: the video ends before what its container declares (without
        ``allow_partial``). VideoError: the video cannot be decoded. BackboneError / WeightsNotFoundError: the backbone
        cannot be built. ConfigError: contradictory sampling arguments.
    """
    try:
        import torch
        from torch import nn
    except ModuleNotFoundError as e:
        from featcomp.errors import missing_extra

        raise missing_extra(e, "featcomp.extract_features") from None

    import featcomp
    from featcomp.backbones import Backbone, BackboneSpec, build_backbone
    from featcomp.video import build_index, open_video, sample_frames

    if isinstance(backbone, Backbone):
        bb = backbone
    elif isinstance(backbone, nn.Module):
        bb = build_backbone(backbone, device=device, amp=amp, **({"batch_size": batch_size} if batch_size else {}))
    else:
        overrides: dict[str, Any] = dict(weights=weights, layer=layer, pool=pool, device=device, amp=amp,
                                         weights_path=weights_path, key_remap=key_remap, download=download,
                                         input_size=input_size)
        if batch_size:
            overrides["batch_size"] = batch_size
        if isinstance(backbone, BackboneSpec):
            # only the arguments that differ from the defaults override the spec
            defaults = dict(weights="DEFAULT", layer=None, pool=True, device="cpu", amp="auto", weights_path=None,
                            key_remap=None, download=True, input_size=None)
            overrides = {k: v for k, v in overrides.items() if k == "batch_size" or defaults.get(k, object()) != v}
        bb = build_backbone(backbone, **overrides)
    bs = batch_size or bb.spec.batch_size
    if sampling is None:
        sampling = default_sampling(bb.is_3d, fps=fps, num_frames=num_frames, window=window, stride=stride,
                                    batch_size=bs, backend=backend, timeout_s=timeout_s)
    if os.path.isdir(path):  # a frames folder (25 fps): no packet index; its first frame's size
        from featcomp.video.frames_backend import frames_native_size

        index, native = None, frames_native_size(path)
    else:
        index = build_index(path, timeout_s=sampling.timeout_s)
        native = (index.width, index.height)
    size_kw: dict[str, Any] = dict(width=sampling.width, height=sampling.height, short_side=sampling.short_side)
    if resize_on_decode and all(v is None for v in size_kw.values()) and bb.decode_short_side:
        if min(native) > bb.decode_short_side:
            size_kw["short_side"] = bb.decode_short_side
            sampling = sampling.replace(short_side=bb.decode_short_side)
    dec = open_video(path, backend=sampling.backend, timeout_s=sampling.timeout_s, index=index,
                     allow_partial=allow_partial, **size_kw)
    parts: list[np.ndarray] = []
    idx_parts: list[np.ndarray] = []
    ts_parts: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for batch in _prefetch(sample_frames(dec, sampling), prefetch):
                feats = bb.forward(bb.preprocess(batch.frames))
                parts.append(feats.float().cpu().numpy())
                idx_parts.append(batch.indices)
                ts_parts.append(batch.timestamps)
    finally:
        dec.close()
    data = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
    config = {
        "video": str(path),
        "backbone": {**bb.spec.to_dict(), "tap": bb.tap},
        "sampling": sampling.to_dict(),
        "decoder": getattr(dec, "backend", type(dec).__name__),
        "video_frames": int(dec.num_frames),
        "featcomp_version": featcomp.__version__,
    }
    if getattr(dec, "partial", None):
        config["partial"] = dec.partial
    return Features(data, np.concatenate(ts_parts).astype(np.float64), np.concatenate(idx_parts).astype(np.int64), config)

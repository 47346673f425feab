"""The single-clip extractor: frames or a video -> backbone -> frozen head -> integer latents or a
:class:`~featcomp.model.CompressedClip` (layer 2)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.entropy.kinds import entropy_kind
from featcomp.errors import ConfigError, ModelFileError
from featcomp.model.clip import DEFAULT_TEMPORAL_CHUNK, CompressedClip, decode_clip
from featcomp.model.file import Model, load_model

__all__ = ["Extractor"]

# --------------------------------------------------------------------------------------------------
# the extractor


class Extractor:
    """Frames or a video -> backbone -> frozen head -> integer latents / one compressed stream.

    Args:
        model_or_path: a :class:`Model` or a model file path.
        device: torch device for the backbone and the head (``"cpu"``, ``"cuda"``); a backbone built from the
            model's spec is built there whatever device the spec names (its preprocessing runs there too).
        batch_size: frames per backbone call.
        dtype: autocast dtype for the backbone on CUDA (e.g. ``torch.bfloat16``), or None for float32.
            The head always runs in float32.
        backbone: an already-built backbone module (``preprocess`` + ``forward``) to use instead of
            building ``model.backbone`` (tests, custom modules).
        sampling: overrides the model's default sampling for :meth:`compress`.
        rate: variable-rate models: the rate level to encode at (an int level, or a float between two
            levels; level 0 = most bits). None keeps the model's rate (level 0 when loaded).
        chunk_frames: frames per independent stream of a temporal clip (default 256).
        storage_options: options of the filesystem of a model URL (``s3://...``; see :func:`load_model`).
        rate_control: a :class:`featcomp.ratecontrol.RateControl`: choose each frame's rate level so
            that the decoded features keep its criterion: by default the backbone's own classifier keeps
            its top-1 (the backbone must have a classifier); ``criterion="distortion"`` bounds the
            features' relative squared error and needs no classifier (variable-rate factorized or
            temporal heads with a synthesis). Clips then record
            their per-frame levels (clip format 3 and later). Excludes ``rate``.
        prefetch: batches :meth:`compress` decodes ahead in a background thread, overlapping decoding
            with the backbone (0 decodes inline).

    Raises:
        ConfigError: ``rate`` given for a fixed-rate model or outside the levels; ``rate_control`` with
            ``rate`` or with a head it cannot drive.
    """

    def __init__(self, model_or_path: Model | str | Path, *, device: str | torch.device = "cpu", batch_size: int = 64,
                 dtype: torch.dtype | None = None, backbone: nn.Module | None = None, sampling: Any = None,
                 rate: float | None = None, chunk_frames: int | None = None, rate_control: Any = None,
                 prefetch: int = 2, storage_options: dict | None = None) -> None:
        model = (model_or_path if isinstance(model_or_path, Model)
                 else load_model(model_or_path, storage_options=storage_options))
        if rate_control is not None:
            from featcomp.ratecontrol import RateControl, check_rate_controllable

            if rate is not None:
                raise ConfigError("Extractor: give rate= (one level for every frame) or rate_control= (a level per "
                                  "frame), not both")
            if isinstance(rate_control, dict):
                rate_control = RateControl.from_dict(rate_control)
            if not isinstance(rate_control, RateControl):
                raise ConfigError(f"Extractor: rate_control must be a RateControl, got {type(rate_control).__name__}")
            check_rate_controllable(model.head)
        self.rate_control = rate_control
        self.model = model.at_rate(rate)
        self.prefetch = int(prefetch)
        self.chunk_frames = int(chunk_frames or DEFAULT_TEMPORAL_CHUNK)
        if self.chunk_frames < 1:
            raise ConfigError(f"Extractor: chunk_frames must be >= 1, got {chunk_frames}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.dtype = dtype
        if backbone is None:
            if self.model.backbone is None:
                raise ModelFileError("Extractor: the model has no backbone spec; pass backbone=")
            from featcomp.backbones import build_backbone

            # built on this extractor's device (preprocessing, resize included, runs there; channels_last and
            # pinned host->device copies on CUDA) with autocast off: ``dtype`` alone decides the precision
            backbone = build_backbone(self.model.backbone, device=str(self.device), amp="none")
        self.backbone = backbone.to(self.device).eval()
        self.head = self.model.head.to(self.device)
        self.sampling = sampling if sampling is not None else self.model.sampling
        has = getattr(self.backbone, "has_classifier", None)
        has = has() if callable(has) else has
        if (rate_control is not None and rate_control.needs_teacher
                and (not callable(getattr(self.backbone, "classify", None)) or has is False)):
            raise ConfigError(f"Extractor: rate_control criterion {rate_control.criterion!r} needs the backbone's "
                              "classifier (backbone.classify) as the teacher; this backbone has none (a generic "
                              "fidelity target needs none: RateControl(criterion='distortion', budget=...))")

    @property
    def codec(self):
        return self.model.codec

    @torch.inference_mode()
    def features(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 frames (n, H, W, 3) -> float32 backbone features (n, C[, h, w]) on ``device``."""
        x = self.backbone.preprocess(frames)
        x = x.to(self.device)
        if self.dtype is not None and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=self.dtype):
                f = self.backbone(x)
        else:
            f = self.backbone(x)
        return f.float()

    def encode_frames(self, frames: np.ndarray | Tensor) -> np.ndarray:
        """uint8 frames (n, H, W, 3) -> int32 latents (n, C'[, h, w]) (exactly what the codec codes).

        This is the Ray pipeline's per-batch call; frames are processed in chunks of ``batch_size``.
        """
        if self.rate_control is not None:
            raise ConfigError("Extractor.encode_frames returns latents only and would drop the per-frame levels of "
                              "rate control; use encode_frames_with_levels() or compress()")
        n = len(frames)
        if n == 0:
            return np.zeros((0, self.model.latent_channels), np.int32)
        outs = [self.head.encode(self.features(frames[i:i + self.batch_size])) for i in range(0, n, self.batch_size)]
        return np.concatenate(outs, 0).astype(np.int32, copy=False)

    def frame_features(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 frames (n, H, W, 3) -> float32 backbone features (n, C[, h, w]) in ``batch_size`` chunks."""
        n = len(frames)
        if n == 0:
            return torch.zeros((0, self.model.head.in_channels))
        return torch.cat([self.features(frames[i:i + self.batch_size]) for i in range(0, n, self.batch_size)])

    def encode_features(self, features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Backbone features (n, C[, ...]) -> (int32 latents (n, C', *), uint8 levels (n,) or None).

        Levels are chosen by ``rate_control`` over all ``n`` frames at once (its give-up quota applies
        to this call); without rate control every frame is at the extractor's rate and levels is None.
        """
        f = torch.as_tensor(features) if not isinstance(features, Tensor) else features
        if self.rate_control is None:
            return self.head.encode(f.to(self.device)), None
        from featcomp.ratecontrol import choose_levels

        teacher = self.backbone.classify if self.rate_control.needs_teacher else None
        ch = choose_levels(self.head, f.to(self.device), teacher, self.rate_control)
        return ch.k, ch.levels

    def encode_frames_with_levels(self, frames: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 frames (n, H, W, 3) -> (int32 latents, uint8 per-frame levels or None); see
        :meth:`encode_features`."""
        return self.encode_features(self.frame_features(frames))

    def _frame_batches(self, video_path: str | Path, progress: Callable[[int, float], None] | None = None
                       ) -> Iterator[Any]:
        """The sampled frame batches of a video under this extractor's sampling config; ``progress(n, t)``
        is called after each batch with its frame count and its last timestamp (seconds)."""
        batches = self._sampled_batches(video_path)
        if progress is None:
            return batches
        return self._reporting(batches, progress)

    @staticmethod
    def _reporting(batches: Iterator[Any], progress: Callable[[int, float], None]) -> Iterator[Any]:
        for batch in batches:
            yield batch
            ts = np.asarray(batch.timestamps)
            progress(int(len(ts)), float(ts[-1]) if len(ts) else float("nan"))

    def _sampled_batches(self, video_path: str | Path) -> Iterator[Any]:
        from featcomp.video import SamplingConfig, sample_frames

        sampling = self.sampling
        if sampling is None:
            raise ConfigError("Extractor.compress: no sampling config (none in the model; pass sampling=)")
        if isinstance(sampling, dict):
            sampling = SamplingConfig.from_dict(sampling)
        return sample_frames(str(video_path), sampling)

    def iter_latents(self, video_path: str | Path, progress: Callable[[int, float], None] | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (latents int32 (n, C', *), timestamps float64 (n,), frame indices int64 (n,)) per batch."""
        from featcomp.features import _prefetch

        # decoding runs a batch ahead in a thread, overlapping the backbone (as in extract_features)
        for batch in _prefetch(self._frame_batches(video_path, progress), self.prefetch):
            yield self.encode_frames(batch.frames), np.asarray(batch.timestamps), np.asarray(batch.indices)

    def compress(self, video_path: str | Path, *, progress: Callable[[int, float], None] | None = None
                 ) -> CompressedClip:
        """Decode, sample, extract and code a whole clip as **one** stream (framing amortized over frames).

        Args:
            video_path: the video file.
            progress: called after each batch of frames with ``(frames in the batch, last timestamp in
                seconds)`` (``featcomp compress`` drives a progress bar with it).

        Raises:
            VideoError: the video cannot be decoded; CodecError/ConfigError as documented.
        """
        if self.rate_control is not None:
            return self._compress_rate_controlled(video_path, progress)
        ks, ts, fi = [], [], []
        for k, t, i in self.iter_latents(video_path, progress):
            ks.append(k)
            ts.append(t)
            fi.append(i)
        if not ks:
            k = np.zeros((0, self.model.latent_channels), np.int32)
            t = np.zeros(0, np.float64)
            i = np.zeros(0, np.int64)
        else:
            k, t, i = np.concatenate(ks), np.concatenate(ts), np.concatenate(fi)
        return self.compress_latents(k, t, i)

    def _compress_rate_controlled(self, video_path: str | Path, progress: Callable[[int, float], None] | None = None
                                  ) -> CompressedClip:
        """compress() with rate control: features of the whole clip first, then one level choice."""
        fs, ts, fi = [], [], []
        from featcomp.features import _prefetch

        for batch in _prefetch(self._frame_batches(video_path, progress), self.prefetch):
            fs.append(self.frame_features(batch.frames))
            ts.append(np.asarray(batch.timestamps))
            fi.append(np.asarray(batch.indices))
        if not fs:
            return self.compress_features(torch.zeros((0, self.model.head.in_channels)), np.zeros(0), np.zeros(0, np.int64))
        return self.compress_features(torch.cat(fs), np.concatenate(ts), np.concatenate(fi))

    def compress_features(self, features: np.ndarray | Tensor, timestamps: np.ndarray,
                          frame_indices: np.ndarray | None = None) -> CompressedClip:
        """Backbone features of a whole clip (T, C[, ...]) -> :class:`CompressedClip` (with rate control when
        the extractor has one; see :meth:`encode_features`)."""
        f = torch.as_tensor(features) if not isinstance(features, Tensor) else features
        if len(f) == 0:
            k, levels = np.zeros((0, self.model.latent_channels), np.int32), None
            if self.rate_control is not None:
                levels = np.zeros(0, np.uint8)
        else:
            k, levels = self.encode_features(f)
        return self.compress_latents(k, timestamps, frame_indices, levels=levels)

    def compress_latents(self, k: np.ndarray, timestamps: np.ndarray, frame_indices: np.ndarray | None = None,
                         *, levels: np.ndarray | None = None) -> CompressedClip:
        """int latents (T, C', *) + timestamps (T,) -> :class:`CompressedClip`.

        One stream for frame-independent kinds; a temporal clip is cut into chunks of ``chunk_frames``
        frames, each an independent stream starting from the codec's fresh context
        (``TemporalCodec.compress_chunks``). ``levels``: uint8 (T,) per-frame rate levels (from rate
        control; variable-rate factorized or temporal models), stored in the clip (format 3 and later).
        """
        k = np.asarray(k, np.int32)
        kind = self.model.kind
        spec = entropy_kind(kind)
        level_bits = 8
        if levels is not None:
            n_levels = self.model.head.config.rate_levels
            if n_levels < 2 or not spec.rate_control:
                raise ConfigError("Extractor.compress_latents: per-frame levels need a variable-rate model whose "
                                  f"entropy model supports rate control (this one: {kind!r}, {n_levels} levels)")
            level_bits = max(1, math.ceil(math.log2(n_levels)))
        chunks = None
        if spec.time_chunks:
            streams = self.codec.compress_chunks(k, self.chunk_frames) if len(k) else []
            chunks = tuple(len(b) for b in streams)
            data = b"".join(streams)
        else:
            data = self.codec.compress_symbols(k)
        fi = np.arange(len(k), dtype=np.int64) if frame_indices is None else np.asarray(frame_indices, np.int64)
        return CompressedClip(data=data, shape=tuple(k.shape), timestamps=np.asarray(timestamps, np.float64),
                              frame_indices=fi, codec_digest=self.codec.digest, model_digest=self.model.digest,
                              kind=kind, chunks=chunks, rate=None if levels is not None else self.model.rate,
                              levels=levels, level_bits=level_bits)

    def decompress_latents(self, clip: CompressedClip | bytes) -> np.ndarray:
        """-> int32 latents (T, C', *) exactly as :meth:`encode_frames` produced them."""
        return decode_clip(self.model, clip, dequantize=False)

    def decompress(self, clip: CompressedClip | bytes) -> np.ndarray:
        """-> float32 dequantized latents (T, C', *), ``(k + offsets) * scale`` at the clip's rate."""
        return decode_clip(self.model, clip)

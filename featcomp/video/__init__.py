"""Video decoding and frame sampling with timestamps (layer 1).

``open_video`` gives frame-accurate random access (backends ``pyav``, ``decord`` and ``torchcodec``;
decord and torchcodec are optional; ``frames`` reads a directory of image frames as one video) with resize on decode; ``sample_frames`` streams the frames a :class:`SamplingConfig` picks in bounded
batches, each frame with its presentation timestamp in seconds. Importing this package imports numpy
only (no torch, no decord, no PyAV, no torchcodec until a file is opened). See docs/video.md.
"""

from __future__ import annotations

from featcomp.video import decord_backend as _decord_backend  # noqa: F401  (registers "decord")
from featcomp.video import frames_backend as _frames_backend  # noqa: F401  (registers "frames")
from featcomp.video import pyav_backend as _pyav_backend  # noqa: F401  (registers "pyav")
from featcomp.video import torchcodec_backend as _torchcodec_backend  # noqa: F401  (registers "torchcodec")
from featcomp.video.base import (
    AUTO_ORDER,
    DEFAULT_TIMEOUT_S,
    VideoDecoder,
    VideoIndex,
    available_decoders,
    build_index,
    decoder_available,
    decoder_names,
    get_decoder,
    open_video,
    register_decoder,
)
from featcomp.video.decord_backend import DecordDecoder
from featcomp.video.frames_backend import DEFAULT_FRAMES_FPS, IMAGE_EXTENSIONS, FramesDecoder
from featcomp.video.pyav_backend import PyAVDecoder
from featcomp.video.torchcodec_backend import TorchCodecDecoder
from featcomp.video.sampling import FrameBatch, SamplePlan, SamplingConfig, SamplingMode, plan_samples, sample_frames

__all__ = [
    "AUTO_ORDER",
    "DEFAULT_FRAMES_FPS",
    "DEFAULT_TIMEOUT_S",
    "IMAGE_EXTENSIONS",
    "FramesDecoder",
    "VideoDecoder",
    "VideoIndex",
    "DecordDecoder",
    "PyAVDecoder",
    "TorchCodecDecoder",
    "FrameBatch",
    "SamplePlan",
    "SamplingConfig",
    "SamplingMode",
    "available_decoders",
    "build_index",
    "decoder_available",
    "decoder_names",
    "get_decoder",
    "open_video",
    "plan_samples",
    "register_decoder",
    "sample_frames",
]

"""Video decoding and frame sampling with timestamps (layer 1).

``open_video`` gives frame-accurate random access (decord by default, PyAV as the fallback) with
resize on decode; ``sample_frames`` streams the frames a :class:`SamplingConfig` picks in bounded
batches, each frame with its presentation timestamp in seconds. Importing this package imports numpy
only (no torch, no decord, no PyAV until a file is opened). See docs/video.md.
"""

from __future__ import annotations

from featcomp.video import decord_backend as _decord_backend  # noqa: F401  (registers "decord")
from featcomp.video import pyav_backend as _pyav_backend  # noqa: F401  (registers "pyav")
from featcomp.video.base import (
    DEFAULT_TIMEOUT_S,
    VideoDecoder,
    VideoIndex,
    build_index,
    decoder_names,
    get_decoder,
    open_video,
    register_decoder,
)
from featcomp.video.decord_backend import DecordDecoder
from featcomp.video.pyav_backend import PyAVDecoder
from featcomp.video.sampling import FrameBatch, SamplePlan, SamplingConfig, SamplingMode, plan_samples, sample_frames

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "VideoDecoder",
    "VideoIndex",
    "DecordDecoder",
    "PyAVDecoder",
    "FrameBatch",
    "SamplePlan",
    "SamplingConfig",
    "SamplingMode",
    "build_index",
    "decoder_names",
    "get_decoder",
    "open_video",
    "plan_samples",
    "register_decoder",
    "sample_frames",
]

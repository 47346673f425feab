"""The public API (layer 3): one place that names what a user calls.

Single clip:
    :func:`extract_features` (raw backbone features), :func:`compress` and :func:`decompress`
    (one clip as one entropy-coded stream with a model file).
Stores:
    :func:`open_store`, :func:`store_info`, :func:`verify_store`, :class:`StoreWriter`.
Models:
    :func:`fit_head`, :func:`save_model`, :func:`load_model`, :class:`Extractor`.

Everything here is a thin re-export or a one-call convenience over the layers below; nothing in
this module is imported by them.
"""

from __future__ import annotations

import os
from typing import Any

from featcomp.features import Features, extract_features
from featcomp.model import CompressedClip, Extractor, Model, decode_clip, load_model, save_model
from featcomp.store import FeatureStore, StoreWriter, VerifyReport, open_store, store_info, verify_store
from featcomp.train import fit_head

__all__ = [
    "CompressedClip",
    "Extractor",
    "FeatureStore",
    "Features",
    "Model",
    "StoreWriter",
    "VerifyReport",
    "compress",
    "decompress",
    "extract_features",
    "fit_head",
    "load_model",
    "open_store",
    "save_model",
    "store_info",
    "verify_store",
]

ModelLike = Model | str | os.PathLike


def _extractor(model: ModelLike | Extractor, **kwargs: Any) -> Extractor:
    return model if isinstance(model, Extractor) else Extractor(model, **kwargs)


def compress(video_path: str | os.PathLike, model: ModelLike | Extractor, **extractor_options: Any) -> CompressedClip:
    """Extract and entropy-code one clip with a model file, as one stream.

    Args:
        video_path: the video file.
        model: a model file path, a loaded :class:`Model`, or an :class:`Extractor` to reuse.
        **extractor_options: passed to :class:`Extractor` (``device``, ``batch_size``, ``sampling``...).

    Returns:
        A :class:`CompressedClip` (``.to_bytes()`` to save it).

    Raises:
        VideoError: the video cannot be decoded. ModelFileError: the model file is unusable.
    """
    return _extractor(model, **extractor_options).compress(video_path)


def decompress(clip: CompressedClip | bytes, model: ModelLike | Extractor, *, latents: bool = False):
    """Decode a :class:`CompressedClip` (or its bytes) with the model that made it.

    Decoding needs the model's frozen codec and dequantization only: no backbone is built.

    Args:
        clip: the compressed clip or ``CompressedClip.to_bytes()`` output.
        model: the model (path, :class:`Model` or :class:`Extractor`) whose codec made ``clip``.
        latents: return the int32 latents instead of the dequantized float32 features.

    Returns:
        ``np.ndarray`` of shape (T, C'[, h, w]): float32 features, or int32 latents.

    Raises:
        CodecError: the clip was made by another codec, or is corrupt.
    """
    if isinstance(model, Extractor):
        m = model.model
    else:
        m = model if isinstance(model, Model) else load_model(model)
    return decode_clip(m, clip, dequantize=not latents)

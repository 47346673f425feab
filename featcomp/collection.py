"""Whole collections without decoding video again (layer 3): ``transcode`` a raw store with a model.

``transcode_store("raw.zarr", "model.safetensors", "coded.zarr")`` reads each video's float16
backbone features from a raw store (``featcomp extract --backbone``, ``--raw`` or ``featcomp import``),
runs the model's frozen head on them and writes the integer latents, with the same timestamps and
metadata, into a coded store: the features are compressed without touching the videos.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from featcomp.errors import ConfigError, StoreError

__all__ = ["transcode_store"]

_COMPARED = ("name", "weights", "layer", "pool", "factory")


def _backbone_mismatch(store_bb: Any, model_bb: Any) -> str | None:
    """A sentence naming the first differing backbone field, or None (unknown on either side: None)."""
    if not isinstance(store_bb, dict) or model_bb is None:
        return None
    m = model_bb.to_dict() if hasattr(model_bb, "to_dict") else dict(model_bb)
    for k in _COMPARED:
        if k in store_bb and k in m and store_bb[k] != m[k]:
            return f"the store's features come from backbone {k}={store_bb[k]!r}, the model's head from {k}={m[k]!r}"
    return None


def transcode_store(
    raw_store: str | os.PathLike,
    model: Any,
    out: str | os.PathLike,
    *,
    rate: float | None = None,
    chunk_frames: int | None = None,
    batch_frames: int = 4096,
    device: str = "cpu",
    allow_other_backbone: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Code every video of a raw store with a model's frozen head into a coded store.

    Args:
        raw_store: a raw store (float16, or int8: its videos are dequantized to float32 first).
        model: a model file path or a loaded :class:`~featcomp.model.Model`.
        out: the coded store to create or append to (videos already there are skipped, so a rerun resumes).
        rate: variable-rate models: the level to code at.
        chunk_frames: frames per chunk of the coded store (default automatic).
        batch_frames: frames through the head per call (memory bound).
        device: torch device of the head.
        allow_other_backbone: code features whose recorded backbone differs from the model's.
        progress: called with ``(video_id, frames)`` after each video.

    Returns:
        ``{"videos", "skipped", "frames", "payload_bits"}`` (payload: the codec's estimate, as the job reports).

    Raises:
        StoreError: ``raw_store`` is not a raw store. ConfigError: the features do not fit the head
        (channels), or come from another backbone (unless ``allow_other_backbone``).
    """
    import torch

    from featcomp.model import Model, load_model
    from featcomp.store import StoreWriter, open_store

    src = open_store(raw_store)
    if src.mode != "raw":
        raise StoreError(f"{src.url} is a coded store; transcode takes a raw (float16) store "
                         "(featcomp extract --backbone / --raw, featcomp import)")
    m = model if isinstance(model, Model) else load_model(model)
    m = m.at_rate(rate)
    card = src.model_card if isinstance(src.model_card, dict) else {}
    why = _backbone_mismatch(card.get("backbone"), m.backbone)
    if why and not allow_other_backbone:
        raise ConfigError(f"{why}; the head was trained on other features "
                          "(--allow-other-backbone to code them anyway)")
    head = m.head.to(torch.device(device))
    cin = int(m.head.config.in_channels)
    done = skipped = frames = 0
    bits = 0.0
    with StoreWriter(out, m, chunk_frames=chunk_frames) as w:
        for vid in src:
            if vid in w:
                skipped += 1
                continue
            v = src[vid]
            if v.sample_shape[0] != cin:
                raise ConfigError(f"video {vid!r} of {src.url} has {v.sample_shape[0]} channels, "
                                  f"the model's head takes {cin}")
            x = v.features()
            parts = []
            with torch.inference_mode():
                for a in range(0, len(x), batch_frames):
                    parts.append(head.encode(torch.from_numpy(x[a:a + batch_frames]).to(device)))
            k = np.concatenate(parts) if parts else np.zeros((0, int(m.head.config.latent_channels)), np.int32)
            w.write(vid, k, v.timestamps, metadata={**v.metadata, "transcoded_from": src.url})
            bits += float(m.codec.estimate_bits(k))
            done += 1
            frames += len(k)
            if progress is not None:
                progress(vid, len(k))
    return {"videos": done, "skipped": skipped, "frames": frames, "payload_bits": bits}

"""The frozen-codec protocol and the registry of codec kinds (numpy and constriction only).

Every frozen entropy model that a model file or a store can hold implements :class:`FrozenCodec`:
``kind``, ``digest``, ``channels``, ``quantize``/``dequantize``, ``compress_symbols``/
``decompress_symbols``, ``estimate_bits``, ``to_dict``/``from_dict``. :func:`codec_from_dict`
rebuilds one from its JSON-safe dict, dispatching on ``d["kind"]``; a dict without ``"kind"`` is a
factorized :class:`~featcomp.entropy.EntropyCodec` (the format written before kinds existed), so old
model files and stores stay readable.

Registered kinds: ``"factorized"`` (:class:`~featcomp.entropy.EntropyCodec`, frames independent) and
``"temporal"`` (:class:`~featcomp.entropy.temporal.TemporalCodec`, axis 0 is time; a stream is one
chunk of consecutive frames and decodes alone) and ``"hyperprior"``
(:class:`~featcomp.entropy.hyperprior.HyperpriorCodec`, spatial latents (N, C, H, W), frames independent,
scales from coded side information).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from featcomp.entropy.codec import EntropyCodec
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.temporal import TemporalCodec
from featcomp.errors import CodecError
from featcomp.registry import Registry

__all__ = ["FrozenCodec", "register_codec_kind", "get_codec_kind", "codec_kinds", "codec_from_dict", "codec_kind"]

_KINDS: Registry = Registry("codec kind")


@runtime_checkable
class FrozenCodec(Protocol):
    """What every frozen codec offers (see :class:`~featcomp.entropy.EntropyCodec` for the semantics)."""

    digest: str
    channels: int

    def quantize(self, y: Any) -> np.ndarray: ...
    def dequantize(self, k: Any) -> np.ndarray: ...
    def compress_symbols(self, k: Any) -> bytes: ...
    def decompress_symbols(self, data: bytes) -> np.ndarray: ...
    def estimate_bits(self, k: Any) -> float: ...
    def to_dict(self) -> dict[str, Any]: ...


def register_codec_kind(name: str, cls: type, *, overwrite: bool = False) -> type:
    """Register a frozen codec class (with ``from_dict``) under ``name``; raises on duplicates."""
    return _KINDS.register(name, cls, overwrite=overwrite)


def get_codec_kind(name: str) -> type:
    """The class registered under ``name``; raises :class:`~featcomp.errors.RegistryError` if unknown."""
    return _KINDS.get(name)


def codec_kinds() -> list[str]:
    """Registered kind names."""
    return list(_KINDS.names())


def codec_kind(codec: Any) -> str:
    """The kind name of a frozen codec (``"factorized"`` for :class:`EntropyCodec`)."""
    return getattr(codec, "kind", "factorized")


def codec_from_dict(d: dict[str, Any]) -> FrozenCodec:
    """Rebuild a frozen codec from its ``to_dict()`` output (no ``"kind"`` means factorized).

    Raises:
        CodecError: not a dict, or the dict is invalid for its kind.
        RegistryError: an unknown kind (a newer featcomp wrote it).
    """
    if not isinstance(d, dict):
        raise CodecError(f"a codec dict is expected, got {type(d).__name__}")
    return get_codec_kind(d.get("kind", "factorized")).from_dict(d)


register_codec_kind("factorized", EntropyCodec)
register_codec_kind("temporal", TemporalCodec)
register_codec_kind("hyperprior", HyperpriorCodec)

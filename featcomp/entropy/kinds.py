"""The registry of entropy-model kinds, and the frozen-codec protocol (numpy and constriction only).

An entropy-model *kind* is one registered :class:`EntropyKind` entry carrying both halves of the model:

- the **frozen** half, a codec class implementing :class:`FrozenCodec` (``kind``, ``digest``,
  ``channels``, ``quantize``/``dequantize``, ``compress_symbols``/``decompress_symbols``,
  ``estimate_bits``, ``to_dict``/``from_dict``, ``to_bytes``/``from_bytes``), which model files,
  clips and stores hold;
- the **trainable** half, an import reference (``"package.module:Adapter"``, resolved lazily so this
  module stays free of torch) to a :class:`featcomp.entropy.trainable.TrainablePrior` adapter that
  builds the prior inside a :class:`~featcomp.head.CompressibleHead`, prices latents and freezes the
  prior into the codec;
- what the rest of the system needs to know about it: the input ``layout`` the trainable prior prices
  (``"vectors"`` (N, C), ``"clips"`` (N, C, T), ``"maps"`` (N, C, H, W)), whether a frozen stream is a
  chunk of consecutive frames (``time_chunks``; clips then record chunk lengths), whether frames are
  supports per-frame rate control (``rate_control``: frames coded independently, levels may change
  between frames), and
  whether it is the ``implicit`` kind that formats written before kinds existed mean when they name none.

The head, rate control, refit, the model file, the clip format and the store ask the entry for these
facts and never compare kind strings. A new kind is one new module (its codec and its adapter) plus one
:func:`register_entropy_kind` call. :func:`codec_from_dict` rebuilds a frozen codec from its JSON-safe
dict, dispatching on ``d["kind"]``; a dict without ``"kind"`` is the implicit (factorized) kind, so old
model files and stores stay readable.

Registered kinds: ``"factorized"`` (:class:`~featcomp.entropy.EntropyCodec`, frames independent),
``"temporal"`` (:class:`~featcomp.entropy.temporal.TemporalCodec`, axis 0 is time; a stream is one chunk
of consecutive frames and decodes alone) and ``"hyperprior"``
(:class:`~featcomp.entropy.hyperprior.HyperpriorCodec`, spatial latents (N, C, H, W), frames independent,
scales from coded side information).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from featcomp.entropy.codec import EntropyCodec
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.temporal import TemporalCodec
from featcomp.errors import CodecError
from featcomp.registry import Registry

__all__ = [
    "EntropyKind", "FrozenCodec", "register_entropy_kind", "unregister_entropy_kind", "entropy_kind", "entropy_kinds", "DEFAULT_KIND",
    "register_codec_kind", "get_codec_kind", "codec_kinds", "codec_from_dict", "codec_kind",
    "codec_to_dict", "codec_to_bytes", "codec_from_bytes",
]

LAYOUTS = ("vectors", "clips", "maps")
_KINDS: Registry = Registry("entropy-model kind")

#: the kind a format means when it names none (files written before kinds existed)
DEFAULT_KIND = "factorized"


@dataclasses.dataclass(frozen=True)
class EntropyKind:
    """One registered entropy-model kind: its frozen codec, its trainable prior and its properties.

    Attributes:
        name: the kind name written to model files, clips and stores.
        codec: the frozen codec class (``from_dict``, ``from_bytes``).
        trainable: ``"package.module:Adapter"``, the :class:`~featcomp.entropy.trainable.TrainablePrior`
            adapter class (torch), or None for a kind that can be read and coded but not trained.
        layout: what the trainable prior prices: ``"vectors"`` (N, C, *) with frames independent,
            ``"clips"`` (N, C, T) with axis 2 in time order, ``"maps"`` (N, C, H, W).
        time_chunks: frozen streams code consecutive frames together in chunks that decode alone
            (:meth:`compress_chunks`); a clip records the chunks' byte lengths.
        rate_control: per-frame rate control is supported: a variable-rate head may change its level from
            frame to frame (:mod:`featcomp.ratecontrol`), the codec coding the integers whatever their
            level (factorized: frames independent; temporal: each frame given its predecessor's integers).
        implicit: the kind that formats written before kinds existed mean (no ``kind`` key; version-1
            model files, clips and stores). Exactly one registered kind is implicit.
    """

    name: str
    codec: type
    trainable: str | None = None
    layout: str = "vectors"
    time_chunks: bool = False
    rate_control: bool = False
    implicit: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise CodecError(f"entropy kind {self.name!r}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.trainable is not None and ":" not in self.trainable:
            raise CodecError(f"entropy kind {self.name!r}: trainable must be 'package.module:Adapter', "
                             f"got {self.trainable!r}")

    def adapter(self) -> Any:
        """The trainable half, an instance of the registered adapter class (imports torch).

        Raises:
            ConfigError: a kind registered without a trainable half.
        """
        if self.trainable is None:
            from featcomp.errors import ConfigError

            raise ConfigError(f"the {self.name!r} entropy model has no trainable prior registered; it can code "
                              "and decode but not be trained")
        module, _, attr = self.trainable.partition(":")
        return getattr(importlib.import_module(module), attr)()


def register_entropy_kind(spec: EntropyKind, *, overwrite: bool = False) -> EntropyKind:
    """Register an entropy-model kind; raises :class:`~featcomp.errors.RegistryError` on duplicates."""
    if not isinstance(spec, EntropyKind):
        raise CodecError(f"register_entropy_kind expects an EntropyKind, got {type(spec).__name__}")
    if spec.implicit and any(k.implicit and k.name != spec.name for k in (_KINDS.get(n) for n in _KINDS.names())):
        raise CodecError(f"entropy kind {spec.name!r}: only one kind can be implicit (the pre-kinds default)")
    return _KINDS.register(spec.name, spec, overwrite=overwrite)


def unregister_entropy_kind(name: str) -> EntropyKind:
    """Remove a registered kind (a plugin unloading, tests); the implicit kind cannot be removed."""
    if _KINDS.get(name).implicit:
        raise CodecError(f"entropy kind {name!r} is the implicit default and cannot be unregistered")
    return _KINDS.unregister(name)


def entropy_kind(what: Any = None) -> EntropyKind:
    """The registered entry of ``what``: a kind name, a frozen codec, a head (``.kind``), or None for
    the implicit default kind.

    Raises:
        RegistryError: an unknown kind name (a newer featcomp wrote it, or a typo).
    """
    if what is None:
        return _KINDS.get(DEFAULT_KIND)
    if isinstance(what, EntropyKind):
        return what
    name = what if isinstance(what, str) else codec_kind(what)
    return _KINDS.get(name)


def entropy_kinds(*, trainable: bool = False) -> list[str]:
    """Registered kind names (only those with a trainable half if ``trainable``)."""
    return [n for n in _KINDS.names() if not trainable or _KINDS.get(n).trainable is not None]


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
    """Register a frozen-only kind (a codec class with ``from_dict``, frames independent, no trainable
    prior) under ``name``; :func:`register_entropy_kind` registers a whole kind. Raises on duplicates."""
    register_entropy_kind(EntropyKind(name=name, codec=cls), overwrite=overwrite)
    return cls


def get_codec_kind(name: str) -> type:
    """The frozen codec class of kind ``name``; raises :class:`~featcomp.errors.RegistryError` if unknown."""
    return _KINDS.get(name).codec


def codec_kinds() -> list[str]:
    """Registered kind names."""
    return list(_KINDS.names())


def codec_kind(codec: Any) -> str:
    """The kind name of a frozen codec or frozen head (the implicit ``"factorized"`` when it names none)."""
    return str(getattr(codec, "kind", None) or DEFAULT_KIND)


# ------------------------------------------------------------------ the one serialization of frozen codecs
# Every place that stores a frozen codec asks these four functions: the model file (version 1: the
# ``codec`` tensor holds codec_to_bytes; version 2: the JSON holds codec_to_dict), the store
# (featcomp.store.codec.encode_tables/decode_tables: base64 of zlib of codec_to_bytes, in the store
# header's ``codec.tables`` and every coded part's ``featcomp.ans`` zarr codec configuration) and the
# API. The per-class ``to_bytes``/``from_bytes``/``to_dict``/``from_dict`` are each kind's own format;
# these pick the class from the registry by kind and check that what comes back is of that kind.


def codec_to_bytes(codec: Any) -> bytes:
    """The canonical bytes of a frozen codec of any registered kind (``codec.to_bytes()``: the kind's
    body, then its sha256). Read back with :func:`codec_from_bytes` and the codec's kind.

    Raises:
        CodecError: not a frozen codec (no ``to_bytes``).
        RegistryError: a codec of a kind that is not registered.
    """
    if not callable(getattr(codec, "to_bytes", None)):
        raise CodecError(f"a frozen codec is expected, got {type(codec).__name__}")
    entropy_kind(codec)  # the kind must be registered, or nothing could read the bytes back
    return codec.to_bytes()


def codec_from_bytes(data: bytes, kind: str | None = None) -> FrozenCodec:
    """Rebuild a frozen codec from :func:`codec_to_bytes` output; ``kind`` None is the implicit
    (factorized) kind, as in formats written before kinds existed.

    Raises:
        CodecError: the bytes are not a codec of that kind (bad magic, digest mismatch, truncated).
        RegistryError: an unknown kind (a newer featcomp wrote it).
    """
    spec = entropy_kind(kind)
    codec = spec.codec.from_bytes(bytes(data))
    if codec_kind(codec) != spec.name:
        raise CodecError(f"the bytes decode to a {codec_kind(codec)!r} codec, {spec.name!r} was expected")
    return codec


def codec_to_dict(codec: Any) -> dict[str, Any]:
    """The JSON-safe dict of a frozen codec of any registered kind: ``codec.to_dict()`` with ``"kind"``
    (added when the kind's own dict has none, as the factorized one). Read back with :func:`codec_from_dict`.

    Raises:
        RegistryError: a codec of a kind that is not registered.
    """
    name = entropy_kind(codec).name
    d = codec.to_dict()
    d.setdefault("kind", name)
    return d


def codec_from_dict(d: dict[str, Any]) -> FrozenCodec:
    """Rebuild a frozen codec from its ``to_dict()`` or :func:`codec_to_dict` output (no ``"kind"`` means
    the implicit factorized kind).

    Raises:
        CodecError: not a dict, or the dict is invalid for its kind.
        RegistryError: an unknown kind (a newer featcomp wrote it).
    """
    if not isinstance(d, dict):
        raise CodecError(f"a codec dict is expected, got {type(d).__name__}")
    kind = d.get("kind", DEFAULT_KIND)
    codec = get_codec_kind(kind).from_dict(d)
    if codec_kind(codec) != kind:
        raise CodecError(f"the dict decodes to a {codec_kind(codec)!r} codec, its kind says {kind!r}")
    return codec


register_entropy_kind(EntropyKind("factorized", EntropyCodec, "featcomp.entropy.trainable:FactorizedPrior",
                                  layout="vectors", rate_control=True, implicit=True))
register_entropy_kind(EntropyKind("temporal", TemporalCodec, "featcomp.entropy.trainable:TemporalPriorAdapter",
                                  layout="clips", time_chunks=True, rate_control=True))
register_entropy_kind(EntropyKind("hyperprior", HyperpriorCodec, "featcomp.entropy.trainable:HyperpriorAdapter",
                                  layout="maps"))

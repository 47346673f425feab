"""Typed, versioned headers of the model layer: the model file's metadata (issue 15, "one format layer").

The model file (:mod:`featcomp.model.file`) keeps one JSON document under the safetensors metadata key
``"featcomp"``. It was a hand-built dict read with ``meta.get(...)`` in the loader; here it is one frozen
dataclass, :class:`ModelFileHeader`, with an explicit ``format_version``:

- ``from_dict(d, where)`` does every check once (the version, each field's presence and type, and the
  fields that must agree with each other) and raises a :class:`~featcomp.errors.ModelFileError` subclass
  naming ``where`` (the file) and the field: :class:`~featcomp.errors.ModelFileVersionError` for a version
  this featcomp does not read, :class:`~featcomp.errors.CorruptModelFileError` for damaged metadata;
- ``to_dict()`` gives back exactly the dict :func:`~featcomp.model.save_model` records for that version
  (the file stores it with sorted keys, so the bytes are the same): ``save_model`` writes through it.

Versions: 1, a factorized fixed-rate head, whose codec is the ``codec`` uint8 tensor (no ``codec``,
``entropy_model`` or ``rate`` in the JSON; the head config without its version-2 fields); 2, any other
head: ``codec`` (the codec's dict, with ``kind``), ``entropy_model`` and ``rate`` (``{"lams", "levels"}``
or null). No tensors here: the tensors' names, shapes and bytes stay in :mod:`featcomp.model.file`.
This module imports no torch (the head config is imported when a model file's header is parsed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featcomp.entropy.kinds import entropy_kinds
from featcomp.errors import ConfigError, CorruptModelFileError, ModelFileError, ModelFileVersionError

if TYPE_CHECKING:  # importing featcomp.head imports torch; the clip header below must stay numpy-only
    from featcomp.head.config import HeadConfig

__all__ = ["ModelFileHeader", "ModelRate", "MODEL_FORMAT_VERSION", "READ_FORMAT_VERSIONS", "V2_HEAD_FIELDS"]

MODEL_FORMAT_VERSION = 2
READ_FORMAT_VERSIONS = (1, 2)
#: HeadConfig fields a version-1 file never holds (they are at their defaults in a version-1 head)
V2_HEAD_FIELDS = ("entropy_model", "prior", "rate_lams")
# the keys save_model writes, per version
_V1_KEYS = ("format_version", "featcomp_version", "head", "backbone", "sampling", "codec_digest", "training",
            "metadata", "digest")
_V2_KEYS = _V1_KEYS + ("codec", "entropy_model", "rate")


def _corrupt(where: str, what: str) -> CorruptModelFileError:
    return CorruptModelFileError(f"model file {where}: corrupt metadata ({what}); the file is damaged or was "
                                 "not written by featcomp.save_model: re-save the model")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ModelRate:
    """The ``rate`` section of a version-2 file of a variable-rate head: the levels' lambdas (their number
    is ``levels``; the head's ``log_gains`` tensor holds the per-level gains)."""

    lams: tuple[float, ...]
    levels: int

    def to_dict(self) -> dict[str, Any]:
        return {"lams": list(self.lams), "levels": self.levels}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ModelRate:
        if not isinstance(d, dict) or not isinstance(d.get("lams"), list) or not _is_int(d.get("levels")):
            raise _corrupt(where, f"rate {d!r} is not {{'lams': [...], 'levels': L}}")
        lams = d["lams"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                   for v in lams) or len(lams) != d["levels"] or d["levels"] < 2:
            raise _corrupt(where, f"rate lams {lams!r} for {d['levels']} levels")
        return cls(lams=tuple(lams), levels=d["levels"])


@dataclass(frozen=True)
class ModelFileHeader:
    """The JSON metadata of a model file, versions 1 and 2 (see the module docstring).

    Attributes:
        format_version: 1 or 2.
        head: the head's config (:class:`~featcomp.head.HeadConfig`).
        codec_digest: sha256 hex of the frozen codec (checked against the codec that is read).
        backbone: the backbone spec's JSON form (``BackboneSpec.to_dict()``), or None.
        sampling: the default sampling's JSON form (``SamplingConfig.to_dict()``), or None.
        training: training options and metrics recorded at save time.
        metadata: free-form JSON.
        featcomp_version: the featcomp release that wrote the file.
        digest: sha256 hex of the canonical JSON (without ``digest``) and every tensor; None while a file
            is being written (``save_model`` computes it from the rest).
        codec: version 2: the codec's dict (``codec.to_dict()`` with ``kind``); None in version 1 (the
            codec is the ``codec`` tensor).
        entropy_model: version 2: the codec's kind.
        rate: version 2: the levels of a variable-rate head, or None.
        extra: keys this featcomp does not know (kept, so the dict round-trips and the digest checks).
    """

    format_version: int
    head: HeadConfig
    codec_digest: str
    backbone: dict | None = None
    sampling: dict | None = None
    training: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    featcomp_version: str | None = None
    digest: str | None = None
    codec: dict | None = None
    entropy_model: str | None = None
    rate: ModelRate | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The metadata ``save_model`` records (``digest`` only when set)."""
        head = self.head.to_dict()
        if self.format_version == 1:
            for k in V2_HEAD_FIELDS:  # at their defaults in a version-1 head; a version-1 reader rejects them
                head.pop(k, None)
        d: dict[str, Any] = {
            "format_version": self.format_version,
            "featcomp_version": self.featcomp_version,
            "head": head,
            "backbone": self.backbone,
            "sampling": self.sampling,
            "codec_digest": self.codec_digest,
            "training": self.training,
            "metadata": self.metadata,
        }
        if self.format_version >= 2:
            d["codec"] = self.codec
            d["entropy_model"] = self.entropy_model
            d["rate"] = None if self.rate is None else self.rate.to_dict()
        d.update(self.extra)
        if self.digest is not None:
            d["digest"] = self.digest
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ModelFileHeader:
        """Parse and check a model file's metadata; ``where`` (the file) names it in every error.

        Raises:
            ModelFileVersionError: a format version this featcomp does not read.
            CorruptModelFileError: not an object, or a field missing, of the wrong type, or inconsistent
                with another (the message names the field).
        """
        if not isinstance(d, dict):
            raise _corrupt(where, f"the metadata is {type(d).__name__}, not a JSON object")
        version = d.get("format_version")
        if not _is_int(version) or version not in READ_FORMAT_VERSIONS:
            raise ModelFileVersionError(
                f"model file {where}: format version {version!r}, this featcomp reads versions "
                f"{READ_FORMAT_VERSIONS}; use the featcomp release that wrote it, or re-save the model")
        known = _V1_KEYS if version == 1 else _V2_KEYS
        for key in ("head", "codec_digest", "digest") + (("codec",) if version >= 2 else ()):
            if key not in d:
                raise _corrupt(where, f"no {key!r} field")
        for key in ("codec_digest", "digest"):
            if not isinstance(d[key], str):
                raise _corrupt(where, f"{key} {d[key]!r} is not a string")
        for key, optional in (("head", False), ("backbone", True), ("sampling", True), ("training", True),
                              ("metadata", True)):
            v = d.get(key)
            if not (isinstance(v, dict) or (optional and v is None)):
                raise _corrupt(where, f"{key} is {type(v).__name__}, not a JSON object")
        fv = d.get("featcomp_version")
        if fv is not None and not isinstance(fv, str):
            raise _corrupt(where, f"featcomp_version {fv!r} is not a string")
        head_d = d["head"]
        if version >= 2 and isinstance(d["codec"], dict):
            kind = d["codec"].get("kind", d.get("entropy_model"))
            if isinstance(kind, str) and kind not in entropy_kinds():
                raise ModelFileError(f"model file {where}: the {kind!r} codec cannot be read (an entropy-model "
                                     f"kind this featcomp does not know: {entropy_kinds()}); a newer featcomp, or "
                                     "the plugin that registers the kind, may be needed")
        if version == 1 and any(k in head_d for k in V2_HEAD_FIELDS):
            raise _corrupt(where, f"a version-1 head with version-2 fields {[k for k in V2_HEAD_FIELDS if k in head_d]}")
        from featcomp.head.config import HeadConfig

        try:
            head = HeadConfig.from_dict(head_d)
        except (ConfigError, TypeError, ValueError, OverflowError) as e:  # a config's own checks may raise plain errors
            raise _corrupt(where, f"head: HeadConfig {type(e).__name__}: {e}") from None
        codec = entropy_model = rate = None
        if version >= 2:
            codec = d["codec"]
            if not isinstance(codec, dict):
                raise _corrupt(where, f"codec is {type(codec).__name__}, not a JSON object")
            entropy_model = d.get("entropy_model")
            if not isinstance(entropy_model, str) or codec.get("kind", entropy_model) != entropy_model:
                raise _corrupt(where, f"entropy_model {entropy_model!r} with a codec of kind {codec.get('kind')!r}")
            if d.get("rate") is not None:
                rate = ModelRate.from_dict(d["rate"], where)
            if (rate.levels if rate else 0) != head.rate_levels:
                raise _corrupt(where, f"rate {d.get('rate')!r} for a head of {head.rate_levels} rate levels")
        elif head.rate_levels:
            raise _corrupt(where, "a version-1 file of a variable-rate head")
        return cls(
            format_version=version, head=head, codec_digest=d["codec_digest"], backbone=d.get("backbone"),
            sampling=d.get("sampling"), training=d.get("training") or {}, metadata=d.get("metadata") or {},
            featcomp_version=fv, digest=d["digest"], codec=codec, entropy_model=entropy_model, rate=rate,
            extra=tuple((k, v) for k, v in d.items() if k not in known),
        )

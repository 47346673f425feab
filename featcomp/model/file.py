"""The model file: save, load and verify a frozen head with its codec, backbone and sampling (layer 2).

**Format choice: one safetensors file** (``*.safetensors``) whose header metadata holds one JSON
document under the key ``"featcomp"``. Reasons: a single file is copied, cached and shipped to Ray
workers atomically (no half-copied directory); safetensors loads without pickle (no code execution
from a downloaded model) and memory-maps; the JSON header is readable with any safetensors tool.

Contents:

* tensors: the frozen head (``head.input_mean``, ``head.input_std``, ``head.scale``,
  ``head.analysis.*``, ``head.synthesis.*``, GDN parameters already reparameterized), the frozen codec
  as raw bytes (``codec``, uint8, ``EntropyCodec.to_bytes()``), and optional extras (``extra.*``, e.g. a
  task classifier);
* JSON: ``format_version``, ``featcomp_version``, ``head`` (the :class:`HeadConfig`), ``backbone``
  (the backbone spec: model name, weights, tap layer, pooling, preprocessing), ``sampling`` (default
  :class:`SamplingConfig`), ``codec_digest`` (the codec's sha256), ``training`` (options and metrics),
  ``metadata`` (free-form), and ``digest``: the sha256 of the canonical JSON (without ``digest``) and
  every tensor (name, dtype, shape, bytes in name order).

The JSON is one typed, versioned header, :class:`~featcomp.model.headers.ModelFileHeader`: ``save_model``
writes its ``to_dict()``, and :func:`load_model` parses it once with ``from_dict`` (every field's presence
and type, the version's fields). :func:`load_model` refuses a file of another ``format_version``
(:class:`~featcomp.errors.ModelFileVersionError`), damaged metadata, a codec whose digest differs from
``codec_digest``, or contents whose digest differs from ``digest``
(:class:`~featcomp.errors.CorruptModelFileError`); both are :class:`ModelFileError`, and every message
names the file. The codec is written and read through the one pair of the kinds registry
(:func:`featcomp.entropy.codec_to_bytes`/``codec_from_bytes`` in version 1,
``codec_to_dict``/``codec_from_dict`` in version 2).

**Format versions.** Version 1 (a factorized, fixed-rate head) holds the codec as the ``codec`` uint8
tensor (``EntropyCodec.to_bytes()``). Version 2 is written for any other head: a conditional entropy
model (``head.entropy_model`` = ``"temporal"`` or ``"hyperprior"``) or a variable-rate head. Its JSON
carries ``codec`` = ``codec.to_dict()`` (with ``kind``; rebuilt by
:func:`featcomp.entropy.codec_from_dict`), ``entropy_model`` (the kind) and ``rate`` (``{"lams": [...],
"levels": L}`` or null); the head's ``log_gains`` (L, C') tensor holds the per-level gains. Factorized
fixed-rate heads are still written as version 1 byte for byte, so older featcomp releases read them;
:func:`load_model` reads both versions.

Invariant: the codec's integer tables are stored and never rebuilt on load (decoding is integer-only
and identical on every machine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.entropy.kinds import DEFAULT_KIND, codec_to_bytes, codec_to_dict, entropy_kind
from featcomp.errors import CodecError, ConfigError, CorruptModelFileError, FeatcompError, ModelFileError
from featcomp.head import CompressibleHead, FrozenHead
from featcomp.model.headers import MODEL_FORMAT_VERSION, ModelFileHeader, ModelRate
from featcomp.model.headers import READ_FORMAT_VERSIONS  # noqa: F401  (a name of this module, featcomp.model)

__all__ = ["MODEL_FORMAT_VERSION", "Model", "save_model", "load_model", "backbone_spec_dict", "sampling_dict"]

_META_KEY = "featcomp"
_DEQUANT_FORMULA = "features = (k + offsets) * scale"


def _plain(obj: Any) -> Any:
    """A JSON-safe version of a config / dict / None."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return json.loads(json.dumps(obj, default=str))
    raise ConfigError(f"save_model: cannot store {type(obj).__name__} as JSON (give a Config or a dict)")


# keys that ``extract_features`` reports beside the spec (Features.config["backbone"]) but that are not
# BackboneSpec fields: what the spec resolved to, recomputed when the backbone is built again
_REPORTED_BACKBONE_KEYS = ("tap",)


def backbone_spec_dict(backbone: Any, *, where: str = "save_model") -> dict[str, Any] | None:
    """The JSON form of a backbone spec, validated, from whatever a user naturally has at hand.

    Accepts None, a backbone name (``"resnet18"``), a :class:`~featcomp.backbones.BackboneSpec`, a built
    :class:`~featcomp.backbones.Backbone` (its ``.spec``), a :class:`~featcomp.features.Features` (the
    spec it reports) or a dict such as ``Features.config["backbone"]`` (its reported ``tap`` is dropped).

    Raises:
        ConfigError: the dict is not a valid ``BackboneSpec`` (names the bad keys), or the object is none of these.
    """
    from featcomp.backbones.spec import BackboneSpec

    if backbone is None:
        return None
    if isinstance(backbone, str):
        return BackboneSpec(name=backbone).to_dict()
    cfg = getattr(backbone, "config", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("backbone"), dict) and hasattr(backbone, "timestamps"):
        backbone = cfg["backbone"]  # a Features object
    spec = getattr(backbone, "spec", None)
    if isinstance(spec, BackboneSpec):
        backbone = spec
    if isinstance(backbone, BackboneSpec):
        return backbone.to_dict()
    if isinstance(backbone, dict):
        d = {k: v for k, v in backbone.items() if k not in _REPORTED_BACKBONE_KEYS}
        try:
            return BackboneSpec.from_dict(d).to_dict()
        except ConfigError as e:
            raise ConfigError(f"{where}: backbone= is not a valid backbone spec ({e})") from None
    raise ConfigError(f"{where}: backbone= takes a name, a BackboneSpec, a built Backbone, Features or "
                      f"Features.config['backbone'], got {type(backbone).__name__}")


def sampling_dict(sampling: Any, *, where: str = "save_model") -> dict[str, Any] | None:
    """The JSON form of a sampling config from a ``SamplingConfig``, a dict (``Features.config["sampling"]``)
    or a :class:`~featcomp.features.Features`; validated.

    Raises:
        ConfigError: not a valid ``SamplingConfig``.
    """
    if sampling is None:
        return None
    cfg = getattr(sampling, "config", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("sampling"), dict) and hasattr(sampling, "timestamps"):
        sampling = cfg["sampling"]
    from featcomp.video.sampling import SamplingConfig

    if isinstance(sampling, SamplingConfig):
        return sampling.to_dict()
    if isinstance(sampling, dict):
        try:
            return SamplingConfig.from_dict(sampling).to_dict()
        except ConfigError as e:
            raise ConfigError(f"{where}: sampling= is not a valid sampling config ({e})") from None
    raise ConfigError(f"{where}: sampling= takes a SamplingConfig, Features or Features.config['sampling'], "
                      f"got {type(sampling).__name__}")


def _canonical(meta: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in meta.items() if k != "digest"}, sort_keys=True,
                      separators=(",", ":")).encode()


def _content_digest(meta: dict[str, Any], tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256(_canonical(meta))
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0" + str(tuple(t.shape)).encode() + b"\0")
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded model file: frozen head + codec + the backbone and sampling it was trained with.

    Attributes:
        head: the :class:`FrozenHead` (analysis weights, codec, dequantization, optional synthesis).
        backbone: the backbone spec as a ``BackboneSpec`` when ``featcomp.backbones`` is importable,
            else its dict; None if the model was saved without one.
        sampling: the default ``SamplingConfig`` (or its dict), or None.
        digest: sha256 hex of the file's contents (see the module docstring).
        training: training options and metrics recorded at save time.
        metadata: free-form JSON given to :func:`save_model`.
        extra: extra tensors (e.g. ``classifier.weight``), name -> tensor.
        path: where it was loaded from (None if built in memory).
    """

    head: FrozenHead
    backbone: Any
    sampling: Any
    digest: str
    training: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)
    path: str | None = None

    @property
    def codec(self):
        """The frozen :class:`~featcomp.entropy.EntropyCodec` (integer tables + digest)."""
        return self.head.codec

    @property
    def latent_channels(self) -> int:
        return self.head.latent_channels

    @property
    def kind(self) -> str:
        """The entropy model's kind: ``"factorized"``, ``"temporal"`` or ``"hyperprior"``."""
        return self.head.kind

    @property
    def rate(self) -> float | None:
        """The rate level the head encodes at (None for a fixed-rate head)."""
        return self.head.rate

    def at_rate(self, rate: float | None) -> Model:
        """This model encoding at another rate level (a float interpolates between levels).

        Same file, weights and codec (the entropy model is shared by all levels); only the per-channel
        gain and hence the dequantization scale change. ``rate=None`` returns ``self``.

        Raises:
            ConfigError: a fixed-rate model, or a rate outside ``[0, levels - 1]``.
        """
        if rate is None:
            return self
        return dataclasses.replace(self, head=self.head.at_rate(rate))

    def recorded_rate_control(self) -> dict[str, Any] | None:
        """The per-frame rate control this model was built or refitted for, as recorded in ``training``
        (``featcomp train --ladder``: ``training["ladder"]["rate_control"]``; ``featcomp refit-temporal``
        under rate control: ``training["refit_temporal"]["rate_control"]``, which wins), or None.
        Extraction should use the same (:class:`featcomp.ratecontrol.RateControl` fields)."""
        rc = None
        for key in ("ladder", "refit_temporal"):
            rec = self.training.get(key) if isinstance(self.training, dict) else None
            if isinstance(rec, dict) and isinstance(rec.get("rate_control"), dict):
                rc = rec["rate_control"]
        return None if not self.head.config.rate_levels else rc

    def rate_control_hint(self, where: str) -> str | None:
        """A warning for a model built for per-frame rate control but used without it (every frame would be
        coded at level 0, the finest and most expensive), naming the options to give; None otherwise."""
        rc = self.recorded_rate_control()
        if rc is None:
            return None
        crit = rc.get("criterion", "top1")
        t = rc.get("target_agreement", 1.0)
        flag = (f"--keep-top1 {t:g}" if crit == "top1" else
                f"--max-{'distortion' if crit == 'distortion' else 'kl'} {rc.get('budget')}"
                + ("" if t == 1.0 else f" --keep-fraction {t:g}"))
        return (f"{where} was built for per-frame rate control ({flag}); without a rate-control option every frame "
                f"is coded at level 0, the finest and most expensive: add {flag} (or --rate L for one level)")

    def rate_card(self) -> dict[str, Any] | None:
        """``{"level", "levels", "lams", "lam"}`` of a variable-rate model, None at fixed rate."""
        if self.head.rate is None:
            return None
        return {"level": float(self.head.rate), "levels": self.head.config.rate_levels,
                "lams": [float(v) for v in self.head.rate_lams], "lam": self.head.lam_at()}

    def model_card(self) -> dict[str, Any]:
        """JSON-safe description a store records next to the features it writes.

        Includes the dequantization ``features = (k + offsets) * scale`` (per latent channel, float32
        values as lists), the codec digest, the model digest, the backbone spec, the sampling, the head
        config and the training summary. A store decodes to float with this card and the codec alone.
        Also ``entropy_model`` (the codec kind) and ``rate`` (the chosen level, the levels' lambdas and
        the interpolated lambda; null for a fixed-rate model): ``dequantization.scale`` is the step *at
        that rate*. A variable-rate model's card also carries ``dequantization.level_scale``, the step of
        every level (``L`` lists of ``C'`` float32 values): a store that records a rate level per frame
        takes its steps from the card alone, never from the head (the store writer records this table in
        its own header's ``dequantization`` section and keeps the rest of the card).
        """
        deq: dict[str, Any] = {
            "formula": _DEQUANT_FORMULA,
            "offsets": [float(v) for v in np.asarray(self.codec.offsets, np.float32)],
            "scale": [float(v) for v in self.head.scale.detach().cpu().numpy().astype(np.float32)],
        }
        if self.head.config.rate_levels:
            deq["level_scale"] = [
                [float(v) for v in np.asarray(self.head.scale_at(lv).detach().cpu(), dtype=np.float32)]
                for lv in range(self.head.config.rate_levels)
            ]
        return {
            "kind": "featcomp.model",
            "format_version": _format_version_for(self.head),
            "entropy_model": self.kind,
            "rate": self.rate_card(),
            "model_digest": self.digest,
            "codec_digest": self.codec.digest,
            "latent_channels": self.latent_channels,
            "dequantization": deq,
            "backbone": _plain(self.backbone),
            "sampling": _plain(self.sampling),
            "head": self.head.config.to_dict(),
            "training": self.training,
            "metadata": self.metadata,
            "path": self.path,
        }


def save_model(path: str | Path, head: CompressibleHead | FrozenHead, *, backbone: Any = None, sampling: Any = None,
               training: dict | None = None, metadata: dict | None = None,
               extra: dict[str, Tensor] | nn.Module | None = None, precision: int = 16) -> Path:
    """Write one self-contained model file (safetensors + JSON metadata; see the module docstring).

    Args:
        path: destination (``.safetensors`` suggested); written atomically (temp file + rename).
        head: a trained :class:`CompressibleHead` (frozen here at ``precision``) or a :class:`FrozenHead`.
        backbone: the backbone whose features the head was trained on: what ``extract_features``
            reports (``feats.config["backbone"]``, or the ``Features`` itself), a ``BackboneSpec``, a
            built ``Backbone`` or a backbone name. Validated here, so a bad spec fails at save time.
        sampling: the default sampling for :meth:`Extractor.compress`: ``feats.config["sampling"]``
            (or the ``Features``), a ``SamplingConfig`` or its dict.
        training: training options/metrics to record (default: ``head.train_result.options`` if present).
        metadata: free-form JSON.
        extra: extra tensors to store (a dict, or a module whose ``state_dict`` is stored), e.g. the task
            classifier; loaded into ``Model.extra``.
        precision: codec table precision when ``head`` is not frozen yet.

    Returns:
        The path written.

    Raises:
        ModelFileError: if the head cannot be frozen or serialized.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if isinstance(head, CompressibleHead):
        if training is None and getattr(head, "train_result", None) is not None:
            res = head.train_result
            training = {"options": res.options, "history_last": res.history[-1] if res.history else None}
        try:
            frozen = head.freeze(precision=precision)
        except FeatcompError as e:
            raise ModelFileError(f"save_model {path}: cannot freeze the head: {e}") from e
    elif isinstance(head, FrozenHead):
        frozen = head
    else:
        raise ModelFileError(f"save_model {path}: expected a CompressibleHead or FrozenHead, got {type(head).__name__}")
    version = _format_version_for(frozen)
    tensors: dict[str, Tensor] = {f"head.{k}": v for k, v in frozen.state_tensors().items()}
    codec_dict = kind = rate = None
    if version == 1:
        codec_bytes = codec_to_bytes(frozen.codec)
        tensors["codec"] = torch.frombuffer(bytearray(codec_bytes), dtype=torch.uint8).clone()
    else:
        codec_dict = json.loads(json.dumps(codec_to_dict(frozen.codec)))
        kind = frozen.kind
        if frozen.config.rate_levels:
            rate = ModelRate(lams=tuple(float(v) for v in frozen.rate_lams), levels=frozen.config.rate_levels)
    if extra is not None:
        sd = extra.state_dict() if isinstance(extra, nn.Module) else extra
        for k, v in sd.items():
            tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    header = ModelFileHeader(
        format_version=version, featcomp_version=_version(), head=frozen.config,
        backbone=backbone_spec_dict(backbone, where=f"save_model {path}"),
        sampling=sampling_dict(sampling, where=f"save_model {path}"),
        codec_digest=frozen.codec.digest,
        training=json.loads(json.dumps(training or {}, default=str)),
        metadata=json.loads(json.dumps(metadata or {}, default=str)),
        codec=codec_dict, entropy_model=kind, rate=rate,
    )
    header = dataclasses.replace(header, digest=_content_digest(header.to_dict(), tensors))
    meta = header.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    tmp.replace(path)
    return path


def _format_version_for(head: FrozenHead) -> int:
    """1 for a fixed-rate head of the implicit (factorized) kind (the original layout), 2 otherwise."""
    return 1 if entropy_kind(head.kind).implicit and not head.config.rate_levels else 2


def _version() -> str:
    from featcomp import __version__

    return __version__


def _restore_config(kind: str, d: Any) -> Any:
    if d is None:
        return None
    try:
        if kind == "backbone":
            from featcomp.backbones.spec import BackboneSpec

            return BackboneSpec.from_dict({k: v for k, v in d.items() if k not in _REPORTED_BACKBONE_KEYS})
        if kind == "sampling":
            from featcomp.video import SamplingConfig

            return SamplingConfig.from_dict(d)
    except (ImportError, AttributeError, FeatcompError, TypeError):
        return d
    return d


def load_model(path: str | Path, *, storage_options: dict | None = None) -> Model:
    """Load a model file written by :func:`save_model`.

    Args:
        path: a local file or any fsspec URL (``s3://bucket/model.safetensors``, ``gs://...``); a URL is
            read whole into memory (model files are small) through :mod:`featcomp.storage`.
        storage_options: options of the URL's filesystem (``endpoint_url``, ``key``, ...); environment
            credentials apply as usual. Ignored for local files.

    Raises:
        ModelFileError: missing or unreadable file, not a featcomp model, another format version, a codec
            digest mismatch, or a content digest mismatch (the file was modified).
        StorageError: the URL's filesystem package is missing, credentials are refused, or the bucket
            does not exist.
    """
    from featcomp.storage import is_url

    if is_url(path):
        from featcomp.storage import read_bytes

        try:
            data = read_bytes(str(path), storage_options)
        except FileNotFoundError:
            raise ModelFileError(f"model file {path} does not exist") from None
        except IsADirectoryError:
            raise ModelFileError(f"model file {path} is a directory, not a model file") from None
        return _load_model_bytes(data, str(path))
    path = Path(str(path)[len("file://"):] if str(path).startswith("file://") else path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    return _load_model_file(path, str(path))


def _load_model_bytes(data: bytes, name: str) -> Model:
    """A model file's bytes (read from a URL) -> :class:`Model`; ``name`` is what messages call it."""
    from safetensors.torch import load as load_tensors

    try:
        raw_meta = _safetensors_metadata(data).get(_META_KEY)
        tensors = load_tensors(data)
    except Exception as e:  # safetensors raises its own error types
        raise ModelFileError(f"model file {name}: not a readable safetensors file ({e})") from None
    return _model_from(raw_meta, tensors, name)


def _safetensors_metadata(data: bytes) -> dict:
    """The ``__metadata__`` of a safetensors file's bytes (8-byte little-endian header length, JSON header)."""
    n = int.from_bytes(data[:8], "little")
    if len(data) < 8 or n > len(data) - 8:
        raise ValueError("truncated safetensors header")
    return json.loads(data[8 : 8 + n]).get("__metadata__") or {}


def _load_model_file(path: Path, name: str) -> Model:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except ModelFileError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise ModelFileError(f"model file {path}: not a readable safetensors file ({e})") from None
    return _model_from(raw_meta, tensors, name)


def _model_from(raw_meta: str | None, tensors: dict, path: str) -> Model:
    """The featcomp metadata JSON and the tensors of a model file -> :class:`Model` (checked).

    The metadata is parsed once into a :class:`~featcomp.model.headers.ModelFileHeader`; the content
    digest is computed over the metadata exactly as read.
    """
    from featcomp.entropy.kinds import codec_from_bytes, codec_from_dict

    if raw_meta is None:
        raise ModelFileError(f"model file {path}: no featcomp metadata; was it written by featcomp.save_model?")
    try:
        meta = json.loads(raw_meta)
    except (json.JSONDecodeError, RecursionError) as e:
        raise CorruptModelFileError(f"model file {path}: corrupt metadata JSON ({e}); the file is damaged") from None
    header = ModelFileHeader.from_dict(meta, path)
    digest = _content_digest(meta, tensors)
    if digest != header.digest:
        raise CorruptModelFileError(f"model file {path}: digest mismatch (stored {header.digest[:16]}..., "
                                    f"computed {digest[:16]}...); the file is corrupt or was modified")
    if header.format_version == 1:
        if "codec" not in tensors:
            raise CorruptModelFileError(f"model file {path}: missing the codec tensor")
        try:
            codec = codec_from_bytes(tensors["codec"].numpy().tobytes(), DEFAULT_KIND)
        except CodecError as e:
            raise CorruptModelFileError(f"model file {path}: the codec cannot be read ({e})") from None
    else:
        try:
            codec = codec_from_dict(header.codec)
        except FeatcompError as e:  # the kind is registered (ModelFileHeader checked it): the dict is damaged
            raise CorruptModelFileError(f"model file {path}: the {header.codec.get('kind', DEFAULT_KIND)!r} codec "
                                        f"cannot be read ({e}); the file is damaged") from None
    if codec.digest != header.codec_digest:
        raise CorruptModelFileError(f"model file {path}: codec digest {codec.digest[:16]}... differs from the "
                                    f"recorded {header.codec_digest[:16]}...")
    try:
        state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        head = FrozenHead(header.head, state, codec)
    except (FeatcompError, KeyError) as e:
        raise CorruptModelFileError(f"model file {path}: cannot rebuild the head ({e})") from None
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return Model(head=head, backbone=_restore_config("backbone", header.backbone),
                 sampling=_restore_config("sampling", header.sampling), digest=digest,
                 training=header.training, metadata=header.metadata, extra=extra, path=str(path))

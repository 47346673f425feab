"""The model file, the single-clip extractor and compressed clips (layer 2).

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

:func:`load_model` refuses a file of another ``format_version``, a codec whose digest differs from
``codec_digest``, or contents whose digest differs from ``digest`` (:class:`ModelFileError`).

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
import math
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.entropy.kinds import DEFAULT_KIND, entropy_kind
from featcomp.errors import CodecError, ConfigError, FeatcompError, ModelFileError
from featcomp.head import CompressibleHead, FrozenHead, HeadConfig

__all__ = [
    "MODEL_FORMAT_VERSION",
    "Model",
    "decode_clip",
    "save_model",
    "load_model",
    "Extractor",
    "CompressedClip",
]

MODEL_FORMAT_VERSION = 2
READ_FORMAT_VERSIONS = (1, 2)
_V2_HEAD_FIELDS = ("entropy_model", "prior", "rate_lams")  # HeadConfig fields a version-1 file never holds
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
        that rate*.
        """
        return {
            "kind": "featcomp.model",
            "format_version": _format_version_for(self.head),
            "entropy_model": self.kind,
            "rate": self.rate_card(),
            "model_digest": self.digest,
            "codec_digest": self.codec.digest,
            "latent_channels": self.latent_channels,
            "dequantization": {
                "formula": _DEQUANT_FORMULA,
                "offsets": [float(v) for v in np.asarray(self.codec.offsets, np.float32)],
                "scale": [float(v) for v in self.head.scale.detach().cpu().numpy().astype(np.float32)],
            },
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
    head_dict = frozen.config.to_dict()
    if version == 1:
        codec_bytes = frozen.codec.to_bytes()
        tensors["codec"] = torch.frombuffer(bytearray(codec_bytes), dtype=torch.uint8).clone()
        for k in _V2_HEAD_FIELDS:  # at their defaults here; a version-1 reader rejects unknown keys
            head_dict.pop(k, None)
    if extra is not None:
        sd = extra.state_dict() if isinstance(extra, nn.Module) else extra
        for k, v in sd.items():
            tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    meta: dict[str, Any] = {
        "format_version": version,
        "featcomp_version": _version(),
        "head": head_dict,
        "backbone": backbone_spec_dict(backbone, where=f"save_model {path}"),
        "sampling": sampling_dict(sampling, where=f"save_model {path}"),
        "codec_digest": frozen.codec.digest,
        "training": json.loads(json.dumps(training or {}, default=str)),
        "metadata": json.loads(json.dumps(metadata or {}, default=str)),
    }
    if version >= 2:
        meta["codec"] = json.loads(json.dumps(frozen.codec.to_dict()))
        meta["codec"].setdefault("kind", frozen.kind)
        meta["entropy_model"] = frozen.kind
        meta["rate"] = ({"lams": [float(v) for v in frozen.rate_lams], "levels": frozen.config.rate_levels}
                        if frozen.config.rate_levels else None)
    meta["digest"] = _content_digest(meta, tensors)
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
    """The featcomp metadata JSON and the tensors of a model file -> :class:`Model` (checked)."""
    from featcomp.entropy import EntropyCodec

    if raw_meta is None:
        raise ModelFileError(f"model file {path}: no featcomp metadata; was it written by featcomp.save_model?")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"model file {path}: corrupt metadata JSON ({e})") from None
    version = meta.get("format_version")
    if version not in READ_FORMAT_VERSIONS:
        raise ModelFileError(
            f"model file {path}: format version {version!r}, this featcomp reads versions {READ_FORMAT_VERSIONS}; "
            "use the featcomp release that wrote it, or re-save the model"
        )
    digest = _content_digest(meta, tensors)
    if digest != meta.get("digest"):
        raise ModelFileError(f"model file {path}: digest mismatch (stored {str(meta.get('digest'))[:16]}..., "
                             f"computed {digest[:16]}...); the file is corrupt or was modified")
    if version == 1:
        if "codec" not in tensors:
            raise ModelFileError(f"model file {path}: missing the codec tensor")
        try:
            codec = EntropyCodec.from_bytes(tensors["codec"].numpy().tobytes())
        except CodecError as e:
            raise ModelFileError(f"model file {path}: the codec cannot be read ({e})") from None
    else:
        from featcomp.entropy import codec_from_dict

        if not isinstance(meta.get("codec"), dict):
            raise ModelFileError(f"model file {path}: version 2 without a codec dict in its metadata")
        try:
            codec = codec_from_dict(meta["codec"])
        except FeatcompError as e:
            raise ModelFileError(f"model file {path}: the {meta['codec'].get('kind', DEFAULT_KIND)!r} codec cannot "
                                 f"be read ({e}); a newer featcomp may be needed") from None
    if codec.digest != meta.get("codec_digest"):
        raise ModelFileError(f"model file {path}: codec digest {codec.digest[:16]}... differs from the recorded "
                             f"{str(meta.get('codec_digest'))[:16]}...")
    try:
        cfg = HeadConfig.from_dict(meta["head"])
        state = {k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")}
        head = FrozenHead(cfg, state, codec)
    except (FeatcompError, KeyError) as e:
        raise ModelFileError(f"model file {path}: cannot rebuild the head ({e})") from None
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return Model(head=head, backbone=_restore_config("backbone", meta.get("backbone")),
                 sampling=_restore_config("sampling", meta.get("sampling")), digest=digest,
                 training=meta.get("training") or {}, metadata=meta.get("metadata") or {}, extra=extra,
                 path=str(path))


# --------------------------------------------------------------------------------------------------
# compressed clips

_CLIP_MAGIC = b"FCCL"
_CLIP_VERSION = 2
_CLIP_VERSION_LEVELS = 3  # version 2 + per-frame rate levels (packed bit fields after the side arrays)
_CLIP_READ_VERSIONS = (1, 2, 3)
DEFAULT_TEMPORAL_CHUNK = 256  # frames per independently decodable temporal stream in a clip


def _affine(a: np.ndarray, rtol: float = 0.0) -> tuple[float, float] | None:
    """(start, step) if ``a`` equals ``start + step * arange(n)`` exactly in float64, else None."""
    if a.size < 2:
        return (float(a[0]) if a.size else 0.0, 0.0)
    start, step = float(a[0]), float(a[1] - a[0])
    if np.array_equal(start + step * np.arange(a.size, dtype=np.float64), a.astype(np.float64)):
        return start, step
    return None


def _read_series(b: bytes, pos: int, affine: list | None, n: int, dtype: Any, what: str) -> tuple[np.ndarray, int]:
    """One side array of a compressed clip: ``start + step * arange(n)`` when stored as ``affine``
    (``[start, step]``), else ``n`` little-endian 8-byte values at ``pos``. Returns (array, next pos)."""
    if affine is not None:
        return affine[0] + affine[1] * np.arange(n, dtype=dtype), pos
    if len(b) < pos + 8 * n:
        raise CodecError(f"compressed clip: truncated {what}")
    return np.frombuffer(b, np.dtype(dtype).newbyteorder("<"), count=n, offset=pos).astype(dtype), pos + 8 * n


@dataclasses.dataclass(frozen=True)
class CompressedClip:
    """One clip's features as entropy-coded stream(s).

    Attributes:
        data: the codec stream of int latents of shape ``shape`` (``codec.compress_symbols``), or, when
            ``chunks`` is set, the concatenation of independent streams (one per chunk of frames).
        shape: (T, C', *) latent shape.
        timestamps: float64 (T,) seconds of each frame.
        frame_indices: int64 (T,) frame numbers in the video.
        codec_digest: sha256 hex of the codec that made ``data`` (decoding checks it).
        model_digest: digest of the model file, or "".
        kind: the codec kind (``"factorized"``, ``"temporal"``, ``"hyperprior"``).
        chunks: byte lengths of the streams in ``data`` (temporal clips: each chunk of frames starts
            with a fresh context and decodes alone), or None for one stream.
        rate: the rate level of a variable-rate model (it sets the dequantization scale), or None.
        levels: uint8 (T,) the rate level of each frame (per-frame rate control,
            :mod:`featcomp.ratecontrol`), or None; when set, ``rate`` is None and frame t dequantizes
            at level ``levels[t]``.

    Serialized as clip format version 1 (the original layout) when ``kind`` is factorized with one
    stream and no rate, version 2 (``kind``, ``chunks``, ``rate`` in the JSON header) otherwise, and
    version 3 when ``levels`` is set: version 2 plus ``"levels": w`` in the header and the levels packed
    as ``w``-bit unsigned fields (most significant bit first, zero-padded to a byte) after the side
    arrays, ``w = level_bits``.
    """

    data: bytes
    shape: tuple[int, ...]
    timestamps: np.ndarray
    frame_indices: np.ndarray
    codec_digest: str
    model_digest: str = ""
    kind: str = DEFAULT_KIND
    chunks: tuple[int, ...] | None = None
    rate: float | None = None
    levels: np.ndarray | None = None
    level_bits: int = 8

    def __post_init__(self) -> None:
        if self.levels is not None:
            lv = np.asarray(self.levels)
            if lv.shape != (int(self.shape[0]),):
                raise CodecError(f"compressed clip: {self.shape[0]} frames but levels of shape {lv.shape}")
            if not 1 <= int(self.level_bits) <= 8:
                raise CodecError(f"compressed clip: level_bits must be in [1, 8], got {self.level_bits}")
            if lv.size and (lv.min() < 0 or lv.max() >= 1 << int(self.level_bits)):
                raise CodecError(f"compressed clip: levels must be in [0, {1 << int(self.level_bits)}), got "
                                 f"[{lv.min()}, {lv.max()}]")
            if self.rate is not None:
                raise CodecError("compressed clip: give either one rate or per-frame levels, not both")
            object.__setattr__(self, "levels", lv.astype(np.uint8))

    def _packed_levels(self) -> bytes:
        if self.levels is None:
            return b""
        w = int(self.level_bits)
        bits = (self.levels[:, None].astype(np.uint8) >> np.arange(w - 1, -1, -1, dtype=np.uint8)) & 1
        return np.packbits(bits.reshape(-1)).tobytes()

    @property
    def streams(self) -> list[bytes]:
        """The independent codec streams in ``data`` (one unless ``chunks`` is set)."""
        if self.chunks is None:
            return [self.data]
        if sum(self.chunks) != len(self.data):
            raise CodecError(f"compressed clip: chunk lengths sum to {sum(self.chunks)}, stream has {len(self.data)} bytes")
        out, pos = [], 0
        for n in self.chunks:
            out.append(self.data[pos:pos + n])
            pos += n
        return out

    @property
    def num_frames(self) -> int:
        return int(self.shape[0])

    @property
    def bits_per_frame(self) -> float:
        """Size of the feature stream(s) (codec headers and ANS flush included) plus the packed per-frame
        levels, if any, in bits per frame."""
        return 8.0 * (len(self.data) + len(self._packed_levels())) / max(1, self.num_frames)

    def to_bytes(self) -> bytes:
        """Serialize: magic, version, JSON header length (u32), JSON header, side arrays, stream.

        Timestamps and frame indices that form arithmetic sequences (constant-rate sampling) are stored
        as (start, step); others as raw little-endian arrays.
        """
        ts = np.asarray(self.timestamps, np.float64)
        fi = np.asarray(self.frame_indices, np.int64)
        side = b""
        hdr: dict[str, Any] = {"shape": list(self.shape), "codec_digest": self.codec_digest,
                               "model_digest": self.model_digest, "n": int(ts.size)}
        aff = _affine(ts)
        if aff is not None:
            hdr["ts"] = list(aff)
        else:
            hdr["ts"] = None
            side += ts.astype("<f8").tobytes()
        afi = _affine(fi.astype(np.float64))
        if afi is not None:
            hdr["fi"] = [int(afi[0]), int(afi[1])]
        else:
            hdr["fi"] = None
            side += fi.astype("<i8").tobytes()
        implicit = entropy_kind(self.kind).implicit
        version = 1 if (implicit and self.chunks is None and self.rate is None) else _CLIP_VERSION
        if self.levels is not None:
            version = _CLIP_VERSION_LEVELS
            hdr["levels"] = int(self.level_bits)
            side += self._packed_levels()
        if version >= 2:
            hdr.update(kind=self.kind, chunks=None if self.chunks is None else [int(c) for c in self.chunks],
                       rate=None if self.rate is None else float(self.rate))
        h = json.dumps(hdr, separators=(",", ":")).encode()
        return _CLIP_MAGIC + struct.pack("<BI", version, len(h)) + h + side + self.data

    @classmethod
    def from_bytes(cls, b: bytes) -> CompressedClip:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on a foreign or truncated blob."""
        b = bytes(b)
        if len(b) < 9 or b[:4] != _CLIP_MAGIC:
            raise CodecError("not a featcomp compressed clip (bad magic)")
        version, hl = struct.unpack_from("<BI", b, 4)
        if version not in _CLIP_READ_VERSIONS:
            raise CodecError(f"compressed clip format version {version}, this featcomp reads {_CLIP_READ_VERSIONS}")
        pos = 9
        if len(b) < pos + hl:
            raise CodecError(f"compressed clip: truncated header ({len(b) - pos} bytes after the prefix, the header "
                             f"declares {hl})")
        try:
            hdr = json.loads(b[pos:pos + hl])
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise CodecError("compressed clip: corrupt or truncated header") from None
        pos += hl
        try:
            f = _ClipHeader(hdr, version)
        except CodecError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CodecError(f"compressed clip: corrupt header ({type(e).__name__}: {e}); the clip was damaged "
                             "in storage or transfer") from None
        n = f.n
        ts, pos = _read_series(b, pos, f.ts, n, np.float64, "timestamps")
        fi, pos = _read_series(b, pos, f.fi, n, np.int64, "frame indices")
        levels, w = None, 8
        if version >= _CLIP_VERSION_LEVELS:
            w = f.levels
            nb = (n * w + 7) // 8
            if len(b) < pos + nb:
                raise CodecError("compressed clip: truncated per-frame levels")
            bits = np.unpackbits(np.frombuffer(b, np.uint8, nb, pos), count=n * w).reshape(n, w)
            levels = (bits.astype(np.uint16) << np.arange(w - 1, -1, -1, dtype=np.uint16)).sum(1).astype(np.uint8)
            pos += nb
        if f.chunks is not None and sum(f.chunks) != len(b) - pos:
            raise CodecError(f"compressed clip: chunk lengths sum to {sum(f.chunks)}, the clip has {len(b) - pos} "
                             "stream bytes (truncated or damaged)")
        return cls(data=b[pos:], shape=f.shape, timestamps=ts, frame_indices=fi, codec_digest=f.codec_digest,
                   model_digest=f.model_digest, kind=f.kind, chunks=f.chunks, rate=f.rate, levels=levels, level_bits=w)


# Frames in one clip (the side arrays are allocated from the header's count; docs/reliability.md).
MAX_CLIP_FRAMES = 1 << 22


class _ClipHeader:
    """The checked fields of a clip's JSON header (types and ranges; raises KeyError/TypeError/ValueError,
    which :meth:`CompressedClip.from_bytes` turns into :class:`CodecError`)."""

    def __init__(self, hdr: Any, version: int) -> None:
        if not isinstance(hdr, dict):
            raise TypeError(f"the header is a JSON {type(hdr).__name__}, not an object")

        def integer(v: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"{what} is {v!r}")
            return v

        def number(v: Any, what: str) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{what} is {v!r}")
            return float(v)

        shape = hdr["shape"]
        if not isinstance(shape, list) or not 2 <= len(shape) <= 15:
            raise ValueError(f"shape is {shape!r}")
        self.shape = tuple(integer(v, "a shape entry", 0, 1 << 62) for v in shape)
        self.n = integer(hdr["n"], "the frame count", 0, MAX_CLIP_FRAMES)
        if self.n != self.shape[0]:
            raise ValueError(f"{self.n} timestamps for {self.shape[0]} frames")
        digest = hdr["codec_digest"]
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"codec_digest is {digest!r}")
        self.codec_digest = digest
        md = hdr.get("model_digest", "")
        if not isinstance(md, str):
            raise ValueError(f"model_digest is {md!r}")
        self.model_digest = md
        self.ts = self._affine(hdr["ts"], "ts", number)
        self.fi = self._affine(hdr["fi"], "fi", lambda v, w: integer(v, w, -(1 << 62), 1 << 62))
        self.kind = hdr.get("kind", DEFAULT_KIND)
        if not isinstance(self.kind, str):
            raise ValueError(f"kind is {self.kind!r}")
        chunks = hdr.get("chunks")
        if chunks is not None and not isinstance(chunks, list):
            raise ValueError(f"chunks is {chunks!r}")
        self.chunks = None if chunks is None else tuple(integer(c, "a chunk length") for c in chunks)
        rate = hdr.get("rate")
        self.rate = None if rate is None else number(rate, "rate")
        self.levels = integer(hdr["levels"], "the level field width", 1, 8) if version >= _CLIP_VERSION_LEVELS else 8

    @staticmethod
    def _affine(v: Any, what: str, check: Any) -> list | None:
        if v is None:
            return None
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError(f"{what} is {v!r}")
        return [check(v[0], what), check(v[1], what)]


def decode_clip(model: Model, clip: CompressedClip | bytes, *, dequantize: bool = True) -> np.ndarray:
    """Decode a compressed clip with its model (no backbone needed).

    Args:
        model: the :class:`Model` that compressed it (any rate: the clip's recorded rate is used).
        clip: a :class:`CompressedClip` or its bytes.
        dequantize: return float32 ``(k + offsets) * scale`` at the clip's rate (True) or the int32 latents.

    Returns:
        float32 or int32 (T, C', *).

    Raises:
        CodecError: a foreign codec digest, a kind mismatch, or a stream whose shape differs from the header.
    """
    if isinstance(clip, (bytes, bytearray, memoryview)):
        clip = CompressedClip.from_bytes(bytes(clip))
    codec = model.codec
    if clip.codec_digest != codec.digest:
        raise CodecError(f"compressed clip was made by codec {clip.codec_digest[:12]}..., this model's codec is "
                         f"{codec.digest[:12]}...; use the model that compressed it")
    streams = clip.streams
    if len(streams) == 1:
        k = codec.decompress_symbols(streams[0])
    elif not streams:
        if math.prod(clip.shape):
            raise CodecError(f"compressed clip: shape {tuple(clip.shape)} but no stream (damaged clip)")
        k = np.zeros(tuple(clip.shape), np.int32)
    else:
        many = getattr(codec, "decompress_chunks", None)
        parts = many(streams) if callable(many) else [codec.decompress_symbols(s) for s in streams]
        k = np.concatenate(parts, 0)
    if tuple(k.shape) != tuple(clip.shape):
        raise CodecError(f"compressed clip: stream shape {k.shape} differs from the recorded {clip.shape}")
    if not dequantize:
        return k
    if clip.levels is not None:
        n_levels = model.head.config.rate_levels
        if clip.levels.size and int(clip.levels.max()) >= max(1, n_levels):
            raise CodecError(f"compressed clip: per-frame level {int(clip.levels.max())} but the model has "
                             f"{n_levels} rate levels; use the model that compressed it")
        return model.head.decode(k, levels=clip.levels)
    head = model.head if clip.rate == model.head.rate else model.head.at_rate(clip.rate)
    return head.decode(k)


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
            that the backbone's own classifier keeps its top-1 on the decoded features (variable-rate
            factorized heads with a synthesis; the backbone must have a classifier). Clips then record
            their per-frame levels (clip format 3). Excludes ``rate``.
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
        if rate_control is not None and (not callable(getattr(self.backbone, "classify", None)) or has is False):
            raise ConfigError("Extractor: rate_control needs the backbone's classifier (backbone.classify) as the "
                              "teacher; this backbone has none")

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

        ch = choose_levels(self.head, f.to(self.device), self.backbone.classify, self.rate_control)
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
        control; factorized variable-rate models only), stored in the clip (format 3).
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

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

Invariant: the codec's integer tables are stored and never rebuilt on load (decoding is integer-only
and identical on every machine).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from featcomp.errors import CodecError, ConfigError, FeatcompError, ModelFileError
from featcomp.head import CompressibleHead, FrozenHead, HeadConfig

__all__ = [
    "MODEL_FORMAT_VERSION",
    "Model",
    "save_model",
    "load_model",
    "Extractor",
    "CompressedClip",
]

MODEL_FORMAT_VERSION = 1
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

    def model_card(self) -> dict[str, Any]:
        """JSON-safe description a store records next to the features it writes.

        Includes the dequantization ``features = (k + offsets) * scale`` (per latent channel, float32
        values as lists), the codec digest, the model digest, the backbone spec, the sampling, the head
        config and the training summary. A store decodes to float with this card and the codec alone.
        """
        return {
            "kind": "featcomp.model",
            "format_version": MODEL_FORMAT_VERSION,
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
        backbone: the ``BackboneSpec`` (or dict) whose features the head was trained on.
        sampling: the default ``SamplingConfig`` (or dict) for :meth:`Extractor.compress`.
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
    codec_bytes = frozen.codec.to_bytes()
    tensors: dict[str, Tensor] = {f"head.{k}": v for k, v in frozen.state_tensors().items()}
    tensors["codec"] = torch.frombuffer(bytearray(codec_bytes), dtype=torch.uint8).clone()
    if extra is not None:
        sd = extra.state_dict() if isinstance(extra, nn.Module) else extra
        for k, v in sd.items():
            tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    meta: dict[str, Any] = {
        "format_version": MODEL_FORMAT_VERSION,
        "featcomp_version": _version(),
        "head": frozen.config.to_dict(),
        "backbone": _plain(backbone),
        "sampling": _plain(sampling),
        "codec_digest": frozen.codec.digest,
        "training": json.loads(json.dumps(training or {}, default=str)),
        "metadata": json.loads(json.dumps(metadata or {}, default=str)),
    }
    meta["digest"] = _content_digest(meta, tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    tmp.replace(path)
    return path


def _version() -> str:
    from featcomp import __version__

    return __version__


def _restore_config(kind: str, d: Any) -> Any:
    if d is None:
        return None
    try:
        if kind == "backbone":
            from featcomp.backbones import BackboneSpec

            return BackboneSpec.from_dict(d)
        if kind == "sampling":
            from featcomp.video import SamplingConfig

            return SamplingConfig.from_dict(d)
    except (ImportError, AttributeError, FeatcompError, TypeError):
        return d
    return d


def load_model(path: str | Path) -> Model:
    """Load a model file written by :func:`save_model`.

    Raises:
        ModelFileError: missing or unreadable file, not a featcomp model, another format version, a codec
            digest mismatch, or a content digest mismatch (the file was modified).
    """
    from safetensors import safe_open

    from featcomp.entropy import EntropyCodec

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get(_META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except ModelFileError:
        raise
    except Exception as e:  # safetensors raises its own error types
        raise ModelFileError(f"model file {path}: not a readable safetensors file ({e})") from None
    if raw_meta is None:
        raise ModelFileError(f"model file {path}: no featcomp metadata; was it written by featcomp.save_model?")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError as e:
        raise ModelFileError(f"model file {path}: corrupt metadata JSON ({e})") from None
    version = meta.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"model file {path}: format version {version!r}, this featcomp reads version {MODEL_FORMAT_VERSION}; "
            "use the featcomp release that wrote it, or re-save the model"
        )
    digest = _content_digest(meta, tensors)
    if digest != meta.get("digest"):
        raise ModelFileError(f"model file {path}: digest mismatch (stored {str(meta.get('digest'))[:16]}..., "
                             f"computed {digest[:16]}...); the file is corrupt or was modified")
    if "codec" not in tensors:
        raise ModelFileError(f"model file {path}: missing the codec tensor")
    try:
        codec = EntropyCodec.from_bytes(tensors["codec"].numpy().tobytes())
    except CodecError as e:
        raise ModelFileError(f"model file {path}: the codec cannot be read ({e})") from None
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
_CLIP_VERSION = 1


def _affine(a: np.ndarray, rtol: float = 0.0) -> tuple[float, float] | None:
    """(start, step) if ``a`` equals ``start + step * arange(n)`` exactly in float64, else None."""
    if a.size < 2:
        return (float(a[0]) if a.size else 0.0, 0.0)
    start, step = float(a[0]), float(a[1] - a[0])
    if np.array_equal(start + step * np.arange(a.size, dtype=np.float64), a.astype(np.float64)):
        return start, step
    return None


@dataclasses.dataclass(frozen=True)
class CompressedClip:
    """One clip's features as one entropy-coded stream.

    Attributes:
        data: the codec stream of int latents of shape ``shape`` (``codec.compress_symbols``).
        shape: (T, C', *) latent shape.
        timestamps: float64 (T,) seconds of each frame.
        frame_indices: int64 (T,) frame numbers in the video.
        codec_digest: sha256 hex of the codec that made ``data`` (decoding checks it).
        model_digest: digest of the model file, or "".
    """

    data: bytes
    shape: tuple[int, ...]
    timestamps: np.ndarray
    frame_indices: np.ndarray
    codec_digest: str
    model_digest: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.shape[0])

    @property
    def bits_per_frame(self) -> float:
        """Size of the feature stream (header and ANS flush included) in bits per frame."""
        return 8.0 * len(self.data) / max(1, self.num_frames)

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
        h = json.dumps(hdr, separators=(",", ":")).encode()
        return _CLIP_MAGIC + struct.pack("<BI", _CLIP_VERSION, len(h)) + h + side + self.data

    @classmethod
    def from_bytes(cls, b: bytes) -> CompressedClip:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on a foreign or truncated blob."""
        b = bytes(b)
        if len(b) < 9 or b[:4] != _CLIP_MAGIC:
            raise CodecError("not a featcomp compressed clip (bad magic)")
        version, hl = struct.unpack_from("<BI", b, 4)
        if version != _CLIP_VERSION:
            raise CodecError(f"compressed clip format version {version}, this featcomp reads {_CLIP_VERSION}")
        pos = 9
        try:
            hdr = json.loads(b[pos:pos + hl])
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CodecError("compressed clip: corrupt or truncated header") from None
        pos += hl
        n = int(hdr["n"])
        if hdr["ts"] is not None:
            ts = hdr["ts"][0] + hdr["ts"][1] * np.arange(n, dtype=np.float64)
        else:
            if len(b) < pos + 8 * n:
                raise CodecError("compressed clip: truncated timestamps")
            ts = np.frombuffer(b, "<f8", count=n, offset=pos).astype(np.float64)
            pos += 8 * n
        if hdr["fi"] is not None:
            fi = hdr["fi"][0] + hdr["fi"][1] * np.arange(n, dtype=np.int64)
        else:
            if len(b) < pos + 8 * n:
                raise CodecError("compressed clip: truncated frame indices")
            fi = np.frombuffer(b, "<i8", count=n, offset=pos).astype(np.int64)
            pos += 8 * n
        return cls(data=b[pos:], shape=tuple(int(s) for s in hdr["shape"]), timestamps=ts, frame_indices=fi,
                   codec_digest=hdr["codec_digest"], model_digest=hdr.get("model_digest", ""))


# --------------------------------------------------------------------------------------------------
# the extractor


class Extractor:
    """Frames or a video -> backbone -> frozen head -> integer latents / one compressed stream.

    Args:
        model_or_path: a :class:`Model` or a model file path.
        device: torch device for the backbone and the head (``"cpu"``, ``"cuda"``).
        batch_size: frames per backbone call.
        dtype: autocast dtype for the backbone on CUDA (e.g. ``torch.bfloat16``), or None for float32.
            The head always runs in float32.
        backbone: an already-built backbone module (``preprocess`` + ``forward``) to use instead of
            building ``model.backbone`` (tests, custom modules).
        sampling: overrides the model's default sampling for :meth:`compress`.
    """

    def __init__(self, model_or_path: Model | str | Path, *, device: str | torch.device = "cpu", batch_size: int = 64,
                 dtype: torch.dtype | None = None, backbone: nn.Module | None = None, sampling: Any = None) -> None:
        self.model = model_or_path if isinstance(model_or_path, Model) else load_model(model_or_path)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.dtype = dtype
        if backbone is None:
            if self.model.backbone is None:
                raise ModelFileError("Extractor: the model has no backbone spec; pass backbone=")
            from featcomp.backbones import build_backbone

            backbone = build_backbone(self.model.backbone)
        self.backbone = backbone.to(self.device).eval()
        self.head = self.model.head.to(self.device)
        self.sampling = sampling if sampling is not None else self.model.sampling

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
        n = len(frames)
        if n == 0:
            return np.zeros((0, self.model.latent_channels), np.int32)
        outs = [self.head.encode(self.features(frames[i:i + self.batch_size])) for i in range(0, n, self.batch_size)]
        return np.concatenate(outs, 0).astype(np.int32, copy=False)

    def iter_latents(self, video_path: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (latents int32 (n, C', *), timestamps float64 (n,), frame indices int64 (n,)) per batch."""
        from featcomp.video import SamplingConfig, sample_frames

        sampling = self.sampling
        if sampling is None:
            raise ConfigError("Extractor.compress: no sampling config (none in the model; pass sampling=)")
        if isinstance(sampling, dict):
            sampling = SamplingConfig.from_dict(sampling)
        for batch in sample_frames(str(video_path), sampling):
            yield self.encode_frames(batch.frames), np.asarray(batch.timestamps), np.asarray(batch.indices)

    def compress(self, video_path: str | Path) -> CompressedClip:
        """Decode, sample, extract and code a whole clip as **one** stream (framing amortized over frames).

        Raises:
            VideoError: the video cannot be decoded; CodecError/ConfigError as documented.
        """
        ks, ts, fi = [], [], []
        for k, t, i in self.iter_latents(video_path):
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

    def compress_latents(self, k: np.ndarray, timestamps: np.ndarray, frame_indices: np.ndarray | None = None
                         ) -> CompressedClip:
        """int latents (T, C', *) + timestamps (T,) -> :class:`CompressedClip` (one stream)."""
        k = np.asarray(k, np.int32)
        data = self.codec.compress_symbols(k)
        fi = np.arange(len(k), dtype=np.int64) if frame_indices is None else np.asarray(frame_indices, np.int64)
        return CompressedClip(data=data, shape=tuple(k.shape), timestamps=np.asarray(timestamps, np.float64),
                              frame_indices=fi, codec_digest=self.codec.digest, model_digest=self.model.digest)

    def decompress_latents(self, clip: CompressedClip | bytes) -> np.ndarray:
        """-> int32 latents (T, C', *) exactly as :meth:`encode_frames` produced them."""
        if isinstance(clip, (bytes, bytearray, memoryview)):
            clip = CompressedClip.from_bytes(bytes(clip))
        if clip.codec_digest != self.codec.digest:
            raise CodecError(f"compressed clip was made by codec {clip.codec_digest[:12]}..., this model's codec is "
                             f"{self.codec.digest[:12]}...; use the model that compressed it")
        k = self.codec.decompress_symbols(clip.data)
        if tuple(k.shape) != tuple(clip.shape):
            raise CodecError(f"compressed clip: stream shape {k.shape} differs from the recorded {clip.shape}")
        return k

    def decompress(self, clip: CompressedClip | bytes) -> np.ndarray:
        """-> float32 dequantized latents (T, C', *), ``(k + offsets) * scale``."""
        return self.model.head.decode(self.decompress_latents(clip))

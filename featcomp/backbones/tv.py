"""torchvision backbones by name, through torchvision's own model and weights registry (layer 1)."""

from __future__ import annotations

import difflib
import functools
import socket
import urllib.error
from typing import Any

from torch import nn

from featcomp.backbones.core import Backbone, imagenet_preprocess
from featcomp.backbones.spec import BackboneSpec
from featcomp.backbones.weights import cache_path, download_allowed, load_weights_into
from featcomp.errors import BackboneError, WeightsNotFoundError

__all__ = ["torchvision_names", "resolve_weights", "build_torchvision", "default_tap", "HEAD_ATTRS"]

HEAD_ATTRS = ("fc", "classifier", "heads", "head")
_DOWNLOAD_TIMEOUT_S = 60.0


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[frozenset[str], frozenset[str]]:
    """(2D image classification model names, 3D video model names) known to torchvision."""
    import torchvision.models as M

    return frozenset(M.list_models(module=M)), frozenset(M.list_models(module=M.video))


def resolve_weights(name: str, weights: Any) -> Any:
    """The torchvision weights enum member for ``weights`` (None for random init).

    Args:
        name: torchvision model name.
        weights: None, a ``WeightsEnum`` member, ``"DEFAULT"``, a member name (``"IMAGENET1K_V2"``)
            or a full name (``"ResNet50_Weights.IMAGENET1K_V2"``).

    Raises:
        BackboneError: unknown weights for this model (lists the valid ones).
    """
    from torchvision.models import get_model_weights

    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "random")):
        return None
    enum_cls = get_model_weights(name)
    if isinstance(weights, enum_cls):
        return weights
    if not isinstance(weights, str):
        raise BackboneError(f"{name}: weights must be a string, None or a {enum_cls.__name__} member, got {weights!r}")
    member = weights
    if "." in weights:
        cls_name, member = weights.split(".", 1)
        if cls_name != enum_cls.__name__:
            raise BackboneError(f"{name}: weights {weights!r} belong to {cls_name}, not {enum_cls.__name__}")
    if member == "DEFAULT":
        return enum_cls.DEFAULT
    try:
        return enum_cls[member]
    except KeyError:
        valid = ", ".join(["DEFAULT", *(m.name for m in enum_cls)])
        raise BackboneError(f"{name}: unknown weights {weights!r}; valid: {valid}, or None") from None


def _graph_nodes(model: nn.Module) -> list[str]:
    from torchvision.models.feature_extraction import get_graph_node_names

    try:
        _, eval_nodes = get_graph_node_names(model)
    except Exception as e:  # FX tracing failure
        raise BackboneError(f"{type(model).__name__}: cannot trace the model to tap a layer ({e})") from None
    return list(eval_nodes)


def default_tap(model: nn.Module, nodes: list[str]) -> tuple[str, str | None]:
    """The node feeding the model's classifier, and the classifier's attribute name.

    Returns:
        ``(node, head_attr)``: the node just before the classifier's first node in the eval graph,
        and ``"fc"``/``"classifier"``/``"heads"``/``"head"`` (None and the last node when the model
        has no such head).
    """
    for attr in HEAD_ATTRS:
        if isinstance(getattr(model, attr, None), nn.Module):
            for i, node in enumerate(nodes):
                if (node == attr or node.startswith(attr + ".")) and i > 0:
                    return nodes[i - 1], attr
    return nodes[-1], None


def _load_model(spec: BackboneSpec, enum: Any) -> nn.Module:
    from torchvision.models import get_model

    kwargs = dict(spec.model_kwargs)
    if spec.weights_path:
        model = get_model(spec.name, weights=None, **kwargs)
        return load_weights_into(model, spec.weights_path, key_remap=spec.key_remap, submodule=spec.weights_module, strict=spec.strict)
    if enum is None:
        return get_model(spec.name, weights=None, **kwargs)
    path = cache_path(enum.url)
    full = f"{type(enum).__name__}.{enum.name}"
    if not path.is_file() and not download_allowed(spec.download):
        raise WeightsNotFoundError(
            f"{spec.name}: weights {full} are not in the torch cache and downloading is off (download=False "
            f"or FEATCOMP_DOWNLOAD=0): expected {path}. Download {enum.url} to that path (the directory "
            "follows $TORCH_HOME), allow the download, give weights_path=<local file>, or weights=None "
            "for random initialization."
        )
    old = socket.getdefaulttimeout()
    try:
        if not path.is_file():
            socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
        return get_model(spec.name, weights=enum, **kwargs)
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
        raise WeightsNotFoundError(
            f"{spec.name}: weights {full} are not in the torch cache and downloading {enum.url} failed "
            f"({getattr(e, 'reason', e)}); offline? put that file at {path} (the directory follows $TORCH_HOME), "
            "give weights_path=<local file>, or weights=None for random initialization"
        ) from None
    except RuntimeError as e:
        raise BackboneError(f"{spec.name}: the cached weights file {path} does not fit the model ({str(e)[:400]}); delete it") from None
    except (EOFError, OSError, ValueError) as e:
        raise BackboneError(f"{spec.name}: cannot read the cached weights file {path} ({e}); delete it") from None
    finally:
        socket.setdefaulttimeout(old)


def build_torchvision(spec: BackboneSpec) -> Backbone:
    """Build a :class:`Backbone` from a torchvision model name, weights, tap and preprocessing.

    Raises:
        BackboneError: unknown model, weights or layer; weights that do not fit.
        WeightsNotFoundError: weights neither local nor in the cache, and downloading forbidden or failed.
    """
    from torchvision.models import get_model_weights
    from torchvision.models.feature_extraction import create_feature_extractor

    image, video = torchvision_names()
    if spec.name not in image and spec.name not in video:
        raise BackboneError(f"{spec.name!r} is not a torchvision classification or video model")
    is_3d = spec.name in video
    enum = resolve_weights(spec.name, spec.weights)
    model = _load_model(spec, enum).eval()

    pre = enum if enum is not None else get_model_weights(spec.name).DEFAULT
    base = pre.transforms()
    if spec.input_size is not None:
        if is_3d:
            raise BackboneError(f"{spec.name}: input_size is not supported for 3D models; they use {base}")
        transform: Any = imagenet_preprocess(spec.input_size, tuple(base.mean), tuple(base.std))
        short: int | None = spec.input_size
    else:
        transform = base
        short = min(int(s) for s in base.resize_size)

    nodes = _graph_nodes(model)
    tap_default, head_attr = default_tap(model, nodes)
    tap = spec.layer or tap_default
    if tap not in nodes and not any(n.startswith(tap + ".") for n in nodes):  # a module name taps its output
        close = difflib.get_close_matches(tap, nodes, n=5)
        raise BackboneError(
            f"{spec.name}: no layer {tap!r}; close matches: {close or '-'}; all: "
            "torchvision.models.feature_extraction.get_graph_node_names(model)[1]"
        )
    trunk = create_feature_extractor(model, return_nodes={tap: "features"})
    classifier = getattr(model, head_attr) if head_attr and tap == tap_default else None
    reason = None
    if head_attr is None:
        reason = f"{type(model).__name__} has no fc/classifier/heads/head module"
    elif classifier is None:
        reason = f"the tap is {tap!r}; the classifier takes the default pre-classifier tap {tap_default!r} (layer=None)"
    return Backbone(trunk, spec=spec, transform=transform, classifier=classifier, is_3d=is_3d,
                    decode_short_side=short, tap=tap, no_classifier_reason=reason)

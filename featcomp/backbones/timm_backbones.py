"""timm image models by name (layer 1; optional: ``pip install "featcomp[timm]"``).

``build_backbone("timm:convnext_tiny", weights=None)`` builds a timm model and wraps it: preprocessing
from the model's own data config (input size, mean, std), features = its pre-logits
(``forward_head(forward_features(x), pre_logits=True)``, pooled ``(n, C)``) or the feature map
(``pool=False``), and its classifier for the ``distill`` objective and rate control.

Weights: ``weights_path`` (a local state dict, with ``key_remap``), else ``weights=None`` for random
initialization, else timm's pretrained weights (downloaded by timm from its hub; offline that is a
:class:`~featcomp.errors.WeightsNotFoundError`).
"""

from __future__ import annotations

import torch
from torch import nn

from featcomp.backbones.core import Backbone, imagenet_preprocess
from featcomp.backbones.spec import BackboneSpec
from featcomp.backbones.weights import download_allowed, load_weights_into
from featcomp.errors import BackboneError, WeightsNotFoundError

__all__ = ["build_timm", "PREFIX"]

PREFIX = "timm:"


class _PreLogits(nn.Module):
    """A timm model's pooled pre-logits features (or its feature map)."""

    def __init__(self, model: nn.Module, pool: bool) -> None:
        super().__init__()
        self.model = model
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)
        return self.model.forward_head(f, pre_logits=True) if self.pool else f


def build_timm(spec: BackboneSpec) -> Backbone:
    """Build ``spec.name == "timm:<model>"`` (see the module docstring).

    Raises:
        MissingExtraError: timm is not installed. BackboneError: unknown timm model, ``layer`` given,
        weights that do not fit. WeightsNotFoundError: pretrained weights that cannot be fetched.
    """
    try:
        import timm
    except ModuleNotFoundError as e:
        from featcomp.errors import missing_extra

        raise missing_extra(e, f"backbone {spec.name!r}") from None
    name = spec.name[len(PREFIX):]
    if spec.layer is not None:
        raise BackboneError(f"{spec.name}: layer taps are not supported for timm models; use pool=False for the "
                            "feature map (forward_features) or the default pooled pre-logits")
    if not timm.is_model(name):
        raise BackboneError(f"{spec.name}: timm has no model {name!r} (timm.list_models() lists them)")
    pretrained = spec.weights is not None and spec.weights_path is None
    if pretrained and not download_allowed(spec.download):
        raise WeightsNotFoundError(f"{spec.name}: pretrained timm weights need a download, which is off "
                                   "(download=False or FEATCOMP_DOWNLOAD=0); give weights_path or weights=None")
    try:
        model = timm.create_model(name, pretrained=pretrained, **dict(spec.model_kwargs))
    except Exception as e:  # hub/network errors, missing pretrained configs
        if pretrained:
            raise WeightsNotFoundError(f"{spec.name}: timm could not load its pretrained weights "
                                       f"({e.__class__.__name__}: {str(e)[:200]}); offline? give weights_path=<local "
                                       "file> or weights=None") from None
        raise BackboneError(f"{spec.name}: timm.create_model failed ({e.__class__.__name__}: {e})") from None
    if spec.weights_path:
        load_weights_into(model, spec.weights_path, key_remap=spec.key_remap, submodule=spec.weights_module,
                          strict=spec.strict)
    model.eval()
    cfg = timm.data.resolve_model_data_config(model)
    size = int(spec.input_size or cfg["input_size"][-1])
    transform = imagenet_preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]))
    classifier = model.get_classifier() if spec.pool else None
    if isinstance(classifier, nn.Identity) or (classifier is not None and not isinstance(classifier, nn.Module)):
        classifier = None
    reason = None if classifier is not None else (
        "pool=False: the classifier takes pooled pre-logits" if not spec.pool else f"{name} has no classifier")
    return Backbone(_PreLogits(model, spec.pool), spec=spec, transform=transform, classifier=classifier,
                    decode_short_side=size, tap="pre_logits" if spec.pool else "forward_features",
                    no_classifier_reason=reason)

"""``BackboneSpec``: the frozen, JSON-safe description of a backbone (layer 1; no torch import)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from featcomp.config import Config, require

__all__ = ["BackboneSpec", "AMP_MODES"]

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

AMP_MODES = ("auto", "none", "bf16", "fp16")


@dataclasses.dataclass(frozen=True)
class BackboneSpec(Config):
    """What backbone to build and how to run it.

    Attributes:
        name: A registered backbone name (:func:`~featcomp.backbones.register_backbone`) or a
            torchvision classification/video model name (``torchvision.models.list_models()``).
        weights: torchvision weights: ``"DEFAULT"``, a member name (``"IMAGENET1K_V2"``), a full
            name (``"ResNet50_Weights.IMAGENET1K_V2"``), or None for random initialization. With
            ``weights_path`` set it only selects the preprocessing (and None still means the
            architecture's default preprocessing).
        layer: Node name to tap (see ``torchvision.models.feature_extraction.get_graph_node_names``);
            None taps the input of the model's classifier (the pre-classifier features).
        pool: Global-average the tapped output over its spatial (and time) axes -> ``(n, C)``;
            False keeps ``(n, C, h, w)`` (``(n, C, t, h, w)`` for 3D models).
        weights_path: A local state-dict file (``.pt``/``.pth`` or ``.safetensors``) to load instead
            of torchvision's weights.
        key_remap: How the file's keys map onto the model: None (same names), ``"by_position"``
            (the i-th tensor of the file goes to the i-th entry of the target's ``state_dict()``;
            every shape must match), or a dict ``{regex: replacement}`` applied with ``re.sub`` in
            order to every key.
        weights_module: Dotted name of the submodule the file's state dict belongs to (e.g.
            ``"features"``); None for the whole model.
        strict: Require the file to cover every parameter/buffer of the target, and nothing else.
        download: Download torchvision weights that are not in the torch cache, into that cache, as
            torchvision does (the default). ``False``, or the environment variable ``FEATCOMP_DOWNLOAD=0``,
            forbids it: missing weights then fail at once with :class:`~featcomp.errors.WeightsNotFoundError`.
            A download that fails (offline machine) ends in that error too, naming the file and where to put it.
        input_size: Override the weights' preprocessing size: resize the shorter side to this many
            pixels and center-crop a square of it. None keeps the weights' own transforms.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``..., or ``"auto"`` (cuda when available).
        amp: Autocast: ``"auto"`` (bf16 on CUDA, none on CPU), ``"none"``, ``"bf16"``, ``"fp16"`` (CUDA only).
        channels_last: Use the channels-last memory format on CUDA.
        batch_size: Frames (or windows) per forward pass in :func:`featcomp.extract_features`.
        model_kwargs: Extra keyword arguments for ``torchvision.models.get_model`` (e.g. ``num_classes``).
        factory: An import reference ``"package.module:callable"`` that builds a custom backbone anywhere
            the package is importable (Ray workers, the CLI): ``callable(**factory_kwargs)`` returns an
            ``nn.Module`` (wrapped like :func:`~featcomp.backbones.from_module`, ImageNet normalization,
            ``weights_path`` loaded into it with ``key_remap``/``weights_module``/``strict``) or a built
            :class:`~featcomp.backbones.Backbone`. ``name`` is then only a label.
        factory_kwargs: JSON-safe keyword arguments for ``factory`` (the custom backbone's config).
    """

    FORMAT_VERSION = 1

    name: str = "resnet18"
    weights: str | None = "DEFAULT"
    layer: str | None = None
    pool: bool = True
    weights_path: str | None = None
    key_remap: str | dict[str, str] | None = None
    weights_module: str | None = None
    strict: bool = True
    download: bool = True
    input_size: int | None = None
    device: str = "cpu"
    amp: str = "auto"
    channels_last: bool = True
    batch_size: int = 32
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    factory: str | None = None
    factory_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        require(isinstance(self.name, str) and bool(self.name), f"BackboneSpec.name must be a non-empty string, got {self.name!r}")
        require(self.weights is None or isinstance(self.weights, str),
                f"BackboneSpec.weights must be a string or None, got {self.weights!r} (pass enums as str(enum))")
        require(self.key_remap is None or self.key_remap == "by_position" or isinstance(self.key_remap, dict),
                f"BackboneSpec.key_remap must be None, 'by_position' or a dict of regex -> replacement, got {self.key_remap!r}")
        require(self.amp in AMP_MODES, f"BackboneSpec.amp must be one of {AMP_MODES}, got {self.amp!r}")
        require(self.factory is None or (isinstance(self.factory, str) and _FACTORY_RE.match(self.factory) is not None),
                f"BackboneSpec.factory must be an import reference 'package.module:callable', got {self.factory!r}")
        require(isinstance(self.factory_kwargs, dict),
                f"BackboneSpec.factory_kwargs must be a dict of JSON values, got {type(self.factory_kwargs).__name__}")
        require(self.batch_size >= 1, f"BackboneSpec.batch_size must be >= 1, got {self.batch_size}")
        require(self.input_size is None or self.input_size >= 8, f"BackboneSpec.input_size must be >= 8, got {self.input_size}")
        require(isinstance(self.device, str) and (self.device in ("cpu", "auto") or self.device.startswith(("cuda", "mps"))),
                f"BackboneSpec.device must be 'cpu', 'cuda[:i]' or 'auto', got {self.device!r}")

"""featcomp: learned compressible CNN features for video.

Implements "End-to-end learning of compressible features" (Singh et al., ICIP 2020,
arXiv:2007.11797): a compressibility head trained jointly with a task objective plus lambda*rate,
with the learned entropy model of Balle et al. 2018 (arXiv:1802.01436), entropy-coded with ANS into
self-describing Zarr stores.

Importing ``featcomp`` is cheap: the public names below are resolved lazily (PEP 562), so that
reading a store never imports torchvision, decord or ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featcomp.errors import (
    BackboneError,
    CodecError,
    ConfigError,
    FeatcompError,
    ModelFileError,
    MissingExtraError,
    PipelineError,
    RegistryError,
    StorageError,
    StoreError,
    TruncatedVideoError,
    VideoError,
    WeightsNotFoundError,
)

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # single clip: decode + backbone
    "Features": "featcomp.features",
    "extract_features": "featcomp.features",
    # head, training, model file
    "CompressibleHead": "featcomp.head",
    "fit_head": "featcomp.train",
    "save_model": "featcomp.model",
    "load_model": "featcomp.model",
    "Model": "featcomp.model",
    "Extractor": "featcomp.model",
    "CompressedClip": "featcomp.model",
    "RateControl": "featcomp.ratecontrol",
    # stores
    "StoreWriter": "featcomp.store",
    "open_store": "featcomp.store",
    "verify_store": "featcomp.store",
    "repair_store": "featcomp.store",
    # one-call conveniences
    "compress": "featcomp.api",
    "decompress": "featcomp.api",
    "store_info": "featcomp.store",
}

__all__ = [
    "__version__",
    "FeatcompError",
    "ConfigError",
    "RegistryError",
    "CodecError",
    "VideoError",
    "TruncatedVideoError",
    "BackboneError",
    "WeightsNotFoundError",
    "ModelFileError",
    "StoreError",
    "StorageError",
    "PipelineError",
    "MissingExtraError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featcomp' has no attribute {name!r}")
    try:  # a lazy package (featcomp.model) may import its torch part only on attribute access
        value = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        from featcomp.errors import _EXTRA_OF, missing_extra

        if (e.name or "").split(".")[0] not in _EXTRA_OF:
            raise
        raise missing_extra(e, f"featcomp.{name}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from featcomp.features import Features, extract_features
    from featcomp.head import CompressibleHead
    from featcomp.model import CompressedClip, Extractor, Model, load_model, save_model
    from featcomp.ratecontrol import RateControl
    from featcomp.store import StoreWriter, open_store, verify_store
    from featcomp.train import fit_head
    from featcomp.api import compress, decompress
    from featcomp.store import store_info

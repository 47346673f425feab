"""Learned entropy coding (layer 1): priors, quantization, the bottleneck, frozen codecs, their stream layouts, the coder.

Implements the factorized entropy model of Ballé et al. 2018 ("Variational image compression with
a scale hyperprior", arXiv:1802.01436, appendix 6.1) as used by Singh et al. 2020 ("End-to-end
learning of compressible features", arXiv:2007.11797).

``from featcomp.entropy import EntropyCodec`` imports numpy and constriction only (constriction through
:mod:`featcomp.entropy.ans` alone; docs/architecture.md has the map of the package); the torch parts
(:class:`EntropyBottleneck`, :class:`DeepFactorizedDensity`, :class:`QuantizationMode` and the
quantization functions) are resolved lazily on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featcomp.entropy.codec import EntropyCodec
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.indexed import TableFamily
from featcomp.entropy.kinds import (
    DEFAULT_KIND,
    EntropyKind,
    FrozenCodec,
    codec_from_bytes,
    codec_from_dict,
    codec_kind,
    codec_kinds,
    codec_to_bytes,
    codec_to_dict,
    entropy_kind,
    entropy_kinds,
    get_codec_kind,
    register_codec_kind,
    register_entropy_kind,
    unregister_entropy_kind,
)
from featcomp.entropy.temporal import TemporalCodec

_LAZY: dict[str, str] = {
    "EntropyBottleneck": "featcomp.entropy.bottleneck",
    "DeepFactorizedDensity": "featcomp.entropy.prior",
    "QuantizationMode": "featcomp.entropy.quantization",
    "quantize": "featcomp.entropy.quantization",
    "TemporalPrior": "featcomp.entropy.temporal_prior",
    "fit_temporal_head": "featcomp.entropy.temporal_prior",
    "HyperpriorPrior": "featcomp.entropy.hyperprior_prior",
}

__all__ = [
    "EntropyCodec", "HyperpriorCodec", "TableFamily", "TemporalCodec", "FrozenCodec", "codec_from_dict", "codec_kind",
    "codec_from_bytes", "codec_to_bytes", "codec_to_dict",
    "codec_kinds", "get_codec_kind", "register_codec_kind", "DEFAULT_KIND", "EntropyKind", "entropy_kind",
    "entropy_kinds", "register_entropy_kind", "unregister_entropy_kind", *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featcomp.entropy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from featcomp.entropy.bottleneck import EntropyBottleneck
    from featcomp.entropy.prior import DeepFactorizedDensity
    from featcomp.entropy.quantization import QuantizationMode, quantize

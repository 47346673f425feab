"""The model file, compressed clips and the single-clip extractor (layer 2), one module per artifact:

- :mod:`featcomp.model.file`: :class:`Model`, :func:`save_model`, :func:`load_model` (the format below);
- :mod:`featcomp.model.clip`: :class:`CompressedClip` (the ``.fcc`` container) and :func:`decode_clip`
  (numpy only: no torch);
- :mod:`featcomp.model.extractor`: :class:`Extractor` (backbone + frozen head, torch).

Every name stays importable from ``featcomp.model``.

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

**Format versions.** Version 1 (a factorized, fixed-rate head) holds the codec as the ``codec`` uint8
tensor (``EntropyCodec.to_bytes()``). Version 2 is written for any other head: a conditional entropy
model (``head.entropy_model`` = ``"temporal"`` or ``"hyperprior"``) or a variable-rate head. Its JSON
carries ``codec`` = ``codec.to_dict()`` (with ``kind``; rebuilt by
:func:`featcomp.entropy.codec_from_dict`), ``entropy_model`` (the kind) and ``rate`` (``{"lams": [...],
"levels": L}`` or null); the head's ``log_gains`` (L, C') tensor holds the per-level gains. Factorized
fixed-rate heads are still written as version 1 byte for byte, so older featcomp releases read them;
:func:`load_model` reads both versions.

Invariant: the codec's integer tables are stored and never rebuilt on load (decoding is integer-only
and identical on every machine).
"""

import importlib
from typing import TYPE_CHECKING, Any

from featcomp.model.clip import DEFAULT_TEMPORAL_CHUNK, MAX_CLIP_FRAMES, CompressedClip, decode_clip

# the model file and the extractor import torch: resolved on first access (PEP 562), so that
# ``from featcomp.model import CompressedClip`` stays numpy-only
_LAZY = {
    "MODEL_FORMAT_VERSION": "featcomp.model.file",
    "READ_FORMAT_VERSIONS": "featcomp.model.file",
    "Model": "featcomp.model.file",
    "backbone_spec_dict": "featcomp.model.file",
    "load_model": "featcomp.model.file",
    "sampling_dict": "featcomp.model.file",
    "save_model": "featcomp.model.file",
    "Extractor": "featcomp.model.extractor",
}

__all__ = [
    "MODEL_FORMAT_VERSION",
    "READ_FORMAT_VERSIONS",
    "Model",
    "decode_clip",
    "save_model",
    "load_model",
    "backbone_spec_dict",
    "sampling_dict",
    "Extractor",
    "CompressedClip",
    "DEFAULT_TEMPORAL_CHUNK",
    "MAX_CLIP_FRAMES",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featcomp.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # pragma: no cover
    from featcomp.model.extractor import Extractor
    from featcomp.model.file import (
        MODEL_FORMAT_VERSION,
        READ_FORMAT_VERSIONS,
        Model,
        backbone_spec_dict,
        load_model,
        sampling_dict,
        save_model,
    )

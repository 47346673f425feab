"""Ray jobs that drive featcomp at scale (layer 4).

Thin adapters: every stage calls featcomp's public API.
Run ``python -m featcomp.pipelines.extract --help`` (or ``featcomp extract --help``) and
``python -m featcomp.pipelines.demo``. This is the only part of featcomp that imports ray; ``import
featcomp`` and reading a store never import it (``featcomp extract`` loads it when that command runs).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it, imported on first access (PEP 562): ``import featcomp.pipelines``
# stays free of ray; ``run_extract`` / ``init_ray`` import it when called.
_LAZY: dict[str, str] = {
    **dict.fromkeys(["ExtractConfig", "RayConfig"], "featcomp.pipelines.config"),
    **dict.fromkeys(["init_ray", "run_extract"], "featcomp.pipelines.extract"),
    **dict.fromkeys(["demo_backbone", "synthesize_clips"], "featcomp.pipelines.demo"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featcomp.pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ExtractConfig", "RayConfig", "demo_backbone", "init_ray", "run_extract", "synthesize_clips"]

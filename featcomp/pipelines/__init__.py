"""Ray jobs that drive featcomp at scale (layer 4).

Thin adapters: every stage calls featcomp's public API.
Run ``python -m featcomp.pipelines.extract --help`` (or ``featcomp extract --help``) and
``python -m featcomp.pipelines.demo``. This is the only part of featcomp that imports ray; ``import
featcomp`` and reading a store never import it (``featcomp extract`` loads it when that command runs).
"""

"""Ray jobs that drive featcomp at scale (layer 4).

Thin adapters: every stage calls featcomp's public API, and ``featcomp`` itself never imports ray.
Run ``python -m pipelines.extract --help`` (or ``featcomp extract --help``) and ``python -m pipelines.demo``.
"""

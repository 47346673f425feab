"""Sample frozen codecs and symbol arrays for the contract suite (tests/entropy/test_contract.py).

The contract suite runs over every registered entropy-model kind (:func:`featcomp.entropy.kinds.entropy_kinds`)
and every stream layout its codec class reads and writes (``_READ_VERSIONS``, else ``_VERSION``). A kind
needs exactly one thing here: a *sample maker* in :data:`SAMPLE_MAKERS`, ``maker(version, channels) ->
codec``, returning a small frozen codec of that layout with non-trivial (seeded) parameters. A plugin kind
adds its maker with :func:`add_sample_maker` (e.g. from its own ``conftest.py``); a registered kind
without one fails the contract suite with a message saying so (it is never skipped).

The symbol shapes follow the kind's registered input ``layout``: ``"vectors"`` (N, C, *),
``"clips"`` (T, C, *) with axis 0 in time order, ``"maps"`` (N, C, H, W).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from featcomp.entropy import EntropyCodec
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.entropy.kinds import entropy_kind
from featcomp.entropy.temporal import TemporalCodec

I32 = np.iinfo(np.int32)
CHANNELS = 5


def _factorized(version: int, C: int) -> EntropyCodec:
    rng = np.random.default_rng(100 + C)
    scales = np.linspace(0.3, 6.0, C)[None, :]
    return EntropyCodec.fit(np.round(rng.laplace(size=(400, C)) * scales).astype(np.int32))


def _temporal(version: int, C: int) -> TemporalCodec:
    rng = np.random.default_rng(200 + C)
    F = 12
    fam = TableFamily.build(scale_grid(0.1, 40.0, 40), Q=4, radius=40)
    w_loc = np.round(0.8 * np.eye(C) * 2**F).astype(np.int32) + rng.integers(-200, 200, (C, C)).astype(np.int32)
    w_scale = np.diag(np.full(C, 3000)).astype(np.int32)
    return TemporalCodec(np.zeros(C, np.float32), fam, w_loc, np.zeros(C, np.int64), w_scale,
                         np.full(C, 6 << F, np.int64), rng.integers(-8, 8, C), np.full(C, 12, np.int32),
                         frac_bits=F, version=version)


def _hyperprior(version: int, C: int) -> HyperpriorCodec:
    rng = np.random.default_rng(300 + C)
    Cz = 3
    zc = EntropyCodec.fit(rng.integers(-4, 5, (300, Cz)).astype(np.int32))
    fam = TableFamily.build(scale_grid(0.11, 48.0, 32), Q=1, radius=24)
    A = rng.integers(-3000, 3000, (Cz, C)).astype(np.int32)
    B = rng.integers(-2000, 6000, (C, Cz)).astype(np.int32)
    codec = HyperpriorCodec(rng.normal(0, 0.2, C).astype(np.float32), zc, fam, A,
                            rng.integers(-5 << 20, 5 << 20, Cz), B, np.full(C, 10 << 12, np.int64), pool=2,
                            version=min(version, 2))
    if version == 3:  # layout 3 = a version-2 codec with a factorized fallback for y
        codec = codec.with_fallback(_factorized(1, C))
    return codec


SAMPLE_MAKERS: dict[str, Callable[[int, int], object]] = {
    "factorized": _factorized, "temporal": _temporal, "hyperprior": _hyperprior,
}


def add_sample_maker(kind: str, maker: Callable[[int, int], object]) -> None:
    """Give a (plugin) kind its sample maker for the contract suite."""
    SAMPLE_MAKERS[kind] = maker


def layouts_of(kind: str) -> tuple[int, ...]:
    """The stream layouts (codec versions) the kind's codec class reads and writes."""
    cls = entropy_kind(kind).codec
    return tuple(int(v) for v in getattr(cls, "_READ_VERSIONS", (getattr(cls, "_VERSION", 1),)))


def layout_of(codec) -> int:
    """The stream layout a codec writes (its ``version``; the class version for a codec without one)."""
    return int(getattr(codec, "version", getattr(type(codec), "_VERSION", 1)))


def sample_codec(kind: str, version: int, C: int = CHANNELS):
    """A sample codec of ``kind`` writing layout ``version``; fails (never skips) without a maker."""
    maker = SAMPLE_MAKERS.get(kind)
    assert maker is not None, (f"entropy kind {kind!r} has no contract sample: add a maker with "
                               "tests.entropy.kind_samples.add_sample_maker(kind, maker)")
    codec = maker(version, C)
    assert layout_of(codec) == version, f"the {kind!r} sample maker ignored version {version}"
    return codec


def shapes(kind: str, C: int = CHANNELS, n: int = 4) -> list[tuple[int, ...]]:
    """Symbol shapes that exercise the kind's input layout (n examples / frames on axis 0)."""
    layout = entropy_kind(kind).layout
    if layout == "maps":
        return [(n, C, 5, 3), (n, C, 1, 1), (n, C, 6, 4)]
    if layout == "clips":
        return [(n + 5, C), (n + 2, C, 2, 3), (1, C, 7)]
    return [(n * 10, C), (n, C, 3), (n, C, 2, 2)]


def random_symbols(rng: np.random.Generator, shape, sigma: float = 3.0) -> np.ndarray:
    return np.round(rng.laplace(0, sigma, shape)).astype(np.int32)


def edge_inputs(kind: str, rng: np.random.Generator, C: int = CHANNELS) -> dict[str, np.ndarray]:
    """Named edge-case symbol arrays: zeros, int32 extremes, escapes among typical values, empty."""
    shape = shapes(kind, C)[1]
    zero_n = (0,) + shape[1:]
    esc = random_symbols(rng, shape)
    flat = esc.reshape(-1)
    far = [I32.max, I32.min, 10**6, -(10**6), 2**30 + 7, 41, -41]
    flat[rng.choice(flat.size, len(far), replace=False)] = far
    mixed = np.where(rng.random(shape) < 0.5, I32.max, I32.min).astype(np.int32)
    return {
        "zeros": np.zeros(shape, np.int32),
        "max": np.full(shape, I32.max, np.int32),
        "min": np.full(shape, I32.min, np.int32),
        "extremes": mixed,
        "escapes": esc,
        "empty": np.zeros(zero_n, np.int32),
        "one": random_symbols(rng, (1,) + shape[1:]),
    }

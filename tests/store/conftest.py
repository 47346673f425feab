"""Fixtures for the store tests: a codec fitted on synthetic Laplacian latents (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp.entropy import EntropyCodec

C = 16


def laplace_latents(rng: np.random.Generator, t: int, c: int = C, scale: float = 1.2) -> np.ndarray:
    """int32 (t, c) small Laplacian integers, the kind a trained head emits."""
    return np.rint(rng.laplace(0.0, scale, size=(t, c))).astype(np.int32)


@pytest.fixture(scope="session")
def codec() -> EntropyCodec:
    rng = np.random.default_rng(1234)
    offsets = np.linspace(-0.25, 0.25, C).astype(np.float32)
    return EntropyCodec.fit(laplace_latents(rng, 4000), offsets=offsets)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


class FakeModel:
    """Duck-typed stand-in for featcomp.model.Model: .codec and .model_card()."""

    def __init__(self, codec: EntropyCodec, scale: np.ndarray) -> None:
        self.codec = codec
        self._scale = scale

    def model_card(self) -> dict:
        return {
            "backbone": {"name": "resnet18", "weights": "IMAGENET1K_V1", "layer": "avgpool"},
            "head": {"kind": "linear", "channels": int(self.codec.channels)},
            "sampling": {"mode": "fps", "fps": 5.0},
            "dequantization": {"scale": self._scale.tolist()},
        }

"""Non-learned baselines for storing features, measured in the same units as the learned head.

Every baseline is fitted on training features only and then turns a block of N feature vectors into
**one byte string**; its size is reported from those bytes (``8 * len(data) / N`` bits per example),
never from a formula. Side information fitted once on the training set (per-channel ranges, PCA
bases, entropy-coding tables) belongs to the "model", like the learned head's codec, and is not
counted per example. Registered names (``register_baseline``/``get_baseline``):

* ``float32``: raw little-endian float32 (32 bits per channel).
* ``float16_zstd``: float16, then zstd (level 19 by default).
* ``int8_zstd``: per-channel uniform 8-bit quantization between the training set's per-channel
  min and max, channel-major bytes, then zstd.
* ``pca8``: the YouTube-8M recipe (Abu-El-Haija et al., arXiv:1609.08675): PCA to ``dims`` dims,
  whitening, clipping to [-2, 2] and 8-bit uniform quantization (8 bits per dim, no entropy coding).
* ``pca_ec``: PCA to ``dims`` dims, uniform scalar quantization with step ``step`` (in units of the
  first component's standard deviation), entropy-coded with :class:`featcomp.entropy.EntropyCodec`
  fitted on the training set's symbols; the whole block is one stream.

``decode`` returns the representation that downstream models see: the C channels for the first
three, the ``dims`` PCA coefficients (dequantized) for the PCA baselines (a linear probe on them is
equivalent to one on the back-projected features).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from featcomp.errors import CodecError, ConfigError
from featcomp.registry import Registry

__all__ = [
    "Baseline",
    "Float32Baseline",
    "Float16ZstdBaseline",
    "Int8ZstdBaseline",
    "PCA8Baseline",
    "PCAEntropyBaseline",
    "register_baseline",
    "get_baseline",
    "baseline_names",
    "fit_pca",
]

_BASELINES: Registry[Callable[..., "Baseline"]] = Registry("baseline")


def register_baseline(name: str, factory: Callable[..., Baseline] | None = None, *, overwrite: bool = False):
    """Register a baseline class/factory ``factory(**options) -> Baseline`` (usable as a decorator)."""
    return _BASELINES.register(name, factory, overwrite=overwrite)


def get_baseline(name: str) -> Callable[..., Baseline]:
    """The baseline factory registered under ``name`` (``RegistryError`` if unknown)."""
    return _BASELINES.get(name)


def baseline_names() -> list[str]:
    return _BASELINES.names()


def _zstd():
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - zstandard is in the test/bench extras
        raise ConfigError("the float16_zstd and int8_zstd baselines need `pip install zstandard`") from e
    return zstandard


def _check2d(x: Any, c: int | None, who: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or (c is not None and x.shape[1] != c):
        raise ConfigError(f"baseline {who}: expected features (N, {c or 'C'}), got shape {x.shape}")
    return x


class Baseline:
    """Base class: ``fit(train) -> self``, ``encode(x) -> bytes``, ``decode(bytes) -> float32``.

    Attributes:
        name: registry name; ``label``: a human-readable description with its settings.
    """

    name = "baseline"

    def __init__(self) -> None:
        self.channels: int | None = None

    @property
    def label(self) -> str:
        return self.name

    def fit(self, train: np.ndarray) -> Baseline:
        """Fit side information on training features (N, C) float."""
        self.channels = _check2d(train, None, self.name).shape[1]
        return self

    def encode(self, x: np.ndarray) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def bits_per_example(self, data: bytes, n: int) -> float:
        """Bits per example of an encoded block of ``n`` examples, from its size in bytes."""
        return 8.0 * len(data) / n


class Float32Baseline(Baseline):
    """Raw float32 (40,960 bits for 1280 channels)."""

    name = "float32"

    def encode(self, x):
        return _check2d(x, self.channels, self.name).astype("<f4").tobytes()

    def decode(self, data):
        return np.frombuffer(data, "<f4").reshape(-1, self.channels).astype(np.float32)


class Float16ZstdBaseline(Baseline):
    """float16 then zstd at ``level``."""

    name = "float16_zstd"

    def __init__(self, level: int = 19) -> None:
        super().__init__()
        self.level = int(level)

    @property
    def label(self):
        return f"float16 + zstd-{self.level}"

    def encode(self, x):
        raw = _check2d(x, self.channels, self.name).astype("<f2").tobytes()
        return _zstd().ZstdCompressor(level=self.level).compress(raw)

    def decode(self, data):
        raw = _zstd().ZstdDecompressor().decompress(data)
        return np.frombuffer(raw, "<f2").reshape(-1, self.channels).astype(np.float32)


class Int8ZstdBaseline(Baseline):
    """Per-channel 8-bit uniform quantization over the training range, channel-major, then zstd."""

    name = "int8_zstd"

    def __init__(self, level: int = 19) -> None:
        super().__init__()
        self.level = int(level)

    @property
    def label(self):
        return f"per-channel 8-bit + zstd-{self.level}"

    def fit(self, train):
        super().fit(train)
        t = np.asarray(train, np.float32)
        self.lo = t.min(0)
        self.step = np.maximum(t.max(0) - self.lo, 1e-12) / 255.0
        return self

    def encode(self, x):
        x = _check2d(x, self.channels, self.name)
        q = np.clip(np.rint((x - self.lo) / self.step), 0, 255).astype(np.uint8)
        return _zstd().ZstdCompressor(level=self.level).compress(np.ascontiguousarray(q.T).tobytes())

    def decode(self, data):
        raw = _zstd().ZstdDecompressor().decompress(data)
        q = np.frombuffer(raw, np.uint8).reshape(self.channels, -1).T
        return (q.astype(np.float32) * self.step + self.lo).astype(np.float32)


def fit_pca(train: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of (N, C) features: returns (mean (C,), basis (C, dims), std of each component (dims,))."""
    x = np.asarray(train, np.float64)
    mean = x.mean(0)
    cov = np.cov(x - mean, rowvar=False)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:dims]
    return mean.astype(np.float32), v[:, order].astype(np.float32), np.sqrt(np.maximum(w[order], 1e-12)).astype(np.float32)


class PCA8Baseline(Baseline):
    """YouTube-8M recipe: PCA to ``dims``, whitening, clip to [-clip, clip], 8 bits per coefficient."""

    name = "pca8"

    def __init__(self, dims: int = 256, clip: float = 2.0) -> None:
        super().__init__()
        self.dims = int(dims)
        self.clip = float(clip)

    @property
    def label(self):
        return f"PCA-{self.dims} -> 8-bit"

    def fit(self, train):
        super().fit(train)
        if self.dims > self.channels:
            raise ConfigError(f"pca8: dims={self.dims} > channels={self.channels}")
        self.mean, self.basis, self.std = fit_pca(train, self.dims)
        return self

    def _project(self, x):
        return ((_check2d(x, self.channels, self.name) - self.mean) @ self.basis) / self.std

    def encode(self, x):
        z = self._project(x)
        q = np.clip(np.rint((z + self.clip) / (2 * self.clip) * 255), 0, 255).astype(np.uint8)
        return q.tobytes()

    def decode(self, data):
        q = np.frombuffer(data, np.uint8).reshape(-1, self.dims)
        return (q.astype(np.float32) / 255 * (2 * self.clip) - self.clip).astype(np.float32)


class PCAEntropyBaseline(Baseline):
    """PCA to ``dims``, uniform quantization (step ``step`` x the first component's std), EntropyCodec.

    The codec's tables come from :meth:`featcomp.entropy.EntropyCodec.fit` on the training symbols;
    ``encode`` codes the whole block as one stream (``compress_symbols``), so framing is amortized.
    """

    name = "pca_ec"

    def __init__(self, dims: int = 128, step: float = 0.25, precision: int = 16) -> None:
        super().__init__()
        self.dims = int(dims)
        self.step_rel = float(step)
        self.precision = int(precision)

    @property
    def label(self):
        return f"PCA-{self.dims} + uniform q (step {self.step_rel:g}) + ANS"

    def fit(self, train):
        super().fit(train)
        from featcomp.entropy import EntropyCodec

        self.mean, self.basis, self.std = fit_pca(train, self.dims)
        self.step = float(self.std[0] * self.step_rel)
        k = self._quantize(train)
        self.codec = EntropyCodec.fit(k, precision=self.precision)
        return self

    def _quantize(self, x):
        z = (_check2d(x, self.channels, self.name) - self.mean) @ self.basis
        return np.rint(z / self.step).astype(np.int32)

    def encode(self, x):
        return self.codec.compress_symbols(self._quantize(x))

    def decode(self, data):
        k = self.codec.decompress_symbols(data)
        if k.ndim != 2 or k.shape[1] != self.dims:
            raise CodecError(f"pca_ec: decoded symbols have shape {k.shape}, expected (N, {self.dims})")
        return (k.astype(np.float32) * self.step).astype(np.float32)


register_baseline("float32", Float32Baseline)
register_baseline("float16_zstd", Float16ZstdBaseline)
register_baseline("int8_zstd", Int8ZstdBaseline)
register_baseline("pca8", PCA8Baseline)
register_baseline("pca_ec", PCAEntropyBaseline)

"""Baselines report sizes that match the bytes they produce, and decode to what they encoded."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp.errors import RegistryError
from featcomp.train.baselines import baseline_names, get_baseline
from featcomp.train.probe import probe_accuracy


def _feats(n, c=48, seed=0):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(12, c))
    return np.maximum(rng.normal(size=(n, 12)) @ basis, 0).astype(np.float32)


@pytest.mark.parametrize("name", ["float32", "float16_zstd", "int8_zstd", "pca8", "pca_ec"])
def test_sizes_match_bytes_and_decode(name):
    train, test = _feats(1000), _feats(300, seed=1)
    opts = {"dims": 12} if name.startswith("pca") else {}
    b = get_baseline(name)(**opts).fit(train)
    data = b.encode(test)
    assert isinstance(data, bytes)
    assert b.bits_per_example(data, len(test)) == 8 * len(data) / len(test)
    dec = b.decode(data)
    assert dec.dtype == np.float32 and len(dec) == len(test)
    if name == "float32":
        np.testing.assert_array_equal(dec, test)
        assert len(data) * 8 == 32 * test.size
    elif name == "float16_zstd":
        np.testing.assert_array_equal(dec, test.astype(np.float16).astype(np.float32))
        assert len(data) < 2 * test.size  # zstd removes the ReLU zeros
    elif name == "int8_zstd":
        err = np.abs(dec - np.clip(test, b.lo, b.lo + 255 * b.step)).max(0)
        assert np.all(err <= b.step / 2 + 1e-5)
    elif name == "pca8":
        assert len(data) == 12 * len(test)
    else:  # pca_ec: the decoded coefficients are exactly the quantized projections
        np.testing.assert_array_equal(np.rint(dec / b.step).astype(np.int32), b._quantize(test))
        assert len(data) < 12 * len(test)  # entropy coding beats 8 bits per coefficient here


def test_registry_and_probe():
    assert {"float32", "float16_zstd", "int8_zstd", "pca8", "pca_ec"} <= set(baseline_names())
    with pytest.raises(RegistryError):
        get_baseline("gzip")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    assert probe_accuracy(x[:300], y[:300], x[300:], y[300:]) > 0.9

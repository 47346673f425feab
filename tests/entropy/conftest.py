"""Fixtures for the entropy tests: one torch thread (the CI machine has 2 shared cores)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def laplace_symbols(rng: np.random.Generator, n: int, c: int, trailing: tuple[int, ...] = ()) -> np.ndarray:
    """Integer Laplacian-like symbols (n, c, *trailing) with per-channel scales 0.3..6."""
    scales = np.linspace(0.3, 6.0, c).reshape((1, c) + (1,) * len(trailing))
    return np.round(rng.laplace(size=(n, c) + trailing) * scales).astype(np.int32)


def assert_flips_and_cuts_refused(codec, data: bytes, rng: np.random.Generator) -> None:
    """12 single-bit flips at distinct positions and three truncations of a framed stream each raise
    :class:`~featcomp.errors.CodecError` (the stream's CRC and length checks)."""
    from featcomp.errors import CodecError

    for pos in rng.choice(len(data), 12, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        with pytest.raises(CodecError):
            codec.decompress_symbols(bytes(bad))
    for cut in (1, 4, len(data) // 2):
        with pytest.raises(CodecError):
            codec.decompress_symbols(data[:-cut])


def forged_streams_refused(codec, shape, payloads, k) -> list[bytes]:
    """Frame each payload (cut to whole words) as a valid stream of ``shape`` for ``codec`` and decode it:
    each must raise a "corrupt stream" :class:`~featcomp.errors.CodecError` or decode to something other
    than ``k``. Returns the refused streams."""
    from featcomp.entropy import bitstream
    from featcomp.errors import CodecError

    refused = []
    for g in payloads:
        forged = bitstream.pack(shape, codec.digest, g[: len(g) // 4 * 4])
        try:
            out = codec.decompress_symbols(forged)
        except CodecError as e:
            assert "corrupt stream" in str(e)
            refused.append(forged)
            continue
        assert not np.array_equal(out, k)  # a forged payload that happens to decode is not the data
    return refused

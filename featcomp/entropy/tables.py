"""Integer frequency tables from float probabilities (numpy only; used when a codec is built, never to decode).

Every frozen codec's tables are integers, each >= 1, each table summing to ``2**precision``; they are made
once, from the floats of a trained density, by :func:`quantize_pmf`, and stored with the codec.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantize_pmf"]


def quantize_pmf(pmf: np.ndarray, lengths: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies (each >= 1, each row summing to ``2**precision``) from float pmfs.

    Every symbol gets one unit; the remaining ``2**precision - L`` units are shared in proportion
    to ``pmf`` (floor), and the few left over go to the largest fractional parts. Vectorized over
    rows; deterministic for identical float input (ties broken by position).

    Args:
        pmf: float64 (C, Lmax) non-negative weights; entries at or beyond ``lengths[c]`` ignored.
        lengths: int (C,) number of valid symbols per row, ``2 <= L <= 2**precision``.
        precision: bits of the tables.

    Returns:
        int64 (C, Lmax) frequencies (zero beyond ``lengths``).
    """
    pmf = np.asarray(pmf, dtype=np.float64)
    C, Lmax = pmf.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    valid = np.arange(Lmax)[None, :] < lengths[:, None]
    p = np.where(valid & np.isfinite(pmf), np.maximum(pmf, 0.0), 0.0)
    total = p.sum(axis=1, keepdims=True)
    # a row with no mass gets a uniform pmf
    p = np.where(total > 0, p / np.where(total > 0, total, 1.0), valid / lengths[:, None])
    free = (1 << precision) - lengths[:, None]
    scaled = p * free
    base = np.floor(scaled)
    freqs = base.astype(np.int64) + valid
    left = (1 << precision) - freqs.sum(axis=1)  # in [0, L]
    frac = np.where(valid, scaled - base, -1.0)
    order = np.argsort(-frac, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(Lmax)[None, :].repeat(C, 0), axis=1)
    freqs += (rank < left[:, None]) & valid
    return freqs

"""How a golden generator run on *this* machine is compared with the files it once wrote.

A generator builds its codec's table family (and any fitted factorized tables) from floats: numpy's
vectorized ``exp`` takes a different SIMD path on a CPU with AVX-512 than on one with AVX2 only, and
its last bit differs. The committed codec files are therefore not reproducible byte for byte on every
machine, and a test must not ask them to be (docs/decisions.md, "Goldens guard formats, not float
builds"). What *is* asserted, on any machine:

- the committed files decode and re-encode byte for byte (in each golden test itself: integers only);
- every integer part of the regenerated codec is the committed one exactly: the regenerated codec
  with its float-built parts swapped for the committed ones serializes to the committed bytes;
- the float-built parts agree to a few ulps (scales) and within one count per entry (frequencies),
  with the same structure;
- the regenerated symbols are the committed symbols (integers);
- when the regenerated integer tables equal the committed ones (as they do on the machines seen so
  far: only the documentation scales differ in their last bit), the regenerated streams carry the
  committed ANS payload byte for byte; in any case they decode to the committed symbols with the
  regenerated codec.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from featcomp.entropy import EntropyCodec, bitstream
from featcomp.entropy.indexed import TableFamily

# the float-built parts of each codec kind (everything else is integer parameters and framing)
FLOAT_BUILT = {"temporal": ("family",), "hyperprior": ("family", "z_codec", "fallback")}


def _same_tables(a, b) -> bool:
    """Whether two float-built parts hold identical integer tables (asserting they are close either way)."""
    if a is None or b is None:
        assert a is None and b is None
        return True
    if isinstance(a, TableFamily):
        assert isinstance(b, TableFamily)
        assert (a.Q, a.radius, a.precision, a.shape, a.levels) == (b.Q, b.radius, b.precision, b.shape, b.levels)
        np.testing.assert_allclose(b.scales, a.scales, rtol=1e-14, atol=0)
        fa, fb = a.freqs.astype(np.int64), b.freqs.astype(np.int64)
        assert fa.shape == fb.shape and np.abs(fa - fb).max() <= 1
        assert (fa != fb).mean() <= 0.01
        return bool((fa == fb).all())  # the scales are documentation only: never used to code
    assert isinstance(a, EntropyCodec) and isinstance(b, EntropyCodec)
    assert a.channels == b.channels
    assert a.precision == b.precision
    np.testing.assert_array_equal(b.offsets, a.offsets)  # float32 offsets are given, not computed
    np.testing.assert_array_equal(b.table_min, a.table_min)
    np.testing.assert_array_equal(b.table_size, a.table_size)
    fa, fb = a.freqs.astype(np.int64), b.freqs.astype(np.int64)
    assert np.abs(fa - fb).max() <= 1 and (fa != fb).mean() <= 0.01
    return a.to_bytes() == b.to_bytes()


def assert_regenerated(committed, regenerated, streams=()) -> None:
    """Check a codec rebuilt by a golden generator against the committed one (see module docstring).

    Args:
        committed: the codec read from the committed file.
        regenerated: the codec the generator builds on this machine.
        streams: ``(symbols, committed_stream, regenerated_stream)`` triples: the regenerated stream must
            decode to the symbols with the regenerated codec, and equal the committed stream whenever the
            float-built tables came out identical.
    """
    assert type(regenerated) is type(committed)
    if isinstance(committed, EntropyCodec):  # a fitted factorized codec is float-built as a whole
        identical = _same_tables(committed, regenerated)
    else:
        fields = FLOAT_BUILT[committed.kind]
        assert regenerated.version == committed.version
        swapped = dataclasses.replace(regenerated, **{f: getattr(committed, f) for f in fields})
        assert swapped.to_bytes() == committed.to_bytes(), "an integer parameter or the framing of the codec changed"
        identical = all(_same_tables(getattr(committed, f), getattr(regenerated, f)) for f in fields)
    for k, committed_stream, regenerated_stream in streams:
        np.testing.assert_array_equal(regenerated.decompress_symbols(regenerated_stream), k)
        assert committed.compress_symbols(k) == committed_stream  # the integer half: exact everywhere
        if identical:  # same integer tables: the same ANS payload (the CRC folds in the codec digest)
            ours = bitstream.unpack(regenerated_stream, regenerated.digest, regenerated.channels)
            theirs = bitstream.unpack(committed_stream, committed.digest, committed.channels)
            assert (ours.version, ours.shape, ours.payload) == (theirs.version, theirs.shape, theirs.payload)

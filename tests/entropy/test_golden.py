"""Golden bitstreams: the committed stream must decode to the committed array, and re-encoding
must give identical bytes (catches any drift in the format, the tables or constriction)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from featcomp.entropy import EntropyCodec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = FIXTURES / "entropy"


def test_golden_stream_decodes_and_reencodes_identically():
    codec = EntropyCodec.from_bytes((GOLDEN / "codec.bin").read_bytes())
    stream = (GOLDEN / "stream.bin").read_bytes()
    expected = np.load(GOLDEN / "symbols.npy")
    assert expected.dtype == np.int32 and expected.shape == (60, 8, 3)
    out = codec.decompress_symbols(stream)
    np.testing.assert_array_equal(out, expected)
    assert codec.compress_symbols(expected) == stream
    assert codec.to_bytes() == (GOLDEN / "codec.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress(stream), expected.astype(np.float32) + codec.offsets[None, :, None])


def test_generator_script_reproduces_the_committed_files():
    spec = importlib.util.spec_from_file_location("make_entropy_golden", FIXTURES / "make_entropy_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    codec, k, stream = mod.make()
    assert codec.to_bytes() == (GOLDEN / "codec.bin").read_bytes()
    assert stream == (GOLDEN / "stream.bin").read_bytes()
    np.testing.assert_array_equal(k, np.load(GOLDEN / "symbols.npy"))

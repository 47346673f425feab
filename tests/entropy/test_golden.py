"""Golden bitstreams: the committed stream must decode to the committed array, and re-encoding
must give identical bytes (catches any drift in the format, the tables or constriction)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from featcomp.entropy import EntropyCodec, bitstream

from .regen import assert_regenerated

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = FIXTURES / "entropy"


def test_golden_streams_decode_and_reencode_identically():
    codec = EntropyCodec.from_bytes((GOLDEN / "codec.bin").read_bytes())
    expected = np.load(GOLDEN / "symbols.npy")
    assert expected.dtype == np.int32 and expected.shape == (60, 8, 3)
    v1 = (GOLDEN / "stream.bin").read_bytes()  # format version 1: still decodes
    v2 = (GOLDEN / "stream_v2.bin").read_bytes()
    assert v1[:2] == b"\xfc\xec" and v2[0] == 0xFC and v2[1] >> 6 == 2
    for stream in (v1, v2):
        np.testing.assert_array_equal(codec.decompress_symbols(stream), expected)
        np.testing.assert_array_equal(
            codec.decompress(stream), expected.astype(np.float32) + codec.offsets[None, :, None]
        )
    assert codec.compress_symbols(expected) == v2  # new streams are version 2, byte for byte
    assert len(v2) < len(v1)
    # the same ANS payload: version 2 only re-frames it
    h1, h2 = (bitstream.unpack(s, codec.digest, codec.channels) for s in (v1, v2))
    assert (h1.version, h2.version) == (1, 2) and h1.shape == h2.shape and h1.payload == h2.payload
    assert bitstream.pack(h1.shape, codec.digest, h1.payload, version=1) == v1
    assert codec.to_bytes() == (GOLDEN / "codec.bin").read_bytes()


def test_generator_script_reproduces_the_committed_files():
    spec = importlib.util.spec_from_file_location("make_entropy_golden", FIXTURES / "make_entropy_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    codec, k, stream = mod.make()
    committed = EntropyCodec.from_bytes((GOLDEN / "codec.bin").read_bytes())
    np.testing.assert_array_equal(k, np.load(GOLDEN / "symbols.npy"))
    assert_regenerated(committed, codec, [(k, (GOLDEN / "stream_v2.bin").read_bytes(), stream)])

"""Lockstep decoding of several temporal streams (``TemporalCodec.decompress_chunks``)."""

from __future__ import annotations

import numpy as np
import pytest

from featcomp.errors import CodecError

from .test_temporal import ar1, golden, random_codec


def test_decompress_chunks_equals_one_by_one_for_mixed_lengths_shapes_and_escapes():
    rng = np.random.default_rng(11)
    codec = random_codec(rng, 6)
    ks = []
    for T, trailing in [(9, ()), (1, ()), (0, ()), (17, ()), (4, (2, 3)), (9, (2, 3)), (12, ())]:
        k = np.round(ar1(rng, T, 6, trailing, sigma=3.0)).astype(np.int32) if T else np.zeros((0, 6), np.int32)
        if T > 2:
            k[T // 2].reshape(-1)[1] = np.iinfo(np.int32).min + 5  # escapes in some streams, some frames
            k[-1].reshape(-1)[0] = 4000
        ks.append(k)
    streams = [codec.compress_symbols(k) for k in ks]
    outs = codec.decompress_chunks(streams)
    assert len(outs) == len(ks)
    for k, o, s in zip(ks, outs, streams):
        assert o.dtype == np.int32 and o.shape == k.shape
        np.testing.assert_array_equal(o, k)
        np.testing.assert_array_equal(codec.decompress_symbols(s), k)


def test_golden_stream_through_lockstep_path_and_bad_stream_is_named():
    codec, k, stream = golden.make()
    a, b = codec.decompress_chunks([stream, stream])
    np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(b, k)
    bad = bytearray(stream)
    bad[-1] ^= 0xFF
    with pytest.raises(CodecError, match="stream #1"):
        codec.decompress_chunks([stream, bytes(bad)])

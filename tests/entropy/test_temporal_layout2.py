"""Temporal stream layout 2 (codec version 2, issue 7): truncated width classes, sorted large frames.

Checks exactness (hypothesis shapes, escapes, both decode paths of sorted frames, float32 and float64
context products), lockstep == one at a time, versioning (layout-1 codecs and streams keep working,
the two layouts never mix), corrupt/truncated/garbage streams, the truncated tables and the goldens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcomp.entropy import bitstream, temporal
from featcomp.entropy.indexed import (
    TableFamily,
    class_radii,
    scale_grid,
    truncated_tables,
    unzigzag_table,
    zigzag,
    zigzag_columns,
)
from featcomp.entropy.temporal import TemporalCodec
from featcomp.errors import CodecError

from .conftest import assert_flips_and_cuts_refused, forged_streams_refused
from .regen import assert_regenerated
from .test_temporal import ar1, golden

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "entropy"
I32 = np.iinfo(np.int32)


def varied_codec(C: int = 6, *, version: int = 2, big_weights: bool = False) -> TemporalCodec:
    """Scales spread over the whole grid (|k|-driven), so frames mix width classes."""
    rng = np.random.default_rng(C)
    F = 12
    fam = TableFamily.build(scale_grid(0.1, 40.0, 40), Q=4, radius=40)
    w_loc = np.round(0.8 * np.eye(C) * 2**F).astype(np.int32) + rng.integers(-200, 200, (C, C)).astype(np.int32)
    if big_weights:  # row sums near 2**20: float32 products are not exact for |x| >~ 16
        w_loc[:, :] = rng.integers(-(2**19), 2**19, (C, C)) // C
    w_scale = np.diag(np.full(C, 3000)).astype(np.int32)
    return TemporalCodec(np.zeros(C, np.float32), fam, w_loc, np.zeros(C, np.int64), w_scale,
                         np.full(C, 6 << F, np.int64), rng.integers(-8, 8, C), np.full(C, 12, np.int32),
                         frac_bits=F, version=version)


def latents(rng, T, C, trailing, sigma):
    return np.round(ar1(rng, T, C, trailing, rho=0.8, sigma=sigma)).astype(np.int32)


def test_truncated_tables_are_exact_and_follow_the_integer_rule():
    fam = TableFamily.build(scale_grid(0.1, 40.0, 40), Q=4, radius=40, precision=15)
    tt = truncated_tables(fam, 8)
    np.testing.assert_array_equal(tt.radii, class_radii(40))
    assert class_radii(40).tolist() == [1, 3, 7, 15, 31, 40] and class_radii(1).tolist() == [1]
    f = fam.freqs.astype(np.int64)
    R, limit = fam.radius, (1 << 15) >> 8
    res = np.abs(np.arange(-R, R + 1))
    for c, r in enumerate(tt.radii.tolist()):
        t = tt.freqs[c].astype(np.int64)
        assert t.shape == (f.shape[0], 2 * r + 2)
        assert (t.sum(1) == 1 << 15).all() and t.min() >= 1
        np.testing.assert_array_equal(t[:, :-1], f[:, R - r : R + r + 1])  # central columns kept
        np.testing.assert_array_equal(tt.weights[c], (t * 2.0 ** 9 - 1)[:, zigzag_columns(r)])  # exact, zigzag order
        zz = zigzag_columns(r)
        assert zz[0] == r and zz[-1] == 2 * r + 1 and sorted(zz.tolist()) == list(range(2 * r + 2))
        np.testing.assert_array_equal(zigzag(zz[:-1] - r), np.arange(2 * r + 1))  # column -> symbol index
        np.testing.assert_array_equal(unzigzag_table(40)[zigzag(np.arange(-r, r + 1))], np.arange(-r, r + 1))
        assert unzigzag_table(40)[2 * r + 1] == -(r + 1)  # the class's escape decodes just below its range
    tail = np.array([[(f[i, :-1] * (res > r)).sum() for r in tt.radii] for i in range(f.shape[0])])
    cls = tt.row_class.astype(int)
    assert (tail[np.arange(f.shape[0]), cls] <= limit).all()
    narrower = cls > 0
    assert (tail[np.arange(f.shape[0])[narrower], cls[narrower] - 1] > limit).all()  # the narrowest that fits
    assert len(set(cls.tolist())) >= 4  # small scales narrow, large scales wide
    assert cls[0] < cls[-1]
    assert truncated_tables(fam, 8) is tt  # cached per family and shift


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    T=st.integers(1, 7),
    trailing=st.sampled_from([(), (1,), (3,), (2, 5), (7, 7), (45,)]),
    sigma=st.sampled_from([0.3, 2.0, 30.0]),
    n_far=st.integers(0, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_exact_for_any_shape_and_escapes(T, trailing, sigma, n_far, seed):
    rng = np.random.default_rng(seed)
    codec = varied_codec()
    k = latents(rng, T, 6, trailing, sigma)
    flat = k.reshape(-1)
    far = rng.choice([I32.max, I32.min, 10**6, -(10**6), 41, -41, 2**30 + 7], n_far)
    flat[rng.choice(flat.size, min(n_far, flat.size), replace=False)] = far[: min(n_far, flat.size)]
    data = codec.compress_symbols(k)
    out = codec.decompress_symbols(data)
    assert out.dtype == np.int32 and out.shape == k.shape
    np.testing.assert_array_equal(out, k)
    assert abs(len(data) * 8 - codec.estimate_bits(k)) < 64 + 8 * 16  # within flush + header of the tables


@pytest.mark.parametrize("run_min", [0, 10**9])  # fixed per-table models for every run / per-symbol rows only
def test_sorted_frames_decode_identically_by_runs_or_by_rows(monkeypatch, run_min):
    rng = np.random.default_rng(3)
    codec = varied_codec()
    k = latents(rng, 9, 6, (8, 8), 3.0)
    k[4, 2, 3, 3] = I32.min
    k[6, 0, 0, 0] = 12345
    data = codec.compress_symbols(k)
    _, tab = codec.tables(k)
    assert len(np.unique(truncated_tables(codec.family, 8).row_class[tab])) >= 3  # several classes per chunk
    monkeypatch.setattr(temporal, "_RUN_MIN", run_min)
    np.testing.assert_array_equal(codec.decompress_symbols(data), k)


def test_float64_fallback_of_the_context_products_gives_the_same_integers():
    rng = np.random.default_rng(4)
    codec = varied_codec(big_weights=True)
    assert 0 < codec._ctx.x_limit32 < 100  # x_limit32: float32 only while max|x| <= it
    for sigma, trailing in ((0.5, (8, 8)), (60.0, (8, 8)), (60.0, ())):  # both paths, sorted and not
        k = latents(rng, 8, 6, trailing, sigma)
        np.testing.assert_array_equal(codec.decompress_symbols(codec.compress_symbols(k)), k)


def test_lockstep_equals_one_at_a_time_for_mixed_lengths_shapes_and_escapes():
    rng = np.random.default_rng(5)
    codec = varied_codec()
    ks = []
    for T, trailing, sigma in [(9, (), 2.0), (1, (), 2.0), (0, (), 1.0), (17, (), 30.0), (4, (2, 3), 2.0),
                               (9, (2, 3), 0.3), (12, (), 2.0), (5, (8, 8), 3.0), (3, (8, 8), 3.0)]:
        k = latents(rng, T, 6, trailing, sigma) if T else np.zeros((0, 6), np.int32)
        if T > 2:
            k[T // 2].reshape(-1)[1] = I32.min + 5
            k[-1].reshape(-1)[0] = 4000
        ks.append(k)
    streams = [codec.compress_symbols(k) for k in ks]
    outs = codec.decompress_chunks(streams)
    for k, o, s in zip(ks, outs, streams):
        assert o.dtype == np.int32 and o.shape == k.shape
        np.testing.assert_array_equal(o, k)
        np.testing.assert_array_equal(codec.decompress_symbols(s), k)


def test_layout_1_codecs_still_write_and_read_layout_1_and_layouts_never_mix():
    rng = np.random.default_rng(6)
    c1, c2 = varied_codec(version=1), varied_codec()
    assert (c1.version, c2.version) == (1, 2) and c1.digest != c2.digest
    k = latents(rng, 10, 6, (3,), 3.0)
    s1, s2 = c1.compress_symbols(k), c2.compress_symbols(k)
    assert s1 != s2
    np.testing.assert_array_equal(c1.decompress_symbols(s1), k)
    np.testing.assert_array_equal(c2.decompress_symbols(s2), k)
    with pytest.raises(CodecError, match="made by another codec"):
        c2.decompress_symbols(s1)
    with pytest.raises(CodecError, match="made by another codec"):
        c1.decompress_symbols(s2)
    for c in (c1, c2):
        assert TemporalCodec.from_bytes(c.to_bytes()) == c and TemporalCodec.from_bytes(c.to_bytes()).version == c.version
        d = c.to_dict()
        assert d["format_version"] == c.version and TemporalCodec.from_dict(d) == c
    assert c2.to_bytes()[4] == 2 and c1.to_bytes()[4] == 1
    with pytest.raises(CodecError, match="version"):
        varied_codec(version=4)
    raw = bytearray(c2.to_bytes()[:-32])
    raw[4] = 4
    import hashlib

    with pytest.raises(CodecError, match="unknown TemporalCodec version 4"):
        TemporalCodec.from_bytes(bytes(raw) + hashlib.sha256(bytes(raw)).digest())


@pytest.mark.parametrize("trailing", [(), (8, 8)])
def test_corrupt_truncated_and_garbage_payloads_raise_codec_error(trailing):
    rng = np.random.default_rng(7)
    codec = varied_codec()
    k = latents(rng, 6, 6, trailing, 3.0)
    k[2].reshape(-1)[3] = 77777
    data = codec.compress_symbols(k)
    assert_flips_and_cuts_refused(codec, data, rng)
    # payloads with a valid header and CRC but garbage (or shortened) ANS words: the decoder itself
    # must refuse them with a CodecError (constriction failure, escape failure or data left over)
    h = bitstream.unpack(data, codec.digest, codec.channels)
    garbage = [rng.integers(0, 256, len(h.payload), dtype=np.uint8).tobytes() for _ in range(8)]
    garbage += [h.payload[: len(h.payload) // 2], h.payload + b"\x01\x00\x00\x00", b""]
    refused = forged_streams_refused(codec, h.shape, garbage, k)
    assert len(refused) >= 5
    with pytest.raises(CodecError, match="stream #1: corrupt stream"):  # the lockstep decoder names it
        codec.decompress_chunks([data, refused[0], data])


def test_layout_2_goldens_decode_and_reencode_byte_for_byte():
    codec = TemporalCodec.from_bytes((FIX / "temporal_codec_layout2.bin").read_bytes())
    assert codec.version == 2
    k = np.load(FIX / "temporal_symbols.npy")
    big = np.load(FIX / "temporal_layout2_big_symbols.npy")
    small_s = (FIX / "temporal_layout2_stream.bin").read_bytes()
    big_s = (FIX / "temporal_layout2_big_stream.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress_symbols(small_s), k)
    np.testing.assert_array_equal(codec.decompress_symbols(big_s), big)
    a, b = codec.decompress_chunks([big_s, small_s])
    np.testing.assert_array_equal(a, big)
    np.testing.assert_array_equal(b, k)
    assert codec.compress_symbols(k) == small_s and codec.compress_symbols(big) == big_s
    # the layout-1 golden codec holds the same parameters: only the version (and so the digest) differs
    v1 = TemporalCodec.from_bytes((FIX / "temporal_codec.bin").read_bytes())
    assert v1.version == 1 and v1.to_bytes()[5:-32] == codec.to_bytes()[5:-32]
    np.testing.assert_array_equal(v1.decompress_symbols((FIX / "temporal_stream.bin").read_bytes()), k)
    # the committed generator reproduces the files
    c2, k2, s2, big2, bs2 = golden.make_layout2()
    np.testing.assert_array_equal(big2, big)
    np.testing.assert_array_equal(k2, k)
    assert_regenerated(codec, c2, [(k, small_s, s2), (big, big_s, bs2)])


@pytest.mark.parametrize("trailing", [(), (8, 8)])
def test_lockstep_with_escapes_in_most_frames_of_most_streams(trailing):
    """A badly calibrated model (residuals far wider than the predicted scales): tail symbols and
    exact values in many streams of the same step, several classes."""
    rng = np.random.default_rng(8)
    codec = varied_codec()
    ks = [latents(rng, T, 6, trailing, 80.0) for T in (7, 5, 7, 2)]
    ks[1][3].reshape(-1)[:3] = [I32.max, I32.min, 0]
    streams = [codec.compress_symbols(k) for k in ks]
    mu, tab = codec.tables(ks[0])
    tt = truncated_tables(codec.family, 8)
    r = ks[0].reshape(mu.shape) - mu
    assert (np.abs(r) > tt.radii[tt.row_class[tab]]).reshape(7, -1).any(1).mean() > 0.5
    for k, o in zip(ks, codec.decompress_chunks(streams)):
        np.testing.assert_array_equal(o, k)
    for k, s in zip(ks, streams):
        np.testing.assert_array_equal(codec.decompress_symbols(s), k)

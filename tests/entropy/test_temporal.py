"""The temporal conditional codec's own behaviour (kind ``"temporal"``); the contract every kind meets
(round trips on random and edge inputs, goldens re-encoding byte for byte, bounded work, corruption,
serialization) is tests/entropy/test_contract.py, run there for each of layouts 1, 2 and 3.

Sections: the codec (exact round trips with far values, torch input, the float API, the integer context
in numpy/torch/GPU, chunks decoding alone, errors, table families, a good context beats factorized,
the layout-1 golden); lockstep decoding of several streams; stream layout 2 (codec version 2, issue 7:
truncated width classes, sorted large frames, both decode paths, float32/float64 context products,
versioning, garbage payloads, the layout-2 goldens); stream layout 3 (codec version 3: per-frame restart
flags, the encoder's rule, the estimate, versions, corruption, the layout-3 goldens).
The training twin (TemporalPrior) is tests/entropy/test_temporal_training.py; the context look-up
tables are tests/entropy/test_temporal_lut.py.
"""

from __future__ import annotations

from pathlib import Path
import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcomp.entropy import EntropyCodec, bitstream, temporal
from featcomp.entropy.indexed import (
    TableFamily,
    class_radii,
    scale_grid,
    truncated_tables,
    unzigzag_table,
    zigzag,
    zigzag_columns,
)
from featcomp.entropy.temporal import RESTART_FLAG_BITS, TemporalCodec, integer_context
from featcomp.errors import CodecError

from .conftest import assert_flips_and_cuts_refused, forged_streams_refused
from .regen import assert_regenerated


FIX = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = FIX / "entropy"
_spec = importlib.util.spec_from_file_location("make_temporal_golden", FIX / "make_temporal_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def random_codec(rng: np.random.Generator, C: int, *, Q: int = 4) -> TemporalCodec:
    F = 12
    fam = TableFamily.build(scale_grid(0.15, 30.0, 32), Q=Q, radius=24)
    w_loc = rng.integers(-3000, 3000, (C, C)).astype(np.int32) // C + np.diag(np.full(C, 3500)).astype(np.int32)
    w_scale = rng.integers(0, 800, (C, C)).astype(np.int32) // C
    return TemporalCodec(rng.normal(0, 0.3, C).astype(np.float32), fam, w_loc, rng.integers(-5000, 5000, C),
                         w_scale, np.full(C, 10 << F, np.int64), rng.integers(-8, 8, C), rng.integers(5, 25, C).astype(np.int32),
                         frac_bits=F)


def ar1(rng: np.random.Generator, T: int, C: int, trailing=(), rho=0.9, sigma=1.0) -> np.ndarray:
    y = np.zeros((T, C) + trailing)
    y[0] = rng.normal(0, sigma / np.sqrt(1 - rho**2), (C,) + trailing)
    for t in range(1, T):
        y[t] = rho * y[t - 1] + rng.normal(0, sigma, (C,) + trailing)
    return y


@pytest.mark.parametrize("trailing", [(), (3,), (2, 3)])
def test_round_trip_exact_including_far_values(trailing):
    rng = np.random.default_rng(1)
    codec = random_codec(rng, 5)
    k = np.round(ar1(rng, 30, 5, trailing, sigma=3.0)).astype(np.int32)
    flat = k.reshape(-1)
    flat[rng.choice(flat.size, 6, replace=False)] = [np.iinfo(np.int32).max, np.iinfo(np.int32).min, 10**6, -(10**6), 25, -25]
    k[0].reshape(-1)[0] = np.iinfo(np.int32).min  # an escape in the fresh frame too
    data = codec.compress_symbols(k)
    out = codec.decompress_symbols(data)
    assert out.dtype == np.int32 and out.shape == k.shape
    np.testing.assert_array_equal(out, k)
    # ideal cost vs coded size: the payload is within the ANS flush (+ header) of the estimate
    est = codec.estimate_bits(k)
    assert abs(len(data) * 8 - est) < 64 + 8 * 24


def test_empty_single_frame_and_torch_input():
    rng = np.random.default_rng(2)
    codec = random_codec(rng, 4)
    for k in (np.zeros((0, 4), np.int32), rng.integers(-5, 5, (1, 4)).astype(np.int32)):
        np.testing.assert_array_equal(codec.decompress_symbols(codec.compress_symbols(k)), k)
    kt = torch.from_numpy(rng.integers(-50, 50, (7, 4, 2)).astype(np.int64))
    np.testing.assert_array_equal(codec.decompress_symbols(codec.compress_symbols(kt)), kt.numpy())


def test_quantize_dequantize_and_float_api():
    rng = np.random.default_rng(3)
    codec = random_codec(rng, 3)
    y = ar1(rng, 10, 3).astype(np.float32)
    k = codec.quantize(y)
    np.testing.assert_array_equal(k, np.round(y - codec.offsets[None]).astype(np.int32))
    np.testing.assert_array_equal(codec.decompress(codec.compress(y)), codec.dequantize(k))
    with pytest.raises(CodecError):
        codec.compress_symbols(y)  # floats are not symbols


def test_integer_context_identical_in_numpy_and_torch_for_int_and_float_inputs():
    rng = np.random.default_rng(4)
    codec = random_codec(rng, 16)
    k = rng.integers(-40000, 40000, (9, 16, 5))  # beyond the clip too
    ref_mu, ref_tab = codec.context(k)
    assert ref_mu.dtype == np.int64 and ref_tab.dtype == np.int64
    assert ref_tab.min() >= 0 and ref_tab.max() < codec.family.levels * codec.family.Q
    small = rng.integers(-3000, 3000, (9, 16, 5))  # exactly representable in float32
    ref_small = codec.context(small)
    for arr, ref in ((k, (ref_mu, ref_tab)), (small, ref_small)):
        for conv in (torch.from_numpy, lambda a: torch.from_numpy(a.astype(np.float64)),
                     lambda a: torch.from_numpy(a.astype(np.float32)) if np.abs(a).max() < 2**24 else torch.from_numpy(a)):
            mu, tab = codec.context(conv(arr))
            np.testing.assert_array_equal(mu.numpy(), ref[0])
            np.testing.assert_array_equal(tab.numpy(), ref[1])
    for dt in (np.float32, np.float64):
        mu, tab = codec.context(small.astype(dt))
        np.testing.assert_array_equal(mu, ref_small[0])
        np.testing.assert_array_equal(tab, ref_small[1])
    # the decoder's hot path is the same integer map
    for t in range(small.shape[0]):
        mu, tab = codec._ctx.context_np(small[t])
        np.testing.assert_array_equal(mu, ref_small[0][t])
        np.testing.assert_array_equal(tab, ref_small[1][t])
    # and the standalone function agrees with the method
    mu, tab = integer_context(small, codec.w_loc, codec.b_loc, codec.w_scale, codec.b_scale, frac_bits=codec.frac_bits,
                              Q=codec.family.Q, levels=codec.family.levels, clip=codec.clip)
    np.testing.assert_array_equal(tab, ref_small[1])


@pytest.mark.gpu
def test_integer_context_identical_on_gpu():  # pragma: no cover - runs on the GPU machine
    rng = np.random.default_rng(5)
    codec = random_codec(rng, 32)
    k = rng.integers(-40000, 40000, (6, 32, 7))
    ref = codec.context(k)
    mu, tab = codec.context(torch.from_numpy(k).cuda())
    np.testing.assert_array_equal(mu.cpu().numpy(), ref[0])
    np.testing.assert_array_equal(tab.cpu().numpy(), ref[1])


def test_chunks_decode_alone_random_access():
    rng = np.random.default_rng(6)
    codec = random_codec(rng, 6)
    k = np.round(ar1(rng, 50, 6, (2,), sigma=2.0)).astype(np.int32)
    streams = codec.compress_chunks(k, 16)
    assert len(streams) == 4
    # decode chunk 2 alone: frames 32..47
    np.testing.assert_array_equal(codec.decompress_symbols(streams[2]), k[32:48])
    # a chunk's bytes do not depend on earlier chunks (fresh context at every chunk start)
    k2 = k.copy()
    k2[:32] = rng.integers(-100, 100, k2[:32].shape)
    assert codec.compress_chunks(k2, 16)[2] == streams[2]
    # frame 0 of a chunk is coded with the fresh tables, whatever came before
    mu, tab = codec.tables(k[32:48])
    mu_f, tab_f = codec._ctx.fresh(2)
    np.testing.assert_array_equal(tab[0], tab_f)


def test_errors_wrong_codec_corruption_serialization():
    rng = np.random.default_rng(7)
    codec = random_codec(rng, 4)
    other = random_codec(np.random.default_rng(8), 4)
    k = rng.integers(-20, 20, (20, 4)).astype(np.int32)
    data = codec.compress_symbols(k)
    with pytest.raises(CodecError, match="made by another codec.*this temporal codec"):
        other.decompress_symbols(data)
    bad = bytearray(data)
    bad[-2] ^= 0x40
    with pytest.raises(CodecError):
        codec.decompress_symbols(bytes(bad))
    with pytest.raises(CodecError):
        codec.decompress_symbols(data[:-3])
    assert TemporalCodec.from_bytes(codec.to_bytes()) == codec
    d = codec.to_dict()
    assert d["kind"] == "temporal" and TemporalCodec.from_dict(d) == codec
    d2 = dict(d, digest="0" * 64)
    with pytest.raises(CodecError, match="digest"):
        TemporalCodec.from_dict(d2)
    raw = bytearray(codec.to_bytes())
    raw[40] ^= 1
    with pytest.raises(CodecError):
        TemporalCodec.from_bytes(bytes(raw))
    with pytest.raises(CodecError):
        TemporalCodec(codec.offsets, codec.family, np.full((4, 4), 1 << 21, np.int32), codec.b_loc, codec.w_scale,
                      codec.b_scale, codec.fresh_loc, codec.fresh_scale)


def test_family_tables_exact_and_serializable():
    fam = TableFamily.build(scale_grid(0.2, 10.0, 8), Q=2, radius=10, precision=12)
    assert fam.freqs.shape == (16, 22)
    assert (fam.freqs.astype(np.int64).sum(1) == 4096).all() and fam.freqs.min() >= 1
    assert TableFamily.from_dict(fam.to_dict()) == fam
    # symmetric: q = 0 tables are mirror images around residual 0
    t0 = fam.freqs[0, :-1]
    np.testing.assert_array_equal(t0, t0[::-1])
    # larger scale -> flatter table
    assert fam.freqs[0, 10] > fam.freqs[14, 10]


def test_golden_temporal_stream_decodes_byte_for_byte():
    d = FIX / "entropy"
    codec = TemporalCodec.from_bytes((d / "temporal_codec.bin").read_bytes())
    v1 = (d / "temporal_stream.bin").read_bytes()  # format version 1: still decodes
    stream = (d / "temporal_stream_v2.bin").read_bytes()
    k = np.load(d / "temporal_symbols.npy")
    np.testing.assert_array_equal(codec.decompress_symbols(v1), k)
    np.testing.assert_array_equal(codec.decompress_symbols(stream), k)
    np.testing.assert_array_equal(codec.decompress_chunks([v1, stream])[0], k)  # versions mix freely
    assert v1[:2] == b"\xfc\xec" and stream[1] >> 6 == 2 and len(stream) < len(v1)
    # the committed generator reproduces the committed files: integers exactly, float-built tables
    # within a count (tests/entropy/regen.py says why not byte for byte on every CPU)
    codec2, k2, stream2 = golden.make()
    np.testing.assert_array_equal(k2, k)
    assert_regenerated(codec, codec2, [(k, stream, stream2)])


def test_temporal_beats_fitted_factorized_on_ar1_with_a_good_context():
    rng = np.random.default_rng(9)
    C, F = 8, 12
    y = ar1(rng, 400, C, rho=0.95, sigma=1.0)
    k = np.round(y).astype(np.int32)
    fam = TableFamily.build(scale_grid(0.11, 48.0, 64))
    step = np.log(48 / 0.11) / 63
    s1 = int(round(np.log(1.0 / 0.11) / step))
    codec = TemporalCodec(np.zeros(C, np.float32), fam, np.round(0.95 * np.eye(C) * 2**F).astype(np.int32),
                          np.zeros(C, np.int64), np.zeros((C, C), np.int32), np.full(C, s1 << F, np.int64),
                          np.zeros(C, np.int64), np.full(C, s1 + 20, np.int32))
    fact = EntropyCodec.fit(k)  # the best static per-channel tables for these very symbols
    bt = len(codec.compress_symbols(k))
    bf = len(fact.compress_symbols(k))
    assert bt * 1.5 < bf, (bt, bf)


# ==================================================================================================
# (formerly test_temporal_chunks.py)
# Lockstep decoding of several temporal streams (``TemporalCodec.decompress_chunks``).
# ==================================================================================================
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


# ==================================================================================================
# (formerly test_temporal_layout2.py)
# Temporal stream layout 2 (codec version 2, issue 7): truncated width classes, sorted large frames.
#
# Checks exactness (hypothesis shapes, escapes, both decode paths of sorted frames, float32 and float64
# context products), lockstep == one at a time, versioning (layout-1 codecs and streams keep working,
# the two layouts never mix), corrupt/truncated/garbage streams, the truncated tables and the goldens.
# ==================================================================================================
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
    codec = TemporalCodec.from_bytes((GOLDEN / "temporal_codec_layout2.bin").read_bytes())
    assert codec.version == 2
    k = np.load(GOLDEN / "temporal_symbols.npy")
    big = np.load(GOLDEN / "temporal_layout2_big_symbols.npy")
    small_s = (GOLDEN / "temporal_layout2_stream.bin").read_bytes()
    big_s = (GOLDEN / "temporal_layout2_big_stream.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress_symbols(small_s), k)
    np.testing.assert_array_equal(codec.decompress_symbols(big_s), big)
    a, b = codec.decompress_chunks([big_s, small_s])
    np.testing.assert_array_equal(a, big)
    np.testing.assert_array_equal(b, k)
    assert codec.compress_symbols(k) == small_s and codec.compress_symbols(big) == big_s
    # the layout-1 golden codec holds the same parameters: only the version (and so the digest) differs
    v1 = TemporalCodec.from_bytes((GOLDEN / "temporal_codec.bin").read_bytes())
    assert v1.version == 1 and v1.to_bytes()[5:-32] == codec.to_bytes()[5:-32]
    np.testing.assert_array_equal(v1.decompress_symbols((GOLDEN / "temporal_stream.bin").read_bytes()), k)
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


# ==================================================================================================
# (formerly test_temporal_layout3.py)
# Temporal stream layout 3 (codec version 3, issue 7): per-frame restart flags.
#
# A frame after a shot change is predicted worse by its predecessor than by no frame at all; layout 3
# lets the encoder code such a frame with the fresh context (a flag per frame, read first by the
# decoder). Checks: exact round trips (cuts, escapes, small and sorted frames, lockstep), the encoder's
# rule (restart exactly where it saves bits; never worse than layout 2 beyond the flags), the estimate,
# versioning, corruption, the goldens, and the training twin's pricing of restarts.
# ==================================================================================================
def with_cuts(rng, T: int, C: int, trailing, cuts=(4,), sigma=3.0, start_far: bool = True) -> np.ndarray:
    """AR(1) latents made of shots: a new sequence at each cut, the shots alternately far from zero
    (+40) and near zero, where the fresh context expects frames."""
    far = [40 * ((i + (1 if start_far else 0)) % 2) for i in range(len(cuts) + 1)]
    k = latents(rng, T, C, trailing, sigma) + far[0]
    for i, c in enumerate(cuts):
        if c < T:
            k[c:] = latents(rng, T - c, C, trailing, sigma) + far[i + 1]
    return k


def codec_v(version: int) -> TemporalCodec:
    """:func:`varied_codec` with a fresh context that fits frames near zero (scale ~4)."""
    c = varied_codec(version=version)
    return TemporalCodec(c.offsets, c.family, c.w_loc, c.b_loc, c.w_scale, c.b_scale, np.zeros(6, np.int64),
                         np.full(6, 24, np.int32), frac_bits=c.frac_bits, version=version)


@pytest.mark.parametrize("trailing", [(), (3,), (8, 8)])
def test_restarts_round_trip_and_restart_at_the_cuts(trailing):
    rng = np.random.default_rng(11)
    c3, c2 = codec_v(3), codec_v(2)
    ks = [with_cuts(rng, T, 6, trailing, cuts) for T, cuts in ((12, (4, 9)), (7, (3,)), (1, ()), (5, ()))]
    ks[0][6].reshape(-1)[2] = 2**31 - 1  # an escape in a context-coded frame
    ks[1][3].reshape(-1)[0] = -(2**31)  # and one in a restarted frame
    streams = [c3.compress_symbols(k) for k in ks]
    for k, s in zip(ks, streams):
        np.testing.assert_array_equal(c3.decompress_symbols(s), k)
    for k, o in zip(ks, c3.decompress_chunks(streams)):  # lockstep: streams restart at different steps
        np.testing.assert_array_equal(o, k)
    r0 = c3.restarts(ks[0])
    assert r0.dtype == bool and r0.shape == (12,) and not r0[0]
    assert r0[4]  # the shot change back to where the fresh context expects frames restarts
    assert c2.restarts(ks[0]).sum() == 0  # layout 2 has no flags
    # restarting pays: fewer bits than layout 2 on chunks with cuts
    assert len(streams[0]) < len(c2.compress_symbols(ks[0]))


def test_the_encoder_restarts_exactly_where_the_fresh_context_is_cheaper():
    rng = np.random.default_rng(12)
    c3, c2 = codec_v(3), codec_v(2)
    k = with_cuts(rng, 10, 6, (4,), (3, 7))
    mu, tab = c2.tables(k)  # every frame from its predecessor
    fresh_mu, fresh_tab = mu[:1], tab[:1]
    r = c3.restarts(k)
    f0, f1 = RESTART_FLAG_BITS
    K = k.reshape(10, 6, -1).astype(np.int64)
    for t in range(1, 10):
        ctx = c2._estimate_bits_v2(K[t : t + 1], mu[t : t + 1], tab[t : t + 1], K[t : t + 1] - mu[t : t + 1])
        fresh = c2._estimate_bits_v2(K[t : t + 1], fresh_mu, fresh_tab, K[t : t + 1] - fresh_mu)
        assert r[t] == (fresh + f1 < ctx + f0), t
    assert r[3]
    # the tables the encoder uses: the fresh ones on restarted frames, the context elsewhere
    mu3, tab3 = c3.tables(k)
    for t in range(10):
        src = 0 if (t == 0 or r[t]) else t
        np.testing.assert_array_equal(tab3[t], (tab[0] if src == 0 else tab[t]))
        np.testing.assert_array_equal(mu3[t], (mu[0] if src == 0 else mu[t]))


def test_without_cuts_layout_3_costs_at_most_the_flags_more_and_estimates_the_coded_size():
    rng = np.random.default_rng(13)
    c3, c2 = codec_v(3), codec_v(2)
    for trailing in ((), (8, 8)):
        k = latents(rng, 40, 6, trailing, 2.0)
        e3, e2 = c3.estimate_bits(k), c2.estimate_bits(k)
        assert e3 <= e2 + 39 * RESTART_FLAG_BITS[0] + 1e-9  # the encoder never restarts at a loss
        n3 = 8 * len(bitstream.unpack(c3.compress_symbols(k), c3.digest, 6).payload)
        assert abs(n3 - e3) <= 64 + 0.01 * e3  # ANS: within the final state's words


def test_versions_and_corruption():
    rng = np.random.default_rng(14)
    c3 = codec_v(3)
    assert TemporalCodec.from_bytes(c3.to_bytes()) == c3 and c3.to_bytes()[4] == 3
    assert c3.digest != codec_v(2).digest
    assert TemporalCodec(c3.offsets, c3.family, c3.w_loc, c3.b_loc, c3.w_scale, c3.b_scale, c3.fresh_loc,
                         c3.fresh_scale, frac_bits=c3.frac_bits).version == 3  # the default
    k = with_cuts(rng, 9, 6, (2, 2), (5,))
    data = c3.compress_symbols(k)
    assert_flips_and_cuts_refused(c3, data, rng)
    with pytest.raises(CodecError, match="made by another codec"):
        codec_v(2).decompress_symbols(data)
    # garbage payloads behind a valid header: refused or at least not the data, never a hang
    h = bitstream.unpack(data, c3.digest, c3.channels)
    garbage = [rng.integers(0, 256, len(h.payload) // 4 * 4, dtype=np.uint8).tobytes() for _ in range(8)]
    assert len(forged_streams_refused(c3, h.shape, garbage, k)) >= 4


def test_layout_3_goldens_decode_and_reencode_byte_for_byte():
    codec = TemporalCodec.from_bytes((GOLDEN / "temporal_codec_layout3.bin").read_bytes())
    assert codec.version == 3
    k = np.load(GOLDEN / "temporal_layout3_symbols.npy")
    big = np.load(GOLDEN / "temporal_layout2_big_symbols.npy")
    s = (GOLDEN / "temporal_layout3_stream.bin").read_bytes()
    big_s = (GOLDEN / "temporal_layout3_big_stream.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress_symbols(s), k)
    np.testing.assert_array_equal(codec.decompress_symbols(big_s), big)
    a, b = codec.decompress_chunks([s, big_s])
    np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(b, big)
    assert codec.restarts(k).nonzero()[0].tolist() == [5, 10]  # the stream carries set flags
    assert codec.compress_symbols(k) == s and codec.compress_symbols(big) == big_s
    # same parameters as the layout-2 golden codec: only the version (and so the digest) differs
    v2 = TemporalCodec.from_bytes((GOLDEN / "temporal_codec_layout2.bin").read_bytes())
    assert v2.to_bytes()[5:-32] == codec.to_bytes()[5:-32]
    c3, k3, s3, _, bs3 = golden.make_layout3()
    np.testing.assert_array_equal(k3, k)
    assert_regenerated(codec, c3, [(k, s, s3), (big, big_s, bs3)])


# ------------------------------------------------------------------ diagonal body (issue 18, item 5)
def test_golden_diagonal_body_codec_reads_rewrites_and_codes_like_the_dense_one():
    """The diagonal body stores each weight matrix as its diagonal; the decoded codec is the dense one with
    another digest: same contexts, same payload bytes for the same symbols, the golden stream decodes."""
    import hashlib

    b = (GOLDEN / "temporal_codec_diagonal.bin").read_bytes()
    codec = TemporalCodec.from_bytes(b)
    assert codec.diagonal_body and codec.version == 3 and b[4] == 0x83 and codec.to_bytes() == b
    k3 = np.load(GOLDEN / "temporal_layout3_symbols.npy")
    np.testing.assert_array_equal(codec.decompress_symbols((GOLDEN / "temporal_diagonal_stream.bin").read_bytes()), k3)
    dense = TemporalCodec(codec.offsets, codec.family, codec.w_loc, codec.b_loc, codec.w_scale, codec.b_scale,
                          codec.fresh_loc, codec.fresh_scale, frac_bits=codec.frac_bits, clip=codec.clip, version=3)
    assert not dense.diagonal_body and dense.digest != codec.digest
    C = codec.channels
    assert len(dense.to_bytes()) - len(b) == 2 * 4 * (C * C - C)  # two int32 C x C matrices -> two diagonals
    p_diag = bitstream.unpack(codec.compress_symbols(k3), codec.digest, C).payload
    p_dense = bitstream.unpack(dense.compress_symbols(k3), dense.digest, C).payload
    assert p_diag == p_dense
    # refusals: off-diagonal weights, too many channels for a diagonal body (before anything C x C is made)
    w = codec.w_loc.copy()
    w[0, 1] = 5
    with pytest.raises(CodecError, match="diagonal context weights"):
        TemporalCodec(codec.offsets, codec.family, w, codec.b_loc, codec.w_scale, codec.b_scale, codec.fresh_loc,
                      codec.fresh_scale, frac_bits=codec.frac_bits, version=3, diagonal_body=True)
    body = bytearray(b[:-32])
    body[5:9] = (temporal.DIAGONAL_BODY_MAX_CHANNELS + 1).to_bytes(4, "little")  # the channel count field
    with pytest.raises(CodecError, match="channels in a diagonal body"):
        TemporalCodec.from_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    body = bytearray(b[:-32])
    body[4] = 0x84  # layout 4 does not exist, diagonal or not
    with pytest.raises(CodecError, match="version"):
        TemporalCodec.from_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())


def test_freeze_writes_the_diagonal_body_for_a_diagonal_context_only():
    from featcomp.entropy.temporal_prior import TemporalPrior

    off = np.zeros(6, np.float32)
    diag = TemporalPrior(6, context="diagonal").freeze(off)
    full = TemporalPrior(6, context="full")
    with torch.no_grad():
        full.w_loc.add_(0.01)  # off-diagonal terms
    back = TemporalCodec.from_bytes(diag.to_bytes())
    assert diag.diagonal_body and back.diagonal_body and back.digest == diag.digest
    assert not full.freeze(off).diagonal_body

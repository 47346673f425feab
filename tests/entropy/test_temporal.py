"""Temporal conditional codec: exact round trips, integer-context determinism, random access, golden."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from featcomp.entropy import EntropyCodec
from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.entropy.temporal import TemporalCodec, integer_context
from featcomp.errors import CodecError

from .regen import assert_regenerated

FIX = Path(__file__).resolve().parents[1] / "fixtures"
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

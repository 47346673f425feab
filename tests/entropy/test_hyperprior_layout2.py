"""Hyperprior stream layout 2 (codec version 2): rows narrowed by width class with the folded frequency
floors reclaimed, symbols by (class, table, position), tail symbols for escapes.

Checks the reclaimed tables' integer rule, exact round trips (hypothesis shapes and scales, escapes
within and beyond the family radius, int32 extremes, both decode paths), the rate of zeros at the
smallest scale (far below layout 1's floor of -log2(1 - 97 / 2**16) = 0.0021 bits), versioning
(version-1 codecs and streams keep working, the layouts never mix), corrupt input and the goldens.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcomp.entropy import EntropyCodec, bitstream, codec_from_dict, hyperprior
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.indexed import (
    TableFamily,
    class_radii,
    reclaimed_tables,
    scale_grid,
    truncated_tables,
    zigzag_columns,
)
from featcomp.errors import CodecError

from .conftest import assert_flips_and_cuts_refused, forged_streams_refused
from .regen import assert_regenerated

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIX = FIXTURES / "entropy"
_spec = importlib.util.spec_from_file_location("make_hyperprior_golden", FIXTURES / "make_hyperprior_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
I32 = np.iinfo(np.int32)
FLOOR_V1 = -np.log2(1 - 97 / 2**16)  # a zero's cost in a full 16-bit row of radius 48: 0.0021 bits


def spread_codec(C: int = 6, Cz: int = 3, *, version: int = 2, c_bias: int = 6, radius: int = 48,
                 levels: int = 64, precision: int = 16) -> HyperpriorCodec:
    """Scale indices follow |k| through z (so larger values get wider rows): several width classes."""
    rng = np.random.default_rng(C)
    zc = EntropyCodec.fit(rng.integers(-6, 7, (400, Cz)).astype(np.int32))
    fam = TableFamily.build(scale_grid(0.04, 48.0, levels), Q=1, radius=radius, precision=precision)
    A = np.full((Cz, C), 2000, np.int32)
    B = np.full((C, Cz), 5461, np.int32)  # 4 scale steps (x 1.57) per unit of z, z ~ 2.9 log2(1 + |k|)
    return HyperpriorCodec(np.zeros(C, np.float32), zc, fam, A, np.zeros(Cz, np.int64), B,
                           np.full(C, c_bias << 12, np.int64), pool=2, version=version)


def tiny_scale_codec(version: int = 2, C: int = 64) -> HyperpriorCodec:
    """Every element at scale index 0 (sigma 0.04): the synthesis bias is far below the grid."""
    zc = EntropyCodec.fit(np.zeros((50, 4), np.int32))
    fam = TableFamily.build(scale_grid(0.04, 48.0, 64), Q=1, radius=48)
    return HyperpriorCodec(np.zeros(C, np.float32), zc, fam, np.zeros((4, C), np.int32), np.zeros(4, np.int64),
                           np.zeros((C, 4), np.int32), np.full(C, -(100 << 12), np.int64), pool=2, version=version)


def maps(rng, shape, sigma):
    """Laplace maps whose scale grows along the width (mixed classes inside one map)."""
    ramp = np.linspace(0.05, 1.0, shape[3])[None, None, None, :] if shape[3] > 1 else 1.0
    return np.round(rng.laplace(0, sigma * ramp, shape)).astype(np.int32)


# ------------------------------------------------------------------------------------------ tables
@pytest.mark.parametrize("precision,radius", [(16, 48), (14, 16), (12, 40)])
def test_reclaimed_tables_follow_the_integer_rule(precision, radius):
    fam = TableFamily.build(scale_grid(0.04, 48.0, 40), Q=1, radius=radius, precision=precision)
    tt = reclaimed_tables(fam, 8)
    assert tt.reclaimed and not truncated_tables(fam, 8).reclaimed
    np.testing.assert_array_equal(tt.radii, class_radii(radius))
    f = fam.freqs.astype(np.int64)
    R, rows = fam.radius, np.arange(f.shape[0])
    res = np.abs(np.arange(-R, R + 1))
    limit = (1 << precision) >> 8
    folded = np.array([[(f[i, :-1] * (res > r)).sum() for r in tt.radii] for i in rows])
    excess = folded - 2 * (R - tt.radii)[None, :]  # folded mass above the floors of the folded columns
    assert (excess >= 0).all()
    for c, r in enumerate(tt.radii.tolist()):
        t = tt.freqs[c].astype(np.int64)
        assert t.shape == (f.shape[0], 2 * r + 2)
        assert (t.sum(1) == 1 << precision).all() and t.min() >= 1
        np.testing.assert_array_equal(t[:, -1], f[:, -1] + excess[:, c])  # escape: the true folded mass
        kept = f[:, R - r : R + r + 1]
        mode = np.argmax(kept, axis=1)
        diff = t[:, :-1] - kept
        np.testing.assert_array_equal(diff[rows, mode], np.full(rows.size, 2 * (R - r)))  # the floors, on the mode
        diff[rows, mode] = 0
        assert not diff.any()  # every other kept column as in the family
        np.testing.assert_array_equal(tt.weights[c], (t * 2.0 ** (24 - precision) - 1)[:, zigzag_columns(r)])
    cls = tt.row_class.astype(int)
    assert (excess[rows, cls] <= limit).all()
    narrower = cls > 0
    assert (excess[rows[narrower], cls[narrower] - 1] > limit).all()  # the narrowest class that fits
    assert cls[0] == 0 and cls[-1] == len(tt.radii) - 1
    # the tails are those of the plain truncated tables (folded columns with their floors)
    for a, b in zip(tt.tails, truncated_tables(fam, 8).tails):
        assert (a is None and b is None) or np.array_equal(a, b)
    assert reclaimed_tables(fam, 8) is tt  # cached per family and shift


def test_a_zero_at_the_smallest_scale_costs_far_less_than_the_old_floor():
    fam = TableFamily.build(scale_grid(0.04, 48.0, 64), Q=1, radius=48)
    assert fam.cost_bits[0, 48] == pytest.approx(FLOOR_V1, rel=1e-3)  # layout 1: every entry >= 1
    tt = reclaimed_tables(fam, 8)
    assert tt.row_class[0] == 0 and tt.freqs[0][0].tolist() == [1, 65533, 1, 1]
    zero_bits = 16 - np.log2(float(tt.freqs[0][0, 1]))
    assert zero_bits < FLOOR_V1 / 30  # 6.6e-5 bits
    # plain truncation keeps the floors in the escape: the zero costs what it did
    assert truncated_tables(fam, 8).freqs[0][0, 1] == fam.freqs[0, 48]


# ------------------------------------------------------------------------------------------ coding
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(1, 6, 1, 1), (2, 6, 2, 3), (3, 6, 5, 3), (1, 6, 8, 8), (4, 6, 6, 6)]),
    sigma=st.sampled_from([0.02, 0.5, 4.0, 60.0]),
    n_far=st.integers(0, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_exact_for_any_shape_scale_and_escapes(shape, sigma, n_far, seed):
    rng = np.random.default_rng(seed)
    codec = spread_codec()
    k = maps(rng, shape, sigma)
    flat = k.reshape(-1)
    far = rng.choice([I32.max, I32.min, 10**6, -(10**6), 49, -49, 5, -3], n_far)
    flat[rng.choice(flat.size, min(n_far, flat.size), replace=False)] = far[: min(n_far, flat.size)]
    data = codec.compress_symbols(k)
    out = codec.decompress_symbols(data)
    assert out.dtype == np.int32 and out.shape == k.shape
    np.testing.assert_array_equal(out, k)
    assert abs(8 * len(data) - codec.estimate_bits(k)) < 8 * 40 + 64  # headers + two ANS flushes


@pytest.mark.parametrize("run_min", [0, 10**9])  # fixed per-table models for every run / per-symbol rows only
def test_decode_by_runs_or_by_rows_gives_the_same_integers(monkeypatch, run_min):
    rng = np.random.default_rng(3)
    codec = spread_codec()
    k = maps(rng, (5, 6, 8, 8), 6.0)
    k.reshape(-1)[rng.choice(k.size, 40, replace=False)] = rng.integers(-45, 46, 40)  # outliers: tail symbols
    k[0, 1, 2, 3], k[4, 5, 7, 7], k[2, 0, 0, 0] = I32.min, 123456, -40  # beyond R, and a tail symbol
    data = codec.compress_symbols(k)
    tt = codec._class_rows.tt
    tab = codec.tables(codec.side_information(k), 8, 8).reshape(-1)
    rc = tt.radii[tt.row_class[tab]]
    flat = k.reshape(-1).astype(np.int64)
    assert len(np.unique(tt.row_class[tab])) >= 3  # several classes in one stream
    esc = (flat < -rc) | (flat > rc)
    assert esc.sum() >= 10 and ((flat[esc] >= -48) & (flat[esc] <= 48)).any()  # tail-only escapes too
    monkeypatch.setattr(hyperprior, "_RUN_MIN", run_min)
    np.testing.assert_array_equal(codec.decompress_symbols(data), k)


def test_badly_calibrated_scales_escape_often_and_still_round_trip():
    rng = np.random.default_rng(4)
    codec = tiny_scale_codec(C=6)  # every row at radius 1, data at scale 40
    k = np.round(rng.laplace(0, 40, (3, 6, 5, 5))).astype(np.int32)
    k[1, 2, 3, 4] = I32.max
    data = codec.compress_symbols(k)
    np.testing.assert_array_equal(codec.decompress_symbols(data), k)
    assert np.mean(np.abs(k) > 1) > 0.9
    assert abs(8 * len(data) - codec.estimate_bits(k)) < 8 * 40 + 64


def test_zero_maps_at_the_smallest_scale_cost_far_below_the_layout_1_floor():
    k = np.zeros((64, 64, 6, 6), np.int32)  # 64 maps of 64 x 6 x 6, every table at sigma 0.04
    n = k.size
    c1, c2 = tiny_scale_codec(version=1), tiny_scale_codec()
    assert (c1.tables(c1.side_information(k), 6, 6) == 0).all()
    z_bits = c2.z_codec.estimate_bits(c2.side_information(k))
    y1, y2 = c1.estimate_bits(k) - z_bits, c2.estimate_bits(k) - z_bits
    assert y1 == pytest.approx(n * FLOOR_V1, rel=1e-3)  # 315 bits: the floor of layout 1
    assert y2 == pytest.approx(n * -np.log2(1 - 3 / 2**16), rel=1e-3) and y2 < y1 / 30  # 9.7 bits
    s1, s2 = c1.compress_symbols(k), c2.compress_symbols(k)
    np.testing.assert_array_equal(c1.decompress_symbols(s1), k)
    np.testing.assert_array_equal(c2.decompress_symbols(s2), k)
    assert 8 * (len(s1) - len(s2)) >= y1 - y2 - 64  # the coded streams show the same saving
    # a few ones among the zeros: the narrow row still codes them (no escape), at the same cost as before
    k[3, 5, 2, 2], k[7, 0, 0, 1] = 1, -1
    assert c2.estimate_bits(k) - c1.estimate_bits(k) == pytest.approx(y2 - y1, abs=0.01)
    np.testing.assert_array_equal(c2.decompress_symbols(c2.compress_symbols(k)), k)


# ------------------------------------------------------------------------------------------ versions
def test_version_1_codecs_still_write_and_read_layout_1_and_layouts_never_mix():
    rng = np.random.default_rng(6)
    c1, c2 = spread_codec(version=1), spread_codec()
    assert (c1.version, c2.version) == (1, 2) and c1.digest != c2.digest
    k = maps(rng, (3, 6, 4, 5), 3.0)
    s1, s2 = c1.compress_symbols(k), c2.compress_symbols(k)
    assert s1 != s2
    np.testing.assert_array_equal(c1.decompress_symbols(s1), k)
    np.testing.assert_array_equal(c2.decompress_symbols(s2), k)
    with pytest.raises(CodecError, match="made by another codec"):
        c2.decompress_symbols(s1)
    with pytest.raises(CodecError, match="made by another codec"):
        c1.decompress_symbols(s2)
    for c in (c1, c2):
        back = HyperpriorCodec.from_bytes(c.to_bytes())
        assert back == c and back.version == c.version
        d = c.to_dict()
        assert d["format_version"] == c.version and codec_from_dict(d) == c and codec_from_dict(d).version == c.version
    assert c2.to_bytes()[4] == 2 and c1.to_bytes()[4] == 1
    assert c1.to_bytes()[5:-32] == c2.to_bytes()[5:-32]  # same parameters; only the version differs
    with pytest.raises(CodecError, match="unknown HyperpriorCodec version 4"):  # 3 is layout 3 (a fallback)
        spread_codec(version=4)
    raw = bytearray(c2.to_bytes()[:-32])
    raw[4] = 4
    with pytest.raises(CodecError, match="unknown HyperpriorCodec version 4"):
        HyperpriorCodec.from_bytes(bytes(raw) + hashlib.sha256(bytes(raw)).digest())


def test_corrupt_truncated_and_garbage_payloads_raise_codec_error():
    rng = np.random.default_rng(7)
    codec = spread_codec()
    k = maps(rng, (3, 6, 6, 6), 4.0)
    k[1, 2, 3, 4] = 77777
    data = codec.compress_symbols(k)
    assert_flips_and_cuts_refused(codec, data, rng)
    # a valid header and CRC over a payload whose y words are garbage: the decoder must refuse it
    # (constriction failure, escape failure or data left over) or at least not return the data
    h = bitstream.unpack(data, codec.digest, codec.channels)
    zlen, pos = bitstream.decode_varint(h.payload, 0)
    ystart = pos + zlen + (-(pos + zlen)) % 4
    junk_len = (len(h.payload) - ystart) // 4 * 4
    payloads = [h.payload[:ystart] + rng.integers(0, 256, len(h.payload) - ystart, dtype=np.uint8).tobytes()[:junk_len]
                for _ in range(10)]
    assert len(forged_streams_refused(codec, h.shape, payloads, k)) >= 5


def test_a_trained_prior_freezes_to_layout_2():
    import torch

    from featcomp.entropy.hyperprior_prior import HyperpriorPrior

    torch.manual_seed(0)
    codec = HyperpriorPrior(4, z_channels=2).eval().freeze()
    assert codec.version == 2 and codec.to_dict()["format_version"] == 2
    k = np.round(np.random.default_rng(8).laplace(0, 2, (2, 4, 6, 6))).astype(np.int32)
    np.testing.assert_array_equal(codec.decompress_symbols(codec.compress_symbols(k)), k)


# ------------------------------------------------------------------------------------------ goldens
def test_layout_2_goldens_decode_and_reencode_byte_for_byte():
    codec = HyperpriorCodec.from_bytes((FIX / "hyperprior_codec_layout2.bin").read_bytes())
    assert codec.version == 2
    k = np.load(FIX / "hyperprior_symbols.npy")
    stream = (FIX / "hyperprior_layout2_stream.bin").read_bytes()
    small = (FIX / "hyperprior_layout2_small_stream.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress_symbols(stream), k)
    np.testing.assert_array_equal(codec.decompress_symbols(small), k[:, :, :1, :1])
    assert codec.compress_symbols(k) == stream and codec.compress_symbols(k[:, :, :1, :1]) == small
    # what the goldens exercise: two width classes, escapes (tail symbols and exact values beyond R),
    # long runs (fixed per-table models) in the big stream, short runs (per-symbol rows) in the small one
    tt = codec._class_rows.tt
    tab = codec.tables(codec.side_information(k), 5, 3).reshape(-1)
    rc = tt.radii[tt.row_class[tab]]
    flat = k.reshape(-1).astype(np.int64)
    esc = (flat < -rc) | (flat > rc)
    assert len(np.unique(rc)) >= 2 and esc.sum() >= 10 and (np.abs(flat) > codec.family.radius).sum() >= 3
    assert flat.size >= hyperprior._RUN_MIN * len(np.unique(tab))
    ts = codec.tables(codec.side_information(k[:, :, :1, :1]), 1, 1).reshape(-1)
    assert ts.size < hyperprior._RUN_MIN * len(np.unique(ts))
    # the layout-1 golden codec holds the same parameters; its streams still decode and re-encode
    v1 = HyperpriorCodec.from_bytes((FIX / "hyperprior_codec.bin").read_bytes())
    assert v1.version == 1 and v1.to_bytes()[5:-32] == codec.to_bytes()[5:-32]
    np.testing.assert_array_equal(v1.decompress_symbols((FIX / "hyperprior_stream.bin").read_bytes()), k)
    assert v1.compress_symbols(k) == (FIX / "hyperprior_stream_v2.bin").read_bytes()
    # the committed generator reproduces the files
    c2, k2, s2, small2 = golden.make_layout2()
    np.testing.assert_array_equal(k2, k)
    assert_regenerated(codec, c2, [(k, stream, s2), (k[:, :, :1, :1], small, small2)])

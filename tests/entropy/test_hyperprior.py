"""The scale hyperprior codec's own behaviour (kind ``"hyperprior"``); the contract every kind meets
(round trips on random and edge inputs, goldens re-encoding byte for byte, bounded work, corruption,
serialization) is tests/entropy/test_contract.py, run there for each of layouts 1, 2 and 3.

Sections: the codec (exact round trips, errors, the integer scale index identical in numpy/torch, the
layout-1 golden, a trained hyperprior beats the factorized prior on spatially varying scales); stream
layout 2 (codec version 2: rows narrowed by width class with the folded floors reclaimed, both decode
paths, the rate of zeros at the smallest scale, versioning, garbage payloads, the layout-2 goldens);
stream layout 3 (codec version 3: the side information or a factorized fallback per stream, whichever is
shorter; bytes, versions, refusals, the estimate, corruption, the layout-3 goldens).
Training (HyperpriorPrior, the side information, fit_hyperprior_fallback) is
tests/entropy/test_hyperprior_training.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcomp.entropy import EntropyBottleneck, EntropyCodec, bitstream, codec_from_dict, hyperprior
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.hyperprior_prior import HyperpriorPrior
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


FIX = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = FIX / "entropy"
_spec = importlib.util.spec_from_file_location("make_hyperprior_golden", FIX / "make_hyperprior_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def random_codec(rng, C=6, Cz=3, pool=2) -> HyperpriorCodec:
    zc = EntropyCodec.fit(rng.integers(-4, 5, (300, Cz)).astype(np.int32))
    fam = TableFamily.build(scale_grid(0.11, 48.0, 32), Q=1, radius=24)
    A = rng.integers(-3000, 3000, (Cz, C)).astype(np.int32)
    B = rng.integers(-2000, 6000, (C, Cz)).astype(np.int32)
    return HyperpriorCodec(rng.normal(0, 0.2, C).astype(np.float32), zc, fam, A, rng.integers(-5 << 20, 5 << 20, Cz),
                           B, np.full(C, 10 << 12, np.int64), pool=pool)


@pytest.mark.parametrize("shape,pool", [((4, 6, 5, 3), 2), ((2, 6, 1, 1), 2), ((3, 6, 7, 4), 3)])
def test_round_trip_exact_including_out_of_range_values(shape, pool):
    rng = np.random.default_rng(1)
    codec = random_codec(rng, pool=pool)
    k = np.round(rng.laplace(0, 4, shape)).astype(np.int32)
    flat = k.reshape(-1)
    flat[rng.choice(flat.size, min(5, flat.size), replace=False)] = [2**31 - 1, -(2**31), 10**6, -25, 25][: min(5, flat.size)]
    data = codec.compress_symbols(k)
    out = codec.decompress_symbols(data)
    assert out.dtype == np.int32 and out.shape == k.shape
    np.testing.assert_array_equal(out, k)
    assert abs(8 * len(data) - codec.estimate_bits(k)) < 8 * 40 + 64  # headers + two ANS flushes
    small = np.clip(k, -50, 50)
    np.testing.assert_array_equal(codec.decompress(codec.compress(codec.dequantize(small))), codec.dequantize(small))
    empty = np.zeros((0, 6, 2, 2), np.int32)
    np.testing.assert_array_equal(codec.decompress_symbols(codec.compress_symbols(empty)), empty)


def test_errors_and_serialization():
    rng = np.random.default_rng(2)
    codec = random_codec(rng)
    other = random_codec(rng)
    k = rng.integers(-3, 4, (2, 6, 4, 4)).astype(np.int32)
    data = codec.compress_symbols(k)
    with pytest.raises(CodecError, match="made by another codec.*this hyperprior codec"):
        other.decompress_symbols(data)
    bad = bytearray(data)
    bad[-2] ^= 0x10
    with pytest.raises(CodecError):
        codec.decompress_symbols(bytes(bad))
    with pytest.raises(CodecError):
        codec.compress_symbols(k[:, :5])
    d = codec.to_dict()
    assert d["kind"] == "hyperprior"
    back = codec_from_dict(d)
    assert isinstance(back, HyperpriorCodec) and back == codec
    np.testing.assert_array_equal(back.decompress_symbols(data), k)
    with pytest.raises(CodecError):
        HyperpriorCodec.from_bytes(codec.to_bytes()[:-1] + b"\x00")


def test_scale_index_identical_in_numpy_and_torch():
    rng = np.random.default_rng(3)
    codec = random_codec(rng, C=16, Cz=4, pool=3)
    z = rng.integers(-40000, 40000, (5, 4, 3, 2))  # beyond the clamp too
    ref = codec.tables(z, 8, 5)
    assert ref.shape == (5, 16, 8, 5) and ref.min() >= 0 and ref.max() < codec.family.levels
    for zz in (torch.from_numpy(z), torch.from_numpy(z).to(torch.float64), torch.from_numpy(z).to(torch.int32)):
        np.testing.assert_array_equal(codec.tables(zz, 8, 5).numpy(), ref)
    if torch.cuda.is_available():
        np.testing.assert_array_equal(codec.tables(torch.from_numpy(z).cuda(), 8, 5).cpu().numpy(), ref)
    # the index is the documented integer formula at each position's cell
    B, c, F = codec.B.astype(np.int64), codec.c.astype(np.int64), codec.frac_bits
    n, ch, hh, ww = 2, 7, 6, 4
    zc = np.clip(z[n, :, hh // 3, ww // 3], -(2**15), 2**15)
    assert ref[n, ch, hh, ww] == np.clip((B[ch] @ zc + c[ch] + (1 << (F - 1))) >> F, 0, codec.family.levels - 1)


def test_golden_stream_decodes_and_reencodes_bit_exactly():
    regenerated, k, regenerated_stream = golden.make()
    codec = HyperpriorCodec.from_bytes((FIX / "entropy" / "hyperprior_codec.bin").read_bytes())
    assert codec.to_bytes() == (FIX / "entropy" / "hyperprior_codec.bin").read_bytes()
    v1 = (FIX / "entropy" / "hyperprior_stream.bin").read_bytes()  # format version 1: still decodes
    committed = (FIX / "entropy" / "hyperprior_stream_v2.bin").read_bytes()
    np.testing.assert_array_equal(np.load(FIX / "entropy" / "hyperprior_symbols.npy"), k)
    loaded = HyperpriorCodec.from_bytes(codec.to_bytes())
    np.testing.assert_array_equal(loaded.decompress_symbols(v1), k)
    np.testing.assert_array_equal(loaded.decompress_symbols(committed), k)
    assert codec.compress_symbols(k) == committed
    # the committed generator: integers exactly, float-built tables within a count (tests/entropy/regen.py)
    assert_regenerated(codec, regenerated, [(k, committed, regenerated_stream)])
    assert v1[:2] == b"\xfc\xec" and committed[1] >> 6 == 2 and len(committed) < len(v1)


def test_trained_hyperprior_codes_fewer_bits_than_factorized_on_spatially_varying_scales():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def data(n, C=4, H=8, W=8):
        lvl = rng.choice([0.3, 6.0], size=(n, 1, H // 4, W // 4))  # per-image, per-region scale
        sc = np.repeat(np.repeat(lvl, 4, 2), 4, 3) * np.ones((1, C, 1, 1))
        return np.round(rng.laplace(0, sc)).astype(np.float32)

    ytr, yte = torch.from_numpy(data(256)), data(128)
    hp, eb = HyperpriorPrior(4, z_channels=1, pool=4), EntropyBottleneck(4)
    for m in (hp, eb):
        opt = torch.optim.Adam(m.parameters(), 3e-2)
        for _ in range(400):
            _, bits = m(ytr[torch.randint(0, 256, (64,))])
            opt.zero_grad()
            bits.mean().backward()
            opt.step()
    hc, fc = hp.eval().freeze(), eb.eval().freeze()
    k, kf = hc.quantize(yte), fc.quantize(yte)
    sh, sf = hc.compress_symbols(k), fc.compress_symbols(kf)
    np.testing.assert_array_equal(hc.decompress_symbols(sh), k)
    with torch.no_grad():
        twin = hp(torch.from_numpy(yte))[1].sum().item()
    assert abs(8 * len(sh) - twin) < 0.01 * twin  # the frozen integer codec matches its float twin (measured 0.4%)
    assert len(sh) < 0.9 * len(sf), (len(sh), len(sf))  # measured 0.83 (400 steps; 0.88 with the index-unit synthesis)


# ==================================================================================================
# (formerly test_hyperprior_layout2.py)
# Hyperprior stream layout 2 (codec version 2): rows narrowed by width class with the folded frequency
# floors reclaimed, symbols by (class, table, position), tail symbols for escapes.
#
# Checks the reclaimed tables' integer rule, exact round trips (hypothesis shapes and scales, escapes
# within and beyond the family radius, int32 extremes, both decode paths), the rate of zeros at the
# smallest scale (far below layout 1's floor of -log2(1 - 97 / 2**16) = 0.0021 bits), versioning
# (version-1 codecs and streams keep working, the layouts never mix), corrupt input and the goldens.
# ==================================================================================================
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


# ------------------------------------------------------------------------------------------ goldens
def test_layout_2_goldens_decode_and_reencode_byte_for_byte():
    codec = HyperpriorCodec.from_bytes((GOLDEN / "hyperprior_codec_layout2.bin").read_bytes())
    assert codec.version == 2
    k = np.load(GOLDEN / "hyperprior_symbols.npy")
    stream = (GOLDEN / "hyperprior_layout2_stream.bin").read_bytes()
    small = (GOLDEN / "hyperprior_layout2_small_stream.bin").read_bytes()
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
    v1 = HyperpriorCodec.from_bytes((GOLDEN / "hyperprior_codec.bin").read_bytes())
    assert v1.version == 1 and v1.to_bytes()[5:-32] == codec.to_bytes()[5:-32]
    np.testing.assert_array_equal(v1.decompress_symbols((GOLDEN / "hyperprior_stream.bin").read_bytes()), k)
    assert v1.compress_symbols(k) == (GOLDEN / "hyperprior_stream_v2.bin").read_bytes()
    # the committed generator reproduces the files
    c2, k2, s2, small2 = golden.make_layout2()
    np.testing.assert_array_equal(k2, k)
    assert_regenerated(codec, c2, [(k, stream, s2), (k[:, :, :1, :1], small, small2)])


# ==================================================================================================
# (formerly test_hyperprior_fallback.py)
# Hyperprior stream layout 3 (codec version 3): the side information and Laplace tables, or a factorized
# fallback for y, whichever codes a stream shorter.
#
# Checks: exact round trips in both modes (the mode the encoder picks is the shorter one, ties to the
# hyperprior), the codec's bytes, versions and refusals, the estimate, corruption, the goldens, and the
# training-side :func:`~featcomp.train.refit.fit_hyperprior_fallback` (same integers, never more bits).
# ==================================================================================================
def mode_of(codec: HyperpriorCodec, data: bytes) -> int:
    h = bitstream.unpack(data, codec.digest, codec.channels)
    field, _ = bitstream.decode_varint(h.payload, 0)
    return field % 2


@pytest.fixture(scope="module")
def codecs():
    c3, wide, _, narrow, _ = golden.make_layout3()
    return golden.make_codec(version=2), c3, wide, narrow


def test_each_stream_takes_the_shorter_mode_and_round_trips(codecs):
    c2, c3, wide, narrow = codecs
    rng = np.random.default_rng(5)
    cases = [wide, narrow, np.zeros((2, 5, 4, 4), np.int32), narrow[:1, :, :1, :1],
             np.round(rng.laplace(0, 2.0, (4, 5, 7, 6))).astype(np.int32)]
    cases[-1][0, 3, 2, 2] = 2**31 - 1  # an escape in either mode
    modes = []
    for k in cases:
        s3 = c3.compress_symbols(k)
        np.testing.assert_array_equal(c3.decompress_symbols(s3), k)
        hyper = len(c2.compress_symbols(k)) - len(bitstream.encode_varint(0))  # the same layout-2 payload
        fall = len(c3.fallback.compress_symbols(k))
        m = mode_of(c3, s3)
        modes.append(m)
        assert len(s3) <= min(hyper, fall) + 8  # never more than a few bytes over the better of the two
        if m == 1:
            assert fall < hyper + 4
        np.testing.assert_array_equal(c3.decompress_symbols(s3), k)
    assert modes[0] == 0 and modes[1] == 1 and modes[2] == 0  # wide: hyperprior; narrow: fallback; tie: hyperprior
    with pytest.raises(CodecError):
        c2.decompress_symbols(c3.compress_symbols(narrow))  # the layouts never mix (digest in the CRC)
    empty = np.zeros((0, 5, 3, 3), np.int32)
    np.testing.assert_array_equal(c3.decompress_symbols(c3.compress_symbols(empty)), empty)


def test_stream_mode_reads_the_mode_the_encoder_chose(codecs):
    c2, c3, wide, narrow = codecs
    for k, want in ((wide, 0), (narrow, 1)):
        s3 = c3.compress_symbols(k)
        assert c3.stream_mode(s3) == mode_of(c3, s3) == want
        assert c2.stream_mode(c2.compress_symbols(k)) == 0  # no fallback before version 3
    with pytest.raises(CodecError):
        c3.stream_mode(c2.compress_symbols(wide))  # another codec's stream (digest)


def test_the_estimate_is_the_cheaper_mode(codecs):
    c2, c3, wide, narrow = codecs
    for k in (wide, narrow):
        assert c3.estimate_bits(k) == pytest.approx(min(c2.estimate_bits(k), c3.fallback.estimate_bits(k)))
    assert c3.estimate_bits(narrow) < c2.estimate_bits(narrow)


def test_codec_bytes_versions_and_refusals(codecs):
    c2, c3, _, _ = codecs
    assert c3.version == 3 and c3.fallback is not None and c3.digest != c2.digest
    back = HyperpriorCodec.from_bytes(c3.to_bytes())
    assert back == c3 and back.fallback == c3.fallback and back.version == 3
    other = c2.with_fallback(EntropyCodec.fit(np.zeros((2, 5, 1, 1), np.int32)))
    assert other.digest != c3.digest  # the fallback is part of the codec's identity
    with pytest.raises(CodecError, match="version 3"):
        HyperpriorCodec(c2.offsets, c2.z_codec, c2.family, c2.A, c2.b, c2.B, c2.c, version=3)
    with pytest.raises(CodecError, match="version 3"):
        HyperpriorCodec(c2.offsets, c2.z_codec, c2.family, c2.A, c2.b, c2.B, c2.c, version=2, fallback=c3.fallback)
    with pytest.raises(CodecError, match="channels"):
        c2.with_fallback(EntropyCodec.fit(np.zeros((2, 4, 1, 1), np.int32)))
    with pytest.raises(CodecError, match="version-1"):
        golden.make_codec(version=1).with_fallback(c3.fallback)
    raw = bytearray(c3.to_bytes())
    with pytest.raises(CodecError):
        HyperpriorCodec.from_bytes(bytes(raw[:-40]) + bytes(raw[-32:]))


def test_corrupt_streams_raise_codec_error(codecs):
    _, c3, wide, narrow = codecs
    rng = np.random.default_rng(9)
    for k in (wide, narrow):
        assert_flips_and_cuts_refused(c3, c3.compress_symbols(k), rng)
    # forged payloads: a fallback mode with side information, garbage words in either mode
    junk = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    payloads = [bitstream.encode_varint(2 * 3 + 1) + b"\x00" * 7 + junk, bitstream.encode_varint(1) + b"\x00" * 3 + junk,
                bitstream.encode_varint(1) + b"\x00" * 3]
    refused = forged_streams_refused(c3, narrow.shape, payloads, narrow)
    assert len(refused) >= 2  # the side-information one always; garbage words refused or decoded to other values


def test_layout_3_goldens_decode_and_reencode_byte_for_byte():
    codec = HyperpriorCodec.from_bytes((GOLDEN / "hyperprior_codec_layout3.bin").read_bytes())
    assert codec.version == 3
    wide, narrow = np.load(GOLDEN / "hyperprior_layout3_symbols.npy"), np.load(GOLDEN / "hyperprior_layout3_fallback_symbols.npy")
    s0, s1 = (GOLDEN / "hyperprior_layout3_stream.bin").read_bytes(), (GOLDEN / "hyperprior_layout3_fallback_stream.bin").read_bytes()
    assert mode_of(codec, s0) == 0 and mode_of(codec, s1) == 1
    np.testing.assert_array_equal(codec.decompress_symbols(s0), wide)
    np.testing.assert_array_equal(codec.decompress_symbols(s1), narrow)
    assert codec.compress_symbols(wide) == s0 and codec.compress_symbols(narrow) == s1
    # the layout-2 golden codec holds the same parameters (everything but the version and the fallback)
    v2 = HyperpriorCodec.from_bytes((GOLDEN / "hyperprior_codec_layout2.bin").read_bytes())
    assert codec == v2.with_fallback(codec.fallback)
    c, k0, g0, k1, g1 = golden.make_layout3()  # the committed generator: integers exactly, tables within a count
    np.testing.assert_array_equal(k0, wide)
    np.testing.assert_array_equal(k1, narrow)
    assert_regenerated(codec, c, [(wide, s0, g0), (narrow, s1, g1)])

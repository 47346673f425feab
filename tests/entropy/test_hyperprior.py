"""Scale hyperprior codec: exact round trips, integer scale index identical in numpy/torch, golden
stream, kind registry, and a trained hyperprior beats the factorized prior on spatially varying scales."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from featcomp.entropy import EntropyBottleneck, EntropyCodec, codec_from_dict
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.hyperprior_prior import HyperpriorPrior
from featcomp.entropy.indexed import TableFamily, scale_grid
from featcomp.errors import CodecError

from .regen import assert_regenerated

FIX = Path(__file__).resolve().parents[1] / "fixtures"
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

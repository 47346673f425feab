"""Hyperprior stream layout 3 (codec version 3): the side information and Laplace tables, or a factorized
fallback for y, whichever codes a stream shorter.

Checks: exact round trips in both modes (the mode the encoder picks is the shorter one, ties to the
hyperprior), the codec's bytes, versions and refusals, the estimate, corruption, the goldens, and the
training-side :func:`~featcomp.train.refit.fit_hyperprior_fallback` (same integers, never more bits).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from featcomp.entropy import EntropyCodec, bitstream
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.errors import CodecError, ConfigError

from .conftest import assert_flips_and_cuts_refused, forged_streams_refused
from .regen import assert_regenerated

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIX = FIXTURES / "entropy"
_spec = importlib.util.spec_from_file_location("make_hyperprior_golden", FIXTURES / "make_hyperprior_golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


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
    codec = HyperpriorCodec.from_bytes((FIX / "hyperprior_codec_layout3.bin").read_bytes())
    assert codec.version == 3
    wide, narrow = np.load(FIX / "hyperprior_layout3_symbols.npy"), np.load(FIX / "hyperprior_layout3_fallback_symbols.npy")
    s0, s1 = (FIX / "hyperprior_layout3_stream.bin").read_bytes(), (FIX / "hyperprior_layout3_fallback_stream.bin").read_bytes()
    assert mode_of(codec, s0) == 0 and mode_of(codec, s1) == 1
    np.testing.assert_array_equal(codec.decompress_symbols(s0), wide)
    np.testing.assert_array_equal(codec.decompress_symbols(s1), narrow)
    assert codec.compress_symbols(wide) == s0 and codec.compress_symbols(narrow) == s1
    # the layout-2 golden codec holds the same parameters (everything but the version and the fallback)
    v2 = HyperpriorCodec.from_bytes((FIX / "hyperprior_codec_layout2.bin").read_bytes())
    assert codec == v2.with_fallback(codec.fallback)
    c, k0, g0, k1, g1 = golden.make_layout3()  # the committed generator: integers exactly, tables within a count
    np.testing.assert_array_equal(k0, wide)
    np.testing.assert_array_equal(k1, narrow)
    assert_regenerated(codec, c, [(wide, s0, g0), (narrow, s1, g1)])


def test_fit_hyperprior_fallback_keeps_the_integers_and_never_costs_more(tmp_path):
    import featcomp
    from featcomp.model import load_model, save_model
    from featcomp.train.refit import fit_hyperprior_fallback

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (64, 8, 6, 6)).astype(np.float32)
    r = featcomp.train.train_head(x[:48], objective="reconstruct", lam=1e-1, entropy_model="hyperprior",
                                  latent_channels=4, epochs=2, batch_size=16, progress=False)
    head = r.head.freeze()
    h3 = fit_hyperprior_fallback(head, x[:48])
    assert head.codec.version == 2 and h3.codec.version == 3 and h3.kind == "hyperprior"
    for part in (x[48:56], x[56:]):
        k = head.encode(torch.from_numpy(part))
        np.testing.assert_array_equal(h3.encode(torch.from_numpy(part)), k)
        np.testing.assert_array_equal(h3.decode(k), head.decode(k))
        s2, s3 = head.codec.compress_symbols(k), h3.codec.compress_symbols(k)
        assert len(s3) <= len(s2) + 1  # the varint of the doubled z length may take one more byte
        np.testing.assert_array_equal(h3.codec.decompress_symbols(s3), k)
    m = load_model(save_model(tmp_path / "h3.safetensors", h3))
    assert m.head.codec == h3.codec and m.head.codec.version == 3
    with pytest.raises(ConfigError, match="hyperprior"):
        fit_hyperprior_fallback(featcomp.train.train_head(x[:, :, 0, 0], objective="reconstruct", lam=1e-1,
                                                          latent_channels=4, epochs=1, progress=False).head, x)
    with pytest.raises(ConfigError, match="N, C, H, W"):
        fit_hyperprior_fallback(head, x[:0])

"""Temporal stream layout 3 (codec version 3, issue 7): per-frame restart flags.

A frame after a shot change is predicted worse by its predecessor than by no frame at all; layout 3
lets the encoder code such a frame with the fresh context (a flag per frame, read first by the
decoder). Checks: exact round trips (cuts, escapes, small and sorted frames, lockstep), the encoder's
rule (restart exactly where it saves bits; never worse than layout 2 beyond the flags), the estimate,
versioning, corruption, the goldens, and the training twin's pricing of restarts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from featcomp.entropy import bitstream
from featcomp.entropy.temporal import RESTART_FLAG_BITS, TemporalCodec
from featcomp.entropy.temporal_prior import TemporalPrior, fit_temporal_prior
from featcomp.errors import CodecError

from .conftest import assert_flips_and_cuts_refused, forged_streams_refused
from .regen import assert_regenerated
from .test_temporal import golden
from .test_temporal_layout2 import latents, varied_codec

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "entropy"


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
    codec = TemporalCodec.from_bytes((FIX / "temporal_codec_layout3.bin").read_bytes())
    assert codec.version == 3
    k = np.load(FIX / "temporal_layout3_symbols.npy")
    big = np.load(FIX / "temporal_layout2_big_symbols.npy")
    s = (FIX / "temporal_layout3_stream.bin").read_bytes()
    big_s = (FIX / "temporal_layout3_big_stream.bin").read_bytes()
    np.testing.assert_array_equal(codec.decompress_symbols(s), k)
    np.testing.assert_array_equal(codec.decompress_symbols(big_s), big)
    a, b = codec.decompress_chunks([s, big_s])
    np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(b, big)
    assert codec.restarts(k).nonzero()[0].tolist() == [5, 10]  # the stream carries set flags
    assert codec.compress_symbols(k) == s and codec.compress_symbols(big) == big_s
    # same parameters as the layout-2 golden codec: only the version (and so the digest) differs
    v2 = TemporalCodec.from_bytes((FIX / "temporal_codec_layout2.bin").read_bytes())
    assert v2.to_bytes()[5:-32] == codec.to_bytes()[5:-32]
    c3, k3, s3, _, bs3 = golden.make_layout3()
    np.testing.assert_array_equal(k3, k)
    assert_regenerated(codec, c3, [(k, s, s3), (big, big_s, bs3)])


def test_prior_prices_restarts_like_the_codec_and_freezes_to_the_matching_layout():
    torch.manual_seed(0)
    rng = np.random.default_rng(15)
    C = 4
    seqs = [with_cuts(rng, 12, C, (), (4, 8), sigma=2.0, start_far=False).astype(np.float32) for _ in range(24)]
    x = torch.as_tensor(np.stack(seqs[:4]))
    p_on, p_off = TemporalPrior(C), TemporalPrior(C, restarts=False)
    p_off.load_state_dict(p_on.state_dict())
    p_on.eval(), p_off.eval()
    b_on, b_off = p_on.bits(x, x), p_off.bits(x, x)
    assert torch.equal(b_on[:, 0], b_off[:, 0])  # the first frame has no flag
    assert (b_on[:, 1:] <= b_off[:, 1:] + RESTART_FLAG_BITS[0] + 1e-4).all()
    assert (b_on[:, 8] < b_off[:, 8]).all()  # the cut back to near zero is priced as a restart
    assert p_on.freeze(np.zeros(C)).version == 3 and p_off.freeze(np.zeros(C)).version == 2
    # fitted with restarts, the frozen codec restarts at the cut and codes within the prior's estimate
    # (its integer tables cap the cost of outliers at their frequency floor, so it may code cheaper)
    fit_temporal_prior(p_on, seqs[4:], window=12, steps=150, lr=3e-2)
    codec = p_on.freeze(np.zeros(C, np.float32))
    k = np.stack(seqs[:4]).astype(np.int32)
    est = float(p_on.bits(torch.as_tensor(k.astype(np.float32)), torch.as_tensor(k.astype(np.float32))).detach().sum())
    coded = sum(codec.estimate_bits(kk) for kk in k)
    assert 0.8 * est <= coded <= 1.02 * est
    assert sum(codec.restarts(kk)[8] for kk in k) == 4

"""scripts/bench_rc_temporal.py: the integer requantization between rate levels, the table-cost function it
uses for the variants that have no stream writer, and a --quick run on synthetic clips.

The numbers of a quick run mean nothing; what is checked holds for any data: the requantization is
the exact rational rounding, done in integers only; the cost function agrees with the codec's own
estimate and with its stored bytes; every variant codes the same integers at the same agreement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_rc_temporal.py"
sys.path.insert(0, str(ROOT))

from scripts import bench_rc_temporal as b  # noqa: E402


def test_requantize_is_integer_round_half_up_of_the_fixed_point_rational():
    steps = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
    R = b.ratio_table(steps)
    assert R.dtype == np.int64 and R[3, 3] == 1 << b.FP_RATIO and R[0, 10] == round(2**16 / 32)
    rng = np.random.default_rng(0)
    T, C = 64, 9
    k = rng.integers(-300, 300, size=(T, C))
    k[0, 0], k[1, 1] = 2**15, -(2**15)  # the clip limit of the temporal context, both signs
    O = rng.integers(-256, 256, size=C)
    src, dst = rng.integers(0, 11, T), rng.integers(0, 11, T)
    out = b.requantize(k, src, dst, R, O)
    assert out.dtype == np.int64
    for t in range(T):
        for c in range(C):
            # exact rational: ((k + O/2**8) * R/2**16 - O/2**8), rounded half up
            v = (Fraction(int(k[t, c])) + Fraction(int(O[c]), 256)) * Fraction(int(R[src[t], dst[t]]), 2**16) \
                - Fraction(int(O[c]), 256)
            assert out[t, c] == (v + Fraction(1, 2)).__floor__(), (t, c)
    # same level: identity; close to the float requantization elsewhere
    same = b.requantize(k, src, src, R, O)
    np.testing.assert_array_equal(same, k)
    off = O / 256.0
    flt = np.floor((k + off) * np.asarray(steps)[src][:, None] / np.asarray(steps)[dst][:, None] - off + 0.5)
    assert np.abs(out - flt).max() <= 1


def test_context_sequence_requantizes_each_frame_to_the_next_frames_level():
    R = b.ratio_table((1.0, 2.0, 4.0))
    k = np.array([[8, -8], [4, 4], [2, 2], [2, -2]])
    lv = np.array([0, 1, 2, 2])
    ctx = b.context_sequence(k, lv, R, np.zeros(2, np.int64))
    np.testing.assert_array_equal(ctx, [[4, -4], [2, 2], [2, 2], [2, -2]])


def test_table_cost_matches_the_codec_estimate_and_the_stored_bytes():
    import torch

    from featcomp.entropy import bitstream
    from featcomp.entropy.temporal_prior import TemporalPrior, fit_temporal_prior

    rng = np.random.default_rng(1)
    walk = np.cumsum(rng.integers(-1, 2, size=(96, 12)), 0)
    seqs = [walk[i:i + 24] for i in range(0, 96, 24)]
    torch.manual_seed(0)
    p = TemporalPrior(12)
    fit_temporal_prior(p, seqs, steps=40)
    c = p.freeze(np.zeros(12, np.float32))
    for s in seqs:
        hdr = 8 * (len(bitstream.pack(s.shape, c.digest, b"")) + b.ANS_FLUSH_BYTES)
        assert b.table_cost(c, s) == pytest.approx(c.estimate_bits(s) + hdr, abs=1e-6)
        stored = 8 * len(c.compress_symbols(s))
        assert abs(b.table_cost(c, s) - stored) <= 64  # word rounding of the ANS flush
        # the context given explicitly as the frames themselves is the codec's own context
        assert b.table_cost(c, s, ctx=s) == pytest.approx(b.table_cost(c, s))
        # forcing every frame onto the fresh context never beats the encoder's own restart rule
        assert b.table_cost(c, s, force_fresh=np.ones(len(s), bool)) >= b.table_cost(c, s) - 1e-6


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(600)
def test_quick_run_reports_every_variant_for_every_held_out_video(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--data", str(tmp_path / "data")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    saved = json.loads((tmp_path / "data" / "cache" / "rc_temporal_results.json").read_text())
    assert saved["meta"]["backbone"] == "tinyB"
    res = saved["videos"]
    assert sorted(res) == sorted(["bikes", "carphone_pristine", "bigbuckbunny"])
    for r in res.values():
        assert r["frames"] > 0 and 0.0 <= r["top1"] <= 1.0
        for key in ("factorized", "naive", "naive_est", "aware", "restart", "restart_segfit"):
            assert np.isfinite(r[key]) and r[key] >= r["level_bits"], key
    assert "(3) temporal, level-aware context" in p.stdout


@pytest.mark.slow
@pytest.mark.video
@pytest.mark.timeout(600)
def test_library_quick_run_codes_every_held_out_video_with_both_codecs(tmp_path):
    """scripts/bench_rc_temporal_lib.py: the library path (fit_temporal_codec under rate control, clips by
    the Extractor) reports stored bits and decoded agreement for both codecs on every held-out video."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_rc_temporal_lib.py"), "--quick", "--data",
                        str(tmp_path / "data")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    res = json.loads((tmp_path / "data" / "cache" / "rc_temporal_lib_results.json").read_text())
    assert sorted(res) == sorted(["bikes", "carphone_pristine", "bigbuckbunny"])
    for r in res.values():
        for name in ("factorized", "temporal"):
            c = r[name]
            assert c["frames"] > 0 and 0.0 <= c["top1"] <= 1.0
            assert c["bits_per_frame"] > 8  # at least the clips' headers, spread over their frames
        assert r["factorized"]["frames"] == r["temporal"]["frames"]
    assert "temporal bits/frame" in p.stdout


def test_sticky_levels_keep_the_top1_never_coarsen_and_never_add_level_changes():
    import torch

    from featcomp.entropy import EntropyCodec
    from featcomp.head import FrozenHead
    from featcomp.ratecontrol import RateControl, choose_levels, step_ladder_head

    torch.manual_seed(0)
    steps = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
    head = step_ladder_head(12, 12, steps, analysis="linear", synthesis="linear")
    frozen = FrozenHead.from_head(head, EntropyCodec.fit(np.zeros((2, 12), np.int32)))
    teacher = torch.nn.Linear(12, 6)
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 0.3, size=(200, 12)), 0).astype(np.float32)  # a slowly moving "video"
    moved = False
    with torch.no_grad():
        ch = choose_levels(frozen, x, teacher, RateControl(target_agreement=1.0))
        for reach in (1, 3, 6):
            lv = b.sticky_levels(frozen, x, teacher, ch.levels, reach)
            assert (lv <= ch.levels).all() and (ch.levels - lv <= reach).all()
            assert np.count_nonzero(np.diff(lv)) <= np.count_nonzero(np.diff(ch.levels.astype(np.int64)))
            moved |= bool((lv != ch.levels).any())
            ref = teacher(torch.from_numpy(x)).argmax(1).numpy()
            for t in np.flatnonzero(lv != ch.levels):
                v = int(lv[t])
                y = torch.from_numpy(frozen.decode(frozen.encode(x[t:t + 1], rate=v), levels=np.array([v])))
                assert teacher(frozen.synthesize(y)).argmax(1).item() == ref[t]
        assert np.count_nonzero(np.diff(ch.levels.astype(np.int64))) > 0 and moved  # the case is not vacuous

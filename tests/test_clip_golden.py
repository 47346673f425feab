"""Golden compressed-clip containers (formats 1, 2, 3) decode and re-serialize byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featcomp.entropy import EntropyCodec
from featcomp.model import CompressedClip

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name,version", [("clip_v1.bin", 1), ("clip_v2.bin", 2), ("clip_v3.bin", 3)])
def test_golden_clip_reads_and_rewrites_identically(name, version):
    b = (FIXTURES / "model" / name).read_bytes()
    assert b[:4] == b"FCCL" and b[4] == version
    clip = CompressedClip.from_bytes(b)
    assert clip.to_bytes() == b
    assert clip.shape == (60, 8, 3) and clip.codec_digest == "0123456789abcdef" * 4
    np.testing.assert_array_equal(clip.timestamps, np.arange(60) / 5.0)
    np.testing.assert_array_equal(clip.frame_indices, np.cumsum(np.arange(60) % 3 + 1))
    codec = EntropyCodec.from_bytes((FIXTURES / "entropy" / "codec.bin").read_bytes())
    np.testing.assert_array_equal(codec.decompress_symbols(clip.data), np.load(FIXTURES / "entropy" / "symbols.npy"))
    assert clip.rate == (1.5 if version == 2 else None)
    if version == 3:
        np.testing.assert_array_equal(clip.levels, (np.arange(60) * 7) % 11)
        assert clip.level_bits == 4
        assert clip.bits_per_frame == 8 * (len(clip.data) + 30) / 60  # 60 frames x 4 bits = 30 bytes
    else:
        assert clip.levels is None

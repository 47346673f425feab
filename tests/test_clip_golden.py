"""Golden compressed-clip containers (formats 1 to 5) decode and re-serialize byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featcomp.entropy import EntropyCodec
from featcomp.errors import CodecError
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


# (file, version, container bytes): format 5 keeps 4-byte digest prefixes (8 bytes fewer) and stores the
# timestamp steps 1/5 and 1/4 as two one-byte varints instead of a float64 (6 fewer): 14 bytes a clip
COMPACT = [("clip_v4.bin", 4, 97), ("clip_v4_rate.bin", 4, 62), ("clip_v5.bin", 5, 83), ("clip_v5_rate.bin", 5, 48)]


@pytest.mark.parametrize("name,version,overhead", COMPACT)
def test_golden_compact_clip_reads_and_rewrites_identically(name, version, overhead):
    """Formats 4 and 5: the compact binary header (digest prefixes, varints, kind code, CRC-32)."""
    b = (FIXTURES / "model" / name).read_bytes()
    assert b[:4] == b"FCCL" and b[4] == version
    clip = CompressedClip.from_bytes(b)
    assert clip.to_bytes() == b and clip.format_version == version
    assert clip.shape == (60, 8, 3)
    keep = 16 if version == 4 else 8
    assert clip.codec_digest == "0123456789abcdef"[:keep] and clip.model_digest == "fedcba9876543210"[:keep]
    assert clip.made_by("0123456789abcdef" * 4) and not clip.made_by("1123456789abcdef" * 4)
    codec = EntropyCodec.from_bytes((FIXTURES / "entropy" / "codec.bin").read_bytes())
    np.testing.assert_array_equal(codec.decompress_symbols(clip.streams[0]),
                                  np.load(FIXTURES / "entropy" / "symbols.npy"))
    if "rate" not in name:
        np.testing.assert_array_equal(clip.timestamps, np.arange(60) / 5.0)
        np.testing.assert_array_equal(clip.frame_indices, np.cumsum(np.arange(60) % 3 + 1))
        np.testing.assert_array_equal(clip.levels, (np.arange(60) * 7) % 11)
        assert clip.level_bits == 4 and clip.rate is None and clip.kind == "factorized"
        # timestamps k / 5 and irregular frame indices are lines plus a few bits of residual per frame: the
        # container costs 97 bytes in all in format 4, 83 in format 5 (format 3: 1,265 bytes, raw arrays + JSON)
        assert len(b) - len(clip.data) == overhead
    else:
        np.testing.assert_array_equal(clip.timestamps, 1.0 + 0.25 * np.arange(60))
        np.testing.assert_array_equal(clip.frame_indices, 3 * np.arange(60) + 7)
        assert clip.rate == 1.5 and clip.kind == "temporal" and clip.chunks == (len(clip.data),)
        # exact lines (zero-width residuals): the whole container overhead is 62 bytes (format 5: 48)
        assert len(b) - len(clip.data) == overhead


@pytest.mark.parametrize("name", ["clip_v4.bin", "clip_v5.bin", "clip_v5_rate.bin"])
def test_compact_clip_damage_is_a_codec_error(name):
    """Every byte of a format-4/5 header and side arrays is under its CRC: a flip anywhere before the stream
    is a CodecError, never a wrong clip."""
    from featcomp.errors import CodecError

    b = (FIXTURES / "model" / name).read_bytes()
    clip = CompressedClip.from_bytes(b)
    head = len(b) - len(clip.data)
    for i in range(5, head):
        bad = bytearray(b)
        bad[i] ^= 0x10
        with pytest.raises(CodecError):
            CompressedClip.from_bytes(bytes(bad))
    for cut in range(5, head):
        with pytest.raises(CodecError):
            CompressedClip.from_bytes(b[:cut])


@pytest.mark.parametrize("tb, step", [(1 / 12800, 2560), (1001 / 30000, 3), (1 / 90000, 3003), (0.001, 40)])
def test_compact_clip_stores_container_timestamps_exactly_in_a_few_bytes(tb, step):
    """Timestamps as a decoder makes them ((pts - pts0) * time_base, float64) round-trip bit for bit, and a
    50-frame clip's whole container overhead (header, timestamps, frame indices, CRC) stays under 90 bytes,
    less than a third of format 2's 280+ bytes for the same clip."""
    rng = np.random.default_rng(0)
    for start_pts in (0, 7, 123456):
        pts = start_pts + step * np.arange(50)
        ts = (pts - pts[0]).astype(np.float64) * tb
        clip = CompressedClip(data=b"\x01" * 10, shape=(50, 4), timestamps=ts, frame_indices=np.sort(pts // 7),
                              codec_digest="ab" * 32, model_digest="cd" * 32)
        b = clip.to_bytes()
        back = CompressedClip.from_bytes(b)
        assert back.timestamps.dtype == np.float64
        assert np.array_equal(back.timestamps.view(np.int64), ts.view(np.int64))
        np.testing.assert_array_equal(back.frame_indices, np.sort(pts // 7))
        old = CompressedClip(**{**clip.__dict__, "format_version": 2}).to_bytes()
        assert len(b) - 10 < 90 and 3 * (len(b) - 10) < len(old) - 10, (len(b), len(old))
        assert len(old) - 10 > 280 and CompressedClip.from_bytes(old).made_by("ab" * 32)
        # variable frame rate (ticks jittered): still exact, and still smaller than format 2's raw arrays
        vfr = (pts + (rng.random(50) < 0.2) - pts[0]).astype(np.float64) * tb
        clip = CompressedClip(**{**clip.__dict__, "timestamps": vfr})
        back = CompressedClip.from_bytes(clip.to_bytes())
        assert np.array_equal(back.timestamps.view(np.int64), vfr.view(np.int64))
        assert len(clip.to_bytes()) < len(CompressedClip(**{**clip.__dict__, "format_version": 2}).to_bytes())


@pytest.mark.parametrize("version", [4, 5])
def test_compact_clip_forged_fields_with_a_valid_crc_are_refused(version):
    """A header rewritten with a recomputed CRC still cannot declare an impossible width, kind, count, flag
    or timestamp step."""
    import struct
    import zlib

    from featcomp.errors import CodecError

    clip = CompressedClip(data=b"", shape=(4, 3), timestamps=np.zeros(4), frame_indices=np.arange(4),
                          codec_digest="ab" * 32, levels=np.array([0, 1, 2, 3]), level_bits=2,
                          format_version=None if version == 5 else 4)
    b = clip.to_bytes()
    assert b[4] == version

    def forge(pos: int, value: int, src: bytes = b) -> bytes:
        body = bytearray(src[:-4])
        body[pos] = value
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))

    # magic 4, version, flags, kind, codec digest 8 (v5: 4), ndim + shape 3, ts step 8 + width (v5: the
    # rational 0/1, two varints, + width), fi start/step/width
    width_at = 4 + 1 + 1 + 1 + 8 + 3 + 9 + 3 if version == 4 else 4 + 1 + 1 + 1 + 4 + 3 + 3 + 3
    assert b[width_at] == 2
    with pytest.raises(CodecError, match="width"):
        CompressedClip.from_bytes(forge(width_at, 9))
    with pytest.raises(CodecError, match="kind code"):
        CompressedClip.from_bytes(forge(6, 7))
    if version == 4:  # flag 128 is unknown to format 4
        with pytest.raises(CodecError, match="flags"):
            CompressedClip.from_bytes(forge(5, b[5] | 0x80))
    else:
        assert b[5] & 0x80  # the step 0 is the rational 0/1
        den_at = 4 + 1 + 1 + 1 + 4 + 3 + 1
        assert b[den_at] == 1
        with pytest.raises(CodecError, match="timestamp step"):
            CompressedClip.from_bytes(forge(den_at, 0))  # a zero denominator
        with pytest.raises(CodecError, match="flags"):  # a rational step without predicted timestamps
            CompressedClip.from_bytes(forge(5, b[5] & ~1))
        # one form per step, so that a read clip writes back the same bytes: 2/8 for 1/4, or a float64 step that
        # fits a short rational, are refused (another writer's clip would otherwise not round-trip)
        q = CompressedClip(data=b"", shape=(4, 3), timestamps=0.25 * np.arange(4), frame_indices=np.arange(4),
                           codec_digest="ab" * 32).to_bytes()
        at = 4 + 1 + 1 + 1 + 4 + 3  # magic, version, flags, kind, digest, ndim + shape: then zz(num), den
        assert q[5] & 0x80 and q[at:at + 2] == bytes([2, 4])  # 1/4
        assert CompressedClip.from_bytes(q).timestamps.tolist() == [0.0, 0.25, 0.5, 0.75]
        with pytest.raises(CodecError, match="canonical"):
            CompressedClip.from_bytes(forge(at + 1, 8, forge(at, 4, q)))  # 2/8
        body = bytearray(q[:at]) + struct.pack("<d", 0.25) + q[at + 2:-4]
        body[5] &= ~0x80
        with pytest.raises(CodecError, match="float64"):
            CompressedClip.from_bytes(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
        with pytest.raises(CodecError, match="cannot be written as format 4"):
            CompressedClip(**{**CompressedClip.from_bytes(q).__dict__, "format_version": 4}).to_bytes()


@pytest.mark.parametrize("step", [0.2, 1 / 25, 1001 / 30000, 1 / 3, 0.1 + 0.2, np.pi / 10, 1e-9, 123.456])
def test_format_5_stores_a_rational_step_only_when_it_is_exact(step):
    """Timestamps round-trip bit for bit in format 5 whatever the step; the header's step is stored as a
    rational only when num / den gives it back exactly (one correctly rounded IEEE division, the same on
    every machine), and common frame steps (1/5, 1/25, 1001/30000 s) get that form."""
    from fractions import Fraction

    from featcomp.model.headers import ClipHeader, _rational

    ts = 2.0 + step * np.arange(30)
    clip = CompressedClip(data=b"\x01", shape=(30, 2), timestamps=ts, frame_indices=np.arange(30),
                          codec_digest="ab" * 32)
    b = clip.to_bytes()
    back = CompressedClip.from_bytes(b)
    assert np.array_equal(back.timestamps.view(np.int64), ts.view(np.int64))
    from featcomp.entropy.bitstream import decode_varint

    h, _ = ClipHeader.from_bytes(b)
    at = 4 + 1 + 1 + 1 + 4 + 3 + 8  # magic, version, flags, kind, digest, ndim + shape, f64 start 2.0
    if b[5] & 0x80:  # the bytes themselves: zigzag num, den
        zz, p = decode_varint(b, at)
        den, p = decode_varint(b, p)
        num = zz >> 1 if not zz & 1 else -((zz + 1) >> 1)
        assert num / den == h.ts.step and 1 <= den <= 1 << 20 and Fraction(num, den).denominator == den
        assert _rational(h.ts.step) == (num, den)
        step_bytes = p - at
    else:
        import struct

        assert struct.unpack_from("<d", b, at)[0] == h.ts.step
        step_bytes = 8
    # a simple frame step is a rational; a step with no short rational (pi/10, 1e-9: den > 2**20) is not
    want = {0.2: True, 1 / 25: True, 1001 / 30000: True, 1 / 3: True, np.pi / 10: False, 1e-9: False}
    if step in want:
        assert bool(b[5] & 0x80) == want[step] and (step_bytes <= 6 or not want[step])
    v4 = CompressedClip(**{**clip.__dict__, "format_version": 4}).to_bytes()
    assert CompressedClip.from_bytes(v4).timestamps.tobytes() == back.timestamps.tobytes()
    assert len(b) <= len(v4) - 4  # the codec digest prefix at least


GOLDEN_CLIPS = [("clip_v1.bin", 1), ("clip_v2.bin", 2), ("clip_v3.bin", 3), ("clip_v4.bin", 4), ("clip_v4_rate.bin", 4),
                ("clip_v5.bin", 5), ("clip_v5_rate.bin", 5)]


@pytest.mark.parametrize("name,version", GOLDEN_CLIPS)
def test_one_typed_header_covers_every_clip_version(name, version):
    """featcomp.model.headers.ClipHeader parses the header of every version (the side arrays start where it
    ends) and writes the same header bytes back."""
    from featcomp.model.headers import ClipHeader, ClipSeries

    b = (FIXTURES / "model" / name).read_bytes()
    h, pos = ClipHeader.from_bytes(b)
    assert h.version == version and h.shape == (60, 8, 3) and h.n == 60
    assert h.to_bytes() == b[:pos]
    clip = CompressedClip.from_bytes(b)
    assert (h.kind, h.chunks, h.rate, h.model_digest) == (clip.kind, clip.chunks, clip.rate, clip.model_digest)
    assert h.codec_digest == clip.codec_digest and len(h.codec_digest) == {4: 16, 5: 8}.get(version, 64)
    assert h.level_bits == (4 if name in ("clip_v3.bin", "clip_v4.bin", "clip_v5.bin") else None)
    if version < 4:  # JSON: k / 5 is not exactly 0.2 * k in float64 and the frame indices are irregular,
        assert h.ts is None and h.fi is None  # so both are stored plainly
        line = ClipHeader(version=2, shape=(3, 2), codec_digest="ab" * 32, ts=ClipSeries(1.0, 0.5),
                          fi=ClipSeries(4, 2))
        assert b'"ts":[1.0,0.5],"fi":[4,2]' in line.to_bytes()
        assert ClipHeader.from_bytes(line.to_bytes() + bytes(16))[0] == line
    else:  # compact: both are lines, corrected by residuals of a few bits
        assert h.ts is not None and h.fi is not None and h.ts.bits is not None
    # a version this featcomp does not read, and a damaged magic
    with pytest.raises(CodecError, match="upgrade featcomp"):
        ClipHeader.from_bytes(b[:4] + bytes([9]) + b[5:])
    with pytest.raises(CodecError, match="bad magic"):
        ClipHeader.from_bytes(b"XCCL" + b[4:])

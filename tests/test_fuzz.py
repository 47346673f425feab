"""Decoders of untrusted bytes: bounded work for any input (docs/reliability.md).

Seeded mutation fuzzing (a few hundred cases per decoder, see ``tests/fuzz_cases.py``; a longer run is
``scripts/fuzz.py``), hypothesis over the same mutators, and the issue's crafted inputs as regressions.
Every case must end in a result or a ``FeatcompError`` subclass, within a time bound and a memory bound.
"""

from __future__ import annotations

import json
import random
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featcomp.entropy import EntropyCodec, bitstream
from featcomp.entropy.temporal import MAX_STREAM_FRAMES, TemporalCodec
from featcomp.errors import CodecError, FeatcompError, StoreError
from featcomp.model import CompressedClip
from featcomp.store.format import decode_index_file, decode_log, encode_index_file
from tests import fuzz_cases as fc

G = fc.G

# cases per decoder in CI (the temporal decoders step frame by frame and cost the most)
CASES = {"temporal": 150, "temporal-layout2": 150}
DEFAULT_CASES = 250


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> dict[str, fc.Target]:
    return {t.name: t for t in fc.all_targets(tmp_path_factory.mktemp("fuzz"))}


NAMES = ["factorized", "temporal", "temporal-layout2", "hyperprior", "hyperprior-layout2", "clip", "clip-v4", "index-file",
         "commit-log", "store-header", "part-header", "shard", "shard-zarr", "times", "codec-bytes", "store-header-v5",
         "header-sidecar"]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", NAMES)
def test_seeded_mutations_end_in_featcomp_errors_within_bounds(targets, name):
    out = fc.fuzz(targets[name], CASES.get(name, DEFAULT_CASES), seed=20261204)
    n = CASES.get(name, DEFAULT_CASES)
    assert out.ok + sum(out.errors.values()) == n
    assert sum(out.errors.values()) > 0  # the mutations reach the checks
    assert set(out.errors) <= {"CodecError", "StoreError", "DamagedIndexError"}  # the last: a StoreError


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["factorized", "hyperprior", "clip", "clip-v4", "index-file", "commit-log", "store-header",
                                  "store-header-v5", "header-sidecar"])
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), raw=st.binary(max_size=64))
def test_hypothesis_mutations(targets, name, seed, raw):
    """Hypothesis drives the mutators (and splices in arbitrary bytes); same contract."""
    t = targets[name]
    rng = random.Random(seed)
    out = fc.Outcome()
    fc.run_case(t, t.mutate(rng), out)
    fc.run_case(t, fc.splice(rng, rng.choice(t.seeds), raw), out)


# ------------------------------------------------------------------------------ crafted regressions
def _codec_and_stream(codec_file: str, stream_file: str, cls=EntropyCodec):
    codec = cls.from_bytes((G / codec_file).read_bytes())
    h = bitstream.unpack((G / stream_file).read_bytes(), codec.digest, codec.channels)
    return codec, h


def _bounded(fn, *, seconds: float, mib: float):
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        fn()
    finally:
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert dt < seconds, f"took {dt:.1f} s"
        assert peak < mib * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.timeout(60)
def test_a_678_byte_stream_declaring_a_huge_shape_is_refused_before_allocating():
    """The issue's case: a golden payload re-framed with a huge shape and a valid CRC (was a 3.75 GiB
    allocation or minutes of decoding)."""
    codec, h = _codec_and_stream("codec.bin", "stream_v2.bin")
    forged = bitstream.pack((40_000_000, 8, 3), codec.digest, h.payload)  # 0.96 G integers
    assert len(forged) < 700
    with pytest.raises(CodecError, match="implausibly large"):
        _bounded(lambda: codec.decompress_symbols(forged), seconds=1, mib=8)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flip", [None, 0, 1, 2, 3, 4, 5, 6, 7])
def test_factorized_fill_after_the_data_ends_equals_symbol_by_symbol_decoding(flip):
    """Once the coder's words are used up the decoder fills the rest of a channel after its first
    index-0 symbol instead of decoding it: same integers as constriction decoding every symbol, for
    the golden payload and damaged ones (whose tail state need not reach 0)."""
    import constriction

    codec, h = _codec_and_stream("codec.bin", "stream_v2.bin")
    payload = h.payload if flip is None else fc.flip_bits(random.Random(flip), h.payload)
    N = 20_000
    try:
        k = codec.decompress_symbols(bitstream.pack((N,) + h.shape[1:], codec.digest, payload))
    except CodecError:
        k = None  # then the reference must fail too (escapes outside int32 or words left over)
    dec = constriction.stream.stack.AnsCoder(np.frombuffer(payload, "<u4").astype(np.uint32))
    M = N * h.shape[2]
    ref = np.stack([dec.decode(codec._models[c], M) for c in range(codec.channels)])  # (C, M) indices
    if k is None:
        assert (ref == codec.table_size[:, None]).any() or not dec.is_empty()
        return
    esc = ref == codec.table_size[:, None]
    ref = ref.reshape(codec.channels, N, h.shape[2]).transpose(1, 0, 2) + codec.table_min[None, :, None]
    keep = ~esc.reshape(codec.channels, N, h.shape[2]).transpose(1, 0, 2)  # escaped values are exact in k
    np.testing.assert_array_equal(k[keep], ref[keep])
    assert (k[-1000:] == codec.table_min[None, :, None]).all()


@pytest.mark.timeout(60)
def test_factorized_decoding_time_follows_the_data_not_the_declared_shape(monkeypatch):
    """A damaged 676-byte payload declaring 2 M rows of 24 (48 M integers, under the cap): was several
    seconds of symbol-by-symbol decoding; the tail after the data is filled. Work is counted in symbols
    the ANS decoder actually decodes (not in seconds, which depend on the machine's load): a tenfold
    declared size must not mean tenfold work."""
    from featcomp.entropy import ans

    decoded = [0]
    original = ans.Decoder.pop_run_bounded

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def decode(self, model, n):
            decoded[0] += int(n)
            return self.inner.decode(model, n)

        def num_valid_bits(self):
            return self.inner.num_valid_bits()

    def counting(self, model, out):
        inner = self._ans
        self._ans = Counting(inner)
        try:
            return original(self, model, out)
        finally:
            self._ans = inner

    monkeypatch.setattr(ans.Decoder, "pop_run_bounded", counting)
    codec, h = _codec_and_stream("codec.bin", "stream_v2.bin")
    work = []
    for N in (200_000, 2_000_000):
        forged = bitstream.pack((N,) + h.shape[1:], codec.digest, fc.flip_bits(random.Random(3), h.payload))
        decoded[0] = 0
        try:
            codec.decompress_symbols(forged)
        except CodecError:
            pass
        work.append(decoded[0])
    declared = 2_000_000 * int(np.prod(h.shape[1:]))
    assert 0 < work[0] and work[1] <= 2 * work[0], work  # bounded by the payload, not the declared shape
    assert work[1] < declared // 20, (work, declared)


@pytest.mark.timeout(60)
def test_temporal_stream_declaring_many_frames_is_refused():
    """Was 43 s and 1.5 GiB for 2 M forged frames of a 548-byte stream; the frame loop is bounded."""
    codec, h = _codec_and_stream("temporal_codec_layout3.bin", "temporal_layout3_stream.bin", TemporalCodec)
    forged = bitstream.pack((MAX_STREAM_FRAMES + 1,) + h.shape[1:], codec.digest, h.payload)
    with pytest.raises(CodecError, match="frames"):
        _bounded(lambda: codec.decompress_symbols(forged), seconds=1, mib=8)
    with pytest.raises(CodecError, match="too large for one stream"):  # never written either
        codec.compress_symbols(np.zeros((MAX_STREAM_FRAMES + 1,) + h.shape[1:], np.int32))


def _clip_without(key: str, version: int) -> bytes:
    b = (fc.FIXTURES / "model" / f"clip_v{version}.bin").read_bytes()
    v, hdr, rest = fc._clip_parts(b)
    del hdr[key]
    h = json.dumps(hdr).encode()
    return b"FCCL" + struct.pack("<BI", v, len(h)) + h + rest


@pytest.mark.parametrize("key", ["codec_digest", "shape", "n", "ts", "fi"])
@pytest.mark.parametrize("version", [1, 2, 3])
def test_damaged_clip_header_raises_codec_error(key, version):
    with pytest.raises(CodecError, match="compressed clip"):
        CompressedClip.from_bytes(_clip_without(key, version))


def test_clip_header_declaring_more_frames_than_its_timestamps_is_refused():
    b = (fc.FIXTURES / "model" / "clip_v1.bin").read_bytes()
    v, hdr, rest = fc._clip_parts(b)
    hdr["n"] = hdr["shape"][0] = 10**12
    h = json.dumps(hdr).encode()
    with pytest.raises(CodecError):
        _bounded(lambda: CompressedClip.from_bytes(b"FCCL" + struct.pack("<BI", v, len(h)) + h + rest), seconds=1, mib=8)


@pytest.mark.timeout(60)
def test_index_file_zstd_bomb_is_refused_without_decompressing():
    """A valid-CRC index file whose 8 KiB payload inflates to 256 MiB (the header asks for far less)."""
    from numcodecs.zstd import Zstd

    bomb = Zstd(level=3).encode(b"\0" * (256 << 20))
    assert len(bomb) < 64 << 10
    seeds = fc.index_target().seeds
    for seed in (seeds[0], seeds[2]):  # version 5 and version 4
        prefix, hdr, _ = fc.split_index_file(seed)
        hdr["payload_crc32"] = zlib.crc32(bomb)
        data = fc.join_index_file(prefix, hdr, bomb)
        with pytest.raises(StoreError, match="corrupt index file"):
            _bounded(lambda: decode_index_file(data, "bomb.fcidx"), seconds=2, mib=16)
    # version 5: the names block a bomb (valid CRC) that declares less than its frame holds
    data = seeds[0][:8] + struct.pack("<III", len(bomb), 1 << 10, zlib.crc32(bomb)) + bomb
    data += seeds[0][20 + struct.unpack_from("<I", seeds[0], 8)[0]:]
    with pytest.raises(StoreError, match="corrupt index file"):
        _bounded(lambda: decode_index_file(data, "bomb.fcidx"), seconds=2, mib=16)


@pytest.mark.parametrize("field,value", [("start", "x"), ("length", -5), ("crc", 2**40), ("ts", [0, 1]),
                                         ("written", 1.5), ("lv", "a"), ("id", 3),
                                         ("tc", -1)])
def test_commit_record_with_a_wrong_field_is_a_store_error(field, value):
    tab = fc._index_seed_tables()[0]
    line = fc.log_target().seeds[0].split(b"\n")[0]
    rec = json.loads(line)
    rec.pop("ck")  # a line of an older writer (no line checksum): each field is still checked
    rec[field] = value
    data = json.dumps(rec).encode() + b"\n"
    with pytest.raises(StoreError, match="line 1 is not a valid commit record"):
        fc._log_decode(data)
    assert len(tab) == 40


@pytest.mark.parametrize("change", [
    lambda h: h.__setitem__("codec", []),
    lambda h: h.__setitem__("dequantization", {"offsets": "x"}),
    lambda h: h.__setitem__("rate_levels", "many"),
    lambda h: h.__setitem__("format_version", "3"),
    lambda h: h.__setitem__("mode", 7),
])
def test_damaged_store_header_is_a_store_error(tmp_path, change):
    t = fc.store_header_target(tmp_path)
    doc = json.loads(t.seeds[0])
    change(doc["attributes"]["featcomp"])
    with pytest.raises(StoreError):
        t.decode(json.dumps(doc).encode())


def test_a_shard_index_pointing_past_2_63_is_a_store_error(tmp_path):
    """uint64 offset + length wrapped around the bounds check (OverflowError from os.pread before)."""
    import google_crc32c

    t = fc.shard_target(tmp_path)
    seed = t.seeds[0]
    body = bytearray(seed[-(16 * 4 + 4) : -4])
    offs = np.frombuffer(bytes(body), "<u8").reshape(4, 2).copy()
    offs[0] = (2**63, 2**63 + 8)
    body = offs.astype("<u8").tobytes()
    with pytest.raises(StoreError, match="past the end"):
        t.decode(seed[: -(16 * 4 + 4)] + body + google_crc32c.value(body).to_bytes(4, "little"))


@pytest.mark.timeout(60)
def test_a_timestamp_chunk_declaring_256_mib_is_refused_without_allocating(tmp_path):
    """zarr/numcodecs allocated whatever a damaged zstd frame declared before failing."""
    from numcodecs.zstd import Zstd

    t = fc.times_target(tmp_path)
    bomb = Zstd(level=3).encode(b"\0" * (256 << 20))
    with pytest.raises(StoreError, match="timestamps"):
        _bounded(lambda: t.decode(bomb), seconds=5, mib=16)


def test_golden_inputs_still_decode(targets):
    for name in NAMES:
        for seed in targets[name].seeds:
            targets[name].decode(seed)  # no error on any committed or writer-made input


def test_index_file_roundtrip_unchanged():
    for t in fc._index_seed_tables():
        back = decode_index_file(encode_index_file(t), "x")
        assert back.ids == t.ids and np.array_equal(back.start, t.start) and back.parts == t.parts
    assert isinstance(decode_log(b"", "x"), list)
    assert issubclass(CodecError, FeatcompError)
    assert Path(fc.__file__).exists()

"""The contract every registered entropy-model kind meets, for every stream layout it writes.

Parametrized over :func:`featcomp.entropy.kinds.entropy_kinds` (a plugin kind registered before
collection gets the whole suite; it only needs a sample maker, tests/entropy/kind_samples.py) x the
layouts its codec class reads and writes (``_READ_VERSIONS``). docs/contracts.md maps each contract to
its test here. Kind-specific behaviour lives in the per-kind files (test_codec.py, test_temporal*.py,
test_hyperprior*.py).

Contracts:

1. round trip: random and edge inputs (zeros, int32 extremes, escapes, one frame, empty) decode to
   exactly the symbols (int32, same shape); the estimate is finite and non-negative;
2. goldens: every committed stream in tests/fixtures/entropy is discovered by the codec it belongs to
   (kind and layout from the committed codec file, pairing by the digest folded into the stream's CRC),
   decodes, and re-encodes byte for byte (a stream in an older, read-only framing re-encodes to the
   committed current-framing stream of the same data);
   every kind x layout has at least one golden stream; every committed symbol file is some stream's decoding;
3. bounded work: a stream whose declared shape is implausibly large, overflowing or inconsistent with
   the codec raises :class:`~featcomp.errors.CodecError` before allocating from it;
4. corruption: bit flips, truncations, appended bytes and forged payloads behind a valid header raise
   :class:`~featcomp.errors.CodecError` or decode to the same data (framing) / an int32 array of the
   declared shape (a forged payload with a valid CRC), never another exception;
5. serialization: ``to_bytes``/``from_bytes`` and ``to_dict``/``codec_from_dict`` (through JSON) give
   an equal codec with the same digest and bytes; the registry maps the codec back to its kind;
   corrupt codec bytes raise CodecError; a stream never decodes with a codec of another layout.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from featcomp.entropy import EntropyCodec, bitstream
from featcomp.entropy.kinds import (
    EntropyKind,
    FrozenCodec,
    codec_from_dict,
    codec_kind,
    entropy_kind,
    entropy_kinds,
    register_entropy_kind,
    unregister_entropy_kind,
)
from featcomp.errors import CodecError

from .kind_samples import CHANNELS, edge_inputs, layout_of, layouts_of, random_symbols, sample_codec, shapes

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "entropy"

KIND_LAYOUTS = [(k, v) for k in entropy_kinds() for v in layouts_of(k)]
KL_IDS = [f"{k}-v{v}" for k, v in KIND_LAYOUTS]
kind_layout = pytest.mark.parametrize("kind,version", KIND_LAYOUTS, ids=KL_IDS)


def decodes_or_refuses(codec, data: bytes):
    """Decode ``data``: the array, or None when a CodecError refused it (any other exception fails)."""
    try:
        return codec.decompress_symbols(data)
    except CodecError:
        return None


# ------------------------------------------------------------------------------ goldens, discovered
def _discover():
    """(codecs, streams, symbols): committed codec files as {name: codec}, streams as
    [(name, codec name)], symbol files as {name: array}; unclaimed .bin files in ``orphans``."""
    codecs, streams, orphans = {}, [], []
    classes = {entropy_kind(k).codec for k in entropy_kinds()}
    blobs = {p.name: p.read_bytes() for p in sorted(GOLDEN.glob("*.bin"))}
    for name, data in blobs.items():
        for cls in classes:
            try:
                codecs[name] = cls.from_bytes(data)
                break
            except Exception:  # noqa: BLE001 - not a codec file of this class
                continue
    for name, data in blobs.items():
        if name in codecs:
            continue
        owners = []
        for cname, c in codecs.items():
            try:
                bitstream.unpack(data, c.digest, c.channels)
            except CodecError:
                continue
            owners.append(cname)
        if owners:
            streams.append((name, owners[0]))
            assert len({codecs[o].digest for o in owners}) == 1, (name, owners)
        else:
            orphans.append(name)
    symbols = {p.name: np.load(p) for p in sorted(GOLDEN.glob("*.npy"))}
    return codecs, streams, symbols, orphans


G_CODECS, G_STREAMS, G_SYMBOLS, G_ORPHANS = _discover()
GOLDEN_CASES = [(codec_kind(G_CODECS[c]), layout_of(G_CODECS[c]), s, c) for s, c in G_STREAMS]


def test_every_committed_golden_file_is_claimed():
    assert not G_ORPHANS, f"golden .bin files that are neither a codec nor a stream of one: {G_ORPHANS}"
    assert len(G_CODECS) >= 7 and len(G_STREAMS) >= 14


@kind_layout
def test_every_kind_and_layout_has_a_golden_stream(kind, version):
    got = [s for k, v, s, _ in GOLDEN_CASES if (k, v) == (kind, version)]
    assert got, (f"no committed golden stream of kind {kind!r} layout {version} in {GOLDEN}: add one "
                 "(a generator in tests/fixtures/make_*_golden.py; never rewrite a committed file)")


@pytest.mark.parametrize("kind,version,stream,codec_file", GOLDEN_CASES,
                         ids=[f"{k}-v{v}-{s}" for k, v, s, _ in GOLDEN_CASES])
def test_golden_stream_decodes_and_reencodes_byte_for_byte(kind, version, stream, codec_file):
    codec = G_CODECS[codec_file]
    data = (GOLDEN / stream).read_bytes()
    assert codec.to_bytes() == (GOLDEN / codec_file).read_bytes()  # the committed codec re-serializes exactly
    k = codec.decompress_symbols(data)
    assert k.dtype == np.int32
    again = codec.compress_symbols(k)
    h_old = bitstream.unpack(data, codec.digest, codec.channels)
    if h_old.version == bitstream.FORMAT_VERSION:
        assert again == data
    else:  # an older framing (read only): re-encodes to the committed current-framing stream of the data
        assert h_new_framing(again) and h_old.shape == bitstream.unpack(again, codec.digest, codec.channels).shape
        siblings = [(GOLDEN / s).read_bytes() for s, c in G_STREAMS if G_CODECS[c].digest == codec.digest]
        assert again in siblings, f"{stream}: its re-encoding is no committed stream of {codec_file}"
    np.testing.assert_array_equal(codec.decompress_symbols(again), k)


def h_new_framing(data: bytes) -> bool:
    return data[:1] == bitstream.MAGIC and data[1] >> 6 == bitstream.FORMAT_VERSION


def test_every_committed_symbol_file_is_a_golden_streams_decoding():
    decoded = [G_CODECS[c].decompress_symbols((GOLDEN / s).read_bytes()) for s, c in G_STREAMS]
    for name, arr in G_SYMBOLS.items():
        assert any(d.shape == arr.shape and np.array_equal(d, arr) for d in decoded), name


# ------------------------------------------------------------------------------------- round trip
@kind_layout
def test_random_symbols_round_trip_exactly(kind, version):
    codec = sample_codec(kind, version)
    rng = np.random.default_rng(1)
    for shape in shapes(kind):
        for sigma in (0.4, 3.0, 60.0):
            k = random_symbols(rng, shape, sigma)
            data = codec.compress_symbols(k)
            out = codec.decompress_symbols(data)
            assert out.dtype == np.int32 and out.shape == k.shape
            np.testing.assert_array_equal(out, k)
            est = codec.estimate_bits(k)
            assert np.isfinite(est) and est >= 0


@kind_layout
@pytest.mark.parametrize("case", ["zeros", "max", "min", "extremes", "escapes", "empty", "one"])
def test_edge_inputs_round_trip_exactly(kind, version, case):
    codec = sample_codec(kind, version)
    k = edge_inputs(kind, np.random.default_rng(2))[case]
    data = codec.compress_symbols(k)
    out = codec.decompress_symbols(data)
    assert out.dtype == np.int32 and out.shape == k.shape
    np.testing.assert_array_equal(out, k)
    assert np.isfinite(codec.estimate_bits(k))


@kind_layout
def test_float_api_is_quantize_then_symbols(kind, version):
    codec = sample_codec(kind, version)
    rng = np.random.default_rng(3)
    y = rng.normal(0, 4, shapes(kind)[0]).astype(np.float32)
    k = codec.quantize(y)
    assert k.dtype == np.int32 and k.shape == y.shape
    assert codec.compress(y) == codec.compress_symbols(k)
    np.testing.assert_array_equal(codec.decompress(codec.compress(y)), codec.dequantize(k))
    assert codec.dequantize(k).dtype == np.float32


# ------------------------------------------------------------------------------------ bounded work
def _forged_shapes(kind: str, C: int) -> list[tuple[int, ...]]:
    big = bitstream.MAX_STREAM_ELEMENTS
    nd = len(shapes(kind, C)[0])
    out = [(big // C + 1, C) + (1,) * (nd - 2), (2**40, C) + (1,) * (nd - 2), (1, C) + (2**40,) * (nd - 2 or 1),
           (2**20, C, 2**20), (2**31, C, 2**31, 2**31)]
    if nd == 2:
        out.append((2**62, C))
    return out


@kind_layout
@pytest.mark.timeout(60)
def test_forged_huge_declared_shapes_raise_before_allocating(kind, version):
    codec = sample_codec(kind, version)
    rng = np.random.default_rng(4)
    real = codec.compress_symbols(random_symbols(rng, shapes(kind)[0]))
    payload = bitstream.unpack(real, codec.digest, codec.channels).payload
    for shape in _forged_shapes(kind, codec.channels):
        for p in (b"", payload[: len(payload) // 4 * 4], rng.integers(0, 256, 64, dtype=np.uint8).tobytes()):
            forged = bitstream.pack(shape, codec.digest, p)
            tracemalloc.start()
            try:
                with pytest.raises(CodecError):
                    codec.decompress_symbols(forged)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 32 << 20, (shape, peak)


@kind_layout
@pytest.mark.timeout(60)
def test_forged_empty_shapes_are_bounded(kind, version):
    """A declared shape with no elements but a huge axis: refused or an empty array, at bounded cost."""
    codec = sample_codec(kind, version)
    C = codec.channels
    nd = len(shapes(kind)[0])
    for shape in ((0, C) + (2**40,) * (nd - 2), (2**40, C) + (0,) * max(nd - 2, 1), (2**20, C) + (0,) * max(nd - 2, 1)):
        forged = bitstream.pack(shape, codec.digest, b"")
        tracemalloc.start()
        try:
            out = decodes_or_refuses(codec, forged)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out is None or (out.size == 0 and out.dtype == np.int32), shape
        assert peak < 32 << 20, (shape, peak)


@kind_layout
def test_encoders_refuse_wrong_channels_and_floats(kind, version):
    codec = sample_codec(kind, version)
    shape = shapes(kind)[0]
    wrong = (shape[0], codec.channels + 1) + shape[2:]
    with pytest.raises(CodecError):
        codec.compress_symbols(np.zeros(wrong, np.int32))
    with pytest.raises(CodecError):
        codec.compress_symbols(np.full(shape, 0.5, np.float32))  # floats are not symbols


# -------------------------------------------------------------------------------------- corruption
@kind_layout
def test_flips_cuts_and_appended_bytes_raise_codec_error_or_give_the_data(kind, version):
    codec = sample_codec(kind, version)
    rng = np.random.default_rng(5)
    k = edge_inputs(kind, rng)["escapes"]
    data = codec.compress_symbols(k)
    positions = sorted(set(range(min(len(data), 12))) | set(rng.choice(len(data), min(len(data), 40), replace=False).tolist()))
    refused = 0
    for pos in positions:
        for bit in (0, 5):
            bad = bytearray(data)
            bad[pos] ^= 1 << bit
            out = decodes_or_refuses(codec, bytes(bad))
            if out is None:
                refused += 1
            else:
                np.testing.assert_array_equal(out, k)
    assert refused >= len(positions)  # the CRC catches (nearly) every flip
    for cut in sorted({1, 2, 3, 4, 5, 8, len(data) // 2, len(data) - 1, len(data)}):
        out = decodes_or_refuses(codec, data[: len(data) - cut])
        assert out is None or np.array_equal(out, k), cut
    for extra in (b"\x00", b"\x00" * 4, b"\xff\x01\x02"):
        out = decodes_or_refuses(codec, data + extra)
        assert out is None or np.array_equal(out, k)
    for junk in (b"", b"\xfc", bytes(range(40)), rng.integers(0, 256, 300, dtype=np.uint8).tobytes()):
        assert decodes_or_refuses(codec, junk) is None


@kind_layout
@pytest.mark.timeout(120)
def test_forged_payloads_behind_a_valid_header_raise_codec_error_or_decode_to_the_declared_shape(kind, version):
    codec = sample_codec(kind, version)
    rng = np.random.default_rng(6)
    for shape in shapes(kind)[:2]:
        k = random_symbols(rng, shape, 5.0)
        h = bitstream.unpack(codec.compress_symbols(k), codec.digest, codec.channels)
        n = len(h.payload)
        payloads = [rng.integers(0, 256, max(n, 8) // 4 * 4, dtype=np.uint8).tobytes() for _ in range(10)]
        payloads += [h.payload[: n // 2 // 4 * 4], h.payload + b"\x01\x00\x00\x00", b"", b"\xff" * 64]
        for p in payloads:
            out = decodes_or_refuses(codec, bitstream.pack(h.shape, codec.digest, p))
            assert out is None or (out.dtype == np.int32 and out.shape == h.shape)


@kind_layout
def test_lockstep_chunks_equal_one_by_one_and_name_a_bad_stream(kind, version):
    codec = sample_codec(kind, version)
    if not hasattr(codec, "decompress_chunks"):
        assert not entropy_kind(kind).time_chunks  # a kind that codes time chunks decodes them in lockstep
        return
    rng = np.random.default_rng(7)
    ks = [random_symbols(rng, s) for s in shapes(kind)] + [edge_inputs(kind, rng)["escapes"]]
    ks = [k for k in ks if k.shape[2:] == ks[0].shape[2:]] + [np.zeros((0,) + ks[0].shape[1:], np.int32)]
    streams = [codec.compress_symbols(k) for k in ks]
    for k, o in zip(ks, codec.decompress_chunks(streams)):
        np.testing.assert_array_equal(o, k)
    bad = bytearray(streams[0])
    bad[len(bad) // 2] ^= 4
    with pytest.raises(CodecError, match="stream #1"):
        codec.decompress_chunks([streams[0], bytes(bad)])


# ---------------------------------------------------------------------------------- serialization
@kind_layout
def test_bytes_and_dict_round_trip_keep_the_digest(kind, version):
    codec = sample_codec(kind, version)
    cls = entropy_kind(kind).codec
    assert isinstance(codec, cls) and isinstance(codec, FrozenCodec)
    assert codec_kind(codec) == kind and entropy_kind(codec).name == kind
    raw = codec.to_bytes()
    back = cls.from_bytes(raw)
    assert back == codec and back.digest == codec.digest and back.to_bytes() == raw
    assert layout_of(back) == version
    d = json.loads(json.dumps(codec.to_dict()))
    again = codec_from_dict(d)
    assert type(again) is cls and again == codec and again.digest == codec.digest and again.to_bytes() == raw
    k = random_symbols(np.random.default_rng(8), shapes(kind)[0])
    data = codec.compress_symbols(k)
    np.testing.assert_array_equal(back.decompress_symbols(data), k)
    np.testing.assert_array_equal(again.decompress_symbols(data), k)
    assert back.compress_symbols(k) == data


@kind_layout
def test_corrupt_codec_bytes_and_dicts_raise_codec_error(kind, version):
    codec = sample_codec(kind, version)
    cls = entropy_kind(kind).codec
    raw = codec.to_bytes()
    rng = np.random.default_rng(9)
    for pos in sorted(set(rng.choice(len(raw), 16, replace=False).tolist()) | {0, 4, len(raw) - 1}):
        bad = bytearray(raw)
        bad[pos] ^= 0x10
        with pytest.raises(CodecError):
            cls.from_bytes(bytes(bad))
    for cut in (1, 32, len(raw) // 2, len(raw) - 1):
        with pytest.raises(CodecError):
            cls.from_bytes(raw[: len(raw) - cut])
    d = codec.to_dict()
    key = "digest" if "digest" in d else sorted(d)[0]
    with pytest.raises(CodecError):
        codec_from_dict(dict(d, **{key: "0" * 64}))


@pytest.mark.parametrize("kind", entropy_kinds())
def test_layouts_never_mix(kind):
    """A stream of one layout never decodes with a codec of another (the version is part of the digest)."""
    versions = layouts_of(kind)
    codecs = {v: sample_codec(kind, v) for v in versions}
    assert len({c.digest for c in codecs.values()}) == len(versions)
    k = random_symbols(np.random.default_rng(10), shapes(kind)[0])
    for v, c in codecs.items():
        data = c.compress_symbols(k)
        for w, other in codecs.items():
            if w != v:
                with pytest.raises(CodecError, match="made by another codec"):
                    other.decompress_symbols(data)


def test_the_suite_covers_every_registered_kind():
    assert {k for k, _ in KIND_LAYOUTS} == set(entropy_kinds())
    assert {"factorized", "temporal", "hyperprior"} <= set(entropy_kinds())
    assert CHANNELS >= 2


# ------------------------------------------------------------------------------- a plugin kind
class _PluginCodec(EntropyCodec):
    """A plugin kind for the test below: the factorized tables under another name."""

    kind = "contract-plugin"

    def to_dict(self):
        return {**super().to_dict(), "kind": self.kind}


def test_a_plugin_kind_gets_the_whole_suite_and_needs_goldens_and_a_sample():
    """A kind registered (with its sample maker) before collection is parametrized like the built-in
    ones; here the suite's functions run on one registered at run time. Without a sample maker or a
    golden stream the suite fails with a message saying what to add (it never skips)."""
    from . import kind_samples

    register_entropy_kind(EntropyKind("contract-plugin", _PluginCodec))
    try:
        assert layouts_of("contract-plugin") == (1,)
        with pytest.raises(AssertionError, match="add_sample_maker"):
            sample_codec("contract-plugin", 1)
        kind_samples.add_sample_maker(
            "contract-plugin", lambda v, C: _PluginCodec.from_bytes(sample_codec("factorized", v, C).to_bytes()))
        for test in (test_random_symbols_round_trip_exactly, test_float_api_is_quantize_then_symbols,
                     test_forged_huge_declared_shapes_raise_before_allocating, test_forged_empty_shapes_are_bounded,
                     test_encoders_refuse_wrong_channels_and_floats,
                     test_flips_cuts_and_appended_bytes_raise_codec_error_or_give_the_data,
                     test_forged_payloads_behind_a_valid_header_raise_codec_error_or_decode_to_the_declared_shape,
                     test_lockstep_chunks_equal_one_by_one_and_name_a_bad_stream,
                     test_bytes_and_dict_round_trip_keep_the_digest, test_corrupt_codec_bytes_and_dicts_raise_codec_error):
            test("contract-plugin", 1)
        for case in ("zeros", "max", "min", "extremes", "escapes", "empty", "one"):
            test_edge_inputs_round_trip_exactly("contract-plugin", 1, case)
        test_layouts_never_mix("contract-plugin")
        with pytest.raises(AssertionError, match="no committed golden stream of kind 'contract-plugin'"):
            test_every_kind_and_layout_has_a_golden_stream("contract-plugin", 1)
    finally:
        kind_samples.SAMPLE_MAKERS.pop("contract-plugin", None)
        unregister_entropy_kind("contract-plugin")
    assert "contract-plugin" not in entropy_kinds()

"""Fuzz targets and mutators shared by ``tests/test_fuzz.py`` (CI counts) and ``scripts/fuzz.py``
(long runs). Every decoder of untrusted bytes gets seeds (committed golden files or files made by the
writers), and each case must end in a result or a :class:`~featcomp.FeatcompError` subclass, within
a time bound and a memory bound (docs/reliability.md).

Mutations: bit flips, truncation, splices (a span deleted, duplicated or replaced by another seed's
bytes), and forged lengths whose checksums are recomputed (stream shapes re-framed with a valid CRC,
index-file headers with a valid payload CRC, clip and record JSON fields set to wrong types or huge
values), so that the decoders' own bounds are exercised, not only the checksums.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import time
import tracemalloc
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from featcomp.entropy import EntropyCodec, bitstream
from featcomp.entropy.hyperprior import HyperpriorCodec
from featcomp.entropy.temporal import TemporalCodec
from featcomp.errors import FeatcompError
from featcomp.model import CompressedClip
from featcomp.store.format import IndexTable, decode_index_file, decode_log, encode_index_file, encode_record

FIXTURES = Path(__file__).resolve().parent / "fixtures"
G = FIXTURES / "entropy"

# bounds every case must meet (decoders of at most a few KiB of input)
TIME_LIMIT_S = 10.0
# memory: a fixed allowance plus a few bytes per element a stream declares (factorized: int32 output and
# the decoder's int32 intermediate; temporal: int64 work arrays), never more than the per-stream caps allow
BASE_MEMORY = 64 << 20


# Forged sizes: FULL_RANGE draws every size up to 2**40 log-uniformly (scripts/fuzz.py); the CI suite
# draws sizes up to 2**22 or beyond the caps (2**27..2**40), so that no case spends the caps' full
# memory (a dedicated test checks a stream at the cap).
FULL_RANGE = False
CI_ELEMENTS = 1 << 22


def _huge(rng: random.Random) -> int:
    """A forged size: half small (decoding proceeds), the rest log-uniform (see FULL_RANGE)."""
    if rng.random() < 0.5:
        return rng.randrange(0, 300)
    if FULL_RANGE:
        return int(2 ** rng.uniform(8, 40))
    return int(2 ** rng.uniform(8, 22)) if rng.random() < 0.6 else int(2 ** rng.uniform(27, 40))


def flip_bits(rng: random.Random, b: bytes) -> bytes:
    if not b:
        return b
    a = bytearray(b)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        i = rng.randrange(len(a))
        a[i] ^= 1 << rng.randrange(8)
    return bytes(a)


def truncate(rng: random.Random, b: bytes) -> bytes:
    return b[: rng.randrange(len(b))] if b else b


def splice(rng: random.Random, b: bytes, other: bytes) -> bytes:
    if not b:
        return other[: rng.randrange(len(other) + 1)]
    i, j = sorted(rng.randrange(len(b) + 1) for _ in range(2))
    op = rng.randrange(3)
    if op == 0:  # delete a span
        return b[:i] + b[j:]
    if op == 1:  # duplicate a span
        return b[:j] + b[i:j] + b[j:]
    k, m = sorted(rng.randrange(len(other) + 1) for _ in range(2))
    return b[:i] + other[k:m] + b[j:]


@dataclass
class Target:
    """One decoder: ``decode(bytes)`` and seed inputs; ``forge(rng, seed)`` makes a forged-length case
    with valid checksums; ``declared(bytes)`` the elements a case declares (for the memory bound)."""

    name: str
    decode: Callable[[bytes], Any]
    seeds: list[bytes]
    forge: Callable[[random.Random, bytes], bytes]
    declared: Callable[[bytes], int] = field(default=lambda b: 0)
    bytes_per_element: int = 12

    def mutate(self, rng: random.Random) -> bytes:
        seed = rng.choice(self.seeds)
        op = rng.randrange(4)
        if op == 0:
            return flip_bits(rng, seed)
        if op == 1:
            return truncate(rng, seed)
        if op == 2:
            return splice(rng, seed, rng.choice(self.seeds))
        return self.forge(rng, seed)


@dataclass
class Outcome:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    worst_s: float = 0.0
    worst_mib: float = 0.0


class FuzzFailure(AssertionError):
    pass


def run_case(target: Target, data: bytes, out: Outcome) -> None:
    """Decode one case; raise FuzzFailure on a non-featcomp exception or a broken bound."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        target.decode(data)
        out.ok += 1
    except FeatcompError as e:
        out.errors[type(e).__name__] = out.errors.get(type(e).__name__, 0) + 1
    except BaseException as e:  # noqa: BLE001 - the point of the fuzzer
        tracemalloc.stop()
        raise FuzzFailure(f"{target.name}: {type(e).__name__}: {e} on input {data[:64].hex()}... ({len(data)} bytes)") from e
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.worst_s = max(out.worst_s, dt)
    out.worst_mib = max(out.worst_mib, peak / 2**20)
    limit = BASE_MEMORY + target.bytes_per_element * min(target.declared(data), bitstream.MAX_STREAM_ELEMENTS)
    if dt > TIME_LIMIT_S:
        raise FuzzFailure(f"{target.name}: {dt:.1f} s on a {len(data)}-byte input {data[:64].hex()}...")
    if peak > limit:
        raise FuzzFailure(f"{target.name}: {peak / 2**20:.0f} MiB peak (limit {limit / 2**20:.0f}) on a "
                          f"{len(data)}-byte input {data[:64].hex()}...")


def fuzz(target: Target, n: int, seed: int) -> Outcome:
    rng = random.Random(seed)
    out = Outcome()
    for _ in range(n):
        run_case(target, target.mutate(rng), out)
    return out


# ------------------------------------------------------------------------------ entropy streams
def _stream_declared(codec) -> Callable[[bytes], int]:
    def declared(b: bytes) -> int:
        try:
            h = bitstream.unpack(b, codec.digest, codec.channels)
        except FeatcompError:
            return 0
        return int(np.prod(h.shape, dtype=object))
    return declared


def _stream_forge(codec) -> Callable[[random.Random, bytes], bytes]:
    def forge(rng: random.Random, seed: bytes) -> bytes:
        h = bitstream.unpack(seed, codec.digest, codec.channels)
        shape = list(h.shape)
        i = rng.choice([0] + list(range(2, len(shape))))
        shape[i] = _huge(rng)
        if rng.random() < 0.2 and len(shape) < 15:
            shape.append(rng.randrange(1, 9))
        rest = max(1, int(np.prod(shape, dtype=object)) // max(1, shape[i]))
        if not FULL_RANGE and CI_ELEMENTS < shape[i] * rest <= bitstream.MAX_STREAM_ELEMENTS:
            shape[i] = CI_ELEMENTS // rest  # CI: at most CI_ELEMENTS, or beyond the cap
        payload = h.payload if rng.random() < 0.7 else flip_bits(rng, h.payload + b"\0" * (-len(h.payload) % 4))
        return bitstream.pack(tuple(shape), codec.digest, payload[: len(payload) - len(payload) % 4])
    return forge


def entropy_targets() -> list[Target]:
    fact = EntropyCodec.from_bytes((G / "codec.bin").read_bytes())
    temp = TemporalCodec.from_bytes((G / "temporal_codec_layout3.bin").read_bytes())
    temp2 = TemporalCodec.from_bytes((G / "temporal_codec_layout2.bin").read_bytes())
    hyp = HyperpriorCodec.from_bytes((G / "hyperprior_codec_layout3.bin").read_bytes())
    hyp2 = HyperpriorCodec.from_bytes((G / "hyperprior_codec_layout2.bin").read_bytes())
    out = []
    for name, codec, files in (
        ("factorized", fact, ["stream.bin", "stream_v2.bin"]),
        ("temporal", temp, ["temporal_layout3_stream.bin", "temporal_layout3_big_stream.bin"]),
        ("temporal-layout2", temp2, ["temporal_layout2_stream.bin", "temporal_layout2_big_stream.bin"]),
        ("hyperprior", hyp, ["hyperprior_layout3_stream.bin", "hyperprior_layout3_fallback_stream.bin"]),
        ("hyperprior-layout2", hyp2, ["hyperprior_layout2_stream.bin", "hyperprior_layout2_small_stream.bin"]),
    ):
        seeds = [(G / f).read_bytes() for f in files]
        # the temporal decoder holds int64 locations, tables and values per element (its cap is lower)
        per = 40 if name.startswith("temporal") else 12
        out.append(Target(name, codec.decompress_symbols, seeds, _stream_forge(codec), _stream_declared(codec), per))
    return out


# ------------------------------------------------------------------------------ clip container
def _clip_parts(b: bytes) -> tuple[int, dict, bytes]:
    version, hl = struct.unpack_from("<BI", b, 4)
    return version, json.loads(b[9 : 9 + hl]), b[9 + hl :]


_WEIRD = [None, True, -1, 0, 1, 2**40, 2**70, 1.5, float("nan"), "x", [], [1], {}, [2**40, 3], [0, 0], [1, -1]]


def _clip_forge(rng: random.Random, seed: bytes) -> bytes:
    version, hdr, rest = _clip_parts(seed)
    for _ in range(rng.randrange(1, 3)):
        key = rng.choice(["shape", "n", "ts", "fi", "codec_digest", "chunks", "levels", "kind", "rate", "model_digest"])
        r = rng.random()
        if r < 0.25:
            hdr.pop(key, None)
        elif r < 0.5 and key == "shape":
            shape = hdr.get("shape")
            hdr[key] = [_huge(rng), *(shape[1:] if isinstance(shape, list) else [8])]
        elif r < 0.6 and key == "n":
            hdr[key] = _huge(rng)
        elif r < 0.7 and key == "chunks":
            hdr[key] = [_huge(rng) for _ in range(rng.randrange(0, 4))]
        else:
            hdr[key] = rng.choice(_WEIRD)
    h = json.dumps(hdr).encode()
    return b"FCCL" + struct.pack("<BI", version if rng.random() < 0.9 else rng.randrange(256), len(h)) + h + rest


def _clip_declared(b: bytes) -> int:
    try:
        _, hdr, _ = _clip_parts(b)
        return max(int(np.prod([int(x) for x in hdr["shape"]], dtype=object)), 16 * int(hdr["n"]))
    except Exception:  # noqa: BLE001 - only a bound
        return 0


def clip_target() -> Target:
    codec = EntropyCodec.from_bytes((G / "codec.bin").read_bytes())

    def decode(b: bytes) -> None:
        clip = CompressedClip.from_bytes(b)
        for s in clip.streams:
            codec.decompress_symbols(s)

    seeds = [(FIXTURES / "model" / f"clip_v{v}.bin").read_bytes() for v in (1, 2, 3)]
    return Target("clip", decode, seeds, _clip_forge, _clip_declared)


def _clip4_declared(b: bytes) -> int:
    """Frames and elements a format-4/5 clip declares (its shape), parsed without trusting anything else."""
    from featcomp.entropy.bitstream import decode_varint

    try:
        pos = 7
        if b[6] == 255:
            pos += 1 + b[7]
        plen = 4 if b[4] == 5 else 8  # digest prefix bytes: format 5 keeps 4
        pos += plen + (plen if b[5] & 8 else 0)
        shape = []
        for _ in range(min(b[pos], 15)):
            v, pos2 = decode_varint(b, pos + 1 if not shape else pos)
            shape.append(v)
            pos = pos2
        return max(int(np.prod(shape, dtype=object)), 16 * int(shape[0]))
    except Exception:  # noqa: BLE001 - only a bound
        return 0


def _clip4_forge(rng: random.Random, seed: bytes) -> bytes:
    """Rewrite header bytes of a format-4/5 clip and recompute its CRC, so the structural checks (not the CRC)
    must refuse what is impossible: widths, kind codes, counts, huge shapes, cut fields."""
    import zlib

    head = len(seed) - len(CompressedClip.from_bytes(seed).data) - 4
    body = bytearray(seed[:head])
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(5, head)
        body[i] = rng.choice([0, 1, 2, 8, 15, 16, 48, 49, 64, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    if rng.random() < 0.2:  # a huge varint spliced into the shape
        at = rng.randrange(5, len(body))
        body[at:at] = b"\xff\xff\xff\x7f"
    if rng.random() < 0.2:
        body = body[: rng.randrange(5, len(body) + 1)]
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))) + seed[head + 4 :]


def clip4_target() -> Target:
    codec = EntropyCodec.from_bytes((G / "codec.bin").read_bytes())

    def decode(b: bytes) -> None:
        clip = CompressedClip.from_bytes(b)
        for s in clip.streams:
            codec.decompress_symbols(s)

    # the compact formats: 4, and 5 (4-byte digests, rational timestamp steps)
    seeds = [(FIXTURES / "model" / f).read_bytes()
             for f in ("clip_v4.bin", "clip_v4_rate.bin", "clip_v5.bin", "clip_v5_rate.bin")]
    return Target("clip-v4", decode, seeds, _clip4_forge, _clip4_declared)


# ------------------------------------------------------------------------------ index files, logs
def _index_seed_tables() -> list[IndexTable]:
    rng = np.random.default_rng(0)
    recs = []
    for j in range(40):
        recs.append((j % 2, json.loads(encode_record(
            f"video-{j:03d}/é", 100 * j, int(rng.integers(1, 90)), int(rng.integers(0, 2**32)),
            1_700_000_000_000_000_000 + j * 10**9, (1 if j % 3 else 0, j, 2 * j + 1, 5),
            {"path": f"/data/{j}.mp4"} if j % 4 == 0 else None, levels_crc=int(rng.integers(0, 2**32)) if j % 5 == 0 else None,
            times_crc=int(rng.integers(0, 2**32)) if j % 3 == 0 else None,
        ))))
    return [IndexTable.from_records(["w0", "w1"], recs), IndexTable.from_records(["w0", "w1"], recs[:3])]


def split_index_file(data: bytes) -> tuple[bytes, dict, bytes]:
    """``(prefix, header dict, payload)`` of an index file of any version (the prefix is the magic and
    version, plus the names block for version 5); :func:`join_index_file` puts them back together."""
    if data[6] >= 5:
        (m,) = struct.unpack_from("<I", data, 8)
        pos = 20 + m
        (hl,) = struct.unpack_from("<I", data, pos)
        return data[:pos], json.loads(data[pos + 8 : pos + 8 + hl]), data[pos + 8 + hl :]
    (hl,) = struct.unpack_from("<I", data, 8)
    return data[:8], json.loads(data[12 : 12 + hl]), data[12 + hl :]


def join_index_file(prefix: bytes, hdr: dict, payload: bytes) -> bytes:
    """An index file from :func:`split_index_file`'s parts, with the header's checksum recomputed (version 5)."""
    h = json.dumps(hdr).encode()
    if prefix[6] >= 5:
        return prefix + struct.pack("<II", len(h), zlib.crc32(h)) + h + payload
    return prefix[:8] + struct.pack("<I", len(h)) + h + payload


def _index_forge(rng: random.Random, seed: bytes) -> bytes:
    from numcodecs.zstd import Zstd

    prefix, hdr, payload = split_index_file(seed)
    r = rng.random()
    if seed[6] >= 5 and r < 0.15:  # version 5: a names block that declares a lot, with a valid CRC
        size = int(2 ** rng.uniform(10, 26 if FULL_RANGE else 22))
        names = Zstd(level=1).encode(rng.choice([b"\0", b"a", b"\n"]) * size)
        declared = rng.choice([size, size // 2, _huge(rng) % (1 << 32)])
        prefix = prefix[:8] + struct.pack("<III", len(names), declared, zlib.crc32(names)) + names
        return join_index_file(prefix, hdr, payload)
    if r < 0.3:  # a small zstd frame that decompresses to a lot (with a header that asks for it)
        size = int(2 ** rng.uniform(10, 26 if FULL_RANGE else 22))
        payload = Zstd(level=1).encode(b"\0" * size)
        hdr["columns"] = [["part", "<i4", 0, size]] + hdr["columns"][1:]
        hdr["n"] = size // 4
    elif r < 0.6:
        hdr["n"] = _huge(rng)
    elif r < 0.8:
        col = rng.choice(hdr["columns"])
        col[rng.choice((2, 3))] = rng.choice([_huge(rng), -1, 2**70, "x", None])
    else:
        hdr[rng.choice(["n", "parts", "columns", "payload_crc32"])] = rng.choice(_WEIRD)
    if r < 0.9:
        hdr["payload_crc32"] = zlib.crc32(payload)
    return join_index_file(prefix, hdr, payload)


def index_target() -> Target:
    seeds = [encode_index_file(t) for t in _index_seed_tables()]  # version 5 (names block)
    seeds.append(encode_index_file(_index_seed_tables()[0], version=4))  # the older layout
    seeds.append((FIXTURES / "store" / "golden" / "index" / "golden.fcidx").read_bytes())
    seeds.append((FIXTURES / "store" / "golden_checksums" / "index" / "golden.fcidx").read_bytes())  # version 4
    seeds.append((FIXTURES / "store" / "golden_names" / "index" / "golden.fcidx").read_bytes())  # version 5

    def declared(b: bytes) -> int:  # the bytes a header or names block asks for (bounded by the zstd ratio)
        try:
            names = struct.unpack_from("<I", b, 12)[0] if b[6] >= 5 else 0
            return max([names, *(int(c[2]) + int(c[3]) for c in split_index_file(b)[1]["columns"])])
        except Exception:  # noqa: BLE001 - only a bound
            return 0

    return Target("index-file", lambda b: decode_index_file(b, "fuzz.fcidx"), seeds, _index_forge, declared, 2)


def _log_decode(b: bytes) -> None:
    recs = decode_log(b, "fuzz.log")
    IndexTable.concat([IndexTable.from_records(["w"], [(0, r) for r in recs])])


def _log_forge(rng: random.Random, seed: bytes) -> bytes:
    lines = seed.split(b"\n")
    i = rng.randrange(max(1, len(lines) - 1))
    try:
        rec = json.loads(lines[i])
    except ValueError:
        return seed
    key = rng.choice(["id", "start", "length", "crc", "written", "ts", "lv", "tc", "meta", "ck"])
    rec[key] = rng.choice(_WEIRD + [[0, 0, 0, 2**70], [300, 0, 0, 0], "é\x00"])
    if key != "ck" and rng.random() < 0.5:  # an older writer's line (no checksum): the field checks alone
        rec.pop("ck", None)
    lines[i] = json.dumps(rec).encode()
    return b"\n".join(lines)


def log_target() -> Target:
    tab = _index_seed_tables()[0]
    seeds = []
    for k in (3, 12):
        seeds.append(b"".join(
            encode_record(tab.ids[j], int(tab.start[j]), int(tab.length[j]), int(tab.crc[j]), int(tab.written[j]),
                          (int(tab.ts_kind[j]), int(tab.ts_a[j]), int(tab.ts_b[j]), int(tab.ts_rate[j])),
                          json.loads(tab.meta[j]) if tab.meta[j] else None,
                          None if tab.levels_crc[j] < 0 else int(tab.levels_crc[j]),
                          None if tab.times_crc[j] < 0 else int(tab.times_crc[j]))
            for j in range(k)))
    seeds.append((FIXTURES / "store" / "golden_checksums" / "index" / "crashed.log").read_bytes())  # with ck, tc
    return Target("commit-log", _log_decode, seeds, _log_forge)


# ------------------------------------------------------------------------------ store header
def _header_forge(rng: random.Random, seed: bytes) -> bytes:
    doc = json.loads(seed)
    h = doc["attributes"]["featcomp"]
    key = rng.choice(sorted(h) + ["codec", "dequantization", "rate_levels", "mode", "format_version"])
    if isinstance(h.get(key), dict) and rng.random() < 0.6:
        sub = h[key]
        k2 = rng.choice(sorted(sub)) if sub else "x"
        sub[k2] = rng.choice(_WEIRD)
    else:
        h[key] = rng.choice(_WEIRD)
    return json.dumps(doc).encode()


def store_header_target(tmp: Path) -> Target:
    """Opens a copy of the golden store whose zarr.json is the case, and reads every video."""
    from featcomp.store import open_store

    root = tmp / "fuzz-store"
    if not root.exists():
        shutil.copytree(FIXTURES / "store" / "golden", root)
    seed = (FIXTURES / "store" / "golden" / "zarr.json").read_bytes()

    def decode(b: bytes) -> None:
        (root / "zarr.json").write_bytes(b)
        st = open_store(root)
        for vid in st:
            st[vid].latents() if st.mode == "coded" else st[vid].features()

    return Target("store-header", decode, [seed], _header_forge)


def store_header_v5_target(tmp: Path) -> Target:
    """Opens a copy of the version-5 golden store (header sidecar) whose zarr.json is the case: the
    sidecar reference, its ``$fcb`` entries and every other field mutated."""
    from featcomp.store import open_store

    root = tmp / "fuzz-store-v5"
    if not root.exists():
        shutil.copytree(FIXTURES / "store" / "golden_sidecar", root)
    seed = (FIXTURES / "store" / "golden_sidecar" / "zarr.json").read_bytes()

    def forge(rng: random.Random, b: bytes) -> bytes:
        if rng.random() < 0.5:
            return _header_forge(rng, b)
        doc = json.loads(b)
        h = doc["attributes"]["featcomp"]
        where = rng.choice([h["codec"], h["dequantization"], h["model_card"]["dequantization"], h["sidecar"]])
        where[rng.choice(sorted(where))] = rng.choice([{"$fcb": rng.randrange(-2, 9)}, {"$fcb": 0, "x": 1},
                                                       rng.choice(_WEIRD)])
        return json.dumps(doc).encode()

    def decode(b: bytes) -> None:
        (root / "zarr.json").write_bytes(b)
        st = open_store(root)
        for vid in st:
            st[vid].features()

    return Target("store-header-v5", decode, [seed], forge)


def _sidecar_forge(rng: random.Random, seed: bytes) -> bytes:
    """A sidecar whose payload has one field rewritten (entry count, kind, shape, byte count), recompressed
    with a valid CRC, or a valid-CRC header declaring another payload size."""
    from numcodecs.zstd import Zstd

    payload = bytearray(Zstd().decode(seed[16:]))
    if rng.random() < 0.8:
        i = rng.choice([0] + [4 + rng.randrange(15)])  # the count, or a field of the first entry
        payload[i : i + 4] = struct.pack("<I", rng.choice([0, 1, 2, 2**31 - 1, 2**32 - 1, _huge(rng) % 2**32]))
        comp = bytes(Zstd(level=3).encode(bytes(payload)))
        size = len(payload)
    else:
        comp, size = seed[16:], rng.choice([0, 1, _huge(rng) % 2**32])
    return seed[:8] + struct.pack("<II", size, zlib.crc32(comp)) + comp


def _sidecar_declared(b: bytes) -> int:
    return struct.unpack_from("<I", b, 8)[0] if len(b) >= 12 else 0


def sidecar_target() -> Target:
    """``decode_sidecar`` of the version-5 golden store's header sidecar (featcomp.store.sidecar); its
    float arrays then rebuilt as the reader does."""
    from featcomp.store.sidecar import decode_sidecar, is_sidecar_name

    (path,) = [p for p in (FIXTURES / "store" / "golden_sidecar").iterdir() if is_sidecar_name(p.name)]

    def decode(b: bytes) -> None:
        for e in decode_sidecar(b, "fuzz.fcb"):
            if not isinstance(e, bytes):
                e.tolist()

    return Target("header-sidecar", decode, [path.read_bytes()], _sidecar_forge, _sidecar_declared, 2)


def _part_forge(rng: random.Random, seed: bytes) -> bytes:
    doc = json.loads(seed)
    sh = doc["codecs"][0]["configuration"]
    choice = rng.randrange(5)
    if choice == 0:
        doc["shape"] = [_huge(rng), *doc["shape"][1:]]
    elif choice == 1:
        sh["chunk_shape"] = [rng.choice([0, -1, _huge(rng)]), *sh["chunk_shape"][1:]]
    elif choice == 2:
        doc["chunk_grid"]["configuration"]["chunk_shape"] = [rng.choice([0, _huge(rng)]), *doc["shape"][1:]]
    elif choice == 3:
        doc["shape"] = [doc["shape"][0], _huge(rng)]
    else:
        doc[rng.choice(sorted(doc))] = rng.choice(_WEIRD)
    return json.dumps(doc).encode()


def part_header_target(tmp: Path) -> Target:
    """Opens a copy of the golden store whose part metadata (parts/golden/zarr.json) is the case."""
    from featcomp.store import open_store

    root = tmp / "fuzz-part-store"
    if not root.exists():
        shutil.copytree(FIXTURES / "store" / "golden", root)
    seed = (FIXTURES / "store" / "golden" / "parts" / "golden" / "zarr.json").read_bytes()

    def decode(b: bytes) -> None:
        (root / "parts" / "golden" / "zarr.json").write_bytes(b)
        st = open_store(root)
        for vid in st:
            st[vid].latents()
            st[vid].window(1, 3).latents()

    def declared(b: bytes) -> int:  # a read allocates frames x the part's sample shape
        try:
            return int(np.prod([int(x) for x in json.loads(b)["shape"]], dtype=object))
        except Exception:  # noqa: BLE001 - only a bound
            return 0

    return Target("part-header", decode, [seed], _part_forge, declared, 8)


def _shard_forge(rng: random.Random, seed: bytes) -> bytes:
    """Offsets and lengths of the shard index rewritten, its CRC32C recomputed."""
    import google_crc32c

    n = 4  # golden store: 4 chunks per shard
    body = bytearray(seed[-(16 * n + 4) : -4])
    offs = np.frombuffer(bytes(body), "<u8").reshape(n, 2).copy()
    j, col = rng.randrange(n), rng.randrange(2)
    offs[j, col] = rng.choice([0, 2**64 - 1, 2**63, _huge(rng), int(offs[j, col]) + rng.randrange(-9, 9)]) % 2**64
    body = offs.astype("<u8").tobytes()
    return seed[: -(16 * n + 4)] + body + google_crc32c.value(body).to_bytes(4, "little")


def shard_target(tmp: Path) -> Target:
    """Reads every video (and a window) of a copy of the golden store whose first shard is the case."""
    from featcomp.store import open_store

    root = tmp / "fuzz-shard-store"
    if not root.exists():
        shutil.copytree(FIXTURES / "store" / "golden", root)
    key = root / "parts" / "golden" / "c" / "0" / "0"
    seed = (FIXTURES / "store" / "golden" / "parts" / "golden" / "c" / "0" / "0").read_bytes()

    def decode(b: bytes) -> None:
        key.write_bytes(b)
        st = open_store(root)
        for vid in st:
            st[vid].window(0, 2).latents()
            st[vid].latents()

    return Target("shard", decode, [seed], _shard_forge)


def shard_zarr_target(tmp: Path) -> Target:
    """The shard target read through zarr's API (``read_path="zarr"``: whole videos first, so their
    windows go through zarr too once proven); any damage must still end in a StoreError, bounded."""
    from featcomp.store import open_store

    root = tmp / "fuzz-shard-zarr-store"
    if not root.exists():
        shutil.copytree(FIXTURES / "store" / "golden", root)
    key = root / "parts" / "golden" / "c" / "0" / "0"
    seed = (FIXTURES / "store" / "golden" / "parts" / "golden" / "c" / "0" / "0").read_bytes()

    def decode(b: bytes) -> None:
        key.write_bytes(b)
        st = open_store(root, read_path="zarr")
        for vid in st:
            st[vid].latents()
            st[vid].window(0, 2).latents()

    return Target("shard-zarr", decode, [seed], _shard_forge)


def times_target(tmp: Path) -> Target:
    """Reads every video's timestamps from a copy of the golden store whose first timestamp chunk is the case."""
    from featcomp.store import open_store

    root = tmp / "fuzz-times-store"
    if not root.exists():
        shutil.copytree(FIXTURES / "store" / "golden", root)
    (rel,) = [p.relative_to(FIXTURES / "store" / "golden") for p in (FIXTURES / "store" / "golden" / "times").rglob("*")
              if p.is_file() and p.name != "zarr.json"][:1] or [None]
    seed = (FIXTURES / "store" / "golden" / rel).read_bytes()

    def decode(b: bytes) -> None:
        (root / rel).write_bytes(b)
        st = open_store(root)
        for vid in st:
            st[vid].timestamps  # noqa: B018

    return Target("times", decode, [seed], lambda rng, b: splice(rng, b, bytes(rng.randrange(256) for _ in range(64))))


def _codec_forge(rng: random.Random, seed: bytes) -> bytes:
    """A codec's body mutated (a field rewritten, bits flipped, cut), its sha256 digest recomputed."""
    import hashlib

    body = bytearray(seed[:-32])
    op = rng.randrange(3)
    if op == 0 and len(body) > 12:  # a 32-bit field somewhere in the fixed header or the arrays
        i = rng.randrange(4, min(len(body) - 4, 64))
        body[i : i + 4] = struct.pack("<I", rng.choice([0, 1, 2**31 - 1, 2**32 - 1, _huge(rng) % 2**32]))
    elif op == 1:
        body = bytearray(flip_bits(rng, bytes(body)))
    else:
        body = body[: rng.randrange(len(body) + 1)]
    return bytes(body) + hashlib.sha256(bytes(body)).digest()


def codec_bytes_target() -> Target:
    """``from_bytes`` of the three codec kinds (the tables a store header and a model file carry), then
    a round trip of a small array through the rebuilt codec (which builds its coding tables)."""
    kinds = {b"FCEC": EntropyCodec, b"FCTC": TemporalCodec, b"FCHP": HyperpriorCodec}
    seeds = [(G / f).read_bytes() for f in ("codec.bin", "temporal_codec_layout3.bin", "hyperprior_codec_layout3.bin",
                                            "temporal_codec_diagonal.bin")]
    by_magic = {}
    for b in seeds:
        for cls in (EntropyCodec, TemporalCodec, HyperpriorCodec):
            try:
                cls.from_bytes(b)
                by_magic[b[:4]] = cls
            except FeatcompError:
                pass
    del kinds

    def decode(b: bytes) -> None:
        cls = by_magic.get(b[:4], EntropyCodec)
        codec = cls.from_bytes(b)
        shape = (2, codec.channels) if cls is EntropyCodec else (2, codec.channels, 4, 4)
        k = np.zeros(shape, np.int32)
        back = codec.decompress_symbols(codec.compress_symbols(k))
        assert np.array_equal(back, k)

    def declared(b: bytes) -> int:
        return 64 * len(b)

    return Target("codec-bytes", decode, seeds, _codec_forge, declared, 1)


def all_targets(tmp: Path) -> list[Target]:
    return [*entropy_targets(), clip_target(), clip4_target(), index_target(), log_target(), store_header_target(tmp),
            part_header_target(tmp), shard_target(tmp), shard_zarr_target(tmp), times_target(tmp), codec_bytes_target(),
            store_header_v5_target(tmp), sidecar_target()]

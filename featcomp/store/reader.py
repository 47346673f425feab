"""Reading featcomp stores: ``open_store`` -> :class:`FeatureStore` (a read-only Mapping).

Reads go straight to the shard files (the zarr v3 ``sharding_indexed`` layout: chunks then an index
of (offset, nbytes) pairs and a CRC32C) and decode only the chunks a request needs with the store's
own tables. Plain ``zarr.open`` reads the same arrays (the codec is registered); the direct path
avoids per-chunk overhead and turns a missing or corrupt chunk into a :class:`StoreError` that names
the store, the video and the chunk.

Imports only numpy, zarr, numcodecs, constriction and fsspec (no torch, torchvision, decord, ray).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from featcomp.entropy.kinds import DEFAULT_KIND
from featcomp.errors import CodecError, StoreError
from featcomp.store._fs import StoreFS, read_logs
from featcomp.store.chunks import READ_PATHS, ZarrChunks
from featcomp.store.format import (
    NO_LEVELS,
    NO_TIMES_CRC,
    IndexTable,
    decode_log,
    decode_timestamps,
    dequantize_int8,
    video_crc,
)
from featcomp.store.index import load_index, read_store_header

__all__ = ["open_store", "FeatureStore", "StoredVideo", "load_index"]

log = logging.getLogger(__name__)

_EMPTY = np.uint64(2**64 - 1)
#: object stores: sealed shards up to this size are fetched whole (one GET) and cached
REMOTE_WHOLE_SHARD_BYTES = 8 << 20
#: object stores: bytes of whole shards a FeatureStore keeps (per process)
REMOTE_SHARD_CACHE_BYTES = 128 << 20
#: read_path="auto": whether whole videos of coded parts on local disk go through zarr. Off: zarr's
#: path measured 1.5-2.6x slower than the shard reader there (docs/benchmarks.md "store_read");
#: rerun scripts/bench_store_read.py and turn it on when a zarr release brings it within ~1.3x
AUTO_ZARR_WHOLE = False


def open_store(path_or_url: str | os.PathLike, *, storage_options: dict | None = None,
               read_path: str = "auto") -> FeatureStore:
    """Open a featcomp store read-only.

    Args:
        path_or_url: a directory, ``file://`` URL or any fsspec URL (``memory://``, ``s3://``...).
        storage_options: options of the URL's filesystem (``endpoint_url``, ``key``, ``secret``,
            ``anon``...; see :mod:`featcomp.storage`); environment credentials apply as usual.
        read_path: how chunks are read (:mod:`featcomp.store.chunks`): ``"auto"`` (the measured
            choice, docs/decisions.md "store reads through zarr"), ``"zarr"`` (zarr's own API for every
            whole-video read and every window of a video already proven by its CRC) or ``"hand"``
            (featcomp's shard reader only). Every path returns the same arrays and raises the same
            errors; only speed differs.

    Returns:
        A :class:`FeatureStore`: ``Mapping[str, StoredVideo]`` plus ``info()`` and ``failures()``.

    Raises:
        StoreError: not a featcomp store, a newer format, a corrupt index or header.
        StorageError: the URL's filesystem package is missing, credentials are refused, or the
            bucket does not exist.
    """
    return FeatureStore(path_or_url, storage_options=storage_options, read_path=read_path)


class _Part:
    """Direct reader for one part array (shard index parsing + chunk decoding): the hand-written
    :class:`~featcomp.store.chunks.ChunkSource` (``read(a, b, video)``); :meth:`zarr_chunks` is the
    same part read through zarr's API. Why both exist: :mod:`featcomp.store.chunks`."""

    def __init__(self, store: FeatureStore, name: str) -> None:
        self.store = store
        self.name = name
        fs = store.fs
        key = f"parts/{name}/zarr.json"
        try:
            meta = json.loads(fs.read(key))
        except FileNotFoundError:
            raise StoreError(f"{store.url}: part {name!r} is in the index but {key} is missing") from None
        except ValueError as e:
            raise StoreError(f"{store.url}: {key} is not valid JSON ({e})") from None
        try:
            self.shape = tuple(int(s) for s in meta["shape"])
            self.sample_shape = self.shape[1:]
            self.shard_frames = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
            (shard_codec,) = meta["codecs"]
            if shard_codec["name"] != "sharding_indexed":
                raise ValueError("not sharded")
            conf = shard_codec["configuration"]
            self.chunk_frames = int(conf["chunk_shape"][0])
            self.chunks_per_shard = self.shard_frames // self.chunk_frames
            if conf.get("index_location", "end") != "end":
                raise ValueError("shard index not at the end")
            names = [c["name"] for c in conf["codecs"]]
            idx_names = [c["name"] for c in conf["index_codecs"]]
            if idx_names != ["bytes", "crc32c"]:
                raise ValueError(f"index codecs {idx_names}")
            enc = meta.get("chunk_key_encoding", {})
            if enc.get("name") != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
                raise ValueError("chunk key encoding")
            self.dtype = np.dtype(meta["data_type"])
            # bounds before anything is allocated from them (a chunk is one entropy stream)
            from featcomp.entropy.bitstream import MAX_STREAM_ELEMENTS

            if len(self.shape) < 2 or min(self.shape) < 0 or self.chunk_frames < 1 or self.chunks_per_shard < 1 \
                    or self.shard_frames != self.chunk_frames * self.chunks_per_shard \
                    or self.chunk_frames * math.prod(self.sample_shape) > MAX_STREAM_ELEMENTS:
                raise ValueError(f"shape {self.shape}, shards of {self.shard_frames} frames, chunks of "
                                 f"{self.chunk_frames} frames")
        except (KeyError, ValueError, TypeError, OverflowError, ZeroDivisionError, IndexError) as e:
            raise StoreError(f"{store.url}: part {name!r} does not have the featcomp layout ({e!r})") from None
        from featcomp.store.codec import CODEC_NAME, decode_tables

        if names == [CODEC_NAME]:
            c = conf["codecs"][0].get("configuration")
            if not isinstance(c, dict) or not isinstance(c.get("tables"), str):
                raise StoreError(f"{store.url}: part {name!r}: its featcomp.ans configuration is missing or damaged")
            hdr_digest = store.store_header.digest
            if c.get("digest") != hdr_digest:
                raise StoreError(
                    f"{store.url}: table digest mismatch: part {name!r} was coded with "
                    f"{str(c.get('digest'))[:16]}..., the store header says {str(hdr_digest)[:16]}..."
                )
            part_kind = c.get("kind", DEFAULT_KIND)
            if part_kind != store.kind:
                raise StoreError(
                    f"{store.url}: part {name!r} records entropy-model kind {part_kind!r}, "
                    f"the store header {store.kind!r}; the store is inconsistent"
                )
            try:
                self.codec = decode_tables(c["tables"], c["digest"], part_kind)
            except CodecError as e:
                raise StoreError(f"{store.url}: part {name!r}: {e}") from None
            self.kind = "ans"
        elif names == ["bytes", "zstd"]:
            from numcodecs.zstd import Zstd

            if store.mode != "raw" or self.dtype != np.dtype(store.raw_dtype):
                raise StoreError(f"{store.url}: part {name!r} holds {self.dtype} values, but the store header says "
                                 f"a {store.mode} store of {store.raw_dtype or 'int32'}; the store is inconsistent")
            self.zstd = Zstd()
            self.kind = "zstd"
        else:
            raise StoreError(f"{store.url}: part {name!r} uses codecs {names}, which featcomp does not read")
        self.ndim = len(self.shape)
        #: dtype of the decoded values: int32 latents, float16 or int8 raw features
        self.values_dtype = np.dtype(np.int32) if self.kind == "ans" else self.dtype.newbyteorder("<")
        self._index_cache: dict[tuple, np.ndarray] = {}  # (key, size, mtime_ns, inode) -> parsed shard index
        # a closed writer's part never changes again: on object stores its shard indexes are cached by
        # key alone, so a read is one ranged GET (no HEAD for the shard's size and ETag)
        self.sealed = name not in store._live_parts
        self._sealed_cache: dict[str, tuple[int, np.ndarray]] = {}
        self._large_shards: set[str] = set()
        self._zarr: ZarrChunks | None = None

    def zarr_chunks(self) -> ZarrChunks:
        """This part as a :class:`ZarrChunks` source (zarr.open_array + slicing), made once."""
        if self._zarr is None:
            self._zarr = ZarrChunks(self.store, self.name, self.shape, self.values_dtype)
        return self._zarr

    def shard_key(self, s: int) -> str:
        return f"parts/{self.name}/c/{s}" + "/0" * (self.ndim - 1)

    def _decode_many(self, raws: list[bytes], where: str) -> list[np.ndarray]:
        """Decode several chunks (coded parts: one batched call, see ``codec.decode_chunks``)."""
        if self.kind == "ans":
            from featcomp.store.codec import decode_chunks

            return decode_chunks(raws, self.codec, self.sample_shape)
        return [self._decode(r, where) for r in raws]

    def _decode(self, raw: bytes, where: str) -> np.ndarray:
        if self.kind == "ans":
            from featcomp.store.codec import decode_chunk

            return decode_chunk(raw, self.codec, self.sample_shape)
        from featcomp.store.format import zstd_decode_bounded

        want = self.chunk_frames * int(np.prod(self.sample_shape))
        try:  # the frame must declare exactly one chunk (never allocate what a damaged frame declares)
            b = zstd_decode_bounded(raw, self.values_dtype.itemsize * want, self.zstd)
        except Exception as e:  # noqa: BLE001 - numcodecs raises RuntimeError/ValueError on damage
            raise CodecError(f"zstd: {e}") from None
        a = np.frombuffer(b, dtype=self.values_dtype)
        if a.size != want:
            raise CodecError(f"decoded {a.size} values, expected {self.chunk_frames} frames of {self.sample_shape}")
        return a.reshape(self.chunk_frames, *self.sample_shape)

    def read(self, a: int, b: int, video: str, missing: list[int] | None = None,
             zeros: list[int] | None = None) -> np.ndarray:
        """Frames ``[a, b)`` of the part: int32 (coded), float16 or int8 (raw) ``(b - a, *sample_shape)``.

        ``missing``: when given, an absent shard file reads as zeros (zarr writes no shard whose
        chunks all equal the fill value, e.g. an all-zero video alone in a shard) and its number is
        appended; the caller must then prove the frames with the video's CRC. Otherwise an absent
        shard is a StoreError. ``zeros``: when given, the numbers of the chunks that the shard index
        lists as empty (read as zeros) are appended: such a chunk carries no checksum either, so a
        window over one is proven by the video's CRC like a raw window (empty chunks are never cached)."""
        if b > self.shape[0]:
            raise StoreError(
                f"{self.store.url}: video {video!r}: frames {a}..{b} lie beyond part {self.name!r} "
                f"({self.shape[0]} frames); the index disagrees with the data"
            )
        out = np.empty((b - a, *self.sample_shape), dtype=self.values_dtype)
        if b <= a:
            return out
        cf, cps = self.chunk_frames, self.chunks_per_shard
        c0, c1 = a // cf, (b - 1) // cf
        cache = self.store._chunk_cache
        chunks: dict[int, np.ndarray] = {}
        for j in range(c0, c1 + 1):
            hit = cache.get((self.name, j))
            if hit is not None:
                chunks[j] = hit
        empty: list[int] = []
        for s in range(c0 // cps, c1 // cps + 1):
            j0, j1 = max(c0, s * cps), min(c1, s * cps + cps - 1)
            while j0 <= j1 and j0 in chunks:
                j0 += 1
            while j1 >= j0 and j1 in chunks:
                j1 -= 1
            if j0 > j1:
                continue
            lost = len(missing) if missing is not None else 0
            for j, chunk in self._read_shard_chunks(s, j0, j1, video, missing, empty):
                chunks[j] = chunk
            if missing is not None and len(missing) > lost:
                empty.extend(range(j0, j1 + 1))  # an absent shard's zeros: never cached (see below)
        for j in range(c0, c1 + 1):
            chunk = chunks[j]
            lo, hi = max(a, j * cf), min(b, (j + 1) * cf)
            out[lo - a : hi - a] = chunk[lo - j * cf : hi - j * cf]
        # keep the edge chunks: the neighbouring video (sequential reads) shares them; never the zeros
        # read for an empty slot or an absent shard (a cached zero chunk would let a later window
        # skip the CRC proof that such a read needs)
        for j in {c0, c1}.difference(empty):
            cache.put((self.name, j), chunks[j])
        if zeros is not None:
            zeros.extend(j for j in empty if not (missing and j // cps in missing))
        return out

    def _read_shard_chunks(self, s: int, j0: int, j1: int, video: str, missing: list[int] | None = None,
                           empty: list[int] | None = None):
        key = self.shard_key(s)
        fs = self.store.fs
        n_idx = 16 * self.chunks_per_shard + 4
        where = f"{self.store.url}: video {video!r}: shard {key}"
        for attempt in range(2 if not fs.local else 1):
            try:
                if fs.local:
                    with open(fs.path(key), "rb") as f:  # one open file: one consistent version
                        stat = os.fstat(f.fileno())
                        size = stat.st_size
                        if size < n_idx:
                            raise StoreError(f"{where}: truncated shard ({size} bytes)")
                        ident = (key, size, stat.st_mtime_ns, stat.st_ino)
                        offs = self._index_cache.get(ident)
                        if offs is None:
                            idx_raw = os.pread(f.fileno(), n_idx, size - n_idx)
                            offs = self._parse_index(idx_raw, where, size)
                            if len(self._index_cache) > 64:
                                self._index_cache.clear()
                            self._index_cache[ident] = offs
                        span, base = self._span(offs, j0, j1, s)
                        blob = os.pread(f.fileno(), span[1] - span[0], span[0]) if span else b""
                else:  # object stores, see _remote_shard
                    whole = self._remote_shard(key, attempt)
                    hit = self._sealed_cache.get(key) if self.sealed and attempt == 0 else None
                    if whole is not None:
                        size = len(whole)
                        if hit is None:
                            if size < n_idx:
                                raise StoreError(f"{where}: truncated shard ({size} bytes)")
                            hit = (size, self._parse_index(whole[size - n_idx :], where, size))
                            self._sealed_cache[key] = hit
                        offs = hit[1]
                    elif hit is not None:
                        size, offs = hit
                    else:
                        size, tag = fs.stat(key)
                        if size < n_idx:
                            raise StoreError(f"{where}: truncated shard ({size} bytes)")
                        ident = (key, size, tag)
                        offs = self._index_cache.get(ident) if tag is not None else None
                        if offs is None:
                            idx_raw = fs.read_range(key, size - n_idx, size)
                            offs = self._parse_index(idx_raw, where, size)
                            if len(self._index_cache) > 64:
                                self._index_cache.clear()
                            self._index_cache[ident] = offs
                        if self.sealed:
                            if len(self._sealed_cache) > 4096:
                                self._sealed_cache.clear()
                            self._sealed_cache[key] = (size, offs)
                    span, base = self._span(offs, j0, j1, s)
                    if whole is not None:
                        blob = whole[span[0] : span[1]] if span else b""
                    else:
                        blob = fs.read_range(key, span[0], span[1]) if span else b""
                out = []
                todo: list[tuple[int, bytes]] = []
                for j in range(j0, j1 + 1):
                    o, nb = offs[j - s * self.chunks_per_shard]
                    if o == _EMPTY:
                        if empty is not None:
                            empty.append(j)
                        out.append((j, np.zeros((self.chunk_frames, *self.sample_shape), dtype=self.values_dtype)))
                        continue
                    raw = blob[int(o) - span[0] : int(o) + int(nb) - span[0]]
                    if len(raw) != int(nb):
                        raise StoreError(f"{where}, chunk {j}: truncated ({len(raw)} of {int(nb)} bytes)")
                    todo.append((j, raw))
                if len(todo) > 1:
                    try:  # several chunks: one batched decode (temporal streams decode in lockstep)
                        out += list(zip([j for j, _ in todo], self._decode_many([r for _, r in todo], where)))
                        todo = []
                    except CodecError:
                        out = [x for x in out if x[0] not in {j for j, _ in todo}]  # name the bad chunk below
                for j, raw in todo:
                    try:
                        out.append((j, self._decode(raw, where)))
                    except CodecError as e:
                        raise StoreError(f"{where}, chunk {j} (frames {j * self.chunk_frames}..): corrupt: {e}") from None
                out.sort(key=lambda x: x[0])
                return out
            except FileNotFoundError:
                if missing is not None:
                    missing.append(s)
                    zero = np.zeros((self.chunk_frames, *self.sample_shape), dtype=self.values_dtype)
                    return [(j, zero) for j in range(j0, j1 + 1)]
                raise StoreError(f"{where}: shard file is missing; the store lost data (run `featcomp verify`)") from None
            except StoreError:
                if attempt == 0 and not fs.local:
                    self._index_cache.clear()
                    self._sealed_cache.pop(key, None)
                    self.store._shard_bytes.pop(key)
                    continue  # the shard may have been replaced between two range reads
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _remote_shard(self, key: str, attempt: int) -> bytes | None:
        """A sealed part's whole shard object on an object store, fetched once and kept in the store's
        byte-bounded shard cache; None for live parts, large shards, or a retry.

        Object stores bill and wait per request: a shard holds many videos' chunks (32 chunks of ~32k
        symbols, typically 0.1-2 MiB coded), so one GET of the whole shard (after one HEAD for its
        size) serves every later read of every video in it. Shards above ``REMOTE_WHOLE_SHARD_BYTES``
        are read by ranges instead.
        """
        if not self.sealed or attempt:
            return None
        cache = self.store._shard_bytes
        whole = cache.get(key)
        if whole is not None:
            return whole
        if key in self._large_shards:
            return None
        size, _tag = self.store.fs.stat(key)
        if size > REMOTE_WHOLE_SHARD_BYTES:
            self._large_shards.add(key)
            return None
        whole = self.store.fs.read(key)
        cache.put(key, whole)
        return whole

    def _parse_index(self, idx_raw: bytes, where: str, size: int) -> np.ndarray:
        import google_crc32c

        body, crc = idx_raw[:-4], idx_raw[-4:]
        if int.from_bytes(crc, "little") != google_crc32c.value(body):
            raise StoreError(f"{where}: shard index CRC32C mismatch (corrupt or truncated shard)")
        offs = np.frombuffer(body, dtype="<u8").reshape(-1, 2)
        valid = offs[:, 0] != _EMPTY
        end = np.uint64(size - len(idx_raw))
        o, n = offs[valid, 0], offs[valid, 1]
        if np.any(o > end) or np.any(n > end - o):  # (no uint64 wrap-around: o <= end is checked first)
            raise StoreError(f"{where}: shard index points past the end of the file (truncated shard)")
        # zarr writes a shard's chunks back to back in chunk order (morton order, which is chunk order for
        # featcomp's shards: they split time only), then the index. An index that lists them otherwise
        # (overlapping, duplicated, swapped, with gaps or trailing bytes) was forged or damaged even when its
        # CRC32C matches: a coded chunk is a valid stream on its own, so a swapped pair would decode into
        # the wrong frames of a window without it.
        if o.size:
            o, n = o.astype(np.int64), n.astype(np.int64)
            expect = np.concatenate([[0], np.cumsum(n)[:-1]])
            bad = np.flatnonzero((o != expect) | (n < 1))
            if bad.size or int(o[-1] + n[-1]) != int(end):
                k = int(bad[0]) if bad.size else o.size - 1
                j = int(np.flatnonzero(valid)[k])  # the slot (chunk of this shard) where it breaks
                raise StoreError(f"{where}: shard index does not list the chunks back to back in chunk order "
                                 f"(first wrong at chunk {j} of the shard: offset {int(o[k])}, {int(n[k])} bytes; "
                                 f"{int(end)} bytes of chunks); a forged or damaged index although its CRC32C "
                                 "matches: the shard is corrupt (run `featcomp verify`, `featcomp repair`)")
        elif int(end) != 0:
            raise StoreError(f"{where}: shard index lists no chunk but the shard holds {int(end)} bytes of chunks "
                             "(a forged or damaged index); the shard is corrupt")
        return offs

    def _span(self, offs: np.ndarray, j0: int, j1: int, s: int):
        sel = offs[j0 - s * self.chunks_per_shard : j1 - s * self.chunks_per_shard + 1]
        sel = sel[sel[:, 0] != _EMPTY]
        if not len(sel):
            return None, 0
        lo = int(sel[:, 0].min())
        hi = int((sel[:, 0] + sel[:, 1]).max())
        return (lo, hi), lo

    def shard_count(self) -> int:
        return -(-self.shape[0] // self.shard_frames)


class _NotPlain(Exception):
    """A side array whose layout is not the one featcomp writes (read with zarr instead)."""


class _SideArray:
    """A 1-D side array (``times/<part>``, ``levels/<part>``) as featcomp writes it (zarr v3, regular
    chunks, ``bytes`` + ``zstd``), read with bounded work: each chunk's zstd frame must declare exactly
    the chunk's size and is decoded into a buffer of that size (zarr would allocate whatever a damaged
    frame declares). ``shape`` and ``arr[a:b]`` as a zarr array; an absent chunk reads as the fill value."""

    _MAX_CHUNK = 1 << 24

    def __init__(self, fs: StoreFS, key: str) -> None:
        meta = json.loads(fs.read(f"{key}/zarr.json"))
        try:
            codecs = [c["name"] for c in meta["codecs"]]
            endian = meta["codecs"][0].get("configuration", {}).get("endian", "little")
            enc = meta.get("chunk_key_encoding", {})
            sep = enc.get("configuration", {}).get("separator", "/")
            (n,) = meta["shape"]
            (cl,) = meta["chunk_grid"]["configuration"]["chunk_shape"]
            dtype = np.dtype(meta["data_type"])
            fill = meta.get("fill_value", 0)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise _NotPlain(repr(e)) from None
        if codecs != ["bytes", "zstd"] or endian != "little" or enc.get("name", "default") != "default" or sep != "/":
            raise _NotPlain(str(codecs))
        if not (isinstance(n, int) and isinstance(cl, int) and n >= 0 and 1 <= cl <= self._MAX_CHUNK
                and dtype.kind in "fiu" and dtype.itemsize <= 8):
            raise ValueError(f"{key}: shape {n!r}, chunks {cl!r}, dtype {meta.get('data_type')!r}")
        self.fs, self.key, self.shape, self.chunk, self.dtype = fs, key, (n,), cl, dtype.newbyteorder("<")
        self.fill = fill

    def _chunk(self, i: int) -> np.ndarray:
        from numcodecs.zstd import Zstd

        from featcomp.store.format import zstd_decode_bounded

        try:
            raw = self.fs.read(f"{self.key}/c/{i}")
        except FileNotFoundError:
            return np.full(self.chunk, self.fill, self.dtype)
        try:
            b = zstd_decode_bounded(raw, self.chunk * self.dtype.itemsize, Zstd())
        except Exception as e:  # noqa: BLE001 - numcodecs raises RuntimeError/ValueError on damage
            raise StoreError(f"chunk {self.key}/c/{i} is damaged ({type(e).__name__}: {e})") from None
        return np.frombuffer(b, self.dtype)

    def __getitem__(self, sl: slice) -> np.ndarray:
        a, b, _ = sl.indices(self.shape[0])
        if b <= a:
            return np.zeros(0, self.dtype)
        parts = [self._chunk(i) for i in range(a // self.chunk, (b - 1) // self.chunk + 1)]
        whole = parts[0] if len(parts) == 1 else np.concatenate(parts)
        off = (a // self.chunk) * self.chunk
        return whole[a - off : b - off]


class _ChunkCache:
    """A small LRU of decoded chunks (edge chunks shared by consecutive videos of a part).

    Safe under concurrent appends: the frames a reader's index references were committed before
    the index was read, and later writes never change them.
    """

    def __init__(self, max_items: int = 16) -> None:
        from collections import OrderedDict

        self.max_items = max_items
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.max_items:
                self._d.popitem(last=False)


class _ByteLRU:
    """An LRU of byte strings bounded by their total size (whole shards of object stores)."""

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.nbytes = 0
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key, value: bytes) -> None:
        with self._lock:
            old = self._d.pop(key, None)
            self.nbytes -= len(old) if old is not None else 0
            self._d[key] = value
            self.nbytes += len(value)
            while self.nbytes > self.max_bytes and len(self._d) > 1:
                _, v = self._d.popitem(last=False)
                self.nbytes -= len(v)

    def pop(self, key) -> None:
        with self._lock:
            v = self._d.pop(key, None)
            self.nbytes -= len(v) if v is not None else 0


class FeatureStore(Mapping):
    """A read-only featcomp store: ``Mapping[str, StoredVideo]``.

    Attributes:
        url: where the store lives. header: the store header (format version, codec, model card,
        dequantization). model_card: the model card dict. mode: ``"coded"`` or ``"raw"``.
        rate_levels: number of rate levels of a store that records a level per frame (format
        version 3), else 0. level_scale: float32 ``(rate_levels, C)`` the dequantization step of each
        level, or None. raw_dtype: ``"float16"`` or ``"int8"`` for raw stores (int8: per-video
        per-channel scales, format version 4; ``features()`` dequantizes), None for coded stores.

    Picklable (only the URL travels; the index is reloaded lazily in the receiving process).
    """

    def __init__(self, path_or_url: str | os.PathLike, *, storage_options: dict | None = None,
                 read_path: str = "auto") -> None:
        if read_path not in READ_PATHS:
            raise StoreError(f"read_path must be one of {READ_PATHS}, got {read_path!r}")
        #: how chunks are read: "auto", "zarr" or "hand" (see open_store)
        self.read_path = read_path
        self.url = os.fspath(path_or_url)
        self.fs = StoreFS(self.url, storage_options)
        self.storage_options = self.fs.storage_options
        if self.fs.local and not os.path.isdir(self.fs.root):
            raise StoreError(f"{self.url}: no such store directory")
        try:
            #: the header as recorded (a dict); ``store_header`` is the same, typed and checked
            self.header, self.store_header = read_store_header(self.fs)
        except StoreError:
            self.fs.check_root()  # a missing bucket says so, not "no zarr.json"
            raise
        sh = self.store_header
        self.mode = sh.mode
        self.model_card = sh.model_card
        #: entropy-model kind of a coded store ("factorized", "temporal", ...); None for raw stores
        self.kind = sh.kind
        #: dtype of a raw store's values: "float16", or "int8" (per-video scales, format version 4); None coded
        self.raw_dtype = sh.raw_dtype
        #: index files and commit-log lines that could not be read ({where: reason}); the store serves
        #: every other video (see load_index). Empty for an intact store.
        self.damaged: dict[str, str] = {}
        self._live_parts: set[str] = set()
        #: what each damaged entry still names: {where: (parts, video ids)} (index files of version 5
        #: keep their names in a separately checked block; a damaged log line names the id it spells)
        self.damaged_names: dict[str, tuple[list[str], list[str]]] = {}
        self._index = load_index(self.fs, live_parts=self._live_parts, damaged=self.damaged,
                                 named=self.damaged_names)
        self._rows = {vid: j for j, vid in enumerate(self._index.ids)}
        #: videos known lost: named by a damaged index file (version 5) or commit-log line and served by
        #: no other record, ``{video_id: where}`` (``featcomp repair`` rebuilds what it can; a re-run of
        #: the job writes the rest again). Empty for an intact store.
        self.lost_videos: dict[str, str] = {
            vid: where for where, (_parts, ids) in sorted(self.damaged_names.items())
            for vid in ids if vid not in self._rows
        }
        if self.damaged:
            log.warning("%s: %d index file(s)/record(s) cannot be read and are left out (run `featcomp verify`, "
                        "`featcomp repair`): %s; %d video(s) known lost", self.url, len(self.damaged),
                        ", ".join(sorted(self.damaged)), len(self.lost_videos))
        self._parts: dict[int, _Part] = {}
        self._times: dict[int, Any] = {}
        self._level_arrays: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._chunk_cache = _ChunkCache()
        self._shard_bytes = _ByteLRU(REMOTE_SHARD_CACHE_BYTES)  # object stores: whole sealed shards
        self._level_cache = _ChunkCache(max_items=64)  # row -> the video's levels (windows of one video)
        self._proven: set[int] = set()  # rows whose whole data matched their CRC (windows then trust it)
        # the dequantization steps come from the store's own header (checked by StoreHeader.from_dict),
        # never from the head that wrote it
        deq = sh.dequantization if self.mode == "coded" else None
        self._offsets = deq.offsets_array if deq is not None else None
        self._scale = deq.scale_array if deq is not None else None
        #: number of rate levels of a store that records a level per frame (format version 3), else 0
        self.rate_levels = sh.rate_levels
        self.level_scale = deq.level_scale_array if self.rate_levels else None

    def _use_index(self, table: IndexTable) -> None:
        """Serve ``table`` instead of the index read at opening (``repair_store`` checks the rows it keeps
        and rebuilds with the reader's own checks); every per-row and per-part cache is dropped."""
        self._index = table
        self._rows = {vid: j for j, vid in enumerate(table.ids)}
        self._parts.clear()
        self._times.clear()
        self._level_arrays.clear()
        self._proven.clear()
        self._chunk_cache = _ChunkCache()
        self._level_cache = _ChunkCache(max_items=64)

    # -- pickling: only the URL and the storage options
    def __getstate__(self):
        return {"url": self.url, "storage_options": self.storage_options, "read_path": self.read_path}

    def __setstate__(self, state):
        self.__init__(state["url"], storage_options=state.get("storage_options"),
                      read_path=state.get("read_path", "auto"))

    def __repr__(self) -> str:
        return f"FeatureStore({self.url!r}, videos={len(self)}, mode={self.mode!r})"

    # -- Mapping
    def __getitem__(self, video_id: str) -> StoredVideo:
        j = self._rows.get(video_id)
        if j is None:
            raise KeyError(f"video {video_id!r} is not in store {self.url}")
        return StoredVideo(self, j)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.ids)

    def __len__(self) -> int:
        return len(self._index)

    # -- internals
    @property
    def index(self) -> IndexTable:
        return self._index

    @property
    def codec(self):
        """The store's frozen codec (coded stores; :class:`EntropyCodec` for factorized stores, the
        kind's class otherwise), rebuilt from the stored tables with no model file."""
        if self.mode != "coded":
            return None
        from featcomp.store.codec import decode_tables

        try:
            c = self.header["codec"]
            return decode_tables(c["tables"], c["digest"], self.kind)
        except CodecError as e:
            raise StoreError(f"{self.url}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"{self.url}: corrupt codec in the store header ({e!r}); the store is damaged") from None

    def _zarr_serves(self, part: _Part, whole: bool, row: int) -> bool:
        """Whether a read of index row ``row`` (the whole video, or a window) goes through zarr.

        ``"hand"``: never. ``"zarr"``: every whole video (still proven by its CRC before it is served)
        and every window of a video already proven. ``"auto"``: the measured choice
        (scripts/bench_store_read.py, docs/decisions.md "store reads through zarr"): the hand path
        everywhere today (zarr measured >1.3x slower in every row); only whole videos of coded parts on
        local disk may ever move (``AUTO_ZARR_WHOLE``): windows (no CRC of their own to prove zarr's
        answer), raw parts (zarr cannot bound a damaged zstd frame) and object stores (whole sealed
        shards cached, one GET per shard) need the hand path's guarantees.
        """
        if self.read_path == "hand":
            return False
        if self.read_path == "zarr":
            return whole or row in self._proven
        return whole and part.kind == "ans" and self.fs.local and AUTO_ZARR_WHOLE

    def _part(self, p: int) -> _Part:
        part = self._parts.get(p)
        if part is None:
            with self._lock:
                try:
                    part = self._parts.get(p) or _Part(self, self._index.parts[p])
                except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as e:
                    raise StoreError(f"{self.url}: part {self._index.parts[p]!r}: its metadata "
                                     f"(parts/{self._index.parts[p]}/zarr.json) is damaged ({e!r})") from None
                self._parts[p] = part
        return part

    def _timestamps(self, j: int) -> np.ndarray:
        ix = self._index
        n = int(ix.length[j])
        t = decode_timestamps(int(ix.ts_kind[j]), int(ix.ts_a[j]), int(ix.ts_b[j]), int(ix.ts_rate[j]), n)
        if t is not None:
            return t
        arr = self._side_array(self._times, "times", j, "timestamps array")
        s = int(ix.start[j])
        try:
            t = np.asarray(arr[s : s + n], dtype=np.float64)
        except Exception as e:  # zarr/numcodecs raise RuntimeError, ValueError... for damaged chunks
            raise StoreError(f"{self.url}: video {ix.ids[j]!r}: timestamps times/{ix.parts[int(ix.part[j])]} frames "
                             f"{s}..{s + n} unreadable ({type(e).__name__}: {e}); the store is corrupt") from None
        if t.shape != (n,):
            raise StoreError(f"{self.url}: video {ix.ids[j]!r}: {t.shape[0]} timestamps for {n} frames; the store is corrupt")
        want_crc = int(ix.times_crc[j])  # NO_TIMES_CRC: a record of a writer that did not record it
        if want_crc != NO_TIMES_CRC and zlib.crc32(np.ascontiguousarray(t, dtype="<f8").tobytes()) != want_crc:
            raise StoreError(f"{self.url}: video {ix.ids[j]!r}: its timestamps (times/{ix.parts[int(ix.part[j])]}, "
                             f"frames {s}..{s + n}) do not match the record's CRC; the store is corrupt")
        return t

    def _side_array(self, cache: dict, group: str, j: int, what: str):
        """The per-frame side array ``<group>/<part>`` of index row ``j``'s part (opened once, cached)."""
        ix = self._index
        p = int(ix.part[j])
        arr = cache.get((p, os.getpid()))  # zarr arrays of a remote store are not reused after a fork
        if arr is None:
            key = f"{group}/{ix.parts[p]}"
            try:
                arr = _SideArray(self.fs, key)
            except _NotPlain:  # another layout than featcomp writes: let zarr read it
                import zarr

                try:
                    arr = zarr.open_array(self.fs.zarr_store(read_only=True), path=key, mode="r")
                except Exception as e:
                    raise StoreError(f"{self.url}: video {ix.ids[j]!r}: {what} {key} unreadable: {e}") from None
            except (StoreError, FileNotFoundError, ValueError, KeyError, TypeError) as e:
                raise StoreError(f"{self.url}: video {ix.ids[j]!r}: {what} {key} unreadable: {e}") from None
            cache[(p, os.getpid())] = arr
        return arr

    def _scale_of(self, j: int) -> np.ndarray | None:
        """float32 ``(C,)`` scales of index row ``j`` in an int8 raw store (None in other stores).

        Raises:
            StoreError: an int8 store's record without scales, or with another number than the part's
                channels; scales recorded for a video of a store that is not int8.
        """
        sc = self._index.scales[j]
        vid = self._index.ids[j]
        if self.raw_dtype != "int8":
            if sc is not None:
                raise StoreError(f"{self.url}: video {vid!r} records int8 scales, but the store is not an int8 raw "
                                 "store; the store is inconsistent (run `featcomp verify`)")
            return None
        c = self._part(int(self._index.part[j])).sample_shape[0]
        if sc is None or sc.shape != (c,):
            got = "none" if sc is None else f"{sc.shape[0]}"
            raise StoreError(f"{self.url}: video {vid!r}: its record holds {got} int8 scales for {c} channels; "
                             "the store is corrupt (run `featcomp verify`)")
        return sc

    def _levels(self, j: int) -> np.ndarray | None:
        """uint8 ``(length,)`` per-frame rate levels of index row ``j``, or None when it has none.

        The whole video's levels are read (1 byte per frame), checked against the record's CRC and
        range, and cached, so that windows of one video read them once.
        """
        ix = self._index
        want_crc = int(ix.levels_crc[j])
        if want_crc == NO_LEVELS:
            return None
        hit = self._level_cache.get(j)
        if hit is not None:
            return hit
        vid = ix.ids[j]
        p = int(ix.part[j])
        if not self.rate_levels:
            raise StoreError(f"{self.url}: video {vid!r} records per-frame levels but the store header has no "
                             "rate levels (format version < 3); the store is inconsistent")
        arr = self._side_array(self._level_arrays, "levels", j, "levels array")
        s, n = int(ix.start[j]), int(ix.length[j])
        if s + n > arr.shape[0]:
            raise StoreError(f"{self.url}: video {vid!r}: frames {s}..{s + n} lie beyond levels/{ix.parts[p]} "
                             f"({arr.shape[0]} frames); the index disagrees with the data")
        try:
            lv = np.ascontiguousarray(arr[s : s + n], dtype=np.uint8)
        except Exception as e:
            raise StoreError(f"{self.url}: video {vid!r}: levels/{ix.parts[p]} frames {s}..{s + n} unreadable: {e}") from None
        if zlib.crc32(lv.tobytes()) != want_crc:
            raise StoreError(f"{self.url}: video {vid!r}: its rate levels (levels/{ix.parts[p]}, frames {s}..{s + n}) "
                             "do not match the record's CRC; the store is corrupt")
        if n and int(lv.max()) >= self.rate_levels:
            raise StoreError(f"{self.url}: video {vid!r}: rate level {int(lv.max())} but the store has "
                             f"{self.rate_levels} levels; the store is corrupt")
        lv.setflags(write=False)
        self._level_cache.put(j, lv)
        return lv

    def dequantize(self, k: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        """float32 features ``(k + offsets) * scale`` (per channel, axis 1).

        ``levels``: ints ``(len(k),)``, the rate level of each frame (stores with per-frame levels):
        frame t is scaled by ``level_scale[levels[t]]`` instead of ``scale``.
        """
        shape = (1, -1) + (1,) * (k.ndim - 2)
        out = k.astype(np.float32)
        out += self._offsets.reshape(shape)
        if levels is None:
            out *= self._scale.reshape(shape)
            return out
        if self.level_scale is None:
            raise StoreError(f"{self.url}: this store has no per-level dequantization steps (no rate levels)")
        levels = np.asarray(levels)
        if levels.shape != (k.shape[0],):
            raise StoreError(f"{self.url}: {k.shape[0]} frames but levels of shape {levels.shape}")
        sc = self.level_scale[levels.astype(np.intp)]  # (n, C)
        out *= sc.reshape(sc.shape + (1,) * (k.ndim - 2))
        return out

    # -- summaries
    def info(self) -> dict[str, Any]:
        """Counts and sizes.

        The store's bytes split in two: **per-frame data** (the coded chunks under ``parts/``, and
        ``times/``, ``levels/``: what grows with every frame) and **fixed bytes** (the header with the
        coding tables, the index, each shard file's chunk index, part metadata and the failures table:
        paid once per store, per shard of ``shard_chunks`` chunks, or per video for index records). Bits per
        frame and ratios are of the per-frame data as stored (the extraction job's summary reports the
        codec's estimate of the latents alone, a few percent less: no chunk framing, ``times/`` or
        ``levels/``; 447 against 484 bits/frame on a 97-frame rate-controlled temporal store);
        ``*_on_disk`` figures count every byte.

        Returns:
            dict with ``videos``, ``frames``, ``parts``, ``bytes`` (every file of the store),
            ``data_bytes`` (per-frame data), ``fixed_bytes`` (everything else), of which
            ``header_bytes`` (root ``zarr.json``: format, tables, model card; with its sidecar file in format
            version 5), ``index_bytes``,
            ``shard_index_bytes`` (the chunk index at the end of each shard file) and ``other_bytes``
            (part metadata, failures); ``bits_per_frame`` (per-frame data; the same as
            ``data_bits_per_frame``), ``total_bits_per_frame`` (every byte), ``sample_shape``,
            ``float16_bytes`` (the same frames as float16 values of ``sample_shape``; for coded
            stores the latent shape), ``ratio_vs_float16`` (per-frame data) and ``ratio_on_disk``
            (every byte); ``backbone_float16_bytes``, ``ratio_vs_backbone_float16`` and
            ``backbone_ratio_on_disk`` (coded stores whose model card names the head's
            ``in_channels``: the float16 backbone features the latents replace), ``failures``, ``mode``,
            ``digest``, ``codec_kind`` (the entropy-model kind; None for raw stores), ``raw_dtype`` (raw
            stores: ``"float16"`` or ``"int8"``; None for coded stores), ``rate_levels``
            (levels of a store that records a rate level per frame, else 0), ``partial`` (videos kept
            from truncated files, :meth:`partial_videos`).
        """
        sizes = self.fs.walk_sizes()
        total = sum(sizes.values())
        data = sum(v for k, v in sizes.items()
                   if k.startswith(("parts/", "times/", "levels/")) and not k.endswith("zarr.json"))
        index = sum(v for k, v in sizes.items() if k.startswith("index/"))
        sc = self.header.get("sidecar")  # format version 5: the header's bulk is in a sidecar file
        header = int(sizes.get("zarr.json", 0)) + (int(sizes.get(sc["file"], 0)) if isinstance(sc, dict) else 0)
        # each shard file of parts/ ends with its chunk index (16 bytes per chunk slot + a CRC-32C),
        # written whole even for a shard that holds one chunk: fixed per shard, not per frame
        shard_files = sum(1 for k in sizes if k.startswith("parts/") and not k.endswith("zarr.json"))
        shard_index = shard_files * (16 * int(self.store_header.shard_chunks or 0) + 4) if shard_files else 0
        shard_index = min(shard_index, data)
        data -= shard_index
        frames = int(self._index.length.sum())
        shapes = {self._part(p).sample_shape for p in np.unique(self._index.part).tolist()} if len(self) else set()
        sample = next(iter(shapes)) if len(shapes) == 1 else None
        f16 = frames * int(np.prod(sample)) * 2 if sample else None
        bb16 = self._backbone_float16_bytes(frames, sample)
        return {
            "store": self.url,
            "format_version": self.store_header.format_version,
            "mode": self.mode,
            "raw_dtype": self.raw_dtype,
            "codec_kind": self.kind,
            "rate_levels": self.rate_levels,
            "digest": self.store_header.digest,
            "videos": len(self),
            "frames": frames,
            "parts": len(set(self._index.part.tolist())),
            "sample_shape": list(sample) if sample else None,
            "bytes": total,
            "data_bytes": data,
            "fixed_bytes": total - data,
            "header_bytes": header,
            "index_bytes": index,
            "shard_index_bytes": shard_index,
            "other_bytes": total - data - index - header - shard_index,
            "bits_per_frame": 8.0 * data / frames if frames else None,
            "data_bits_per_frame": 8.0 * data / frames if frames else None,
            "total_bits_per_frame": 8.0 * total / frames if frames else None,
            "float16_bytes": f16,
            "ratio_vs_float16": (f16 / data) if f16 and data else None,
            "ratio_on_disk": (f16 / total) if f16 and total else None,
            "backbone_float16_bytes": bb16,
            "ratio_vs_backbone_float16": (bb16 / data) if bb16 and data else None,
            "backbone_ratio_on_disk": (bb16 / total) if bb16 and total else None,
            "failures": len(self.failures()),
            "partial": len(self.partial_videos()),
        }

    def partial_videos(self) -> dict[str, str]:
        """Videos stored from a truncated file (``allow_partial``): ``{video_id: reason}``.

        Their metadata carries ``"partial"``: why the decodable part is all there is (e.g.
        ``"decoded 4 of the 17 frames the container declares"``). Stores written before this
        existed simply have none.
        """
        out: dict[str, str] = {}
        for vid, m in zip(self._index.ids, self._index.meta):
            if m and '"partial"' in m:
                reason = json.loads(m).get("partial")
                if reason:
                    out[vid] = str(reason)
        return out

    def _backbone_float16_bytes(self, frames: int, sample: tuple[int, ...] | None) -> int | None:
        """float16 bytes of the backbone features the stored latents replace, from the model card.

        The head maps ``in_channels`` backbone channels to ``latent_channels`` per position (pooled,
        per time step, or per spatial cell), so the backbone sample holds
        ``prod(sample) * in_channels / latent_channels`` values. None for raw stores or cards
        without a head description.
        """
        head = (self.model_card or {}).get("head") if isinstance(self.model_card, dict) else None
        if not sample or not isinstance(head, dict) or self.mode == "raw":
            return None
        cin, cout = head.get("in_channels"), head.get("latent_channels")
        if not isinstance(cin, int) or not isinstance(cout, int) or cout <= 0 or sample[0] != cout:
            return None
        return frames * (int(np.prod(sample)) // cout) * cin * 2

    def failures(self, *, include_resolved: bool = False) -> list[dict]:
        """Failure records (``id``, ``path``, ``error``, ``writer``, ``written``), newest per video.

        Args:
            include_resolved: also list videos that were written successfully afterwards.
        """
        recs: dict[str, dict] = {}
        for w, data in sorted(read_logs(self.fs, "failures", ".jsonl").items()):
            for r in decode_log(data, f"{self.url}/failures/{w}.jsonl", commits=False):
                if r["id"] not in recs or r.get("written", 0) >= recs[r["id"]].get("written", 0):
                    recs[r["id"]] = r
        out = sorted(recs.values(), key=lambda r: r.get("written", 0))
        if not include_resolved:
            out = [r for r in out if r["id"] not in self._rows]
        return out


class StoredVideo:
    """One video of a store (or a window of it, from :meth:`window`).

    Attributes:
        video_id: the key. frames: T (frames in this view). start: first frame of this view in the video.
        sample_shape: ``(C[, H, W])``. metadata: dict given at write time (empty if none).
    """

    def __init__(self, store: FeatureStore, row: int, start: int = 0, stop: int | None = None) -> None:
        self._store = store
        self._row = row
        ix = store.index
        self.video_id: str = ix.ids[row]
        self.total_frames = int(ix.length[row])
        self.start = int(start)
        self.stop = self.total_frames if stop is None else int(stop)
        self.frames = self.stop - self.start

    def __repr__(self) -> str:
        return f"StoredVideo({self.video_id!r}, frames {self.start}..{self.stop} of {self.total_frames})"

    def __len__(self) -> int:
        return self.frames

    @property
    def metadata(self) -> dict:
        m = self._store.index.meta[self._row]
        return json.loads(m) if m else {}

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self._store._part(int(self._store.index.part[self._row])).sample_shape

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.frames, *self.sample_shape)

    @property
    def timestamps(self) -> np.ndarray:
        """float64 ``(frames,)`` seconds."""
        return self._store._timestamps(self._row)[self.start : self.stop]

    @property
    def levels(self) -> np.ndarray | None:
        """uint8 ``(frames,)`` per-frame rate levels (stores written with levels, format version 3), or
        None when the video has none. Frame t of :meth:`features` is dequantized at level ``levels[t]``."""
        lv = self._store._levels(self._row)
        return None if lv is None else lv[self.start : self.stop]

    @property
    def scale(self) -> np.ndarray | None:
        """float32 ``(C,)`` per-channel scales of a video of an int8 raw store (features = ``int8 * scale``,
        channels on axis 1), or None for any other store."""
        return self._store._scale_of(self._row)

    def window(self, start: int, stop: int) -> StoredVideo:
        """A view of frames ``[start, stop)`` (relative to this view); reading it decodes only its chunks."""
        n = self.frames
        start, stop, step = slice(start, stop).indices(n)
        if step != 1:
            raise ValueError("windows are contiguous")
        stop = max(start, stop)
        return StoredVideo(self._store, self._row, self.start + start, self.start + stop)

    def between(self, t0: float, t1: float) -> StoredVideo:
        """A view of the frames whose timestamps lie in ``[t0, t1)`` seconds (a time window).

        Raises:
            StoreError: ``t1 < t0`` or a bound is not finite.
        """
        t0, t1 = float(t0), float(t1)
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 < t0:
            raise StoreError(f"{self._store.url}: video {self.video_id!r}: time window [{t0}, {t1}) is not valid; "
                             "give finite seconds with t0 <= t1")
        ts = self.timestamps
        a, b = np.searchsorted(ts, [t0, t1], side="left")
        return self.window(int(a), int(b))

    def _raw(self) -> np.ndarray:
        st = self._store
        ix = st.index
        p = int(ix.part[self._row])
        s = int(ix.start[self._row])
        part = st._part(p)
        whole = self.start == 0 and self.stop == self.total_frames
        if st._zarr_serves(part, whole, self._row):
            data = self._read_zarr(part, s, whole)
            if data is not None:
                return data
        missing: list[int] = []
        zeros: list[int] = []
        data = part.read(s + self.start, s + self.stop, self.video_id, missing, zeros)
        if self.start == 0 and self.stop == self.total_frames:
            self._check_crc(data, missing, zeros)
        elif (missing or zeros or st.mode == "raw") and self._row not in st._proven:
            # A window's chunks carry no checksum of their own in a raw store (zstd frames without
            # one), and an absent shard or a chunk the shard index lists as empty reads as zeros: the
            # whole video is read once and proven by its CRC before any window of it is served (its
            # chunks stay cached for the window).
            full: list[int] = []
            full_zeros: list[int] = []
            self._check_crc(part.read(s, s + self.total_frames, self.video_id, full, full_zeros), full, full_zeros)
        return data

    def _read_zarr(self, part: _Part, s: int, whole: bool) -> np.ndarray | None:
        """This view's frames read through zarr (:class:`ZarrChunks`), or None: then the caller reads
        them with the hand path, whose errors name the shard file and chunk.

        A whole video is served only when it matches the index CRC (zarr reads an absent shard or an
        empty chunk as zeros and follows a forged shard index); a window only of a video proven so
        before (``FeatureStore._zarr_serves``)."""
        st = self._store
        try:
            data = part.zarr_chunks().read(s + self.start, s + self.stop, self.video_id)
        except StoreError as e:
            log.debug("%s; reading with featcomp's shard reader instead", e)
            return None
        if whole:
            if video_crc(data, st._scale_of(self._row)) != int(st.index.crc[self._row]):
                return None
            st._proven.add(self._row)
        return data

    def _check_crc(self, data: np.ndarray, missing: list[int], zeros: list[int] = ()) -> None:
        st = self._store
        ix = st.index
        p, s = int(ix.part[self._row]), int(ix.start[self._row])
        if video_crc(data, st._scale_of(self._row)) != int(ix.crc[self._row]):
            part = st._part(p)
            lost = f"; shard file(s) {', '.join(part.shard_key(m) for m in missing)} are missing: the store lost data" if missing else ""
            if zeros:
                cps = part.chunks_per_shard
                lost += "; the shard index lists as empty (read as zeros) " + ", ".join(
                    f"chunk {j} of {part.shard_key(j // cps)}" for j in sorted(set(zeros)))
            raise StoreError(
                f"{st.url}: video {self.video_id!r}: decoded data does not match its index CRC "
                f"(part {ix.parts[p]!r}, frames {s}..{s + self.total_frames}){lost}; the store is corrupt "
                "(run `featcomp verify`)"
            )
        st._proven.add(self._row)

    def latents(self) -> np.ndarray:
        """int32 ``(frames, C[, H, W])`` integer latents exactly as written (coded stores)."""
        if self._store.mode != "coded":
            raise StoreError(f"{self._store.url} is a raw (float16) store: it has features(), no latents()")
        return self._raw()

    def features(self) -> np.ndarray:
        """float32 ``(frames, C[, H, W])``: dequantized latents (coded), the stored float16 values, or the
        int8 values times the video's per-channel scales (int8 raw stores).

        A video with per-frame rate levels: frame t is ``(k[t] + offsets) * level_scale[levels[t]]``.
        """
        data = self._raw()
        if self._store.mode == "coded":
            return self._store.dequantize(data, self.levels)
        if self._store.raw_dtype == "int8":
            return dequantize_int8(data, self.scale)
        return data.astype(np.float32)

    def stored(self) -> np.ndarray:
        """The values exactly as stored: int32 latents (coded), float16 or int8 features (raw)."""
        return self._raw()

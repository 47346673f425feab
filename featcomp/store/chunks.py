"""Where the frames of a part array come from: one small interface, two implementations.

A part array (``parts/<name>``, zarr v3, ``sharding_indexed`` with featcomp's chunk codec inside) can
be read two ways, both behind :class:`ChunkSource` (``read(a, b, video) -> ndarray``):

* :class:`ZarrChunks` reads through zarr's own API (``zarr.open_array`` and slicing, so the sharding
  codec, its batched codec pipeline and the registered ``featcomp.ans`` codec do the work). The store
  format is then owned by zarr alone.
* the hand path (``reader._Part``) parses each shard's index itself. It stays because zarr does not
  give three things (docs/decisions.md, "store reads through zarr"):

  1. *who lost what*: zarr reads an absent shard, or a chunk its shard index lists as empty, as the
     fill value, silently; the hand path names the shard file / chunk (and never lets a window over
     one through without the video's CRC);
  2. *forged shard indexes*: zarr trusts any index whose CRC32C matches; the hand path requires the
     chunks to lie back to back in chunk order (a swapped pair of coded chunks would otherwise decode
     into the wrong frames of a window) and bounds every read (a zstd frame of a raw part must
     declare exactly one chunk: zarr allocates what a damaged frame declares);
  3. *speed where it counts* (scripts/bench_store_read.py, docs/benchmarks.md): windows and object
     stores (whole sealed shards fetched once and kept, shard indexes cached by key).

So the reader takes zarr's path only where every byte it returns is proven afterwards by the video's
CRC (a whole video of a coded part on a local disk, see ``StoredVideo._raw``); if zarr fails or the
CRC does not match, the same read goes through the hand path, whose errors name the shard and chunk.

Imports only numpy and zarr (no torch).
"""

from __future__ import annotations

import os
import threading
from typing import Protocol, runtime_checkable

import numpy as np

from featcomp.errors import StoreError

__all__ = ["ChunkSource", "ZarrChunks", "READ_PATHS"]

#: ``open_store(read_path=...)``: ``"auto"`` (the measured choice, see ``FeatureStore``), ``"zarr"``
#: (zarr's API for every whole-video read it may serve, still proven by CRC) or ``"hand"`` (never zarr)
READ_PATHS = ("auto", "zarr", "hand")


@runtime_checkable
class ChunkSource(Protocol):
    """Frames ``[a, b)`` of one part array.

    ``read`` returns ``(b - a, *sample_shape)`` values: int32 latents (coded parts), float16 or
    int8 (raw parts), and raises :class:`StoreError` naming the store, the video and the part on
    any failure. ``b`` beyond the part's length is a StoreError.
    """

    shape: tuple[int, ...]

    def read(self, a: int, b: int, video: str) -> np.ndarray: ...


class ZarrChunks:
    """A part read with ``zarr.open_array`` + slicing (zarr's sharding and batched codec pipeline).

    Args:
        store: the :class:`~featcomp.store.reader.FeatureStore` (its ``fs`` gives the zarr store).
        name: the part's name (array ``parts/<name>``).
        shape: the part's shape, as its metadata records it (checked by the hand path's parser).
        values_dtype: the dtype of the returned values (int32, float16 or int8, little endian).

    Not a proof of integrity on its own: an absent shard or a chunk listed as empty reads as zeros,
    and a forged shard index is followed. Serve what it returns only after checking it against the
    video's CRC (``StoredVideo._raw`` does).
    """

    def __init__(self, store, name: str, shape: tuple[int, ...], values_dtype: np.dtype) -> None:
        self.store = store
        self.name = name
        self.shape = tuple(shape)
        self.values_dtype = np.dtype(values_dtype)
        self._arrays: dict[int, object] = {}  # per process id: zarr arrays of a remote store are not fork-safe
        self._lock = threading.Lock()

    def _array(self):
        pid = os.getpid()
        arr = self._arrays.get(pid)
        if arr is None:
            import zarr

            from featcomp.store import codec as _codec  # noqa: F401 - registers featcomp.ans

            with self._lock:
                arr = self._arrays.get(pid)
                if arr is None:
                    try:
                        arr = zarr.open_array(self.store.fs.zarr_store(read_only=True), path=f"parts/{self.name}",
                                              mode="r")
                    except Exception as e:  # noqa: BLE001 - zarr raises many types for damaged metadata
                        raise StoreError(f"{self.store.url}: part {self.name!r}: zarr cannot open "
                                         f"parts/{self.name} ({type(e).__name__}: {e})") from None
                    self._arrays = {pid: arr}
        return arr

    def read(self, a: int, b: int, video: str) -> np.ndarray:
        if a < 0 or b > self.shape[0]:
            raise StoreError(
                f"{self.store.url}: video {video!r}: frames {a}..{b} lie beyond part {self.name!r} "
                f"({self.shape[0]} frames); the index disagrees with the data"
            )
        arr = self._array()
        try:
            with np.errstate(over="ignore"):  # zarr adds a forged index's uint64 offsets (then fails)
                out = arr[a:b]
        except Exception as e:  # noqa: BLE001 - CodecError, ValueError (crc32c), OSError... from inside zarr
            raise StoreError(f"{self.store.url}: video {video!r}: part {self.name!r} frames {a}..{b}: zarr "
                             f"read failed ({type(e).__name__}: {e}); the store may be corrupt "
                             "(run `featcomp verify`)") from None
        out = np.asarray(out)
        if out.dtype != self.values_dtype:
            out = out.astype(self.values_dtype)
        return out

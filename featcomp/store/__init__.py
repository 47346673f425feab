"""Entropy-coded Zarr feature stores (layer 2): codec, format, writer, reader, verification.

Reading imports numpy, zarr, numcodecs, constriction and fsspec only; torch is imported by
:mod:`featcomp.store.dataset` alone. Importing this package registers the ``featcomp.ans`` codec
with zarr and numcodecs.
"""

from __future__ import annotations

from featcomp.store.codec import CODEC_NAME, FeatcompANSCodec, FeatcompANSNumcodec, register_codecs
from featcomp.store.format import FORMAT_VERSION
from featcomp.store.reader import FeatureStore, StoredVideo, open_store
from featcomp.store.repair import RepairReport, repair_store
from featcomp.store.verify import VerifyReport, compact_store, verify_store
from featcomp.store.writer import StoreWriter, WriteRecord

__all__ = [
    "CODEC_NAME",
    "FORMAT_VERSION",
    "FeatcompANSCodec",
    "FeatcompANSNumcodec",
    "FeatureStore",
    "StoredVideo",
    "StoreWriter",
    "VerifyReport",
    "RepairReport",
    "WriteRecord",
    "compact_store",
    "open_store",
    "register_codecs",
    "repair_store",
    "store_info",
    "verify_store",
]


def store_info(path_or_url, *, storage_options: dict | None = None) -> dict:
    """Counts and sizes of a store (:meth:`FeatureStore.info`): videos, frames, per-frame data and fixed
    bytes, bits per frame, ratios. Imports no torch. ``storage_options``: options of a URL's filesystem
    (:mod:`featcomp.storage`)."""
    return open_store(path_or_url, storage_options=storage_options).info()

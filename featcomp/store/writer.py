"""``StoreWriter``: append videos to a featcomp store, atomically and idempotently per video.

Concurrency and crash scheme (details in ``docs/format.md``):

* every writer session gets its own part array ``parts/<writer_id>`` and its own commit log
  ``index/<writer_id>.log``; no two writers ever write the same data or log file;
* ``write`` first writes the video's frames into the part (zarr shard files are replaced atomically,
  so frames of earlier videos that share a shard are never torn), then appends one JSON commit record
  to the log and fsyncs it. The video exists once the record's newline is durable;
* on ``close`` the writer compacts its own log into ``index/<writer_id>.fcidx`` (atomic), then deletes
  the log. Readers merge every ``.fcidx`` and every log, so a kill -9 at any point leaves a store
  that opens and holds every video whose ``write`` returned.

Per-frame rate levels (``StoreWriter(..., levels=True)``, store format version 3): each video's uint8
levels go to ``levels/<writer_id>`` (beside the frames, like irregular timestamps in
``times/<writer_id>``) before its commit record, which then carries their CRC-32 (``lv``). The header
records the per-level dequantization steps, so the store still decodes with no model file.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcomp.entropy.kinds import DEFAULT_KIND
from featcomp.errors import StoreError
from featcomp.store._fs import AppendLog, StoreFS
from featcomp.store.format import (
    MAX_RATE_LEVELS,
    RAW_DTYPES,
    format_version_for,
    PACKAGE_HINT,
    TS_ARRAY,
    IndexTable,
    check_video_id,
    encode_index_file,
    encode_record,
    encode_timestamps,
    group_doc,
    plain_video_table,
    quantize_int8,
    safe_name,
    video_crc,
)
from featcomp.store.headers import CodedCodec, Dequantization, PartHeader, RawCodec, StoreHeader
from featcomp.store.index import load_index, read_store_header
from featcomp.store.sidecar import is_sidecar_name, pack_header

__all__ = ["StoreWriter", "WriteRecord", "auto_chunk_frames"]

log = logging.getLogger(__name__)

TARGET_CHUNK_ELEMENTS = 32768
INT8_FORMULA = ("features = q * scale  (float32; q: the int8 values of parts/<writer>, scale: the video's float32 "
                "(C,) per-channel scales, broadcast over channels, axis 1)")


def auto_chunk_frames(sample_shape: tuple[int, ...]) -> int:
    """Frames per chunk: about 32k symbols per chunk (a power of two, clipped to [4, 512]).

    Large enough that per-chunk framing (a few tens of bytes) is well under 1% of the coded chunk,
    small enough that a window decodes little more than it needs.
    """
    per = max(1, int(np.prod(sample_shape)))
    n = max(1, TARGET_CHUNK_ELEMENTS // per)
    return int(min(512, max(4, 1 << (n.bit_length() - 1))))


@dataclass(frozen=True)
class WriteRecord:
    """What :meth:`StoreWriter.write` committed.

    Attributes:
        video_id: the video's key. store: the store URL. part: the writer's part name.
        start: first frame in the part array. frames: number of frames (T).
        codec: ``"featcomp.ans"`` or ``"zstd"`` (raw). digest: the coding tables' digest (None raw).
        written: commit time, ns since the epoch. kind: the entropy-model kind (None raw).
        levels: the video was stored with per-frame rate levels.
    """

    video_id: str
    store: str
    part: str
    start: int
    frames: int
    codec: str
    digest: str | None
    written: int
    kind: str | None = None
    levels: bool = False


#: the ``kind`` of a featcomp model card (:meth:`featcomp.model.Model.model_card`)
MODEL_CARD_KIND = "featcomp.model"


def _resolve(codec_or_model: Any, model_card: dict | None, raw: bool):
    """-> (frozen codec of any kind | None, card dict to record, per-level steps of a featcomp model card).

    A featcomp model card (``card["kind"] == "featcomp.model"``, :meth:`featcomp.model.Model.model_card`)
    of a variable-rate model carries ``dequantization.level_scale``, the step of every rate level. The
    writer takes that table out of the card it records: the header's own ``dequantization.level_scale``
    holds it when the store records levels, so the recorded card (and the store's bytes) stay what they
    were before model cards carried it. Any other card is recorded as given.
    """
    card = model_card
    codec = None
    obj = codec_or_model
    model_steps = None
    if obj is not None and hasattr(obj, "compress_symbols") and hasattr(obj, "to_bytes"):
        codec = obj
    elif obj is not None and hasattr(obj, "codec"):
        codec = obj.codec
        if card is None and callable(getattr(obj, "model_card", None)):
            card = obj.model_card()
    elif obj is not None and not raw:
        raise StoreError(
            "StoreWriter needs a frozen codec (EntropyCodec, TemporalCodec, ... with compress_symbols and "
            f"to_bytes) or a model with .codec and .model_card(), got {type(obj).__name__}"
        )
    if isinstance(card, dict) and card.get("kind") == MODEL_CARD_KIND and isinstance(card.get("dequantization"), dict) \
            and "level_scale" in card["dequantization"]:
        deq = dict(card["dequantization"])
        model_steps = deq.pop("level_scale")
        card = {**card, "dequantization": deq}
    if not raw and codec is None:
        raise StoreError("StoreWriter: a coded store needs an EntropyCodec or a model (or pass raw=True)")
    if codec is not None and not raw:
        from featcomp.entropy import codec_kinds

        from featcomp.entropy.kinds import codec_kind

        if codec_kind(codec) not in codec_kinds():
            raise StoreError(
                f"StoreWriter: codec kind {codec_kind(codec)!r} is not registered "
                f"(featcomp.entropy.register_codec_kind); known: {codec_kinds()}"
            )
    card = json.loads(json.dumps(card or {}, default=_json_default))
    return (None if raw else codec), card, model_steps


def _json_default(o: Any):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def _dequantization(codec, card: dict) -> Dequantization:
    """The header's dequantization section of a coded store, from the model card (or the codec's offsets
    and a step of 1 where the card has none)."""
    c = codec.channels
    deq = card.get("dequantization") if isinstance(card.get("dequantization"), dict) else {}
    offsets = deq.get("offsets", np.asarray(codec.offsets, dtype=np.float32).tolist())
    scale = deq.get("scale", card.get("scale", [1.0] * c))
    if np.ndim(scale) == 0:
        scale = [float(scale)] * c
    offsets = np.asarray(offsets, dtype=np.float32).reshape(-1)
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    if offsets.shape != (c,) or scale.shape != (c,):
        raise StoreError(f"dequantization offsets/scale must have {c} entries, got {offsets.shape}/{scale.shape}")
    return Dequantization(
        formula="features = (k + offsets) * scale  (per channel, float32)",
        offsets=tuple(float(x) for x in offsets),
        scale=tuple(float(x) for x in scale),
    )


def level_scales(card: dict, channels: int, where: str, steps: Any = None) -> np.ndarray:
    """float32 ``(L, C)``: the dequantization step of every rate level of a variable-rate model.

    Taken from the model card only: ``steps`` (the ``dequantization.level_scale`` the writer took out of
    ``model.model_card()``) or else the card's own ``dequantization.level_scale`` (``L`` lists of ``C``
    floats). The head is never asked (:meth:`featcomp.model.Model.model_card` records the steps).

    Raises:
        StoreError: the card has no level steps (a fixed-rate model, or a bare codec with a card that lacks
            them), fewer than 2 or more than 256 levels, a wrong shape, or steps that are not finite
            and positive.
    """
    scales = steps
    if scales is None:
        deq = card.get("dequantization") if isinstance(card.get("dequantization"), dict) else {}
        scales = deq.get("level_scale")
    if scales is None:
        raise StoreError(
            f"{where}: per-frame rate levels need a variable-rate model (HeadConfig.rate_lams with >= 2 levels) "
            "or a model card whose dequantization has level_scale (L lists of per-channel steps); "
            "this one has a fixed rate"
        )
    try:
        out = np.asarray(scales, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise StoreError(f"{where}: dequantization level_scale is not a table of numbers ({e})") from None
    if out.ndim != 2 or out.shape[1] != channels or not 2 <= out.shape[0] <= MAX_RATE_LEVELS:
        raise StoreError(
            f"{where}: dequantization level_scale must be (L, {channels}) with 2 <= L <= {MAX_RATE_LEVELS}, "
            f"got shape {out.shape}"
        )
    if not np.all(np.isfinite(out)) or not np.all(out > 0):
        raise StoreError(f"{where}: dequantization level_scale must be finite and positive")
    return out


def build_header(codec, card: dict, *, raw: bool, chunk_frames: int | None, shard_chunks: int, raw_level: int,
                 level_scale: np.ndarray | None = None, raw_dtype: str = "float16") -> dict:
    """The store header recorded in the root ``zarr.json`` attributes under ``"featcomp"``.

    ``level_scale``: float32 ``(L, C)`` per-level dequantization steps of a store that records a rate
    level per frame (format version 3: ``rate_levels`` and ``dequantization.level_scale`` are added).
    ``raw_dtype="int8"``: a raw store of int8 features with per-video scales (format version 4, ``dtype``
    ``"int8"`` and a ``dequantization`` rule); float16 raw headers are unchanged (version 1).
    """
    from featcomp import __version__

    from featcomp.entropy.kinds import codec_kind

    kind = None if raw else codec_kind(codec)
    int8 = raw and raw_dtype == "int8"
    common = dict(
        format_version=format_version_for(kind or DEFAULT_KIND, levels=level_scale is not None,
                                          raw_dtype="int8" if int8 else None),
        package="featcomp", package_hint=PACKAGE_HINT, featcomp_version=__version__,
        chunk_frames=chunk_frames, shard_chunks=int(shard_chunks), model_card=card,
    )
    if raw:
        deq = None
        if int8:  # version 4; float16 raw headers stay byte-identical
            deq = Dequantization(
                formula=INT8_FORMULA, per="video",
                scale_source="commit record 'sc' / index column 'scales'; videos/<writer>/scale[row] for plain zarr",
            )
        header = StoreHeader(mode="raw", dtype="int8" if int8 else "float16",
                             codec=RawCodec(level=int(raw_level)), dequantization=deq, **common)
        return header.to_dict()
    from featcomp.store.codec import CODEC_NAME, encode_tables

    base = _dequantization(codec, card)
    if level_scale is not None:  # version 3; headers of stores without levels are unchanged
        base = Dequantization(
            formula="features = (k + offsets) * scale  (per channel, float32); "
                    "a video with levels: frame t uses level_scale[levels[t]] for scale",
            offsets=base.offsets, scale=base.scale,
            level_scale=tuple(tuple(float(x) for x in row) for row in level_scale),
        )
    header = StoreHeader(
        mode="coded", dtype="int32",
        codec=CodedCodec(
            name=CODEC_NAME, digest=codec.digest, channels=int(codec.channels),
            precision=int(getattr(codec, "precision", getattr(getattr(codec, "family", None), "precision", 0))),
            tables=encode_tables(codec),
            kind=None if kind == DEFAULT_KIND else kind,  # version 1 headers (implicit kind) stay byte-identical
        ),
        channels=int(codec.channels), dequantization=base,
        rate_levels=0 if level_scale is None else int(level_scale.shape[0]), **common,
    )
    return header.to_dict()


class StoreWriter:
    """Write videos' latents (or raw float16 features) into a featcomp store.

    Args:
        path: store directory or fsspec URL; created if missing.
        codec_or_model: any frozen codec of a registered kind (:class:`~featcomp.entropy.EntropyCodec`,
            :class:`~featcomp.entropy.TemporalCodec`, the hyperprior codec), or a model exposing
            ``.codec`` and ``.model_card()`` (``featcomp.model.Model``). None only with ``raw=True``.
            With a temporal codec each time chunk (``chunk_frames`` frames of the part) is one
            temporal stream that starts fresh, so any window decodes from its own chunks only; the
            kind is recorded in the header and every part (store format version 2).
        model_card: JSON-able dict recorded in the store (default: ``model.model_card()``). Its
            optional ``dequantization: {offsets, scale}`` (per channel) is honoured.
        chunk_frames: frames per chunk (default: about 32k symbols per chunk, see
            :func:`auto_chunk_frames`).
        shard_chunks: chunks per shard file (default 32).
        raw: store float16 features with zstd instead of coded latents (the baseline).
        raw_level: zstd level for raw stores.
        raw_dtype: ``"float16"`` (default) or ``"int8"``: raw features quantized per video and per
            channel, symmetric (``q = rint(x / scale)`` in [-127, 127], ``scale = max|x| / 127`` per
            channel), the float32 scales kept with the video (its commit record and
            ``videos/<writer>/scale``); readers dequantize to float32 transparently. An int8 store is
            format version 4 (older featcomp refuses it); float16 stores are written as before.
        writer_id: name of this writer's part (default ``host-pid-random``); must be unused.
        fsync: fsync commit records and atomic writes (default True).
        compact_on_close: fold this writer's log into an ``.fcidx`` file on close (default True).
        levels: record a rate level per frame (per-frame rate control, :mod:`featcomp.ratecontrol`):
            every :meth:`write` then takes ``levels=``. Needs a coded store and a model card with
            ``dequantization.level_scale`` (``Model.model_card()`` of a variable-rate model has it; the
            head itself is never asked); the store is format version 3 and its
            header holds the per-level dequantization steps. A store is created with or without
            levels, and every later writer must agree.
        storage_options: options of the URL's filesystem (``endpoint_url``, ``key``, ``secret``, ...;
            see :mod:`featcomp.storage`); environment credentials apply as usual.

    Raises:
        StorageError: the URL's filesystem package is missing, credentials are refused, or the bucket
            does not exist.
        StoreError: ``path`` holds something that is not a featcomp store, or a store made with
            other tables (digest mismatch) or another mode; ``levels`` with a raw store or a
            fixed-rate model, or disagreeing with the store (created with/without levels, other
            per-level steps).

    Use as a context manager. Not picklable on purpose: create one per process.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        codec_or_model: Any = None,
        *,
        model_card: dict | None = None,
        chunk_frames: int | None = None,
        shard_chunks: int = 32,
        raw: bool = False,
        raw_level: int = 3,
        writer_id: str | None = None,
        fsync: bool = True,
        compact_on_close: bool = True,
        levels: bool = False,
        storage_options: dict | None = None,
        raw_dtype: str = "float16",
    ) -> None:
        self.fs = StoreFS(path, storage_options)
        self.storage_options = self.fs.storage_options
        self.url = self.fs.url
        if self.fs.local and os.path.exists(self.fs.root) and not os.path.isdir(self.fs.root):
            raise StoreError(f"{self.url} is a file, not a store directory; give a new or existing store "
                             "directory (e.g. feats.zarr)")
        self.raw = bool(raw)
        if raw_dtype not in RAW_DTYPES:
            raise StoreError(f"raw_dtype must be one of {', '.join(RAW_DTYPES)}, got {raw_dtype!r}")
        if raw_dtype != "float16" and not self.raw:
            raise StoreError(f"raw_dtype={raw_dtype!r} is for raw stores (raw=True / --raw / --backbone); "
                             "a coded store holds the head's integer latents")
        #: dtype of a raw store's values ("float16" or "int8"); None for coded stores
        self.raw_dtype = raw_dtype if self.raw else None
        self.codec, card, model_steps = _resolve(codec_or_model, model_card, self.raw)
        level_scale = None
        if levels:
            if self.raw:
                raise StoreError(f"{self.url}: per-frame rate levels are for coded stores; a raw store has none")
            level_scale = level_scales(card, int(self.codec.channels), f"StoreWriter {self.url}",
                                       model_steps)
        if chunk_frames is not None and int(chunk_frames) < 1:
            raise StoreError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.chunk_frames = None if chunk_frames is None else int(chunk_frames)
        self.shard_chunks = max(1, int(shard_chunks))
        self.raw_level = int(raw_level)
        self.fsync = bool(fsync)
        self.compact_on_close = bool(compact_on_close)
        self.writer_id = safe_name(writer_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")
        header = build_header(
            self.codec, card, raw=self.raw, chunk_frames=self.chunk_frames,
            shard_chunks=self.shard_chunks, raw_level=self.raw_level, level_scale=level_scale,
            raw_dtype=raw_dtype,
        )
        self.header = self._open_or_create(header)
        #: number of rate levels of a store that records a level per frame (0: none)
        self.rate_levels = self.store_header.rate_levels
        if self.fs.exists(f"parts/{self.writer_id}/zarr.json") or self.fs.exists(f"index/{self.writer_id}.fcidx"):
            raise StoreError(f"{self.url}: writer id {self.writer_id!r} is already used; pick another")

        # a damaged index file or record is left out (its videos count as not written, so a re-run
        # writes them again); readers and `featcomp verify` report it
        self._known: set[str] = set(load_index(self.fs, damaged={}).ids)
        self._records: list[dict] = []
        self._log = AppendLog(self.fs, f"index/{self.writer_id}.log", fsync=self.fsync)
        self._flog = AppendLog(self.fs, f"failures/{self.writer_id}.jsonl", fsync=self.fsync)
        self._arr = None
        self._times = None
        self._levels = None
        self._frames = 0
        self._capacity = 0
        self._sample_shape: tuple[int, ...] | None = None
        self._closed = False
        self._registered = False
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ store creation
    def _open_or_create(self, header: dict) -> dict:
        if not self.fs.exists("zarr.json"):
            ours = {"parts", "times", "levels", "index", "failures", "videos", "writers", "repair"}
            if not self.fs.local:
                self.fs.check_root()
            names = (os.listdir(self.fs.root) if os.path.isdir(self.fs.root) else []) if self.fs.local else self.fs.listdir("")
            foreign = [
                n for n in names
                if n not in ours and not (n.startswith("zarr.json.") and n.endswith(".tmp")) and not is_sidecar_name(n)
                and not (n.endswith(".tmp") and is_sidecar_name(n.rsplit(".", 2)[0]))
            ]  # another writer may be creating the store right now
            if foreign:
                raise StoreError(
                    f"{self.url} exists, is not empty and is not a featcomp store; refusing to write into it"
                )
            packed = pack_header(header)  # format version 5: a large header's bulk goes to a binary sidecar
            if packed is not None:  # content-named: racing creators write the same bytes or another name
                self.fs.write_atomic(packed[0]["sidecar"]["file"], packed[1], fsync=self.fsync)
            self.fs.write_new("zarr.json", group_doc({"featcomp": header if packed is None else packed[0]}))
            for g in ("parts", "times") + (("levels",) if "rate_levels" in header else ()):
                if not self.fs.exists(f"{g}/zarr.json"):
                    self.fs.write_atomic(f"{g}/zarr.json", group_doc(), fsync=self.fsync)
        existing, old = read_store_header(self.fs)
        new = StoreHeader.from_dict(header, self.url)
        if old.mode != new.mode:
            raise StoreError(
                f"{self.url} is a {old.mode} store; this writer would write {new.mode} data"
            )
        if self.raw and old.raw_dtype != new.raw_dtype:
            raise StoreError(
                f"{self.url} is a raw {old.raw_dtype} store; this writer would write "
                f"{new.raw_dtype} values (raw_dtype / --raw-dtype {new.raw_dtype}); write them to another store "
                f"or use --raw-dtype {old.raw_dtype}"
            )
        if not self.raw:
            d_old, d_new = old.digest, new.digest
            if d_old != d_new:
                raise StoreError(
                    f"{self.url}: table digest mismatch: the store was written with tables {str(d_old)[:16]}..., "
                    f"this writer's codec is {d_new[:16]}...; write to another store"
                )
        self._check_levels_agree(old, new)
        self.store_header = old
        return existing

    def _check_levels_agree(self, existing: StoreHeader, header: StoreHeader) -> None:
        """A store records levels for every video or for none, with one set of per-level steps."""
        had, want = bool(existing.rate_levels), bool(header.rate_levels)
        if had and not want:
            raise StoreError(
                f"{self.url} records a rate level per frame (store format version {existing.format_version}); "
                "open the writer with levels=True and give every video its levels "
                "(the Ray job: inference.keep_top1 / --keep-top1)"
            )
        if want and not had:
            raise StoreError(
                f"{self.url} was created without per-frame rate levels (store format version "
                f"{existing.format_version}); write videos with levels to a new store"
            )
        if want:
            old = existing.dequantization.level_scale_array
            new = header.dequantization.level_scale_array
            if old.shape != new.shape or not np.array_equal(old, new):
                raise StoreError(
                    f"{self.url}: per-level dequantization steps differ: the store has {old.shape[0] if old.ndim else 0} "
                    f"levels of other steps than this writer's model ({new.shape[0]} levels); write to another store"
                )

    # ------------------------------------------------------------------ protocol
    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __contains__(self, video_id: object) -> bool:
        """True when ``video_id`` is complete in the store (as of opening, plus this writer's writes)."""
        return video_id in self._known

    def __getstate__(self):
        raise TypeError("StoreWriter holds open files and cannot be pickled; create one per process/actor")

    def refresh(self) -> None:
        """Re-read the index so that ``in`` also sees videos other writers committed since opening."""

        self._known |= set(load_index(self.fs, damaged={}).ids)

    @property
    def frames_written(self) -> int:
        return self._frames

    # ------------------------------------------------------------------ part arrays
    def _ensure_part(self, sample_shape: tuple[int, ...]) -> None:
        if self._arr is not None:
            if sample_shape != self._sample_shape:
                raise StoreError(
                    f"{self.url}: frame shape {sample_shape} differs from this writer's {self._sample_shape}"
                )
            return
        import zarr
        from zarr.codecs import BytesCodec, ZstdCodec

        if not self.raw and sample_shape[0] != self.codec.channels:
            raise StoreError(
                f"{self.url}: latents have {sample_shape[0]} channels, the codec {self.codec.channels}"
            )
        cf = self.chunk_frames or auto_chunk_frames(sample_shape)
        self._cf = cf
        shard = cf * self.shard_chunks
        self._capacity = shard
        self._zstore = self.fs.zarr_store(read_only=False)
        if self.raw:
            serializer, compressors, dtype = BytesCodec(), (ZstdCodec(level=self.raw_level),), self.raw_dtype
        else:
            from featcomp.store.codec import FeatcompANSCodec

            serializer, compressors, dtype = FeatcompANSCodec.from_codec(self.codec), None, "int32"
        self._arr = zarr.create_array(
            self._zstore,
            name=f"parts/{self.writer_id}",
            shape=(self._capacity, *sample_shape),
            chunks=(cf, *sample_shape),
            shards=(shard, *sample_shape),
            dtype=dtype,
            serializer=serializer,
            compressors=compressors,
            filters=None,
            fill_value=0,
            attributes={"featcomp": PartHeader(part=self.writer_id,
                                               format_version=self.store_header.format_version).to_dict()},
            config={"write_empty_chunks": False},
        )
        self._sample_shape = sample_shape

    def _side_array(self, group: str, dtype: str, fill: Any):
        """A new per-frame side array ``<group>/<writer_id>`` (zstd, one value per frame of the part)."""
        import zarr
        from zarr.codecs import ZstdCodec

        return zarr.create_array(
            self._zstore,
            name=f"{group}/{self.writer_id}",
            shape=(self._capacity,),
            chunks=(16384,),
            dtype=dtype,
            compressors=(ZstdCodec(level=9),),
            fill_value=fill,
        )

    def _ensure_times(self) -> None:
        if self._times is None:
            self._times = self._side_array("times", "float64", 0.0)

    def _ensure_levels(self) -> None:
        if self._levels is not None:
            return
        if not self.fs.exists("levels/zarr.json"):  # a store whose creator died before making the group
            self.fs.write_atomic("levels/zarr.json", group_doc(), fsync=self.fsync)
        self._levels = self._side_array("levels", "uint8", 0)

    def _grow(self, needed: int) -> None:
        if needed <= self._capacity:
            return
        shard = self._cf * self.shard_chunks
        cap = max(needed, 2 * self._capacity)
        cap = -(-cap // shard) * shard
        self._arr.resize((cap, *self._sample_shape))
        if self._times is not None:
            self._times.resize((cap,))
        if self._levels is not None:
            self._levels.resize((cap,))
        self._capacity = cap

    # ------------------------------------------------------------------ writing
    def write(
        self,
        video_id: str,
        latents: Any,
        timestamps: Any,
        *,
        metadata: dict | None = None,
        force: bool = False,
        levels: Any = None,
    ) -> WriteRecord | None:
        """Store one video; visible to readers only once complete.

        Args:
            video_id: the video's key (its path or id; no NUL/newline).
            latents: ``(T, C[, H, W])``: integer latents (coded store; must fit int32) or float
                features (raw store; stored as float16, or int8 with per-channel scales). T >= 1.
            timestamps: float64 ``(T,)`` seconds (stored exactly; regular ones cost ~nothing).
            metadata: optional JSON-able dict kept with the video.
            force: write again even if ``video_id`` is already in the store (the new copy wins).
            levels: integers ``(T,)`` in ``[0, L)``, the rate level of each frame (stored as uint8;
                frame t dequantizes with the step of level ``levels[t]``). Required by a writer made
                with ``levels=True``, refused otherwise.

        Returns:
            A :class:`WriteRecord`, or None when the video was already stored (and not ``force``).

        Raises:
            StoreError: wrong shape/dtype, non-finite timestamps, values out of range, closed writer;
                levels missing, of the wrong shape, dtype or range, or given to a store without levels.
        """
        if self._closed:
            raise StoreError(f"{self.url}: StoreWriter is closed")
        video_id = check_video_id(video_id)
        if not force and video_id in self._known:
            return None
        x = np.asarray(latents)
        where = f"{self.url}: video {video_id!r}"
        if x.ndim < 2 or x.shape[0] < 1:
            raise StoreError(f"{where}: expected (T, C[, H, W]) with T >= 1, got shape {x.shape}")
        scale = None
        if self.raw:
            if not np.issubdtype(x.dtype, np.number):
                raise StoreError(f"{where}: raw features must be numeric, got {x.dtype}")
            if self.raw_dtype == "int8":
                if not np.all(np.isfinite(x.astype(np.float32))):
                    raise StoreError(f"{where}: features are not finite in float32 (NaN or inf)")
                data, scale = quantize_int8(x)
            else:
                data = x.astype("<f2")
                if not np.all(np.isfinite(data)):
                    raise StoreError(f"{where}: features are not finite in float16 (NaN or |x| > 65504)")
        else:
            if not np.issubdtype(x.dtype, np.integer):
                raise StoreError(
                    f"{where}: coded stores take integer latents, got {x.dtype}; quantize with codec.quantize()"
                )
            if x.size and (x.min() < -(2**31) or x.max() > 2**31 - 1):
                raise StoreError(f"{where}: latents do not fit int32")
            data = x.astype("<i4")
        data = np.ascontiguousarray(data)
        lv = self._check_levels(levels, data.shape[0], where)
        t = np.asarray(timestamps, dtype=np.float64).reshape(-1) if timestamps is not None else None
        if t is None or t.shape != (data.shape[0],) or not np.all(np.isfinite(t)):
            raise StoreError(f"{where}: timestamps must be finite float64 of shape ({data.shape[0]},)")
        if metadata is not None:
            try:
                metadata = json.loads(json.dumps(metadata, default=_json_default))
            except (TypeError, ValueError) as e:
                raise StoreError(f"{where}: metadata is not JSON-able ({e})") from None

        sample = tuple(int(s) for s in data.shape[1:])
        self._ensure_part(sample)
        n = data.shape[0]
        start = self._frames
        self._grow(start + n)
        ts = encode_timestamps(t)
        try:
            self._arr[start : start + n] = data
            if ts[0] == TS_ARRAY:
                self._ensure_times()
                self._times[start : start + n] = t
            if lv is not None:
                self._ensure_levels()
                self._levels[start : start + n] = lv
        except Exception as e:  # I/O errors from zarr/fsspec
            raise StoreError(f"{where}: writing frames {start}..{start + n} of part {self.writer_id} failed: {e}") from e
        written = time.time_ns()
        crc = video_crc(data, scale)
        lv_crc = None if lv is None else zlib.crc32(lv.tobytes())
        t_crc = zlib.crc32(np.ascontiguousarray(t, dtype="<f8").tobytes()) if ts[0] == TS_ARRAY else None
        rec_bytes = encode_record(video_id, start, n, crc, written, ts, metadata, levels_crc=lv_crc,
                                  times_crc=t_crc, scale=scale)
        self._log.append(rec_bytes)  # the commit point
        if not self._registered:
            try:
                self._register()
            except Exception as e:  # noqa: BLE001 - the video is committed; registering is retried next write
                log.warning("%s: writer %s could not register itself in writers/ (%s); retrying at the next write",
                            self.url, self.writer_id, e)
        self._records.append(json.loads(rec_bytes))
        self._frames = start + n
        self._known.add(video_id)
        return WriteRecord(
            video_id=video_id, store=self.url, part=self.writer_id, start=start, frames=n,
            codec="zstd" if self.raw else "featcomp.ans", digest=None if self.raw else self.codec.digest,
            kind=self.store_header.kind,
            written=written, levels=lv is not None,
        )

    def _register(self) -> None:
        """Register this writer once its first video is committed: ``writers/<writer>.json``.

        The registration outlives the writer's commit log, so ``featcomp verify`` reports a registered
        writer whose log and index file are both gone (a crashed writer leaves no ``videos/`` table, so
        deleting its log was silent before). Written after the first record, so a registered writer
        always committed something; a crash between the two leaves the one video unregistered, as
        every video of every writer was before.
        """
        from featcomp import __version__

        doc = {"writer": self.writer_id, "part": f"parts/{self.writer_id}", "log": f"index/{self.writer_id}.log",
               "registered": time.time_ns(), "host": socket.gethostname(), "pid": os.getpid(),
               "featcomp_version": __version__}
        self.fs.write_atomic(f"writers/{self.writer_id}.json",
                             (json.dumps(doc, sort_keys=True) + "\n").encode(), fsync=self.fsync)
        self._registered = True

    def _check_levels(self, levels: Any, n: int, where: str) -> np.ndarray | None:
        """uint8 ``(n,)`` levels for a store that records them, None otherwise; StoreError when they do
        not fit the store."""
        if levels is None:
            if self.rate_levels:
                raise StoreError(
                    f"{where}: this store records a rate level per frame ({self.rate_levels} levels); "
                    f"give levels= (integers of shape ({n},))"
                )
            return None
        if self.raw:
            raise StoreError(f"{where}: levels given to a raw (float16) store; only coded stores record rate levels")
        if not self.rate_levels:
            raise StoreError(
                f"{where}: levels given, but this store records no per-frame rate levels; create the writer with "
                "StoreWriter(..., levels=True) and a variable-rate model (on a new store)"
            )
        lv = np.asarray(levels)
        if lv.dtype == np.bool_ or not np.issubdtype(lv.dtype, np.integer):
            raise StoreError(f"{where}: levels must be integers, got dtype {lv.dtype}")
        if lv.shape != (n,):
            raise StoreError(f"{where}: levels must have shape ({n},) (one per frame), got {lv.shape}")
        if n and (int(lv.min()) < 0 or int(lv.max()) >= self.rate_levels):
            raise StoreError(
                f"{where}: levels must lie in [0, {self.rate_levels}) (the store's rate levels), "
                f"got {int(lv.min())}..{int(lv.max())}"
            )
        return np.ascontiguousarray(lv, dtype=np.uint8)

    def record_failure(self, video_id: str, path: str | None, error: str) -> None:
        """Record that a video could not be processed (readable with ``open_store(..).failures()``)."""
        rec = {"id": str(video_id), "path": None if path is None else str(path), "error": str(error),
               "writer": self.writer_id, "written": time.time_ns()}
        self._flog.append((json.dumps(rec, sort_keys=True) + "\n").encode())

    def _write_video_table(self) -> None:
        """A mirror of this writer's commit records for plain zarr readers: arrays ``videos/<writer>/{id,
        span, time, written}`` (zstd), named from the part's attributes (docs/format.md)."""
        import zarr
        from zarr.codecs import ZstdCodec

        if not self.fs.exists("videos/zarr.json"):
            self.fs.write_atomic("videos/zarr.json", group_doc(), fsync=self.fsync)
        table = plain_video_table(self._records)
        n = len(self._records)
        names = {"part": f"parts/{self.writer_id}",
                 "times": f"times/{self.writer_id}" if self._times is not None else None,
                 "levels": f"levels/{self.writer_id}" if self._levels is not None else None}
        if "scale" in table:  # int8 raw stores only (float16 tables keep their attributes)
            names["scale"] = f"videos/{self.writer_id}/scale"
        grp = zarr.open_group(self._zstore, path=f"videos/{self.writer_id}", mode="w",
                              attributes={"featcomp": names})
        for name, values in table.items():
            arr = grp.create_array(name, shape=values.shape, dtype=str if name == "id" else values.dtype,
                                   chunks=(min(max(n, 1), 65536), *values.shape[1:]),
                                   compressors=(ZstdCodec(level=9),), fill_value="" if name == "id" else None)
            arr[...] = values
        part = PartHeader.from_dict(self._arr.attrs.get("featcomp"), f"{self.url}/parts/{self.writer_id}/zarr.json")
        self._arr.update_attributes({"featcomp": dataclasses.replace(part, videos=f"videos/{self.writer_id}").to_dict()})

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Trim the part to its frames and compact this writer's log (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._arr is not None and self._frames < self._capacity:
                self._arr.resize((self._frames, *self._sample_shape))
                if self._times is not None:
                    self._times.resize((self._frames,))
                if self._levels is not None:
                    self._levels.resize((self._frames,))
            if self._arr is not None and self._records:
                self._write_video_table()
            if self.compact_on_close and self._records:
                table = IndexTable.from_records([self.writer_id], [(0, r) for r in self._records])
                self.fs.write_atomic(f"index/{self.writer_id}.fcidx", encode_index_file(table), fsync=self.fsync)
                self._log.remove()
        finally:
            self._log.close()
            self._flog.close()

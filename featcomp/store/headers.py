"""Typed, versioned headers of a featcomp store: the store header and the part header (issue 15).

The store header is the JSON object under ``attributes["featcomp"]`` of the root ``zarr.json``; the
part header the one under ``attributes["featcomp"]`` of ``parts/<writer>/zarr.json``. Both were
hand-built dicts read with ``.get()`` chains in the reader, the writer, ``verify`` and ``index``; here
each is one frozen dataclass with an explicit ``format_version``:

- ``from_dict(d, where)`` does every check once (types, bounds, which fields a version has) and raises
  :class:`~featcomp.errors.StoreError` naming ``where`` (the store or file) and what to do;
- ``to_dict()`` gives back exactly the dict a writer of that version records (same keys, same order,
  same values), so the JSON bytes written are unchanged: ``StoreHeader.from_dict(d).to_dict() == d``
  for every store a featcomp wrote (tests/store/test_headers.py checks the golden stores).

The dequantization steps of a coded store live in its own header (:class:`Dequantization`, the
``dequantization`` section the writer records from the model card): a reader turns latents into features
with this header alone, never with the head (``scale_at``) that produced them.

Versions (:func:`featcomp.store.format.format_version_for`): 1 factorized coded stores and raw float16
stores; 2 coded stores of another entropy-model kind (``codec.kind``); 3 coded stores with a rate level
per frame (``rate_levels``, ``dequantization.level_scale``); 4 raw int8 stores (``dtype`` ``"int8"``,
a per-video ``dequantization`` rule); 5 any of these whose header's float arrays and tables are in a
binary sidecar file (:mod:`featcomp.store.sidecar`; ``sidecar``: the dict given here is the whole header,
put back together by :func:`featcomp.store.index.read_store_header`). No torch, no zarr: numpy, the standard library and the kinds registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featcomp.entropy.kinds import DEFAULT_KIND  # the implicit kind of a header without ``codec.kind`` (v1)
from featcomp.errors import StoreError
from featcomp.store.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_RATE_LEVELS,
    RAW_DTYPES,
    RAW_INT8_FORMAT_VERSION,
)

__all__ = ["Dequantization", "CodedCodec", "RawCodec", "StoreHeader", "PartHeader", "DEFAULT_KIND"]


# the keys of the store header, in the order the writer records them (to_dict keeps it)
_STORE_KEYS = ("format", "format_version", "package", "package_hint", "featcomp_version", "mode", "dtype",
               "chunk_frames", "shard_chunks", "model_card", "codec", "channels", "dequantization", "rate_levels")


def _fail(where: str, what: str) -> StoreError:
    return StoreError(f"{where}: corrupt store header in zarr.json ({what}); the store is damaged")


def _floats(v: Any, what: str, where: str) -> tuple[float, ...]:
    try:
        a = np.asarray(v, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:
        raise StoreError(f"{where}: corrupt dequantization or rate levels in the store header "
                         f"({what}: {e!r}); the store is damaged") from None
    # the recorded JSON numbers are kept as written (to_dict must give them back unchanged)
    if isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return tuple(v)
    return tuple(float(x) for x in a.tolist())


@dataclass(frozen=True)
class Dequantization:
    """The ``dequantization`` section of a store header: how stored values become float32 features.

    Coded stores: ``features = (k + offsets) * scale`` per channel; a store with per-frame rate levels
    (version 3) scales frame t by ``level_scale[levels[t]]`` instead. Raw int8 stores (version 4):
    ``features = q * scale`` with the video's own scales (``per == "video"``; ``scale_source`` says where
    they are recorded). Raw float16 stores have no section.
    """

    formula: str
    offsets: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    level_scale: tuple[tuple[float, ...], ...] | None = None
    per: str | None = None  # int8 raw stores: "video"
    scale_source: str | None = None  # int8 raw stores: where each video's scales are recorded
    extra: tuple[tuple[str, Any], ...] = ()  # keys a newer writer of the same version may add

    # -- typed accessors (float32 arrays; what the reader dequantizes with)
    @property
    def offsets_array(self) -> np.ndarray | None:
        """float32 ``(C,)`` or None."""
        return None if self.offsets is None else np.asarray(self.offsets, dtype=np.float32)

    @property
    def scale_array(self) -> np.ndarray | None:
        """float32 ``(C,)``: the step of a fixed-rate store (and of frames read without levels), or None."""
        return None if self.scale is None else np.asarray(self.scale, dtype=np.float32)

    @property
    def level_scale_array(self) -> np.ndarray | None:
        """float32 ``(L, C)``: the step of each rate level (version 3), or None."""
        return None if self.level_scale is None else np.asarray(self.level_scale, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"formula": self.formula}
        if self.per is not None:
            d["per"] = self.per
        if self.scale_source is not None:
            d["scale"] = self.scale_source
        if self.offsets is not None:
            d["offsets"] = list(self.offsets)
        if self.scale is not None:
            d["scale"] = list(self.scale)
        if self.level_scale is not None:
            d["level_scale"] = [list(r) for r in self.level_scale]
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str, *, coded: bool) -> Dequantization:
        if not isinstance(d, dict):
            raise StoreError(f"{where}: corrupt dequantization or rate levels in the store header "
                             f"(dequantization is {type(d).__name__}, not an object); the store is damaged")
        formula = d.get("formula", "")
        if not isinstance(formula, str):
            raise _fail(where, f"dequantization.formula {formula!r}")
        known = {"formula", "offsets", "scale", "level_scale", "per"}
        extra = tuple((k, v) for k, v in d.items() if k not in known)
        if not coded:  # int8 raw stores: a rule, not numbers
            per, src = d.get("per"), d.get("scale")
            if not isinstance(per, (str, type(None))) or not isinstance(src, (str, type(None))):
                raise _fail(where, "dequantization of a raw store")
            return cls(formula=formula, per=per, scale_source=src, extra=extra)
        if "offsets" not in d or "scale" not in d:
            missing = "offsets" if "offsets" not in d else "scale"
            raise StoreError(f"{where}: corrupt dequantization or rate levels in the store header "
                             f"(KeyError({missing!r})); the store is damaged")
        offsets = _floats(d["offsets"], "offsets", where)
        scale = _floats(d["scale"], "scale", where)
        level_scale = None
        if "level_scale" in d:
            ls = d["level_scale"]
            if not isinstance(ls, list) or not all(isinstance(r, list) for r in ls):
                level_scale = ls  # checked against rate_levels by StoreHeader (a readable error there)
            else:
                level_scale = tuple(_floats(r, "level_scale", where) for r in ls)
        return cls(formula=formula, offsets=offsets, scale=scale, level_scale=level_scale,
                   per=d.get("per"), extra=extra)


@dataclass(frozen=True)
class CodedCodec:
    """The ``codec`` section of a coded store: the featcomp.ans tables (base64 zlib) and their digest."""

    name: str | None
    digest: str | None
    channels: int | None
    precision: int | None
    tables: str | None
    kind: str | None = None  # None: the implicit factorized kind (version-1 headers omit it)
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def kind_name(self) -> str:
        return DEFAULT_KIND if self.kind is None else self.kind

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in (("name", self.name), ("digest", self.digest), ("channels", self.channels),
                               ("precision", self.precision), ("tables", self.tables)) if v is not None}
        if self.kind is not None:
            d["kind"] = self.kind
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> CodedCodec:
        if not isinstance(d, dict):
            raise _fail(where, f"codec is {type(d).__name__}, not an object")
        kind = d.get("kind")
        if kind is not None and not isinstance(kind, str):
            raise _fail(where, f"codec kind {kind!r}")
        known = ("name", "digest", "channels", "precision", "tables", "kind")
        return cls(name=d.get("name"), digest=d.get("digest"), channels=d.get("channels"),
                   precision=d.get("precision"), tables=d.get("tables"), kind=kind,
                   extra=tuple((k, v) for k, v in d.items() if k not in known))


@dataclass(frozen=True)
class RawCodec:
    """The ``codec`` section of a raw store: zstd through numcodecs."""

    name: str = "zstd"
    level: int = 3
    via: str = "numcodecs"
    extra: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "via": self.via, **dict(self.extra)}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RawCodec:
        if not isinstance(d, dict):
            raise _fail(where, f"codec is {type(d).__name__}, not an object")
        return cls(name=d.get("name", "zstd"), level=d.get("level", 3), via=d.get("via", "numcodecs"),
                   extra=tuple((k, v) for k, v in d.items() if k not in ("name", "level", "via")))


@dataclass(frozen=True)
class StoreHeader:
    """The store header (root ``zarr.json`` attributes ``"featcomp"``), versions 1 to 4.

    ``mode`` ``"coded"``: ``codec`` is a :class:`CodedCodec`, ``channels`` the latent channels,
    ``dequantization`` the steps (:class:`Dequantization`), ``rate_levels`` > 0 for version 3.
    ``mode`` ``"raw"``: ``codec`` is a :class:`RawCodec`, ``dtype`` ``"float16"`` (version 1) or
    ``"int8"`` (version 4, with a per-video ``dequantization`` rule).

    ``absent`` names the writer's keys that a hand-made or foreign header lacked, so that ``to_dict``
    gives back what was read; a header written by featcomp has none.
    """

    format_version: int
    mode: str
    dtype: str | None
    chunk_frames: int | None
    shard_chunks: int | None
    model_card: dict
    codec: CodedCodec | RawCodec | None
    channels: int | None = None
    dequantization: Dequantization | None = None
    rate_levels: int = 0
    package: str = "featcomp"
    package_hint: str | None = None
    featcomp_version: str | None = None
    absent: frozenset = field(default=frozenset(), compare=False)
    extra: tuple[tuple[str, Any], ...] = ()

    # -- what the reader asks
    @property
    def coded(self) -> bool:
        return self.mode == "coded"

    @property
    def kind(self) -> str | None:
        """The entropy-model kind of a coded store (``"factorized"`` when implicit), None for raw."""
        return self.codec.kind_name if self.coded and isinstance(self.codec, CodedCodec) else (
            DEFAULT_KIND if self.coded else None)

    @property
    def raw_dtype(self) -> str | None:
        """``"float16"`` or ``"int8"`` for raw stores, None for coded ones."""
        return (self.dtype or "float16") if self.mode == "raw" else None

    @property
    def digest(self) -> str | None:
        """The coding tables' digest of a coded store (None for raw stores)."""
        return self.codec.digest if isinstance(self.codec, CodedCodec) else None

    def to_dict(self) -> dict[str, Any]:
        """Exactly the dict the writer records (keys in the writer's order)."""
        vals = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "package": self.package,
            "package_hint": self.package_hint,
            "featcomp_version": self.featcomp_version,
            "mode": self.mode,
            "dtype": self.dtype,
            "chunk_frames": self.chunk_frames,
            "shard_chunks": self.shard_chunks,
            "model_card": self.model_card,
            "codec": None if self.codec is None else self.codec.to_dict(),
            "channels": self.channels,
            "dequantization": None if self.dequantization is None else self.dequantization.to_dict(),
            "rate_levels": self.rate_levels,
        }
        optional = {"codec", "channels", "dequantization"}
        d: dict[str, Any] = {}
        for k in _STORE_KEYS:
            if k in self.absent or (k in optional and vals[k] is None) or (k == "rate_levels" and not vals[k]):
                continue
            d[k] = vals[k]
        d.update(self.extra)
        return d

    @staticmethod
    def check_identity(h: Any, where: str, newest: int = FORMAT_VERSION) -> int:
        """The part of the checks every opener needs (also ``verify`` and ``repair`` on a damaged store):
        ``h`` is a featcomp store header of a version this featcomp reads. Returns the format version.

        Raises:
            StoreError: not a featcomp header, a non-integer version, or a version newer than this featcomp.
        """
        if not isinstance(h, dict) or h.get("format") != FORMAT_NAME:
            raise StoreError(f"{where} is a zarr node but not a featcomp store (no 'featcomp' header in its "
                             "attributes)")
        fv = h.get("format_version", 0)
        if isinstance(fv, bool) or not isinstance(fv, int):
            raise StoreError(f"{where}: corrupt store header (format_version {fv!r}); the store is damaged")
        if fv > newest:
            raise StoreError(f"{where}: store format version {fv} is newer than this featcomp supports "
                             f"({newest}); upgrade featcomp")
        return fv

    @classmethod
    def from_dict(cls, h: Any, where: str, newest: int = FORMAT_VERSION) -> StoreHeader:
        """Parse and check a store header; ``where`` (the store's URL) names it in every error.

        ``newest``: the newest version the caller reads (``featcomp.store.format.FORMAT_VERSION``).

        Raises:
            StoreError: not a featcomp header, a version newer than this featcomp (upgrade featcomp), or a
                field of the wrong type or out of bounds (the store is damaged).
        """
        fv = cls.check_identity(h, where, newest)
        mode = h.get("mode", "coded")
        if mode not in ("coded", "raw"):
            raise _fail(where, f"mode {mode!r}")
        absent = frozenset(k for k in _STORE_KEYS if k not in h and k not in
                           ("codec", "channels", "dequantization", "rate_levels"))
        dtype = h.get("dtype")
        if mode == "raw":
            raw_dtype = h.get("dtype", "float16")
            if raw_dtype not in RAW_DTYPES:
                raise _fail(where, f"raw dtype {raw_dtype!r}")
            if raw_dtype == "int8" and fv < RAW_INT8_FORMAT_VERSION:
                raise _fail(where, f"an int8 raw store of format version {fv} "
                                   f"(int8 stores are version {RAW_INT8_FORMAT_VERSION})")
        codec: CodedCodec | RawCodec | None = None
        if "codec" in h:
            codec = CodedCodec.from_dict(h["codec"], where) if mode == "coded" else RawCodec.from_dict(h["codec"], where)
        deq = None
        if "dequantization" in h:
            deq = Dequantization.from_dict(h["dequantization"], where, coded=mode == "coded")
        rl = h.get("rate_levels", 0)
        if mode == "coded":
            try:
                rl = int(rl or 0)
            except (TypeError, ValueError, OverflowError) as e:
                raise StoreError(f"{where}: corrupt dequantization or rate levels in the store header ({e!r}); "
                                 "the store is damaged") from None
            if not 0 <= rl <= MAX_RATE_LEVELS or (rl and (deq is None or deq.scale is None)):
                raise StoreError(f"{where}: corrupt dequantization or rate levels in the store header "
                                 f"(ValueError('rate_levels {rl}')); the store is damaged")
            if rl:
                ls = deq.level_scale
                if ls is None or not isinstance(ls, tuple):
                    raise StoreError(f"{where}: the header records {rl} rate levels but no readable "
                                     f"dequantization.level_scale ({ls!r}); the store is corrupt")
                shape = np.asarray(ls, dtype=np.float32).shape if all(len(r) == len(ls[0]) for r in ls) \
                    else (len(ls), -1)
                if shape != (rl, len(deq.scale)):
                    raise StoreError(f"{where}: dequantization.level_scale has shape {shape}, expected "
                                     f"({rl}, {len(deq.scale)}); the store is corrupt")
        if mode == "coded" and deq is not None and deq.offsets is not None:
            ch = h.get("channels")
            want = ch if isinstance(ch, int) and not isinstance(ch, bool) else len(deq.scale)
            if len(deq.offsets) != want or len(deq.scale) != want:
                raise StoreError(f"{where}: dequantization has {len(deq.offsets)} offsets and {len(deq.scale)} steps "
                                 f"for {want} channels; the store is corrupt")
        model_card = h.get("model_card", {})
        if not isinstance(model_card, dict):
            raise _fail(where, f"model_card is {type(model_card).__name__}, not an object")
        return cls(
            format_version=fv, mode=mode, dtype=dtype, chunk_frames=h.get("chunk_frames"),
            shard_chunks=h.get("shard_chunks"), model_card=model_card, codec=codec,
            channels=h.get("channels"), dequantization=deq, rate_levels=rl if mode == "coded" else 0,
            package=h.get("package", "featcomp"), package_hint=h.get("package_hint"),
            featcomp_version=h.get("featcomp_version"), absent=absent,
            extra=tuple((k, v) for k, v in h.items()
                        if k not in _STORE_KEYS or (k == "rate_levels" and mode != "coded")),
        )


@dataclass(frozen=True)
class PartHeader:
    """The attributes ``"featcomp"`` of ``parts/<writer>/zarr.json``: the writer, the store format version
    it wrote, and (after a writer closed) the plain-zarr video table it left (``videos/<writer>``)."""

    part: str
    format_version: int
    videos: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"part": self.part, "format_version": self.format_version}
        if self.videos is not None:
            d["videos"] = self.videos
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> PartHeader:
        """Raises StoreError naming ``where`` (the part's zarr.json) when the attributes are not a part header."""
        if not isinstance(d, dict):
            raise StoreError(f"{where}: no featcomp part attributes (got {type(d).__name__}); the part is damaged")
        part, fv, videos = d.get("part"), d.get("format_version"), d.get("videos")
        if not isinstance(part, str) or isinstance(fv, bool) or not isinstance(fv, int) \
                or not 1 <= fv <= FORMAT_VERSION or not isinstance(videos, (str, type(None))):
            raise StoreError(f"{where}: corrupt featcomp part attributes (part {part!r}, format_version {fv!r}, "
                             f"videos {videos!r}); the part is damaged")
        return cls(part=part, format_version=fv, videos=videos,
                   extra=tuple((k, v) for k, v in d.items() if k not in ("part", "format_version", "videos")))


@dataclass(frozen=True)
class IndexColumn:
    """One column of an index file's payload: ``name``, ``dtype`` (a numpy dtype string or
    ``"utf8-nul"``), byte ``offset`` and ``nbytes`` in the decompressed payload."""

    name: str
    dtype: str
    offset: int
    nbytes: int

    def to_list(self) -> list:
        return [self.name, self.dtype, self.offset, self.nbytes]


@dataclass(frozen=True)
class IndexFileHeader:
    """The JSON header of a ``.fcidx`` index file (see :func:`featcomp.store.format.encode_index_file`).

    ``version`` is the file's version byte (1-5; not part of the JSON). Versions 1-4 list the ``parts``
    in the header; version 5 keeps them (and the video ids) in the separately checked names block, so
    ``parts`` is None. ``to_json()`` gives the exact bytes written (compact separators, this key order).
    """

    version: int
    n: int
    columns: tuple[IndexColumn, ...]
    payload_crc32: int
    parts: tuple[str, ...] | None = None

    @property
    def payload_size(self) -> int:
        """Bytes of the decompressed payload the columns span (a bound checked before decompressing)."""
        return max((c.offset + c.nbytes for c in self.columns), default=0)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.n}
        if self.parts is not None:
            d["parts"] = list(self.parts)
        d["columns"] = [c.to_list() for c in self.columns]
        d["payload_crc32"] = self.payload_crc32
        return d

    def to_json(self) -> bytes:
        import json

        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: Any, version: int, *, names_block: bool) -> IndexFileHeader:
        """Check a decoded header. Raises ValueError/TypeError saying what is wrong (the caller, which
        knows the file, turns it into a :class:`~featcomp.errors.DamagedIndexError` naming it)."""
        from featcomp.store.format import _DTYPES, MAX_INDEX_ROWS, _is_int

        if not isinstance(d, dict):
            raise TypeError("the header is not a JSON object")
        crc = d["payload_crc32"]
        n = d["n"]
        if not _is_int(n) or not 0 <= n <= MAX_INDEX_ROWS:
            raise ValueError(f"row count {n!r}")
        columns = d["columns"]
        if not isinstance(columns, list) or not all(
            isinstance(c, list) and len(c) == 4 and isinstance(c[0], str) and c[1] in _DTYPES
            and _is_int(c[2]) and _is_int(c[3]) and c[2] >= 0 and c[3] >= 0 for c in columns
        ):
            raise ValueError("malformed column table")
        parts = None
        if not names_block:
            parts = d["parts"]
            if not isinstance(parts, list) or not all(isinstance(x, str) for x in parts):
                raise ValueError("malformed part names")
            parts = tuple(parts)
        return cls(version=version, n=n, columns=tuple(IndexColumn(*c) for c in columns), payload_crc32=crc,
                   parts=parts)

"""The ``featcomp.ans`` chunk codec: entropy-coded integer latents in zarr v3 and numcodecs.

One byte layout, two front ends:

* :class:`FeatcompANSCodec` is a native zarr v3 ``ArrayBytesCodec`` (registered as
  ``"featcomp.ans"`` with :func:`zarr.registry.register_codec` and the ``zarr.codecs`` entry point).
  It is the ``serializer`` of every coded part array, usually inside ``sharding_indexed``.
* :class:`FeatcompANSNumcodec` is a :class:`numcodecs.abc.Codec` with ``codec_id = "featcomp.ans"``
  (``numcodecs.registry.register_codec`` and the ``numcodecs.codecs`` entry point), for zarr format 2
  arrays and any other numcodecs user.

Both carry the frozen coding tables in their configuration (``tables``: base64 of
``zlib.compress(codec_to_bytes(codec))``, :func:`featcomp.entropy.codec_to_bytes`), the table ``digest`` and, for every entropy-model kind but the
factorized one, ``kind``), so an array decodes with no model file. The codec may be any registered
:class:`~featcomp.entropy.FrozenCodec` kind (``"factorized"``: :class:`~featcomp.entropy.EntropyCodec`,
``"temporal"``: :class:`~featcomp.entropy.TemporalCodec`, ``"hyperprior"``); a configuration without
``kind`` is factorized, so stores written before kinds existed are read unchanged. The decoded codec is
cached per (kind, tables), so opening many arrays that share one set of tables parses them once.

With a temporal codec every chunk is one temporal stream whose first frame uses the fresh context:
a chunk decodes without any other chunk (windows keep random access).

Chunk byte layout (little endian, see ``docs/format.md``)::

    u8      layout version (1)
    LEB128  n_total   frames in the chunk (the chunk's first dimension)
    LEB128  n_coded   leading frames that are entropy-coded; frames n_coded.. are all zero
    [LEB128 frame_size   elements per frame, only when n_coded == 0]
    bytes   EntropyCodec.compress_symbols(k[:n_coded])   (absent when n_coded == 0)

Trailing all-zero frames are not coded: the zero padding that zarr adds to the last (partial) chunk of
an array costs nothing, and decoding pads them back. This is exact for every input and every kind:
the coded part is a *prefix* of the chunk, and a temporal stream's context for frame t depends on
frames < t only, so the prefix codes and decodes exactly as it would inside the whole chunk.

Invariant: tables are never rebuilt at decode time; decoding uses the stored integer tables only.
"""

from __future__ import annotations

import base64
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcomp.entropy.bitstream import decode_varint, encode_varint
from featcomp.entropy.kinds import DEFAULT_KIND, codec_kind
from featcomp.errors import CodecError

_CHUNK_HEADER = "featcomp.ans chunk header"

__all__ = [
    "CODEC_NAME",
    "CHUNK_LAYOUT_VERSION",
    "encode_tables",
    "decode_tables",
    "encode_chunk",
    "decode_chunk",
    "decode_chunks",
    "FeatcompANSCodec",
    "FeatcompANSNumcodec",
    "register_codecs",
]

CODEC_NAME = "featcomp.ans"
CHUNK_LAYOUT_VERSION = 1

_TABLE_CACHE: dict[str, Any] = {}
_TABLE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------- tables
#: the kind that is not written to a part's configuration (stores of version 1 name no kind)
FACTORIZED = DEFAULT_KIND


def encode_tables(codec: Any) -> str:
    """The codec's frozen tables as a compact ASCII string (base64 of zlib of
    :func:`featcomp.entropy.codec_to_bytes`, the one serialization of frozen codecs).

    Args:
        codec: a frozen codec of any registered kind (:class:`EntropyCodec`, ``TemporalCodec``, ...).
    """
    from featcomp.entropy.kinds import codec_to_bytes

    return base64.b64encode(zlib.compress(codec_to_bytes(codec), 9)).decode("ascii")


def _cache_key(tables: str, kind: str) -> str:
    base = tables if len(tables) < 64 else f"{len(tables)}:{zlib.crc32(tables.encode())}:{tables[-48:]}"
    return base if kind == FACTORIZED else f"{kind}|{base}"


def decode_tables(tables: str, digest: str | None = None, kind: str | None = None) -> Any:
    """Rebuild (or fetch from the per-process cache) the frozen codec of ``tables``.

    Args:
        tables: the string made by :func:`encode_tables`.
        digest: the expected table digest (sha256 hex); checked when given.
        kind: the entropy-model kind (``None``/``"factorized"``: :class:`EntropyCodec`); resolved
            through :func:`featcomp.entropy.kinds.codec_from_bytes` (the one reader of codec bytes).

    Raises:
        CodecError: the string does not decode, the kind is unknown (a newer featcomp wrote it), or
            the digest is not ``digest``.
    """
    kind = FACTORIZED if kind is None else str(kind)
    key = _cache_key(tables, kind)
    codec = _TABLE_CACHE.get(key)
    if codec is None:
        from featcomp.entropy.kinds import codec_from_bytes, entropy_kind
        from featcomp.errors import RegistryError

        try:
            entropy_kind(kind)
        except RegistryError:
            raise CodecError(
                f"featcomp.ans: unknown entropy-model kind {kind!r} (this featcomp knows "
                f"{_known_kinds()}); upgrade featcomp"
            ) from None
        try:
            raw = zlib.decompress(base64.b64decode(tables.encode("ascii"), validate=True))
        except Exception as e:  # binascii.Error, zlib.error, ValueError
            raise CodecError(f"featcomp.ans: coding tables do not decode ({type(e).__name__}: {e})") from None
        try:
            codec = codec_from_bytes(raw, kind)
        except CodecError:  # not a codec of this kind: bad magic, digest mismatch, another kind
            raise
        except Exception as e:  # a kind's from_bytes failing other than with CodecError
            raise CodecError(f"featcomp.ans: coding tables do not decode ({type(e).__name__}: {e})") from None
        with _TABLE_LOCK:
            _TABLE_CACHE[key] = codec
    if digest is not None and codec.digest != digest:
        raise CodecError(
            f"featcomp.ans: table digest mismatch: configuration says {digest[:16]}..., "
            f"tables hash to {codec.digest[:16]}... (the store's tables were altered)"
        )
    return codec


def _known_kinds() -> list[str]:
    from featcomp.entropy import codec_kinds

    return codec_kinds()


# ---------------------------------------------------------------------------------- chunk bytes
def encode_chunk(k: np.ndarray, codec: Any) -> bytes:
    """Entropy-code one chunk of integer latents.

    Args:
        k: integer array ``(n, C[, H, W])``; values must fit int32.
        codec: any frozen codec (``C == codec.channels``); a temporal codec codes the chunk as one
            stream that starts fresh.

    Returns:
        The chunk bytes (layout in the module docstring).
    """
    k = np.asarray(k)
    if k.ndim < 2:
        raise CodecError(f"featcomp.ans: chunks must be (n, C, ...), got shape {k.shape}")
    n_total = int(k.shape[0])
    flat = k.reshape(n_total, -1)
    nz = np.flatnonzero(flat.any(axis=1))
    n_coded = int(nz[-1]) + 1 if nz.size else 0
    head = bytearray([CHUNK_LAYOUT_VERSION])
    head += encode_varint(n_total)
    head += encode_varint(n_coded)
    if n_coded == 0:
        head += encode_varint(int(flat.shape[1]))
        return bytes(head)
    body = codec.compress_symbols(np.ascontiguousarray(k[:n_coded], dtype=np.int32))
    return bytes(head) + bytes(body)


def _parse_chunk(data: bytes | memoryview, sample_shape: tuple[int, ...] | None):
    """-> (n_total, n_coded, stream bytes | None, zero-chunk shape | None)."""
    buf = memoryview(data).cast("B") if not isinstance(data, bytes) else data
    if len(buf) < 3:
        raise CodecError(f"featcomp.ans: chunk truncated ({len(buf)} bytes)")
    if buf[0] != CHUNK_LAYOUT_VERSION:
        raise CodecError(
            f"featcomp.ans: unknown chunk layout version {buf[0]} (this featcomp reads {CHUNK_LAYOUT_VERSION}); "
            "upgrade featcomp or the chunk is corrupt"
        )
    n_total, pos = decode_varint(buf, 1, what=_CHUNK_HEADER)
    n_coded, pos = decode_varint(buf, pos, what=_CHUNK_HEADER)
    if n_coded > n_total:
        raise CodecError(f"featcomp.ans: corrupt chunk header ({n_coded} coded frames > {n_total})")
    if n_coded == 0:
        frame_size, pos = decode_varint(buf, pos, what=_CHUNK_HEADER)
        shape = tuple(sample_shape) if sample_shape is not None else (frame_size,)
        if int(np.prod(shape)) != frame_size:
            raise CodecError(f"featcomp.ans: chunk frame size {frame_size} != expected shape {shape}")
        return n_total, 0, None, shape
    return n_total, n_coded, bytes(buf[pos:]), None


def _finish_chunk(k: np.ndarray, n_total: int, n_coded: int, sample_shape: tuple[int, ...] | None) -> np.ndarray:
    if k.shape[0] != n_coded or (sample_shape is not None and tuple(k.shape[1:]) != tuple(sample_shape)):
        raise CodecError(
            f"featcomp.ans: decoded shape {k.shape} disagrees with the chunk header "
            f"({n_coded} frames of {sample_shape})"
        )
    if n_coded == n_total:
        return np.asarray(k, dtype=np.int32)
    out = np.zeros((n_total, *k.shape[1:]), dtype=np.int32)
    out[:n_coded] = k
    return out


def decode_chunk(data: bytes | memoryview, codec: Any, sample_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Decode chunk bytes made by :func:`encode_chunk`.

    Args:
        data: the chunk bytes.
        codec: the frozen codec (any kind) whose tables coded the chunk.
        sample_shape: per-frame shape ``(C[, H, W])`` when known (needed only for all-zero chunks
            when the caller wants a shaped result; otherwise a flat frame shape is used).

    Returns:
        int32 array ``(n_total, *sample_shape)``.

    Raises:
        CodecError: truncated or corrupt bytes, another codec's stream, a shape that disagrees.
    """
    n_total, n_coded, stream, zshape = _parse_chunk(data, sample_shape)
    if stream is None:
        return np.zeros((n_total, *zshape), dtype=np.int32)
    return _finish_chunk(codec.decompress_symbols(stream), n_total, n_coded, sample_shape)


def decode_chunks(datas: list, codec: Any, sample_shape: tuple[int, ...] | None = None) -> list[np.ndarray]:
    """Decode several chunks of one array; same result as ``[decode_chunk(d, codec, ...) for d in datas]``.

    When the codec offers ``decompress_chunks(streams) -> list[np.ndarray]`` (the temporal codec
    decodes independent streams in lockstep, one native call per frame step for all of them), the
    coded chunks go through it in one call; otherwise chunks decode one by one.

    Raises:
        CodecError: as :func:`decode_chunk`; the error names the position of the bad chunk in
            ``datas`` (``chunk #i``).
    """
    parsed = []
    for i, d in enumerate(datas):
        try:
            parsed.append(_parse_chunk(d, sample_shape))
        except CodecError as e:
            raise CodecError(f"chunk #{i}: {e}") from None
    coded = [i for i, p in enumerate(parsed) if p[2] is not None]
    many = getattr(codec, "decompress_chunks", None)
    decoded: dict[int, np.ndarray] = {}
    if many is not None and len(coded) > 1:
        try:
            ks = many([parsed[i][2] for i in coded])
        except CodecError:
            ks = None  # find which chunk is bad, one by one (below)
        if ks is not None:
            decoded = dict(zip(coded, ks))
    out = []
    for i, (n_total, n_coded, stream, zshape) in enumerate(parsed):
        if stream is None:
            out.append(np.zeros((n_total, *zshape), dtype=np.int32))
            continue
        try:
            k = decoded[i] if i in decoded else codec.decompress_symbols(stream)
            out.append(_finish_chunk(k, n_total, n_coded, sample_shape))
        except CodecError as e:
            raise CodecError(f"chunk #{i}: {e}") from None
    return out


# ------------------------------------------------------------------------------------- zarr v3
from zarr.abc.codec import ArrayBytesCodec  # noqa: E402
from zarr.core.buffer import Buffer, NDBuffer  # noqa: E402


@dataclass(frozen=True)
class FeatcompANSCodec(ArrayBytesCodec):
    """zarr v3 serializer that entropy-codes int32 latent chunks with frozen featcomp tables.

    Args:
        tables: :func:`encode_tables` of the codec (carried in the array's metadata).
        digest: the tables' sha256 digest (checked on load).
        kind: the entropy-model kind (default ``"factorized"``, which is not written to the
            configuration, so factorized arrays keep the version-1 metadata byte for byte).

    Use :meth:`from_codec` to build one from any frozen codec. The array's dtype must be int32 and
    its chunks ``(n, C[, H, W])`` with ``C == codec.channels``.
    """

    is_fixed_size = False

    tables: str
    digest: str
    kind: str

    def __init__(self, *, tables: str, digest: str, kind: str = FACTORIZED) -> None:
        object.__setattr__(self, "tables", str(tables))
        object.__setattr__(self, "digest", str(digest))
        object.__setattr__(self, "kind", str(kind))

    @classmethod
    def from_codec(cls, codec: Any) -> FeatcompANSCodec:
        """Build the zarr codec for a frozen codec of any registered kind."""
        tables = encode_tables(codec)
        kind = codec_kind(codec)
        with _TABLE_LOCK:
            _TABLE_CACHE[_cache_key(tables, kind)] = codec
        return cls(tables=tables, digest=codec.digest, kind=kind)

    @property
    def codec(self) -> Any:
        """The frozen codec (cached per kind and tables)."""
        return decode_tables(self.tables, self.digest, self.kind)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatcompANSCodec:
        if data.get("name") != CODEC_NAME:
            raise ValueError(f"expected codec name {CODEC_NAME!r}, got {data.get('name')!r}")
        conf = dict(data.get("configuration") or {})
        unknown = set(conf) - {"tables", "digest", "kind"}
        if unknown or "tables" not in conf or "digest" not in conf:
            raise ValueError(
                f"{CODEC_NAME}: configuration needs 'tables' and 'digest' (and optionally 'kind'), got {sorted(conf)}"
            )
        return cls(tables=conf["tables"], digest=conf["digest"], kind=conf.get("kind", FACTORIZED))

    def to_dict(self) -> dict[str, Any]:
        conf = {"tables": self.tables, "digest": self.digest}
        if self.kind != FACTORIZED:
            conf["kind"] = self.kind
        return {"name": CODEC_NAME, "configuration": conf}

    def validate(self, *, shape, dtype, chunk_grid) -> None:  # type: ignore[override]
        native = dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else np.dtype(dtype)
        if np.dtype(native) != np.dtype("int32"):
            raise ValueError(f"{CODEC_NAME} codes int32 arrays, not {native}")
        if len(shape) < 2:
            raise ValueError(f"{CODEC_NAME} needs arrays (T, C[, H, W]), got {len(shape)} dimensions")
        channels = self.codec.channels
        if shape[1] != channels:
            raise ValueError(f"{CODEC_NAME}: array has {shape[1]} channels, the tables {channels}")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        k = decode_chunk(chunk_bytes.as_numpy_array().tobytes(), self.codec, tuple(chunk_spec.shape[1:]))
        if k.shape != tuple(chunk_spec.shape):
            raise CodecError(f"{CODEC_NAME}: chunk decodes to {k.shape}, expected {tuple(chunk_spec.shape)}")
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(k)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec) -> Buffer | None:
        data = encode_chunk(chunk_array.as_numpy_array(), self.codec)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec) -> int:
        raise NotImplementedError  # variable size


# ------------------------------------------------------------------------------------ numcodecs
from numcodecs.abc import Codec as _NumcodecsCodec  # noqa: E402


class FeatcompANSNumcodec(_NumcodecsCodec):
    """numcodecs codec ``"featcomp.ans"`` (same chunk bytes as :class:`FeatcompANSCodec`).

    Args:
        tables: :func:`encode_tables` of the codec.
        digest: the tables' sha256 digest.
        kind: the entropy-model kind (default ``"factorized"``; written to the config otherwise).

    ``encode(k)`` takes an integer array ``(n, C[, H, W])``; ``decode`` returns int32
    ``(n, C[, H, W])`` (or writes into ``out``, e.g. a zarr v2 chunk buffer).
    """

    codec_id = CODEC_NAME

    def __init__(self, tables: str, digest: str, kind: str = FACTORIZED) -> None:
        self.tables = str(tables)
        self.digest = str(digest)
        self.kind = str(kind)

    @classmethod
    def from_codec(cls, codec: Any) -> FeatcompANSNumcodec:
        return cls(tables=encode_tables(codec), digest=codec.digest, kind=codec_kind(codec))

    @property
    def codec(self) -> Any:
        return decode_tables(self.tables, self.digest, self.kind)

    def encode(self, buf):
        arr = np.asarray(buf)
        if arr.ndim == 1:  # zarr v2 may hand a flat view of a 2-D chunk
            arr = arr.reshape(-1, self.codec.channels)
        return encode_chunk(arr, self.codec)

    def decode(self, buf, out=None):
        raw = bytes(memoryview(buf).cast("B")) if not isinstance(buf, bytes) else buf
        k = decode_chunk(raw, self.codec)
        if out is not None:
            o = np.asarray(out)
            o.reshape(-1)[...] = k.reshape(-1)
            return out
        return k

    def get_config(self) -> dict[str, Any]:
        conf = {"id": self.codec_id, "tables": self.tables, "digest": self.digest}
        if self.kind != FACTORIZED:
            conf["kind"] = self.kind
        return conf


# ------------------------------------------------------------------------------------ registry
_registered = False


def register_codecs() -> None:
    """Register both front ends (idempotent; done on import of ``featcomp.store``)."""
    global _registered
    if _registered:
        return
    import numcodecs.registry
    import zarr.registry

    zarr.registry.register_codec(CODEC_NAME, FeatcompANSCodec)
    numcodecs.registry.register_codec(FeatcompANSNumcodec)
    _registered = True


register_codecs()

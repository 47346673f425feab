"""Typed, versioned headers of the model layer: the model file's metadata (issue 15, "one format layer").

The model file (:mod:`featcomp.model.file`) keeps one JSON document under the safetensors metadata key
``"featcomp"``. It was a hand-built dict read with ``meta.get(...)`` in the loader; here it is one frozen
dataclass, :class:`ModelFileHeader`, with an explicit ``format_version``:

- ``from_dict(d, where)`` does every check once (the version, each field's presence and type, and the
  fields that must agree with each other) and raises a :class:`~featcomp.errors.ModelFileError` subclass
  naming ``where`` (the file) and the field: :class:`~featcomp.errors.ModelFileVersionError` for a version
  this featcomp does not read, :class:`~featcomp.errors.CorruptModelFileError` for damaged metadata;
- ``to_dict()`` gives back exactly the dict :func:`~featcomp.model.save_model` records for that version
  (the file stores it with sorted keys, so the bytes are the same): ``save_model`` writes through it.

Versions: 1, a factorized fixed-rate head, whose codec is the ``codec`` uint8 tensor (no ``codec``,
``entropy_model`` or ``rate`` in the JSON; the head config without its version-2 fields); 2, any other
head: ``codec`` (the codec's dict, with ``kind``), ``entropy_model`` and ``rate`` (``{"lams", "levels"}``
or null). No tensors here: the tensors' names, shapes and bytes stay in :mod:`featcomp.model.file`.
This module imports no torch (the head config is imported when a model file's header is parsed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featcomp.entropy.kinds import DEFAULT_KIND, entropy_kinds
from featcomp.errors import CodecError, ConfigError, CorruptModelFileError, ModelFileError, ModelFileVersionError

if TYPE_CHECKING:  # importing featcomp.head imports torch; the clip header below must stay numpy-only
    from featcomp.head.config import HeadConfig

__all__ = ["ModelFileHeader", "ModelRate", "MODEL_FORMAT_VERSION", "READ_FORMAT_VERSIONS", "V2_HEAD_FIELDS",
           "ClipHeader", "ClipSeries", "CLIP_FORMAT_VERSION", "CLIP_READ_VERSIONS", "MAX_CLIP_FRAMES"]

MODEL_FORMAT_VERSION = 2
READ_FORMAT_VERSIONS = (1, 2)
#: HeadConfig fields a version-1 file never holds (they are at their defaults in a version-1 head)
V2_HEAD_FIELDS = ("entropy_model", "prior", "rate_lams")
# the keys save_model writes, per version
_V1_KEYS = ("format_version", "featcomp_version", "head", "backbone", "sampling", "codec_digest", "training",
            "metadata", "digest")
_V2_KEYS = _V1_KEYS + ("codec", "entropy_model", "rate")


def _corrupt(where: str, what: str) -> CorruptModelFileError:
    return CorruptModelFileError(f"model file {where}: corrupt metadata ({what}); the file is damaged or was "
                                 "not written by featcomp.save_model: re-save the model")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ModelRate:
    """The ``rate`` section of a version-2 file of a variable-rate head: the levels' lambdas (their number
    is ``levels``; the head's ``log_gains`` tensor holds the per-level gains)."""

    lams: tuple[float, ...]
    levels: int

    def to_dict(self) -> dict[str, Any]:
        return {"lams": list(self.lams), "levels": self.levels}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ModelRate:
        if not isinstance(d, dict) or not isinstance(d.get("lams"), list) or not _is_int(d.get("levels")):
            raise _corrupt(where, f"rate {d!r} is not {{'lams': [...], 'levels': L}}")
        lams = d["lams"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                   for v in lams) or len(lams) != d["levels"] or d["levels"] < 2:
            raise _corrupt(where, f"rate lams {lams!r} for {d['levels']} levels")
        return cls(lams=tuple(lams), levels=d["levels"])


@dataclass(frozen=True)
class ModelFileHeader:
    """The JSON metadata of a model file, versions 1 and 2 (see the module docstring).

    Attributes:
        format_version: 1 or 2.
        head: the head's config (:class:`~featcomp.head.HeadConfig`).
        codec_digest: sha256 hex of the frozen codec (checked against the codec that is read).
        backbone: the backbone spec's JSON form (``BackboneSpec.to_dict()``), or None.
        sampling: the default sampling's JSON form (``SamplingConfig.to_dict()``), or None.
        training: training options and metrics recorded at save time.
        metadata: free-form JSON.
        featcomp_version: the featcomp release that wrote the file.
        digest: sha256 hex of the canonical JSON (without ``digest``) and every tensor; None while a file
            is being written (``save_model`` computes it from the rest).
        codec: version 2: the codec's dict (``codec.to_dict()`` with ``kind``); None in version 1 (the
            codec is the ``codec`` tensor).
        entropy_model: version 2: the codec's kind.
        rate: version 2: the levels of a variable-rate head, or None.
        extra: keys this featcomp does not know (kept, so the dict round-trips and the digest checks).
    """

    format_version: int
    head: HeadConfig
    codec_digest: str
    backbone: dict | None = None
    sampling: dict | None = None
    training: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    featcomp_version: str | None = None
    digest: str | None = None
    codec: dict | None = None
    entropy_model: str | None = None
    rate: ModelRate | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The metadata ``save_model`` records (``digest`` only when set)."""
        head = self.head.to_dict()
        if self.format_version == 1:
            for k in V2_HEAD_FIELDS:  # at their defaults in a version-1 head; a version-1 reader rejects them
                head.pop(k, None)
        d: dict[str, Any] = {
            "format_version": self.format_version,
            "featcomp_version": self.featcomp_version,
            "head": head,
            "backbone": self.backbone,
            "sampling": self.sampling,
            "codec_digest": self.codec_digest,
            "training": self.training,
            "metadata": self.metadata,
        }
        if self.format_version >= 2:
            d["codec"] = self.codec
            d["entropy_model"] = self.entropy_model
            d["rate"] = None if self.rate is None else self.rate.to_dict()
        d.update(self.extra)
        if self.digest is not None:
            d["digest"] = self.digest
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ModelFileHeader:
        """Parse and check a model file's metadata; ``where`` (the file) names it in every error.

        Raises:
            ModelFileVersionError: a format version this featcomp does not read.
            CorruptModelFileError: not an object, or a field missing, of the wrong type, or inconsistent
                with another (the message names the field).
        """
        if not isinstance(d, dict):
            raise _corrupt(where, f"the metadata is {type(d).__name__}, not a JSON object")
        version = d.get("format_version")
        if not _is_int(version) or version not in READ_FORMAT_VERSIONS:
            raise ModelFileVersionError(
                f"model file {where}: format version {version!r}, this featcomp reads versions "
                f"{READ_FORMAT_VERSIONS}; use the featcomp release that wrote it, or re-save the model")
        known = _V1_KEYS if version == 1 else _V2_KEYS
        for key in ("head", "codec_digest", "digest") + (("codec",) if version >= 2 else ()):
            if key not in d:
                raise _corrupt(where, f"no {key!r} field")
        for key in ("codec_digest", "digest"):
            if not isinstance(d[key], str):
                raise _corrupt(where, f"{key} {d[key]!r} is not a string")
        for key, optional in (("head", False), ("backbone", True), ("sampling", True), ("training", True),
                              ("metadata", True)):
            v = d.get(key)
            if not (isinstance(v, dict) or (optional and v is None)):
                raise _corrupt(where, f"{key} is {type(v).__name__}, not a JSON object")
        fv = d.get("featcomp_version")
        if fv is not None and not isinstance(fv, str):
            raise _corrupt(where, f"featcomp_version {fv!r} is not a string")
        head_d = d["head"]
        if version >= 2 and isinstance(d["codec"], dict):
            kind = d["codec"].get("kind", d.get("entropy_model"))
            if isinstance(kind, str) and kind not in entropy_kinds():
                raise ModelFileError(f"model file {where}: the {kind!r} codec cannot be read (an entropy-model "
                                     f"kind this featcomp does not know: {entropy_kinds()}); a newer featcomp, or "
                                     "the plugin that registers the kind, may be needed")
        if version == 1 and any(k in head_d for k in V2_HEAD_FIELDS):
            raise _corrupt(where, f"a version-1 head with version-2 fields {[k for k in V2_HEAD_FIELDS if k in head_d]}")
        from featcomp.head.config import HeadConfig

        try:
            head = HeadConfig.from_dict(head_d)
        except (ConfigError, TypeError, ValueError, OverflowError) as e:  # a config's own checks may raise plain errors
            raise _corrupt(where, f"head: HeadConfig {type(e).__name__}: {e}") from None
        codec = entropy_model = rate = None
        if version >= 2:
            codec = d["codec"]
            if not isinstance(codec, dict):
                raise _corrupt(where, f"codec is {type(codec).__name__}, not a JSON object")
            entropy_model = d.get("entropy_model")
            if not isinstance(entropy_model, str) or codec.get("kind", entropy_model) != entropy_model:
                raise _corrupt(where, f"entropy_model {entropy_model!r} with a codec of kind {codec.get('kind')!r}")
            if d.get("rate") is not None:
                rate = ModelRate.from_dict(d["rate"], where)
            if (rate.levels if rate else 0) != head.rate_levels:
                raise _corrupt(where, f"rate {d.get('rate')!r} for a head of {head.rate_levels} rate levels")
        elif head.rate_levels:
            raise _corrupt(where, "a version-1 file of a variable-rate head")
        return cls(
            format_version=version, head=head, codec_digest=d["codec_digest"], backbone=d.get("backbone"),
            sampling=d.get("sampling"), training=d.get("training") or {}, metadata=d.get("metadata") or {},
            featcomp_version=fv, digest=d["digest"], codec=codec, entropy_model=entropy_model, rate=rate,
            extra=tuple((k, v) for k, v in d.items() if k not in known),
        )


# ================================================================================================
# the compressed clip (``.fcc``) header, versions 1-4

CLIP_MAGIC = b"FCCL"
CLIP_VERSION_JSON = 2  # the JSON layout with kind, chunks and rate (version 1 omits them)
CLIP_VERSION_LEVELS = 3  # version 2 + per-frame rate levels (packed bit fields after the side arrays)
CLIP_VERSION_COMPACT = 4  # the same fields as a compact binary header with a CRC-32
CLIP_VERSION_SHORT = 5  # version 4 with 4-byte digest prefixes and a rational timestamp step (the default)
CLIP_COMPACT_VERSIONS = (CLIP_VERSION_COMPACT, CLIP_VERSION_SHORT)
CLIP_READ_VERSIONS = (1, 2, 3, 4, 5)
CLIP_FORMAT_VERSION = CLIP_VERSION_SHORT  # what CompressedClip.to_bytes writes unless a clip says otherwise
#: version 4: kinds with a one-byte code (a kind outside this tuple is stored by name); never reorder
CLIP_KIND_CODES = ("factorized", "temporal", "hyperprior")
CLIP_DIGEST_PREFIX = 8  # bytes of the codec / model sha256 kept by version 4 (16 hex characters)
CLIP_DIGEST_PREFIX_SHORT = 4  # ... by version 5 (8 hex characters: a wrong model is caught but by 2**-32 chance)
_MAX_STEP_DEN = 1 << 20  # version 5: the largest denominator of a rational timestamp step
#: frames in one clip (the side arrays are allocated from the header's count; docs/reliability.md)
MAX_CLIP_FRAMES = 1 << 22
#: version 4: a wider residual is stored as the plain 64-bit array instead
MAX_RESIDUAL_BITS = 48
_CLIP_FLAG_BITS = 0x7F  # version 4: flags 1..64; 0x80 is unknown (damaged, or a newer featcomp)
_FLAG_RATIONAL_STEP = 0x80  # version 5: the timestamp step is zigzag varint num / varint den, not a float64


@dataclass(frozen=True)
class ClipSeries:
    """How a clip stores one side array (timestamps or frame indices) that lies on a line.

    ``start + step * arange(n)``: exactly, in versions 1-3 (``bits`` None: no residuals); in version 4
    corrected by per-frame residuals of ``bits`` bits each (0: exactly on the line). A side array that is
    not on a line has no ``ClipSeries`` (the header field is None) and is stored as ``n`` plain 8-byte values.
    """

    start: float | int
    step: float | int
    bits: int | None = None


@dataclass(frozen=True)
class ClipHeader:
    """The header of a compressed clip (``.fcc``), versions 1 to 5: everything before the side arrays.

    One class for every version this featcomp reads: versions 1-3 hold the fields as a JSON object (1:
    no ``kind``/``chunks``/``rate``; 3: ``levels`` = the level field width), versions 4 and 5 as the compact
    binary layout of :meth:`featcomp.model.CompressedClip._to_bytes_compact` (digests cut to 16 hex
    characters in version 4, 8 in version 5, which also stores a timestamp step that is a small rational
    as two varints; the CRC-32 that closes it also covers the side arrays, so the clip checks it).
    :meth:`to_bytes` writes the header of its ``version``; :meth:`from_bytes` parses and checks it
    (bounded: nothing is allocated from a declared size) and returns the position of the side arrays.

    Attributes:
        version: 1 to 5.
        shape: the latents' shape (frames first).
        codec_digest: sha256 hex of the codec (16 hex characters in version 4, 8 in version 5).
        model_digest: the model file's digest (16 / 8 hex characters in versions 4 / 5), or "".
        kind: the codec kind.
        chunks: byte lengths of the independent streams, or None for one stream.
        rate: the rate level of a variable-rate model, or None.
        level_bits: the width of the per-frame level fields when the clip records levels (version 3
            always; version 4 with flag 32), else None.
        ts, fi: the timestamps' and frame indices' :class:`ClipSeries`, or None when stored plainly.
    """

    version: int
    shape: tuple[int, ...]
    codec_digest: str
    model_digest: str = ""
    kind: str = DEFAULT_KIND
    chunks: tuple[int, ...] | None = None
    rate: float | None = None
    level_bits: int | None = None
    ts: ClipSeries | None = None
    fi: ClipSeries | None = None

    @property
    def n(self) -> int:
        """Frames in the clip (``shape[0]``)."""
        return int(self.shape[0])

    # ------------------------------------------------------------------ writing
    def to_bytes(self) -> bytes:
        """Magic, version byte and the header of that version (the side arrays follow it)."""
        if self.version in CLIP_COMPACT_VERSIONS:
            return self._compact_bytes()
        import json
        import struct

        hdr: dict[str, Any] = {"shape": list(self.shape), "codec_digest": self.codec_digest,
                               "model_digest": self.model_digest, "n": self.n,
                               "ts": None if self.ts is None else [self.ts.start, self.ts.step],
                               "fi": None if self.fi is None else [self.fi.start, self.fi.step]}
        if self.version == CLIP_VERSION_LEVELS:
            hdr["levels"] = int(self.level_bits or 8)
        if self.version >= 2:
            hdr.update(kind=self.kind, chunks=None if self.chunks is None else [int(c) for c in self.chunks],
                       rate=None if self.rate is None else float(self.rate))
        h = json.dumps(hdr, separators=(",", ":")).encode()
        return CLIP_MAGIC + struct.pack("<BI", self.version, len(h)) + h

    def _compact_bytes(self) -> bytes:
        import struct

        from featcomp.entropy.bitstream import encode_varint

        flags = 0
        body = bytearray()
        kind = str(self.kind)
        if kind in CLIP_KIND_CODES:
            body.append(CLIP_KIND_CODES.index(kind))
        else:
            name = kind.encode("ascii")
            if not 0 < len(name) < 256:
                raise CodecError(f"compressed clip: kind name {kind!r} must be 1..255 ASCII characters")
            body += bytes([255, len(name)]) + name
        plen = _prefix_len(self.version)
        body += _digest_prefix(self.codec_digest, "codec_digest", plen)
        if self.model_digest:
            flags |= 8
            body += _digest_prefix(self.model_digest, "model_digest", plen)
        body.append(len(self.shape))
        for v in self.shape:
            body += encode_varint(int(v))
        if self.ts is not None:
            flags |= 1
            start = float(self.ts.start)
            if start != 0.0 or math.copysign(1.0, start) < 0:
                flags |= 2
                body += struct.pack("<d", start)
            ratio = _rational(float(self.ts.step)) if self.version == CLIP_VERSION_SHORT else None
            if ratio is not None and _rational_bytes(*ratio) < 8:
                flags |= _FLAG_RATIONAL_STEP
                body += encode_varint(_zigzag(ratio[0])) + encode_varint(ratio[1])
            else:
                body += struct.pack("<d", float(self.ts.step))
            body.append(int(self.ts.bits or 0))
        if self.fi is not None:
            flags |= 4
            body += (encode_varint(_zigzag(int(self.fi.start))) + encode_varint(_zigzag(int(self.fi.step)))
                     + bytes([int(self.fi.bits or 0)]))
        if self.rate is not None:
            flags |= 16
            body += struct.pack("<d", float(self.rate))
        if self.level_bits is not None:
            flags |= 32
            body.append(int(self.level_bits))
        if self.chunks is not None:
            flags |= 64
            body += encode_varint(len(self.chunks))
            for c in self.chunks:
                body += encode_varint(int(c))
        return CLIP_MAGIC + bytes([self.version, flags]) + bytes(body)

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_bytes(cls, b: bytes) -> tuple[ClipHeader, int]:
        """Parse the header at the start of a clip's bytes ``b``: (header, position of the side arrays).

        Raises:
            CodecError: not a clip (bad magic), a version newer than this featcomp reads (upgrade), or a
                truncated or corrupt header (the clip was damaged).
        """
        if len(b) < 9 or b[:4] != CLIP_MAGIC:
            raise CodecError("not a featcomp compressed clip (bad magic)")
        version = b[4]
        if version not in CLIP_READ_VERSIONS:
            raise CodecError(f"compressed clip format version {version}, this featcomp reads {CLIP_READ_VERSIONS}; "
                             "upgrade featcomp to read it")
        if version in CLIP_COMPACT_VERSIONS:
            return cls._from_compact(b)
        import json
        import struct

        hl = struct.unpack_from("<I", b, 5)[0]
        pos = 9
        if len(b) < pos + hl:
            raise CodecError(f"compressed clip: truncated header ({len(b) - pos} bytes after the prefix, the header "
                             f"declares {hl})")
        try:
            hdr = json.loads(b[pos:pos + hl])
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise CodecError("compressed clip: corrupt or truncated header") from None
        try:
            return cls._from_json(hdr, version), pos + hl
        except CodecError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise CodecError(f"compressed clip: corrupt header ({type(e).__name__}: {e}); the clip was damaged "
                             "in storage or transfer") from None

    @classmethod
    def _from_json(cls, hdr: Any, version: int) -> ClipHeader:
        """The checked fields of a version 1-3 JSON header (raises KeyError/TypeError/ValueError, which
        :meth:`from_bytes` turns into :class:`CodecError`)."""
        if not isinstance(hdr, dict):
            raise TypeError(f"the header is a JSON {type(hdr).__name__}, not an object")

        def integer(v: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                raise ValueError(f"{what} is {v!r}")
            return v

        def number(v: Any, what: str) -> float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{what} is {v!r}")
            return float(v)

        def line(v: Any, what: str, check: Any) -> ClipSeries | None:
            if v is None:
                return None
            if not isinstance(v, list) or len(v) != 2:
                raise ValueError(f"{what} is {v!r}")
            return ClipSeries(check(v[0], what), check(v[1], what))

        shape = hdr["shape"]
        if not isinstance(shape, list) or not 2 <= len(shape) <= 15:
            raise ValueError(f"shape is {shape!r}")
        shape = tuple(integer(v, "a shape entry", 0, 1 << 62) for v in shape)
        n = integer(hdr["n"], "the frame count", 0, MAX_CLIP_FRAMES)
        if n != shape[0]:
            raise ValueError(f"{n} timestamps for {shape[0]} frames")
        digest = hdr["codec_digest"]
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"codec_digest is {digest!r}")
        md = hdr.get("model_digest", "")
        if not isinstance(md, str):
            raise ValueError(f"model_digest is {md!r}")
        ts = line(hdr["ts"], "ts", number)
        fi = line(hdr["fi"], "fi", lambda v, w: integer(v, w, -(1 << 62), 1 << 62))
        kind = hdr.get("kind", DEFAULT_KIND)
        if not isinstance(kind, str):
            raise ValueError(f"kind is {kind!r}")
        chunks = hdr.get("chunks")
        if chunks is not None and not isinstance(chunks, list):
            raise ValueError(f"chunks is {chunks!r}")
        chunks = None if chunks is None else tuple(integer(c, "a chunk length") for c in chunks)
        rate = hdr.get("rate")
        rate = None if rate is None else number(rate, "rate")
        level_bits = integer(hdr["levels"], "the level field width", 1, 8) if version >= CLIP_VERSION_LEVELS else None
        return cls(version=version, shape=shape, codec_digest=digest, model_digest=md, kind=kind, chunks=chunks,
                   rate=rate, level_bits=level_bits, ts=ts, fi=fi)

    @classmethod
    def _from_compact(cls, b: bytes) -> tuple[ClipHeader, int]:
        """Parse a version 4 or 5 header; every count is checked against the bytes present and
        :data:`MAX_CLIP_FRAMES` before anything is allocated."""
        import struct

        from featcomp.entropy.bitstream import decode_varint

        what = "compressed clip header"

        def need(pos: int, k: int, part: str) -> None:
            if len(b) < pos + k:
                raise CodecError(f"compressed clip: truncated {part} ({len(b)} bytes in all)")

        need(0, 7, "header")
        version, flags = b[4], b[5]
        known = _CLIP_FLAG_BITS | (_FLAG_RATIONAL_STEP if version == CLIP_VERSION_SHORT else 0)
        if flags & ~known:
            raise CodecError(f"compressed clip: unknown header flags 0x{flags:02x} (damaged, or a newer featcomp)")
        pos = 6
        code = b[pos]
        pos += 1
        if code < len(CLIP_KIND_CODES):
            kind = CLIP_KIND_CODES[code]
        elif code == 255:
            need(pos, 1, "header")
            ln = b[pos]
            need(pos + 1, ln, "header")
            try:
                kind = b[pos + 1:pos + 1 + ln].decode("ascii")
            except UnicodeDecodeError:
                raise CodecError("compressed clip: corrupt kind name in the header") from None
            pos += 1 + ln
        else:
            raise CodecError(f"compressed clip: unknown kind code {code} in the header (damaged clip)")
        plen = _prefix_len(version)
        need(pos, plen, "header")
        codec_digest = b[pos:pos + plen].hex()
        pos += plen
        model_digest = ""
        if flags & 8:
            need(pos, plen, "header")
            model_digest = b[pos:pos + plen].hex()
            pos += plen
        need(pos, 1, "header")
        ndim = b[pos]
        pos += 1
        if not 2 <= ndim <= 15:
            raise CodecError(f"compressed clip: corrupt header (a {ndim}-d shape)")
        shape = []
        for _ in range(ndim):
            v, pos = decode_varint(b, pos, what=what)
            if v > 1 << 62:
                raise CodecError(f"compressed clip: corrupt header (a shape entry of {v})")
            shape.append(v)
        if shape[0] > MAX_CLIP_FRAMES:
            raise CodecError(f"compressed clip: {shape[0]} frames declared, more than the limit {MAX_CLIP_FRAMES} "
                             "(damaged clip)")

        def f64() -> float:
            nonlocal pos
            need(pos, 8, "header")
            v = struct.unpack_from("<d", b, pos)[0]
            pos += 8
            if not math.isfinite(v):
                raise CodecError("compressed clip: corrupt header (a non-finite number)")
            return v

        def zz() -> int:
            nonlocal pos
            v, pos = decode_varint(b, pos, what=what)
            return _unzigzag(v)

        ts = fi = None
        if flags & 1:
            start = f64() if flags & 2 else 0.0
            if flags & _FLAG_RATIONAL_STEP:
                num = zz()
                den, pos = decode_varint(b, pos, what=what)
                if not 1 <= den <= _MAX_STEP_DEN or abs(num) > 1 << 62:
                    raise CodecError(f"compressed clip: corrupt header (timestamp step {num}/{den})")
                step = num / den
                if _rational(step) != (num, den):  # the writer's one form, so the clip re-serializes exactly
                    raise CodecError(f"compressed clip: corrupt header (timestamp step {num}/{den} is not in its "
                                     "canonical form)")
            else:
                step = f64()
                r = _rational(step) if version == CLIP_VERSION_SHORT else None
                if r is not None and _rational_bytes(*r) < 8:
                    raise CodecError("compressed clip: corrupt header (a float64 timestamp step that format 5 "
                                     "writes as a rational)")
            need(pos, 1, "header")
            ts = ClipSeries(start, step, b[pos])
            pos += 1
        elif flags & (2 | _FLAG_RATIONAL_STEP):
            raise CodecError("compressed clip: corrupt header flags (a timestamp start or step without predicted "
                             "timestamps)")
        if flags & 4:
            start_i, step_i = zz(), zz()
            need(pos, 1, "header")
            fi = ClipSeries(start_i, step_i, b[pos])
            pos += 1
            if max(abs(start_i), abs(step_i)) > 1 << 62:
                raise CodecError("compressed clip: corrupt header (frame index out of range)")
        for p in (ts, fi):
            if p is not None and p.bits > MAX_RESIDUAL_BITS:
                raise CodecError(f"compressed clip: corrupt header (a {p.bits}-bit residual field)")
        rate = f64() if flags & 16 else None
        level_bits = None
        if flags & 32:
            need(pos, 1, "header")
            level_bits = b[pos]
            pos += 1
            if not 1 <= level_bits <= 8:
                raise CodecError(f"compressed clip: corrupt header (level field width {level_bits})")
        chunks = None
        if flags & 64:
            count, pos = decode_varint(b, pos, what=what)
            if count > len(b) - pos:  # each length takes at least one byte
                raise CodecError(f"compressed clip: {count} chunks declared in a {len(b)}-byte clip (damaged clip)")
            lens = []
            for _ in range(count):
                c, pos = decode_varint(b, pos, what=what)
                lens.append(c)
            chunks = tuple(lens)
        return cls(version=version, shape=tuple(shape), codec_digest=codec_digest,
                   model_digest=model_digest, kind=kind, chunks=chunks, rate=rate, level_bits=level_bits,
                   ts=ts, fi=fi), pos


def _prefix_len(version: int) -> int:
    """Bytes of each digest a compact clip header keeps: 8 in version 4, 4 in version 5."""
    return CLIP_DIGEST_PREFIX_SHORT if version == CLIP_VERSION_SHORT else CLIP_DIGEST_PREFIX


def _digest_prefix(digest: str, what: str, n: int = CLIP_DIGEST_PREFIX) -> bytes:
    """The first ``n`` bytes of a sha256 hex digest (or of a prefix read from a version 4 or 5 clip)."""
    try:
        raw = bytes.fromhex(str(digest)[: 2 * n])
    except ValueError:
        raw = b""
    if len(raw) != n:
        hint = (" (a clip read from format 5 keeps 8; it cannot be written as format 4)"
                if len(str(digest)) == 2 * CLIP_DIGEST_PREFIX_SHORT else "")
        raise CodecError(f"compressed clip: {what} must be a hex digest of at least {2 * n} characters, got "
                         f"{digest!r}{hint}")
    return raw


def _rational(step: float) -> tuple[int, int] | None:
    """``(num, den)`` with ``num / den == step`` exactly in float64 and ``1 <= den <= 2**20``, or None.

    Version 5 stores a timestamp step this way when it can (``1/5``, ``1001/30000``: 2-6 bytes instead
    of 8); reading divides the two integers, which IEEE 754 rounds the same way on every machine."""
    from fractions import Fraction

    if not math.isfinite(step):
        return None
    f = Fraction(step).limit_denominator(_MAX_STEP_DEN)
    num, den = f.numerator, f.denominator
    if abs(num) > 1 << 62 or num / den != step:
        return None
    return num, den


def _rational_bytes(num: int, den: int) -> int:
    """Bytes of a version-5 rational timestamp step: the zigzag varint ``num`` and the varint ``den``."""
    def varint_len(v: int) -> int:
        return max(1, (v.bit_length() + 6) // 7)

    return varint_len(_zigzag(num)) + varint_len(den)


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(v: int) -> int:
    return v >> 1 if not v & 1 else -((v + 1) >> 1)

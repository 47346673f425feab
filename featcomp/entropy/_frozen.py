"""What every frozen codec shares (numpy only): identity, digests, dicts, quantization, stream checks.

Every frozen codec (:class:`~featcomp.entropy.EntropyCodec`,
:class:`~featcomp.entropy.temporal.TemporalCodec`, :class:`~featcomp.entropy.hyperprior.HyperpriorCodec`)
subclasses :class:`FrozenCodecBase`. Each is defined by canonical bytes (``_body()``: magic, version,
integer parameters, tables); its ``digest`` is the sha256 of those bytes and ``to_bytes()`` appends it.
The base gives them one implementation of equality by digest, ``to_bytes``, the checked split in
``from_bytes``, the JSON-safe ``to_dict``/``from_dict``, the offset quantization ``k = round(y - offsets)``
with channel axis 1, ``compress``/``decompress``, and the checks of a stream's header before anything is
allocated from it (:meth:`FrozenCodecBase._unpack`). The factorized codec keeps the dict format and the
float quantization it always had (its own ``to_dict``/``from_dict``/``quantize``), so its bytes, digest
and dicts are unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import math
from typing import Any, ClassVar

import numpy as np

from featcomp.entropy import bitstream
from featcomp.errors import CodecError

_I32 = np.iinfo(np.int32)


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of a numpy array or a (possibly CUDA, autograd-tracked) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def readonly(a: Any, dtype: Any) -> np.ndarray:
    """A C-contiguous, read-only copy of ``a`` as ``dtype`` (frozen codecs never mutate tables)."""
    a = np.ascontiguousarray(np.asarray(a).astype(dtype))
    a.flags.writeable = False
    return a


def rounded_to_int32(k: np.ndarray) -> np.ndarray:
    """Rounded quantizer output ``k`` (float) as int32, or :class:`CodecError` if it is non-finite or
    beyond int32 (nothing is clipped)."""
    if not np.isfinite(k).all():
        raise CodecError("cannot quantize non-finite values (NaN or inf in y)")
    if k.size and (k.min() < _I32.min or k.max() > _I32.max):
        raise CodecError("quantized values exceed the int32 range")
    return k.astype(np.int32)


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * (ndim - 2)


class FrozenCodecBase:
    """Base of every frozen dataclass codec (declare them with ``eq=False``).

    Subclasses set ``kind`` (the registry name), ``_MAGIC`` (4 bytes) and ``_VERSION`` (the version
    they write; ``_READ_VERSIONS``, when set, every stream layout version it reads, which is also what
    ``from_bytes`` accepts in the version byte unless ``_BYTE_VERSIONS`` says otherwise), optionally
    ``_STREAM_NAME`` (how stream errors name the codec) and ``_MAX_ELEMENTS`` (the most integers one
    stream may hold), have fields ``channels``, ``offsets`` (float32 (C,)) and ``digest``, and implement
    ``_body()``, ``from_bytes()``, ``_check_shape(shape, what)``, ``compress_symbols``,
    ``decompress_symbols`` and ``estimate_bits``.
    """

    kind: ClassVar[str]
    _MAGIC: ClassVar[bytes]
    _VERSION: ClassVar[int]
    _STREAM_NAME: ClassVar[str] = "codec"
    _MAX_ELEMENTS: ClassVar[int] = bitstream.MAX_STREAM_ELEMENTS

    # ------------------------------------------------------------------ identity and serialization
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.digest == self.digest  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.digest)  # type: ignore[attr-defined]

    def to_bytes(self) -> bytes:
        """Canonical bytes (``_body()``) followed by their sha256."""
        body = self._body()  # type: ignore[attr-defined]
        return body + hashlib.sha256(body).digest()

    @classmethod
    def _checked_body(cls, data: bytes, fixed_header: str) -> tuple[bytes, tuple]:
        """Split ``to_bytes()`` output: check magic, length, sha256 and version.

        Args:
            data: the bytes.
            fixed_header: the ``struct`` format of the fields after the magic (version first).

        Returns:
            (body without the digest, the unpacked fixed header fields after the version).

        Raises:
            CodecError: bad magic, too short, digest mismatch, or an unknown version.
        """
        import struct

        data = bytes(data)
        hs = len(cls._MAGIC) + struct.calcsize(fixed_header)
        name = cls.__name__
        if len(data) < hs + 32 or data[: len(cls._MAGIC)] != cls._MAGIC:
            raise CodecError(f"not a featcomp {name} (bad magic or too short)")
        body, dig = data[:-32], data[-32:]
        if hashlib.sha256(body).digest() != dig:
            raise CodecError(f"corrupt {name} bytes: sha256 mismatch")
        version, *fields = struct.unpack_from(fixed_header, body, len(cls._MAGIC))
        accepted = getattr(cls, "_BYTE_VERSIONS", None) or getattr(cls, "_READ_VERSIONS", (cls._VERSION,))
        if version not in accepted:
            raise CodecError(f"unknown {name} version {version}; upgrade featcomp")
        return body, tuple(fields)

    @classmethod
    def _read_arrays(cls, body: bytes, pos: int, layout: list[tuple[str, int]]) -> list[np.ndarray]:
        """Read consecutive arrays ``(dtype, count)`` from ``body`` at ``pos``; the body must end there."""
        out = []
        for dt, count in layout:
            try:
                a = np.frombuffer(body, dt, count, pos)
            except ValueError:
                raise CodecError(f"truncated {cls.__name__} bytes") from None
            out.append(a)
            pos += a.nbytes
        if pos != len(body):
            raise CodecError(f"{cls.__name__} bytes have trailing data")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``kind``, ``format``, ``digest``, ``channels`` and the canonical bytes (base64)."""
        return {"kind": self.kind, "format": f"featcomp.entropy.{type(self).__name__}",
                "format_version": self._VERSION, "channels": self.channels,  # type: ignore[attr-defined]
                "digest": self.digest,  # type: ignore[attr-defined]
                "bytes_b64": base64.b64encode(self.to_bytes()).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`; checks the digest. Raises :class:`CodecError`."""
        name = cls.__name__
        if d.get("format") != f"featcomp.entropy.{name}":
            raise CodecError(f"not a {name} dict (format={d.get('format')!r})")
        try:
            codec = cls.from_bytes(base64.b64decode(d["bytes_b64"]))  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"invalid {name} dict: {e!r}") from None
        if d.get("digest", codec.digest) != codec.digest:
            raise CodecError(f"{name} dict digest does not match its contents: corrupted or edited")
        return codec

    # ------------------------------------------------------------------ quantization
    def quantize(self, y: Any) -> np.ndarray:
        """int32 ``round(y - offsets)`` (half to even) per channel (axis 1).

        Raises:
            CodecError: wrong shape, non-finite values, or values beyond int32.
        """
        y = to_numpy(y).astype(np.float32, copy=False)
        self._check_shape(y.shape, "y")  # type: ignore[attr-defined]
        return rounded_to_int32(np.round(y - self.offsets.reshape(_channel_shape(y.ndim))))  # type: ignore[attr-defined]

    def _int_symbols(self, k: Any) -> np.ndarray:
        """``k`` (numpy or torch) as an int64 numpy array after the shape, dtype and int32 checks that
        every ``compress_symbols``/``estimate_bits`` makes (:class:`CodecError` otherwise)."""
        k = to_numpy(k)
        self._check_shape(k.shape, "k")  # type: ignore[attr-defined]
        if not np.issubdtype(k.dtype, np.integer):
            raise CodecError(f"symbols must be integers, got dtype {k.dtype}; use compress() for floats")
        if k.size and (k.min() < _I32.min or k.max() > _I32.max):
            raise CodecError("symbols exceed the int32 range")
        return k.astype(np.int64)

    def dequantize(self, k: Any) -> np.ndarray:
        """float32 ``k + offsets`` per channel (axis 1), same shape as ``k``."""
        k = to_numpy(k)
        self._check_shape(k.shape, "k")  # type: ignore[attr-defined]
        return k.astype(np.float32) + self.offsets.reshape(_channel_shape(k.ndim))  # type: ignore[attr-defined]

    def compress(self, y: Any) -> bytes:
        """``compress_symbols(quantize(y))``."""
        return self.compress_symbols(self.quantize(y))  # type: ignore[attr-defined]

    def decompress(self, data: bytes) -> np.ndarray:
        """float32 ``dequantize(decompress_symbols(data))``."""
        return self.dequantize(self.decompress_symbols(data))  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ streams
    def _unpack(self, data: bytes) -> bitstream.Header:
        """Parse and check a stream's framing against this codec (:func:`featcomp.entropy.bitstream.unpack`),
        its shape against the codec, and its element count against ``_MAX_ELEMENTS`` before anything is
        allocated from the declared shape (docs/reliability.md).

        Raises:
            CodecError: not this codec's stream, corrupt, or an implausibly large declared shape.
        """
        h = bitstream.unpack(data, self.digest, self.channels, what=self._STREAM_NAME)  # type: ignore[attr-defined]
        self._check_shape(h.shape, "the stream's array")  # type: ignore[attr-defined]
        if math.prod(h.shape) > self._MAX_ELEMENTS:
            raise CodecError(f"corrupt stream header: shape {h.shape} is implausibly large")
        return h


#: the former name of :class:`FrozenCodecBase`
DigestedCodec = FrozenCodecBase

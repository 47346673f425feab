"""The compact, versioned framing of one entropy-coded stream (numpy-free, torch-free).

Format version 2 (written; all integers little-endian; see ``docs/entropy.md``)::

    offset  size  field
    0       1     magic 0xFC
    1       1     format byte: bits 7-6 version (0b10 = 2), bits 5-4 ``lead``, bits 3-0 ndim (2..15)
    2       var   shape without axis 1: ndim - 1 unsigned LEB128 varints (axis 1 is the codec's
                  channel count, implied by the codec)                e.g. (100, 64) -> 1 byte
    .       4     CRC32 of: the codec's 32-byte sha256 digest, then every header byte before the
                  CRC, then the stored payload
    .       rest  payload: ANS words (uint32 LE) with ``lead`` (0..3) leading and up to 3 trailing
                  zero bytes removed

A ``(100, 64)`` chunk has a 7-byte header. The codec digest is folded into the checksum instead of
being stored: a stream decoded with another codec fails the CRC, and the message says so.

Format version 1 (read only)::

    0       2     magic b"\\xfc\\xec"
    2       1     (1 << 4) | ndim
    3       var   shape: ndim unsigned LEB128 varints
    .       4     the first 4 bytes of the codec's sha256 digest
    .       4     CRC32 of every byte before it followed by the payload
    .       rest  payload: ANS words with up to 3 trailing zero bytes removed

Version 1's second magic byte 0xEC has top bits 0b11, so byte 1 tells the versions apart.

Why the payload ends can be trimmed exactly: constriction's ``AnsCoder`` starts from state 0, so
the first word it flushes (the first of the payload) holds the first-encoded symbol's cumulative
frequency in its low bits, above a run of zero bits; the last word is the high half of the final
state, often with zero high bytes. Both runs are restored by the reader: ``lead`` is in the header,
and the trailing count follows because the full payload is a whole number of words.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from featcomp.errors import CodecError

__all__ = [
    "MAGIC", "MAGIC_V1", "FORMAT_VERSION", "READ_VERSIONS", "MAX_STREAM_ELEMENTS", "Header", "pack", "unpack",
    "encode_varint", "decode_varint",
]

MAGIC = b"\xfc"  # version 2 (and later): one byte
MAGIC_V1 = b"\xfc\xec"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
DIGEST_PREFIX_BYTES = 4  # version 1 only
_MAX_NDIM = 15
_MAX_STRIP = 3
# The most integers one stream may hold (every codec, encode and decode; docs/reliability.md). A stream
# can legitimately hold far more symbols than its size suggests (ANS codes a run of a table's first
# symbol from the empty state in zero bits), so a declared shape cannot be bounded by the payload
# alone: this limit bounds what any stream, genuine or forged, makes a decoder allocate (int32 output
# of 512 MiB) before a single symbol is decoded; the codecs check it on the declared shape before they
# allocate (framing alone, unpack, allocates nothing from the shape) and the encoders refuse larger arrays. Store chunks (256 frames) and clips stay far below it.
MAX_STREAM_ELEMENTS = 1 << 27


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, high bit set on all bytes but the last."""
    if value < 0:
        raise ValueError(f"varints are unsigned, got {value}")
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(data: bytes | memoryview, pos: int, *, what: str = "stream header") -> tuple[int, int]:
    """Decode one unsigned LEB128 varint at ``pos``; returns ``(value, next_pos)``.

    Args:
        data: the bytes.
        pos: where the varint starts.
        what: names the structure being parsed, for error messages.

    Raises:
        CodecError: if the data ends inside the varint or it is longer than 10 bytes.
    """
    value = 0
    shift = 0
    for i in range(10):
        if pos + i >= len(data):
            raise CodecError(f"truncated {what}: the data ends inside a varint")
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise CodecError(f"corrupt {what}: a varint is longer than 10 bytes")


@dataclass(frozen=True)
class Header:
    """A parsed, checked stream.

    Attributes:
        shape: the shape of the coded integer array ``(N, C, *)``.
        payload: the ANS payload, the removed zero bytes restored (a multiple of 4 bytes).
        version: the stream's format version (1 or 2).
    """

    shape: tuple[int, ...]
    payload: bytes
    version: int = FORMAT_VERSION


def _digest_bytes(digest: str) -> bytes:
    return bytes.fromhex(digest)


def pack(shape: tuple[int, ...], digest: str, payload: bytes, *, version: int = FORMAT_VERSION) -> bytes:
    """Frame ``payload`` (bytes of little-endian uint32 ANS words) with the header.

    Args:
        shape: the array's shape ``(N, C, *)`` (2 to 15 dims for version 2, 1 to 15 for version 1).
        digest: the codec's sha256 hex digest (version 2 folds it into the CRC; version 1 stores a
            4-byte prefix).
        payload: the ANS words as bytes (length a multiple of 4).
        version: 2 (the default); 1 only to reproduce legacy streams (tests, re-framing).

    Raises:
        CodecError: an unsupported shape or version, or a payload that is not whole words.
    """
    if len(payload) % 4:
        raise CodecError(f"the payload must be whole 32-bit words, got {len(payload)} bytes")
    end = len(payload)
    if version == 1:
        if not 1 <= len(shape) <= _MAX_NDIM:
            raise CodecError(f"can only code arrays with 1 to {_MAX_NDIM} dimensions, got shape {shape}")
        # trailing zero bytes: the high bytes of the last word (the high half of the ANS state)
        while end > len(payload) - _MAX_STRIP and end > 0 and payload[end - 1] == 0:
            end -= 1
        head = bytearray(MAGIC_V1)
        head.append((1 << 4) | len(shape))
        for s in shape:
            head += encode_varint(int(s))
        head += _digest_bytes(digest)[:DIGEST_PREFIX_BYTES]
        body = memoryview(payload)[:end]
        crc = zlib.crc32(body, zlib.crc32(head))
        return bytes(head) + struct.pack("<I", crc) + bytes(body)
    if version != 2:
        raise CodecError(f"cannot write entropy stream format version {version} (writes 1 or 2)")
    if not 2 <= len(shape) <= _MAX_NDIM:
        raise CodecError(f"can only code arrays with 2 to {_MAX_NDIM} dimensions (N, C, *), got shape {shape}")
    # leading zero bytes: the low bytes of the first flushed word (below the first-encoded symbol)
    lead = 0
    while lead < _MAX_STRIP and lead < end and payload[lead] == 0:
        lead += 1
    while end > len(payload) - _MAX_STRIP and end > lead and payload[end - 1] == 0:
        end -= 1
    head = bytearray(MAGIC)
    head.append(0x80 | (lead << 4) | len(shape))
    head += encode_varint(int(shape[0]))
    for s in shape[2:]:
        head += encode_varint(int(s))
    body = memoryview(payload)[lead:end]
    crc = zlib.crc32(body, zlib.crc32(head, zlib.crc32(_digest_bytes(digest))))
    return b"".join([head, struct.pack("<I", crc), body])


def unpack(data: bytes, digest: str, channels: int, *, what: str = "codec") -> Header:
    """Parse and check a framed stream of either version against the codec that should read it.

    Args:
        data: the stream.
        digest: the reading codec's sha256 hex digest.
        channels: the reading codec's channel count (axis 1, implied by version 2 streams).
        what: how error messages name the codec (e.g. ``"temporal codec"``).

    Raises:
        CodecError: not a featcomp entropy stream (magic), an unknown format version, a truncated
            header, another codec's stream (version 1: digest prefix; version 2: the CRC, whose
            message says so), or a CRC mismatch (corruption or truncation).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 2 or data[:1] != MAGIC:
        raise CodecError(
            f"not a featcomp entropy stream (magic {data[:2].hex()} does not start with {MAGIC.hex()}); "
            "was it written by another codec or format?"
        )
    top = data[1] >> 6
    if top == 3:
        return _unpack_v1(data, digest, what)
    if top != 2:
        raise CodecError(
            f"unknown entropy stream format version (format byte {data[1]:#04x}; this featcomp reads "
            f"versions {', '.join(map(str, READ_VERSIONS))}); upgrade featcomp"
        )
    lead, ndim = (data[1] >> 4) & 3, data[1] & 0x0F
    if ndim < 2:
        raise CodecError(f"corrupt stream header: ndim is {ndim}")
    pos = 2
    n, pos = decode_varint(data, pos)
    shape = [n, int(channels)]
    for _ in range(ndim - 2):
        v, pos = decode_varint(data, pos)
        shape.append(v)
    if len(data) < pos + 4:
        raise CodecError("truncated stream: the header ends before the checksum")
    (crc,) = struct.unpack_from("<I", data, pos)
    body = memoryview(data)[pos + 4 :]
    if zlib.crc32(body, zlib.crc32(memoryview(data)[:pos], zlib.crc32(_digest_bytes(digest)))) != crc:
        raise CodecError(
            f"corrupt, truncated, or made by another codec: CRC32 mismatch over {len(data)} bytes "
            f"(the checksum covers this {what}'s digest {digest[:8]}...); decode it with the codec "
            "recorded next to it, or the stream was damaged in storage or transfer"
        )
    trail = (-(len(body) + lead)) % 4
    if lead or trail:
        payload = b"".join([b"\x00" * lead, body, b"\x00" * trail])
    else:
        payload = bytes(body)
    return Header(tuple(shape), payload, 2)


def _unpack_v1(data: bytes, digest: str, what: str) -> Header:
    if data[:2] != MAGIC_V1:
        raise CodecError(f"not a featcomp entropy stream (magic {data[:2].hex()} != {MAGIC_V1.hex()})")
    if len(data) < 3:
        raise CodecError(f"truncated stream: {len(data)} bytes is shorter than any header")
    version, ndim = data[2] >> 4, data[2] & 0x0F
    if version != 1:
        raise CodecError(
            f"unknown entropy stream format version {version} (this featcomp reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}); upgrade featcomp"
        )
    if ndim == 0:
        raise CodecError("corrupt stream header: ndim is 0")
    pos = 3
    shape = []
    for _ in range(ndim):
        v, pos = decode_varint(data, pos)
        shape.append(v)
    end_head = pos + DIGEST_PREFIX_BYTES
    if len(data) < end_head + 4:
        raise CodecError("truncated stream: the header ends before the digest and checksum")
    prefix = data[pos:end_head]
    (crc,) = struct.unpack_from("<I", data, end_head)
    body = data[end_head + 4 :]
    if zlib.crc32(body, zlib.crc32(data[:end_head])) != crc:
        raise CodecError(
            f"corrupt or truncated stream: CRC32 mismatch over {len(data)} bytes "
            "(the stream was damaged in storage or transfer, or cut short)"
        )
    if prefix != _digest_bytes(digest)[:DIGEST_PREFIX_BYTES]:
        raise CodecError(
            f"stream was written by codec {prefix.hex()}..., not by this {what} {digest[:8]}...; "
            "decode it with the codec recorded next to it"
        )
    pad = (-len(body)) % 4
    return Header(tuple(shape), body + b"\x00" * pad, 1)

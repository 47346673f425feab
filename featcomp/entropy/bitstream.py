"""The compact, versioned framing of one entropy-coded stream (numpy-free, torch-free).

Layout of a stream (all integers little-endian; see ``docs/entropy.md``)::

    offset  size  field
    0       2     magic  b"\\xfc\\xec"
    2       1     (format version << 4) | ndim          version 1, ndim in [1, 15]
    3       var   shape: ndim unsigned LEB128 varints   e.g. (100, 64) -> 2 bytes
    .       4     the first 4 bytes of the codec's sha256 digest
    .       4     CRC32 of every byte before it (header) followed by the payload
    .       rest  payload: ANS words (uint32 LE) with up to 3 trailing zero bytes removed

For a chunk of shape ``(100, 64)`` the header is 13 bytes. The CRC covers the header as well as the
payload, so a corrupted shape is detected as well as a corrupted payload.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from featcomp.errors import CodecError

__all__ = ["MAGIC", "FORMAT_VERSION", "Header", "pack", "unpack", "encode_varint", "decode_varint"]

MAGIC = b"\xfc\xec"
FORMAT_VERSION = 1
DIGEST_PREFIX_BYTES = 4
_MAX_NDIM = 15


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


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one unsigned LEB128 varint at ``pos``; returns ``(value, next_pos)``.

    Raises:
        CodecError: if the stream ends inside the varint or it is longer than 10 bytes.
    """
    value = 0
    shift = 0
    for i in range(10):
        if pos + i >= len(data):
            raise CodecError("truncated stream: the header ends inside the shape")
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise CodecError("corrupt stream: a shape varint is longer than 10 bytes")


@dataclass(frozen=True)
class Header:
    """A parsed stream header.

    Attributes:
        shape: the shape of the coded integer array ``(N, C, *)``.
        digest_prefix: the first 4 bytes of the sha256 digest of the codec that wrote the stream.
        payload: the ANS payload (trailing zero bytes restored to a multiple of 4 bytes).
    """

    shape: tuple[int, ...]
    digest_prefix: bytes
    payload: bytes


def pack(shape: tuple[int, ...], digest: str, payload: bytes) -> bytes:
    """Frame ``payload`` (bytes of little-endian uint32 ANS words) with the header.

    Args:
        shape: the array's shape (1 to 15 dims).
        digest: the codec's sha256 hex digest.
        payload: the ANS words as bytes (length a multiple of 4).
    """
    if not 1 <= len(shape) <= _MAX_NDIM:
        raise CodecError(f"can only code arrays with 1 to {_MAX_NDIM} dimensions, got shape {shape}")
    # Strip up to 3 trailing zero bytes: the last word holds the high bits of the ANS state and
    # often has leading zeros. The reader pads back to a multiple of 4, which restores it exactly.
    end = len(payload)
    while end > len(payload) - 3 and end > 0 and payload[end - 1] == 0:
        end -= 1
    head = bytearray(MAGIC)
    head.append((FORMAT_VERSION << 4) | len(shape))
    for s in shape:
        head += encode_varint(int(s))
    head += bytes.fromhex(digest)[:DIGEST_PREFIX_BYTES]
    body = memoryview(payload)[:end]
    crc = zlib.crc32(body, zlib.crc32(head))
    return bytes(head) + struct.pack("<I", crc) + bytes(body)


def unpack(data: bytes) -> Header:
    """Parse and check a framed stream.

    Raises:
        CodecError: not a featcomp entropy stream (magic), an unknown format version, a
            truncated header, or a CRC mismatch (corruption or truncation of the payload).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 3:
        raise CodecError(f"truncated stream: {len(data)} bytes is shorter than any header")
    if data[:2] != MAGIC:
        raise CodecError(
            f"not a featcomp entropy stream (magic {data[:2].hex()} != {MAGIC.hex()}); "
            "was it written by another codec or format?"
        )
    version, ndim = data[2] >> 4, data[2] & 0x0F
    if version != FORMAT_VERSION:
        raise CodecError(
            f"unknown entropy stream format version {version} (this featcomp reads version "
            f"{FORMAT_VERSION}); upgrade featcomp"
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
    pad = (-len(body)) % 4
    return Header(tuple(shape), prefix, body + b"\x00" * pad)

"""The frozen factorized entropy codec: integer CDF tables + offsets + digest (numpy only at this level).

An :class:`EntropyCodec` is what an :class:`~featcomp.entropy.EntropyBottleneck` becomes after
training (``bottleneck.freeze()``), and what a store records to decode its chunks with no model
file. It is immutable: its arrays are read-only, and its digest (sha256 of its canonical bytes)
names it. There is no "update" step; to change tables, make a new codec.

Table format (per channel ``c``; see ``docs/entropy.md``):

* ``table_min[c]`` (int32): the smallest value with its own symbol.
* ``table_size[c]`` (int32, >= 1): the number of consecutive values with their own symbol.
* ``freqs[start[c] : start[c] + table_size[c] + 1]`` (uint16 values, held as uint32): the integer
  frequencies of those values, then of the escape symbol (last). Each is >= 1 and they sum to
  exactly ``2**precision``; ``precision <= 16``.

The probability of value ``v`` in the table is ``freqs[...] / 2**precision``; values outside are
coded as the escape symbol followed by the value itself (see :mod:`featcomp.entropy.layouts`, which
holds this codec's stream layout, "channels").

Determinism guarantee: encoding and decoding use only these integers (the coder hands them to
constriction in a way that it reproduces exactly; see :mod:`featcomp.entropy.ans`), so a stream
decodes identically on any machine, with or without torch or a GPU. Tables are made once, when the
codec is built, and are never rebuilt from floats at decode time.

Dequantization: ``y_hat = k + offsets`` per channel, in float32 (``offsets`` are the learned
medians of the prior, Ballé et al. 2018, arXiv:1802.01436), so :meth:`EntropyCodec.decompress`
equals an eval-mode bottleneck's ``y_hat`` element for element.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import math
import struct
from typing import Any, ClassVar

import numpy as np

from featcomp.entropy import ans, bitstream, layouts
from featcomp.entropy._frozen import FrozenCodecBase, rounded_to_int32
from featcomp.entropy._frozen import to_numpy as _to_numpy
from featcomp.entropy.tables import quantize_pmf
from featcomp.errors import CodecError

__all__ = ["EntropyCodec", "quantize_pmf"]

_CODEC_MAGIC = b"FCEC"
_CODEC_VERSION = 1
_MAX_ELEMENTS = bitstream.MAX_STREAM_ELEMENTS  # docs/reliability.md
_I32 = np.iinfo(np.int32)
# Elements per block of the blocked (N, C, R) <-> (C, N*R) transposes. Measured at (3906, 256)
# int32: 16384 (64 KiB) takes 0.65 ms, 32768 (128 KiB) 1.04 ms, a plain transpose 1.46 ms.
_BLOCK_ELEMENTS = 16384


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class EntropyCodec(FrozenCodecBase):
    """Immutable per-channel integer entropy model + coder (Ballé et al. 2018 tables); kind ``"factorized"``.

    Build one with :meth:`from_pmf`, :meth:`fit`, ``EntropyBottleneck.freeze()`` or
    :meth:`from_bytes`/:meth:`from_dict`; do not mutate it (arrays are read-only).

    Attributes:
        offsets: float32 (C,) quantization offsets: ``k = round(y - offsets)``, ``y_hat = k + offsets``.
        table_min: int32 (C,) first in-table value per channel.
        table_size: int32 (C,) in-table values per channel (>= 1), escape excluded.
        freqs: uint32 (sum(table_size + 1),) concatenated frequencies, escape last per channel.
        precision: bits of the tables, 2..16 (each channel's freqs sum to ``2**precision``).
        channels: C (derived).
        digest: sha256 hex of :meth:`to_bytes`'s canonical body (derived); equal tables and
            offsets give equal digests.
    """

    offsets: np.ndarray
    table_min: np.ndarray
    table_size: np.ndarray
    freqs: np.ndarray
    precision: int = 16
    channels: int = dataclasses.field(init=False)
    digest: str = dataclasses.field(init=False)
    kind: ClassVar[str] = "factorized"  # a class attribute: not in to_dict (dicts without "kind" mean factorized)
    _MAGIC: ClassVar[bytes] = _CODEC_MAGIC
    _VERSION: ClassVar[int] = _CODEC_VERSION

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        precision = int(self.precision)
        if not 2 <= precision <= 16:
            raise CodecError(f"table precision must be in [2, 16] bits, got {precision}")
        offsets = np.asarray(self.offsets, dtype=np.float32).reshape(-1)
        tmin = np.asarray(self.table_min)
        tsize = np.asarray(self.table_size)
        freqs = np.asarray(self.freqs)
        C = offsets.shape[0]
        if C < 1 or tmin.shape != (C,) or tsize.shape != (C,):
            raise CodecError(
                f"codec tables disagree on the channel count: offsets {offsets.shape}, "
                f"table_min {tmin.shape}, table_size {tsize.shape}"
            )
        if not np.isfinite(offsets).all():
            raise CodecError("codec offsets must be finite")
        if (tsize < 1).any() or (tsize.astype(np.int64) + 1 > (1 << precision)).any():
            raise CodecError(f"table sizes must be in [1, 2**precision - 1], got {tsize.min()}..{tsize.max()}")
        tmin64, tsize64 = tmin.astype(np.int64), tsize.astype(np.int64)
        if (tmin64 < -(2**30)).any() or (tmin64 + tsize64 > 2**30).any():
            # (the one-comparison escape test relies on this; see layouts.find_escapes)
            raise CodecError("table ranges must lie inside [-2**30, 2**30]")
        lengths = tsize64 + 1
        if freqs.ndim != 1 or freqs.shape[0] != int(lengths.sum()):
            raise CodecError(f"freqs must be 1-D with {int(lengths.sum())} entries, got shape {freqs.shape}")
        f64 = freqs.astype(np.int64)
        if (f64 < 1).any():
            raise CodecError("every table frequency must be >= 1 (no symbol may be uncodable)")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        sums = np.add.reduceat(f64, starts)
        if (sums != (1 << precision)).any():
            bad = int(np.nonzero(sums != (1 << precision))[0][0])
            raise CodecError(f"channel {bad}'s frequencies sum to {sums[bad]}, not 2**{precision}")
        set_("precision", precision)
        set_("offsets", _readonly(offsets))
        set_("table_min", _readonly(tmin.astype(np.int32)))
        set_("table_size", _readonly(tsize.astype(np.int32)))
        set_("freqs", _readonly(f64.astype(np.uint32)))
        set_("channels", int(C))
        set_("digest", hashlib.sha256(self._body()).hexdigest())

    # ------------------------------------------------------------------ identity and serialization
    def __eq__(self, other: object) -> bool:  # any EntropyCodec (subclasses too) with the same digest
        return isinstance(other, EntropyCodec) and other.digest == self.digest

    __hash__ = FrozenCodecBase.__hash__

    def __repr__(self) -> str:
        return (
            f"EntropyCodec(channels={self.channels}, precision={self.precision}, "
            f"symbols={int(self.table_size.sum())}, digest={self.digest[:12]}...)"
        )

    def _body(self) -> bytes:
        """Canonical bytes (``to_bytes()`` appends their sha256): ``b"FCEC"``, version u8, precision u8,
        C u32, offsets f32[C], table_min i32[C], table_size i32[C], freqs u16[sum(table_size + 1)]."""
        head = _CODEC_MAGIC + struct.pack("<BBI", _CODEC_VERSION, self.precision, self.channels)
        return b"".join(
            [
                head,
                self.offsets.astype("<f4").tobytes(),
                self.table_min.astype("<i4").tobytes(),
                self.table_size.astype("<i4").tobytes(),
                self.freqs.astype("<u2").tobytes(),  # every freq < 2**16 (>= 2 symbols, each >= 1)
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EntropyCodec:
        """Inverse of :meth:`to_bytes`.

        Raises:
            CodecError: wrong magic or version, truncation, or a digest mismatch (corruption).
        """
        data = bytes(data)
        if len(data) < 10 + 32 or data[:4] != _CODEC_MAGIC:
            raise CodecError("not a featcomp EntropyCodec (bad magic or too short)")
        version, precision, C = struct.unpack_from("<BBI", data, 4)
        if version != _CODEC_VERSION:
            raise CodecError(f"unknown EntropyCodec format version {version}; upgrade featcomp")
        body, digest = data[:-32], data[-32:]
        if hashlib.sha256(body).digest() != digest:
            raise CodecError("corrupt EntropyCodec bytes: sha256 mismatch")
        pos = 10
        try:
            offsets = np.frombuffer(body, "<f4", C, pos)
            tmin = np.frombuffer(body, "<i4", C, pos + 4 * C)
            tsize = np.frombuffer(body, "<i4", C, pos + 8 * C)
            n = int(tsize.astype(np.int64).sum()) + C
            freqs = np.frombuffer(body, "<u2", n, pos + 12 * C)
        except ValueError:
            raise CodecError("truncated EntropyCodec bytes") from None
        if pos + 12 * C + 2 * n != len(body):
            raise CodecError("EntropyCodec bytes have trailing data")
        return cls(offsets, tmin, tsize, freqs, precision)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (small arrays as lists, frequencies as base64 of little-endian uint16)."""
        return {
            "format": "featcomp.entropy.EntropyCodec",
            "format_version": _CODEC_VERSION,
            "channels": self.channels,
            "precision": self.precision,
            "digest": self.digest,
            "offsets": [float(v) for v in self.offsets],
            "table_min": self.table_min.tolist(),
            "table_size": self.table_size.tolist(),
            "freqs_u16_b64": base64.b64encode(self.freqs.astype("<u2").tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EntropyCodec:
        """Inverse of :meth:`to_dict`; checks the recorded digest.

        Raises:
            CodecError: missing keys, an unknown version, or a digest mismatch.
        """
        try:
            if d.get("format") != "featcomp.entropy.EntropyCodec":
                raise CodecError(f"not an EntropyCodec dict (format={d.get('format')!r})")
            if int(d["format_version"]) != _CODEC_VERSION:
                raise CodecError(f"unknown EntropyCodec format version {d['format_version']}")
            freqs = np.frombuffer(base64.b64decode(d["freqs_u16_b64"]), "<u2")
            codec = cls(
                np.asarray(d["offsets"], np.float32),
                np.asarray(d["table_min"], np.int64),
                np.asarray(d["table_size"], np.int64),
                freqs,
                int(d["precision"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"invalid EntropyCodec dict: {e!r}") from None
        if "digest" in d and d["digest"] != codec.digest:
            raise CodecError(
                f"EntropyCodec dict digest {d['digest'][:12]}... does not match its tables "
                f"({codec.digest[:12]}...): corrupted or edited"
            )
        return codec

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pmf(
        cls,
        pmf: np.ndarray,
        table_min: np.ndarray,
        table_size: np.ndarray,
        escape_mass: np.ndarray | float,
        *,
        offsets: np.ndarray | None = None,
        precision: int = 16,
    ) -> EntropyCodec:
        """Quantize float pmfs to integer tables (once; the result is fixed forever).

        Args:
            pmf: float (C, Lmax) probability of ``table_min[c] + j`` at column j (rows need not
                be normalized; columns beyond ``table_size[c]`` ignored).
            table_min: int (C,); table_size: int (C,) >= 1.
            escape_mass: float (C,) or scalar, the probability of falling outside the table, in
                the same units as ``pmf``.
            offsets: float32 (C,), default zeros.
            precision: table bits (<= 16).
        """
        pmf = np.asarray(pmf, np.float64)
        C = pmf.shape[0]
        tsize = np.asarray(table_size, np.int64).reshape(C)
        if (tsize < 1).any() or (tsize + 1 > (1 << precision)).any():
            raise CodecError(f"table sizes must be in [1, 2**{precision} - 1]")
        Lmax = int(tsize.max()) + 1
        full = np.zeros((C, Lmax), np.float64)
        w = min(pmf.shape[1], Lmax)
        full[:, :w] = pmf[:, :w]
        full[np.arange(Lmax)[None, :] >= tsize[:, None]] = 0.0
        full[np.arange(C), tsize] = np.broadcast_to(np.asarray(escape_mass, np.float64), (C,))
        freqs2d = quantize_pmf(full, tsize + 1, precision)
        valid = np.arange(Lmax)[None, :] <= tsize[:, None]
        if offsets is None:
            offsets = np.zeros(C, np.float32)
        return cls(np.asarray(offsets, np.float32), np.asarray(table_min), tsize, freqs2d[valid], precision)

    @classmethod
    def fit(
        cls,
        k: Any,
        *,
        precision: int = 16,
        offsets: np.ndarray | None = None,
        max_table_size: int = 1024,
        escape_floor: float = 1e-6,
    ) -> EntropyCodec:
        """Tables from the empirical per-channel histograms of integer symbols (numpy only).

        The table of channel c covers ``[min, max]`` of ``k[:, c]``, widened by a quarter of its
        width (plus one) on each side, when that range has at most ``max_table_size`` values; otherwise the ``max_table_size`` values centred on the median
        (the rest is escape-coded exactly). Escape probability = the fraction of escaped samples,
        floored at ``escape_floor`` so unseen values stay cheap-ish.

        Args:
            k: int (N, C, *) symbols (numpy or torch); N * prod(*) >= 1.
            precision: table bits (<= 16).
            offsets: float32 (C,) to store with the tables (default zeros).
            max_table_size: cap on in-table values per channel (<= 2**precision - 1).

        Returns:
            A new :class:`EntropyCodec`.
        """
        k = _to_numpy(k)
        if k.ndim < 2 or k.size == 0:
            raise CodecError(f"fit needs a non-empty (N, C, *) integer array, got shape {k.shape}")
        if not np.issubdtype(k.dtype, np.integer):
            raise CodecError(f"fit needs integer symbols, got dtype {k.dtype}")
        C = k.shape[1]
        max_table_size = int(min(max_table_size, (1 << precision) - 1))
        kt = np.moveaxis(k, 1, 0).reshape(C, -1).astype(np.int64)
        lo = kt.min(axis=1)
        hi = kt.max(axis=1)
        # widen each table a little beyond the observed range: unseen values next to it then cost
        # ~precision bits as in-table symbols (frequency 1) rather than an escape
        margin = (hi - lo) // 4 + 1
        lo, hi = lo - margin, hi + margin
        wide = hi - lo + 1 > max_table_size
        if wide.any():
            med = np.median(kt[wide], axis=1).astype(np.int64)
            lo[wide] = med - max_table_size // 2
            hi[wide] = lo[wide] + max_table_size - 1
        lo = np.clip(lo, -(2**30), 2**30 - max_table_size)
        hi = np.clip(hi, lo, lo + max_table_size - 1)
        tsize = hi - lo + 1
        Lmax = int(tsize.max())
        idx = kt - lo[:, None]
        inside = (idx >= 0) & (idx < tsize[:, None])
        flat = np.where(inside, idx + np.arange(C)[:, None] * Lmax, C * Lmax)
        counts = np.bincount(flat.reshape(-1), minlength=C * Lmax + 1)[: C * Lmax].reshape(C, Lmax)
        n = kt.shape[1]
        esc = np.maximum((~inside).sum(axis=1) / n, escape_floor) * n
        return cls.from_pmf(counts.astype(np.float64), lo, tsize, esc, offsets=offsets, precision=precision)

    # ------------------------------------------------------------------ cached derived tables
    @functools.cached_property
    def _starts(self) -> np.ndarray:
        lengths = self.table_size.astype(np.int64) + 1
        return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    @functools.cached_property
    def _models(self) -> list:
        return ans.channel_models(self.freqs, self._starts, self.table_size.astype(np.int64) + 1, self.precision)

    @functools.cached_property
    def _cost_table(self) -> np.ndarray:
        """float64 (C, Lmax + 1): -log2(freq / 2**precision), escape at column table_size[c]."""
        lengths = self.table_size.astype(np.int64) + 1
        Lmax = int(lengths.max())
        out = np.zeros((self.channels, Lmax))
        cols = np.arange(Lmax)[None, :]
        valid = cols < lengths[:, None]
        out[valid] = self.precision - np.log2(self.freqs.astype(np.float64))
        return out

    # ------------------------------------------------------------------ quantization
    def _check_channels(self, shape: tuple[int, ...], what: str) -> None:
        if len(shape) < 2 or shape[1] != self.channels:
            raise CodecError(
                f"{what} must have shape (N, {self.channels}, *) with channels on axis 1, got {shape}"
            )

    _check_shape = _check_channels

    def quantize(self, y: Any) -> np.ndarray:
        """``k = round(y - offsets)`` (half to even, like ``torch.round``), int32, same shape.

        Args:
            y: float (N, C, *) numpy array or torch tensor. float32 input is computed in float32
                (bit-identical to an eval-mode bottleneck).

        Raises:
            CodecError: wrong channel count, non-finite values, or values beyond int32.
        """
        y = _to_numpy(y)
        self._check_channels(y.shape, "y")
        if not np.issubdtype(y.dtype, np.floating):
            y = y.astype(np.float64)
        off = self.offsets.astype(y.dtype).reshape((1, -1) + (1,) * (y.ndim - 2))
        return rounded_to_int32(np.round(y - off))

    # ------------------------------------------------------------------ coding
    def _symbols_ct(self, k: Any, subtract_min: bool = False) -> tuple[np.ndarray, tuple[int, ...]]:
        """A fresh C-contiguous int32 (C, M) copy of k (N, C, *) and k's shape.

        With ``subtract_min`` the copy holds ``k - table_min`` (int32 wraparound; see
        :func:`featcomp.entropy.layouts.find_escapes`). The transpose is done in blocks of rows that fit in cache,
        fused with the subtraction (one pass over the data).
        """
        k = _to_numpy(k)
        self._check_channels(k.shape, "k")
        if not np.issubdtype(k.dtype, np.integer):
            raise CodecError(f"symbols must be integers, got dtype {k.dtype}; use compress() for floats")
        if k.dtype.itemsize > 4 or k.dtype == np.uint32:
            if k.size and (k.min() < _I32.min or k.max() > _I32.max):
                raise CodecError("symbols exceed the int32 range")
            k = k.astype(np.int32)
        shape = tuple(int(s) for s in k.shape)
        C, N = self.channels, shape[0]
        R = math.prod(shape[2:])
        k3 = k.reshape(N, C, R)
        kt = np.empty((C, N, R), np.int32)
        B = max(1, _BLOCK_ELEMENTS // max(1, C * R))  # rows per block: ~64 KiB in, fits in L2
        if subtract_min:
            # (integer array arithmetic wraps silently in numpy: no errstate needed)
            sub = self.table_min[:, None, None]
            for i in range(0, N, B):
                np.subtract(k3[i : i + B].transpose(1, 0, 2), sub, out=kt[:, i : i + B], casting="unsafe")
        else:
            for i in range(0, N, B):
                kt[:, i : i + B] = k3[i : i + B].transpose(1, 0, 2)
        return kt.reshape(C, N * R), shape

    def _from_ct(self, idx: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """(C, M) int32 table indices -> (N, C, *) int32 values (blocked transpose + table_min)."""
        C, N = self.channels, shape[0]
        R = math.prod(shape[2:])
        src = idx.reshape(C, N, R)
        out = np.empty((N, C, R), np.int32)
        lo = self.table_min[None, :, None]
        B = max(1, _BLOCK_ELEMENTS // max(1, C * R))  # rows per block: ~64 KiB, fits in L2
        for i in range(0, N, B):
            np.add(src[:, i : i + B].transpose(1, 0, 2), lo, out=out[i : i + B])
        return out.reshape(shape)

    def compress_symbols(self, k: Any) -> bytes:
        """Entropy-code integer symbols exactly (any int32 value; out-of-table ones are escaped).

        Args:
            k: int (N, C, *) numpy array or torch tensor; N may be 0.

        Returns:
            A self-checking stream (format version 2): header (magic, version/ndim byte, shape,
            CRC32 over this codec's digest, the header and the payload) + ANS payload; see
            ``docs/entropy.md``.
        """
        payload, shape = self._encode_payload(k)
        return bitstream.pack(shape, self.digest, payload)

    def _encode_payload(self, k: Any) -> tuple[bytes, tuple[int, ...]]:
        """The ANS words of :meth:`compress_symbols` without the framing, and the array's shape (for
        codecs that embed a factorized payload in their own streams)."""
        kt, shape = self._symbols_ct(k, subtract_min=True)
        if kt.size > _MAX_ELEMENTS:
            raise CodecError(f"array of shape {shape} is too large for one stream; split it")
        return (layouts.encode_channels(kt, self._models, self.table_min, self.table_size) if kt.size else b""), shape

    def decompress_symbols(self, data: bytes) -> np.ndarray:
        """Decode a stream written by :meth:`compress_symbols` of *this* codec.

        Returns:
            int32 array of the coded shape, equal to the input element for element.

        Raises:
            CodecError: not a featcomp stream, another codec's stream (version 2: the CRC32, which
                covers the codec digest; version 1: the digest prefix), truncated or corrupted
                (CRC32, or the decoder's own end check). Streams of format versions 1 and 2 decode.
        """
        h = self._unpack(data)
        return self._decode_payload(h.payload, h.shape)

    def _decode_payload(self, payload: bytes, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`_encode_payload`: int32 ``shape`` from the ANS words (shape checked by the caller)."""
        numel = math.prod(shape)
        if numel == 0:
            if payload:
                raise CodecError("corrupt stream: an empty array with a non-empty payload")
            return np.zeros(shape, np.int32)
        M = numel // self.channels
        idx, rows, cols, vals = layouts.decode_channels(payload, self.channels, M, self._models, self.table_min,
                                                        self.table_size)
        out = self._from_ct(idx, shape)
        if rows.size:
            R = M // shape[0]
            n, r = np.divmod(cols, R)
            out.reshape(shape[0], self.channels, R)[n, rows, r] = vals
        return out

    def estimate_bits(self, k: Any) -> float:
        """The tables' ideal cost of ``k`` in bits (escapes included; header not included).

        In-table values cost ``-log2(freq / 2**precision)``; an escaped value costs the escape
        symbol plus ``log2(66) + bit_length(d) - 1`` bits (see :mod:`featcomp.entropy.layouts`).
        The coded payload is within the ANS flush (<= 64 bits) of this.
        """
        kt, _ = self._symbols_ct(k)
        if kt.size == 0:
            return 0.0
        return float(self._element_bits(kt).sum())

    def example_bits(self, k: Any) -> np.ndarray:
        """float64 (N,) the tables' ideal cost of each example ``k[i]`` (same rule as :meth:`estimate_bits`,
        whose total this splits; used by per-frame rate control)."""
        kt, shape = self._symbols_ct(k)
        if shape[0] == 0:
            return np.zeros(0)
        return self._element_bits(kt).reshape(self.channels, shape[0], -1).sum(axis=(0, 2))

    def _element_bits(self, kt: np.ndarray) -> np.ndarray:
        """float64 (C, M) ideal cost of each symbol of a (C, M) array (escapes included)."""
        lo = self.table_min.astype(np.int64)[:, None]
        size = self.table_size.astype(np.int64)[:, None]
        idx = kt.astype(np.int64) - lo
        esc = (idx < 0) | (idx >= size)
        idx = np.where(esc, size, idx)
        bits = np.take_along_axis(self._cost_table, idx, axis=1)
        if esc.any():
            v = kt[esc].astype(np.int64)
            rows = np.nonzero(esc)[0]
            lo_e = lo[rows, 0]
            hi_e = lo_e + size[rows, 0] - 1
            d = np.where(v > hi_e, v - hi_e, lo_e - v)
            nb = np.frexp(d.astype(np.float64))[1]
            bits[esc] += math.log2(layouts.ESCAPE_HEADER_SIZE) + (nb - 1)
        return bits

"""Indexed integer table families: many zero-centred discrete densities, chosen per symbol by index.

A conditional entropy model (temporal context, scale hyperprior) predicts, for every symbol, a
*location* and a *scale*. Evaluating a density at decode time from those floats would make decoding
depend on the machine's floating point; instead (as the indexed entropy models of
tensorflow-compression do) the model picks, with an **integer** index, one of a fixed set of integer
tables that were built **once**, when the codec was frozen, and stored with it.

Family layout
-------------
A :class:`TableFamily` holds ``S * Q`` tables, all of the same length ``n = 2 * radius + 2``:

* table ``t = s * Q + q`` is the discretized density ``p(x - q / Q)`` of scale ``scales[s]``
  (a log grid), shifted by the fractional location ``q / Q`` (``Q`` sub-integer offsets, so that a
  predicted location need not be rounded to an integer; ``Q`` is a power of two);
* column ``j < n - 1`` is the residual ``r = j - radius``, i.e. ``P(r) = F(r + 1/2 - q/Q) -
  F(r - 1/2 - q/Q)`` with ``F`` the CDF of a zero-centred Laplace (or Gaussian / logistic) of that
  scale; the last column is the escape symbol (mass of everything outside ``[-radius, radius]``);
* every frequency is an integer ``>= 1`` and every row sums to exactly ``2**precision``
  (``precision <= 16``), made by :func:`featcomp.entropy.codec.quantize_pmf`.

Residuals outside ``[-radius, radius]`` are coded as the escape symbol followed by their exact value
(:func:`featcomp.entropy.coder.push_escapes`), so nothing is ever clipped.

Determinism guarantee: the floats (the density evaluated on the grid) are used only in
:meth:`TableFamily.build`; the result is a uint16 integer array, hashed into :attr:`TableFamily.digest`
and serialized as integers. Coding uses only those integers, embedded exactly into constriction
(see :mod:`featcomp.entropy.coder`), so a table index decodes the same way on any machine.
This module imports numpy and constriction only.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import math
import struct
from typing import Any

import numpy as np

from featcomp.entropy import coder
from featcomp.entropy.codec import quantize_pmf
from featcomp.errors import CodecError

__all__ = ["TableFamily", "SHAPES", "scale_grid"]

SHAPES = ("laplace", "gaussian", "logistic")
_SHAPE_ID = {s: i for i, s in enumerate(SHAPES)}
_MAGIC = b"FCTF"
_VERSION = 1


def scale_grid(scale_min: float, scale_max: float, levels: int) -> np.ndarray:
    """float64 (levels,) log-spaced scales ``scale_min * (scale_max / scale_min) ** (i / (levels - 1))``."""
    if not (0 < scale_min < scale_max) or levels < 2:
        raise CodecError(f"need 0 < scale_min < scale_max and levels >= 2, got {scale_min}, {scale_max}, {levels}")
    return scale_min * np.exp(np.arange(levels) * (math.log(scale_max / scale_min) / (levels - 1)))


def _cdf(shape: str, x: np.ndarray) -> np.ndarray:
    """CDF of the zero-centred unit-scale density ``shape`` (float64, only used at build time)."""
    if shape == "laplace":
        return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0)), 1.0 - 0.5 * np.exp(-np.maximum(x, 0)))
    if shape == "gaussian":
        from math import erf

        return 0.5 * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))
    if shape == "logistic":
        return 1.0 / (1.0 + np.exp(-x))
    raise CodecError(f"unknown density shape {shape!r}; use one of {SHAPES}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class TableFamily:
    """Immutable family of ``S * Q`` integer tables, one row per (scale index, fractional offset).

    Build with :meth:`build` (float density evaluated once) or :meth:`from_dict`/:meth:`from_bytes`.

    Attributes:
        freqs: uint16 (S * Q, n) integer frequencies, each >= 1, rows summing to ``2**precision``;
            column ``j`` is residual ``j - radius``, the last column the escape.
        scales: float64 (S,) the scale of each index (documentation and training only: never used
            to code).
        Q: number of fractional location offsets (power of two, 1..16).
        radius: R, the largest in-table ``|residual|``.
        precision: table bits (2..16).
        shape: the density family name (``"laplace"``, ``"gaussian"``, ``"logistic"``).
        levels: S (derived). digest: sha256 hex of the canonical bytes (derived).
    """

    freqs: np.ndarray
    scales: np.ndarray
    Q: int
    radius: int
    precision: int = 16
    shape: str = "laplace"
    levels: int = dataclasses.field(init=False)
    digest: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        p, Q, R = int(self.precision), int(self.Q), int(self.radius)
        if not 2 <= p <= 16:
            raise CodecError(f"table precision must be in [2, 16], got {p}")
        if Q < 1 or Q > 16 or Q & (Q - 1):
            raise CodecError(f"Q must be a power of two in [1, 16], got {Q}")
        scales = np.asarray(self.scales, np.float64).reshape(-1)
        S = scales.size
        n = 2 * R + 2
        if R < 0 or n > (1 << p):
            raise CodecError(f"radius {R} needs {n} symbols, more than 2**{p}")
        f = np.asarray(self.freqs)
        if f.shape != (S * Q, n):
            raise CodecError(f"freqs must have shape {(S * Q, n)}, got {f.shape}")
        f64 = f.astype(np.int64)
        if (f64 < 1).any() or (f64.sum(axis=1) != (1 << p)).any():
            raise CodecError(f"every frequency must be >= 1 and every row must sum to 2**{p}")
        if self.shape not in _SHAPE_ID:
            raise CodecError(f"unknown density shape {self.shape!r}")
        set_("precision", p)
        set_("Q", Q)
        set_("radius", R)
        set_("freqs", _readonly(f64.astype(np.uint16)))
        set_("scales", _readonly(scales))
        set_("levels", int(S))
        set_("digest", hashlib.sha256(self._body()).hexdigest())

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        scales: np.ndarray,
        *,
        Q: int = 4,
        radius: int = 48,
        precision: int = 16,
        shape: str = "laplace",
    ) -> TableFamily:
        """Discretize ``shape`` at each scale and fractional offset (float64, once) into integer tables.

        Args:
            scales: float (S,) positive scales (e.g. :func:`scale_grid`).
            Q: fractional offsets per unit (location resolution ``1/Q``).
            radius: in-table residuals are ``[-radius, radius]``; others escape.
            precision: table bits (<= 16).
            shape: ``"laplace"`` (default; heavy tails suit prediction residuals), ``"gaussian"`` or
                ``"logistic"``.
        """
        scales = np.asarray(scales, np.float64).reshape(-1)
        if (scales <= 0).any() or not np.isfinite(scales).all():
            raise CodecError("scales must be positive and finite")
        R = int(radius)
        r = np.arange(-R, R + 1, dtype=np.float64)
        frac = np.arange(Q, dtype=np.float64) / Q
        # (S, Q, n-1): CDF differences; computed on the side of the mode for accuracy in the tails
        x = r[None, None, :] - frac[None, :, None]
        sc = scales[:, None, None]
        hi, lo = (x + 0.5) / sc, (x - 0.5) / sc
        upper = x > 0
        pmf = np.where(upper, _cdf(shape, -lo) - _cdf(shape, -hi), _cdf(shape, hi) - _cdf(shape, lo))
        pmf = np.maximum(pmf, 0.0).reshape(-1, 2 * R + 1)
        escape = np.maximum(1.0 - pmf.sum(axis=1), 0.0)
        full = np.concatenate([pmf, escape[:, None]], axis=1)
        n = full.shape[1]
        freqs = quantize_pmf(full, np.full(full.shape[0], n), int(precision))
        return cls(freqs, scales, Q, R, int(precision), shape)

    # ------------------------------------------------------------------ identity and serialization
    def __eq__(self, other: object) -> bool:
        return isinstance(other, TableFamily) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        return (
            f"TableFamily(levels={self.levels}, Q={self.Q}, radius={self.radius}, shape={self.shape!r}, "
            f"precision={self.precision}, digest={self.digest[:12]}...)"
        )

    @property
    def n(self) -> int:
        """Symbols per table (``2 * radius + 2``, escape included)."""
        return 2 * self.radius + 2

    def _body(self) -> bytes:
        head = _MAGIC + struct.pack(
            "<BBBBIH", _VERSION, self.precision, _SHAPE_ID[self.shape], self.Q, self.levels, self.radius
        )
        return head + self.scales.astype("<f8").tobytes() + self.freqs.astype("<u2").tobytes()

    def to_bytes(self) -> bytes:
        """Canonical bytes (magic, version, precision, shape id, Q, S, radius, scales f64, freqs u16) + sha256."""
        body = self._body()
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> TableFamily:
        """Inverse of :meth:`to_bytes`. Raises :class:`CodecError` on bad magic/version/digest/length."""
        data = bytes(data)
        hs = struct.calcsize("<BBBBIH")
        if len(data) < 4 + hs + 32 or data[:4] != _MAGIC:
            raise CodecError("not a featcomp TableFamily (bad magic or too short)")
        body, dig = data[:-32], data[-32:]
        if hashlib.sha256(body).digest() != dig:
            raise CodecError("corrupt TableFamily bytes: sha256 mismatch")
        version, p, sid, Q, S, R = struct.unpack_from("<BBBBIH", body, 4)
        if version != _VERSION:
            raise CodecError(f"unknown TableFamily version {version}; upgrade featcomp")
        pos = 4 + hs
        n = 2 * R + 2
        if len(body) != pos + 8 * S + 2 * S * Q * n or sid >= len(SHAPES):
            raise CodecError("TableFamily bytes have the wrong length")
        scales = np.frombuffer(body, "<f8", S, pos)
        freqs = np.frombuffer(body, "<u2", S * Q * n, pos + 8 * S).reshape(S * Q, n)
        return cls(freqs, scales, Q, R, p, SHAPES[sid])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (the canonical bytes in base64, plus the digest)."""
        return {"format": "featcomp.entropy.TableFamily", "digest": self.digest,
                "bytes_b64": base64.b64encode(self.to_bytes()).decode("ascii")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableFamily:
        """Inverse of :meth:`to_dict`; checks the digest. Raises :class:`CodecError`."""
        try:
            fam = cls.from_bytes(base64.b64decode(d["bytes_b64"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CodecError(f"invalid TableFamily dict: {e!r}") from None
        if d.get("digest", fam.digest) != fam.digest:
            raise CodecError("TableFamily dict digest does not match its tables")
        return fam

    # ------------------------------------------------------------------ coding helpers
    @functools.cached_property
    def weights(self) -> np.ndarray:
        """float64 (S * Q, n) constriction weights that reproduce the integer tables exactly
        (:func:`featcomp.entropy.coder.family_weights`); derived from the integers only."""
        return coder.family_weights(self.freqs, self.precision)

    @functools.cached_property
    def cost_bits(self) -> np.ndarray:
        """float64 (S * Q, n) ``-log2(freq / 2**precision)``, for rate estimates only."""
        return self.precision - np.log2(self.freqs.astype(np.float64))

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
  (``precision <= 16``), made by :func:`featcomp.entropy.tables.quantize_pmf`.

Residuals outside ``[-radius, radius]`` are coded as the escape symbol followed by their exact value
(:func:`featcomp.entropy.layouts.push_escapes`), so nothing is ever clipped.

Determinism guarantee: the floats (the density evaluated on the grid) are used only in
:meth:`TableFamily.build`; the result is a uint16 integer array, hashed into :attr:`TableFamily.digest`
and serialized as integers. Coding uses only those integers, embedded exactly into constriction
(see :mod:`featcomp.entropy.ans`), so a table index decodes the same way on any machine.
This module imports numpy only (and :mod:`featcomp.entropy.ans` for the coder's view of the tables).
The stream layouts that code with these tables live in :mod:`featcomp.entropy.layouts`.
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

from featcomp.entropy import ans
from featcomp.entropy.tables import quantize_pmf
from featcomp.errors import CodecError

__all__ = ["TableFamily", "SHAPES", "scale_grid", "class_radii", "TruncatedTables", "truncated_tables", "reclaimed_tables",
           "tail_tables", "zigzag", "zigzag_columns", "unzigzag_table"]

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
        (:func:`featcomp.entropy.ans.weights`); derived from the integers only."""
        return ans.weights(self.freqs, self.precision)

    @functools.cached_property
    def cost_bits(self) -> np.ndarray:
        """float64 (S * Q, n) ``-log2(freq / 2**precision)``, for rate estimates only."""
        return self.precision - np.log2(self.freqs.astype(np.float64))


# ---------------------------------------------------------------------------------------------------
# Truncated tables by width class (additive: the family, its bytes and its digest are unchanged).
#
# Decoding with constriction's per-symbol categorical costs about linear time in the row width n
# (measured, constriction 0.5: ~15 ns/symbol at n = 8..16, ~22 at 32, ~50 at 64, ~80 at 98, plus
# the gather of the rows), while a small-scale table carries almost all its mass in a few central
# residuals: its outer columns are mostly the frequency floor (1 each). A *truncated* table keeps the
# residuals ``[-r, r]`` of a row and folds every outer column into the escape symbol, so it is
# again an exact integer table summing to ``2**precision``; residuals beyond ``r`` are coded as
# escapes (exact values, :func:`featcomp.entropy.layouts.push_escapes`).
#
# ``r`` comes from a small set of *width classes* (``class_radii``: 1, 3, 7, 15, ... below the
# family radius R, then R; widths ``2r + 2`` = 4, 8, 16, 32, ...): row t's class is the narrowest
# whose folded mass (the row's frequencies at ``|residual| > r``, escape excluded) is at most
# ``2**precision >> tail_shift``. Integer sums and comparisons only, so every machine derives the
# same classes and tables from the stored integers.
#
# *Reclaimed* tables (:func:`reclaimed_tables`, the hyperprior's layout 2) also remove the frequency
# floor: a family row has every entry >= 1, so at the smallest scales its 2R + 1 outer entries are
# nothing but floors (a zero at scale 0.04, radius 48, 16 bits costs 0.0021 bits for them). A
# truncated row folds those floors into its escape, which keeps them; a reclaimed row gives the
# escape only what the folded columns hold *above* their floors, plus the family escape's own
# frequency, and adds the 2 * (R - r) freed units to its largest kept entry. The class rule counts
# the same excess mass (folded frequencies minus their floors).


def class_radii(radius: int) -> np.ndarray:
    """int64 (K,) the width-class radii of a family of radius R: ``2**j - 1`` below R, then R."""
    out, r = [], 1
    while r < radius:
        out.append(r)
        r = 2 * r + 1
    out.append(int(radius))
    return np.array(out, np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class TruncatedTables:
    """A family's rows truncated by width class (derived from the integers only; never stored).

    Attributes:
        radii: int64 (K,) class radii. row_class: uint8 (S * Q,) each row's class.
        freqs: K uint16 arrays (S * Q, 2 * radii[c] + 2): **every** row truncated to class c's
            radius (only rows of class c are used with it), escape last.
        weights: K float32 arrays of the same shapes, ``f * 2**(24 - precision) - 1`` (exact in
            float32: integers below 2**24; constriction then reproduces ``freqs`` bit for bit), with
            the columns in **zigzag order** (:func:`zigzag_columns`): symbol ``i`` is residual
            ``unzigzag(i)`` = 0, -1, 1, -2, 2, ..., then the escape. constriction finds a decoded
            symbol by scanning the row from its start, so the likely (central) residuals first
            make decoding 1.3-2x faster; the probabilities, and so the bits, are the same.
        tail_shift: the folding bound ``2**precision >> tail_shift``.
        tails: K entries: None for a class of radius R, else int64 (S * Q, 2 * (R - r) + 1) *tail
            tables* in 24-bit units (each >= 1, each row summing to ``2**24``): the folded columns
            (residuals ``-R .. -r-1``, then ``r+1 .. R``, then the family's escape) with the
            family's frequencies rescaled by :func:`tail_tables` (integers only). An escape of a
            truncated table is followed by one tail symbol, so a folded residual costs about what
            it cost in the full row; only the tail symbol "escape" goes on to the exact escape
            format (beyond R).
        tail_weights: the same as float32 constriction weights ``h - 1`` (exact: below 2**24).
        reclaimed: False for :func:`truncated_tables`; True for :func:`reclaimed_tables`, whose
            class rule and escape column count the folded mass above the frequency floor only (the
            freed floors go to each row's largest kept entry; the tails are the same).
    """

    radii: np.ndarray
    row_class: np.ndarray
    freqs: tuple
    weights: tuple
    tail_shift: int
    tails: tuple
    tail_weights: tuple
    reclaimed: bool = False
    _models: dict = dataclasses.field(default_factory=dict, repr=False)

    def models(self) -> list:
        """One fixed constriction ``Categorical`` per row, of the row's own class (built once, lazily).

        Each reproduces the row's truncated integer table exactly (the 1-D embedding of
        :func:`featcomp.entropy.ans.channel_models`), so a run of symbols of one table decodes with
        it exactly as with per-symbol rows (:func:`featcomp.entropy.ans.check_rows_backend`).
        """
        got = self._models.get("all")
        if got is None:
            ans.check_rows_backend()
            cls = self.row_class.tolist()
            got = [ans.fixed_model(self.weights[c][t]) for t, c in enumerate(cls)]
            self._models["all"] = got
        return got


@functools.lru_cache(maxsize=32)
def truncated_tables(family: TableFamily, tail_shift: int) -> TruncatedTables:
    """The :class:`TruncatedTables` of ``family`` (cached per family digest and ``tail_shift``)."""
    return _class_tables(family, int(tail_shift), reclaim=False)


@functools.lru_cache(maxsize=32)
def reclaimed_tables(family: TableFamily, tail_shift: int) -> TruncatedTables:
    """Truncated tables without the folded frequency floors (cached per family and ``tail_shift``).

    Row t of class radius r (``m = 2 * (R - r)`` folded residual columns, every one >= 1):

    * class: the narrowest whose folded *excess* ``sum(f[|res| > r]) - m`` is at most
      ``2**precision >> tail_shift`` (the class of radius R folds nothing and always qualifies);
    * escape: ``f[escape] + sum(f[|res| > r]) - m`` (>= the family escape's frequency >= 1);
    * kept residuals ``[-r, r]`` as in the family, plus ``m`` on the largest of them (the first on
      ties): the row still sums to ``2**precision``.

    Integer sums, comparisons and one argmax on the stored integers: every machine derives the same
    rows. At scale 0.04 (radius 48, 16 bits) a zero then costs ``-log2(1 - 3 / 2**16)`` = 6.6e-5 bits
    instead of 0.0021. The tail tables are those of :func:`truncated_tables` (the folded columns
    with their floors, so an escaped residual can still be any value).
    """
    return _class_tables(family, int(tail_shift), reclaim=True)


def _class_tables(family: TableFamily, tail_shift: int, *, reclaim: bool) -> TruncatedTables:
    R, p = family.radius, family.precision
    f = family.freqs.astype(np.int64)
    radii = class_radii(R)
    absres = np.abs(np.arange(-R, R + 1))
    limit = (1 << p) >> int(tail_shift)
    tails = np.stack([(f[:, :-1] * (absres > r)).sum(axis=1) for r in radii.tolist()], axis=1)  # (rows, K)
    floors = 2 * (R - radii) if reclaim else np.zeros_like(radii)  # the folded columns' floors, per class
    row_class = np.argmax(tails - floors <= limit, axis=1).astype(np.uint8)  # the last class folds nothing
    freqs, weights = [], []
    rows = np.arange(f.shape[0])
    for c, r in enumerate(radii.tolist()):
        t = np.concatenate([f[:, R - r : R + r + 1], (f[:, -1] + tails[:, c] - floors[c])[:, None]], axis=1)
        if reclaim:
            t[rows, np.argmax(t[:, :-1], axis=1)] += floors[c]
        freqs.append(_readonly(t.astype(np.uint16)))
        w = (t.astype(np.float64) * 2.0 ** (ans.ANS_PRECISION - p) - 1.0).astype(np.float32)
        weights.append(_readonly(w[:, zigzag_columns(r)]))
    tails = tuple(None if r == R else _readonly(tail_tables(f, R, r)) for r in radii.tolist())
    _check_float32_family()
    tail_w = tuple(None if h is None else _readonly((h - 1).astype(np.float32)) for h in tails)
    return TruncatedTables(_readonly(radii), _readonly(row_class), tuple(freqs), tuple(weights), int(tail_shift),
                           tails, tail_w, bool(reclaim))


def zigzag_columns(r: int) -> np.ndarray:
    """int64 (2r + 2,) natural columns (residual ``j - r``, escape last) in zigzag order:
    residuals 0, -1, 1, -2, 2, ..., -r, r, then the escape (column ``2r + 1``)."""
    out = [r]
    for d in range(1, r + 1):
        out += [r - d, r + d]
    return np.array(out + [2 * r + 1], np.int64)


def zigzag(v: np.ndarray) -> np.ndarray:
    """Symbol index of residuals ``v`` in zigzag order: ``2|v| - (v < 0)`` (0, -1, 1, -2 -> 0, 1, 2, 3)."""
    v = np.asarray(v)
    return 2 * np.abs(v) - (v < 0)


def unzigzag_table(radius: int) -> np.ndarray:
    """int64 (2 * radius + 2,) residual of each zigzag symbol ``0 .. 2R + 1``: ``(i >> 1) ^ -(i & 1)``.

    Symbol ``2r + 1`` (the escape of class radius r) maps to ``-(r + 1)``, one below the class's
    range, so a decoder finds escapes as residuals ``< -r``."""
    i = np.arange(2 * radius + 2, dtype=np.int64)
    return (i >> 1) ^ -(i & 1)


def tail_tables(freqs: np.ndarray, radius: int, r: int) -> np.ndarray:
    """int64 (rows, 2 * (radius - r) + 1) tables summing to exactly ``2**24``, each entry >= 1.

    Row i holds ``freqs[i]``'s columns of residuals ``-radius .. -r-1``, ``r+1 .. radius`` and the
    escape, rescaled to ``2**24`` with integers only: ``h = max(1, g * 2**24 // sum(g))``, then the
    remainder added to (or, when negative, taken from) the row's largest entry (the first on ties).

    Raises:
        CodecError: a row cannot be made (more than ~4000 columns: never for a TableFamily in practice).
    """
    f = np.asarray(freqs).astype(np.int64)
    R = int(radius)
    g = np.concatenate([f[:, : R - r], f[:, R + r + 1 : -1], f[:, -1:]], axis=1)
    total = g.sum(axis=1, keepdims=True)
    h = np.maximum((g << 24) // total, 1)
    big = np.argmax(h, axis=1)
    rows = np.arange(h.shape[0])
    h[rows, big] += (1 << 24) - h.sum(axis=1)
    if (h[rows, big] < 1).any():
        raise CodecError("table family too wide for truncated tail tables")
    return h


def _check_float32_family() -> None:
    """float32 rows code like float64 ones (:func:`featcomp.entropy.ans.check_float32_rows`)."""
    ans.check_float32_rows()


_MOVED = {"push_class_escapes", "pop_class_escapes", "class_bits"}


def __getattr__(name: str) -> Any:
    """Names that moved to :mod:`featcomp.entropy.layouts` (old import paths keep working)."""
    if name in _MOVED:
        from featcomp.entropy import layouts

        if name == "pop_class_escapes":
            return _pop_class_escapes_one
        if name == "push_class_escapes":
            return _push_class_escapes_any
        return getattr(layouts, name)
    raise AttributeError(f"module 'featcomp.entropy.indexed' has no attribute {name!r}")


def _pop_class_escapes_one(dec, tt: TruncatedTables, radius: int, tab: np.ndarray, cls: np.ndarray,
                           mu: np.ndarray) -> np.ndarray:
    """The former one-stream ``pop_class_escapes``: int64 (e,) residuals ``value - mu`` of the escapes of
    one stream, given their table indices, coding classes and locations (position order)."""
    from featcomp.entropy import layouts

    e = int(tab.size)
    res = np.zeros((1, max(e, 1)), np.int64)
    if e:
        layouts.pop_class_escapes([ans.Decoder.adopt(dec)], tt, radius, res, np.arange(e), tab, cls, mu, [0])
    return res[0, :e]


def _push_class_escapes_any(enc, tt: TruncatedTables, radius: int, vals: np.ndarray, mu: np.ndarray, tab: np.ndarray,
                            cls: np.ndarray) -> None:
    """The former ``push_class_escapes`` (``enc``: an Encoder or a constriction coder)."""
    from featcomp.entropy import layouts

    layouts.push_class_escapes(ans.Encoder.adopt(enc), tt, radius, vals, mu, tab, cls)

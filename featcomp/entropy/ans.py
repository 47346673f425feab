"""The ANS stream coder: the only module of featcomp that imports constriction (numpy + constriction).

Every frozen codec codes integer symbols with integer frequency tables (``freqs`` summing to
``2**precision``, ``precision <= 16``) through this module; nothing else sees constriction's API.
It offers:

* the exact embedding of integer tables into constriction's float weights (:func:`weights`), checked
  once per process against recorded words (:func:`check_backend`, :func:`check_rows_backend`,
  :func:`check_float32_rows`);
* models: a fixed table (:func:`fixed_model`, :func:`channel_models`), per-symbol rows (the table of
  each symbol chosen by index: :func:`rows_model`), and uniform symbols (:func:`uniform_model`);
* :class:`Encoder` and :class:`Decoder`, an ANS stack (64-bit state, 32-bit words): ``push`` codes
  symbols in reverse (so that ``pop`` returns them in forward order), ``push_indexed``/``pop_indexed``
  code symbol ``i`` with table ``table[i]`` of a family, and :meth:`Decoder.pop_run_bounded` decodes a
  run of one fixed table with work bounded by the stream's real size.

The stream layouts built from these primitives (which symbol is coded with which table, in which order)
live in :mod:`featcomp.entropy.layouts`; what a model predicts (the integer context) lives with each codec.

How the exact integer tables reach constriction
-----------------------------------------------
constriction 0.5's Python API takes float probabilities and quantizes them itself to 24-bit
fixed point. With ``perfect=False`` it uses the "fast" rule: for ``n`` symbols with float weights
``p_i`` and ``S_i = p_0 + ... + p_{i-1}``, the left cumulative of symbol ``i`` is
``floor(S_i * (2**24 - n) / sum(p)) + i``. We pass ``p_i = f_i * 2**(24 - precision) - 1`` (an
integer table embedded in 24 bits, minus the one unit constriction adds back per symbol). Then
``sum(p) = 2**24 - n`` exactly, the scale is exactly 1.0, every partial sum is an integer below
``2**24`` (exact in float32 and float64), and the left cumulative is ``F_i * 2**(24 - precision)``
*exactly*: the coded model is our integer table, bit for bit, with no rounding anywhere.

This is verified three ways: :func:`check_backend` encodes a fixed sequence once per process and
compares the words with the ones recorded when this module was written (a constriction that
quantized differently would raise :class:`CodecError` rather than write incompatible streams);
``tests/entropy`` checks that coded sizes equal the integer tables' cross-entropy to within the
ANS flush overhead on rare symbols, where an off-by-one in a 24-bit weight would show; and golden
bitstreams under ``tests/fixtures/entropy`` catch any format drift. The per-symbol rows
(:func:`rows_model`, a 2-D weight array, one row per symbol) use the same rule; :func:`check_rows_backend`
ties them to the 1-D tables and :func:`check_float32_rows` float32 rows to float64 ones.

Invariant: tables are built once per codec and never recomputed from floats at decode time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import constriction

from featcomp.errors import CodecError

__all__ = [
    "ANS_PRECISION", "Encoder", "Decoder", "weights", "fixed_model", "channel_models", "rows_model", "uniform_model",
    "check_backend", "check_rows_backend", "check_float32_rows",
]

_model = constriction.stream.model
_AnsCoder = constriction.stream.stack.AnsCoder

ANS_PRECISION = 24  # constriction's fixed-point precision for Categorical models in Python
_DECODE_BLOCK = 1 << 16  # symbols per constriction call in pop_run_bounded (speed only; same symbols)
_TAIL_BLOCK = 64  # symbols per call once the coder's words are used up (speed only; same symbols)
_BACKEND_CHECKED = False
_ROWS_CHECKED = False
_F32_CHECKED = False
_ROWS_MODEL = None


# ---------------------------------------------------------------------------------------------------
# The coder


class Encoder:
    """An ANS stack encoder. Symbols pushed last are popped first: push in reverse decode order.

    ``push(symbols, model, *params)`` codes int32 ``symbols`` (m,) in reverse with ``model`` (from this
    module); for :func:`rows_model` the param is the (m, n) weight rows of the symbols' tables, for
    ``uniform_model()`` without a size the (m,) sizes. It is constriction's own method, bound once
    (no wrapper on the hot path).
    """

    __slots__ = ("_ans", "push")

    def __init__(self) -> None:
        self._ans = _AnsCoder()
        self.push = self._ans.encode_reverse

    @classmethod
    def adopt(cls, coder: Any) -> Encoder:
        """An :class:`Encoder` over ``coder``: itself if it is one, else a constriction ``AnsCoder`` made by
        older code (the compatibility names of :mod:`featcomp.entropy.coder` accept those)."""
        if isinstance(coder, cls):
            return coder
        enc = cls.__new__(cls)
        enc._ans = coder
        enc.push = coder.encode_reverse
        return enc

    def push_indexed(self, sym: np.ndarray, table: np.ndarray, weights: np.ndarray) -> None:
        """Push symbols ``sym`` int32 (m,), symbol i coded with table ``table[i]`` (rows of ``weights``,
        from :func:`weights`). Popped back in forward order by :meth:`Decoder.pop_indexed`."""
        if sym.size:
            self._ans.encode_reverse(np.ascontiguousarray(sym, dtype=np.int32), rows_model(), weights[table])

    def words(self) -> np.ndarray:
        """uint32 (W,) the compressed words so far."""
        return self._ans.get_compressed()

    def payload(self) -> bytes:
        """The ANS words as little-endian bytes (length a multiple of 4)."""
        return self._ans.get_compressed().astype("<u4", copy=False).tobytes()


class Decoder:
    """An ANS stack decoder over a payload of little-endian uint32 words.

    ``pop(model, arg)`` decodes with ``model``: ``arg`` is a count for a fixed model or a sized
    ``uniform_model(n)``, the (m, n) weight rows for :func:`rows_model`, the (m,) sizes for
    ``uniform_model()``; it returns int32 symbols in forward order. Like :attr:`Encoder.push` it is
    constriction's own method, bound once. On a payload that is not a valid stream it raises a plain
    exception (the codecs turn it into :class:`CodecError` naming the stream).
    """

    __slots__ = ("_ans", "pop")

    def __init__(self, payload: bytes | np.ndarray) -> None:
        words = payload if isinstance(payload, np.ndarray) else np.frombuffer(payload, dtype="<u4")
        words = words.astype(np.uint32)
        self._ans = _AnsCoder(words) if words.size else _AnsCoder()
        self.pop = self._ans.decode

    @classmethod
    def adopt(cls, coder: Any) -> Decoder:
        """A :class:`Decoder` over ``coder``: itself if it is one, else a constriction ``AnsCoder``."""
        if isinstance(coder, cls):
            return coder
        dec = cls.__new__(cls)
        dec._ans = coder
        dec.pop = coder.decode
        return dec

    def pop_indexed(self, table: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Pop ``len(table)`` symbols (int32) pushed by :meth:`Encoder.push_indexed` with these table indices."""
        if table.size == 0:
            return np.zeros(0, np.int32)
        return np.asarray(self._ans.decode(rows_model(), weights[table]), dtype=np.int32)

    def is_empty(self) -> bool:
        """True when every word has been consumed and the state is back to its start."""
        return self._ans.is_empty()

    def pop_run_bounded(self, model, out: np.ndarray) -> None:
        """Decode ``out.size`` symbols of one fixed ``model`` into ``out`` (int32, 1-D), in blocks, so that
        time follows the stream's real size, not the count asked for (docs/reliability.md).

        Once no word is left and the state x is below 2**24 (constriction's model precision), decoding
        symbol s maps x to x - cdf(s): the first symbol (index 0, cdf 0) leaves x unchanged, so after
        one index-0 symbol every further symbol is index 0 too, and the rest of ``out`` is filled with
        0 (``out`` must hold zeros on entry) without being decoded. Same symbols as one constriction call
        (tests/test_fuzz.py checks it).
        """
        M, a = out.size, 0
        dec = self._ans
        while a < M:
            if dec.num_valid_bits() <= ANS_PRECISION:  # the tail: a fixed point follows index 0
                b = min(M, a + _TAIL_BLOCK)
                blk = dec.decode(model, b - a)
                out[a:b] = blk
                a = b
                if not blk.all():
                    return
                continue
            b = min(M, a + _DECODE_BLOCK)
            out[a:b] = dec.decode(model, b - a)
            a = b


# ---------------------------------------------------------------------------------------------------
# Models of integer tables


def weights(freqs: np.ndarray, precision: int) -> np.ndarray:
    """float64 (K, n) read-only weights ``f * 2**(24 - precision) - 1`` of integer tables (K, n)
    that constriction reproduces exactly, as per-symbol rows (:func:`rows_model`) or one fixed table
    (:func:`fixed_model` of a row).

    Args:
        freqs: integer (K, n) tables, each entry >= 1, each row summing to ``2**precision``.
        precision: table bits (<= 16).
    """
    check_rows_backend()
    w = np.asarray(freqs).astype(np.float64) * 2.0 ** (ANS_PRECISION - precision) - 1.0
    w.flags.writeable = False
    return w


def fixed_model(w: np.ndarray):
    """One fixed model of a single table given as its weights row (:func:`weights`, float32 or float64)."""
    return _model.Categorical(np.asarray(w, np.float64), perfect=False)


def channel_models(freqs: np.ndarray, starts: np.ndarray, lengths: np.ndarray, precision: int) -> list:
    """One fixed model per channel that reproduces concatenated integer tables exactly.

    Args:
        freqs: uint32/int64 (sum(lengths),) concatenated per-channel frequencies, escape last,
            each >= 1, each channel summing to ``2**precision``.
        starts: int64 (C,) start of each channel's run in ``freqs``.
        lengths: int64 (C,) number of symbols per channel, escape included (>= 2).
        precision: bits of the integer tables (<= 16).

    Returns:
        A list of C models; build once per codec and reuse (never per call).
    """
    check_backend()
    shift = 2.0 ** (ANS_PRECISION - precision)
    w = freqs.astype(np.float64) * shift - 1.0
    return [_model.Categorical(w[s : s + n], perfect=False) for s, n in zip(starts.tolist(), lengths.tolist())]


def rows_model():
    """The per-symbol table model: pushed and popped with (m, n) weight rows, one per symbol."""
    global _ROWS_MODEL
    if _ROWS_MODEL is None:
        _ROWS_MODEL = _model.Categorical(perfect=False)
    return _ROWS_MODEL


def uniform_model(n: int | None = None):
    """Uniform symbols in ``[0, n)``, or with per-symbol sizes given at push/pop time when ``n`` is None."""
    return _model.Uniform() if n is None else _model.Uniform(int(n))


# ---------------------------------------------------------------------------------------------------
# Backend checks (once per process)


def check_backend() -> None:
    """Check once per process that constriction codes an integer table exactly as recorded.

    Raises:
        CodecError: if the installed constriction quantizes tables differently (streams would not
            be compatible with those written elsewhere).
    """
    global _BACKEND_CHECKED
    if _BACKEND_CHECKED:
        return
    freqs = np.array([3, 200, 50, 2, 1], np.float64)
    model = _model.Categorical(freqs * 2.0 ** (ANS_PRECISION - 8) - 1.0, perfect=False)
    sym = np.array([1, 1, 2, 0, 3, 4, 1, 2, 1, 1, 1, 3, 0, 4, 2, 2, 1], np.int32)
    enc = _AnsCoder()
    enc.encode_reverse(sym, model)
    words = enc.get_compressed().tolist()
    if words != [889126912, 3395069697, 3953]:
        raise CodecError(
            f"constriction {getattr(constriction, '__version__', '?')} codes integer tables "
            "differently from the version featcomp was validated with (0.5.0); streams would be "
            "incompatible. Install constriction 0.5.x."
        )
    _BACKEND_CHECKED = True


def check_rows_backend() -> None:
    """Check once per process that per-symbol 2-D tables code exactly like the 1-D exact tables.

    Raises:
        CodecError: if constriction's per-symbol categorical path quantizes differently.
    """
    global _ROWS_CHECKED
    if _ROWS_CHECKED:
        return
    check_backend()
    rng = np.random.default_rng(1234)
    tables = np.array([[3, 200, 50, 2, 1], [100, 100, 50, 5, 1], [1, 1, 1, 1, 252]], np.int64)
    w = tables.astype(np.float64) * 2.0 ** (ANS_PRECISION - 8) - 1.0
    sym = rng.integers(0, 5, 64).astype(np.int32)
    tab = rng.integers(0, 3, 64)
    a = _AnsCoder()
    a.encode_reverse(sym, _model.Categorical(perfect=False), w[tab])
    b = _AnsCoder()
    models = [_model.Categorical(w[i], perfect=False) for i in range(3)]
    for i in range(63, -1, -1):
        b.encode_reverse(sym[i : i + 1], models[int(tab[i])])
    if a.get_compressed().tolist() != b.get_compressed().tolist():
        raise CodecError(
            "constriction's per-symbol categorical models quantize integer tables differently from "
            "its per-channel models; indexed (temporal/hyperprior) streams would not be exact. "
            "Install constriction 0.5.x."
        )
    _ROWS_CHECKED = True


def check_float32_rows() -> None:
    """Once per process: float32 per-symbol rows code exactly like the float64 rows of :func:`weights`
    (which :func:`check_rows_backend` ties to the 1-D exact tables). Raises :class:`CodecError` if this
    constriction differs."""
    global _F32_CHECKED
    if _F32_CHECKED:
        return
    rng = np.random.default_rng(77)
    tables = np.array([[3, 200, 50, 2, 1], [100, 100, 50, 5, 1], [1, 1, 1, 1, 252]], np.int64) << 8
    w64 = weights(tables, 16)
    sym = rng.integers(0, 5, 64).astype(np.int32)
    tab = rng.integers(0, 3, 64)
    words = []
    for w in (w64, w64.astype(np.float32)):
        enc = Encoder()
        enc.push_indexed(sym, tab, w)
        words.append(enc.words().tolist())
    if words[0] != words[1]:
        raise CodecError("constriction codes float32 per-symbol tables differently from float64 ones; "
                         "install constriction 0.5.x")
    _F32_CHECKED = True

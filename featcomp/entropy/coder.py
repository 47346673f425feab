"""The ANS coder: integer tables + int32 symbols in, bytes out (numpy and constriction only).

This module never sees floats from a model. It receives integer frequency tables (one per channel,
``freqs`` summing to ``2**precision`` with ``precision <= 16``) and codes with constriction's
``AnsCoder`` (64-bit state, 32-bit words).

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
bitstreams under ``tests/fixtures/entropy`` catch any format drift.

Invariant: tables are built once per codec and never recomputed from floats at decode time.

Escapes
-------
Each channel's table covers ``[table_min, table_min + table_size)`` plus one escape symbol (the
last). A value outside that range is coded as the escape symbol and then, in a second stage,
exactly: ``d >= 1`` its distance beyond the nearer end, ``side`` which end, as a ``Uniform(66)``
symbol ``side * 33 + bit_length(d) - 1`` followed by the ``bit_length(d) - 1`` low bits of ``d`` in
groups of at most 16 bits, each coded with a uniform model. Nothing is ever clipped.

Stream order (decode order): channel 0's symbols, channel 1's, ..., then the escape headers, the
low bit groups, the high bit groups (the encoder pushes them in reverse, ANS being a stack).
"""

from __future__ import annotations

import numpy as np

import constriction

from featcomp.errors import CodecError

__all__ = ["ANS_PRECISION", "ESCAPE_HEADER_SIZE", "build_models", "check_backend", "find_escapes", "encode", "decode"]

_model = constriction.stream.model
_AnsCoder = constriction.stream.stack.AnsCoder

ANS_PRECISION = 24  # constriction's fixed-point precision for Categorical models in Python
ESCAPE_HEADER_SIZE = 66  # side (2) x bit_length(d) - 1 in [0, 32] (33)
_LOW_BITS = 16
_DECODE_BLOCK = 1 << 16  # symbols per constriction call in decode (speed only; same symbols)
_TAIL_BLOCK = 64  # symbols per call once the coder's words are used up (speed only; same symbols)
_BACKEND_CHECKED = False


def build_models(freqs: np.ndarray, starts: np.ndarray, lengths: np.ndarray, precision: int) -> list:
    """One constriction ``Categorical`` model per channel that reproduces the integer tables exactly.

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
    weights = freqs.astype(np.float64) * shift - 1.0
    return [
        _model.Categorical(weights[s : s + n], perfect=False)
        for s, n in zip(starts.tolist(), lengths.tolist())
    ]


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


def _bit_length(d: np.ndarray) -> np.ndarray:
    """Exact bit length of positive int64 values below 2**53 (frexp is exact there)."""
    return np.frexp(d.astype(np.float64))[1].astype(np.int64)


def find_escapes(idx: np.ndarray, table_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of out-of-table values in ``idx`` (C, M) int32 = ``k - table_min`` (wrapping).

    With tables inside ``[-2**30, 2**30]`` (enforced by EntropyCodec), the wrapped difference seen
    as uint32 is ``< table_size`` exactly for in-table values, so one unsigned comparison per
    element finds escapes; rows are screened with a max first (escapes are rare).

    Returns:
        ``(rows, cols)`` int64 arrays in row-major order (the order escapes are coded in).
    """
    u = idx.view(np.uint32)
    size = table_size.astype(np.uint32)
    hot = np.flatnonzero(u.max(axis=1) >= size)  # one cheap reduction; usually no channel is hot
    if hot.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    M = u.shape[1]
    # only the hot channels' rows are scanned; a 1-D flatnonzero is several times faster than a
    # 2-D nonzero, and flat positions of (hot rows, M) are already in row-major order
    sub = u if hot.size == u.shape[0] else u[hot]
    flat = np.flatnonzero(sub >= size[hot, None])
    r, cols = np.divmod(flat, M)
    return hot[r].astype(np.int64), cols.astype(np.int64)


def encode(
    idx: np.ndarray,
    models: list,
    table_min: np.ndarray,
    table_size: np.ndarray,
) -> bytes:
    """Entropy-code one array channel by channel.

    Args:
        idx: int32 (C, M), C-contiguous, ``k - table_min[:, None]`` computed with int32
            wraparound; **overwritten** (escapes replaced by the escape symbol).
        models: per-channel constriction models from :func:`build_models`.
        table_min: int32 (C,) smallest in-table value per channel, inside ``[-2**30, 2**30]``.
        table_size: int (C,) number of in-table values per channel (escape excluded).

    Returns:
        The ANS words as little-endian bytes (length a multiple of 4).
    """
    C, M = idx.shape
    rows, cols = find_escapes(idx, table_size)
    enc = _AnsCoder()
    if rows.size:
        # undo the wrapped subtraction for the escaped values only (int32 addition wraps back exactly)
        r_min = table_min[rows]
        esc_vals = (idx[rows, cols] + r_min).astype(np.int64)
        r_size = table_size[rows]
        idx[rows, cols] = r_size
        r_lo = r_min.astype(np.int64)
        r_hi = r_lo + r_size.astype(np.int64) - 1
        above = esc_vals > r_hi
        d = np.where(above, esc_vals - r_hi, r_lo - esc_vals)  # >= 1
        nb = _bit_length(d)  # in [1, 33]
        rem = d - (np.int64(1) << (nb - 1))  # nb - 1 bits
        mbits = nb - 1
        low_bits = np.minimum(mbits, _LOW_BITS)
        high_bits = mbits - low_bits
        has_low = low_bits > 0
        has_high = high_bits > 0
        if has_high.any():
            enc.encode_reverse(
                (rem[has_high] >> _LOW_BITS).astype(np.int32),
                _model.Uniform(),
                (np.int64(1) << high_bits[has_high]).astype(np.int32),
            )
        if has_low.any():
            enc.encode_reverse(
                (rem[has_low] & 0xFFFF).astype(np.int32),
                _model.Uniform(),
                (np.int64(1) << low_bits[has_low]).astype(np.int32),
            )
        header = (np.where(above, 0, 33) + mbits).astype(np.int32)
        enc.encode_reverse(header, _model.Uniform(ESCAPE_HEADER_SIZE))
    for c in range(C - 1, -1, -1):
        enc.encode_reverse(idx[c], models[c])
    return enc.get_compressed().astype("<u4", copy=False).tobytes()


def decode(
    payload: bytes,
    C: int,
    M: int,
    models: list,
    table_min: np.ndarray,
    table_size: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode`.

    Returns:
        ``(idx, rows, cols, values)``: idx int32 (C, M) table indices (escape positions hold the
        escape symbol; add ``table_min`` for values), and the escaped positions with their exact
        int32 values.

    Raises:
        CodecError: if the payload is not a valid stream for these tables (constriction refuses
            it, an escape decodes outside int32, or data is left over at the end).
    """
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        dec = _AnsCoder(words) if words.size else _AnsCoder()
        # Decoded in blocks, so that time follows the stream's real size, not its declared shape
        # (docs/reliability.md). Once no word is left and the state x is below 2**24 (constriction's
        # model precision), decoding symbol s maps x to x - cdf(s): the first symbol (index 0, cdf 0)
        # leaves x unchanged, so after one index-0 symbol every further symbol of the channel is index
        # 0 too, and the rest of that row stays 0 without being decoded. Same symbols as one
        # constriction call per channel (tests/test_fuzz.py checks it).
        idx = np.zeros((C, M), dtype=np.int32)
        for c in range(C):
            a = 0
            while a < M:
                if dec.num_valid_bits() <= ANS_PRECISION:  # the tail: a fixed point follows index 0
                    b = min(M, a + _TAIL_BLOCK)
                    blk = dec.decode(models[c], b - a)
                    idx[c, a:b] = blk
                    a = b
                    if not blk.all():
                        break
                    continue
                b = min(M, a + _DECODE_BLOCK)
                idx[c, a:b] = dec.decode(models[c], b - a)
                a = b
        rows, cols = find_escapes(idx, table_size)  # decoded indices are <= size; == size: escape
        vals = np.zeros(0, np.int32)
        if rows.size:
            header = dec.decode(_model.Uniform(ESCAPE_HEADER_SIZE), int(rows.size)).astype(np.int64)
            above = header < 33
            mbits = np.where(above, header, header - 33)
            low_bits = np.minimum(mbits, _LOW_BITS)
            high_bits = mbits - low_bits
            has_low = low_bits > 0
            has_high = high_bits > 0
            rem = np.zeros(rows.size, np.int64)
            if has_low.any():
                rem[has_low] = dec.decode(
                    _model.Uniform(), (np.int64(1) << low_bits[has_low]).astype(np.int32)
                )
            if has_high.any():
                rem[has_high] += (
                    dec.decode(_model.Uniform(), (np.int64(1) << high_bits[has_high]).astype(np.int32))
                    .astype(np.int64)
                    << _LOW_BITS
                )
            d = (np.int64(1) << mbits) + rem
            lo = table_min.astype(np.int64)[rows]
            hi = lo + table_size.astype(np.int64)[rows] - 1
            v = np.where(above, hi + d, lo - d)
            if (v < np.iinfo(np.int32).min).any() or (v > np.iinfo(np.int32).max).any():
                raise CodecError("corrupt stream: an escaped value decodes outside int32")
            vals = v.astype(np.int32)
        if not dec.is_empty():
            raise CodecError(
                "corrupt stream or wrong codec: data left over after decoding every symbol"
            )
    except CodecError:
        raise
    except Exception as e:  # constriction raises ValueError/AssertionError-like errors on garbage
        raise CodecError(f"corrupt stream or wrong codec: the ANS decoder failed ({e})") from None
    return idx, rows, cols, vals


# ---------------------------------------------------------------------------------------------------
# Per-symbol table choice (indexed families; used by the temporal and hyperprior codecs).
#
# These functions are additions: the per-channel ``encode``/``decode`` above and their streams are
# unchanged. The same exact embedding is used, through constriction's per-symbol model family
# ``Categorical(perfect=False)`` with a 2-D weight array (one row per symbol). With ``perfect=False``
# the per-symbol (lazy) models use the same "fast" quantization rule as the 1-D models, so each row
# reproduces its integer table exactly; :func:`check_family_backend` verifies this once per process by
# comparing the words with those of the 1-D per-channel path.

_FAMILY_CHECKED = False
_CAT_FAMILY = None


def family_weights(freqs: np.ndarray, precision: int) -> np.ndarray:
    """float64 (K, n) constriction weights ``f * 2**(24 - precision) - 1`` of integer tables (K, n).

    Args:
        freqs: integer (K, n) tables, each entry >= 1, each row summing to ``2**precision``.
        precision: table bits (<= 16).
    """
    check_family_backend()
    w = np.asarray(freqs).astype(np.float64) * 2.0 ** (ANS_PRECISION - precision) - 1.0
    w.flags.writeable = False
    return w


def _family_model():
    global _CAT_FAMILY
    if _CAT_FAMILY is None:
        _CAT_FAMILY = _model.Categorical(perfect=False)
    return _CAT_FAMILY


def check_family_backend() -> None:
    """Check once per process that per-symbol 2-D tables code exactly like the 1-D exact tables.

    Raises:
        CodecError: if constriction's per-symbol categorical path quantizes differently.
    """
    global _FAMILY_CHECKED
    if _FAMILY_CHECKED:
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
    _FAMILY_CHECKED = True


def push_indexed(enc, sym: np.ndarray, table: np.ndarray, weights: np.ndarray) -> None:
    """Push symbols ``sym`` int32 (m,), symbol i coded with table ``table[i]`` (rows of ``weights``).

    Decoded back in forward order by :func:`pop_indexed` with the same ``table``.
    """
    if sym.size:
        enc.encode_reverse(np.ascontiguousarray(sym, dtype=np.int32), _family_model(), weights[table])


def pop_indexed(dec, table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pop ``len(table)`` symbols (int32) coded by :func:`push_indexed` with these table indices."""
    if table.size == 0:
        return np.zeros(0, np.int32)
    return np.asarray(dec.decode(_family_model(), weights[table]), dtype=np.int32)


def push_escapes(enc, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Push the exact values of escaped symbols (same format as :func:`encode`'s second stage).

    Args:
        enc: a constriction ``AnsCoder``.
        vals: int64 (e,) values outside ``[lo, hi]`` (elementwise), ``|distance| < 2**33``.
        lo, hi: int64 (e,) the table range each value escaped from.
    """
    if vals.size == 0:
        return
    vals = vals.astype(np.int64)
    above = vals > hi
    d = np.where(above, vals - hi, lo - vals)
    if (d < 1).any() or (d >= (np.int64(1) << 33)).any():
        raise CodecError("escape distance out of range (values must lie outside the table, within 2**33)")
    nb = _bit_length(d)
    rem = d - (np.int64(1) << (nb - 1))
    mbits = nb - 1
    low_bits = np.minimum(mbits, _LOW_BITS)
    high_bits = mbits - low_bits
    has_low, has_high = low_bits > 0, high_bits > 0
    if has_high.any():
        enc.encode_reverse((rem[has_high] >> _LOW_BITS).astype(np.int32), _model.Uniform(),
                           (np.int64(1) << high_bits[has_high]).astype(np.int32))
    if has_low.any():
        enc.encode_reverse((rem[has_low] & 0xFFFF).astype(np.int32), _model.Uniform(),
                           (np.int64(1) << low_bits[has_low]).astype(np.int32))
    enc.encode_reverse((np.where(above, 0, 33) + mbits).astype(np.int32), _model.Uniform(ESCAPE_HEADER_SIZE))


def pop_escapes(dec, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Inverse of :func:`push_escapes`: int64 (e,) values for escapes from ranges ``[lo, hi]``."""
    e = lo.size
    if e == 0:
        return np.zeros(0, np.int64)
    header = np.asarray(dec.decode(_model.Uniform(ESCAPE_HEADER_SIZE), e), np.int64)
    above = header < 33
    mbits = np.where(above, header, header - 33)
    low_bits = np.minimum(mbits, _LOW_BITS)
    high_bits = mbits - low_bits
    has_low, has_high = low_bits > 0, high_bits > 0
    rem = np.zeros(e, np.int64)
    if has_low.any():
        rem[has_low] = dec.decode(_model.Uniform(), (np.int64(1) << low_bits[has_low]).astype(np.int32))
    if has_high.any():
        rem[has_high] += np.asarray(
            dec.decode(_model.Uniform(), (np.int64(1) << high_bits[has_high]).astype(np.int32)), np.int64
        ) << _LOW_BITS
    d = (np.int64(1) << mbits) + rem
    return np.where(above, hi.astype(np.int64) + d, lo.astype(np.int64) - d)


def escape_bits(vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Ideal cost in bits of :func:`push_escapes` for these values (escape symbols not included)."""
    if vals.size == 0:
        return 0.0
    vals = vals.astype(np.int64)
    d = np.where(vals > hi, vals - hi, lo - vals)
    return float(vals.size * np.log2(ESCAPE_HEADER_SIZE) + (_bit_length(d) - 1).sum())

"""Stream layouts: which symbol is coded with which integer table, in which order (numpy only).

A frozen codec decides *what* table each symbol gets (a channel, or an index chosen by its integer
context); a layout decides how those symbols, their escapes and any side symbols are laid out in one
ANS stream. Each layout exists once, here, and every codec kind that writes it calls it; the coder
itself (:mod:`featcomp.entropy.ans`) is the only place that touches constriction. Layouts know nothing of
codec kinds, contexts or framing (:mod:`featcomp.entropy.bitstream`).

Layouts (decode order; the encoder pushes in reverse, ANS being a stack):

* **channels** (:func:`encode_channels`, :func:`decode_channels`; the factorized
  :class:`~featcomp.entropy.EntropyCodec`): channel 0's symbols, channel 1's, ..., each with its
  channel's fixed table (escape symbol last), then the exact values of every escape
  (:func:`push_escapes`). Decoding a channel's run does work bounded by the stream's real size
  (:meth:`~featcomp.entropy.ans.Decoder.pop_run_bounded`).
* **full rows** (:func:`push_full_rows`, :func:`pop_full_rows`; temporal and hyperprior layout 1):
  frame by frame, the frame's symbols (``residual + R``, escape ``2R + 1``) each with its whole family
  row, then the frame's escapes (exact values, ranges ``mu -+ R``). The hyperprior codes one frame.
* **class rows** (:func:`push_class_rows`, :func:`pop_class_frame`; temporal and hyperprior layout 2):
  frame by frame, the symbols with rows truncated to a *coding class*
  (:func:`featcomp.entropy.indexed.truncated_tables` or :func:`~featcomp.entropy.indexed.reclaimed_tables`,
  columns in zigzag order): in a *sorted* frame by (class, table index, position), each symbol with its
  own row's class; in an unsorted frame in position order, all at the frame's widest class; then the
  frame's class escapes (:func:`push_class_escapes`: tail symbols by class then position, then exact
  values beyond the family radius). The temporal codec sorts frames of >= 256 symbols, the hyperprior
  sorts its one frame always.
* **restart flags** (:func:`push_restart_flags`, :func:`pop_restart_flags`; temporal layout 3): one
  binary symbol per frame after the first, with one fixed integer table, decoded before everything else.

Exact escapes
-------------
A value outside its table's range ``[lo, hi]`` is coded as the escape symbol and then, in a second
stage, exactly: ``d >= 1`` its distance beyond the nearer end, ``side`` which end, as a ``Uniform(66)``
symbol ``side * 33 + bit_length(d) - 1`` followed by the ``bit_length(d) - 1`` low bits of ``d`` in
groups of at most 16 bits, each coded with a uniform model (decode order: the headers, the low bit
groups, the high bit groups). Nothing is ever clipped.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from featcomp.entropy import ans
from featcomp.entropy.indexed import TableFamily, TruncatedTables, unzigzag_table, zigzag
from featcomp.errors import CodecError

__all__ = [
    "ESCAPE_HEADER_SIZE", "push_escapes", "pop_escapes", "escape_bits", "find_escapes", "encode_channels",
    "decode_channels", "push_full_rows", "pop_full_rows", "ClassRows", "class_rows", "push_class_rows",
    "pop_class_frame", "pop_sorted", "push_class_escapes", "pop_class_escapes", "class_bits",
    "RESTART_FLAG_BITS", "push_restart_flags", "pop_restart_flags", "restart_flag_model",
]

ESCAPE_HEADER_SIZE = 66  # side (2) x bit_length(d) - 1 in [0, 32] (33)
_LOW_BITS = 16
_I32 = np.iinfo(np.int32)
_amin, _amax = np.minimum.reduce, np.maximum.reduce  # whole-array reductions without ndarray.min's wrappers

#: the decoder's failure hook of the multi-stream layouts: ``fail(j, what, error)`` returns the
#: exception (naming stream ``j``) to raise
Fail = Callable[[int, str, Exception], Exception]


# ---------------------------------------------------------------------------------------------------
# Exact escapes (every layout)


def _bit_length(d: np.ndarray) -> np.ndarray:
    """Exact bit length of positive int64 values below 2**53 (frexp is exact there)."""
    return np.frexp(d.astype(np.float64))[1].astype(np.int64)


def push_escapes(enc: ans.Encoder, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Push the exact values of escaped symbols (format: the module docstring).

    Args:
        enc: the stream's encoder.
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
    uniform = ans.uniform_model()
    if has_high.any():
        enc.push((rem[has_high] >> _LOW_BITS).astype(np.int32), uniform,
                 (np.int64(1) << high_bits[has_high]).astype(np.int32))
    if has_low.any():
        enc.push((rem[has_low] & 0xFFFF).astype(np.int32), uniform, (np.int64(1) << low_bits[has_low]).astype(np.int32))
    enc.push((np.where(above, 0, 33) + mbits).astype(np.int32), ans.uniform_model(ESCAPE_HEADER_SIZE))


def pop_escapes(dec: ans.Decoder, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Inverse of :func:`push_escapes`: int64 (e,) values for escapes from ranges ``[lo, hi]``."""
    e = lo.size
    if e == 0:
        return np.zeros(0, np.int64)
    header = np.asarray(dec.pop(ans.uniform_model(ESCAPE_HEADER_SIZE), e), np.int64)
    above = header < 33
    mbits = np.where(above, header, header - 33)
    low_bits = np.minimum(mbits, _LOW_BITS)
    high_bits = mbits - low_bits
    has_low, has_high = low_bits > 0, high_bits > 0
    rem = np.zeros(e, np.int64)
    uniform = ans.uniform_model()
    if has_low.any():
        rem[has_low] = dec.pop(uniform, (np.int64(1) << low_bits[has_low]).astype(np.int32))
    if has_high.any():
        rem[has_high] += np.asarray(
            dec.pop(uniform, (np.int64(1) << high_bits[has_high]).astype(np.int32)), np.int64
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


# ---------------------------------------------------------------------------------------------------
# Layout "channels" (factorized)


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


def encode_channels(idx: np.ndarray, models: list, table_min: np.ndarray, table_size: np.ndarray) -> bytes:
    """Entropy-code one array channel by channel, then its escapes.

    Args:
        idx: int32 (C, M), C-contiguous, ``k - table_min[:, None]`` computed with int32
            wraparound; **overwritten** (escapes replaced by the escape symbol).
        models: per-channel fixed models (:func:`featcomp.entropy.ans.channel_models`).
        table_min: int32 (C,) smallest in-table value per channel, inside ``[-2**30, 2**30]``.
        table_size: int (C,) number of in-table values per channel (escape excluded).

    Returns:
        The ANS words as little-endian bytes (length a multiple of 4).
    """
    C, M = idx.shape
    rows, cols = find_escapes(idx, table_size)
    enc = ans.Encoder()
    if rows.size:
        # undo the wrapped subtraction for the escaped values only (int32 addition wraps back exactly)
        r_min = table_min[rows]
        esc_vals = (idx[rows, cols] + r_min).astype(np.int64)
        r_size = table_size[rows]
        idx[rows, cols] = r_size
        r_lo = r_min.astype(np.int64)
        push_escapes(enc, esc_vals, r_lo, r_lo + r_size.astype(np.int64) - 1)
    push = enc.push
    for c in range(C - 1, -1, -1):
        push(idx[c], models[c])
    return enc.payload()


def decode_channels(payload: bytes, C: int, M: int, models: list, table_min: np.ndarray,
                    table_size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_channels`; work bounded by the payload's size, not by ``C * M``.

    Returns:
        ``(idx, rows, cols, values)``: idx int32 (C, M) table indices (escape positions hold the
        escape symbol; add ``table_min`` for values), and the escaped positions with their exact
        int32 values.

    Raises:
        CodecError: if the payload is not a valid stream for these tables (the ANS decoder refuses
            it, an escape decodes outside int32, or data is left over at the end).
    """
    try:
        dec = ans.Decoder(payload)
        idx = np.zeros((C, M), dtype=np.int32)
        for c in range(C):
            dec.pop_run_bounded(models[c], idx[c])
        rows, cols = find_escapes(idx, table_size)  # decoded indices are <= size; == size: escape
        vals = np.zeros(0, np.int32)
        if rows.size:
            lo = table_min.astype(np.int64)[rows]
            v = pop_escapes(dec, lo, lo + table_size.astype(np.int64)[rows] - 1)
            if (v < _I32.min).any() or (v > _I32.max).any():
                raise CodecError("corrupt stream: an escaped value decodes outside int32")
            vals = v.astype(np.int32)
        if not dec.is_empty():
            raise CodecError("corrupt stream or wrong codec: data left over after decoding every symbol")
    except CodecError:
        raise
    except Exception as e:  # constriction raises ValueError/AssertionError-like errors on garbage
        raise CodecError(f"corrupt stream or wrong codec: the ANS decoder failed ({e})") from None
    return idx, rows, cols, vals


# ---------------------------------------------------------------------------------------------------
# Layout "full rows" (indexed layout 1)


def push_full_rows(enc: ans.Encoder, K: np.ndarray, mu: np.ndarray, tab: np.ndarray, family: TableFamily) -> None:
    """Push frames ``K`` int64 (T, ...) with locations ``mu`` and family table indices ``tab`` (same shape):
    per frame, its symbols with their whole family rows, then its escapes (ranges ``mu -+ R``)."""
    R, n = family.radius, family.n
    T = K.shape[0]
    r = K - mu
    esc = (r < -R) | (r > R)
    sym = np.where(esc, n - 1, r + R).astype(np.int32).reshape(T, -1)
    tab = tab.reshape(T, -1)
    has_esc = esc.reshape(T, -1).any(axis=1)
    w = family.weights
    hi = T
    for t in np.nonzero(has_esc)[0][::-1].tolist():  # frames without escapes are pushed together
        if t + 1 < hi:
            enc.push_indexed(sym[t + 1 : hi].reshape(-1), tab[t + 1 : hi].reshape(-1), w)
        e = esc[t].reshape(-1)
        m = mu[t].reshape(-1)[e]
        push_escapes(enc, K[t].reshape(-1)[e], m - R, m + R)
        hi = t + 1
    enc.push_indexed(sym[:hi].reshape(-1), tab[:hi].reshape(-1), w)


def pop_full_rows(decs: list, rows: np.ndarray, mu: np.ndarray, family: TableFamily, out: np.ndarray,
                  fail: Fail) -> None:
    """One frame of ``n`` streams in lockstep (:func:`push_full_rows`): ``out`` int64 (n, C, M) receives
    the values, given the frame's family rows ``rows`` (n * C * M, 2R + 2) and locations ``mu`` (n, C, M)."""
    R, esc_sym = family.radius, family.n - 1
    L = out[0].size
    model = ans.rows_model()
    for j in range(out.shape[0]):
        try:
            out[j].reshape(-1)[:] = decs[j].pop(model, rows[j * L : (j + 1) * L])
        except Exception as e:  # constriction raises on garbage
            raise fail(j, "the ANS decoder failed", e) from None
    if out.max() == esc_sym:  # out holds symbols here; escapes are rare
        for j in range(out.shape[0]):
            e = out[j] == esc_sym
            if e.any():
                m = mu[j][e]
                try:
                    out[j][e] = pop_escapes(decs[j], m - R, m + R) - m + R
                except Exception as ex:
                    raise fail(j, "escape decoding failed", ex) from None
    out += mu
    out -= R


# ---------------------------------------------------------------------------------------------------
# Layout "class rows" (indexed layout 2)


class ClassRows:
    """Derived, exact constants of the class-rows layout for one table set (from its integers only).

    Attributes:
        tt: the :class:`~featcomp.entropy.indexed.TruncatedTables`. radius: the family radius R.
        rrow: int64 (S * Q,) each row's class radius. rank: each row's rank in (class, table) order
            (int16 when it fits: a fast stable radix argsort). unzz: int64 (2R + 2,) the residual of
            each zigzag symbol (:func:`~featcomp.entropy.indexed.unzigzag_table`).
    """

    __slots__ = ("tt", "radius", "rrow", "rank", "unzz")

    def __init__(self, tt: TruncatedTables, radius: int) -> None:
        self.tt, self.radius = tt, int(radius)
        self.rrow = tt.radii[tt.row_class]
        SQ = self.rrow.size
        rank = np.empty(SQ, np.int16 if SQ < (1 << 15) else np.int64)
        rank[np.lexsort((np.arange(SQ), tt.row_class))] = np.arange(SQ)
        self.rank = rank
        self.unzz = unzigzag_table(self.radius)


def class_rows(tt: TruncatedTables, radius: int) -> ClassRows:
    """The :class:`ClassRows` of truncated tables ``tt`` of a family of radius ``radius``."""
    return ClassRows(tt, radius)


def coding_classes(tt: TruncatedTables, tab: np.ndarray, T: int, sort: bool) -> np.ndarray:
    """The coding class of every element of ``T`` frames (``tab`` flat or (T, ...)): its own row's class
    in sorted frames, else the frame's widest."""
    cls = tt.row_class[tab]
    if sort:
        return cls
    L = tab.size // max(T, 1)
    return np.broadcast_to(cls.reshape(T, L).max(axis=1).reshape((T,) + (1,) * (tab.ndim - 1)), tab.shape)


def push_class_rows(enc: ans.Encoder, cr: ClassRows, K: np.ndarray, mu: np.ndarray | None, tab: np.ndarray, T: int,
                    sort: bool) -> None:
    """Push ``T`` frames of values ``K`` (any shape, T * L elements, frame-major) with locations ``mu`` (None:
    all zero, zero-centred tables) and table indices ``tab`` (same shape): sorted frames by (coding class,
    table, position), unsorted ones in position order at the frame's widest class; after each frame its
    class escapes."""
    tt = cr.tt
    L = K.size // T
    tab, kf = tab.reshape(-1), K.reshape(-1)
    cls = tt.row_class[tab]
    if sort:
        rc = cr.rrow[tab]
    else:
        cls = np.repeat(cls.reshape(T, L).max(axis=1), L)
        rc = tt.radii[cls]
    if mu is None:
        r = kf
    else:
        mu = mu.reshape(-1)
        r = kf - mu
    esc = (r < -rc) | (r > rc)
    sym = np.where(esc, 2 * rc + 1, zigzag(r)).astype(np.int32)  # rows' columns are in zigzag order
    if sort:  # frame-major, then class, then table, then position
        rank = cr.rank[tab]
        key = rank if T == 1 else np.repeat(np.arange(T, dtype=np.int64) * cr.rrow.size, L) + rank
        order = np.argsort(key, kind="stable")
    else:  # frame-major, then position
        order = np.arange(kf.size)
    s_cls = cls[order]
    has_esc = esc.reshape(T, L).any(axis=1)
    # runs of one class that a single push can code: a class change or the end of a frame whose
    # escapes follow it ends a run (the order is frame-major: frame t holds coded positions t*L..)
    cut = np.flatnonzero(s_cls[1:] != s_cls[:-1]) + 1
    ends = (np.flatnonzero(has_esc[:-1]) + 1) * L  # ends of frames with escapes, but the last
    if ends.size:
        cut = np.union1d(cut, ends)
    bounds = [0, *cut.tolist(), order.size]
    events: list[tuple[int, int, int]] = []  # (class, a, b) symbol runs; (-1, t, 0) escapes of frame t
    for a, b in zip(bounds[:-1], bounds[1:]):
        events.append((int(s_cls[a]), a, b))
        t = (b - 1) // L
        if has_esc[t] and b % L == 0:  # b ends frame t
            events.append((-1, t, 0))
    model = ans.rows_model()
    for c, a, b in reversed(events):  # ANS is a stack: push in reverse decode order
        if c < 0:
            e = np.flatnonzero(esc[a * L : (a + 1) * L]) + a * L
            push_class_escapes(enc, tt, cr.radius, kf[e], np.zeros(e.size, np.int64) if mu is None else mu[e], tab[e],
                               cls[e])
        else:
            idx = order[a:b]
            enc.push(sym[idx], model, np.take(tt.weights[c], tab[idx], axis=0))


def pop_sorted(dec: ans.Decoder, cr: ClassRows, tj: np.ndarray, out: np.ndarray, run_min: int) -> np.ndarray | None:
    """One sorted frame of one stream: residuals int64 into ``out`` (L,) in position order, escapes decoded
    as ``-(class radius + 1)``, given the table indices ``tj`` (L,). Runs of one table decode with one fixed
    model when runs are long (mean >= ``run_min``), else per-symbol rows, one call per class.

    Returns:
        The escapes' positions (ascending), or None when there are none.
    """
    tt = cr.tt
    L = tj.size
    order = np.argsort(cr.rank[tj], kind="stable")
    st = tj[order]
    cuts = np.flatnonzero(st[1:] != st[:-1]) + 1
    pop = dec.pop
    if L >= run_min * (cuts.size + 1):  # long runs: one fixed model per table
        models = tt.models()
        b = [0, *cuts.tolist(), L]
        heads = st[b[:-1]].tolist()
        parts = [pop(models[h], e - a) for h, a, e in zip(heads, b[:-1], b[1:])]
    else:  # short runs: per-symbol rows, one call per class
        sc = tt.row_class[st]
        b = [0, *(np.flatnonzero(sc[1:] != sc[:-1]) + 1).tolist(), L]
        model, Wc = ans.rows_model(), tt.weights
        parts = [pop(model, np.take(Wc[int(sc[a])], st[a:e], axis=0)) for a, e in zip(b[:-1], b[1:])]
    sym = np.take(cr.unzz, parts[0] if len(parts) == 1 else np.concatenate(parts))
    rrow = cr.rrow
    r0, r1 = int(rrow[st[0]]), int(rrow[st[-1]])  # classes ascend along the order
    if r0 == r1:
        hit = int(sym.min()) < -r0
    else:
        rs = rrow[st]
        hit = bool((sym < -rs).any())
    out[order] = sym
    if not hit:
        return None
    return np.sort(order[np.flatnonzero(sym < -(r0 if r0 == r1 else rs))])


def pop_class_frame(decs: list, cr: ClassRows, tab: np.ndarray, mu: np.ndarray, resf: np.ndarray, sort: bool,
                    run_min: int, fail: Fail) -> None:
    """One frame of ``n`` streams in lockstep (:func:`push_class_rows`): residuals ``resf`` int64 (n, L)
    (written in place) given the frame's table indices ``tab`` and locations ``mu`` ((n, L) or (n, C, M),
    any strides), escapes included. Sorted frames: :func:`pop_sorted` per stream; unsorted ones: one
    gather of truncated rows at the widest class and one call per stream. Then the escapes of every
    stream together (:func:`pop_class_escapes`)."""
    tt = cr.tt
    n_act, L = resf.shape
    j = 0
    try:
        esc_args = None
        if sort:
            esc_parts = []
            for j in range(n_act):
                tj = tab[j].reshape(-1)
                pos = pop_sorted(decs[j], cr, tj, resf[j], run_min)
                if pos is not None:  # escapes: their positions, in position order
                    esc_parts.append((j * L + pos, tj[pos], mu[j].reshape(-1)[pos]))
            if esc_parts:
                idx = np.concatenate([e[0] for e in esc_parts])
                tab_e = np.concatenate([e[1] for e in esc_parts])
                esc_args = (idx, tab_e, tt.row_class[tab_e], np.concatenate([e[2] for e in esc_parts]))
        else:  # small frames: one call per stream at the frame's widest class
            radii, row_class, Wc, unzz = tt.radii, tt.row_class, tt.weights, cr.unzz
            model = ans.rows_model()
            if n_act == 1:  # one stream: one reduction
                c_lo = c_hi = int(_amax(row_class.take(tab), None))
                cw = None  # made only for escapes
            else:
                cw = np.take(row_class, tab).reshape(n_act, L).max(axis=1)
                c_lo, c_hi = int(cw.min()), int(cw.max())
            if c_lo == c_hi:  # every stream at the same width (common): one gather
                r = int(radii[c_lo])
                rows = Wc[c_lo].take(tab, axis=0).reshape(n_act, L, -1)  # take: ~3x faster than indexing
                if n_act == 1:
                    j = 0
                    unzz.take(decs[0].pop(model, rows[0]), out=resf[0])
                else:
                    parts = []
                    for j in range(n_act):  # a plain loop: j names the stream if the decoder fails
                        parts.append(decs[j].pop(model, rows[j]))
                    np.take(unzz, np.concatenate(parts), out=resf.reshape(-1))
                esc = int(_amin(resf, None)) < -r
            else:
                tabf = tab.reshape(n_act, L)
                for c in np.unique(cw).tolist():
                    js = np.flatnonzero(cw == c).tolist()
                    rows = np.take(Wc[c], tabf[js], axis=0)
                    for i, j in enumerate(js):
                        resf[j] = np.take(unzz, decs[j].pop(model, rows[i]))
                esc = bool((resf < -radii[cw][:, None]).any())
            if esc:
                if cw is None:
                    cw = np.full(1, c_lo)
                idx = np.flatnonzero(resf < -(r if c_lo == c_hi else radii[cw][:, None]))
                j_e = idx // L
                esc_args = (idx, tab.reshape(-1)[idx], cw[j_e], mu.reshape(-1)[idx])
        if esc_args is not None:  # escapes (decoded as -(class radius + 1)); rare on calibrated data
            where = [0]
            try:
                pop_class_escapes(decs, tt, cr.radius, resf, *esc_args, where)
            except Exception as e:
                raise fail(where[0], "escape decoding failed", e) from None
    except CodecError:
        raise
    except Exception as e:  # constriction raises on garbage
        raise fail(j, "the ANS decoder failed", e) from None


# Class escapes (one stream's format; decode order): for every escaped element of a coding class with
# radius r < R, by class (ascending) then position, one *tail symbol* with its row's tail table
# (:attr:`TruncatedTables.tails`): ``res + R`` for ``res < -r``, ``res + (R - r) - r - 1`` for ``res > r``,
# the last index ``2 * (R - r)`` for ``|res| > R``; then the exact values of the residuals beyond R (tail
# "escape", or class radius R), position order, in the format of :func:`push_escapes` with ranges
# ``mu -+ R``.


def push_class_escapes(enc: ans.Encoder, tt: TruncatedTables, radius: int, vals: np.ndarray, mu: np.ndarray,
                       tab: np.ndarray, cls: np.ndarray) -> None:
    """Push the escapes of one stream (format above; push them before the symbols they follow).

    Args:
        enc: the encoder. tt: the tables the symbols were coded with. radius: the family radius R.
        vals: int64 (e,) escaped values in position order; mu: int64 (e,) their locations (0 for
            zero-centred tables); tab: (e,) their table indices; cls: (e,) their coding classes.
    """
    R = int(radius)
    r = vals - mu
    far = (r < -R) | (r > R)
    if far.any():
        push_escapes(enc, vals[far], mu[far] - R, mu[far] + R)
    model = ans.rows_model()
    for c in np.unique(cls)[::-1].tolist():
        rc = int(tt.radii[c])
        if rc == R:
            continue
        sel = cls == c
        m = R - rc
        rs = r[sel]
        sym = np.where(far[sel], 2 * m, np.where(rs < 0, rs + R, rs + m - rc - 1)).astype(np.int32)
        enc.push(sym, model, tt.tails[c][tab[sel]].astype(np.float64) - 1.0)


def pop_class_escapes(decs: list, tt: TruncatedTables, radius: int, resf: np.ndarray, idx: np.ndarray,
                      tab_e: np.ndarray, cls_e: np.ndarray, mu_e: np.ndarray, where: list) -> None:
    """Inverse of :func:`push_class_escapes` for one frame of ``n`` lockstep streams.

    ``resf`` int64 (n, L) residuals with escapes marked ``-(radius + 1)`` (below their coding class's
    radius); ``idx`` int64 (e,) the escapes' flat indices into ``resf`` (ascending), ``tab_e``/``cls_e``/
    ``mu_e`` (e,) their table indices, coding classes and locations. The escaped residuals are written
    into ``resf``. Vectorized over streams: one tail-row gather per class, one decoder call per
    (stream, class) with escapes, then the exact values beyond R per stream. ``where[0]`` is set to the
    stream being decoded (for error messages).
    """
    R, L = int(radius), resf.shape[1]
    j_e = idx // L
    if cls_e.min() != cls_e.max():  # decode order per stream: class, then position
        o = np.lexsort((idx, cls_e, j_e))
        idx, tab_e, cls_e, j_e, mu_e = idx[o], tab_e[o], cls_e[o], j_e[o], mu_e[o]
    rr = tt.radii[cls_e]
    m = R - rr
    sym = 2 * m  # "beyond R" unless a tail symbol says otherwise
    cut = np.flatnonzero((j_e[1:] != j_e[:-1]) | (cls_e[1:] != cls_e[:-1])) + 1
    model = ans.rows_model()
    for a, b in zip([0, *cut.tolist()], [*cut.tolist(), idx.size]):
        c = int(cls_e[a])
        if tt.tails[c] is None:  # class radius R: straight to the exact values
            continue
        where[0] = int(j_e[a])
        sym[a:b] = decs[where[0]].pop(model, np.take(tt.tail_weights[c], tab_e[a:b], axis=0))
    got = np.where(sym < m, sym - R, sym - m + rr + 1)
    far = sym == 2 * m
    if far.any():
        for j in np.unique(j_e[far]).tolist():
            sel = np.flatnonzero(far & (j_e == j))
            sel = sel[np.argsort(idx[sel], kind="stable")]  # position order
            fm = mu_e[sel]
            where[0] = j
            got[sel] = pop_escapes(decs[j], fm - R, fm + R) - fm
    resf.reshape(-1)[idx] = got


def class_bits(tt: TruncatedTables, family: TableFamily, r: np.ndarray, tab: np.ndarray, cls: np.ndarray,
               *, per_frame: bool = False) -> float | np.ndarray:
    """Ideal cost in bits of residuals ``r`` coded with rows ``tab`` truncated to classes ``cls``
    (all int arrays of one shape): the symbols, the tail symbols of escapes, and the exact values
    beyond R (:func:`escape_bits`). With ``per_frame``: float64 (T,), the cost of each index of axis 0
    (a temporal chunk's frames) instead of the total."""
    R, p = family.radius, family.precision
    T = r.shape[0]

    def total(v: np.ndarray, frames: np.ndarray | None) -> Any:
        return np.bincount(frames, weights=v, minlength=T) if per_frame else float(v.sum())

    bits: Any = np.zeros(T) if per_frame else 0.0
    for c in np.unique(cls).tolist():
        sel = cls == c
        fr = np.nonzero(sel)[0] if per_frame else None
        rc = int(tt.radii[c])
        rs, ts = r[sel], tab[sel]
        esc = (rs < -rc) | (rs > rc)
        f = tt.freqs[c][ts, np.where(esc, 2 * rc + 1, rs + rc)].astype(np.float64)
        bits += total(p - np.log2(f), fr)
        if esc.any() and rc < R:
            m, re = R - rc, rs[esc]
            far = (re < -R) | (re > R)
            i = np.where(far, 2 * m, np.where(re < 0, re + R, re + m - rc - 1))
            bits += total(24 - np.log2(tt.tails[c][ts[esc], i].astype(np.float64)), None if fr is None else fr[esc])
    far = (r < -R) | (r > R)
    if far.any():
        def beyond(v: np.ndarray) -> float:
            return escape_bits(v, np.full(v.size, -R, np.int64), np.full(v.size, R, np.int64))

        if per_frame:
            for t in np.unique(np.nonzero(far)[0]).tolist():
                bits[t] += beyond(r[t][far[t]])
        else:
            bits += beyond(r[far])
    return bits


# ---------------------------------------------------------------------------------------------------
# Restart flags (temporal layout 3)

_RESTART_FREQ = 1 << 10  # the restart flag's integer table is (2**16 - 2**10, 2**10) at precision 16
#: ideal cost in bits of a restart flag (not set, set)
RESTART_FLAG_BITS = (16 - math.log2((1 << 16) - _RESTART_FREQ), 16 - math.log2(_RESTART_FREQ))
_FLAG_MODEL = None


def restart_flag_model():
    """The restart flags' fixed model (integer table ``(2**16 - 2**10, 2**10)``, exact)."""
    global _FLAG_MODEL
    if _FLAG_MODEL is None:
        _FLAG_MODEL = ans.fixed_model(ans.weights(np.array([[(1 << 16) - _RESTART_FREQ, _RESTART_FREQ]], np.int64), 16)[0])
    return _FLAG_MODEL


def push_restart_flags(enc: ans.Encoder, flags: np.ndarray) -> None:
    """Push the flags of frames 1.. (bool (T - 1,)); pushed last, so the decoder reads them first."""
    enc.push(flags.astype(np.int32), restart_flag_model())


def pop_restart_flags(dec: ans.Decoder, n: int) -> np.ndarray:
    """bool (n,) the flags of frames 1..n."""
    return dec.pop(restart_flag_model(), n) != 0

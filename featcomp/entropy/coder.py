"""Former home of the ANS coder; its names now live in :mod:`featcomp.entropy.ans` (the coder, the only
importer of constriction) and :mod:`featcomp.entropy.layouts` (the factorized channel layout and the
exact escape format). Kept so that old import paths keep working; new code imports those modules.

The functions taking an encoder or decoder accept the :class:`~featcomp.entropy.ans.Encoder` /
:class:`~featcomp.entropy.ans.Decoder` of :mod:`featcomp.entropy.ans` or, as before, a constriction
``AnsCoder`` made by older code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featcomp.entropy import ans, layouts
from featcomp.entropy.ans import ANS_PRECISION, check_backend
from featcomp.entropy.ans import check_rows_backend as check_family_backend
from featcomp.entropy.ans import channel_models as build_models
from featcomp.entropy.ans import rows_model as _family_model
from featcomp.entropy.ans import weights as family_weights
from featcomp.entropy.layouts import ESCAPE_HEADER_SIZE, escape_bits, find_escapes
from featcomp.entropy.layouts import decode_channels as decode
from featcomp.entropy.layouts import encode_channels as encode

__all__ = ["ANS_PRECISION", "ESCAPE_HEADER_SIZE", "build_models", "check_backend", "find_escapes", "encode", "decode",
           "family_weights", "check_family_backend", "push_indexed", "pop_indexed", "push_escapes", "pop_escapes",
           "escape_bits"]

_ = (_family_model,)  # re-exported for old callers


def push_indexed(enc: Any, sym: np.ndarray, table: np.ndarray, weights: np.ndarray) -> None:
    """:meth:`featcomp.entropy.ans.Encoder.push_indexed` (``enc``: an Encoder or a constriction coder)."""
    ans.Encoder.adopt(enc).push_indexed(sym, table, weights)


def pop_indexed(dec: Any, table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:meth:`featcomp.entropy.ans.Decoder.pop_indexed` (``dec``: a Decoder or a constriction coder)."""
    return ans.Decoder.adopt(dec).pop_indexed(table, weights)


def push_escapes(enc: Any, vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """:func:`featcomp.entropy.layouts.push_escapes` (``enc``: an Encoder or a constriction coder)."""
    layouts.push_escapes(ans.Encoder.adopt(enc), vals, lo, hi)


def pop_escapes(dec: Any, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """:func:`featcomp.entropy.layouts.pop_escapes` (``dec``: a Decoder or a constriction coder)."""
    return layouts.pop_escapes(ans.Decoder.adopt(dec), lo, hi)

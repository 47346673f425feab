"""Typed rows of the extraction job: what flows between its stages, and the one failure signal.

Ray Data moves dict batches (columns of numpy arrays); the stages and the driver work on these frozen
records instead, and convert at the edge with explicit ``to_batch``/``to_row``/``from_row``:

==============  =============================  ==================================================
record          from -> to                      carries
==============  =============================  ==================================================
VideoTask       driver -> decode tasks          ``video_id``, ``path``
FrameChunk      decode -> encoder actors        ``chunk`` (0-based), ``last``, uint8 ``frames``
                                                ``(n, H, W, 3)``, ``timestamps`` (s), ``indices``,
                                                ``partial`` (why a truncated video is incomplete)
ChunkRow        encoder actors -> driver        the same chunk as int32 latents (or raw float16
                                                features), ``float16_bytes``, optional uint8
                                                per-frame rate ``levels``
FailureRow      any stage -> driver             ``error``: ``"Kind: message"``, never empty
==============  =============================  ==================================================

**Failure has one signal: a non-empty ``error``.** :func:`parse_row` turns a row with an error into a
:class:`FailureRow` and any other row into a chunk record, which refuses a negative chunk index. The
``chunk`` column of a failure row holds :data:`FILLER_CHUNK` (-1) only because Ray Data's columns need a
value in every row; nothing reads it. The columns (names, dtypes, shapes) are those the job has always
moved, so a batch is byte for byte what it was before these types existed.

No ray or torch import here: the rows are tested without a runtime.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from featcomp.errors import PipelineError

__all__ = [
    "FILLER_CHUNK",
    "VideoTask",
    "FrameChunk",
    "ChunkRow",
    "FailureRow",
    "parse_row",
    "parse_decoded",
    "encoded_batch",
    "error_text",
]

# the ``chunk`` column of a failure row: a filler for Ray Data's columnar batches, never a signal
FILLER_CHUNK = -1

_KIND = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*): ")


def error_text(e: BaseException) -> str:
    """``"Kind: message"`` of an exception (the text a failure row and the store's failures table hold)."""
    text = str(e).strip() or repr(e)
    return f"{type(e).__name__}: {text}"


def _str(v: Any) -> str:
    return str(v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v)


@dataclass(frozen=True)
class VideoTask:
    """One video to extract: the input of a decode task."""

    video_id: str
    path: str

    def to_row(self) -> dict[str, str]:
        return {"video_id": self.video_id, "path": self.path}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VideoTask:
        return cls(_str(row["video_id"]), _str(row["path"]))

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any]) -> list[VideoTask]:
        """The tasks of a dict batch (columns ``video_id`` and ``path``)."""
        return [cls(_str(v), _str(p)) for v, p in zip(batch["video_id"], batch["path"])]


@dataclass(frozen=True)
class FailureRow:
    """A video that failed in some stage; the driver records it in the store's failures table.

    Attributes:
        video_id, path: The video.
        error: ``"Kind: message"`` (e.g. ``"VideoError: a.mp4: no frames could be decoded"``), never empty.
    """

    video_id: str
    path: str
    error: str

    def __post_init__(self) -> None:
        if not str(self.error).strip():
            raise PipelineError(f"video {self.video_id!r}: a failure row must say why (empty error)")

    @property
    def kind(self) -> str:
        """The error's type name (``"VideoError"``), or ``"Error"`` when the text names none."""
        m = _KIND.match(self.error)
        return m.group(1) if m else "Error"

    @property
    def message(self) -> str:
        """The error text after its kind."""
        m = _KIND.match(self.error)
        return self.error[m.end():] if m else self.error

    @classmethod
    def from_exception(cls, video_id: str, path: str, e: BaseException) -> FailureRow:
        return cls(video_id, path, error_text(e))

    def to_batch(self) -> dict[str, Any]:
        """The one-row batch of the decode stage saying that the video failed."""
        return {
            "video_id": np.array([self.video_id]),
            "path": np.array([self.path]),
            "chunk": np.array([FILLER_CHUNK], dtype=np.int64),
            "last": np.array([True]),
            "frames": np.zeros((1, 0, 1, 1, 3), dtype=np.uint8),
            "timestamps": np.zeros((1, 0), dtype=np.float64),
            "indices": np.zeros((1, 0), dtype=np.int64),
            "error": np.array([self.error]),
            "partial": np.array([""]),
        }

    def to_row(self) -> dict[str, Any]:
        """One row as ``Dataset.iter_rows`` yields it (the columns a failure needs)."""
        return {"video_id": self.video_id, "path": self.path, "chunk": FILLER_CHUNK, "last": True,
                "error": self.error, "partial": ""}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FailureRow:
        """Raises PipelineError: the row has no error (it is data, not a failure)."""
        return cls(_str(row["video_id"]), _str(row["path"]), _str(row.get("error", "") or ""))


def _chunk_index(row: Mapping[str, Any], vid: str) -> int:
    chunk = int(np.asarray(row["chunk"]).reshape(-1)[0]) if np.ndim(row["chunk"]) else int(row["chunk"])
    if chunk < 0:
        raise PipelineError(f"video {vid!r}: a row with chunk {chunk} and no error; a stage broke the row contract "
                            "(a failure is a row with an error)")
    return chunk


@dataclass(frozen=True, eq=False)
class FrameChunk:
    """Decoded frames of one chunk of a video (decode -> encode).

    Attributes:
        chunk: 0-based index of the chunk in its video; ``last`` marks the final one.
        frames: uint8 ``(n, H, W, 3)``, ``n <= inference.batch_size``.
        timestamps: float64 ``(n,)`` seconds; ``indices``: int64 ``(n,)`` frame numbers.
        partial: Empty, or why a truncated video decoded with ``allow_partial`` is incomplete.
    """

    video_id: str
    path: str
    chunk: int
    last: bool
    frames: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    partial: str = ""

    def __post_init__(self) -> None:
        if int(self.chunk) < 0:
            raise PipelineError(f"video {self.video_id!r}: chunk index {self.chunk} < 0; a failure is a FailureRow")

    def to_batch(self) -> dict[str, Any]:
        """The one-row batch the decode stage yields."""
        return {
            "video_id": np.array([self.video_id]),
            "path": np.array([self.path]),
            "chunk": np.array([self.chunk], dtype=np.int64),
            "last": np.array([self.last]),
            "frames": np.ascontiguousarray(self.frames)[None],
            "timestamps": np.asarray(self.timestamps, dtype=np.float64)[None],
            "indices": np.asarray(self.indices, dtype=np.int64)[None],
            "error": np.array([""]),
            "partial": np.array([self.partial or ""]),
        }


def parse_decoded(batch: Mapping[str, Any]) -> list[FrameChunk | FailureRow]:
    """The records of a decoded batch (the encoder's input), in row order; failure = a non-empty ``error``."""
    n = len(batch["video_id"])
    partial = batch.get("partial", [""] * n)
    out: list[FrameChunk | FailureRow] = []
    for i in range(n):
        vid, path, error = _str(batch["video_id"][i]), _str(batch["path"][i]), _str(batch["error"][i])
        if error:
            out.append(FailureRow(vid, path, error))
            continue
        out.append(FrameChunk(vid, path, _chunk_index({"chunk": batch["chunk"][i]}, vid), bool(batch["last"][i]),
                              np.asarray(batch["frames"][i]), np.asarray(batch["timestamps"][i]),
                              np.asarray(batch["indices"][i]), _str(partial[i])))
    return out


@dataclass(frozen=True, eq=False)
class ChunkRow:
    """One encoded chunk of a video (encoder -> driver).

    Attributes:
        latents: int32 ``(n, C'[, h, w])`` latents, or float16 ``(n, C[, h, w])`` features of a raw job.
        timestamps: float64 ``(n,)`` seconds; ``indices``: int64 ``(n,)`` frame numbers.
        float16_bytes: What the same frames' backbone features take as float16 (the summary's baseline).
        levels: uint8 ``(n,)`` per-frame rate levels (``keep_top1``), else None.
        partial: Empty, or why a truncated video is incomplete.
    """

    video_id: str
    path: str
    chunk: int
    last: bool
    latents: np.ndarray
    timestamps: np.ndarray
    indices: np.ndarray
    float16_bytes: int = 0
    levels: np.ndarray | None = None
    partial: str = ""

    def __post_init__(self) -> None:
        if int(self.chunk) < 0:
            raise PipelineError(f"video {self.video_id!r}: chunk index {self.chunk} < 0; a failure is a FailureRow")

    def to_row(self) -> dict[str, Any]:
        """One row as ``Dataset.iter_rows`` yields it (``levels`` only when the chunk has them)."""
        row = {"video_id": self.video_id, "path": self.path, "chunk": int(self.chunk), "last": bool(self.last),
               "latents": self.latents, "timestamps": self.timestamps, "indices": self.indices, "error": "",
               "partial": self.partial, "float16_bytes": int(self.float16_bytes)}
        if self.levels is not None:
            row["levels"] = self.levels
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ChunkRow:
        """Raises PipelineError: the row is a failure (non-empty ``error``) or has a negative chunk index."""
        vid = _str(row["video_id"])
        error = _str(row.get("error", "") or "")
        if error:
            raise PipelineError(f"video {vid!r}: a failure row ({error}) is not a chunk of data")
        lv = row.get("levels")
        return cls(vid, _str(row["path"]), _chunk_index(row, vid), bool(row["last"]), np.asarray(row["latents"]),
                   np.asarray(row["timestamps"]), np.asarray(row["indices"]), int(row.get("float16_bytes", 0) or 0),
                   None if lv is None else np.asarray(lv, dtype=np.uint8), _str(row.get("partial", "") or ""))


Row = Union[ChunkRow, FailureRow]


def parse_row(row: Mapping[str, Any] | ChunkRow | FailureRow) -> ChunkRow | FailureRow:
    """A row of the encoded dataset as its record: a :class:`FailureRow` exactly when ``error`` is non-empty."""
    if isinstance(row, (ChunkRow, FailureRow)):
        return row
    if _str(row.get("error", "") or ""):
        return FailureRow.from_row(row)
    return ChunkRow.from_row(row)


def encoded_batch(rows: Sequence[ChunkRow | FailureRow], *, raw: bool, with_levels: bool) -> dict[str, Any]:
    """The encoder's output batch (columns) of ``rows``, in order.

    A failure row gets empty ``latents`` (the batch's channel shape, so the column stays uniform),
    empty ``timestamps``/``indices``/``levels``, ``chunk`` :data:`FILLER_CHUNK` and ``float16_bytes`` 0.

    Args:
        raw: The latents column holds float16 features (else int32 latents).
        with_levels: Add the ``levels`` column (per-frame rate control), for every row.
    """
    dtype = np.float16 if raw else np.int32
    shape = next((r.latents.shape[1:] for r in rows if isinstance(r, ChunkRow)), (0,))
    chunks = [r if isinstance(r, ChunkRow) else None for r in rows]
    levels = [c.levels if c is not None and c.levels is not None else np.zeros(0, dtype=np.uint8) for c in chunks]
    out: dict[str, Any] = {
        "video_id": np.array([r.video_id for r in rows]),
        "path": np.array([r.path for r in rows]),
        "chunk": np.array([FILLER_CHUNK if c is None else c.chunk for c in chunks], dtype=np.int64),
        "last": np.array([True if c is None else c.last for c in chunks]),
        "latents": [np.zeros((0, *shape), dtype=dtype) if c is None else c.latents for c in chunks],
        "timestamps": [np.zeros(0, np.float64) if c is None else c.timestamps for c in chunks],
        "indices": [np.zeros(0, np.int64) if c is None else c.indices for c in chunks],
        "error": np.array(["" if c is not None else r.error for r, c in zip(rows, chunks)]),
        "partial": np.array(["" if c is None else c.partial for c in chunks]),
        "float16_bytes": np.array([0 if c is None else c.float16_bytes for c in chunks], dtype=np.int64),
    }
    if with_levels:
        out["levels"] = levels
    return out

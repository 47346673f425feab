"""A torch ``Dataset`` over a featcomp store, per video or per window, with labels.

Worker safety: the dataset holds the store's URL, the item list and the labels only; each
process opens the store on first use (``DataLoader(num_workers>0)`` pickles nothing open).
"""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np
import torch

from featcomp.errors import StoreError

__all__ = ["FeatureDataset", "collate_features", "read_labels"]


def read_labels(labels: Any) -> dict[str, Any]:
    """Labels as ``{video_id: label}`` from a dict, a CSV path, a pandas Series or DataFrame.

    CSV files need a header with ``video_id`` and ``label`` columns (else the first two columns
    are used). DataFrames need ``video_id`` and ``label`` columns (or the index is the id and one
    column is left).
    """
    if labels is None:
        return {}
    if isinstance(labels, (str, os.PathLike)):
        with open(labels, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return {}
        head = [h.strip() for h in rows[0]]
        if "video_id" in head and "label" in head:
            i, j = head.index("video_id"), head.index("label")
            body = rows[1:]
        else:
            i, j, body = 0, 1, rows
        return {r[i]: r[j] for r in body if len(r) > max(i, j)}
    if hasattr(labels, "columns") and hasattr(labels, "iterrows"):  # DataFrame
        cols = list(labels.columns)
        if "video_id" in cols and "label" in cols:
            return dict(zip(labels["video_id"].tolist(), labels["label"].tolist()))
        if len(cols) == 1:
            return dict(zip(labels.index.tolist(), labels[cols[0]].tolist()))
        raise StoreError(f"label table needs 'video_id' and 'label' columns, has {cols}")
    if hasattr(labels, "items"):
        return {str(k): v for k, v in labels.items()}
    raise StoreError(f"labels must be a dict, a CSV path or a pandas object, got {type(labels).__name__}")


class FeatureDataset(torch.utils.data.Dataset):
    """Items are videos (``window=None``) or windows of ``window`` frames every ``stride`` frames.

    Args:
        store: a store path/URL or an open :class:`~featcomp.store.FeatureStore` (only its URL is kept).
        labels: ``{video_id: label}``, a CSV path, or a pandas Series/DataFrame (see :func:`read_labels`).
            Videos without a label are skipped (counted in ``missing_labels``). Non-integer labels are
            mapped to class indices in sorted order (``classes``).
        window: frames per item (None: whole videos). Videos shorter than ``window`` give one shorter item.
        stride: frames between window starts (default ``window``).
        window_s: cut windows by time instead: each item holds the frames whose timestamps lie in
            ``[t, t + window_s)`` seconds, for ``t = first timestamp + k * stride_s``; windows with no
            frame are skipped (a gap in the video), so items may differ in length. Excludes ``window``.
        stride_s: seconds between window starts (default ``window_s``).
        video_ids: restrict to these videos (default: all, in store order).
        latents: return int32 latents instead of float32 features (coded stores).
        classes: the class list for non-integer labels (e.g. ``train.classes`` for a validation split);
            default: the sorted labels present.
        storage_options: options of a store URL's filesystem (:mod:`featcomp.storage`); kept, with the
            URL, for the DataLoader workers that reopen the store.

    Each item is a dict: ``features`` float32 tensor ``(L, C[, H, W])`` (or ``latents`` int32),
    ``timestamps`` float64 tensor ``(L,)`` (seconds of each frame in its video), ``length`` (L),
    ``start`` (first frame), ``video_id`` and, with labels, ``label`` (int64). In a store
    with per-frame rate levels, ``features`` are dequantized frame by frame at their levels, and
    ``latents=True`` items also hold ``levels`` (uint8 ``(L,)``) so the integers can be dequantized later.
    """

    def __init__(
        self,
        store: Any,
        labels: Any = None,
        *,
        window: int | None = None,
        stride: int | None = None,
        video_ids: list[str] | None = None,
        latents: bool = False,
        classes: list[str] | None = None,
        storage_options: dict | None = None,
        window_s: float | None = None,
        stride_s: float | None = None,
    ) -> None:
        from featcomp.store.reader import FeatureStore, open_store

        st = store if isinstance(store, FeatureStore) else open_store(store, storage_options=storage_options)
        self.url = st.url
        self.storage_options = st.storage_options
        self.latents = bool(latents)
        if window is not None and int(window) < 1:
            raise StoreError(f"window must be >= 1, got {window}")
        self.window = None if window is None else int(window)
        if window_s is not None and window is not None:
            raise StoreError("give window (frames) or window_s (seconds), not both")
        if stride_s is not None and window_s is None:
            raise StoreError("stride_s needs window_s (seconds); for frames use window and stride")
        if window_s is not None and not (np.isfinite(float(window_s)) and float(window_s) > 0):
            raise StoreError(f"window_s must be > 0 seconds, got {window_s}")
        if stride_s is not None and not (np.isfinite(float(stride_s)) and float(stride_s) > 0):
            raise StoreError(f"stride_s must be > 0 seconds, got {stride_s}")
        self.window_s = None if window_s is None else float(window_s)
        self.stride_s = None if window_s is None else float(stride_s if stride_s is not None else window_s)
        self.stride = int(stride) if stride is not None else self.window
        if self.stride is not None and self.stride < 1:
            raise StoreError(f"stride must be >= 1, got {stride}")
        lab = read_labels(labels)
        ids = list(st) if video_ids is None else list(video_ids)
        missing = [v for v in ids if v not in st]
        if missing:
            raise StoreError(f"{self.url}: {len(missing)} requested videos are not in the store, e.g. {missing[:3]}")
        self.missing_labels = 0
        if labels is not None:
            kept = [v for v in ids if v in lab]
            self.missing_labels = len(ids) - len(kept)
            ids = kept
            values = [lab[v] for v in ids]
            if classes is None and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in values):
                self.classes = None
                self._labels = {v: int(lab[v]) for v in ids}
            else:
                self.classes = list(classes) if classes is not None else sorted({str(x) for x in values})
                pos = {c: i for i, c in enumerate(self.classes)}
                unknown = sorted({str(x) for x in values} - set(pos))
                if unknown:
                    raise StoreError(f"labels {unknown[:5]} are not in classes {self.classes[:10]}")
                self._labels = {v: pos[str(lab[v])] for v in ids}
        else:
            self.classes = None
            self._labels = None
        rows = [st._rows[v] for v in ids]
        lengths = st.index.length[np.asarray(rows, dtype=np.int64)] if rows else np.zeros(0, np.int64)
        items_vid, items_start, items_len = [], [], []
        for k, (v, n) in enumerate(zip(ids, lengths.tolist())):
            if self.window_s is not None:
                ts = st._timestamps(st._rows[v])
                if n == 0:
                    continue
                t_starts = ts[0] + self.stride_s * np.arange(int((ts[-1] - ts[0]) // self.stride_s) + 1)
                a = np.searchsorted(ts, t_starts, side="left")
                b = np.searchsorted(ts, t_starts + self.window_s, side="left")
                keep = b > a
                items_vid.extend([k] * int(keep.sum()))
                items_start.extend(a[keep].tolist())
                items_len.extend((b - a)[keep].tolist())
            elif self.window is None or n <= self.window:
                items_vid.append(k)
                items_start.append(0)
                items_len.append(n if self.window is None else min(n, self.window))
            else:
                starts = np.arange(0, n - self.window + 1, self.stride)
                items_vid.extend([k] * len(starts))
                items_start.extend(starts.tolist())
                items_len.extend([self.window] * len(starts))
        self.video_ids = ids
        self._item_vid = np.asarray(items_vid, dtype=np.int64)
        self._item_start = np.asarray(items_start, dtype=np.int64)
        self._item_len = np.asarray(items_len, dtype=np.int64)
        self._store = st  # dropped when pickled

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        d["_store"] = None
        return d

    def _st(self):
        if self._store is None:
            from featcomp.store.reader import open_store

            self._store = open_store(self.url, storage_options=getattr(self, "storage_options", None))
        return self._store

    def __len__(self) -> int:
        return len(self._item_vid)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        vid = self.video_ids[int(self._item_vid[i])]
        s = int(self._item_start[i])
        n = int(self._item_len[i])
        v = self._st()[vid]
        if s != 0 or n != v.frames:
            v = v.window(s, s + n)
        item: dict[str, Any] = {"video_id": vid, "start": s, "length": n,
                                "timestamps": torch.from_numpy(np.array(v.timestamps, dtype=np.float64))}
        if self.latents:
            item["latents"] = torch.from_numpy(v.latents())
            levels = v.levels
            if levels is not None:
                item["levels"] = torch.from_numpy(levels.copy())
        else:
            item["features"] = torch.from_numpy(v.features())
        if self._labels is not None:
            item["label"] = torch.tensor(self._labels[vid], dtype=torch.int64)
        return item


def collate_features(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad variable-length items into a batch.

    Returns:
        dict with ``features`` (or ``latents``) ``(B, L_max, C[, H, W])`` zero-padded, ``lengths``
        int64 ``(B,)``, ``mask`` bool ``(B, L_max)`` (True on real frames), ``video_ids`` (list),
        ``starts`` int64 ``(B,)``, ``timestamps`` float64 ``(B, L_max)`` (padded with NaN) and, when items have labels, ``labels`` int64 ``(B,)``; when every item
        has per-frame rate levels, ``levels`` uint8 ``(B, L_max)`` (zero-padded).
    """
    key = "features" if "features" in batch[0] else "latents"
    lengths = torch.tensor([int(b["length"]) for b in batch], dtype=torch.int64)
    lmax = int(lengths.max()) if len(batch) else 0
    first = batch[0][key]
    out = first.new_zeros((len(batch), lmax, *first.shape[1:]))
    for i, b in enumerate(batch):
        out[i, : b[key].shape[0]] = b[key]
    res: dict[str, Any] = {
        key: out,
        "lengths": lengths,
        "mask": torch.arange(lmax)[None, :] < lengths[:, None],
        "video_ids": [b["video_id"] for b in batch],
        "starts": torch.tensor([int(b["start"]) for b in batch], dtype=torch.int64),
    }
    if all("timestamps" in b for b in batch):
        ts = torch.full((len(batch), lmax), float("nan"), dtype=torch.float64)
        for i, b in enumerate(batch):
            ts[i, : b["timestamps"].shape[0]] = b["timestamps"]
        res["timestamps"] = ts
    if "label" in batch[0]:
        res["labels"] = torch.stack([b["label"] for b in batch])
    if all("levels" in b for b in batch):
        lv = torch.zeros((len(batch), lmax), dtype=torch.uint8)
        for i, b in enumerate(batch):
            lv[i, : b["levels"].shape[0]] = b["levels"]
        res["levels"] = lv
    return res

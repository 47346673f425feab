"""Loading feature stores in training loops: :class:`FeatureDataset` and :func:`collate_features`.

Re-exported from :mod:`featcomp.store.dataset` (which imports torch).
"""

try:
    from featcomp.store.dataset import FeatureDataset, collate_features, read_labels
except ModuleNotFoundError as _e:  # plain `pip install featcomp` is the reader: no torch
    if (_e.name or "").split(".")[0] != "torch":
        raise
    from featcomp.errors import missing_extra

    raise missing_extra(_e, "featcomp.data.FeatureDataset (a torch Dataset)") from None

__all__ = ["FeatureDataset", "collate_features", "read_labels"]

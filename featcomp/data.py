"""Loading feature stores in training loops: :class:`FeatureDataset` and :func:`collate_features`.

Re-exported from :mod:`featcomp.store.dataset` (which imports torch).
"""

from featcomp.store.dataset import FeatureDataset, collate_features, read_labels

__all__ = ["FeatureDataset", "collate_features", "read_labels"]

"""The linear-probe epoch that the store benchmarks time (what a training loop over stored features does)."""

from __future__ import annotations

from typing import Any


def probe_epoch(dataset: Any, dim: int, classes: int = 10) -> None:
    """One epoch over ``dataset`` (items as :class:`featcomp.data.FeatureDataset` yields them): batches of
    16 videos shuffled with seed 0, ``num_workers=0``, a masked mean pool over frames, one linear layer
    of ``dim`` -> ``classes``, SGD at lr 0.01."""
    import torch

    from featcomp.data import collate_features

    dl = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, collate_fn=collate_features, num_workers=0,
                                     generator=torch.Generator().manual_seed(0))
    model = torch.nn.Linear(dim, classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for b in dl:
        m = b["mask"].unsqueeze(-1).float()
        loss = torch.nn.functional.cross_entropy(model((b["features"] * m).sum(1) / m.sum(1)), b["labels"])
        opt.zero_grad()
        loss.backward()
        opt.step()

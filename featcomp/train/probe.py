"""A linear probe: the one downstream evaluation used for every representation.

Standardized features, multinomial logistic regression (softmax + cross-entropy, small L2), full-batch
L-BFGS in torch. The same probe on float32, float16, int8, PCA and learned latents makes the
accuracies comparable (the reference figures in DATA.md use this protocol).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LinearProbe", "probe_accuracy"]


class LinearProbe:
    """Multinomial logistic regression on standardized features.

    Args:
        l2: L2 penalty on the weights (per example, as in ``mean CE + l2 * ||W||^2``).
        max_iter: L-BFGS iterations.
    """

    def __init__(self, l2: float = 1e-4, max_iter: int = 200) -> None:
        self.l2 = float(l2)
        self.max_iter = int(max_iter)

    def fit(self, x: np.ndarray, y: np.ndarray, num_classes: int | None = None) -> LinearProbe:
        """x float (N, D), y int (N,)."""
        x = torch.as_tensor(np.asarray(x, np.float32)).double()
        y = torch.as_tensor(np.asarray(y)).long()
        self.mean = x.mean(0)
        self.std = x.std(0).clamp_min(1e-8)
        xs = (x - self.mean) / self.std
        k = int(num_classes or int(y.max()) + 1)
        self.w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], lr=1.0, max_iter=self.max_iter, history_size=20,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(xs @ self.w + self.b, y) + self.l2 * (self.w * self.w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(x, np.float32)).double()
        return ((x - self.mean) / self.std @ self.w + self.b).argmax(1).numpy()

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())


def probe_accuracy(x_train, y_train, x_test, y_test, **kwargs) -> float:
    """Fit a :class:`LinearProbe` on (x_train, y_train) and return its accuracy on (x_test, y_test)."""
    return LinearProbe(**kwargs).fit(x_train, y_train).accuracy(x_test, y_test)

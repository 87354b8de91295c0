"""Class-balanced multinomial logistic regression (the segmentation head), fitted full-batch with LBFGS.

WHY linear: it keeps refits interactive (a few thousand samples, tens of LBFGS steps), it is deterministic
(zero init, full batch, no sampling inside the optimiser), and being linear in the patch features it lets
prediction interpolate logits instead of features (see voxel_features.py). Non-linearity in intensity comes
from the hat-basis expansion, not from hidden layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..probes.train import minimize_lbfgs


@dataclass
class LinearFit:
    weight: np.ndarray  # [K+1, D]
    bias: np.ndarray  # [K+1]
    train_accuracy: float  # class-balanced accuracy on the fitted samples
    iterations: int


def fit_softmax(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float = 1e-3, max_iter: int = 100
) -> LinearFit:
    """Minimise class-balanced cross-entropy + weight_decay/2 * ||W||^2 over (W, b); x [N,D] float32, y [N]."""
    x = x.float()
    y = y.long()
    counts = torch.bincount(y, minlength=num_classes).float()
    sample_w = (1.0 / (counts.clamp_min(1.0) * float((counts > 0).sum())))[y]
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(num_classes, requires_grad=True)

    def objective() -> torch.Tensor:
        logits = x @ w.T + b
        loss = (torch.nn.functional.cross_entropy(logits, y, reduction="none") * sample_w).sum()
        return loss + 0.5 * weight_decay * (w * w).sum()

    evaluations = minimize_lbfgs([w, b], objective, max_iter, tolerance_grad=1e-6, tolerance_change=1e-9)
    with torch.no_grad():
        pred = (x @ w.T + b).argmax(1)
        hit = (pred == y).float()
        per_class = [float(hit[y == c].mean()) for c in range(num_classes) if counts[c] > 0]
    return LinearFit(
        w.detach().numpy().copy(), b.detach().numpy().copy(), float(np.mean(per_class)), evaluations
    )

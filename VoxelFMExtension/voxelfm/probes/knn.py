"""k-nearest-neighbour baseline on cosine similarity of pooled features (no training).

A probe that does not beat this baseline has learned nothing the raw embedding geometry does not
already give. Vectors are centred with the training mean first (foundation features share a large
common component that otherwise dominates cosine similarity).
"""

from __future__ import annotations

import numpy as np

from .targets import EncodedTargets


def _normalise(x: np.ndarray, centre: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - centre
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(train_x: np.ndarray, test_x: np.ndarray, k: int) -> np.ndarray:
    """Indices [n_test, k] of the most cosine-similar training vectors."""
    centre = train_x.astype(np.float64).mean(0)
    sim = _normalise(test_x, centre) @ _normalise(train_x, centre).T
    k = min(k, train_x.shape[0])
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def _nelson_aalen_at(time: np.ndarray, event: np.ndarray, t_star: float) -> float:
    h = 0.0
    for u in np.unique(time[(event > 0.5) & (time <= t_star)]):
        h += ((time == u) & (event > 0.5)).sum() / (time >= u).sum()
    return h


def knn_predict(
    train_x: np.ndarray, targets: EncodedTargets, train_idx: np.ndarray, test_x: np.ndarray, k: int
) -> np.ndarray:
    """Predictions in the probe's output format (probabilities / values / risk) for ``test_x``."""
    nn_idx = train_idx[nearest(train_x, test_x, k)]
    y = targets.y
    if targets.kind in ("binary", "multilabel", "regression"):
        out = y[nn_idx].astype(np.float64).mean(axis=1)
        return out[:, 0] if targets.kind == "binary" else out
    if targets.kind == "multiclass":
        n_cls = len(targets.class_names or [])
        return np.stack([np.bincount(row, minlength=n_cls) / row.size for row in y[nn_idx]])
    # survival: cumulative hazard of the neighbours at the median training follow-up time
    t_star = float(np.median(y[train_idx, 0]))
    return np.array([_nelson_aalen_at(y[row, 0], y[row, 1], t_star) for row in nn_idx])

"""Evaluation metrics for probes, implemented in numpy (no scikit-learn / lifelines at run time).

Definitions follow the usual references so numbers can be compared with other tools: AUC is the
Mann-Whitney statistic (ties count one half, as scikit-learn's ``roc_auc_score``); R^2 is
1 - SS_res / SS_tot (scikit-learn's ``r2_score``); the C-index is Harrell's, with the pair rules of
``lifelines.utils.concordance_index``. The tests check agreement with those libraries.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata


def _as_1d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve for binary labels (1 = positive); NaN if only one class is present."""
    y = _as_1d(labels, "labels") > 0.5
    s = _as_1d(scores, "scores")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)  # average ranks: tied scores count one half
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, starting at (0, 0) with threshold +inf."""
    y = _as_1d(labels, "labels") > 0.5
    s = _as_1d(scores, "scores")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[last_of_group].astype(np.float64)
    fps = (last_of_group + 1 - tps).astype(np.float64)
    n_pos, n_neg = tps[-1] if tps.size else 0.0, fps[-1] if fps.size else 0.0
    tpr = np.r_[0.0, tps / n_pos] if n_pos > 0 else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / n_neg] if n_neg > 0 else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, s_sorted[last_of_group]]


def accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels).reshape(-1) == np.asarray(predicted).reshape(-1)))


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (averaged uniformly over columns for 2-D input)."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 1:
        t, p = t[:, None], p.reshape(-1, 1)
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    return float(np.mean(r2))


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t = np.asarray(y_true, dtype=np.float64)
    return float(np.mean(np.abs(t - np.asarray(y_pred, dtype=np.float64).reshape(t.shape))))


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    a, b = _as_1d(x, "x"), _as_1d(y, "y")
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray, chunk: int = 2048) -> float:
    """Harrell's C: fraction of comparable pairs where the higher risk fails first (ties in risk: 1/2).

    A pair (i, j) is comparable when i has an event and t_i < t_j, or t_i == t_j and j is censored
    (lifelines' rule). Equals ``lifelines.utils.concordance_index(time, -risk, event)``. NaN if no pair
    is comparable (e.g. everything censored).
    """
    t = _as_1d(time, "time")
    r = _as_1d(risk, "risk")
    e = _as_1d(event, "event") > 0.5
    correct = 0.0
    pairs = 0.0
    idx = np.nonzero(e)[0]
    for start in range(0, idx.size, chunk):
        i = idx[start : start + chunk]
        ti, ri = t[i][:, None], r[i][:, None]
        comparable = (ti < t[None, :]) | ((ti == t[None, :]) & ~e[None, :])
        pairs += comparable.sum()
        correct += (comparable & (ri > r[None, :])).sum() + 0.5 * (comparable & (ri == r[None, :])).sum()
    return float(correct / pairs) if pairs > 0 else float("nan")


def bootstrap_ci(
    metric: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(indices)`` over resampled cases.

    ``strata`` (e.g. class labels) keeps each group's size fixed in every resample, so a resample never
    loses a class. Resamples where the metric is undefined (NaN) are dropped.
    """
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.nonzero(strata == g)[0] for g in np.unique(strata)]
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, g.size, g.size)] for g in groups if g.size])
        v = metric(idx)
        if np.isfinite(v):
            values.append(v)
    if len(values) < max(10, n_boot // 10):
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def with_ci(
    metric: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> dict[str, float | list[float]]:
    """{"value": metric on all cases, "ci95": [lo, hi] by bootstrap} (JSON-ready)."""
    value = metric(np.arange(n))
    lo, hi = (
        bootstrap_ci(metric, n, n_boot=n_boot, seed=seed, strata=strata) if n_boot > 0 else (np.nan, np.nan)
    )
    return {"value": _clean(value), "ci95": [_clean(lo), _clean(hi)]}


def _clean(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None

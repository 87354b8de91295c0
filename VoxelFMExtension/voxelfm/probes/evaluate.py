"""Task metrics with bootstrap 95% confidence intervals, as a JSON-ready dict."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import metrics as M
from .survival import logrank_test
from .targets import EncodedTargets


def _macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    vals = [M.roc_auc(y[:, k], p[:, k]) for k in range(y.shape[1])]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate(targets: EncodedTargets, preds: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Metrics of ``preds`` (one row per case of ``targets``) for the target kind."""
    kind, y, n = targets.kind, targets.y, targets.n
    strata = targets.strata
    out: dict[str, Any] = {"n_cases": n}
    if kind == "binary":
        yt, p = y[:, 0], preds.reshape(-1)
        out["auc"] = M.with_ci(lambda i: M.roc_auc(yt[i], p[i]), n, n_boot, seed, strata)
        out["accuracy"] = M.with_ci(lambda i: M.accuracy(yt[i], p[i] >= 0.5), n, n_boot, seed, strata)
        out["n_positive"] = int(yt.sum())
    elif kind == "multilabel":
        out["auc_macro"] = M.with_ci(lambda i: _macro_auc(y[i], preds[i]), n, n_boot, seed)
        out["per_target"] = {
            name: {
                "auc": M.with_ci(lambda i, k=k: M.roc_auc(y[i, k], preds[i, k]), n, n_boot, seed, y[:, k]),
                "n_positive": int(y[:, k].sum()),
            }
            for k, name in enumerate(targets.names)
        }
    elif kind == "multiclass":
        onehot = np.eye(preds.shape[1])[y]
        out["auc_macro_ovr"] = M.with_ci(lambda i: _macro_auc(onehot[i], preds[i]), n, n_boot, seed, strata)
        out["accuracy"] = M.with_ci(lambda i: M.accuracy(y[i], preds[i].argmax(1)), n, n_boot, seed, strata)
    elif kind == "regression":
        out["r2"] = M.with_ci(lambda i: M.r2_score(y[i], preds[i]), n, n_boot, seed)
        out["per_target"] = {
            name: {
                "r2": M.with_ci(lambda i, k=k: M.r2_score(y[i, k], preds[i, k]), n, n_boot, seed),
                "mae": M.with_ci(lambda i, k=k: M.mean_absolute_error(y[i, k], preds[i, k]), n, n_boot, seed),
                "pearson_r": M.with_ci(lambda i, k=k: M.pearson_r(y[i, k], preds[i, k]), n, n_boot, seed),
            }
            for k, name in enumerate(targets.names)
        }
    else:
        t, e, r = y[:, 0], y[:, 1], preds.reshape(-1)
        # Harrell's C costs O(n^2) per resample: fewer resamples for large cohorts keep fitting interactive
        n_boot_c = n_boot if n <= 1500 else min(n_boot, max(100, int(n_boot * (1500 / n) ** 2)))
        out["c_index"] = M.with_ci(lambda i: M.concordance_index(t[i], r[i], e[i]), n, n_boot_c, seed, strata)
        out["c_index"]["n_bootstrap"] = n_boot_c
        high = r > np.median(r)
        stat, p = logrank_test(t, e, high) if 0 < high.sum() < n else (float("nan"), float("nan"))
        out["logrank_median_split"] = {"chi2": M._clean(stat), "p_value": M._clean(p)}
        out["n_events"] = int(e.sum())
    return out


def headline(metrics: dict[str, Any]) -> tuple[str, float | None]:
    """The one number to show for a fit: (name, value)."""
    for key in ("auc", "auc_macro", "auc_macro_ovr", "r2", "c_index"):
        if key in metrics:
            return key, metrics[key]["value"]
    return "", None

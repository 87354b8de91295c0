"""Fit report: NAME.report.json (metrics, out-of-fold predictions) + NAME.report.png (plots).

Plots are drawn from held-out predictions only: ROC curves (classification), predicted vs true
(regression), Kaplan-Meier curves of the predicted high- and low-risk halves (survival).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files.atomic import atomic_write, atomic_write_text
from ..files.probe_file import json_safe
from .fit import FitResult
from .metrics import roc_auc, roc_curve
from .survival import kaplan_meier


def _km_groups(result: FitResult, held: np.ndarray) -> dict[str, Any]:
    y, risk = result.targets.y[held], result.oof_predictions[held]
    high = risk > np.median(risk)
    out = {}
    for name, sel in (("low_risk", ~high), ("high_risk", high)):
        km = kaplan_meier(y[sel, 0], y[sel, 1])
        out[name] = {"n": int(sel.sum()), "time": km.time, "survival": km.survival}
    return out


def report_dict(result: FitResult, ids: list[str] | None = None) -> dict[str, Any]:
    probe = result.probe
    held = np.nonzero(result.tested)[0]
    ids = ids or [str(i) for i in range(len(result.tested))]
    cases = []
    for i in held:
        row: dict[str, Any] = {"id": ids[i], "prediction": np.atleast_1d(result.oof_predictions[i]).tolist()}
        if result.folds is not None:
            row["fold"] = int(result.folds[i])
        row["target"] = np.atleast_1d(result.targets.y[i]).tolist()
        cases.append(row)
    rep: dict[str, Any] = {
        "task": probe.task,
        "kind": probe.kind,
        "targets": probe.target_names,
        "class_names": probe.class_names,
        "backbone": probe.backbone,
        "pooling": probe.pooling,
        "metrics": result.metrics,
        "out_of_fold": cases,
    }
    if probe.kind == "survival":
        rep["kaplan_meier"] = _km_groups(result, held)
    return rep


def _plot(result: FitResult, png: str) -> None:
    import matplotlib  # matplotlib (~0.3 s) only when the report picture is drawn

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # as above

    probe, kind = result.probe, result.probe.kind
    held = np.nonzero(result.tested)[0]
    y, p = result.targets.y[held], result.oof_predictions[held]
    knn = None if result.knn_predictions is None else result.knn_predictions[held]
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if kind in ("binary", "multilabel", "multiclass"):
        if kind == "binary":
            curves = [(probe.target_names[0], y[:, 0], p, None if knn is None else knn)]
        elif kind == "multilabel":
            curves = [(n, y[:, k], p[:, k], None) for k, n in enumerate(probe.target_names)]
        else:
            curves = [
                (c, (y == k).astype(float), p[:, k], None) for k, c in enumerate(probe.class_names or [])
            ]
        for name, yt, score, knn_score in curves[:10]:
            fpr, tpr, _ = roc_curve(yt, score)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(yt, score):.3f})")
            if knn_score is not None:
                fpr, tpr, _ = roc_curve(yt, knn_score)
                ax.plot(fpr, tpr, ls="--", label=f"kNN baseline (AUC {roc_auc(yt, knn_score):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC (held-out predictions)")
        ax.legend(loc="lower right", fontsize=8)
    elif kind == "regression":
        for k, name in enumerate(probe.target_names[:5]):
            ax.scatter(y[:, k], p[:, k], s=12, alpha=0.7, label=name)
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        r2 = result.metrics["r2"]["value"]
        ax.set(xlabel="True", ylabel="Predicted", title=f"Predicted vs true (held-out, R² {r2:.3f})")
        ax.legend(fontsize=8)
    else:
        for name, g in _km_groups(result, held).items():
            ax.step(g["time"], g["survival"], where="post", label=f"{name.replace('_', ' ')} (n={g['n']})")
        c = result.metrics["c_index"]["value"]
        pval = result.metrics["logrank_median_split"]["p_value"]
        ax.set(xlabel="Time", ylabel="Survival probability", ylim=(0, 1.02))
        ax.set_title(f"Kaplan-Meier by predicted risk (C-index {c:.3f}, log-rank p={pval:.2g})", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, format="png")


def write_report(
    result: FitResult, out: str | os.PathLike, ids: list[str] | None = None
) -> tuple[Path, Path]:
    """Write OUT.report.json and OUT.report.png (OUT = the probe path without suffix)."""
    base = Path(out)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    json_path = base.with_name(base.name + ".report.json")
    png_path = base.with_name(base.name + ".report.png")
    text = json.dumps(json_safe(report_dict(result, ids)), indent=2, allow_nan=False) + "\n"
    atomic_write_text(json_path, text)
    atomic_write(png_path, lambda tmp: _plot(result, str(tmp)), suffix=".png")
    return json_path, png_path

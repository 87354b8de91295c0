"""Validate and encode probe targets (classification labels, regression values, survival time/event).

Bad targets are the most common input problem, so each check names the offending rows/columns and
what to do. Encoded targets are plain arrays the trainer and metrics use directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

TASKS = ("classification", "regression", "survival")
MAX_CLASSES = 50
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


@dataclass
class EncodedTargets:
    task: str
    kind: str  # binary | multiclass | multilabel | regression | survival
    names: list[str]  # target names (survival: [time, event])
    y: (
        np.ndarray
    )  # binary/multilabel/regression: float32 [N, K]; multiclass: int64 [N]; survival: float64 [N, 2]
    class_names: list[str] | None = None  # binary / multiclass: label value of each class index
    strata: np.ndarray | None = None  # per-case group for stratified folds and bootstrap
    scale: dict[str, list[float]] = field(default_factory=dict)  # regression: target mean/std

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def out_dim(self) -> int:
        if self.kind == "multiclass":
            return len(self.class_names or [])
        if self.kind == "survival":
            return 1
        return int(self.y.shape[1])


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return v.strip() == "" or v.strip().lower() in ("nan", "na", "n/a", "none", "null")
    try:
        return bool(np.isnan(float(v)))
    except (TypeError, ValueError):
        return False


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool | np.bool_):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            return 1.0 if v.strip().lower() in _TRUE else 0.0
        return None


def _rows(mask: np.ndarray, limit: int = 8) -> str:
    idx = np.nonzero(mask)[0]
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    return shown + (f" ... ({idx.size} in all)" if idx.size > limit else "")


def _columns(targets: Any, names: list[str] | None, default: str) -> tuple[list[np.ndarray], list[str]]:
    arr = np.asarray(targets, dtype=object)
    if arr.ndim == 0:
        raise InputError("Targets must be a list or array with one entry per case.")
    if arr.ndim == 1:
        cols = [arr]
    elif arr.ndim == 2:
        cols = [arr[:, k] for k in range(arr.shape[1])]
    else:
        raise InputError(f"Targets must be 1-D or 2-D, got shape {arr.shape}.")
    if names is None:
        names = [default] if len(cols) == 1 else [f"{default}{k}" for k in range(len(cols))]
    if len(names) != len(cols):
        raise InputError(f"{len(names)} target names given for {len(cols)} target columns.")
    if arr.shape[0] == 0:
        raise InputError("No cases: the manifest/target list is empty. Add at least a few cases per class.")
    for name, col in zip(names, cols, strict=True):
        missing = np.array([_is_missing(v) for v in col])
        if missing.any():
            raise InputError(
                f"Target {name!r} is missing (empty/NaN) for case(s) {_rows(missing)} (0-based). "
                "Fill in the values or remove those cases from the manifest."
            )
    return cols, list(names)


def _numeric(col: np.ndarray, name: str) -> np.ndarray:
    vals = [_as_float(v) for v in col]
    bad = np.array([v is None or not np.isfinite(v) for v in vals])
    if bad.any():
        raise InputError(
            f"Target {name!r} is not a finite number for case(s) {_rows(bad)}: e.g. {col[bad][0]!r}."
        )
    return np.asarray(vals, dtype=np.float64)


def _label_key(v: Any) -> str:
    f = _as_float(v) if not isinstance(v, str) or v.strip().lower() not in _TRUE | _FALSE else None
    if f is not None and np.isfinite(f):
        return str(int(f)) if float(f).is_integer() else repr(float(f))
    return str(v).strip()


def _sorted_classes(keys: list[str]) -> list[str]:
    uniq = sorted(set(keys))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def encode_classification(targets: Any, names: list[str] | None = None) -> EncodedTargets:
    cols, names = _columns(targets, names, "label")
    if len(cols) == 1:
        keys = [_label_key(v) for v in cols[0]]
        classes = _sorted_classes(keys)
        if len(classes) < 2:
            raise InputError(
                f"Target {names[0]!r} has only one class ({classes[0]!r}) across all {len(keys)} cases; "
                "a classifier needs examples of at least two classes."
            )
        if len(classes) > MAX_CLASSES:
            raise InputError(
                f"Target {names[0]!r} has {len(classes)} distinct values; for a continuous target use "
                "--task regression."
            )
        index = {c: i for i, c in enumerate(classes)}
        codes = np.array([index[k] for k in keys], dtype=np.int64)
        counts = np.bincount(codes, minlength=len(classes))
        if counts.min() < 2:
            raise InputError(
                f"Class {classes[int(counts.argmin())]!r} of target {names[0]!r} has {counts.min()} case(s); "
                "each class needs at least 2 for cross-validation."
            )
        if len(classes) == 2:
            y = codes.astype(np.float32)[:, None]
            return EncodedTargets("classification", "binary", names, y, classes, strata=codes)
        return EncodedTargets("classification", "multiclass", names, codes, classes, strata=codes)
    y = np.stack([_numeric(c, n) for c, n in zip(cols, names, strict=True)], axis=1)
    for k, name in enumerate(names):
        if not np.isin(y[:, k], (0.0, 1.0)).all():
            raise InputError(f"Multi-label target {name!r} must be 0/1 (or true/false) in every case.")
        if y[:, k].min() == y[:, k].max():
            raise InputError(
                f"Multi-label target {name!r} is {int(y[0, k])} in every case (one class only); "
                "drop that column or add cases of the other class."
            )
    return EncodedTargets(
        "classification", "multilabel", names, y.astype(np.float32), strata=y[:, 0].astype(np.int64)
    )


def encode_regression(targets: Any, names: list[str] | None = None) -> EncodedTargets:
    cols, names = _columns(targets, names, "value")
    y = np.stack([_numeric(c, n) for c, n in zip(cols, names, strict=True)], axis=1)
    std = y.std(axis=0)
    for k, name in enumerate(names):
        if std[k] == 0:
            raise InputError(
                f"Regression target {name!r} has the same value in every case; nothing to learn."
            )
    scale = {"mean": y.mean(axis=0).tolist(), "std": std.tolist()}
    return EncodedTargets("regression", "regression", names, y.astype(np.float32), scale=scale)


def encode_survival(targets: Any, names: list[str] | None = None) -> EncodedTargets:
    """targets: [N, 2] = (time, event) with event 1 = event observed, 0 = censored."""
    names = names or ["time", "event"]
    cols, names = _columns(targets, names, "time")
    if len(cols) != 2:
        raise InputError(
            "Survival targets need exactly two columns: time and event (1 = event, 0 = censored)."
        )
    time = _numeric(cols[0], names[0])
    event = _numeric(cols[1], names[1])
    if (time < 0).any():
        raise InputError(f"Survival time {names[0]!r} is negative for case(s) {_rows(time < 0)}.")
    if not np.isin(event, (0.0, 1.0)).all():
        raise InputError(f"Event column {names[1]!r} must be 0 (censored) or 1 (event) in every case.")
    if event.sum() == 0:
        raise InputError(
            f"All {time.size} cases are censored (no events in {names[1]!r}); survival needs observed events. "
            "Check the event column coding (1 = event, 0 = censored)."
        )
    if event.sum() < 2:
        raise InputError("Only one event observed; survival probes need at least 2 (better 20+) events.")
    return EncodedTargets(
        "survival", "survival", names, np.stack([time, event], axis=1), strata=event.astype(np.int64)
    )


def encode_targets(task: str, targets: Any, names: list[str] | None = None) -> EncodedTargets:
    if task == "classification":
        return encode_classification(targets, names)
    if task == "regression":
        return encode_regression(targets, names)
    if task == "survival":
        return encode_survival(targets, names)
    raise InputError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")

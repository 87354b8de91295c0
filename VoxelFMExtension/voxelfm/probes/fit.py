"""Fit a probe from features + targets: cross-validated metrics, a final head, a kNN baseline.

``fit_probe`` takes in-memory features (VolumeFeatures or dicts with cls/registers/patch), so it runs
without a model; the CLI feeds it features extracted (and cached) by the backbone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .config import ProbeConfig
from .cv import Split, inner_split, make_splits, out_of_fold
from .evaluate import evaluate, headline
from .knn import knn_predict
from .pooling import is_token_pooling, pool_all
from .probe import Probe
from .targets import EncodedTargets, encode_targets
from .train import Inputs, predict_head, train_head


@dataclass
class FitResult:
    probe: Probe
    metrics: dict[str, Any]  # out-of-fold (or test-split) metrics with 95% CIs; also in probe.metrics
    oof_predictions: np.ndarray  # one row per case; NaN for cases never in a test fold
    tested: np.ndarray  # bool per case: has an out-of-fold prediction
    targets: EncodedTargets
    folds: np.ndarray | None = None
    knn_predictions: np.ndarray | None = None


def subset_targets(t: EncodedTargets, idx: np.ndarray) -> EncodedTargets:
    return dataclasses.replace(t, y=t.y[idx], strata=None if t.strata is None else t.strata[idx])


def _out_shape(t: EncodedTargets) -> tuple[int, ...]:
    if t.kind in ("binary", "survival"):
        return ()
    return (t.out_dim,)


def _grouping_note(groups: np.ndarray | None) -> str:
    if groups is None:
        return ""
    return f", grouped by patient ({np.unique(groups).size} patients, none in both training and test)"


def _vectors(inputs: Inputs) -> np.ndarray:
    """kNN works on vectors: token inputs are mean-pooled."""
    return inputs if isinstance(inputs, np.ndarray) else np.stack([m.mean(0) for m in inputs])


def fit_probe(
    task: str,
    features: Sequence[Any],
    targets: Any,
    config: ProbeConfig | None = None,
    **kwargs: Any,
) -> FitResult:
    """Fit a probe on VolumeFeatures(-like) objects; see ``fit_probe_inputs`` for the options."""
    config = config or ProbeConfig()
    if len(features) == 0:
        raise InputError("No cases to fit a probe on (empty feature list / manifest).")
    return fit_probe_inputs(task, pool_all(list(features), config.pooling), targets, config, **kwargs)


def fit_probe_inputs(
    task: str,
    inputs: Inputs,
    targets: Any,
    config: ProbeConfig | None = None,
    *,
    target_names: list[str] | None = None,
    folds: Sequence[Any] | None = None,
    split: Sequence[str] | None = None,
    groups: Sequence[Any] | None = None,
    backbone: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> FitResult:
    """Cross-validate, then fit the final head.

    targets: classification labels [N] (binary/multi-class) or 0/1 matrix [N, L] (multi-label);
    regression values [N] or [N, T]; survival [N, 2] = (time, event). ``split`` (train/val/test per case)
    or ``folds`` (fold id per case) replace the default stratified k-fold; ``groups`` (patient per case)
    keeps each patient's cases within one part of every split. Metrics are measured on held-out cases only;
    with k-fold the final head is refitted on all cases.
    """
    config = config or ProbeConfig()
    progress = progress or no_progress
    n = len(inputs)
    if n == 0:
        raise InputError("No cases to fit a probe on (empty feature list / manifest).")
    if is_token_pooling(config.pooling) == isinstance(inputs, np.ndarray):
        raise InputError(f"Inputs do not match pooling {config.pooling!r} (vectors vs token matrices).")
    enc = encode_targets(task, targets, target_names)
    if enc.n != n:
        raise InputError(f"{n} feature sets but {enc.n} targets; they must correspond one to one.")
    for name, extra in (("folds", folds), ("split", split), ("groups", groups)):
        if extra is not None and len(extra) != n:
            raise InputError(f"'{name}' has {len(extra)} entries for {n} cases.")
    splits, fold_of_case = make_splits(
        n, enc.strata, config.folds, config.seed, config.val_fraction, folds, split, groups
    )
    group_arr = None if groups is None else np.array([str(g) for g in groups])
    n_steps = len(splits) + (1 if fold_of_case is not None else 0)
    histories: dict[str, Any] = {}
    trained_last = None
    step = 0

    def fit_predict(sp: Split) -> np.ndarray:
        nonlocal trained_last, step
        check_cancel(cancel)
        progress(step / n_steps, f"fitting {sp.name} ({sp.train.size} train / {sp.test.size} test cases)")
        trained = train_head(inputs, enc, sp.train, sp.val, config, config.seed + step, cancel)
        histories[sp.name] = {k: v for k, v in trained.history.items() if k != "val_loss"}
        trained_last = trained
        step += 1
        return predict_head(trained, inputs, sp.test, enc.kind)

    oof, tested = out_of_fold(splits, n, fit_predict, _out_shape(enc))
    held = np.nonzero(tested)[0]
    metrics = evaluate(subset_targets(enc, held), oof[held], config.n_bootstrap, config.seed)
    metrics["evaluation"] = (
        f"{len(splits)}-fold cross-validation, out-of-fold predictions"
        if fold_of_case is not None
        else "test split"
    ) + _grouping_note(group_arr)
    if group_arr is not None:
        metrics["grouping"] = {"groups": int(np.unique(group_arr).size), "cases": n, "kept_apart": True}
    per_fold = {}
    for sp in splits:
        key, value = headline(evaluate(subset_targets(enc, sp.test), oof[sp.test], 0))
        per_fold[sp.name] = value
    metrics["per_fold"] = {"metric": key, "values": per_fold}

    knn_oof = None
    if config.knn_k > 0:
        vec = _vectors(inputs)
        knn_oof = np.full_like(oof, np.nan)
        for sp in splits:
            knn_oof[sp.test] = knn_predict(vec[sp.train], enc, sp.train, vec[sp.test], config.knn_k)
        metrics["knn_baseline"] = evaluate(
            subset_targets(enc, held), knn_oof[held], config.n_bootstrap, config.seed
        )
        metrics["knn_baseline"]["k"] = config.knn_k

    if fold_of_case is not None:  # refit on every case for the probe that is shipped
        progress(step / n_steps, f"fitting the final probe on all {n} cases")
        all_idx = np.arange(n)
        train, val = inner_split(all_idx, enc.strata, config.val_fraction, config.seed, group_arr)
        final = train_head(inputs, enc, train, val, config, config.seed + 10_000, cancel)
        histories["final"] = {k: v for k, v in final.history.items() if k != "val_loss"}
    else:
        final = trained_last
    progress(1.0, "done")

    training: dict[str, Any] = {
        "config": config.to_dict(),
        "n_cases": n,
        "evaluation": metrics["evaluation"],
        "history": histories,
    }
    if enc.kind == "regression":
        training["target_scale"] = enc.scale
    if enc.kind == "survival":
        train_risk = predict_head(final, inputs, np.arange(n), enc.kind)
        training["risk_median"] = float(np.median(train_risk))
    probe = Probe(
        task=enc.task,
        kind=enc.kind,
        target_names=enc.names,
        pooling=config.pooling,
        trained=final,
        class_names=enc.class_names,
        backbone=dict(backbone or {}),
        preprocess=dict(preprocess or {}),
        metrics=metrics,
        training=training,
    )
    return FitResult(probe, metrics, oof, tested, enc, fold_of_case, knn_oof)

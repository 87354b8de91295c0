"""Cross-validation: stratified k-fold or user-given folds/splits, out-of-fold predictions.

Every reported metric is measured on cases the evaluated head never saw; early stopping uses an
inner validation split carved out of each training part. With ``groups`` (the manifest's ``patient`` or
``group`` column) every split keeps a group whole: two scans of one patient are near-duplicates, and one in
training with the other in test inflates every held-out metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass
class Split:
    name: str
    train: np.ndarray
    val: np.ndarray  # inner validation (early stopping)
    test: np.ndarray  # evaluation cases


def stratified_folds(strata: np.ndarray | None, n: int, k: int, seed: int) -> np.ndarray:
    """Fold id per case; each stratum is dealt round-robin over folds after shuffling."""
    if n < k:
        raise InputError(
            f"{n} cases are too few for {k}-fold cross-validation; use fewer folds or more cases."
        )
    rng = np.random.default_rng(seed)
    groups = np.zeros(n, np.int64) if strata is None else np.asarray(strata)
    fold = np.empty(n, np.int64)
    offset = 0
    for g in np.unique(groups):
        idx = rng.permutation(np.nonzero(groups == g)[0])
        fold[idx] = (np.arange(idx.size) + offset) % k
        offset += idx.size
    return fold


def grouped_folds(groups: np.ndarray, strata: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """Fold id per case with every group in one fold; groups (largest first, shuffled within a stratum) go to
    the fold holding the fewest cases of their stratum."""
    uniq, group_of = np.unique(np.asarray(groups), return_inverse=True)
    if uniq.size < k:
        raise InputError(
            f"{uniq.size} patients/groups are too few for {k}-fold cross-validation grouped by patient; use "
            "fewer folds or more patients."
        )
    rng = np.random.default_rng(seed)
    stratum = np.zeros(uniq.size, np.int64)
    if strata is not None:  # a group's stratum: its most common one
        codes = np.unique(np.asarray(strata), return_inverse=True)[1]
        stratum = np.array([np.bincount(codes[group_of == g]).argmax() for g in range(uniq.size)])
    sizes = np.bincount(group_of, minlength=uniq.size)
    fold_of_group = np.empty(uniq.size, np.int64)
    load = np.zeros((int(stratum.max()) + 1, k), np.int64)
    for g in sorted(rng.permutation(uniq.size), key=lambda g: -sizes[g]):
        per_stratum = load[stratum[g]]
        f = int(np.lexsort((np.arange(k), load.sum(0), per_stratum))[0])
        fold_of_group[g] = f
        load[stratum[g], f] += sizes[g]
    return fold_of_group[group_of]


def check_groups_apart(groups: np.ndarray, part: np.ndarray, what: str) -> None:
    """InputError when a patient/group has cases in two parts (user-given folds or train/test split)."""
    g = np.asarray(groups)
    spread = [str(v) for v in np.unique(g) if np.unique(part[g == v]).size > 1]
    if spread:
        raise InputError(
            f"Patient/group {', '.join(spread[:5])}{' ...' if len(spread) > 5 else ''} has cases in more than "
            f"one {what}: one patient must never be in both training and test. Fix the manifest's '{what}' column."
        )


def inner_split(
    idx: np.ndarray,
    strata: np.ndarray | None,
    fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training cases into (fit, validation), stratified (or by whole groups); no validation when too
    few cases."""
    if fraction <= 0 or idx.size < 10:
        return idx, idx[:0]
    if groups is not None:
        return _grouped_inner_split(idx, np.asarray(groups), fraction, seed)
    rng = np.random.default_rng(seed)
    groups = np.zeros(idx.size, np.int64) if strata is None else np.asarray(strata)[idx]
    val = []
    for g in np.unique(groups):
        members = rng.permutation(idx[groups == g])
        n_val = int(round(members.size * fraction))
        if members.size - n_val >= 1:
            val.append(members[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else idx[:0]
    return np.setdiff1d(idx, val_idx), val_idx


def _grouped_inner_split(
    idx: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    uniq = rng.permutation(np.unique(groups[idx]))
    target = int(round(idx.size * fraction))
    val: list[np.ndarray] = []
    taken = 0
    for g in uniq[:-1]:  # at least one group stays for fitting
        if taken >= target:
            break
        members = idx[groups[idx] == g]
        val.append(members)
        taken += members.size
    val_idx = np.sort(np.concatenate(val)) if val else idx[:0]
    return np.setdiff1d(idx, val_idx), val_idx


def make_splits(
    n: int,
    strata: np.ndarray | None,
    k: int,
    seed: int,
    val_fraction: float,
    folds: Sequence | None = None,
    split: Sequence[str] | None = None,
    groups: Sequence | None = None,
) -> tuple[list[Split], np.ndarray | None]:
    """Evaluation splits + the fold id per case (None for a single train/test split).

    ``split`` (train/val/test per case) beats ``folds`` (any hashable fold id per case) beats k-fold;
    ``groups`` (patient per case) keeps each group within one part of every split (checked for user-given
    folds and splits, built into k-fold).
    """
    g = None if groups is None else np.array([str(v) for v in groups])
    if split is not None:
        s = np.array([str(v).strip().lower() for v in split])
        unknown = sorted(set(s) - {"train", "val", "test"})
        if unknown:
            raise InputError(f"Split values must be train, val or test; found {unknown}.")
        train, val, test = (np.nonzero(s == v)[0] for v in ("train", "val", "test"))
        if train.size == 0 or test.size == 0:
            raise InputError("A 'split' column needs both 'train' and 'test' cases.")
        if g is not None:
            check_groups_apart(g, s, "split")
        if val.size == 0:
            train, val = inner_split(train, strata, val_fraction, seed, g)
        return [Split("test", train, val, test)], None
    if folds is not None:
        keys = np.array([str(v) for v in folds])
        uniq = sorted(set(keys))
        if len(uniq) < 2:
            raise InputError("The 'fold' column has a single value; give at least two folds.")
        fold = np.array([uniq.index(v) for v in keys])
        if g is not None:
            check_groups_apart(g, fold, "fold")
    elif g is not None:
        fold = grouped_folds(g, strata, k, seed)
    else:
        fold = stratified_folds(strata, n, k, seed)
    out = []
    for f in range(int(fold.max()) + 1):
        test = np.nonzero(fold == f)[0]
        train, val = inner_split(np.nonzero(fold != f)[0], strata, val_fraction, seed + 1 + f, g)
        out.append(Split(f"fold{f}", train, val, test))
    return out, fold


def out_of_fold(
    splits: list[Split], n: int, fit_predict: Callable[[Split], np.ndarray], out_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``fit_predict`` per split; (predictions for all cases (NaN where never tested), tested mask)."""
    preds = np.full((n, *out_shape), np.nan)
    tested = np.zeros(n, bool)
    for sp in splits:
        preds[sp.test] = fit_predict(sp)
        tested[sp.test] = True
    return preds, tested

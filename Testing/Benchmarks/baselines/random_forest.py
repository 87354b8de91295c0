"""Classic few-shot baseline (ilastik style): a random forest on a multi-scale filter bank, same sparse labels.

Benchmark-only, so it lives beside the benchmarks rather than in the installed package; scikit-learn is
imported lazily and is never needed by voxelfm itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from voxelfm.imaging.volume import Volume
from voxelfm.segment.labels import balanced_sample, labelled_voxels

SIGMAS_MM = (1.0, 2.0, 4.0, 8.0)


def filter_bank(volume: Volume, sigmas_mm=SIGMAS_MM) -> np.ndarray:
    """[F, k, j, i] float32: raw HU, and per scale Gaussian, gradient magnitude, LoG, Hessian eigenvalues."""
    x = np.clip(np.asarray(volume.array, dtype=np.float32), -1000, 2000)
    sp = volume.spacing[::-1]
    out = [x]
    for s in sigmas_mm:
        sig = np.maximum(s / sp, 0.5)
        out.append(ndimage.gaussian_filter(x, sig, mode="nearest"))
        out.append(ndimage.gaussian_gradient_magnitude(x, sig, mode="nearest"))
        out.append(ndimage.gaussian_laplace(x, sig, mode="nearest"))
        h = np.empty((3, 3, *x.shape), dtype=np.float32)
        for a in range(3):
            for b in range(a, 3):
                order = [0, 0, 0]
                order[a] += 1
                order[b] += 1
                h[a, b] = h[b, a] = ndimage.gaussian_filter(x, sig, order=order, mode="nearest") / (
                    sp[a] * sp[b]
                )
        ev = np.linalg.eigvalsh(np.moveaxis(h, (0, 1), (-2, -1)))  # sorted eigenvalues, [k,j,i,3]
        out.extend(np.moveaxis(ev, -1, 0).astype(np.float32))
    return np.stack(out).astype(np.float32)


def rf_segment(
    volume: Volume,
    labels: Volume,
    bank: np.ndarray | None = None,
    max_per_class: int = 4000,
    seed: int = 0,
    n_estimators: int = 100,
    prior_strength: float | None = None,
) -> np.ndarray:
    """Fit a class-balanced random forest at labelled voxels; return the labelmap on the volume grid.

    The same prior correction as our probe (``SegmentationConfig.prior_strength``; None = 0.5 for fully labelled
    slices, else 0) is applied to the forest's class-balanced probabilities, so the comparison is like for like.
    """
    from sklearn.ensemble import RandomForestClassifier

    bank = filter_bank(volume) if bank is None else bank
    lv = labelled_voxels(labels.array, labels.ijk_to_ras, tuple(volume.array.shape), volume.ijk_to_ras)
    k1 = len(lv.values) + 1
    pick = balanced_sample(lv.cls, k1, max_per_class, seed)
    kji = lv.kji[pick]
    x = bank[:, kji[:, 0], kji[:, 1], kji[:, 2]].T
    rf = RandomForestClassifier(
        n_estimators=n_estimators, class_weight="balanced", n_jobs=1, random_state=seed, min_samples_leaf=2
    )
    rf.fit(x, lv.cls[pick])
    strength = prior_strength if prior_strength is not None else (0.5 if lv.full_slices else 0.0)
    freq = np.array([lv.counts[v] for v in [0, *lv.values]], dtype=np.float64)
    log_prior = (strength * np.log(freq / freq.sum()))[rf.classes_.astype(np.int64)]
    flat = bank.reshape(bank.shape[0], -1).T
    pred = np.empty(len(flat), dtype=np.int64)
    for s in range(0, len(flat), 500_000):
        proba = rf.predict_proba(flat[s : s + 500_000])
        pred[s : s + 500_000] = rf.classes_[np.argmax(np.log(proba + 1e-6) + log_prior[None, :], axis=1)]
    values = np.array([0, *lv.values], dtype=np.uint8)
    return values[pred].reshape(volume.array.shape)

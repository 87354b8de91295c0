"""Benchmark-only comparison methods (Testing/Benchmarks/baselines): they still run on the labels we give ours."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from voxelfm.imaging.volume import Volume
from voxelfm.segment.labels import select_slices
from voxelfm.segment.metrics import dice

BENCHMARKS = Path(__file__).resolve().parents[1] / "Benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


def _planted() -> tuple[Volume, np.ndarray]:
    """Two bright ellipsoids (labels 1, 2) and an unlabelled blob of the same HU, in anisotropic voxels."""
    rng = np.random.default_rng(0)
    shape = (40, 48, 56)  # k, j, i
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = np.zeros(shape, np.uint8)
    for n, (ck, cj, ci, r) in enumerate([(20, 16, 18, 9.0), (20, 30, 38, 8.0)], start=1):
        truth[(k - ck) ** 2 + ((j - cj) / 1.2) ** 2 + (i - ci) ** 2 < r * r] = n
    distractor = (k - 20) ** 2 + (j - 38) ** 2 + (i - 12) ** 2 < 36
    hu = rng.normal(0.0, 15.0, shape).astype(np.float32)
    hu[(truth > 0) | distractor] += 120.0
    m = np.diag([1.5, 1.5, 2.0, 1.0])
    m[:3, 3] = (-30.0, 12.0, 5.0)
    return Volume(hu, m, "planted"), truth


def test_random_forest_baseline_runs_on_same_labels():
    pytest.importorskip("sklearn")
    from baselines.random_forest import filter_bank, rf_segment

    vol, truth = _planted()
    bank = filter_bank(vol, sigmas_mm=(1.0, 3.0))
    assert bank.shape == (
        1 + 2 * 6,
        *truth.shape,
    )  # HU + per scale: smooth, |grad|, LoG, 3 Hessian eigenvalues
    labels = Volume(select_slices(truth, [14, 20, 26]), vol.ijk_to_ras)
    pred = rf_segment(vol, labels, bank=bank, n_estimators=10)
    assert set(np.unique(pred)) <= {0, 1, 2}
    assert dice(pred > 0, truth > 0) > 0.6  # intensity finds the bright blobs (and the distractor)

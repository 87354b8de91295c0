"""The segmentation class-prior correction as applied, not as recorded: the bias added to the logits equals
``prior_strength * log(labelled class frequency)``, sign included, and "auto" means 0.5 for fully labelled
slices and 0 for scribbles.

Issue 22: removing the correction or flipping its sign passed the suite (only the recorded setting was
tested). These tests measure the logits the probe predicts from, with the frequencies counted here from the
label image, independently of the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_segment_core import planted_case

from voxelfm.imaging.volume import Volume
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.fit import fit_segmentation
from voxelfm.segment.labels import UNLABELLED, select_slices


@pytest.fixture(scope="module")
def case():
    vol, feats, truth = planted_case()
    slices = Volume(select_slices(truth, [14, 20, 26]), vol.ijk_to_ras, "slices")
    scribbles = np.full(truth.shape, UNLABELLED, np.uint8)
    for value in (0, 1, 2):  # a few voxels of each class on one slice: scribbles, not full slices
        k, j, i = np.argwhere(truth == value)[[0, 5, 10, 15]].T
        scribbles[k, j, i] = value
    return vol, feats, slices, Volume(scribbles, vol.ijk_to_ras, "scribbles")


def _fit(vol, feats, labels, strength):
    return fit_segmentation(vol, feats, labels, SegmentationConfig(prior_strength=strength))


def _logit_deltas(probe, vol, feats) -> np.ndarray:
    """What the prediction compares: logits of classes 1..K minus the background logit, every voxel."""
    return probe.delta_slabs(vol, feats)(0, vol.array.shape[0])


def _log_frequency_ratio(labels: np.ndarray, values=(1, 2)) -> np.ndarray:
    counts = {v: int(np.count_nonzero(labels == v)) for v in (0, *values)}
    return np.array([np.log(counts[v] / counts[0]) for v in values])


@pytest.mark.parametrize("strength", [0.7, 2.0])
def test_applied_bias_is_strength_times_log_frequency(case, strength):
    vol, feats, slices, _ = case
    plain = _fit(vol, feats, slices, 0.0)
    corrected = _fit(vol, feats, slices, strength)
    expected = strength * _log_frequency_ratio(slices.array)  # small structures: negative, pushed down
    assert (expected < 0).all()
    added = _logit_deltas(corrected, vol, feats) - _logit_deltas(plain, vol, feats)
    for c, value in enumerate(expected):
        np.testing.assert_allclose(added[c], value, rtol=1e-4, atol=1e-4)
    assert corrected.metrics["prior_strength"] == strength
    shrunk = np.count_nonzero(_predict(corrected, vol, feats).labelmap > 0)
    assert shrunk < np.count_nonzero(_predict(plain, vol, feats).labelmap > 0), "small classes must shrink"


def test_auto_prior_is_half_for_full_slices_and_none_for_scribbles(case):
    vol, feats, slices, scribbles = case
    auto, half = _fit(vol, feats, slices, None), _fit(vol, feats, slices, 0.5)
    np.testing.assert_allclose(_logit_deltas(auto, vol, feats), _logit_deltas(half, vol, feats), atol=1e-5)
    auto_s, zero_s = _fit(vol, feats, scribbles, None), _fit(vol, feats, scribbles, 0.0)
    np.testing.assert_allclose(
        _logit_deltas(auto_s, vol, feats), _logit_deltas(zero_s, vol, feats), atol=1e-5
    )
    assert (auto.metrics["prior_strength"], auto_s.metrics["prior_strength"]) == (0.5, 0.0)


def _predict(probe, vol, feats):
    return probe.predict(vol, feats, with_probabilities=False)

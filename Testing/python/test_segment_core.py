"""Few-shot segmentation core: planted structures, label workflows, geometry, bad inputs, probe files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest

from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume
from voxelfm.segment import SegmentationConfig, fit_segmentation
from voxelfm.segment.labels import UNLABELLED, labelled_voxels, painted_slices_to_labels, select_slices
from voxelfm.segment.metrics import dice
from voxelfm.segment.postprocess import PostprocessConfig, postprocess_labelmap
from voxelfm.segment.voxel_features import IntensityConfig

CELL = 8  # voxels per feature cell (stands in for a 14^3 patch)


@dataclass
class FakeFeatures:
    patch: np.ndarray  # [d,h,w,C]
    grid_to_ras: np.ndarray
    model: dict = field(default_factory=lambda: {"id": "synthetic", "sha256": "0" * 64})
    preprocess: dict = field(default_factory=dict)


def planted_case(seed: int = 0, n_struct: int = 2):
    """CT with structures whose patch features know *where* they are, plus a same-HU distractor blob.

    Intensity alone cannot separate structure from distractor; coarse features alone give blurry borders.
    """
    rng = np.random.default_rng(seed)
    shape = (40, 48, 56)  # k, j, i
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = np.zeros(shape, np.uint8)
    centres = [(20, 16, 18, 9.0), (20, 30, 38, 8.0)][:n_struct]
    for n, (ck, cj, ci, r) in enumerate(centres, start=1):
        truth[(k - ck) ** 2 + ((j - cj) / 1.2) ** 2 + (i - ci) ** 2 < r * r] = n
    distractor = (k - 20) ** 2 + (j - 38) ** 2 + (i - 12) ** 2 < 36
    hu = rng.normal(0.0, 15.0, shape).astype(np.float32)
    hu[truth > 0] += 120.0
    hu[distractor & (truth == 0)] += 120.0
    m = np.diag([1.5, 1.5, 2.0, 1.0])
    m[:3, 3] = (-30.0, 12.0, 5.0)
    vol = Volume(hu, m, "planted")
    d, h, w = (s // CELL for s in shape)
    frac = [truth[: d * CELL, : h * CELL, : w * CELL] == n for n in range(1, n_struct + 1)]
    chans = [f.reshape(d, CELL, h, CELL, w, CELL).mean(axis=(1, 3, 5)) for f in frac]
    noise = rng.normal(0.0, 0.05, (d, h, w, 6))
    patch = np.concatenate([np.stack(chans, -1), noise], -1).astype(np.float32)
    cell = np.eye(4)
    cell[:3, :3] *= CELL
    cell[:3, 3] = (CELL - 1) / 2.0
    return vol, FakeFeatures(patch, m @ cell), truth


def _fit_predict(vol, feats, labels_arr, labels_m=None, cfg=None):
    lab = Volume(labels_arr, vol.ijk_to_ras if labels_m is None else labels_m)
    probe = fit_segmentation(vol, feats, lab, cfg or SegmentationConfig())
    return probe, probe.predict(vol, feats)


def test_planted_multiclass_from_three_slices():
    vol, feats, truth = planted_case()
    labels = select_slices(truth, [14, 20, 26])
    probe, res = _fit_predict(vol, feats, labels)
    assert probe.class_values == [1, 2]
    assert res.labelmap.shape == truth.shape and res.labelmap.dtype == np.uint8
    for c in (1, 2):
        assert dice(res.labelmap == c, truth == c) > 0.9
    p = res.probabilities.astype(np.float32)
    assert p.shape == (3, *truth.shape)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=5e-3)
    np.testing.assert_array_equal(p.argmax(0), res.labelmap)  # labelmap = argmax of probabilities


def test_both_feature_kinds_are_needed_on_planted_case():
    """Intensity alone confuses the distractor blob; coarse features alone blur borders; together > either."""
    vol, feats, truth = planted_case()
    labels = select_slices(truth, [16, 24])
    scores = {}
    for name, cfg in {
        "both": SegmentationConfig(),
        "patch": SegmentationConfig(intensity=IntensityConfig(enabled=False)),
        "intensity": SegmentationConfig(use_patch_features=False),
    }.items():
        _, res = _fit_predict(vol, feats, labels, cfg=cfg)
        scores[name] = np.mean([dice(res.labelmap == c, truth == c) for c in (1, 2)])
    assert scores["both"] > 0.9
    assert scores["both"] > scores["patch"] + 0.03 and scores["both"] > scores["intensity"] + 0.2


def test_slices_and_scribbles_workflows_label_counts():
    vol, feats, truth = planted_case()
    painted = np.zeros_like(truth)
    painted[20] = truth[20]  # the user painted slice 20 only
    original = painted.copy()
    lab = painted_slices_to_labels(painted, axis=0)
    np.testing.assert_array_equal(painted, original)  # input untouched
    assert (lab != UNLABELLED).sum() == truth[20].size  # whole slice labelled
    lv = labelled_voxels(lab, vol.ijk_to_ras, truth.shape, vol.ijk_to_ras)
    assert lv.counts == {
        0: int((truth[20] == 0).sum()),
        1: int((truth[20] == 1).sum()),
        2: int((truth[20] == 2).sum()),
    }

    scribble = np.full(truth.shape, UNLABELLED, np.uint8)
    scribble[20, 16, 12:25] = 1  # a stroke inside structure 1
    scribble[20, 30, 33:44] = 2
    scribble[5, 5:40, 5] = 0  # background strokes
    scribble[20, 38, 8:16] = 0  # ... including across the distractor
    lv = labelled_voxels(scribble, vol.ijk_to_ras, truth.shape, vol.ijk_to_ras)
    assert lv.counts == {0: 35 + 8, 1: 13, 2: 11}
    probe, res = _fit_predict(vol, feats, scribble)
    for c in (1, 2):
        assert dice(res.labelmap == c, truth == c) > 0.8
    assert not lv.full_slices and probe.metrics["prior_strength"] == 0.0  # stroke counts are not frequencies
    probe, _ = _fit_predict(vol, feats, lab)
    assert probe.metrics["fully_labelled_slices"] and probe.metrics["prior_strength"] == 0.5


def _flip_j(arr, m):
    """The same labels stored with a flipped j axis (other origin and direction): same physical content."""
    flip = np.eye(4)
    flip[1, 1] = -1.0
    flip[1, 3] = arr.shape[1] - 1
    return np.ascontiguousarray(arr[:, ::-1]), m @ flip


def test_flipped_label_grid_gives_identical_result():
    vol, feats, truth = planted_case()
    labels = select_slices(truth, [14, 20, 26])
    _, res = _fit_predict(vol, feats, labels)
    flipped, m = _flip_j(labels, vol.ijk_to_ras)
    assert not np.array_equal(flipped, labels)
    _, res_f = _fit_predict(vol, feats, flipped, m)
    np.testing.assert_array_equal(res_f.labelmap, res.labelmap)


def test_label_grid_coarser_and_shifted_is_mapped_in_physical_space():
    vol, _, truth = planted_case()
    # a label grid with twice the voxel size, covering the image: voxel (i,j,k) centre = image index 2*i + 0.5
    m = vol.ijk_to_ras @ np.array([[2, 0, 0, 0.5], [0, 2, 0, 0.5], [0, 0, 2, 0.5], [0, 0, 0, 1.0]])
    coarse = np.full((20, 24, 28), UNLABELLED, np.uint8)
    coarse[10, 8, 9] = 1
    coarse[10, 8, 10] = 1
    coarse[10, 8, 11] = 1
    coarse[2, 2, 2:6] = 0
    lv = labelled_voxels(coarse, m, truth.shape, vol.ijk_to_ras)
    got = {tuple(p) for p, c in zip(lv.kji, lv.cls, strict=True) if c == 1}
    # nearest image voxel of 2*i + 0.5 rounds up (floor(x + 0.5))
    assert got == {(21, 17, 19), (21, 17, 21), (21, 17, 23)}


def test_oblique_volume_segments():
    """A rotated scan (oblique direction matrix): geometry is carried by matrices, the result is unchanged."""
    vol, feats, truth = planted_case()
    c, s = np.cos(0.5), np.sin(0.5)
    rot = np.array([[c, -s, 0, 10], [s, c, 0, -4], [0, 0, 1, 3], [0, 0, 0, 1.0]]) @ np.array(
        [[1, 0, 0, 0], [0, np.cos(0.3), -np.sin(0.3), 0], [0, np.sin(0.3), np.cos(0.3), 0], [0, 0, 0, 1.0]]
    )
    vol_o = Volume(vol.array, rot @ vol.ijk_to_ras)
    feats_o = FakeFeatures(feats.patch, rot @ feats.grid_to_ras)
    labels = select_slices(truth, [14, 20, 26])
    _, res = _fit_predict(vol_o, feats_o, labels)
    for c_ in (1, 2):
        assert dice(res.labelmap == c_, truth == c_) > 0.9


def test_upsampler_general_path_matches_separable():
    from voxelfm.segment.voxel_features import LogitUpsampler

    rng = np.random.default_rng(1)
    grid = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    g2r = np.array([[0, 0, -4.0, 20], [0, 3.0, 0, 1], [5.0, 0, 0, -2], [0, 0, 0, 1]])  # permuted + flipped
    up = LogitUpsampler((3, 4, 5), g2r, (9, 10, 11), np.diag([1.1, 0.9, 1.3, 1.0]))
    assert up.separable
    import torch

    a = up(torch.from_numpy(grid))
    up.separable = False
    b = up(torch.from_numpy(grid))
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("none", "no labelled voxels"),
        ("only_background", "Only background"),
        ("no_background", "No background"),
        ("one_voxel", "only 1 labelled voxel"),
        ("outside", "outside the image"),
        ("no_overlap", "does not overlap"),
        ("bad_values", "Label values must be"),
    ],
)
def test_bad_labels_give_clear_errors(case, message):
    vol, feats, truth = planted_case()
    labels = np.full(truth.shape, UNLABELLED, np.int32)
    m = vol.ijk_to_ras
    if case == "only_background":
        labels[3, :5, :5] = 0
    elif case == "no_background":
        labels[20, 16, 12:20] = 1
    elif case == "one_voxel":
        labels[3, :5, :5] = 0
        labels[20, 16, 18] = 1
    elif case == "outside":  # a label grid twice as large; labels only in the part outside the image
        labels = np.full((80, 48, 56), UNLABELLED, np.int32)
        labels[60:, 10:20, 10:20] = 0
        labels[70, 15, 15:20] = 1
    elif case == "no_overlap":
        labels[3, :5, :5] = 0
        labels[20, 16, 12:20] = 1
        m = m.copy()
        m[:3, 3] += 1000.0
    elif case == "bad_values":
        labels[3, :5, :5] = 300
    with pytest.raises(InputError, match=message):
        fit_segmentation(vol, feats, Volume(labels, m))


def test_probe_save_load_identical_predictions(tmp_path):
    import json

    from voxelfm.segment.probe_file import load_segmentation_probe, save_segmentation_probe

    vol, feats, truth = planted_case()
    labels = select_slices(truth, [14, 20, 26])
    probe, res = _fit_predict(vol, feats, labels)
    probe.classes = [
        dataclasses.replace(c, name=n) for c, n in zip(probe.classes, ["liver", "spleen"], strict=True)
    ]
    st, js = save_segmentation_probe(probe, tmp_path / "p")
    meta = json.loads(js.read_text())
    assert [c["name"] for c in meta["classes"]] == ["liver", "spleen"]
    assert meta["backbone"]["sha256"] == "0" * 64 and meta["feature_config"]["intensity"]["enabled"]
    loaded = load_segmentation_probe(tmp_path / "p.json")
    res2 = loaded.predict(vol, feats)
    np.testing.assert_array_equal(res2.labelmap, res.labelmap)
    np.testing.assert_array_equal(res2.probabilities, res.probabilities)
    other = FakeFeatures(feats.patch, feats.grid_to_ras, model={"id": "x", "sha256": "1" * 64})
    with pytest.raises(InputError, match="re-extract features"):
        loaded.predict(vol, other)
    st.write_bytes(st.read_bytes()[:-4] + b"\0\0\0\0")
    from voxelfm.errors import IntegrityError

    with pytest.raises(IntegrityError):
        load_segmentation_probe(tmp_path / "p")


def test_postprocess_largest_component_and_holes():
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    lab[4, 4, 4] = 0  # a hole
    lab[0, 0, 0] = 1  # a speck
    out = postprocess_labelmap(lab, PostprocessConfig(largest_component=True, fill_holes=True))
    assert out[0, 0, 0] == 0 and out[4, 4, 4] == 1 and out.sum() == 216
    np.testing.assert_array_equal(postprocess_labelmap(lab, PostprocessConfig()), lab)  # off by default


def test_structure_voxels_partly_outside_warn():
    vol, feats, truth = planted_case()
    labels = np.full((60, 48, 56), UNLABELLED, np.uint8)  # a taller label grid: slices 40..59 are outside
    labels[:40] = select_slices(np.where(truth == 1, 1, 0), [14, 20, 26])
    labels[50, 10, 10:15] = 1
    probe = fit_segmentation(vol, feats, Volume(labels, vol.ijk_to_ras))
    assert probe.metrics["warnings"] == ["5 structure voxels lie outside the image and were ignored."]
    res = probe.predict(vol, feats)  # binary path: labelmap = argmax of probabilities too
    np.testing.assert_array_equal(res.probabilities.astype(np.float32).argmax(0), res.labelmap)
    assert dice(res.labelmap == 1, truth == 1) > 0.9


def test_blob_channel_marks_bright_blobs_not_background():
    from voxelfm.segment.voxel_features import BLOB_KNOTS, IntensityChannel, _channel_map

    vol, _, truth = planted_case()
    blob = _channel_map(vol.array, vol.spacing[::-1], IntensityChannel("blob", 3.0, BLOB_KNOTS))
    inside, outside = np.median(blob[truth == 1]), np.median(blob[truth == 0])
    assert inside < -2.0 and outside > inside + 3.0  # negative curvature inside bright blobs

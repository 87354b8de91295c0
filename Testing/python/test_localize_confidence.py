"""Landmarks that say when they are not there: a point expected outside the target's field of view is reported
as not found (result, .mrk.json position status "missing", the command's output, the Slicer node); the coarse
registration that predicts it is deterministic. Planted features (``localize_fakes``) and a tiny random
backbone for the CLI keep it fast.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from localize_fakes import PATCH, planted_access

from voxelfm.cli.main import main
from voxelfm.imaging.io import write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.localize.canonical import canonical_volume
from voxelfm.localize.config import TransferConfig
from voxelfm.localize.markups_json import read_point_list, write_point_list
from voxelfm.localize.points import PointList, ijk_to_ras_points
from voxelfm.localize.registration import register
from voxelfm.localize.result import NOT_FOUND
from voxelfm.localize.template import build_template
from voxelfm.localize.transfer import transfer

SPACING = 2.0
CELL = SPACING * PATCH
NAMES = ["low_left", "low_right", "middle", "low_back", "high_a", "high_b"]
# (i, j, k) centres of 6-voxel blobs; the two "high_" ones lie above the cut of the target
CENTRES = np.array([[14, 14, 6], [34, 14, 9], [24, 26, 13], [24, 30, 4], [16, 20, 31], [32, 24, 30]]) + 0.5
CUT = 20  # the target keeps slices k < CUT (40 mm): "high_" points are 20-22 mm beyond its edge


def _phantom() -> np.ndarray:
    rng = np.random.default_rng(5)
    shape = (36, 40, 48)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    radius = 0.40 + 0.004 * k  # a body that widens towards the head: not the same at every level
    body = ((i - 24) / (48 * radius)) ** 2 + ((j - 20) / (40 * radius)) ** 2 < 1
    arr = np.where(body, 40.0 + rng.normal(0, 30, shape), -1000.0).astype(np.float32)
    for n, (ci, cj, ck) in enumerate(CENTRES.astype(int)):
        arr[ck - 3 : ck + 3, cj - 3 : cj + 3, ci - 3 : ci + 3] = rng.normal(250 + 60 * n, 150, (6, 6, 6))
    return arr


def _ras_matrix() -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.diag([-SPACING, -SPACING, SPACING])  # patient-aligned like the canonical grid
    m[:3, 3] = [100.0, 80.0, -40.0]
    return m


@pytest.fixture(scope="module")
def cut_case():
    arr, m = _phantom(), _ras_matrix()
    ref = Volume(arr, m, "ref")
    pts = PointList(NAMES, ijk_to_ras_points(m, CENTRES), name="ref points")
    target = Volume(arr[:CUT].copy(), m, "cut")  # the same scan stopping short of the upper blobs
    return ref, pts, target


def _transfer(ref, pts, target, **kw):
    cfg = TransferConfig(feature_spacing_mm=SPACING, context_cells=1, refine="none", **kw)
    access = planted_access()
    return transfer(target, [build_template(ref, pts, access, cfg)], access)


def test_a_landmark_outside_the_target_is_not_found(cut_case, tmp_path):
    ref, pts, target = cut_case
    result = _transfer(ref, pts, target)
    lost = dict(zip(result.points.names, result.points.missing, strict=True))
    assert lost == {n: n.startswith("high_") for n in NAMES}
    assert result.details["missing"] == 2
    for n, name in enumerate(result.points.names):
        if name.startswith("high_"):
            assert result.confidence[n] == 0.0 and result.points.descriptions[n].startswith(NOT_FOUND)
            assert result.points.ras[n][2] > target.ijk_to_ras[2, 3] + SPACING * CUT  # expected above the cut
        else:
            assert result.points.descriptions[n].startswith("confidence ")
            assert np.linalg.norm(result.points.ras[n] - pts.ras[n]) < CELL
    # the file: every point is there, the lost ones with Slicer's "missing" status; readers skip them
    path = write_point_list(result.points, tmp_path / "found.mrk.json")
    status = {
        p["label"]: p["positionStatus"] for p in json.loads(path.read_text())["markups"][0]["controlPoints"]
    }
    assert status == {n: "missing" if n.startswith("high_") else "defined" for n in NAMES}
    assert read_point_list(path).names == NAMES[:4]


def test_points_inside_are_all_found(cut_case):
    ref, pts, _ = cut_case
    result = _transfer(ref, pts, ref)  # the whole scan: nothing is missing
    assert not result.points.missing.any() and result.details["registered"]
    assert np.all(np.linalg.norm(result.points.ras - pts.ras, axis=1) < CELL)


def test_clear_features_override_a_wrong_registration(cut_case):
    """The registration only starts the search: when the features clearly match elsewhere (here exactly, a
    planted match), the point goes there, and its confidence says that the two cues disagree."""
    ref, pts, _ = cut_case
    cfg = TransferConfig(feature_spacing_mm=SPACING, context_cells=1, refine="none")
    access = planted_access()
    template = build_template(ref, pts, access, cfg)
    right = transfer(ref, [template], access)
    template.scout_to_ras = template.scout_to_ras.copy()
    template.scout_to_ras[:3, 3] += [
        0.0,
        0.0,
        12.0,
    ]  # the registration now expects every point 12 mm too high
    wrong = transfer(ref, [template], access)
    off = [d["from_expected_mm"] for d in wrong.details["points"].values()]
    assert min(off) > 6.0  # the registration did predict the wrong places...
    assert np.all(np.linalg.norm(wrong.points.ras - pts.ras, axis=1) < CELL)  # ...the features won
    assert np.all(wrong.confidence < right.confidence)


def test_registration_is_deterministic(cut_case):
    ref, _, target = cut_case
    small = [canonical_volume(v, 4.0) for v in (ref, target)]
    first = register(*small)
    np.testing.assert_array_equal(first, register(*small))  # seeded samples, one thread
    np.testing.assert_allclose(first, np.eye(4), atol=2.0)  # the same scan in the same space: ~identity


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(0)
    return save_backbone(
        VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=2)), tmp_path_factory.mktemp("tiny")
    )


def test_localize_command_names_the_points_not_found(cut_case, tiny_model, tmp_path, caplog):
    ref, pts, target = cut_case
    write_volume(ref, tmp_path / "ref.nii.gz")
    write_volume(target, tmp_path / "cut.nii.gz")
    write_point_list(pts, tmp_path / "ref.mrk.json")
    out = tmp_path / "found.mrk.json"
    args = ["localize", str(tmp_path / "cut.nii.gz"), "--model", str(tiny_model), "--device", "cpu"]
    args += [
        "--feature-spacing",
        "2",
        "--reference",
        str(tmp_path / "ref.nii.gz"),
        str(tmp_path / "ref.mrk.json"),
    ]
    with caplog.at_level(logging.INFO, logger="voxelfm"):
        assert main([*args, "--out", str(out)]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("high_a: not found") for m in said) and any("2 not found" in m for m in said)
    controls = json.loads(out.read_text())["markups"][0]["controlPoints"]
    assert [c["label"] for c in controls] == NAMES  # the contract: one control point per reference point
    assert [c["positionStatus"] for c in controls] == ["defined"] * 4 + ["missing"] * 2


def test_slicer_node_marks_the_point_missing(cut_case, mrml_scene, tmp_path):
    import slicer

    from VoxelFMLib.markups_nodes import write_points_node

    ref, pts, target = cut_case
    result = _transfer(ref, pts, target)
    node = write_points_node(mrml_scene, result.points, "VoxelFM landmarks")
    status = [node.GetNthControlPointPositionStatus(n) for n in range(node.GetNumberOfControlPoints())]
    missing, defined = slicer.vtkMRMLMarkupsNode.PositionMissing, slicer.vtkMRMLMarkupsNode.PositionDefined
    assert status == [defined] * 4 + [missing] * 2
    # Slicer's own reader takes our file's "missing" status the same way
    read = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "read")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    storage.SetFileName(str(write_point_list(result.points, tmp_path / "found.mrk.json")))
    assert storage.ReadData(read)
    assert [read.GetNthControlPointPositionStatus(n) for n in range(6)] == status

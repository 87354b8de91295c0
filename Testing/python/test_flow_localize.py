"""VoxelFM Localize as a user drives it, in both scene kinds (bare MRML and trame-slicer's SlicerApp), on a real
CT (abdomen_3mm) with the bundled model: each step calls the logic exactly as the module's buttons do
(``LocalisationLogic.find`` / ``make_box`` with a ``LocalizeChoice`` of the parameter node) and is checked at
once: the result reflects the current inputs, the user's nodes are as the user left them, the scene census is
what the step promises.

The target is the reference CT stored 12 mm right, 9 mm posterior and 6 mm up (whole voxels), so a landmark at
``p`` in the reference is at ``p + SHIFT`` in the target: found points land within a millimetre or so, and a
stale reference (a point dragged 25 mm, a reference moved by a transform) shows as an error of that size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from flow_steps import (
    RESULT_LIST,
    ROI,
    direct,
    points_snapshot,
    volume_snapshot,
    world_points,
)
from mrml_scene import require_slicer_core

slicer = require_slicer_core("safetensors")

import vtk  # noqa: E402
from flow_checks import Census  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from VoxelFMLib.features_logic import FeaturesLogic  # noqa: E402
from VoxelFMLib.localize_logic import LocalisationLogic, LocalizeChoice  # noqa: E402
from VoxelFMLib.volume_nodes import create_labelmap_node  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "Benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import localisation_cases as lc  # noqa: E402

SHIFT = np.array([12.0, -9.0, 6.0])
NAMES = ("liver", "spleen", "kidney_left", "vertebrae_L1")
NEAR = 4.0  # mm: a found point this close to where the current reference says it is
VOLUME_NODES = {
    "vtkMRMLScalarVolumeNode": 1,
    "vtkMRMLScalarVolumeDisplayNode": 1,
    "vtkMRMLVolumeArchetypeStorageNode": 1,
}


@pytest.fixture(scope="module")
def abdomen(data_dir):
    case = lc.abdomen_case(data_dir, (*NAMES, "kidney_right"))
    return case.volume, {name: case.points.position(name) for name in case.points.names}


@pytest.fixture
def flow(a_slicer_app, abdomen, tmp_path):
    """The user's session: reference CT + target CT loaded from files, a point list placed on the reference."""
    volume, truth = abdomen
    scene = a_slicer_app.scene
    moved = volume.ijk_to_ras.copy()
    moved[:3, 3] += SHIFT
    reference = a_slicer_app.load_volume(volume, tmp_path, "reference")
    target = a_slicer_app.load_volume(Volume(volume.array.copy(), moved, "target"), tmp_path, "target")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "my landmarks")
    points.CreateDefaultDisplayNodes()
    for name in NAMES:
        points.AddControlPoint(vtk.vtkVector3d(*truth[name]), name)
    choice = LocalizeChoice(target=target, reference_volume=reference, reference_points=points)
    logic = LocalisationLogic(model="voxelfm-tiny", device="cpu")
    return scene, logic, choice, truth


def _find(logic, choice, scene, in_worker=direct):
    """The Find button: the logic's one call, then the widget's showResult keeps the result as the output."""
    out = logic.find(choice, scene, in_worker=in_worker)
    choice.output_points = out.node
    return out


def _fresh(choice) -> dict[str, np.ndarray]:
    """The landmarks a new logic (no cached templates) finds for the choice, not written anywhere."""
    fresh = LocalisationLogic(model="voxelfm-tiny", device="cpu")
    result = fresh.predict(fresh.prepare(choice.target, choice.references()))
    return dict(zip(result.points.names, result.points.ras, strict=True))


def _assert_found_where_the_reference_says(result_node, reference_points):
    found, placed = world_points(result_node), world_points(reference_points)
    assert list(found) == list(placed), "the result has exactly the current reference landmarks, in order"
    errors = {name: float(np.linalg.norm(found[name] - (placed[name] + SHIFT))) for name in placed}
    assert max(errors.values()) < NEAR, f"found points off the current reference (mm): {errors}"


def test_references_dragged_added_renamed_then_corrections_kept_and_a_box(flow):
    scene, logic, choice, truth = flow
    watch = Census(scene)
    references = choice.reference_points
    reference_ct = volume_snapshot(choice.reference_volume)

    first = _find(logic, choice, scene)  # 1. Find: a new result list
    watch.step(added=RESULT_LIST)
    _assert_found_where_the_reference_says(first.node, references)
    placed = points_snapshot(references)

    # 2. the user drags the liver point 25 mm, adds the right kidney and renames the spleen point
    liver = list(world_points(references)).index("liver")
    references.SetNthControlPointPosition(liver, *(truth["liver"] + [-15.0, 20.0, 0.0]))
    references.AddControlPoint(vtk.vtkVector3d(*truth["kidney_right"]), "kidney_right")
    references.SetNthControlPointLabel(list(world_points(references)).index("spleen"), "spleen centre")
    placed = points_snapshot(references)
    watch.user_step()

    again = _find(logic, choice, scene)  # 3. Find again: the current points, into the untouched result list
    watch.step()
    assert again.node is first.node
    _assert_found_where_the_reference_says(again.node, references)
    assert points_snapshot(references) == placed and volume_snapshot(choice.reference_volume) == reference_ct

    # 4. the user corrects a found point (unlock + move) and adds a point of their own to the result list
    result = again.node
    n = list(world_points(result)).index("kidney_left")
    result.SetNthControlPointLocked(n, False)
    result.SetNthControlPointPosition(n, *(np.array(result.GetNthControlPointPosition(n)) + [2.0, 0.0, 3.0]))
    result.AddControlPoint(vtk.vtkVector3d(0.0, 0.0, 0.0), "my lesion")
    corrected = points_snapshot(result)
    watch.user_step()

    third = _find(logic, choice, scene)  # 5. Find again: the corrected list is kept, the result is a new list
    watch.step(added=RESULT_LIST)
    assert third.node is not result and points_snapshot(result) == corrected
    assert "new" in third.note and result.GetName() in third.note
    _assert_found_where_the_reference_says(third.node, references)

    fourth = _find(logic, choice, scene)  # 6. the new list is untouched: written again in place
    watch.step()
    assert fourth.node is third.node and points_snapshot(result) == corrected and not fourth.note

    choice.box_corners = "kidney_left, spleen centre"  # 7. a box from the current result
    roi = logic.make_box(choice)
    watch.step(added=ROI)
    found = world_points(fourth.node)
    centre = [0.0, 0.0, 0.0]
    roi.GetCenterWorld(centre)
    corners = np.array([found["kidney_left"], found["spleen centre"]])
    np.testing.assert_allclose(centre, corners.mean(0), atol=1e-6)
    np.testing.assert_allclose(roi.GetSize(), np.abs(corners[0] - corners[1]), atol=1e-6)
    assert points_snapshot(references) == placed and points_snapshot(result) == corrected


def test_a_dragged_reference_point_is_used_by_the_next_find(flow):
    scene, logic, choice, truth = flow
    first = _find(logic, choice, scene)
    watch = Census(scene)
    choice.reference_points.SetNthControlPointPosition(0, *(truth["liver"] + [-15.0, 20.0, 0.0]))  # drag
    choice.compare_points = first.node  # "how far did they move": compared with the result list itself
    second = _find(logic, choice, scene)
    watch.step()
    assert second.node is first.node
    _assert_found_where_the_reference_says(second.node, choice.reference_points)
    assert second.distances["liver"] > 20.0 and max(second.distances.values()) == second.distances["liver"]


def test_a_corrected_result_list_is_kept_when_finding_again(flow):
    scene, logic, choice, _ = flow
    first = _find(logic, choice, scene)
    result = first.node
    result.SetNthControlPointLocked(0, False)  # the user corrects the first found point by 3 mm
    result.SetNthControlPointPosition(0, *(np.array(result.GetNthControlPointPosition(0)) + [3.0, 0.0, 0.0]))
    corrected = points_snapshot(result)
    watch = Census(scene)
    second = _find(logic, choice, scene)
    watch.step(added=RESULT_LIST)
    assert second.node is not result and points_snapshot(result) == corrected
    assert choice.output_points is second.node and result.GetName() in second.note


def test_a_result_list_is_a_valid_reference_for_the_next_find(flow):
    scene, logic, choice, truth = flow
    found = _find(logic, choice, scene).node
    watch = Census(scene)
    back = LocalizeChoice(
        target=choice.reference_volume, reference_volume=choice.target, reference_points=found
    )
    out = _find(
        logic, back, scene
    )  # the target with its found landmarks as the reference, back to the first CT
    watch.step(added=RESULT_LIST)
    for name, position in world_points(out.node).items():
        assert np.linalg.norm(position - truth[name]) < NEAR, name
    assert out.node is not found and out.node is not choice.reference_points


def test_a_transform_or_new_voxels_of_the_reference_ct_are_used_by_the_next_find(flow):
    scene, logic, choice, _ = flow
    watch = Census(scene)
    first = _find(logic, choice, scene)
    watch.step(added=RESULT_LIST)
    _assert_found_where_the_reference_says(first.node, choice.reference_points)

    # the user moves the reference CT 15 mm left with a transform: the same points now sit 15 mm further right
    # in its anatomy, so the landmarks in the target are 15 mm to the right of before
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "move reference")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 15.0)
    transform.SetMatrixTransformToParent(matrix)
    choice.reference_volume.SetAndObserveTransformNodeID(transform.GetID())
    watch.user_step()
    before = world_points(first.node)
    second = _find(logic, choice, scene)
    watch.step()
    after = world_points(second.node)
    for name in NAMES:
        np.testing.assert_allclose(after[name] - before[name], [-15.0, 0.0, 0.0], atol=NEAR)

    matrix.SetElement(0, 3, 0.0)  # the user edits the transform back (Transforms module slider)
    transform.SetMatrixTransformToParent(matrix)
    third = _find(logic, choice, scene)
    watch.step()
    _assert_found_where_the_reference_says(third.node, choice.reference_points)
    before = world_points(third.node)

    reference = choice.reference_volume  # the user's tool rewrites the reference voxels: 5 columns along i
    voxels = slicer.util.arrayFromVolume(reference)
    moved = np.full_like(voxels, -1000)
    moved[..., 5:] = voxels[..., :-5]
    slicer.util.updateVolumeFromArray(reference, moved)
    fourth = _find(logic, choice, scene)
    watch.step()
    after, fresh = world_points(fourth.node), _fresh(choice)  # what a new session finds in these inputs
    for name, position in fresh.items():
        np.testing.assert_allclose(after[name], position, atol=1e-3)
    assert np.median([np.linalg.norm(after[n] - before[n]) for n in fresh]) > 10.0  # the edit moved them


def test_target_removed_during_the_run_writes_nothing(flow):
    scene, logic, choice, _ = flow
    first = _find(logic, choice, scene)
    earlier = points_snapshot(first.node)
    target = choice.target
    watch = Census(scene)

    def remove_target_meanwhile(fn, *args):
        scene.RemoveNode(target)  # the user deletes the target while the worker runs
        removed = watch.removed_since()  # the app may remove its display and storage nodes too
        assert removed["vtkMRMLScalarVolumeNode"] == 1
        watch.user_step()
        return fn(*args)

    with pytest.raises(InputError, match="'target' was removed .*nothing was written"):
        logic.find(choice, scene, in_worker=remove_target_meanwhile)
    watch.step()  # no result list
    assert points_snapshot(first.node) == earlier


def test_target_changed_during_the_run_writes_nothing(flow):
    scene, logic, choice, _ = flow
    watch = Census(scene)

    def touch_target_meanwhile(fn, *args):
        choice.target.GetImageData().Modified()  # a new modification stamp, the same voxels
        return fn(*args)

    _find(logic, choice, scene, in_worker=touch_target_meanwhile)  # written: nothing changed
    watch.step(added=RESULT_LIST)

    def edit_target_meanwhile(fn, *args):
        array = slicer.util.arrayFromVolume(choice.target)
        array[:] = np.flip(array, axis=2)
        slicer.util.arrayFromVolumeModified(choice.target)
        return fn(*args)

    with pytest.raises(InputError, match="'target' changed .*nothing was written"):
        logic.find(choice, scene, in_worker=edit_target_meanwhile)
    watch.step()


def test_a_blank_point_name_gets_a_name(flow):
    scene, logic, choice, _ = flow
    choice.reference_points.SetNthControlPointLabel(1, " ")
    out = _find(logic, choice, scene)
    labels = list(world_points(out.node))
    assert all(label.strip() for label in labels), labels
    assert labels[1] == "my landmarks-2" and choice.reference_points.GetNthControlPointLabel(1) == " "


def test_labelmaps_and_colour_volumes_are_refused_as_the_ct(flow):
    scene, logic, choice, _ = flow
    ct = choice.target
    labels = create_labelmap_node(
        scene, (slicer.util.arrayFromVolume(ct) > 200).astype(np.uint8), _ijk_to_ras(ct), "bones"
    )
    colour = FeaturesLogic(model="voxelfm-tiny", device="cpu").run(ct).pca_node  # VoxelFM Features' output
    watch = Census(scene)
    for node, why in ((labels, "labelmap"), (colour, "colour/vector volume")):
        with pytest.raises(InputError, match=f"'{node.GetName()}' cannot be the target.*{why}"):
            logic.find(LocalizeChoice(node, choice.reference_volume, choice.reference_points), scene)
        with pytest.raises(InputError, match=f"'{node.GetName()}' cannot be the reference scan.*{why}"):
            logic.find(LocalizeChoice(ct, node, choice.reference_points), scene)
        second = LocalizeChoice(
            ct, choice.reference_volume, choice.reference_points, node, choice.reference_points
        )
        with pytest.raises(
            InputError, match=f"'{node.GetName()}' cannot be the second reference scan.*{why}"
        ):
            logic.find(second, scene)
    watch.step()


def _ijk_to_ras(node) -> np.ndarray:
    from VoxelFMLib.volume_nodes import node_ijk_to_ras

    return node_ijk_to_ras(node)

"""VoxelFM Segment as a user drives it, on a real CT with the bundled tiny model, in both scene kinds.

paint -> fit -> paint more -> refit -> Undo -> refit into the same output -> correct a predicted segment ->
refit -> save the probe and apply it to a second CT; and the other modules' outputs (a labelmap, the PCA
colour volume) offered as "the CT". After every step: the result is what a fresh pipeline computes from the
CURRENT paint and voxels, the user's paint and corrections are untouched, the scene census is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import require_slicer_core

slicer = require_slicer_core()

from flow_checks import Census, Kept, load_ct  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.features.service import feature_service  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from voxelfm.segment.pipeline import SegmentationPipeline  # noqa: E402
from VoxelFMLib import segment_logic, segmentation_nodes, volume_nodes  # noqa: E402
from VoxelFMLib.feature_display import show_features_pca  # noqa: E402
from VoxelFMLib.report_logic import ReportLogic  # noqa: E402
from VoxelFMLib.retrieval_logic import RetrievalLogic  # noqa: E402
from VoxelFMLib.segment_tags import is_prediction_segment  # noqa: E402
from VoxelFMLib.undo import editor_logic_undo_saver  # noqa: E402

pytestmark = pytest.mark.slicer

MODEL = "voxelfm-tiny"
CT = "totalseg/abdomen_3mm/ct.nii.gz"
LABELS = "totalseg/abdomen_3mm/labels.nii.gz"
SECOND_CT = "public_ct/elastix_lung_small/3DCT_lung_baseline_small.mha"
LIVER, SPLEEN = 5, 1
ADDED = {"vtkMRMLSegmentationNode": 1, "vtkMRMLSegmentationDisplayNode": 1}


@pytest.fixture(scope="module")
def truth(data_dir):
    return read_volume(str(data_dir / LABELS), check_hu=False).array


def _slice(truth, label, k):
    mask = np.zeros(truth.shape, bool)
    mask[k] = truth[k] == label
    return mask


def _fresh(volume_node, painted):
    """What a new pipeline (nothing cached in memory, features by voxel content) predicts from the scene now."""
    pipeline = SegmentationPipeline(ModelSpec(MODEL, "cpu"), service=feature_service())
    inputs = segment_logic.FewShotSegmentLogic(pipeline=pipeline).prepare(volume_node, painted)
    return pipeline.run_fit(inputs.request).labelmap


def _written(result, volume_node) -> np.ndarray:
    """The prediction as it is in the output node now: label value per voxel of the volume grid."""
    out = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), np.uint8)
    for value, sid in enumerate(result.segment_ids, start=1):
        out[segmentation_nodes.segment_mask_on_volume(result.output_node, sid, volume_node)] = value
    return out


def _paint_into(kit, node, volume, segment_id, mask) -> None:
    """The user paints into a segment of ``node`` with the Segment Editor."""
    if kit.app is not None:
        kit.app.segmentation_editor.set_active_segmentation(node, volume)
    else:
        kit.editor_logic.SetSegmentationNode(node)
        kit.editor_logic.SetSourceVolumeNode(volume)
    kit.stroke(node, segment_id, mask)


def _predictions(node) -> list[str]:
    seg = node.GetSegmentation()
    ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    return [sid for sid in ids if is_prediction_segment(seg.GetSegment(sid))]


def test_paint_fit_paint_refit_undo_correct_apply(a_slicer_app, data_dir, truth, tmp_path):
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "abdomen")
    painted = segmentation_nodes.create_examples_segmentation(ct)  # "Open Segment Editor"
    liver_id, spleen_id = kit.paint(
        painted, ct, {"liver": _slice(truth, LIVER, 15), "spleen": _slice(truth, SPLEEN, 15)}
    )
    census, kept = Census(scene), Kept()
    kept.volume(ct)
    kept.segments(painted, ct)
    first_paint = Kept()
    first_paint.segments(painted, ct)
    logic = segment_logic.FewShotSegmentLogic(model=MODEL, device="cpu")
    undo_saver = editor_logic_undo_saver(kit.editor_logic)  # what the module passes (Segment Editor's Undo)

    # 1. Fit and predict: a new output node; the paint is untouched; the result is the current paint's
    first = logic.run(ct, painted, save_undo_state=undo_saver)
    census.step(ADDED)
    kept.check()
    out = first.output_node
    first_labels = _written(first, ct)
    np.testing.assert_array_equal(first_labels, _fresh(ct, painted))
    assert (first_labels == 1).sum() > 1000  # the liver is predicted beyond the painted slice

    # 2. Paint more (another liver slice), 3. refit into the same output
    kit.stroke(painted, liver_id, _slice(truth, LIVER, 8))
    kept.segments(painted, ct)
    census.same()
    second = logic.run(ct, painted, output_node=out, save_undo_state=undo_saver)
    census.same()
    kept.check()
    second_labels = _written(second, ct)
    np.testing.assert_array_equal(second_labels, _fresh(ct, painted))
    assert not np.array_equal(second_labels, first_labels), "the refit ignored the new paint"
    assert len(_predictions(out)) == 2  # the earlier prediction was replaced, not added to

    # 4. Undo in the Segment Editor: the stroke goes, 5. refit into the same output = the first result again
    kit.editor_logic.Undo()
    first_paint.check()
    kept.segments(painted, ct)
    census.same()
    segmentation_nodes._WRITTEN.clear()  # as after reopening the scene: our predictions are known by their voxels
    third = logic.run(ct, painted, output_node=out, save_undo_state=undo_saver)
    census.same()
    kept.check()
    assert len(_predictions(out)) == 2  # the unedited predictions were replaced, none kept as "edited"
    np.testing.assert_array_equal(_written(third, ct), first_labels)

    # 6. The voxels change (the user ran a filter on the CT): the next refit uses the new voxels
    array = slicer.util.arrayFromVolume(ct)
    array[:, :, :10] = -1000
    slicer.util.arrayFromVolumeModified(ct)
    kept.volume(ct)
    fourth = logic.run(ct, painted, output_node=out, save_undo_state=undo_saver)
    census.same()
    kept.check()
    fourth_labels = _written(fourth, ct)
    np.testing.assert_array_equal(fourth_labels, _fresh(ct, painted))

    # 7. The user corrects the predicted liver in the output and refits into it: the corrected segment is kept
    #    as theirs (renamed "... (edited)", never replaced again), the new prediction is written beside it
    corrected_id = fourth.segment_ids[0]
    correction = np.zeros(array.shape, bool)
    correction[0:3, 0:6, 0:6] = True  # the air corner: never predicted liver
    _paint_into(kit, out, ct, corrected_id, correction)
    corrected = Kept()
    corrected.segments(out, ct, [corrected_id])
    census.same()
    fifth = logic.run(ct, painted, output_node=out, save_undo_state=undo_saver)
    census.same()
    kept.check()
    corrected.check()  # ids, voxels ...
    assert out.GetSegmentation().GetSegment(corrected_id).GetName() == "liver"  # (checked above: unchanged)
    assert corrected_id not in fifth.segment_ids and len(_predictions(out)) == 3
    assert fifth.kept_segments == ["liver"]
    np.testing.assert_array_equal(_written(fifth, ct), _fresh(ct, painted))
    sixth = logic.run(ct, painted, output_node=out, save_undo_state=undo_saver)  # and again: still kept
    census.same()
    corrected.check()
    assert len(_predictions(out)) == 3 and sixth.kept_segments == ["liver"]

    # 8. Save the probe and apply it to a second CT: a new output on that CT's grid; the first output stays
    probe = logic.save_probe(tmp_path / "liver_probe.json")
    first_output = Kept()
    first_output.segments(out, ct)
    second_ct = load_ct(kit, data_dir / SECOND_CT, "thorax")
    census.step(
        {
            "vtkMRMLScalarVolumeNode": 1,
            "vtkMRMLScalarVolumeDisplayNode": 1,
            "vtkMRMLVolumeArchetypeStorageNode": 1,
        }
    )
    applied = logic.apply_probe(second_ct, probe)
    census.step(ADDED)
    kept.check()
    first_output.check()
    expected = SegmentationPipeline(ModelSpec(MODEL, "cpu"), service=feature_service()).apply(
        volume_nodes.volume_from_node(second_ct), applied.probe
    )
    np.testing.assert_array_equal(_written(applied, second_ct), expected.labelmap)
    applied_output = Kept()
    applied_output.segments(applied.output_node, second_ct)
    again = logic.apply_probe(second_ct, probe, output_node=applied.output_node)  # applied again: same node
    census.same()
    applied_output.check()  # the same prediction, replaced in place
    assert again.output_node is applied.output_node and len(_predictions(again.output_node)) == 2

    # 9. The user moves the study (CT and paint) with a transform and refits: the segments lie on the moved CT
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    shift = np.eye(4)
    shift[:3, 3] = (30.0, -20.0, 10.0)
    transform.SetMatrixTransformToParent(volume_nodes.numpy_to_matrix(shift))
    for node in (ct, painted):
        node.SetAndObserveTransformNodeID(transform.GetID())
    census.user_step()
    kept.volume(ct)
    moved = logic.run(ct, painted, output_node=out, save_undo_state=undo_saver)
    census.same()
    kept.check()
    np.testing.assert_array_equal(_written(moved, ct), _fresh(ct, painted))
    np.testing.assert_array_equal(_written(moved, ct), fourth_labels)  # the same voxels, moved with the CT

    # 10. The prediction as input of the other modules: Report measures it, Retrieve queries by its segment;
    #     as "painted examples" it is refused (predictions are never read back as paint)
    report = ReportLogic(model=MODEL, device="cpu").run(ct, segmentation_nodes=[out])
    census.step({"vtkMRMLTextNode": 1})
    assert "Liver: Volume" in report.text_node.GetText()  # the prediction measured under its own heading
    region = RetrievalLogic(model=MODEL, device="cpu").prepare(
        ct, segmentation_node=out, segment_id=moved.segment_ids[0], mode="segment"
    )
    assert region.region is not None and region.region.mask.any()
    with pytest.raises(InputError, match="no painted segments"):
        logic.run(ct, out)
    census.same()
    kept.check()


def test_other_modules_outputs_are_refused_as_the_ct(a_slicer_app, data_dir, truth):
    """A labelmap (e.g. exported segments) and VoxelFM Features' PCA colour volume are not a CT."""
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "abdomen")
    painted = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my paint")
    painted.CreateDefaultDisplayNodes()
    kit.paint(painted, ct, {"liver": _slice(truth, LIVER, 15)})
    labelmap = volume_nodes.create_labelmap_node(
        scene, truth.astype(np.int16), volume_nodes.node_ijk_to_ras(ct)
    )
    features = feature_service().features(volume_nodes.volume_from_node(ct), ModelSpec(MODEL, "cpu"))
    pca = show_features_pca(scene, features, "abdomen VoxelFM PCA")
    census, kept = Census(scene), Kept()
    kept.segments(painted, ct)
    logic = segment_logic.FewShotSegmentLogic(model=MODEL, device="cpu")
    for node, why in ((labelmap, "labelmap"), (pca, "colour")):
        with pytest.raises(InputError, match=why):
            logic.run(node, painted)
        with pytest.raises(InputError, match=why):
            logic.apply_probe(node, logic.last_probe or _probe_of(logic, ct, painted, census))
        census.same()
        kept.check()


def _probe_of(logic, ct, painted, census):
    """A probe fitted on the CT (its output node removed again, so the census is unchanged)."""
    result = logic.run(ct, painted)
    census.step(ADDED)
    scene = ct.GetScene()
    display = result.output_node.GetDisplayNode()
    scene.RemoveNode(result.output_node)
    if display is not None and display.GetScene() is not None:
        scene.RemoveNode(display)
    census.step(removed={"vtkMRMLSegmentationNode": 1, "vtkMRMLSegmentationDisplayNode": 1})
    return result.probe


def test_the_ct_removed_during_a_run_gets_no_result(a_slicer_app, data_dir, truth):
    """prepare (main thread) -> the user deletes the CT while the worker predicts -> write: a clear error, and
    nothing is written (no output node for a volume that is gone)."""
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "abdomen")
    painted = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my paint")
    painted.CreateDefaultDisplayNodes()
    kit.paint(painted, ct, {"liver": _slice(truth, LIVER, 15)})
    logic = segment_logic.FewShotSegmentLogic(model=MODEL, device="cpu")
    inputs = logic.prepare(ct, painted)
    prediction = logic.predict(inputs)
    scene.RemoveNode(ct)
    census = Census(scene)
    with pytest.raises(InputError, match="removed"):
        logic.write(inputs, prediction, ct)
    census.same()


def test_a_saved_and_reopened_output_is_refit_in_place(
    a_slicer_app, a_volume, a_painted_segmentation, tmp_path
):
    """The output saved as .seg.nrrd (Slicer merges its segments into one layer) and read back, as when a scene
    is reopened: a refit into it replaces the predictions (known by their voxels), a corrected one stays kept."""
    from slicer_builders import CopyPaintPipeline

    scene = a_slicer_app.scene
    logic = segment_logic.FewShotSegmentLogic(pipeline=CopyPaintPipeline())
    first = logic.run(a_volume, a_painted_segmentation)
    out = first.output_node
    correction = np.zeros(tuple(reversed(a_volume.GetImageData().GetDimensions())), bool)
    correction[0, 0, 0:3] = True
    _paint_into(a_slicer_app, out, a_volume, first.segment_ids[1], correction)  # the user corrects "spleen"
    assert logic.run(a_volume, a_painted_segmentation, output_node=out).kept_segments == ["spleen"]
    path = tmp_path / "output.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(out)
    reopened = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reopened")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(reopened)
    segmentation_nodes._WRITTEN.clear()  # a new session
    census = Census(scene)
    again = logic.run(a_volume, a_painted_segmentation, output_node=reopened)
    census.same()
    assert again.kept_segments == ["spleen"]  # still the user's after reopening
    assert len(_predictions(reopened)) == len(first.segment_ids) + 1  # the new prediction + the corrected one

"""The extension as a user's scene sees it (bare scene and trame-slicer's SlicerApp scene, see mrml_scene.py).

Segments painted through the segment editor logic (one shared labelmap layer, label values 1, 2, ...), with
real terminology entries, on a volume loaded through the Volumes logic; then: Undo after a prediction keeps the
user's strokes, every logic operation adds only its intended output nodes, auto-refit reacts to content changes
only (including the Segment Editor's Undo/Redo), output names are unique.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

from slicer_builders import SHAPE, CopyPaintPipeline, added_nodes, painted_masks  # noqa: E402

from voxelfm.features.volume_features import VolumeFeatures  # noqa: E402
from voxelfm.segment import SegmentClass  # noqa: E402
from VoxelFMLib import segment_logic, segmentation_nodes  # noqa: E402
from VoxelFMLib.auto_refit import OBSERVED_EVENTS, AutoRefit  # noqa: E402
from VoxelFMLib.undo import editor_logic_undo_saver, editor_undo_saver  # noqa: E402

pytestmark = pytest.mark.slicer


def _mask(node, sid, volume):
    return segmentation_nodes.segment_mask_on_volume(node, sid, volume)


# ---------------------------------------------------------------- painted like a user paints


def test_painted_segments_share_one_layer_and_become_labels(a_slicer_app, a_volume, a_painted_segmentation):
    seg = a_painted_segmentation.GetSegmentation()
    ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    assert seg.GetNumberOfLayers() == 1  # the Segment Editor's shared layer ...
    assert [seg.GetSegment(s).GetLabelValue() for s in ids] == [1, 2]  # ... with label values 1, 2
    assert a_volume.GetStorageNode() is not None  # loaded from a file by the Volumes logic
    few = segmentation_nodes.labels_from_segmentation(a_painted_segmentation, a_volume, mode="slices")
    liver, spleen = painted_masks()
    expected = np.full(SHAPE, 255, np.uint8)
    expected[[2, 5]] = 0
    expected[liver], expected[spleen] = 1, 2
    np.testing.assert_array_equal(few.labels, expected)
    assert [c.name for c in few.classes] == ["liver", "spleen"]
    assert few.classes[0].terminology == a_slicer_app.terminology("liver")
    assert "SCT^10200004^Liver" in few.classes[0].terminology  # a real SNOMED entry


# ---------------------------------------------------------------- Undo in the Segment Editor


def _write_after_a_stroke(kit, volume, painted, save_undo_state):
    """User paints one more stroke on 'liver', then VoxelFM writes a prediction into the same node."""
    seg = painted.GetSegmentation()
    liver_id = seg.GetNthSegmentID(0)
    stroke = np.zeros(SHAPE, bool)
    stroke[6, 1:4, 1:4] = True
    before_stroke = _mask(painted, liver_id, volume)
    kit.stroke(painted, liver_id, stroke)
    after_stroke = _mask(painted, liver_id, volume)
    assert after_stroke.sum() == before_stroke.sum() + stroke.sum()
    logic = segment_logic.FewShotSegmentLogic(pipeline=CopyPaintPipeline())
    result = logic.run(volume, painted, output_node=painted, save_undo_state=save_undo_state)
    assert painted.GetSegmentation().GetNumberOfSegments() == 4  # 2 painted + 2 predicted
    return liver_id, before_stroke, after_stroke, result


def test_undo_after_a_prediction_keeps_the_users_last_stroke(a_slicer_app, a_volume, a_painted_segmentation):
    kit, painted = a_slicer_app, a_painted_segmentation
    editor = kit.editor_logic
    liver_id, before_stroke, after_stroke, _ = _write_after_a_stroke(
        kit, a_volume, painted, editor_logic_undo_saver(editor)
    )
    editor.Undo()  # the Segment Editor's Undo button
    assert painted.GetSegmentation().GetNumberOfSegments() == 2  # the prediction is undone ...
    np.testing.assert_array_equal(_mask(painted, liver_id, a_volume), after_stroke)  # ... the stroke is kept
    editor.Undo()  # the next Undo removes the stroke, as the user expects
    np.testing.assert_array_equal(_mask(painted, liver_id, a_volume), before_stroke)
    editor.Redo()
    editor.Redo()
    assert painted.GetSegmentation().GetNumberOfSegments() == 4  # Redo brings the prediction back


def test_without_an_undo_state_the_stroke_would_be_lost(a_slicer_app, a_volume, a_painted_segmentation):
    """The failure the undo state prevents (so the test above can fail)."""
    kit, painted = a_slicer_app, a_painted_segmentation
    liver_id, before_stroke, _, _ = _write_after_a_stroke(kit, a_volume, painted, None)
    kit.editor_logic.Undo()
    np.testing.assert_array_equal(_mask(painted, liver_id, a_volume), before_stroke)


def test_an_undo_state_is_saved_only_for_the_node_the_editor_edits(
    a_slicer_app, a_volume, a_painted_segmentation
):
    calls = []
    saver = editor_undo_saver(lambda: a_painted_segmentation, lambda: calls.append(1))
    other = a_slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    assert not saver(other) and not saver(None) and calls == []
    assert saver(a_painted_segmentation) and calls == [1]
    logic = segment_logic.FewShotSegmentLogic(pipeline=CopyPaintPipeline())
    logic.run(a_volume, a_painted_segmentation, save_undo_state=saver)  # new output node: nothing to save
    assert calls == [1]


# ---------------------------------------------------------------- no stray nodes after any operation


def test_every_logic_operation_adds_only_its_output(a_slicer_app, a_volume, a_painted_segmentation, tmp_path):
    scene, volume, painted = a_slicer_app.scene, a_volume, a_painted_segmentation
    with added_nodes(scene) as added:
        segmentation_nodes.labels_from_segmentation(painted, volume, mode="slices")
        segmentation_nodes.segment_mask_on_volume(
            painted, painted.GetSegmentation().GetNthSegmentID(0), volume
        )
    assert added == [], "reading the paint left nodes behind"

    logic = segment_logic.FewShotSegmentLogic(pipeline=CopyPaintPipeline())
    with added_nodes(scene) as added:
        result = logic.run(volume, painted)
    assert sorted(added) == sorted([result.output_node.GetID(), result.output_node.GetDisplayNode().GetID()])

    with added_nodes(scene) as added:
        logic.run(volume, painted, output_node=result.output_node)  # refit into the same node
        logic.run(volume, painted, output_node=painted)  # into the painted node itself
        logic.apply_probe(volume, logic.last_probe, output_node=result.output_node)
    assert added == [], "refits and probe applications into an existing node must add no node"

    features_logic = _features_logic()
    with added_nodes(scene) as added:
        pca = features_logic.show_pca(_fake_features(volume), volume)
    assert sorted(added) == sorted([pca.GetID(), pca.GetDisplayNode().GetID()])


def _features_logic():
    from VoxelFMLib.features_logic import FeaturesLogic

    return FeaturesLogic(service=object())  # show_pca needs no model


def _fake_features(volume_node) -> VolumeFeatures:
    from VoxelFMLib.volume_nodes import node_ijk_to_ras

    rng = np.random.default_rng(0)
    return VolumeFeatures(
        cls=np.zeros(8, np.float32),
        registers=np.zeros((4, 8), np.float32),
        patch=rng.normal(size=(2, 3, 3, 8)).astype(np.float32),
        grid_to_ras=node_ijk_to_ras(volume_node) @ np.diag([3.0, 3.0, 3.0, 1.0]),
    )


def test_create_new_twice_gives_unique_names(a_slicer_app, a_volume, a_painted_segmentation):
    logic = segment_logic.FewShotSegmentLogic(pipeline=CopyPaintPipeline())
    first = logic.run(a_volume, a_painted_segmentation).output_node
    second = logic.run(a_volume, a_painted_segmentation).output_node
    assert first.GetID() != second.GetID() and first.GetName() != second.GetName()
    features = _features_logic()
    names = {features.show_pca(_fake_features(a_volume), a_volume).GetName() for _ in range(2)}
    assert len(names) == 2


# ---------------------------------------------------------------- auto-refit: content changes only


class CountingTimer:
    def __init__(self) -> None:
        self.starts = 0

    def start(self, milliseconds: int) -> None:
        self.starts += 1

    def stop(self) -> None:
        pass


@pytest.fixture
def watched(a_slicer_app, a_volume, a_painted_segmentation):
    """The painted node observed like the Segment module does (OBSERVED_EVENTS -> segmentation_event)."""
    timer = CountingTimer()
    refit = AutoRefit(timer, fit=lambda: None, enabled=True)
    refit.watch(a_painted_segmentation)
    node = a_painted_segmentation
    tags = [node.AddObserver(event, refit.segmentation_event) for event in OBSERVED_EVENTS]
    yield a_slicer_app, a_volume, node, timer, refit
    for tag in tags:
        node.RemoveObserver(tag)


def test_rename_colour_terminology_visibility_and_3d_do_not_refit(watched):
    kit, _, node, timer, _ = watched
    seg = node.GetSegmentation()
    sid = seg.GetNthSegmentID(0)
    segment = seg.GetSegment(sid)
    segment.SetName("renamed")
    segment.SetColor(0.9, 0.1, 0.1)
    segment.SetTerminology(kit.terminology("spleen"))
    node.GetDisplayNode().SetSegmentVisibility(sid, False)
    node.CreateClosedSurfaceRepresentation()  # "Show 3D"
    node.RemoveClosedSurfaceRepresentation()
    assert timer.starts == 0


def test_strokes_undo_redo_and_segments_added_or_removed_refit(watched):
    kit, _, node, timer, _ = watched
    seg = node.GetSegmentation()
    stroke = np.zeros(SHAPE, bool)
    stroke[7, 0:2, 0:2] = True
    kit.stroke(node, seg.GetNthSegmentID(0), stroke)
    assert timer.starts >= 1
    for action in (kit.editor_logic.Undo, kit.editor_logic.Redo):  # they raise only SegmentModified
        before = timer.starts
        action()
        assert timer.starts > before, f"{action.__name__} changed the paint but started no refit"
    before = timer.starts
    new_id = seg.AddEmptySegment("", "kidney")
    assert timer.starts > before
    before = timer.starts
    seg.RemoveSegment(new_id)
    assert timer.starts > before


def test_our_own_prediction_does_not_refit(watched):
    kit, volume, node, timer, refit = watched
    logic = segment_logic.FewShotSegmentLogic(pipeline=CopyPaintPipeline())
    with refit.writing():
        logic.run(volume, node, output_node=node)
    classes = [SegmentClass(1, "x", (1.0, 0.0, 0.0))]
    segmentation_nodes.write_prediction(np.zeros(SHAPE, np.uint8), volume, classes, node)  # even unguarded
    assert timer.starts == 0  # predicted segments are not paint: the content stamp is unchanged

"""VoxelFMLib on real MRML: painted segmentations -> labels, predictions -> new segments, the few-shot glue."""

from __future__ import annotations

import threading

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)


from slicer_builders import (  # noqa: E402
    SHAPE,
    add_segmentation,
    masks_by_id,
    oblique_flipped_matrix,
    painted_masks,
    segment_masks,
)

from voxelfm.errors import CancelledError, InputError  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.progress import no_progress  # noqa: E402
from voxelfm.segment import SegmentationResult, SegmentClass  # noqa: E402
from voxelfm.segment.config import SegmentationConfig  # noqa: E402
from VoxelFMLib import segment_logic, segmentation_nodes, volume_nodes  # noqa: E402

pytestmark = pytest.mark.slicer


# ---------------------------------------------------------------- painted segmentations -> labels


def test_labels_slices_mode(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix())
    few = segmentation_nodes.labels_from_segmentation(seg, volume_node, mode="slices")
    expected = np.full(SHAPE, 255, np.uint8)
    expected[[2, 5]] = 0
    expected[liver] = 1
    expected[spleen] = 2
    np.testing.assert_array_equal(few.labels, expected)
    assert [c.name for c in few.classes] == ["liver", "spleen"]
    assert few.painted_slices == [2, 5]
    counts = few.counts()
    assert counts["liver"] == liver.sum() and counts["spleen"] == spleen.sum()
    assert counts["unlabelled"] == (SHAPE[0] - 2) * SHAPE[1] * SHAPE[2]
    assert few.conflicts == 0 and few.warnings == []


def test_labels_scribbles_mode_with_background(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    bg = np.zeros(SHAPE, bool)
    bg[7, 0:2, :] = True
    colors = [(0.9, 0.1, 0.1), (0.0, 0.0, 0.0), (0.2, 0.8, 0.3)]
    seg = add_segmentation(
        mrml_scene, {"liver": liver, "Background": bg, "spleen": spleen}, oblique_flipped_matrix(), colors
    )
    seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetNthSegmentID(0)).SetTerminology("T^liver~x")
    few = segmentation_nodes.labels_from_segmentation(seg, volume_node, mode="scribbles")
    expected = np.full(SHAPE, 255, np.uint8)
    expected[bg] = 0
    expected[liver] = 1
    expected[spleen] = 2
    np.testing.assert_array_equal(few.labels, expected)
    assert [c.name for c in few.classes] == ["liver", "spleen"]
    np.testing.assert_allclose(few.classes[0].color, colors[0])
    np.testing.assert_allclose(few.classes[1].color, colors[2])
    assert few.classes[0].terminology == "T^liver~x"
    # in slices mode the explicit background is honoured too and slice 7 becomes a painted slice
    few_slices = segmentation_nodes.labels_from_segmentation(seg, volume_node, mode="slices")
    assert few_slices.painted_slices == [2, 5, 7]
    assert np.all(few_slices.labels[7] == 0)


def test_overlapping_paint_is_unlabelled(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    spleen = spleen.copy()
    spleen[2, 1, 2] = True  # also painted as liver
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix())
    few = segmentation_nodes.labels_from_segmentation(seg, volume_node, mode="slices")
    assert few.conflicts == 1 and few.labels[2, 1, 2] == 255
    assert "more than one segment" in few.warnings[0]


def test_segmentation_on_flipped_grid_is_resampled(mrml_scene, volume_node):
    """Paint stored on a grid with i and k reversed (same voxels in space) gives identical labels."""
    liver, spleen = painted_masks()
    m = oblique_flipped_matrix()
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, SHAPE[2] - 1  # i' = (n_i - 1) - i
    flip[2, 2], flip[2, 3] = -1, SHAPE[0] - 1  # k' = (n_k - 1) - k
    m_flipped = m @ flip
    seg = add_segmentation(
        mrml_scene, {"liver": liver[::-1, :, ::-1], "spleen": spleen[::-1, :, ::-1]}, m_flipped
    )
    few = segmentation_nodes.labels_from_segmentation(seg, volume_node, mode="slices")
    assert np.array_equal(few.labels == 1, liver) and np.array_equal(few.labels == 2, spleen)
    assert few.painted_slices == [2, 5]


def test_segmentation_on_coarser_grid_is_resampled(mrml_scene):
    """Paint on a 2x coarser grid (half-voxel shifted): each fine voxel takes its containing coarse voxel."""
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    vol_node = volume_nodes.create_volume_node(
        mrml_scene, Volume(np.zeros((8, 8, 8), np.float32), fine, "fine")
    )
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = 0.5
    paint = np.zeros((4, 4, 4), bool)
    paint[1, 1:3, 2] = True
    seg = add_segmentation(mrml_scene, {"organ": paint}, coarse)
    few = segmentation_nodes.labels_from_segmentation(seg, vol_node, mode="slices")
    expected_organ = np.kron(paint, np.ones((2, 2, 2), bool))
    np.testing.assert_array_equal(few.labels == 1, expected_organ)
    assert few.painted_slices == [2, 3]


def test_label_errors_are_clear(mrml_scene, volume_node):
    empty_node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with pytest.raises(InputError, match="no painted segments"):
        segmentation_nodes.labels_from_segmentation(empty_node, volume_node)
    liver, _ = painted_masks()
    seg = add_segmentation(
        mrml_scene, {"liver": liver, "kidney": np.zeros(SHAPE, bool)}, oblique_flipped_matrix()
    )
    with pytest.raises(InputError, match="'kidney'"):
        segmentation_nodes.labels_from_segmentation(seg, volume_node)
    seg2 = add_segmentation(mrml_scene, {"liver": liver}, oblique_flipped_matrix())
    with pytest.raises(InputError, match="background"):
        segmentation_nodes.labels_from_segmentation(seg2, volume_node, mode="scribbles")
    with pytest.raises(InputError, match="Unknown labelling mode"):
        segmentation_nodes.labels_from_segmentation(seg2, volume_node, mode="boxes")
    only_bg = add_segmentation(mrml_scene, {"background": liver}, oblique_flipped_matrix())
    with pytest.raises(InputError, match="Only background"):
        segmentation_nodes.labels_from_segmentation(only_bg, volume_node)
    # paint entirely outside the volume counts as empty
    far = np.eye(4)
    far[:3, 3] = 1000.0
    outside = add_segmentation(mrml_scene, {"liver": liver}, far)
    with pytest.raises(InputError, match="no painted voxels inside the volume"):
        segmentation_nodes.labels_from_segmentation(outside, volume_node)


# ---------------------------------------------------------------- predictions -> segments


def prediction_array():
    pred = np.zeros(SHAPE, np.uint8)
    pred[1:4, 1:5, 2:6] = 1
    pred[4:7, 6:8, 1:3] = 2
    return pred


def test_write_prediction_into_painted_node_keeps_user_segments(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    colors = [(0.9, 0.2, 0.1), (0.3, 0.3, 0.9)]
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix(), colors)
    seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetNthSegmentID(1)).SetTerminology("T^spleen")
    before = segment_masks(seg, volume_node)
    user_ids = list(seg.GetSegmentation().GetSegmentIDs())
    before_by_id = masks_by_id(seg, volume_node, user_ids)
    few = segmentation_nodes.labels_from_segmentation(seg, volume_node)
    pred = prediction_array()
    node, ids = segmentation_nodes.write_prediction(
        pred, volume_node, few.classes, seg, name_suffix=" (VoxelFM)"
    )
    assert node is seg and len(ids) == 2
    after = segment_masks(seg, volume_node)
    for name, mask in before.items():
        np.testing.assert_array_equal(after[name], mask, err_msg=f"user segment {name} changed")
    segmentation = seg.GetSegmentation()
    for value, (sid, cls, color) in enumerate(zip(ids, few.classes, colors, strict=True), start=1):
        segment = segmentation.GetSegment(sid)
        assert segment.GetName() == cls.name + " (VoxelFM)"
        np.testing.assert_allclose(segment.GetColor(), color)
        assert after[segment.GetName()].sum() == (pred == value).sum()
        np.testing.assert_array_equal(after[segment.GetName()], pred == value)
    assert segmentation.GetSegment(ids[1]).GetTerminology() == "T^spleen"
    # predictions are not read back as paint
    again = segmentation_nodes.labels_from_segmentation(seg, volume_node)
    np.testing.assert_array_equal(again.labels, few.labels)
    # writing again replaces the previous prediction only
    pred2 = np.zeros(SHAPE, np.uint8)
    pred2[0, 0, 0] = 2
    _, ids2 = segmentation_nodes.write_prediction(pred2, volume_node, few.classes, seg)
    assert segmentation.GetNumberOfSegments() == 4
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert sorted(names) == ["liver", "liver", "spleen", "spleen"]  # the " (VoxelFM)" ones were replaced
    for sid, mask in masks_by_id(seg, volume_node, user_ids).items():
        np.testing.assert_array_equal(mask, before_by_id[sid])
    assert segmentation_nodes.segment_mask_on_volume(seg, ids2[1], volume_node).sum() == 1
    assert not segmentation_nodes.segment_mask_on_volume(seg, ids2[0], volume_node).any()


def test_write_prediction_new_node_and_stats(mrml_scene, volume_node):
    classes = [SegmentClass(1, "a", (1.0, 0.0, 0.0)), SegmentClass(2, "b", (0, 1.0, 0))]
    pred = prediction_array()
    node, ids = segmentation_nodes.write_prediction(pred, volume_node, classes)
    assert node.GetName() == "ct VoxelFM segmentation" and node.GetDisplayNode() is not None
    assert node.GetSegmentation().GetNumberOfSegments() == 2
    node2, _ = segmentation_nodes.write_prediction(pred, volume_node, classes)  # "create new" twice
    assert node2.GetName() != node.GetName()
    stats = SegmentationResult(pred, oblique_flipped_matrix(), classes).statistics()
    voxel_ml = 0.8 * 1.1 * 2.5 / 1000
    assert [s.voxels for s in stats] == [int((pred == 1).sum()), int((pred == 2).sum())]
    assert stats[0].volume_ml == pytest.approx((pred == 1).sum() * voxel_ml)
    with pytest.raises(InputError, match="does not match"):
        segmentation_nodes.write_prediction(pred[:-1], volume_node, classes)


def test_write_prediction_into_segmentation_with_other_geometry(mrml_scene):
    """Output node painted on a coarser grid: predicted voxels still land on the right volume voxels."""
    vol_node = volume_nodes.create_volume_node(
        mrml_scene, Volume(np.zeros((8, 8, 8), np.float32), np.eye(4), "v")
    )
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    coarse[:3, 3] = 0.5
    paint = np.zeros((4, 4, 4), bool)
    paint[1, 1:3, 2] = True
    seg = add_segmentation(mrml_scene, {"organ": paint}, coarse)
    user_id = seg.GetSegmentation().GetNthSegmentID(0)
    before = segmentation_nodes.segment_mask_on_volume(seg, user_id, vol_node)
    few = segmentation_nodes.labels_from_segmentation(seg, vol_node)
    pred = np.zeros((8, 8, 8), np.uint8)
    pred[3:5, 2:7, 1:4] = 1  # not aligned with the coarse grid
    _, ids = segmentation_nodes.write_prediction(pred, vol_node, few.classes, seg)
    np.testing.assert_array_equal(segmentation_nodes.segment_mask_on_volume(seg, ids[0], vol_node), pred == 1)
    np.testing.assert_array_equal(segmentation_nodes.segment_mask_on_volume(seg, user_id, vol_node), before)


def test_transforms_are_respected(mrml_scene):
    """Volume under a linear transform: paint in world space is read, predictions land where they belong."""
    vol_node = volume_nodes.create_volume_node(
        mrml_scene, Volume(np.zeros((6, 6, 6), np.float32), np.eye(4), "v")
    )
    shift = np.eye(4)
    shift[0, 3] = 2.0
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(volume_nodes.numpy_to_matrix(shift))
    vol_node.SetAndObserveTransformNodeID(transform.GetID())
    paint = np.zeros((6, 6, 6), bool)
    paint[1, 1, 3] = True  # world x = 3 is volume voxel i = 1
    seg = add_segmentation(mrml_scene, {"a": paint}, np.eye(4))  # segmentation not transformed
    few = segmentation_nodes.labels_from_segmentation(seg, vol_node, mode="slices")
    assert few.labels[1, 1, 1] == 1 and few.counts()["a"] == 1
    pred = np.zeros((6, 6, 6), np.uint8)
    pred[2:4, 2:4, 0:2] = 1
    for output in (
        None,
        seg,
    ):  # new node (put under the volume's transform) and the untransformed painted node
        node, ids = segmentation_nodes.write_prediction(pred, vol_node, few.classes, output)
        np.testing.assert_array_equal(
            segmentation_nodes.segment_mask_on_volume(node, ids[0], vol_node), pred == 1
        )


# ---------------------------------------------------------------- the glue with an injected predictor


class NearestPaintPipeline:
    """Fake core pipeline: label every voxel with the class painted at the same (j, i) on the nearest painted
    slice (``out`` replaces the result's labelmap, to test how bad predictions are refused)."""

    def __init__(self, out=None):
        self.calls = []
        self.out = out

    config = SegmentationConfig()

    def run_fit(self, request, progress=None, cancel=None, volume_key=None):
        volume, labels = request.volume, request.prepared_labels()
        classes, progress = request.classes(labels), progress or no_progress
        lab = labels.array
        self.calls.append((volume.array.shape, sorted(np.unique(lab).tolist()), [c.name for c in classes]))
        painted = [k for k in range(lab.shape[0]) if np.any(lab[k] != 255)]
        out = np.zeros(lab.shape, np.uint8)
        for k in range(lab.shape[0]):
            if cancel is not None and cancel.is_set():
                raise CancelledError("Cancelled by the user.")
            src = min(painted, key=lambda p: abs(p - k))
            out[k] = np.where(lab[src] == 255, 0, lab[src])
            progress((k + 1) / lab.shape[0], f"slice {k}")
        out = out if self.out is None else self.out
        return SegmentationResult(out, volume.ijk_to_ras, classes, warnings=list(request.warnings))


def test_few_shot_logic_run(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix())
    pipeline = NearestPaintPipeline()
    fractions = []
    n_nodes = mrml_scene.GetNumberOfNodes()
    result = segment_logic.FewShotSegmentLogic(pipeline=pipeline).run(
        volume_node, seg, progress=lambda f, m: fractions.append(f)
    )
    assert pipeline.calls == [(SHAPE, [0, 1, 2, 255], ["liver", "spleen"])]
    assert fractions[-1] == 1.0
    assert result.output_node is not seg and result.output_node.GetSegmentation().GetNumberOfSegments() == 2
    # the only nodes added: the output segmentation and its display node (no temporary labelmaps or tables)
    assert mrml_scene.GetNumberOfNodes() == n_nodes + 2
    liver_pred = segmentation_nodes.segment_mask_on_volume(
        result.output_node, result.segment_ids[0], volume_node
    )
    # slices 0..3 copy slice 2, slices 4..7 copy slice 5
    expected = np.concatenate([np.repeat(liver[2:3], 4, axis=0), np.repeat(liver[5:6], 4, axis=0)])
    np.testing.assert_array_equal(liver_pred, expected)
    assert result.stats[0].name == "liver" and result.stats[0].voxels == expected.sum()
    assert len(seg.GetSegmentation().GetSegmentIDs()) == 2  # the painted node is untouched
    # refit into the same output node: no new nodes
    n_nodes = mrml_scene.GetNumberOfNodes()
    again = segment_logic.FewShotSegmentLogic(pipeline=pipeline).run(
        volume_node, seg, output_node=result.output_node
    )
    assert again.output_node is result.output_node and mrml_scene.GetNumberOfNodes() == n_nodes
    assert result.output_node.GetSegmentation().GetNumberOfSegments() == 2


def test_few_shot_logic_cancel_and_bad_predictor(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix())
    cancel = threading.Event()
    cancel.set()
    logic = segment_logic.FewShotSegmentLogic(pipeline=NearestPaintPipeline())
    with pytest.raises(CancelledError):
        logic.run(volume_node, seg, cancel=cancel)
    n_nodes = mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    bad = segment_logic.FewShotSegmentLogic(pipeline=NearestPaintPipeline(np.full(SHAPE, 3, np.uint8)))
    with pytest.raises(InputError, match="label 3"):
        bad.run(volume_node, seg)
    wrong_shape = segment_logic.FewShotSegmentLogic(
        pipeline=NearestPaintPipeline(np.zeros((2, 2, 2), np.uint8))
    )
    with pytest.raises(InputError, match="shape"):
        wrong_shape.run(volume_node, seg)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_nodes  # nothing written
    with pytest.raises(InputError, match="Select"):
        logic.run(None, seg)


# ---------------------------------------------------------------- the real core behind the glue


def test_real_pipeline_end_to_end(mrml_scene, tmp_path):
    """Tiny backbone + the core pipeline through MRML: painted slices -> predicted box -> probe -> applied."""
    torch = pytest.importorskip("torch")
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone
    from VoxelFMLib import FewShotSegmentLogic

    torch.manual_seed(0)
    torch.set_num_threads(1)
    save_backbone(VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2)), tmp_path / "tiny")
    rng = np.random.default_rng(0)
    ct = rng.normal(40.0, 15.0, (20, 40, 40)).astype(np.float32)
    truth = np.zeros(ct.shape, bool)
    truth[4:16, 10:30, 12:28] = True
    ct[truth] += 250.0
    vol_node = volume_nodes.create_volume_node(
        mrml_scene, Volume(ct, np.diag([1.5, 1.5, 2.0, 1.0]), "box ct")
    )
    paint = np.zeros(ct.shape, bool)
    paint[[6, 13]] = truth[[6, 13]]
    seg = add_segmentation(mrml_scene, {"box": paint}, np.diag([1.5, 1.5, 2.0, 1.0]), [(0.9, 0.6, 0.1)])

    logic = FewShotSegmentLogic(model=str(tmp_path / "tiny"), device="cpu")
    result = logic.run(vol_node, seg)
    pred = segmentation_nodes.segment_mask_on_volume(result.output_node, result.segment_ids[0], vol_node)
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.9, f"dice {dice:.3f}"
    assert result.stats[0].name == "box" and result.stats[0].voxels == pred.sum()
    segment = result.output_node.GetSegmentation().GetSegment(result.segment_ids[0])
    np.testing.assert_allclose(segment.GetColor(), (0.9, 0.6, 0.1), atol=1e-6)

    # save, load and apply the probe to the volume again: same labels, same class identity
    saved = logic.save_probe(tmp_path / "probe")
    applied = FewShotSegmentLogic(device="cpu").apply_probe(vol_node, saved)
    np.testing.assert_array_equal(
        segmentation_nodes.segment_mask_on_volume(applied.output_node, applied.segment_ids[0], vol_node), pred
    )
    assert applied.stats[0].name == "box" and applied.stats[0].voxels == pred.sum()

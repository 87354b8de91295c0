"""VoxelFMLib on real MRML (slicer-core wheel): volumes, painted segmentations, predictions.

Uses the ``mrml_scene`` fixture from Testing/python/mrml_scene.py (a pytest plugin).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

import vtk  # noqa: E402

_EXT = str(Path(__file__).resolve().parents[2] / "VoxelFMExtension")
if _EXT not in sys.path:
    sys.path.insert(0, _EXT)  # VoxelFMLib lives beside the voxelfm package (not pip-installed)

from voxelfm.errors import CancelledError, InputError  # noqa: E402
from voxelfm.volume import Volume  # noqa: E402
from VoxelFMLib import segment_logic, segmentation_nodes, volume_nodes  # noqa: E402

pytestmark = pytest.mark.slicer

SHAPE = (8, 9, 10)  # k, j, i


def oblique_flipped_matrix(spacing=(0.8, 1.1, 2.5), origin=(-40.0, 12.5, 7.0)) -> np.ndarray:
    """Rotation about an oblique axis composed with a flip of j: a det<0 direction matrix."""
    axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    angle = 0.4
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    direction = rot @ np.diag([1.0, -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = direction * np.asarray(spacing)
    m[:3, 3] = origin
    return m


def add_segmentation(scene, masks: dict[str, np.ndarray], ijk_to_ras: np.ndarray, colors=None, node=None):
    """Build a segmentation like a user would have it: one labelmap import per named segment."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
        node.CreateDefaultDisplayNodes()
    seg = node.GetSegmentation()
    for n, (name, mask) in enumerate(masks.items()):
        lab = volume_nodes.create_labelmap_node(scene, mask.astype(np.uint8), ijk_to_ras, name="tmp")
        before = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
        if mask.any():
            assert logic.ImportLabelmapToSegmentationNode(lab, node)
            (new_id,) = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())} - before
        else:
            new_id = seg.AddEmptySegment("", name)
        scene.RemoveNode(lab)
        segment = seg.GetSegment(new_id)
        segment.SetName(name)
        segment.SetColor(*(colors[n] if colors else (0.1 * (n + 1), 0.5, 0.9)))
    return node


def segment_masks(node, volume_node) -> dict[str, np.ndarray]:
    """Mask per segment NAME on the volume grid."""
    seg = node.GetSegmentation()
    out = {}
    for i in range(seg.GetNumberOfSegments()):
        sid = seg.GetNthSegmentID(i)
        out[seg.GetSegment(sid).GetName()] = segmentation_nodes.segment_mask_on_volume(node, sid, volume_node)
    return out


def masks_by_id(node, volume_node, ids) -> dict[str, np.ndarray]:
    return {sid: segmentation_nodes.segment_mask_on_volume(node, sid, volume_node) for sid in ids}


@pytest.fixture
def volume_node(mrml_scene):
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(0, 100, SHAPE).astype(np.float32), oblique_flipped_matrix(), "ct")
    return volume_nodes.create_volume_node(mrml_scene, vol)


def painted_masks():
    liver = np.zeros(SHAPE, bool)
    liver[2, 1:5, 2:6] = True
    liver[5, 2:6, 3:7] = True
    spleen = np.zeros(SHAPE, bool)
    spleen[5, 6:8, 1:3] = True
    return liver, spleen


# ---------------------------------------------------------------- volumes


def test_volume_round_trip_oblique_flipped(mrml_scene):
    m = oblique_flipped_matrix()
    assert np.linalg.det(m[:3, :3]) < 0
    arr = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    node = volume_nodes.create_volume_node(mrml_scene, Volume(arr, m, "rt"))
    assert node.GetName() == "rt"
    back = volume_nodes.volume_from_node(node)
    assert back.array.dtype == np.int16 and np.array_equal(back.array, arr)
    np.testing.assert_allclose(back.ijk_to_ras, m, atol=1e-12)
    # the copy is detached from the node's memory
    back.array[0, 0, 0] = -5
    assert slicer.util.arrayFromVolume(node)[0, 0, 0] == 0
    # Slicer agrees on the geometry: voxel (i=3, j=4, k=5) maps to m @ (3, 4, 5, 1)
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    np.testing.assert_allclose(ijk_to_ras.MultiplyPoint((3, 4, 5, 1)), m @ [3, 4, 5, 1], atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), back.spacing, atol=1e-12)


def test_volume_world_transform(mrml_scene):
    m = oblique_flipped_matrix()
    node = volume_nodes.create_volume_node(mrml_scene, Volume(np.zeros(SHAPE, np.float32), m))
    shift = np.eye(4)
    shift[:3, 3] = [10, -20, 5]
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(volume_nodes.numpy_to_matrix(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(volume_nodes.volume_from_node(node).ijk_to_ras, m)
    np.testing.assert_allclose(volume_nodes.volume_from_node(node, world=True).ijk_to_ras, shift @ m)


def test_labelmap_node_and_errors(mrml_scene):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 2, 3] = 7
    node = volume_nodes.create_labelmap_node(mrml_scene, labels, np.eye(4), name="lab")
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert slicer.util.arrayFromVolume(node)[1, 2, 3] == 7
    with pytest.raises(InputError, match="integer"):
        volume_nodes.create_labelmap_node(mrml_scene, labels.astype(np.float32), np.eye(4))
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no image data"):
        volume_nodes.volume_from_node(empty)


def test_nifti_matches_slicer_reader(mrml_scene, data_dir):
    io = pytest.importorskip("voxelfm.io")
    path = data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz"
    ours = io.read_volume(path)
    node = volume_nodes.load_volume_file(mrml_scene, str(path))
    theirs = volume_nodes.volume_from_node(node)
    assert ours.array.shape == theirs.array.shape == (30, 101, 122)
    np.testing.assert_array_equal(ours.array.astype(np.float64), theirs.array.astype(np.float64))
    np.testing.assert_allclose(ours.ijk_to_ras, theirs.ijk_to_ras, atol=1e-4)


def test_load_volume_file_errors(mrml_scene, tmp_path):
    bad = tmp_path / "not_an_image.nrrd"
    bad.write_text("garbage")
    with pytest.raises(InputError, match="could not read"):
        volume_nodes.load_volume_file(mrml_scene, str(bad))


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
    classes = [
        segmentation_nodes.SegmentClass("a", (1.0, 0.0, 0.0)),
        segmentation_nodes.SegmentClass("b", (0, 1.0, 0)),
    ]
    pred = prediction_array()
    node, ids = segmentation_nodes.write_prediction(pred, volume_node, classes)
    assert node.GetName() == "ct VoxelFM segmentation" and node.GetDisplayNode() is not None
    assert node.GetSegmentation().GetNumberOfSegments() == 2
    stats = segmentation_nodes.class_statistics(pred, oblique_flipped_matrix(), classes)
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


class NearestPaintPredictor:
    """Fake core: label every voxel with the class painted at the same (j, i) on the nearest painted slice."""

    def __init__(self):
        self.calls = []

    def __call__(self, volume, labels, classes, progress, cancel):
        self.calls.append((volume.array.shape, sorted(np.unique(labels).tolist()), [c.name for c in classes]))
        painted = [k for k in range(labels.shape[0]) if np.any(labels[k] != 255)]
        out = np.zeros(labels.shape, np.uint8)
        for k in range(labels.shape[0]):
            if cancel is not None and cancel.is_set():
                from voxelfm.errors import CancelledError

                raise CancelledError("Cancelled by the user.")
            src = min(painted, key=lambda p: abs(p - k))
            out[k] = np.where(labels[src] == 255, 0, labels[src])
            progress((k + 1) / labels.shape[0], f"slice {k}")
        return out


def test_few_shot_logic_run(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix())
    predictor = NearestPaintPredictor()
    fractions = []
    result = segment_logic.FewShotSegmentLogic(predictor).run(
        volume_node, seg, progress=lambda f, m: fractions.append(f)
    )
    assert predictor.calls == [(SHAPE, [0, 1, 2, 255], ["liver", "spleen"])]
    assert fractions[-1] == 1.0
    assert result.output_node is not seg and result.output_node.GetSegmentation().GetNumberOfSegments() == 2
    liver_pred = segmentation_nodes.segment_mask_on_volume(
        result.output_node, result.segment_ids[0], volume_node
    )
    # slices 0..3 copy slice 2, slices 4..7 copy slice 5
    expected = np.concatenate([np.repeat(liver[2:3], 4, axis=0), np.repeat(liver[5:6], 4, axis=0)])
    np.testing.assert_array_equal(liver_pred, expected)
    assert result.stats[0].name == "liver" and result.stats[0].voxels == expected.sum()
    assert len(seg.GetSegmentation().GetSegmentIDs()) == 2  # the painted node is untouched


def test_few_shot_logic_cancel_and_bad_predictor(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, oblique_flipped_matrix())
    cancel = threading.Event()
    cancel.set()
    logic = segment_logic.FewShotSegmentLogic(NearestPaintPredictor())
    with pytest.raises(CancelledError):
        logic.run(volume_node, seg, cancel=cancel)
    n_nodes = mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    bad = segment_logic.FewShotSegmentLogic(lambda v, lab, c, progress, cancel: np.full(SHAPE, 3, np.uint8))
    with pytest.raises(InputError, match="label 3"):
        bad.run(volume_node, seg)
    wrong_shape = segment_logic.FewShotSegmentLogic(
        lambda v, lab, c, progress, cancel: np.zeros((2, 2, 2), np.uint8)
    )
    with pytest.raises(InputError, match="shape"):
        wrong_shape.run(volume_node, seg)
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_nodes  # nothing written
    with pytest.raises(InputError, match="Select"):
        logic.run(None, seg)


# ---------------------------------------------------------------- Qt-free helpers used by the widgets


def test_worker_runs_off_thread_pumps_and_relays_progress():
    from VoxelFMLib import background

    main = threading.get_ident()
    seen = {}
    pumps = []
    updates = []

    def job(x, progress, cancel):
        seen["thread"] = threading.get_ident()
        for i in range(3):
            progress((i + 1) / 3, f"step {i}")
            threading.Event().wait(0.05)
        return x * 2

    relay = background.ProgressRelay()
    out = background.run_pumping(
        job,
        21,
        pump=lambda: pumps.append(1),
        on_progress=lambda f, m: updates.append((f, m)),
        relay=relay,
        progress=relay,
        cancel=None,
    )
    assert out == 42 and seen["thread"] != main and pumps
    assert updates[-1] == (1.0, "step 2")
    # the same persistent thread serves the next job; exceptions come back to the caller
    second = {}
    background.run_pumping(lambda: second.setdefault("t", threading.get_ident()))
    assert second["t"] == seen["thread"]
    with pytest.raises(CancelledError):
        background.run_pumping(lambda: (_ for _ in ()).throw(CancelledError("stop")))


def test_pca_colour_volume(mrml_scene):
    from VoxelFMLib import feature_display

    rng = np.random.default_rng(1)
    patch = rng.normal(size=(3, 4, 5, 24)).astype(np.float32)
    patch[:, :, :2] += 5.0  # two groups of cells: the first component must separate them
    rgb = feature_display.pca_rgb(patch)
    assert rgb.shape == (3, 4, 5, 3) and rgb.dtype == np.uint8
    assert abs(float(rgb[:, :, :2, 0].mean()) - float(rgb[:, :, 2:, 0].mean())) > 150
    grid_to_ras = oblique_flipped_matrix(spacing=(14.0, 14.0, 14.0))
    node = feature_display.create_rgb_volume_node(mrml_scene, rgb, grid_to_ras)
    assert node.IsA("vtkMRMLVectorVolumeNode")
    assert node.GetImageData().GetDimensions() == (5, 4, 3)
    assert node.GetImageData().GetNumberOfScalarComponents() == 3
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), rgb)
    np.testing.assert_allclose(volume_nodes.node_ijk_to_ras(node), grid_to_ras, atol=1e-12)
    with pytest.raises(InputError):
        feature_display.pca_rgb(patch[0])


def test_missing_requirements(tmp_path):
    from VoxelFMLib import dependencies

    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nnumpy>=1.0\nnumpy<0.1\nsurely-not-installed-pkg-xyz>=1\n--index-url x\n\n")
    assert dependencies.read_requirements(req) == [
        "numpy>=1.0",
        "numpy<0.1",
        "surely-not-installed-pkg-xyz>=1",
    ]
    assert dependencies.missing_requirements(req) == ["numpy<0.1", "surely-not-installed-pkg-xyz>=1"]
    shipped = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"
    assert dependencies.missing_requirements(shipped) == []  # the test venv has everything


def test_job_command_line(tmp_path):
    from VoxelFMLib import jobs

    train = Path(__file__).resolve().parents[2] / "VoxelFMTraining"
    assert jobs.cli_script(train) == train / "voxelfm_cli.py"
    (tmp_path / "VoxelFMScripts").mkdir()
    (tmp_path / "VoxelFMScripts" / "voxelfm_cli.py").write_text("")
    assert jobs.cli_script(tmp_path) == tmp_path / "VoxelFMScripts" / "voxelfm_cli.py"
    with pytest.raises(InputError):
        jobs.cli_script(tmp_path / "nowhere")
    args = jobs.job_arguments("cli.py", "pretrain", "--config 'my run.yaml' --epochs 2")
    assert args == ["cli.py", "pretrain", "--config", "my run.yaml", "--epochs", "2"]
    with pytest.raises(InputError, match="quotes"):
        jobs.job_arguments("cli.py", "pretrain", "--config 'unclosed")
    with pytest.raises(InputError):
        jobs.job_arguments("cli.py", "--help")


# ---------------------------------------------------------------- the real core behind the glue


def test_core_predictor_end_to_end(mrml_scene, tmp_path):
    """Tiny backbone + the core's segmentation probe through MRML: painted slices -> predicted box."""
    torch = pytest.importorskip("torch")
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone
    from VoxelFMLib.features_logic import FeaturesLogic
    from VoxelFMLib.segment_core import CorePredictor, classes_from_probe, load_probe, save_probe

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

    predictor = CorePredictor(FeaturesLogic(), str(tmp_path / "tiny"), "cpu")
    result = segment_logic.FewShotSegmentLogic(predictor).run(vol_node, seg)
    pred = segmentation_nodes.segment_mask_on_volume(result.output_node, result.segment_ids[0], vol_node)
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice > 0.9, f"dice {dice:.3f}"
    assert result.stats[0].name == "box" and result.stats[0].voxels == pred.sum()
    segment = result.output_node.GetSegmentation().GetSegment(result.segment_ids[0])
    np.testing.assert_allclose(segment.GetColor(), (0.9, 0.6, 0.1), atol=1e-6)

    # save, load and apply the probe to the volume again: same labels
    save_probe(result.probe, str(tmp_path / "probe"))
    loaded = load_probe(str(tmp_path / "probe.json"))
    assert [c.name for c in classes_from_probe(loaded)] == ["box"]
    labels = predictor.apply(volume_nodes.volume_from_node(vol_node), loaded)
    np.testing.assert_array_equal(labels == 1, pred)
    applied = segment_logic.apply_labels_to_volume(labels, vol_node, classes_from_probe(loaded))
    assert applied.stats[0].voxels == pred.sum()

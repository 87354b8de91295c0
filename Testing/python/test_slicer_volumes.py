"""VoxelFMLib volumes on real MRML (slicer-core wheel): exact geometry both ways."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

import vtk  # noqa: E402
from slicer_builders import (  # noqa: E402
    SHAPE,
    oblique_flipped_matrix,
)

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.imaging import io  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from VoxelFMLib import volume_nodes  # noqa: E402

pytestmark = pytest.mark.slicer


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

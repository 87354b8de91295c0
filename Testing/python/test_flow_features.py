"""VoxelFM Features as a user drives it, in both scene kinds, on a real CT (abdomen_3mm) with the bundled model:
Extract (``FeaturesLogic.run``, as the button), move the CT with a parent transform, Extract again, show the PCA;
checked after every step: the PCA colour volume lies on the CT wherever its transform puts it (it is placed
under the CT's transform, so it also follows later edits of that transform), the CT is untouched, the census is what the step
promises, and what cannot be a CT (a labelmap, the PCA colour volume itself) is refused with a clear message.
"""

from __future__ import annotations

import numpy as np
import pytest
from flow_steps import COLOUR_VOLUME, direct, volume_snapshot
from mrml_scene import require_slicer_core

slicer = require_slicer_core("safetensors")

from flow_checks import Census  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from VoxelFMLib.features_logic import FeaturesLogic  # noqa: E402
from VoxelFMLib.volume_nodes import create_labelmap_node, node_ijk_to_ras, numpy_to_matrix  # noqa: E402


@pytest.fixture(scope="module")
def abdomen(data_dir):
    return read_volume(data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz", check_hu=False)


def _move(angle_deg: float, shift) -> np.ndarray:
    a = np.radians(angle_deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    m[:3, 3] = shift
    return m


def _assert_on_the_ct(pca, ct, features) -> None:
    """The colour volume's cells sit where the features were computed in the CT's own voxels, in world space."""
    expected = np.linalg.inv(node_ijk_to_ras(ct)) @ features.grid_to_ras  # patch cell -> CT voxel
    shown = np.linalg.inv(node_ijk_to_ras(ct, world=True)) @ node_ijk_to_ras(pca, world=True)
    np.testing.assert_allclose(shown, expected, atol=1e-6)


def test_extract_move_the_ct_extract_again_show_the_pca(a_slicer_app, abdomen, tmp_path):
    scene = a_slicer_app.scene
    ct = a_slicer_app.load_volume(abdomen, tmp_path, "abdomen")
    logic = FeaturesLogic(model="voxelfm-tiny", device="cpu")
    watch = Census(scene)
    voxels = volume_snapshot(ct)

    first = logic.run(ct, cache=True, show_pca=True, in_worker=direct)  # 1. Extract (PCA shown)
    watch.step(added=COLOUR_VOLUME)
    assert first.pca_node.GetImageData().GetDimensions() == tuple(reversed(first.features.grid_shape))
    _assert_on_the_ct(first.pca_node, ct, first.features)
    assert volume_snapshot(ct) == voxels

    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "move CT")  # 2. move the CT 50 mm
    transform.SetMatrixTransformToParent(numpy_to_matrix(_move(10.0, [50.0, -20.0, 10.0])))
    ct.SetAndObserveTransformNodeID(transform.GetID())
    watch.step(added={"vtkMRMLLinearTransformNode": 1})
    # a colour volume already shown stays as it was (like a segmentation drawn on the CT, it moves with the CT
    # only when the user puts it under the same transform)
    np.testing.assert_allclose(node_ijk_to_ras(first.pca_node, world=True), first.features.grid_to_ras)

    second = logic.run(ct, in_worker=direct)  # 3. Extract again: the same voxels, the same features
    watch.step(added=COLOUR_VOLUME)
    np.testing.assert_allclose(second.features.patch, first.features.patch, atol=1e-5)
    _assert_on_the_ct(second.pca_node, ct, second.features)

    pca = logic.show_pca(second.features, ct)  # 4. show the PCA (the one-call form)
    watch.step(added=COLOUR_VOLUME)
    _assert_on_the_ct(pca, ct, second.features)

    transform.SetMatrixTransformToParent(numpy_to_matrix(_move(-5.0, [0.0, 30.0, 0.0])))  # 5. move it again
    for node in (second.pca_node, pca):  # shown after the move: under the CT's transform, they follow it
        _assert_on_the_ct(node, ct, second.features)
    watch.step()
    assert volume_snapshot(ct) == (voxels[0], transform.GetID(), *voxels[2:])


def test_labelmaps_and_colour_volumes_are_refused_as_the_ct(a_slicer_app, abdomen, tmp_path):
    scene = a_slicer_app.scene
    ct = a_slicer_app.load_volume(abdomen, tmp_path, "abdomen")
    logic = FeaturesLogic(model="voxelfm-tiny", device="cpu")
    pca = logic.run(ct, in_worker=direct).pca_node
    labels = create_labelmap_node(
        scene, (slicer.util.arrayFromVolume(ct) > 200).astype(np.uint8), node_ijk_to_ras(ct), "bones"
    )
    watch = Census(scene)
    for node, why in ((labels, "labelmap"), (pca, "colour/vector volume")):
        with pytest.raises(InputError, match=f"'{node.GetName()}' cannot be the CT.*{why}"):
            logic.run(node, in_worker=direct)
        with pytest.raises(InputError, match=f"'{node.GetName()}' cannot be the CT.*{why}"):
            logic.extract(node)
    watch.step()

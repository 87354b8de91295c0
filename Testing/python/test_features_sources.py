"""One CT read three ways — NIfTI file, DICOM series folder, slicer-core volume node — gives identical features."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from voxelfm.features.extract import extract_features
from voxelfm.imaging.io import read_volume
from voxelfm.imaging.preprocess import PreprocessConfig
from voxelfm.model.checkpoint import load_backbone_file


@pytest.fixture(scope="module")
def tiny(parity_dir):
    return load_backbone_file(parity_dir / "tiny_checkpoint.pth", parity_dir / "tiny_config.yaml")


@pytest.fixture(scope="module")
def dicom_dir(parity_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom")
    with tarfile.open(parity_dir / "preproc_input_dicom.tar.gz") as tar:
        tar.extractall(out, filter="data")
    return out / "preproc_input_dicom"


def test_nifti_dicom_and_mrml_node_give_identical_features(tiny, parity_dir, dicom_dir, mrml_scene):
    from VoxelFMLib.volume_nodes import load_volume_file, volume_from_node

    nifti = read_volume(parity_dir / "preproc_input.nii.gz")
    dicom = read_volume(dicom_dir)
    node = volume_from_node(load_volume_file(mrml_scene, str(parity_dir / "preproc_input.nii.gz")))
    assert np.array_equal(nifti.array, dicom.array) and np.array_equal(nifti.array, node.array)
    # The fixture's two files hold the same array under different headers (NIfTI: i -> R, j -> A; DICOM: i -> L,
    # j -> P), i.e. two mirrored patients; only the stored order (the reference's) shows the model the same array.
    stored = PreprocessConfig(orientation="stored")
    feats = [extract_features(v, tiny, stored, cache=False) for v in (nifti, dicom, node)]
    for f in feats[1:]:
        assert f.patch.shape == feats[0].patch.shape
        assert np.array_equal(f.patch, feats[0].patch)
        assert np.array_equal(f.cls, feats[0].cls)
    # the NIfTI file and the Slicer node describe the same physical grid
    assert np.allclose(feats[0].grid_to_ras, feats[2].grid_to_ras, atol=1e-4)
    # DICOM and NIfTI agree on the physical extent of the grid (same cell spacing)
    assert np.allclose(np.abs(feats[0].grid_to_ras[:3, :3]), np.abs(feats[1].grid_to_ras[:3, :3]), atol=1e-4)
    # in the canonical order (the default) the file and the node still give identical features
    canon = [extract_features(v, tiny, cache=False) for v in (nifti, node)]
    assert np.array_equal(canon[0].patch, canon[1].patch)
    assert np.allclose(canon[0].grid_to_ras, canon[1].grid_to_ras, atol=1e-4)

"""The Quick-start main job end to end on a synthetic case (the real sample CT needs a download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voxelfm.features.service import FeatureService, ModelSpec
from voxelfm.imaging.io import write_labelmap, write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.model import BackboneConfig, VoxelFMBackbone
from voxelfm.samples import demo as demo_mod
from voxelfm.samples.fetch import SampleCase


def _synthetic_case(folder: Path) -> SampleCase:
    """A 'chest' with a bright 'nodule' spanning several slices, on a flipped, anisotropic grid."""
    k, j, i = np.indices((12, 48, 48))
    ct = np.full((12, 48, 48), -800.0, dtype=np.float32)
    ct[((j - 24) ** 2 + (i - 24) ** 2) > 20**2] = -1000.0
    nodule = ((k - 6) ** 2 * 4 + (j - 20) ** 2 + (i - 28) ** 2) < 36
    ct[nodule] = 40.0
    m = np.diag([-1.5, 1.5, 3.0, 1.0])
    m[:3, 3] = [30.0, -20.0, -100.0]
    write_volume(Volume(ct, m), folder / "img.nrrd")
    write_labelmap(nodule.astype(np.uint8), m, folder / "lab.nrrd")
    return SampleCase(
        "synthetic", folder / "img.nrrd", folder / "lab.nrrd", "synthetic nodule", "test", "none"
    )


def test_sparse_slice_labels_centre_first():
    ref = np.zeros((10, 4, 4), dtype=np.uint8)
    ref[3:8, 1:3, 1:3] = 1
    sparse, slices = demo_mod.sparse_slice_labels(ref, 3)
    assert slices == [4, 5, 6]
    assert set(np.unique(sparse[5])) == {0, 1} and (sparse[0] == 255).all()
    with pytest.raises(ValueError, match="empty"):
        demo_mod.sparse_slice_labels(np.zeros((3, 2, 2), dtype=np.uint8))


def test_demo_writes_every_output_and_finds_the_nodule(tmp_path, monkeypatch):
    case = _synthetic_case(tmp_path)
    monkeypatch.setattr("voxelfm.samples.fetch.fetch_sample_data", lambda *a, **k: case)
    torch.manual_seed(0)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1)).eval()
    service = FeatureService(loader=lambda *a, **k: model)
    res = demo_mod.run_demo(tmp_path / "out", ModelSpec("test-model"), n_slices=1, service=service)
    for key in ("features", "features_png", "segmentation", "seg_nrrd", "overlay_png", "summary"):
        assert res.files[key].is_file(), key
    summary = json.loads(res.files["summary"].read_text())
    assert summary["labelled_axial_slices"] == [6]
    # a bright sphere in air-like surroundings: the probe must find it on slices it never saw labelled
    assert summary["dice_unlabelled_slices"] is not None and summary["dice_unlabelled_slices"] > 0.5
    assert summary["reference_ml"] > 0
    assert summary["model_choice"] == "chosen by the user" and service.loads == 1


def test_demo_rejects_zero_slices(tmp_path):
    from voxelfm.errors import InputError

    with pytest.raises(InputError, match="at least 1"):
        demo_mod.run_demo(tmp_path / "out", n_slices=0)
    assert not (tmp_path / "out").exists()

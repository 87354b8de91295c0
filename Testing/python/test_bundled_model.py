"""The bundled offline model voxelfm-tiny: present, hash-verified, loads by id, gives sensible features."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm import load_backbone
from voxelfm.features.extract import extract_features
from voxelfm.hub.registry import load_registry


def test_bundled_tiny_model_loads_verified_and_extracts(data_dir):
    entry = load_registry().get("voxelfm-tiny")
    assert all(f.sha256 for f in entry.files.values()), "bundled files must be pinned by sha256"
    model = load_backbone("voxelfm-tiny")
    assert model.model_info["id"] == "voxelfm-tiny" and model.model_info["source"] == "bundled"
    assert model.preprocess_defaults["min_spacing"] == pytest.approx(1.5)  # trained at 1.5 mm
    from voxelfm.imaging.io import read_volume

    vol = read_volume(data_dir / "public_ct" / "elastix_lung_small" / "3DCT_lung_baseline_small.mha")
    f = extract_features(vol, model, cache=False)
    assert np.isfinite(f.patch).all() and f.patch.shape[-1] == model.embed_dim
    # features vary across the body (not a collapsed constant map)
    assert f.patch.reshape(-1, f.patch.shape[-1]).std(axis=0).mean() > 0.05

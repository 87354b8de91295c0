"""The same CT stored differently gives the same features: every volume is brought to the canonical (LPS) index
order before the backbone (imaging.canonical), and the features still map to RAS exactly (grid_to_ras).

Measured with voxelfm-tiny on abdomen_3mm (122x101x30, 3 mm): patch-token cosine after alignment in RAS
(each cell of the original against the nearest cell of the copy) is 1.000 for a copy stored with i, j or k
reversed (the canonical arrays are identical) against 0.73 / 0.60 / 0.92 with the stored order, and 0.978 for a
copy resampled onto a 20-degree oblique grid against 0.793 with the stored order.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

from voxelfm.features.cache import FeatureCache
from voxelfm.features.extract import extract_features
from voxelfm.imaging.canonical import CANONICAL_AXES, reorientation, to_canonical
from voxelfm.imaging.io import read_volume
from voxelfm.imaging.preprocess import PreprocessConfig, prepare
from voxelfm.imaging.resample import resample_to_grid
from voxelfm.imaging.volume import Volume
from voxelfm.model.loading import load_backbone

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
MODEL = ROOT / "Resources" / "models" / "voxelfm-tiny"
pytestmark = pytest.mark.skipif(
    not (DATA / "totalseg/abdomen_3mm/ct.nii.gz").exists(), reason="needs ../shared"
)


def flipped(volume: Volume, axis: int) -> Volume:
    """The same image stored with index axis ``axis`` (0 = i) reversed; identical in physical space."""
    f = np.eye(4)
    f[axis, axis], f[axis, 3] = -1.0, volume.shape_ijk[axis] - 1
    return Volume(np.ascontiguousarray(np.flip(volume.array, axis=2 - axis)), volume.ijk_to_ras @ f, "flip")


def oblique(volume: Volume, degrees: float = 20.0) -> Volume:
    """The image resampled onto a grid rotated by ``degrees`` about the k axis through its centre."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
    m = volume.ijk_to_ras
    centre_ijk = (np.asarray(volume.shape_ijk, dtype=np.float64) - 1) / 2
    target = m.copy()
    target[:3, :3] = rot @ m[:3, :3]
    target[:3, 3] = (m @ np.array([*centre_ijk, 1.0]))[:3] - target[:3, :3] @ centre_ijk
    arr = resample_to_grid(volume.array, m, volume.array.shape, target, "linear", -1000.0)
    return Volume(arr, target, "oblique")


def aligned_cosine(a, b) -> float:
    """Mean cosine between each patch token of ``a`` and the token of ``b`` nearest to it in RAS (cells of
    ``a`` whose nearest ``b`` cell is farther than half a cell are left out)."""
    d, h, w, c = a.patch.shape
    kk, jj, ii = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    ijk = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)], axis=1)
    ras = ijk @ np.asarray(a.grid_to_ras).T
    other = ras @ np.linalg.inv(np.asarray(b.grid_to_ras)).T
    near = np.rint(other[:, :3]).astype(int)
    ok = np.all((near >= 0) & (near < np.array(b.patch.shape[:3][::-1])), axis=1)
    ok &= np.linalg.norm(other[:, :3] - near, axis=1) <= 0.5
    va = a.patch.reshape(-1, c)[ok]
    vb = b.patch[near[ok, 2], near[ok, 1], near[ok, 0]]
    va = va / np.linalg.norm(va, axis=1, keepdims=True)
    vb = vb / np.linalg.norm(vb, axis=1, keepdims=True)
    return float(np.mean(np.sum(va * vb, axis=1)))


@pytest.fixture(scope="module")
def ct() -> Volume:
    return read_volume(str(DATA / "totalseg/abdomen_3mm/ct.nii.gz"))


@pytest.fixture(scope="module")
def model():
    return load_backbone(str(MODEL), device="cpu")


def features(volume: Volume, model, orientation: str = "canonical"):
    cfg = dataclasses.replace(PreprocessConfig(), orientation=orientation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extract_features(volume, model, cfg, device="cpu", precision="fp32", cache=False)


def test_axis_aligned_storage_is_reoriented_exactly(ct):
    """A permutation and flips, no interpolation: every voxel kept, at the same RAS position."""
    assert reorientation(ct) == "permuted"  # this NIfTI is stored i -> R, j -> A
    canon, how = to_canonical(ct)
    assert how == "permuted" and reorientation(canon) == "none"
    np.testing.assert_allclose(canon.direction, CANONICAL_AXES, atol=1e-9)
    assert sorted(canon.array.ravel().tolist()) == sorted(ct.array.ravel().tolist())
    for ijk in ([0, 0, 0], [5, 17, 29], [121, 100, 3]):
        ras = canon.ijk_to_ras @ np.array([*ijk, 1.0])
        i, j, k = np.rint(np.linalg.solve(ct.ijk_to_ras, ras)[:3]).astype(int)
        assert canon.array[ijk[2], ijk[1], ijk[0]] == ct.array[k, j, i]
    for axis in range(3):  # every stored order reaches the same canonical array
        again, _ = to_canonical(flipped(ct, axis))
        np.testing.assert_array_equal(again.array, canon.array)
        np.testing.assert_allclose(again.ijk_to_ras, canon.ijk_to_ras, atol=1e-9)


def test_oblique_grid_is_resampled_onto_the_nearest_axis_aligned_grid(ct):
    tilted = oblique(ct)
    assert reorientation(tilted) == "resampled"
    canon, how = to_canonical(tilted)
    assert how == "resampled" and reorientation(canon) == "none"
    np.testing.assert_allclose(canon.spacing, tilted.spacing, rtol=1e-9)
    prep = prepare(tilted)  # the canonical order is what preprocessing hands to the model
    assert prep.steps["orientation"] == "resampled"
    np.testing.assert_allclose(prep.prepared_to_ras[:3, :3] / 3.0, CANONICAL_AXES, atol=1e-9)


def test_flipped_copy_gives_the_same_features(ct, model):
    base = features(ct, model)
    for axis in range(3):
        copy = features(flipped(ct, axis), model)
        np.testing.assert_allclose(copy.grid_to_ras, base.grid_to_ras, atol=1e-9)
        assert aligned_cosine(base, copy) > 0.999
    # the stored order (the old behaviour) gives the model a mirrored picture
    stored = features(ct, model, "stored")
    stored_flip = features(flipped(ct, 0), model, "stored")
    assert aligned_cosine(stored, stored_flip) < 0.8  # measured 0.734


def test_oblique_copy_features_agree_after_alignment(ct, model):
    base = features(ct, model)
    tilted = oblique(ct)
    cos_canonical = aligned_cosine(base, features(tilted, model))
    cos_stored = aligned_cosine(features(ct, model, "stored"), features(tilted, model, "stored"))
    assert cos_canonical > 0.95  # measured 0.978
    assert cos_canonical > cos_stored + 0.1  # stored order: 0.793


def test_grid_to_ras_maps_the_canonical_patch_grid_into_the_original_volume(ct, model):
    feats = features(ct, model)
    d, h, w = feats.patch.shape[:3]
    centres = np.array([[i, j, k, 1.0] for i in (0, w - 1) for j in (0, h - 1) for k in (0, d - 1)])
    ijk = centres @ np.asarray(feats.grid_to_ras).T @ np.linalg.inv(ct.ijk_to_ras).T
    assert np.all(ijk[:, :3] >= -0.5) and np.all(ijk[:, :3] <= np.asarray(ct.shape_ijk) - 0.5)
    np.testing.assert_allclose(feats.grid_to_ras[:3, :3] / 42.0, CANONICAL_AXES, atol=1e-9)


def test_orientation_is_part_of_the_cache_key(ct):
    key = {
        o: FeatureCache.key(ct.content_hash(), {"id": "m"}, PreprocessConfig(orientation=o).to_dict(), {})
        for o in ("canonical", "stored")
    }
    assert key["canonical"] != key["stored"]
    assert PreprocessConfig.from_dict({"clip_hu": [-1000, 1900]}).orientation == "stored"  # an old record
    with pytest.raises(Exception, match="orientation"):
        PreprocessConfig(orientation="sideways")

"""Geometry is carried by 4x4 matrices, not array indices: prepared_to_ras, resampling, background crop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import voxelfm.imaging.resample as resample_mod
from voxelfm.errors import InputError
from voxelfm.imaging.body_crop import crop_to_body
from voxelfm.imaging.io import read_volume
from voxelfm.imaging.preprocess import PreprocessConfig, prepare
from voxelfm.imaging.resample import patch_grid_to_ras, resample_to_grid, resize_matrix, shift_matrix
from voxelfm.imaging.volume import Volume


def _affine(rotation: np.ndarray, spacing, origin) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def _ras_grid(ijk_to_ras: np.ndarray, shape_kji) -> np.ndarray:
    """RAS coordinates [k, j, i, 3] of every voxel centre."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape_kji], indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1)
    return (ijk1 @ ijk_to_ras.T)[..., :3]


OBLIQUE = Rotation.from_euler("zyx", [25.0, -12.0, 8.0], degrees=True).as_matrix() @ np.diag([-1.0, 1.0, 1.0])
GRADIENT = np.array([3.0, -2.0, 5.0])  # HU per mm along R, A, S


def _linear_hu(ras: np.ndarray) -> np.ndarray:
    return (-100.0 + ras @ GRADIENT).astype(np.float32)


# ---------------------------------------------------------------- index maps ------------------------------------
def test_resize_matrix_matches_align_corners_false():
    m = resize_matrix((10, 20, 30), (20, 10, 45))  # k, j, i
    # new voxel c along i (30 -> 45): old = (c + 0.5) * 30/45 - 0.5
    for c in (0.0, 7.0, 44.0):
        assert m @ np.array([c, 0, 0, 1])[0:4] @ np.eye(4)[0] == pytest.approx((c + 0.5) * 30 / 45 - 0.5)
    assert (m @ [0, 3, 0, 1])[1] == pytest.approx(3.5 * 2 - 0.5)  # j: 20 -> 10
    assert (m @ [0, 0, 5, 1])[2] == pytest.approx(5.5 * 0.5 - 0.5)  # k: 10 -> 20
    np.testing.assert_array_equal(shift_matrix((1, 2, 3)) @ [0, 0, 0, 1], [3, 2, 1, 1])


def test_patch_grid_to_ras_cell_centre():
    prep_to_ras = _affine(OBLIQUE, (0.75, 0.75, 0.75), (10.0, -5.0, 3.0))
    g = patch_grid_to_ras(prep_to_ras, 14)
    for cell in ([0, 0, 0], [2, 1, 3]):
        centre = prep_to_ras @ np.r_[14 * np.array(cell) + 6.5, 1.0]
        np.testing.assert_allclose(g @ np.r_[cell, 1.0], centre, atol=1e-12)


# ---------------------------------------------------------------- oblique volume through prepare -------------
@pytest.fixture(scope="module")
def oblique_volume() -> Volume:
    m = _affine(OBLIQUE, (0.5, 0.6, 1.7), (-40.0, 12.0, 85.0))
    shape = (20, 62, 70)  # k, j, i
    return Volume(_linear_hu(_ras_grid(m, shape)), m, "oblique")


@pytest.mark.parametrize(
    "cfg",
    [
        # the reference's path keeps the stored axes (orientation="stored"); the canonical path resamples this
        # oblique grid onto the covering LPS-aligned grid first (more air around it: a smaller interior share)
        PreprocessConfig(clip_hu=None, orientation="stored"),
        PreprocessConfig(clip_hu=None, max_patches=8, orientation="stored"),
        PreprocessConfig(clip_hu=None, crop_background=True, max_patches=8, orientation="stored"),
        PreprocessConfig(clip_hu=None, orientation="canonical"),
    ],
    ids=["default", "max_patches8", "crop_max_patches8", "canonical"],
)
def test_prepared_to_ras_oblique_linear_field(oblique_volume, cfg):
    """A field linear in RAS survives trilinear resampling exactly away from the borders, so every interior
    prepared voxel must hold the field's value at prepared_to_ras @ voxel: this checks axis order, flips, the
    half-voxel align_corners=False offsets and the crop offsets, for an oblique, flipped direction matrix."""
    vol = oblique_volume
    air_i = 0
    if cfg.crop_background:  # air in the first 30 columns
        air_i = 30
        arr = vol.array.copy()
        arr[:, :, :air_i] = -1000.0
        vol = Volume(arr, vol.ijk_to_ras)
    prep = prepare(vol, cfg)
    assert "after_resize_isotropic_shape" in prep.steps
    if cfg.crop_background:
        # first kept column i = 31: its window holds 12/21 body columns x 20/21 slices (> 1/2), i = 30 only
        # 11/21 x 20/21 (< 1/2); minus the 10-voxel margin -> 21
        assert prep.steps["crop_background_offset_zyx"] == [0, 0, 21]
    ras = _ras_grid(prep.prepared_to_ras, prep.array.shape)
    src_idx = _ras_grid(np.linalg.inv(vol.ijk_to_ras) @ prep.prepared_to_ras, prep.array.shape)
    n_ijk = np.array(vol.array.shape[::-1], dtype=float)
    interior = np.all((src_idx >= 2.0) & (src_idx <= n_ijk - 3.0), axis=-1) & (src_idx[..., 0] >= air_i + 2)
    assert interior.mean() > (0.3 if cfg.orientation == "stored" else 0.15)
    err = np.abs(prep.array - _linear_hu(ras))[interior]
    assert err.max() < 0.05, err.max()
    # voxel spacing of the prepared grid: ~0.75 mm isotropic (default), larger after max_patches
    sp = np.linalg.norm(prep.prepared_to_ras[:3, :3], axis=0)
    if cfg.max_patches is None:
        np.testing.assert_allclose(sp, 0.75, rtol=0.03)
    # direction cosines are kept (stored), or the patient-aligned LPS axes: i -> L, j -> P, k -> S (canonical)
    axes = OBLIQUE if cfg.orientation == "stored" else np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(prep.prepared_to_ras[:3, :3] / sp, axes, atol=1e-12)


def test_round_trip_smooth_field_to_original_grid(oblique_volume):
    """prepare() then resample_to_grid back onto the original voxels reproduces a smooth field."""
    centre = np.array([-66.0, 20.0, 97.0])  # near the volume centre
    m = oblique_volume.ijk_to_ras
    ras = _ras_grid(m, oblique_volume.array.shape)
    field = (-400.0 + 600.0 * np.exp(-np.sum((ras - centre) ** 2, axis=-1) / (2 * 12.0**2))).astype(
        np.float32
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a Gaussian blob is not CT-like; we only test geometry here
        prep = prepare(Volume(field, m), PreprocessConfig(clip_hu=None, orientation="stored"))
    back = resample_to_grid(prep.array, prep.prepared_to_ras, field.shape, m, mode="linear", fill=np.nan)
    covered = np.isfinite(back)
    assert covered.mean() > 0.6
    err = np.abs(back - field)
    assert np.nanmean(err) < 1.0
    # away from the prepared grid's edges (where values are clamped over half a voxel) the error is that of two
    # trilinear passes over a 12 mm Gaussian (~2 HU of 600); near the edges the clamp adds up to ~10 HU
    src = _ras_grid(np.linalg.inv(prep.prepared_to_ras) @ m, field.shape)
    n = np.array(prep.array.shape[::-1])
    inner = np.all((src >= 1.0) & (src <= n - 2.0), axis=-1)
    assert inner.mean() > 0.5
    assert err[inner].max() < 3.0
    assert np.nanmax(err) < 15.0
    # the not-covered part is exactly what lies beyond half a voxel outside the prepared grid
    outside = np.any((src < -0.5) | (src > n - 0.5), axis=-1)
    np.testing.assert_array_equal(~covered, outside)


# ---------------------------------------------------------------- resample_to_grid -----------------------------
def test_resample_identity_and_flip_nearest_keeps_dtype():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 300, size=(5, 6, 7)).astype(np.uint16)
    m = _affine(np.eye(3), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0))
    same = resample_to_grid(labels, m, labels.shape, m, mode="nearest")
    assert same.dtype == np.uint16
    np.testing.assert_array_equal(same, labels)
    # target grid with flipped j axis covering the same voxels
    flip = m.copy()
    flip[:3, 1] *= -1
    flip[:3, 3] = (m @ [0, labels.shape[1] - 1, 0, 1])[:3]
    np.testing.assert_array_equal(
        resample_to_grid(labels, m, labels.shape, flip, "nearest"), labels[:, ::-1, :]
    )


def test_resample_channels_fill_and_chunking(monkeypatch):
    rng = np.random.default_rng(1)
    probs = rng.random((6, 8, 9, 4)).astype(np.float32)
    src = _affine(OBLIQUE, (1.5, 1.5, 2.0), (0.0, 0.0, 0.0))
    tgt = _affine(np.eye(3), (1.0, 1.0, 1.0), (-8.0, -8.0, -4.0))
    shape = (20, 22, 24)
    full = resample_to_grid(probs, src, shape, tgt, mode="linear", fill=-1.0)
    assert full.shape == shape + (4,) and full.dtype == np.float32
    monkeypatch.setattr(resample_mod, "_CHUNK_BYTES", 1)  # one target slice per chunk
    chunked = resample_to_grid(probs, src, shape, tgt, mode="linear", fill=-1.0)
    np.testing.assert_array_equal(full, chunked)
    outside = full[..., 0] == -1.0
    assert 0.05 < outside.mean() < 0.95
    # per-channel result equals single-channel calls; inside values are convex combinations of the source
    np.testing.assert_allclose(
        resample_to_grid(probs[..., 2], src, shape, tgt, fill=-1.0), full[..., 2], atol=1e-6
    )
    inside = full[~outside]
    assert inside.min() >= 0.0 and inside.max() <= 1.0


def test_resample_linear_reproduces_linear_field_and_edge_clamp():
    src = _affine(OBLIQUE, (1.0, 1.2, 2.0), (5.0, -3.0, 7.0))
    shape = (8, 9, 10)
    vals = _linear_hu(_ras_grid(src, shape))
    tgt = _affine(np.eye(3), (0.7, 0.7, 0.7), (0.0, -6.0, 5.0))
    tshape = (30, 30, 30)
    out = resample_to_grid(vals, src, tshape, tgt, fill=np.nan)
    idx = _ras_grid(np.linalg.inv(src) @ tgt, tshape)
    n = np.array(shape[::-1], dtype=float)
    strict = np.all((idx >= 0) & (idx <= n - 1), axis=-1)
    halo = np.all((idx >= -0.5) & (idx <= n - 0.5), axis=-1)
    np.testing.assert_allclose(out[strict], _linear_hu(_ras_grid(tgt, tshape))[strict], atol=2e-3)
    assert np.all(np.isfinite(out[halo])) and np.all(np.isnan(out[~halo]))


def test_resample_rejects_bad_mode():
    with pytest.raises(InputError, match="mode"):
        resample_to_grid(np.zeros((2, 2, 2)), np.eye(4), (2, 2, 2), np.eye(4), mode="cubic")


# ---------------------------------------------------------------- real data: flipped label image -------------
def test_chest_dicom_labels_align_in_physical_space(data_dir):
    folder = data_dir / "totalseg" / "chest_dicom"
    ct = read_volume(folder / "dicom")
    labels = read_volume(folder / "labels.nii.gz", check_hu=False)
    assert ct.array.shape == labels.array.shape == (20, 512, 512)
    # the label image's j axis points the other way (flipped y): the matrices differ, not the extents
    assert np.sign(ct.ijk_to_ras[1, 1]) == -np.sign(labels.ijk_to_ras[1, 1])
    lab = labels.array.astype(np.uint8)
    on_ct = resample_to_grid(lab, labels.ijk_to_ras, ct.array.shape, ct.ijk_to_ras, mode="nearest")
    np.testing.assert_array_equal(on_ct, lab[:, ::-1, :])
    assert (on_ct == lab).mean() < 0.9  # array indices alone would be wrong
    hu = ct.array
    bones = [32, 33, 69, 70] + list(range(97, 116))
    in_bone = np.isin(on_ct, bones)
    assert np.median(hu[in_bone]) > 150.0  # aligned: bone labels sit on bone
    assert np.median(hu[np.isin(lab, [69, 70])]) < -500.0  # by index the humeri would sit in air
    soft = np.isin(on_ct, [1, 5, 52])  # spleen, liver, aorta
    assert np.mean(hu[soft] > -100.0) > 0.95


# ---------------------------------------------------------------- background crop ------------------------------
def _phantom(n_slices: int, body_slices: slice | None = None) -> np.ndarray:
    arr = np.full((n_slices, 60, 70), -1000.0, dtype=np.float32)
    arr[body_slices or slice(None), 15:45, 20:55] = 40.0
    return arr


def test_background_crop_reference_rule_on_thick_phantom():
    crop = crop_to_body(_phantom(40, slice(5, 35)))
    assert crop.rule == "reference"
    # a window centred on a face voxel of the body is 11/21 > 1/2 inside, one voxel out 10/21 < 1/2: the kept
    # region is the body (z 5:35, y 15:45, x 20:55); +- 10 voxels margin, clamped to the volume
    assert crop.offset_kji == (0, 5, 10) and crop.shape_kji == (40, 50, 55)
    small = _phantom(40, slice(14, 24))  # 10 body slices: nothing reaches 11 -> the reference would raise
    thin = crop_to_body(small)
    assert thin.rule == "clipped_kernel" and thin.offset_kji == (4, 5, 10) and thin.shape_kji == (30, 50, 55)


def test_background_crop_thin_volume_falls_back():
    """8 slices: the reference rule keeps nothing (it raises); we use a kernel clipped to the volume size."""
    crop = crop_to_body(_phantom(8))
    assert crop.rule == "clipped_kernel" and crop.warning is None
    assert crop.offset_kji[0] == 0 and crop.shape_kji[0] == 8
    assert crop.offset_kji[1:] == (5, 10) and crop.shape_kji[1:] == (50, 55)  # body 15:45 / 20:55 +- 10
    vol = Volume(_phantom(8), np.diag([0.8, 0.8, 5.0, 1.0]))
    prep = prepare(
        vol, PreprocessConfig(crop_background=True, orientation="stored")
    )  # offsets in stored axes
    assert prep.steps["crop_background_rule"] == "clipped_kernel"
    assert prep.steps["crop_background_offset_zyx"] == [0, 5, 10]


def test_background_crop_no_foreground_keeps_volume_with_warning():
    arr = np.full((30, 30, 30), -1000.0, dtype=np.float32)
    arr[0, 0, 0] = 0.0  # a lone voxel is not a body
    crop = crop_to_body(arr)
    assert crop.rule == "none" and crop.shape_kji == (30, 30, 30) and "whole volume" in crop.warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare(Volume(arr), PreprocessConfig(crop_background=True))
    assert any("whole volume" in str(w.message) for w in caught)
    assert any("whole volume" in m for m in prep.warnings)


def test_prepare_too_small_raises():
    with pytest.raises(InputError, match="at least 14"):
        prepare(Volume(np.zeros((10, 40, 40), dtype=np.float32)))

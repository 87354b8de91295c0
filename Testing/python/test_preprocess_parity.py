"""Parity of our preprocessing (and, when the backbone exists, of features) with the reference fixture.

Fixture: /work/shared/fixtures/voxelfm_parity (see its README): the reference's prepared ``img`` (HU, before
normalisation), step shapes/offsets, and tiny-model ``cls`` / ``patch`` outputs for variants A..G.
"""

from __future__ import annotations

import json
import tarfile
import warnings

import numpy as np
import pytest
import torch

from voxelfm.imaging.io import read_volume
from voxelfm.imaging.preprocess import PreprocessConfig, prepare
from voxelfm.imaging.volume import Volume
from voxelfm.model.checkpoint import load_backbone_file

# The reference's NIfTI (and array) path keeps the stored array order: parity needs orientation="stored". Its
# DICOM path stacks slices in LPS index order, our canonical order, so the DICOM variants run with the default.
STORED = {"orientation": "stored"}
NIFTI_VARIANTS = {
    "A_nifti_default": {**STORED},
    "B_nifti_crop_maxpatches6": {"crop_background": True, "max_patches": 6, **STORED},
    "C_nifti_crop": {"crop_background": True, **STORED},
    "D_nifti_maxpatches6": {"max_patches": 6, **STORED},
}
DICOM_VARIANTS = {
    "E_dicom_default": {},
    "F_dicom_crop_maxpatches6": {"crop_background": True, "max_patches": 6},
}
STORED_CFG = PreprocessConfig(**STORED)
STEP_KEYS = (
    "loaded_shape",
    "after_crop_background_shape",
    "crop_background_offset_zyx",
    "after_resize_isotropic_shape",
    "after_resize_max_patches_shape",
    "after_patch_crop_shape",
    "patch_crop_offset_zyx",
    "patch_grid_dhw",
)


@pytest.fixture(scope="module")
def expected(parity_dir):
    tensors = torch.load(parity_dir / "expected_preprocess.pt")
    meta = json.loads((parity_dir / "expected_preprocess.json").read_text())["variants"]
    return tensors, meta


@pytest.fixture(scope="module")
def nifti_volume(parity_dir):
    return read_volume(parity_dir / "preproc_input.nii.gz")


@pytest.fixture(scope="module")
def dicom_volume(parity_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity_dicom")
    with tarfile.open(parity_dir / "preproc_input_dicom.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return read_volume(root / "preproc_input_dicom")


@pytest.fixture(scope="module")
def array_zyx(nifti_volume):
    """Variant G input: the NIfTI voxels as an int16 (z, y, x) array (SimpleITK already returns z, y, x)."""
    return nifti_volume.array.astype(np.int16)


def _check_steps(prepared, meta):
    for key in STEP_KEYS:
        if key in meta:
            assert prepared.steps.get(key) == meta[key], key
        else:
            assert key not in prepared.steps or key in ("loaded_shape", "patch_grid_dhw"), key
    if "spacing_zyx" in meta:
        assert prepared.steps["spacing_zyx"] == meta["spacing_zyx"]  # float32 header value 0.4000000059604645


@pytest.mark.parametrize("variant", sorted(NIFTI_VARIANTS))
def test_nifti_img_matches_reference(variant, nifti_volume, expected):
    tensors, meta = expected
    prep = prepare(nifti_volume, PreprocessConfig(**NIFTI_VARIANTS[variant]))
    ref = tensors[f"{variant}.img"].numpy()
    assert list(prep.array.shape) == meta[variant]["img_shape"]
    _check_steps(prep, meta[variant])
    assert prep.array.dtype == np.float32
    np.testing.assert_allclose(prep.array, ref, rtol=0, atol=0.05)


@pytest.mark.parametrize("variant", sorted(DICOM_VARIANTS))
def test_dicom_with_reference_clip_matches_reference(variant, dicom_volume, expected):
    """With the reference's DICOM-only clip (-1000, 1000) we reproduce its DICOM outputs too."""
    tensors, meta = expected
    cfg = PreprocessConfig(clip_hu=(-1000.0, 1000.0), **DICOM_VARIANTS[variant])
    prep = prepare(dicom_volume, cfg)
    _check_steps(prep, {k: v for k, v in meta[variant].items() if k != "spacing_zyx"})
    np.testing.assert_allclose(prep.array, tensors[f"{variant}.img"].numpy(), rtol=0, atol=0.05)


@pytest.mark.parametrize(
    ("dicom_variant", "nifti_variant"),
    [("E_dicom_default", "A_nifti_default"), ("F_dicom_crop_maxpatches6", "B_nifti_crop_maxpatches6")],
)
def test_dicom_equals_nifti_with_training_clip(
    dicom_variant, nifti_variant, dicom_volume, nifti_volume, expected
):
    """Our pipeline clips every input type to the training range, so DICOM and NIfTI give the same array
    (in the reference they differ by the clip range: E != A, F != B)."""
    tensors, _ = expected
    opts = DICOM_VARIANTS[dicom_variant]
    from_dicom = prepare(dicom_volume, PreprocessConfig(**opts))
    from_nifti = prepare(nifti_volume, PreprocessConfig(**opts, **STORED))
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)
    np.testing.assert_allclose(from_dicom.array, tensors[f"{nifti_variant}.img"].numpy(), rtol=0, atol=0.05)
    assert from_dicom.array.max() > 1000.0  # the "spine" is not clipped at 1000 HU
    # The two files place the same voxels differently (NIfTI: RAS +x,+y, origin 0; DICOM: LPS identity, z from
    # -100), so prepared_to_ras differ exactly by the files' own geometry: the index maps must be identical.
    idx_d = np.linalg.inv(dicom_volume.ijk_to_ras) @ from_dicom.prepared_to_ras
    idx_n = np.linalg.inv(nifti_volume.ijk_to_ras) @ from_nifti.prepared_to_ras
    np.testing.assert_allclose(idx_d, idx_n, atol=1e-9)
    np.testing.assert_allclose(from_dicom.prepared_to_ras, dicom_volume.ijk_to_ras @ idx_n, atol=1e-9)


def test_array_variant_g(array_zyx, expected):
    _, meta = expected
    vol = read_volume(array_zyx)  # identity geometry = 1 mm isotropic, as the reference's array path
    prep = prepare(vol, PreprocessConfig(clip_hu=None, **STORED))
    g = meta["G_array_zyx_default"]
    assert list(prep.array.shape) == g["img_shape"]
    assert prep.steps["patch_crop_offset_zyx"] == g["patch_crop_offset_zyx"]
    assert "after_resize_isotropic_shape" not in prep.steps
    z, y, x = g["patch_crop_offset_zyx"]
    d, h, w = g["img_shape"]
    np.testing.assert_array_equal(prep.array, array_zyx[z : z + d, y : y + h, x : x + w].astype(np.float32))
    assert prep.array.min() == -1024.0  # no clip on the reference's array path
    # our default clips arrays too
    assert prepare(vol, STORED_CFG).array.min() == -1000.0


def test_warnings_logged_and_normalized(nifti_volume):
    prep = prepare(nifti_volume)
    assert prep.warnings == []
    norm = prep.normalized()
    assert isinstance(norm, torch.Tensor) and norm.dtype == torch.float32
    np.testing.assert_allclose(norm.numpy(), (prep.array + 573.8) / 461.3, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- features (needs voxelfm.model) -------------
@pytest.fixture(scope="module")
def tiny_model(parity_dir):
    return load_backbone_file(parity_dir / "tiny_checkpoint.pth", parity_dir / "tiny_config.yaml")


def _features(model, prep):
    with torch.inference_mode():
        return model.forward_features(prep.normalized()[None, None])


FEATURE_CASES = {
    **{k: ("nifti", v) for k, v in NIFTI_VARIANTS.items()},
    **{k: ("dicom_ref_clip", v) for k, v in DICOM_VARIANTS.items()},
    "G_array_zyx_default": ("array", {}),
}


@pytest.mark.parametrize("variant", sorted(FEATURE_CASES))
def test_features_match_reference(variant, tiny_model, nifti_volume, dicom_volume, array_zyx, expected):
    tensors, _ = expected
    kind, opts = FEATURE_CASES[variant]
    if kind == "nifti":
        prep = prepare(nifti_volume, PreprocessConfig(**opts))
    elif kind == "dicom_ref_clip":
        prep = prepare(dicom_volume, PreprocessConfig(clip_hu=(-1000.0, 1000.0), **opts))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prep = prepare(read_volume(array_zyx), PreprocessConfig(clip_hu=None, **STORED))
    out = _features(tiny_model, prep)
    ref_cls = tensors[f"{variant}.cls"]
    ref_patch = tensors[f"{variant}.patch"]
    assert tuple(out["patch"].shape[1:]) == tuple(ref_patch.shape)
    torch.testing.assert_close(out["cls"], ref_cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["patch"][0], ref_patch, rtol=0, atol=1e-5)


def test_non_hu_input_warns_and_is_logged():
    unit = Volume(np.random.default_rng(0).random((20, 30, 30)).astype(np.float32))
    with pytest.warns(UserWarning, match="0..1"):
        prep = prepare(unit)
    assert len(prep.warnings) == 1 and "0..1" in prep.warnings[0]


def test_config_dict_round_trip():
    cfg = PreprocessConfig(clip_hu=(-1000.0, 1000.0), crop_background=True, max_patches=64)
    d = cfg.to_dict()
    assert d["clip_hu"] == [-1000.0, 1000.0]
    assert PreprocessConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert (
        PreprocessConfig.from_dict({**PreprocessConfig(clip_hu=None).to_dict(), "extra": 1}).clip_hu is None
    )

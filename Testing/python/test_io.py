"""Reading/writing images: exact RAS geometry, LPS conversion in one place, clear errors for bad input."""

from __future__ import annotations

import shutil
import tarfile
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from voxelfm.errors import InputError
from voxelfm.imaging.io import (
    ijk_to_ras_to_lps_geometry,
    lps_geometry_to_ijk_to_ras,
    read_volume,
    volume_from_sitk,
    volume_to_sitk,
    write_labelmap,
    write_volume,
)
from voxelfm.imaging.volume import Volume


def _matrix(rotation, spacing, origin):
    m = np.eye(4)
    m[:3, :3] = np.asarray(rotation) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


GEOMETRIES = {
    "identity": _matrix(np.eye(3), (0.7, 0.8, 2.5), (0.0, 0.0, 0.0)),
    "flipped": _matrix(np.diag([-1.0, 1.0, -1.0]), (0.5, 0.5, 3.0), (120.5, -80.25, 310.0)),
    "oblique": _matrix(
        Rotation.from_euler("xyz", [20.0, -35.0, 10.0], degrees=True).as_matrix() @ np.diag([1.0, -1.0, 1.0]),
        (0.9, 1.1, 1.7),
        (-17.3, 42.0, -5.5),
    ),
}


def _ct_array(shape=(6, 7, 8), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 1500, size=shape).astype(np.float32)


# ---------------------------------------------------------------- LPS <-> RAS -----------------------------------
def test_lps_ras_conversion_round_trip_and_sign():
    m = GEOMETRIES["oblique"]
    origin, spacing, direction = ijk_to_ras_to_lps_geometry(m)
    np.testing.assert_allclose(origin, [17.3, -42.0, -5.5])  # L = -R, P = -A, S = S
    np.testing.assert_allclose(spacing, [0.9, 1.1, 1.7])
    np.testing.assert_allclose(lps_geometry_to_ijk_to_ras(origin, spacing, direction), m, atol=1e-12)


def test_sitk_conversion_keeps_voxel_order_and_geometry():
    arr = _ct_array()
    vol = Volume(arr, GEOMETRIES["flipped"])
    img = volume_to_sitk(vol)
    assert img.GetSize() == (8, 7, 6)  # i, j, k
    # voxel (i, j, k) = (2, 3, 4) is at the same physical point in both conventions (LPS = RAS with x, y negated)
    lps = np.array(img.TransformIndexToPhysicalPoint((2, 3, 4)))
    ras = (vol.ijk_to_ras @ [2, 3, 4, 1])[:3]
    np.testing.assert_allclose(lps * [-1, -1, 1], ras, atol=1e-9)
    back = volume_from_sitk(img)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=1e-12)


# ---------------------------------------------------------------- file round trips ------------------------------
@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"])
@pytest.mark.parametrize("geom", sorted(GEOMETRIES))
def test_write_read_round_trip(tmp_path, ext, geom):
    arr = _ct_array()
    vol = Volume(arr, GEOMETRIES[geom], "ct")
    path = write_volume(vol, tmp_path / f"ct{ext}")
    back = read_volume(path)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, arr)
    atol = 1e-4 if ext.startswith(".nii") else 1e-9  # NIfTI stores the affine as float32
    np.testing.assert_allclose(back.ijk_to_ras, vol.ijk_to_ras, atol=atol)
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert leftovers == []


def test_write_labelmap_dtype_and_geometry(tmp_path):
    labels = np.zeros((5, 6, 7), dtype=np.int64)
    labels[1:3, 2:4, 3:6] = 4
    m = GEOMETRIES["oblique"]
    p8 = write_labelmap(labels, m, tmp_path / "seg.nrrd")
    img = sitk.ReadImage(str(p8))
    assert img.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), labels)
    np.testing.assert_allclose(volume_from_sitk(img).ijk_to_ras, m, atol=1e-9)
    labels[0, 0, 0] = 300
    p16 = write_labelmap(labels, m, tmp_path / "seg.nii.gz")
    assert sitk.ReadImage(str(p16)).GetPixelID() == sitk.sitkUInt16
    with pytest.raises(InputError, match="0..65535"):
        write_labelmap(labels - 500, m, tmp_path / "bad.nrrd")


def test_write_refuses_overwrite_when_asked(tmp_path):
    vol = Volume(_ct_array())
    path = write_volume(vol, tmp_path / "a.nrrd")
    with pytest.raises(InputError, match="already exists"):
        write_volume(vol, path, overwrite=False)
    with pytest.raises(InputError, match="Cannot write"):
        write_volume(vol, tmp_path / "a.png")


def test_reference_nifti_geometry(parity_dir):
    """preproc_input.nii.gz: sform diag(0.4, 0.4, 2.0) (RAS), origin 0; spacing as the float32 header value."""
    vol = read_volume(parity_dir / "preproc_input.nii.gz")
    assert vol.array.shape == (14, 88, 80)  # (z, y, x): file order, no reorientation
    np.testing.assert_array_equal(vol.ijk_to_ras, np.diag([np.float32(0.4), np.float32(0.4), 2.0, 1.0]))
    assert vol.spacing[0] == 0.4000000059604645
    assert vol.array.min() == -1024.0 and vol.array.max() == 2000.0


def test_dicom_folder_equals_nifti_and_has_lps_origin(parity_dir, tmp_path):
    with tarfile.open(parity_dir / "preproc_input_dicom.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    folder = tmp_path / "preproc_input_dicom"
    dcm = read_volume(folder)
    nii = read_volume(parity_dir / "preproc_input.nii.gz")
    np.testing.assert_array_equal(dcm.array, nii.array)  # slices sorted along the normal, rescale applied
    # ImagePositionPatient z = -100 + 2k, LPS identity orientation -> RAS x, y flipped
    np.testing.assert_allclose(
        dcm.ijk_to_ras, [[-0.4, 0, 0, 0], [0, -0.4, 0, 0], [0, 0, 2, -100], [0, 0, 0, 1]]
    )
    # nested one level deeper: still found
    nested = tmp_path / "study"
    shutil.copytree(folder, nested / "series1")
    np.testing.assert_array_equal(read_volume(nested).array, nii.array)


def test_real_dicom_series_geometry(data_dir):
    ct = read_volume(data_dir / "totalseg" / "chest_dicom" / "dicom")
    assert ct.array.shape == (20, 512, 512) and ct.array.dtype == np.float32
    # first slice IPP (LPS) = (-249.51171875, -437.51171875, -804.5)
    np.testing.assert_allclose((ct.ijk_to_ras @ [0, 0, 0, 1])[:3], [249.51171875, 437.51171875, -804.5])
    np.testing.assert_allclose(ct.spacing, [0.9765625, 0.9765625, 2.0])
    assert ct.array.min() < -900 and ct.array.max() > 500  # HU after rescale


def test_array_and_sitk_sources():
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4) * 50 - 1000
    vol = read_volume(arr)
    assert vol.array.dtype == np.float32 and np.array_equal(vol.array, arr)
    np.testing.assert_array_equal(vol.ijk_to_ras, np.eye(4))  # reference array path: 1 mm, identity
    m = GEOMETRIES["oblique"]
    np.testing.assert_array_equal(read_volume(arr, ijk_to_ras=m).ijk_to_ras, m)
    img = volume_to_sitk(Volume(arr.astype(np.float32), m))
    np.testing.assert_allclose(read_volume(img).ijk_to_ras, m, atol=1e-12)


# ---------------------------------------------------------------- bad input ---------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image" * 10)
    with pytest.raises(InputError, match="Could not read"):
        read_volume(bad)
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="Unsupported"):
        read_volume(png)
    with pytest.raises(InputError, match="file path"):
        read_volume(12345)


def test_2d_image(tmp_path):
    path = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(path))
    with pytest.raises(InputError, match="2D"):
        read_volume(path)
    with pytest.raises(InputError, match="2D|3D"):
        read_volume(np.zeros((1, 32, 32)))
    with pytest.raises(InputError, match="3D array"):
        read_volume(np.zeros((32, 32)))


def test_4d_and_multicomponent(tmp_path):
    path4 = tmp_path / "t.nii.gz"
    sitk.WriteImage(sitk.Image([6, 6, 6, 3], sitk.sitkInt16), str(path4))
    with pytest.raises(InputError, match="4 dimensions"):
        read_volume(path4)
    single = tmp_path / "t1.nii.gz"
    sitk.WriteImage(sitk.Image([6, 5, 4, 1], sitk.sitkInt16), str(single))
    assert read_volume(single, check_hu=False).array.shape == (
        4,
        5,
        6,
    )  # a trailing singleton time axis is accepted
    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([6, 6, 6], sitk.sitkVectorUInt8, 3), str(rgb))
    with pytest.raises(InputError, match="components"):
        read_volume(rgb)
    with pytest.raises(InputError, match="3D array"):
        read_volume(np.zeros((2, 6, 6, 6)))


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="No DICOM series"):
        read_volume(tmp_path)


def test_non_finite_voxels(tmp_path):
    arr = _ct_array()
    arr[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        read_volume(arr)
    path = tmp_path / "nan.mha"
    write_volume(Volume(arr), path)
    with pytest.raises(InputError, match="NaN/infinite"):
        read_volume(path)
    arr[1, 2, 3] = np.inf
    with pytest.raises(InputError, match="NaN/infinite"):
        read_volume(arr)


def test_unit_range_floats_warn_and_ct_does_not():
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="0..1"):
        read_volume(rng.random((4, 5, 6)).astype(np.float32))
    with pytest.warns(UserWarning, match="does not look like CT"):
        read_volume(np.linspace(3000.0, 4000.0, 120, dtype=np.float32).reshape(4, 5, 6))
    with pytest.warns(UserWarning, match="same value"):
        read_volume(np.zeros((4, 5, 6), dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(_ct_array())
        read_volume(rng.random((4, 5, 6)).astype(np.float32), check_hu=False)


# ---------------------------------------------------------------- synthetic DICOM series ------------------------
def _write_dicom_series(volume: Volume, folder, uid: str, modality: str = "CT") -> None:
    """One file per slice, written in shuffled order with explicit position/orientation tags."""
    img = volume_to_sitk(volume)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = img.GetDirection()
    iop = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    order = np.random.default_rng(3).permutation(img.GetDepth())
    for n, k in enumerate(order):
        s = img[:, :, int(k)]
        ipp = img.TransformIndexToPhysicalPoint((0, 0, int(k)))
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{k + 1}",
            "0020|000d": "1.2.826.0.1.3680043.8.498.1",
            "0020|000e": uid,
            "0020|0013": str(int(k) + 1),
            "0020|0032": "\\".join(f"{v:.10f}" for v in ipp),
            "0020|0037": iop,
        }
        for key, value in tags.items():
            s.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"img{n:03d}.dcm"))
        writer.Execute(s)


@pytest.mark.parametrize("handed", ["right", "left"])
def test_oblique_shuffled_dicom_series_geometry(tmp_path, handed):
    from voxelfm.imaging.resample import resample_to_grid

    arr = np.random.default_rng(0).integers(-1000, 1000, size=(6, 10, 12)).astype(np.int16)
    m = GEOMETRIES["oblique"].copy()  # left-handed (one flipped axis)
    if handed == "right":
        m[:3, 1] *= -1
    _write_dicom_series(Volume(arr, m), tmp_path / "s", "1.2.826.0.1.3680043.8.498.10")
    vol = read_volume(tmp_path / "s")
    if handed == "right":
        np.testing.assert_array_equal(vol.array, arr)  # sorted along the oblique normal, not by file name
        np.testing.assert_allclose(vol.ijk_to_ras, m, atol=1e-6)
    else:
        # DICOM stacks slices along row x column, so a left-handed grid comes back with k reversed: same voxels
        # at the same RAS positions
        np.testing.assert_array_equal(vol.array, arr[::-1])
        flipped = m.copy()
        flipped[:3, 2] *= -1
        flipped[:3, 3] = (m @ [0, 0, arr.shape[0] - 1, 1])[:3]
        np.testing.assert_allclose(vol.ijk_to_ras, flipped, atol=1e-6)
    same = resample_to_grid(arr, m, vol.array.shape, vol.ijk_to_ras, mode="nearest")
    np.testing.assert_array_equal(same, vol.array)


def test_dicom_picks_largest_ct_series(tmp_path):
    rng = np.random.default_rng(1)
    big = rng.integers(-1000, 1000, size=(5, 8, 9)).astype(np.int16)
    small = rng.integers(-1000, 1000, size=(3, 8, 9)).astype(np.int16)
    mr = rng.integers(0, 1000, size=(8, 8, 9)).astype(np.int16)
    m = GEOMETRIES["flipped"]
    _write_dicom_series(Volume(big, m), tmp_path / "study", "1.2.826.0.1.3680043.8.498.21")
    _write_dicom_series(Volume(small, m), tmp_path / "study" / "sub", "1.2.826.0.1.3680043.8.498.22")
    _write_dicom_series(Volume(mr, m), tmp_path / "study" / "mr", "1.2.826.0.1.3680043.8.498.23", "MR")
    np.testing.assert_array_equal(read_volume(tmp_path / "study").array, big)
    with pytest.raises(InputError, match="no CT series"):
        read_volume(tmp_path / "study" / "mr")
    with pytest.raises(InputError, match="single DICOM file"):
        read_volume(tmp_path / "study" / "img000.dcm")

"""Issue 9 on real CT (../shared/data): damaged and non-finite images, several DICOM series, a broken cache entry.

SimpleITK reads a truncated .nii.gz with its missing part as zeros and NaN NIfTI voxels as 0, silently; these
tests pin that VoxelFM refuses both, the same way for every format, and heals its feature cache.
"""

from __future__ import annotations

import logging
import shutil
import struct
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safety_workspace import tiny_backbone

from voxelfm.cli.main import main
from voxelfm.errors import InputError
from voxelfm.features.cache import FeatureCache
from voxelfm.imaging.io import read_volume

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def abdomen(data_dir):
    return data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_real_nii_gz_is_refused(abdomen, tmp_path, keep):
    data = abdomen.read_bytes()
    cut = tmp_path / "ct.nii.gz"
    cut.write_bytes(data[: int(len(data) * keep)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        padded = sitk.GetArrayFromImage(sitk.ReadImage(str(cut)))  # what SimpleITK alone would give
    assert padded.shape == (30, 101, 122) and (padded == 0).mean() > (keep < 0.9) * 0.1
    with pytest.raises(InputError, match="truncated"):
        read_volume(cut)


def test_corrupt_and_uncompressed_truncated_real_ct(abdomen, tmp_path):
    data = bytearray(abdomen.read_bytes())
    data[-6] ^= 0xFF  # inside the gzip CRC-32 trailer: SimpleITK reads it without complaint
    crc = tmp_path / "crc.nii.gz"
    crc.write_bytes(bytes(data))
    with pytest.raises(InputError, match="CRC"):
        read_volume(crc)
    img = sitk.ReadImage(str(abdomen))
    raw = tmp_path / "ct.nii"
    sitk.WriteImage(img, str(raw), False)
    raw.write_bytes(raw.read_bytes()[:-1000])  # an uncompressed NIfTI missing its last 1000 bytes
    with pytest.raises(InputError, match="promises 739320 bytes"):
        read_volume(raw)
    for name in ("ct.nrrd", "ct.nhdr"):  # NRRD with gzip encoding, attached and detached
        path = tmp_path / name
        sitk.WriteImage(img, str(path), True)
        data_file = path if name.endswith(".nrrd") else tmp_path / "ct.raw.gz"
        data_file.write_bytes(data_file.read_bytes()[:-5000])
        with pytest.raises(InputError, match="truncated"):
            read_volume(path)


def test_intact_real_ct_reads_as_before(abdomen):
    vol = read_volume(abdomen)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(sitk.ReadImage(str(abdomen))))


def test_non_finite_voxels_refused_alike_in_every_format(abdomen, tmp_path):
    img = sitk.ReadImage(str(abdomen))
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    arr[10, 50, 60], arr[20, 30, 40], arr[25, 80, 90] = np.nan, np.inf, -np.inf
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    for name in ("nan.nii.gz", "nan.nii", "nan.nrrd", "nan.mha"):
        sitk.WriteImage(bad, str(tmp_path / name), True)
        with pytest.raises(InputError, match="contains 3 NaN/infinite voxel value"):
            read_volume(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "nan.nii.gz")))).all()


def test_implausible_spacing_warns(abdomen, tmp_path):
    img = sitk.ReadImage(str(abdomen))
    img.SetSpacing([s / 1000.0 for s in img.GetSpacing()])  # a header in metres
    sitk.WriteImage(img, str(tmp_path / "metres.nii.gz"), True)
    with pytest.warns(UserWarning, match="voxel spacing 0.003 x 0.003 x 0.003 mm"):
        read_volume(tmp_path / "metres.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(abdomen)  # 3 mm: no warning


_EMPTY_SERIES_UID = b"\x20\x00\x0e\x00UI\x00\x00"  # (0020,000E) UI, length 0: these files are anonymised


def _copy_series(src, dst, uid: str, only: int | None = None) -> None:
    """Copy a DICOM series with SeriesInstanceUID ``uid`` written into its (empty) UID element."""
    value = uid.encode() + b"\x00" * (len(uid) % 2)  # UI values have even length
    element = _EMPTY_SERIES_UID[:6] + struct.pack("<H", len(value)) + value
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir())[:only]:
        data = f.read_bytes()
        assert data.count(_EMPTY_SERIES_UID) == 1
        (dst / f.name).write_bytes(data.replace(_EMPTY_SERIES_UID, element))


def test_dicom_folder_with_two_series_lists_them_and_takes_series(data_dir, tmp_path, capsys):
    src = data_dir / "totalseg" / "chest_dicom" / "dicom"
    study = tmp_path / "study"
    uid, other = "1.2.826.0.1.3680043.8.498.101", "1.2.826.0.1.3680043.8.498.102"
    _copy_series(src, study / "a", uid, only=6)
    _copy_series(src, study / "b", other, only=6)
    with pytest.raises(InputError, match="holds 2 CT series") as info:
        read_volume(study)
    assert uid in str(info.value) and other in str(info.value) and "--series" in str(info.value)
    chosen = read_volume(study, series=other)
    assert chosen.array.shape == (6, 512, 512)
    with pytest.raises(InputError, match="has no series 9.9"):
        read_volume(study, series="9.9")
    assert main(["features", str(study), "--out", str(tmp_path / "f.npz"), "--model", "voxelfm-tiny"]) == 2
    assert "--series UID" in capsys.readouterr().err and not (tmp_path / "f.npz").exists()
    # a one-image localizer beside the CT is not a second volume
    scout = tmp_path / "with_scout"
    _copy_series(src, scout / "ct", uid, only=6)
    _copy_series(src, scout / "scout", other, only=1)
    np.testing.assert_array_equal(read_volume(scout).array, chosen.array)


def test_corrupt_cache_entry_is_a_miss_removed_and_recomputed(abdomen, tmp_path, caplog):
    model = tiny_backbone(tmp_path / "tiny")
    args = ["features", str(abdomen), "--model", str(model), "--device", "cpu", "--max-tokens", "512"]
    assert main([*args, "--out", str(tmp_path / "a.npz")]) == 0
    entries = list(FeatureCache().folder.glob("*.npz"))
    entry = max(entries, key=lambda p: p.stat().st_mtime)
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 3])  # truncated: np.load raises BadZipFile
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--out", str(tmp_path / "b.npz")]) == 0
        assert main([*args, "--out", str(tmp_path / "c.npz")]) == 0  # every later run too
    assert "unreadable" in caplog.text and str(entry) in caplog.text
    assert caplog.text.count("unreadable") == 1  # the second run found the rewritten entry
    a, b, c = (np.load(tmp_path / f"{n}.npz") for n in "abc")
    for key in ("cls", "patch", "grid_to_ras"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(c[key], b[key])
    assert FeatureCache().get(entry.stem) is not None


def test_unreadable_cache_entries_of_every_kind_are_misses(tmp_path):
    cache = FeatureCache(tmp_path)
    for n, payload in enumerate([b"", b"PK\x03\x04 not a zip", b"\x00" * 100, np.zeros(3).tobytes()]):
        cache.path(f"k{n}").write_bytes(payload)
        assert cache.get(f"k{n}") is None and not cache.path(f"k{n}").exists()
    np.savez(tmp_path / "k9.npz", cls=np.zeros(4))  # a readable .npz that is not a features entry
    assert cache.get("k9") is None and not (tmp_path / "k9.npz").exists()
    shutil.rmtree(tmp_path)
    assert cache.get("absent") is None

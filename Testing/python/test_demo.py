"""The tour's pieces: labelled slices, the moved copy whose truth is known, landmarks, report texts.

The tour end to end (synthetic cases, and the real command on the sample CTs) is in test_demo_page.py."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.imaging.volume import Volume
from voxelfm.samples import demo as demo_mod
from voxelfm.samples import demo_cases as cases


def test_sparse_slice_labels_centre_first():
    ref = np.zeros((10, 4, 4), dtype=np.uint8)
    ref[3:8, 1:3, 1:3] = 1
    sparse, slices = demo_mod.sparse_slice_labels(ref, 3)
    assert slices == [4, 5, 6]
    assert set(np.unique(sparse[5])) == {0, 1} and (sparse[0] == 255).all()
    with pytest.raises(ValueError, match="empty"):
        demo_mod.sparse_slice_labels(np.zeros((3, 2, 2), dtype=np.uint8))


def test_demo_rejects_zero_slices(tmp_path):
    from voxelfm.errors import InputError

    with pytest.raises(InputError, match="at least 1"):
        demo_mod.run_demo(tmp_path / "out", n_slices=0)
    assert not (tmp_path / "out").exists()


def test_moved_copy_truth_is_the_same_voxel():
    """A point of the original lands, under the motion, on the copy's voxel holding the same value."""
    rng = np.random.default_rng(0)
    m = np.diag([-0.7, -0.7, 2.5, 1.0])
    m[:3, 3] = [50.0, 80.0, -300.0]
    vol = Volume(rng.normal(size=(20, 40, 50)).astype(np.float32), m)
    motion = cases.Motion()
    copy, matrix = cases.moved_copy(vol, motion, "copy")
    (i0, j0, k0), (ni, nj, nk) = motion.crop(vol.array.shape)
    assert copy.array.shape == (nk, nj, ni) and np.array_equal(
        copy.array, vol.array[k0 : k0 + nk, j0 : j0 + nj, i0 : i0 + ni]
    )
    ijk = np.array([i0 + 7, j0 + 5, k0 + 3], dtype=float)
    moved = cases.apply_motion(matrix, cases.ijk_to_ras(vol, ijk)[None])[0]
    back = np.round(cases.ras_to_ijk(copy, moved)).astype(int)
    assert copy.array[back[2], back[1], back[0]] == vol.array[k0 + 3, j0 + 5, i0 + 7]
    # a real motion: rotated and shifted, not the identity
    assert np.linalg.norm(moved - cases.ijk_to_ras(vol, ijk)) > 5.0


def test_landmarks_and_report_follow_the_label():
    k, j, i = np.indices((10, 60, 60))
    m = np.diag([-1.0, -1.0, 2.0, 1.0])
    ct = np.full((10, 60, 60), -1000.0, dtype=np.float32)
    ct[((j - 30) ** 2 + (i - 30) ** 2) < 27**2] = 0.0  # body
    ct[(np.abs(i - 30) < 3) & (np.abs(j - 48) < 3)] = 700.0  # "vertebra": posterior midline (rows = -y)
    label = np.zeros_like(ct, dtype=np.uint8)
    label[4:6, 20:26, 10:18] = 1  # 8 mm wide in i, 6 mm in j
    names, points = cases.pick_landmarks(Volume(ct, m), Volume(label, m))
    assert names[0] == "nodule" and "vertebra" in names
    assert np.allclose(points[0], cases.ijk_to_ras(Volume(label, m), [13.5, 22.5, 4.5]))
    assert np.allclose(points[names.index("vertebra")][:2], [-30.0, -48.0], atol=0.6)
    assert cases.label_diameter_mm(Volume(label, m)) == pytest.approx(8.0)
    assert cases.nodule_report(Volume(label, m)) == "A lung nodule of about 8 mm is present."
    label[5, 0:40, 10:18] = 1
    assert "lung mass of about 40 mm" in cases.nodule_report(Volume(label, m))

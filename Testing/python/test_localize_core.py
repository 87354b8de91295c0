"""One-shot landmark transfer in the core: planted matches, grids, geometry (left/right), bad inputs.

Features come from ``localize_fakes.planted_access`` (a fixed random embedding of each patch's voxels), so what
is tested is the matching, the geometry and the bookkeeping, not a backbone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from localize_fakes import PATCH, planted_access

from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume
from voxelfm.localize.canonical import canonical_volume, centred_grid, resample_onto
from voxelfm.localize.config import TransferConfig
from voxelfm.localize.matching import FeatureField, peaks, similarity_maps
from voxelfm.localize.points import PointList, ijk_to_ras_points, ras_to_ijk
from voxelfm.localize.template import LandmarkTemplate, build_template
from voxelfm.localize.transfer import transfer

SPACING = 2.0  # mm: canonical grid of the planted cases
CELL = SPACING * PATCH


def oblique_flipped(spacing=(2.0, 2.0, 2.0), origin=(30.0, -20.0, 5.0), angle=0.3) -> np.ndarray:
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag([1.0, -1.0, 1.0]) * np.asarray(spacing)
    m[:3, 3] = origin
    return m


def lps_aligned(shape_kji, spacing=SPACING, first=(100.0, 80.0, -40.0)) -> np.ndarray:
    """A grid already patient-aligned like the canonical one (i -> L, j -> P, k -> S)."""
    m = np.eye(4)
    m[:3, :3] = np.diag([-spacing, -spacing, spacing])
    m[:3, 3] = first
    return m


def body_phantom(rng, shape=(24, 40, 48)) -> np.ndarray:
    """Soft tissue ellipse (axial) with noise, air outside: a 'body' for the body frame."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    body = ((i - shape[2] / 2) / (shape[2] * 0.45)) ** 2 + ((j - shape[1] / 2) / (shape[1] * 0.42)) ** 2 < 1
    return np.where(body, 40.0 + rng.normal(0, 30, shape), -1000.0).astype(np.float32)


# ---------------------------------------------------------------- planted match


def test_similarity_peak_is_the_planted_block_exactly():
    rng = np.random.default_rng(0)
    patch = rng.normal(size=(9, 10, 11, 16)).astype(np.float32)
    field = FeatureField.build(patch, np.eye(4), dim=16)
    at = np.array([[6.0, 4.0, 3.0]])  # i, j, k
    desc = field.descriptor(field.ras_of(at), radius=1)
    cells, vals = peaks(similarity_maps(desc, field)[0], 3)
    np.testing.assert_array_equal(cells[0], at[0])
    assert vals[0] == pytest.approx(1.0, abs=1e-5) and vals[1] < 0.9


def test_planted_match_is_found_exactly_in_a_larger_target():
    """The reference's voxels embedded (at a whole-cell offset) in a bigger, noisy target: exact positions."""
    rng = np.random.default_rng(1)
    ref_arr = rng.normal(0, 300, (16, 20, 24)).astype(np.float32)
    ref = Volume(ref_arr, lps_aligned(ref_arr.shape), "ref")
    offset_cells = np.array([3, 2, 4])  # i, j, k cells
    tgt_arr = rng.normal(0, 300, (32, 36, 40)).astype(np.float32)
    o = offset_cells * PATCH
    tgt_arr[o[2] : o[2] + 16, o[1] : o[1] + 20, o[0] : o[0] + 24] = ref_arr
    tgt = Volume(tgt_arr, lps_aligned(tgt_arr.shape, first=(250.0, -10.0, 300.0)), "target")
    cells = np.array([[2, 3, 2], [7, 5, 3], [9, 8, 5]], float)  # reference cells (i, j, k), interior
    ref_pts = PointList(["a", "b", "c"], ijk_to_ras_points(ref.ijk_to_ras, cells * PATCH + (PATCH - 1) / 2))
    truth = ijk_to_ras_points(tgt.ijk_to_ras, (cells + offset_cells) * PATCH + (PATCH - 1) / 2)
    access = planted_access()
    cfg = TransferConfig(feature_spacing_mm=SPACING, refine="none", frame_weight=0.0, context_cells=1)
    result = transfer(tgt, [build_template(ref, ref_pts, access, cfg)], access)
    assert result.points.names == ["a", "b", "c"]
    np.testing.assert_allclose(result.points.ras, truth, atol=1e-6)
    assert np.all(result.confidence > 0.99)


# ---------------------------------------------------------------- grids and points


def test_points_round_trip_through_oblique_and_flipped_grids():
    """A bright voxel at a point of an oblique, flipped volume lands at the same RAS on the canonical grid."""
    arr = np.full((20, 22, 24), -1000.0, np.float32)
    arr[9, 12, 7] = 2000.0
    vol = Volume(arr, oblique_flipped())
    point = ijk_to_ras_points(vol.ijk_to_ras, np.array([[7.0, 12.0, 9.0]]))
    canon = canonical_volume(vol, 0.5)
    kji = np.argwhere(canon.array > 1000.0)
    found = ijk_to_ras_points(canon.ijk_to_ras, kji[:, ::-1].mean(0)[None])
    assert np.linalg.norm(found - point) < 1.0  # within one source voxel (2 mm), interpolation blur
    np.testing.assert_allclose(ijk_to_ras_points(vol.ijk_to_ras, ras_to_ijk(vol.ijk_to_ras, point)), point)


def test_centred_grid_puts_the_point_at_the_middle_patch_centre():
    p = np.array([12.3, -45.6, 78.9])
    grid = centred_grid(p, 5, 14, 0.75)
    middle = np.full(3, 2 * 14 + 6.5)
    np.testing.assert_allclose(ijk_to_ras_points(grid.ijk_to_ras, middle[None])[0], p, atol=1e-9)
    vol = Volume(np.zeros((4, 4, 4), np.float32), oblique_flipped())
    assert resample_onto(vol, grid).array.shape == (70, 70, 70)


# ---------------------------------------------------------------- geometry: left and right


def _left_right_case(rng):
    arr = body_phantom(rng)
    blob = rng.normal(300, 200, (6, 6, 6)).astype(np.float32)
    arr[9:15, 17:23, 8:14] = blob  # patient-left side (canonical i -> L: small i = right... see below)
    arr[9:15, 17:23, 34:40] = blob[:, :, ::-1]  # the mirror image on the other side
    return arr, blob


def test_mirror_twins_do_not_swap_sides():
    """Left and right structures that look alike: the body frame (and the registration) keeps each landmark on
    its own side, even when the other side's twin matches the reference's appearance better. Without geometry
    (no body frame, no registration) it swaps (the test can fail)."""
    rng = np.random.default_rng(2)
    arr, blob = _left_right_case(rng)
    ref = Volume(arr, lps_aligned(arr.shape), "ref")
    centres = np.array([[10.5, 19.5, 11.5], [36.5, 19.5, 11.5]])  # (i, j, k) of the two blobs
    pts = PointList(["twin_a", "twin_b"], ijk_to_ras_points(ref.ijk_to_ras, centres))
    tgt_arr = arr.copy()
    tgt_arr[9:15, 17:23, 34:40] = blob  # the other side now holds twin_a's exact appearance...
    tgt_arr[9:15, 17:23, 8:14] = blob + rng.normal(0, 120, blob.shape)  # ...and twin_a's own side is noisy
    tgt = Volume(tgt_arr, lps_aligned(arr.shape), "target")
    access = planted_access()
    swapped = _transfer(ref, pts, tgt, access, frame_weight=0.0, initialise="features")
    assert np.linalg.norm(swapped.points.ras[0] - pts.ras[1]) < CELL  # appearance alone: wrong side
    kept = _transfer(ref, pts, tgt, access, frame_weight=1.0)
    separation = np.linalg.norm(pts.ras[0] - pts.ras[1])  # 52 mm
    for n in range(2):  # each on its own side, within ~1 cell (the other side's blob is not mirrored now)
        assert np.linalg.norm(kept.points.ras[n] - pts.ras[n]) < min(2 * CELL, separation / 4)


def test_a_flipped_storage_copy_keeps_left_and_right():
    """The same anatomy stored with i and k reversed (header says so): the patient-aligned grid makes the model
    see the same picture, so the answer is the one for the unflipped copy, each twin on its own side."""
    rng = np.random.default_rng(3)
    arr, _ = _left_right_case(rng)
    ref = Volume(arr, lps_aligned(arr.shape), "ref")
    pts = PointList(
        ["twin_a", "twin_b"],
        ijk_to_ras_points(ref.ijk_to_ras, np.array([[10.5, 19.5, 11.5], [36.5, 19.5, 11.5]])),
    )
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    flip[:3, 3] = [arr.shape[2] - 1, 0, arr.shape[0] - 1]
    tgt = Volume(arr[::-1, :, ::-1].copy(), ref.ijk_to_ras @ flip, "flipped")
    result = _transfer(ref, pts, tgt, planted_access(), frame_weight=0.0, initialise="features")
    same = _transfer(ref, pts, ref, planted_access(), frame_weight=0.0, initialise="features")
    np.testing.assert_allclose(result.points.ras, same.points.ras, atol=1e-6)
    assert np.all(np.linalg.norm(result.points.ras - pts.ras, axis=1) < CELL)  # snapped to a cell centre
    # started by the registration (an optimisation: equal up to its rounding, not to the last bit)
    registered = _transfer(ref, pts, tgt, planted_access(), frame_weight=0.0)
    again = _transfer(ref, pts, ref, planted_access(), frame_weight=0.0)
    np.testing.assert_allclose(registered.points.ras, again.points.ras, atol=0.1)
    assert np.all(np.linalg.norm(registered.points.ras - pts.ras, axis=1) < CELL)


def _transfer(ref, pts, tgt, access, frame_weight, initialise="registration"):
    cfg = TransferConfig(
        feature_spacing_mm=SPACING,
        refine="none",
        frame_weight=frame_weight,
        consistency=False,
        context_cells=1,
        initialise=initialise,
    )
    return transfer(tgt, [build_template(ref, pts, access, cfg)], access)


# ---------------------------------------------------------------- bad inputs


@pytest.fixture
def small_ref():
    rng = np.random.default_rng(4)
    arr = body_phantom(rng, (12, 16, 16))
    return Volume(arr, lps_aligned(arr.shape), "ref")


def test_no_reference_points_is_a_clear_error(small_ref):
    with pytest.raises(InputError, match="holds no points"):
        build_template(small_ref, PointList([], np.zeros((0, 3))), planted_access())
    with pytest.raises(InputError, match="No reference"):
        transfer(small_ref, [], planted_access())


def test_a_point_outside_its_reference_is_a_clear_error(small_ref):
    inside = ijk_to_ras_points(small_ref.ijk_to_ras, np.array([[8.0, 8.0, 6.0]]))
    outside = inside + np.array([0.0, 0.0, 500.0])
    pts = PointList(["in", "far"], np.vstack([inside, outside]), name="ref points")
    with pytest.raises(InputError, match="'far' of reference 'ref points'.*outside"):
        build_template(small_ref, pts, planted_access())


def test_duplicate_names_are_a_clear_error(small_ref):
    p = ijk_to_ras_points(small_ref.ijk_to_ras, np.array([[8.0, 8.0, 6.0], [5.0, 5.0, 5.0]]))
    with pytest.raises(InputError, match="several points called 'x'"):
        build_template(small_ref, PointList(["x", "x"], p), planted_access())


def test_references_from_different_backbones_are_refused(small_ref, tmp_path):
    p = PointList(["x"], ijk_to_ras_points(small_ref.ijk_to_ras, np.array([[8.0, 8.0, 6.0]])))
    cfg = TransferConfig(feature_spacing_mm=SPACING, refine="none")
    one = build_template(
        small_ref, p, planted_access(seed=1, model={"id": "model-a", "sha256": "a" * 64}), cfg
    )
    two = build_template(
        small_ref, p, planted_access(seed=2, model={"id": "model-b", "sha256": "b" * 64}), cfg
    )
    with pytest.raises(InputError, match="different backbones.*model-a.*model-b"):
        transfer(small_ref, [one, two], planted_access(seed=1, model={"id": "model-a", "sha256": "a" * 64}))
    # a saved template keeps its backbone: used with another model it is refused too
    again = LandmarkTemplate.load(one.save(tmp_path / "t.npz"))
    with pytest.raises(InputError, match="built with 'model-a'.*model in use is 'model-b'"):
        transfer(small_ref, [again], planted_access(seed=2, model={"id": "model-b", "sha256": "b" * 64}))


def test_template_file_round_trip(small_ref, tmp_path):
    p = PointList(
        ["x", "y"], ijk_to_ras_points(small_ref.ijk_to_ras, np.array([[8.0, 8.0, 6.0], [4.0, 9.0, 5.0]]))
    )
    t = build_template(
        small_ref, p, planted_access(), TransferConfig(feature_spacing_mm=SPACING, refine="ncc")
    )
    back = LandmarkTemplate.load(t.save(tmp_path / "t.npz"))
    assert (
        back.names == ["x", "y"] and back.settings_key() == t.settings_key() and back.backbone == t.backbone
    )
    np.testing.assert_array_equal(back.coarse, t.coarse)
    np.testing.assert_array_equal(back.cubes, t.cubes)
    (tmp_path / "bad.npz").write_bytes(b"not a template")
    with pytest.raises(InputError, match="not a readable landmark template"):
        LandmarkTemplate.load(tmp_path / "bad.npz")


def test_a_template_saved_with_its_backbone_under_model_still_loads(small_ref, tmp_path):
    """Templates saved before the one backbone record named it ``model``; they keep loading (and checking)."""
    import json

    p = PointList(["x"], ijk_to_ras_points(small_ref.ijk_to_ras, np.array([[8.0, 8.0, 6.0]])))
    path = build_template(small_ref, p, planted_access(), TransferConfig(feature_spacing_mm=SPACING)).save(
        tmp_path / "t.npz"
    )
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["model"] = meta.pop("backbone")
    np.savez(tmp_path / "old.npz", meta=np.array(json.dumps(meta)), **arrays)
    old = LandmarkTemplate.load(tmp_path / "old.npz")
    assert old.backbone["sha256"] == "0" * 64
    with pytest.raises(InputError, match="built with 'planted'.*model in use is 'model-b'"):
        transfer(small_ref, [old], planted_access(seed=2, model={"id": "model-b", "sha256": "b" * 64}))


def test_torch_threads_untouched():
    assert torch.get_num_threads() >= 1

"""Landmark cases for the localisation benchmark and tests, derived from the labels in ../shared/data.

* ``moved_copy``: a scan rotated and shifted in physical space, resampled, cropped and stored flipped; the true
  points are the original points moved by the same rigid transform.
* landmark sets: centroids of labelled structures (vertebrae, kidneys, liver, spleen, heart, ...), the
  pulmonary landmark masks of pulmonary_1p5mm, the elastix_lung_small points inside the CT.
* between patients (abdomen_3mm <-> chest_dicom, the only pair of different patients with common labels): the
  chest CT is a 40 mm slab, so a structure's landmark is the centroid of its part inside the slab that both
  scans cover around the T12 vertebra (levels aligned on the T12 centroid). These points correspond only
  approximately (anatomy differs between patients by about a centimetre).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxelfm.imaging.io import read_volume
from voxelfm.imaging.resample import resample_to_grid
from voxelfm.imaging.volume import Volume
from voxelfm.localize.canonical import ras_bounds
from voxelfm.localize.points import PointList, inside_volume, lps_to_ras

PULMONARY_MASKS = (
    "pul_annulus",
    "pul_bifurcation",
    "pul_left_start",
    "pul_right_start",
    "pul_sinotubular_junction",
)
ORGANS = ("kidney_left", "kidney_right", "liver", "spleen", "vertebrae_L1", "vertebrae_L2", "vertebrae_T12")
SLAB_STRUCTURES = (
    "vertebrae_T12",
    "liver",
    "spleen",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "spinal_cord",
    "autochthon_left",
    "autochthon_right",
    "rib_left_9",
    "rib_left_10",
    "rib_left_11",
    "rib_right_9",
    "rib_right_10",
    "rib_right_11",
    "portal_vein_and_splenic_vein",
)
MIN_VOXELS = 20


@dataclass
class Case:
    name: str
    volume: Volume
    points: PointList


def rotation(deg_xyz) -> np.ndarray:
    ax, ay, az = np.radians(deg_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid(volume: Volume, deg_xyz, shift_mm) -> np.ndarray:
    """4x4 RAS -> RAS: rotation about the volume's centre, then a shift."""
    lo, hi = ras_bounds(volume)
    c = (lo + hi) / 2
    m = np.eye(4)
    m[:3, :3] = rotation(deg_xyz)
    m[:3, 3] = c - m[:3, :3] @ c + np.asarray(shift_mm, float)
    return m


def moved_copy(
    case: Case,
    deg_xyz=(6.0, -5.0, 10.0),
    shift_mm=(14.0, -9.0, 11.0),
    spacing_factor=(1.15, 0.9, 1.2),
    crop_fraction=0.06,
    flip=(True, False, True),
) -> tuple[Case, np.ndarray]:
    """The case moved in physical space (rigid), resampled to other spacings, cropped on every side by
    ``crop_fraction`` of the extent and stored with flipped axes (the image geometry says so: the anatomy is
    the moved one, not a mirror). Returns the new case (true points moved alike) and the transform."""
    vol = case.volume
    t = rigid(vol, deg_xyz, shift_mm)
    direction = vol.direction @ np.diag([-1.0 if f else 1.0 for f in flip])
    spacing = vol.spacing * np.asarray(spacing_factor)
    lo, hi = ras_bounds(vol)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    moved = corners @ t[:3, :3].T + t[:3, 3]
    # extent along the new axes, cropped
    proj = moved @ direction  # coordinates along the new axes
    a, b = proj.min(0), proj.max(0)
    a, b = a + crop_fraction * (b - a), b - crop_fraction * (b - a)
    n = np.maximum(np.round((b - a) / spacing).astype(int), 2)
    m = np.eye(4)
    m[:3, :3] = direction * spacing
    m[:3, 3] = direction @ (a + spacing / 2)
    arr = resample_to_grid(vol.array, t @ vol.ijk_to_ras, tuple(n[::-1]), m, "linear", -1000.0)
    new = Volume(arr, m, f"{vol.name}_moved")
    truth = case.points.ras @ t[:3, :3].T + t[:3, 3]
    keep = inside_volume(new, truth)
    pts = PointList(list(np.array(case.points.names)[keep]), truth[keep], name=f"{case.points.name}_moved")
    return Case(new.name, new, pts), t


def _centroids(labels: Volume, ids: dict[str, int], z_range=None) -> dict[str, np.ndarray]:
    arr = np.asarray(labels.array).astype(np.int32)
    out = {}
    for name, value in ids.items():
        kji = np.argwhere(arr == value)
        if not len(kji):
            continue
        ras = kji[:, ::-1] @ labels.ijk_to_ras[:3, :3].T + labels.ijk_to_ras[:3, 3]
        if z_range is not None:
            ras = ras[(ras[:, 2] >= z_range[0]) & (ras[:, 2] <= z_range[1])]
        if len(ras) >= MIN_VOXELS:
            out[name] = ras.mean(0)
    return out


def _names(json_path: Path) -> dict[str, int]:
    return {v: int(k) for k, v in json.loads(json_path.read_text()).items()}


def _points(name: str, d: dict[str, np.ndarray]) -> PointList:
    return PointList(list(d), np.array(list(d.values())).reshape(-1, 3), name=name)


def torso_case(data: Path) -> Case:
    root = data / "totalseg" / "torso_3mm"
    vol = read_volume(root / "ct.nii.gz", check_hu=False)
    lab = read_volume(root / "vertebrae_labels.nii.gz", check_hu=False)
    return Case(
        "torso_3mm", vol, _points("vertebrae", _centroids(lab, _names(root / "vertebrae_labels.json")))
    )


# the TotalSegmentator cases with a full label map (labels.nii.gz + labels.json) -> their CT in the folder
_LABELLED_CT = {"abdomen_3mm": "ct.nii.gz", "chest_dicom": "dicom"}


def _labelled(data: Path, sub: str) -> tuple[Volume, Volume, dict[str, int]]:
    """CT, label map and label ids (name -> value) of data/totalseg/SUB."""
    root = data / "totalseg" / sub
    vol = read_volume(root / _LABELLED_CT[sub], check_hu=False)
    lab = read_volume(root / "labels.nii.gz", check_hu=False)
    return vol, lab, _names(root / "labels.json")


def _organ_case(data: Path, sub: str, names) -> Case:
    """The centroids of the structures ``names`` of a labelled case."""
    vol, lab, ids = _labelled(data, sub)
    return Case(sub, vol, _points("organs", _centroids(lab, {k: v for k, v in ids.items() if k in names})))


def abdomen_case(data: Path, names=ORGANS) -> Case:
    return _organ_case(data, "abdomen_3mm", names)


def pulmonary_case(data: Path) -> Case:
    root = data / "totalseg" / "pulmonary_1p5mm"
    vol = read_volume(root / "ct.nii.gz", check_hu=False)
    pts = {}
    for name in ("heart", "pulmonary_artery", *PULMONARY_MASKS):
        c = _centroids(read_volume(root / f"{name}.nii.gz", check_hu=False), {name: 1})
        pts.update(c)
    p = _points("pulmonary", pts)
    return Case(
        "pulmonary_1p5mm",
        vol,
        p.subset([n for n, i in zip(p.names, inside_volume(vol, p.ras), strict=True) if i]),
    )


def elastix_case(data: Path) -> Case:
    root = data / "public_ct" / "elastix_lung_small"
    vol = read_volume(root / "3DCT_lung_baseline_small.mha", check_hu=False)
    lines = (root / "3DCT_lung_baseline_landmarks.txt").read_text().split("\n")
    count = int(lines[1])
    lps = np.array([[float(v) for v in ln.split()] for ln in lines[2 : 2 + count]])
    ras = lps_to_ras(lps)
    keep = inside_volume(vol, ras, margin_voxels=-1.0)  # at least a voxel inside
    names = [f"lm{n + 1:03d}" for n in range(count)]
    return Case("elastix_lung_small", vol, PointList(list(np.array(names)[keep]), ras[keep], name="elastix"))


def chest_case(data: Path, names=ORGANS) -> Case:
    return _organ_case(data, "chest_dicom", names)


def slab_pair(data: Path) -> tuple[Case, Case]:
    """abdomen_3mm and chest_dicom with the centroids of each structure's part in the T12-aligned common slab."""
    cases = []
    volumes = []
    for sub in ("abdomen_3mm", "chest_dicom"):
        vol, lab, ids = _labelled(data, sub)
        t12 = _centroids(lab, {"vertebrae_T12": ids["vertebrae_T12"]})["vertebrae_T12"][2]
        lo, hi = ras_bounds(vol)
        volumes.append((sub, vol, lab, ids, t12, lo[2] - t12, hi[2] - t12))
    rel_lo = max(v[5] for v in volumes)
    rel_hi = min(v[6] for v in volumes)
    for sub, vol, lab, ids, t12, _, _ in volumes:
        chosen = {k: v for k, v in ids.items() if k in SLAB_STRUCTURES}
        cases.append(Case(sub, vol, _points("slab", _centroids(lab, chosen, (t12 + rel_lo, t12 + rel_hi)))))
    common = [n for n in cases[0].points.names if n in cases[1].points.names]
    return tuple(Case(c.name, c.volume, c.points.subset(common)) for c in cases)  # type: ignore[return-value]


def out_of_view_copy(case: Case, keep: float = 0.5) -> Case:
    """The case's lower ``keep`` share of slices (a scan that stops short): every true point kept, so the
    points above the cut lie outside the copy's field of view and must be reported as not found."""
    vol = case.volume
    nk = max(2, int(round(vol.array.shape[0] * keep)))
    superior = vol.ijk_to_ras[2, 2] > 0  # k runs towards the head: keep the first slices
    rows = slice(0, nk) if superior else slice(vol.array.shape[0] - nk, None)
    m = vol.ijk_to_ras.copy()
    if not superior:
        m[:3, 3] = m[:3, :3] @ np.array([0.0, 0.0, vol.array.shape[0] - nk]) + m[:3, 3]
    new = Volume(vol.array[rows].copy(), m, f"{vol.name}_cut")
    return Case(
        new.name, new, PointList(list(case.points.names), case.points.ras, name=f"{case.points.name}_cut")
    )

"""What the tour makes from the two sample CTs where the truth is known by construction.

- A moved and cropped copy of a scan: the same voxels, cropped, under a known rigid transform, so every point
  of the original has an exact true position in the copy (landmark transfer is scored in mm against it).
- Landmarks picked by simple rules on the original: the nodule centre (from its label) and centroids of bone
  (dense, easy to see) in fixed parts of the middle slice.
- Short report texts written from the labels (the sample data has none), so a case library can hold reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..imaging.volume import Volume

BONE_HU = 250.0
BODY_HU = -300.0


@dataclass(frozen=True)
class Motion:
    """A rigid motion (rotation about the superior axis through the volume centre, then a shift) and a crop."""

    rotation_deg: float = 8.0
    shift_mm: tuple[float, float, float] = (12.0, -8.0, 15.0)
    crop_low: tuple[float, float, float] = (0.1, 0.1, 0.1)  # (i, j, k) fraction removed at the low end
    keep: tuple[float, float, float] = (0.8, 0.8, 0.8)  # (i, j, k) fraction of each axis kept after that

    def crop(self, shape_kji: tuple[int, ...]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """((i0, j0, k0), (ni, nj, nk)): the voxels kept of a volume of array shape ``shape_kji``."""
        n = shape_kji[::-1]
        low = tuple(int(round(f * s)) for f, s in zip(self.crop_low, n, strict=True))
        keep = tuple(
            max(1, min(int(round(f * s)), s - lo)) for f, s, lo in zip(self.keep, n, low, strict=True)
        )
        return low, keep  # type: ignore[return-value]

    def matrix(self, volume: Volume) -> np.ndarray:
        """4x4 RAS -> RAS of the motion, about the centre of ``volume``."""
        th = np.deg2rad(self.rotation_deg)
        rot = np.eye(3)
        rot[:2, :2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
        centre = volume_centre(volume)
        m = np.eye(4)
        m[:3, :3] = rot
        m[:3, 3] = centre - rot @ centre + np.asarray(self.shift_mm, dtype=np.float64)
        return m


def volume_centre(volume: Volume) -> np.ndarray:
    mid = (np.asarray(volume.array.shape[::-1], dtype=np.float64) - 1) / 2
    return volume.ijk_to_ras[:3, :3] @ mid + volume.ijk_to_ras[:3, 3]


def ijk_to_ras(volume: Volume, ijk) -> np.ndarray:
    return volume.ijk_to_ras[:3, :3] @ np.asarray(ijk, dtype=np.float64) + volume.ijk_to_ras[:3, 3]


def ras_to_ijk(volume: Volume, ras) -> np.ndarray:
    inv = np.linalg.inv(volume.ijk_to_ras)
    return inv[:3, :3] @ np.asarray(ras, dtype=np.float64) + inv[:3, 3]


def moved_copy(volume: Volume, motion: Motion, name: str) -> tuple[Volume, np.ndarray]:
    """(the cropped voxels under the moved geometry, the 4x4 RAS motion); no resampling, so nothing is blurred."""
    (i0, j0, k0), (ni, nj, nk) = motion.crop(volume.array.shape)
    crop = np.ascontiguousarray(volume.array[k0 : k0 + nk, j0 : j0 + nj, i0 : i0 + ni])
    offset = np.eye(4)
    offset[:3, 3] = [i0, j0, k0]
    m = motion.matrix(volume)
    return Volume(crop, m @ volume.ijk_to_ras @ offset, name=name), m


def apply_motion(m: np.ndarray, ras: np.ndarray) -> np.ndarray:
    return (m[:3, :3] @ np.asarray(ras, dtype=np.float64).T).T + m[:3, 3]


def label_centre(label: Volume) -> np.ndarray:
    k, j, i = np.nonzero(label.array > 0)
    if k.size == 0:
        raise InputError(f"The label {label.name or ''} is empty.")
    return ijk_to_ras(label, [i.mean(), j.mean(), k.mean()])


def label_diameter_mm(label: Volume) -> float:
    """Largest in-plane extent of the label on any axial slice (mm), as a reader measures a nodule."""
    sp = np.linalg.norm(label.ijk_to_ras[:3, :3], axis=0)
    best = 0.0
    for k in np.flatnonzero(label.array.reshape(label.array.shape[0], -1).any(axis=1)):
        j, i = np.nonzero(label.array[k])
        best = max(best, (np.ptp(i) + 1) * sp[0], (np.ptp(j) + 1) * sp[1])
    return float(best)


def pick_landmarks(volume: Volume, label: Volume) -> tuple[list[str], np.ndarray]:
    """(names, RAS [N,3]): the nodule centre, then bone centroids in parts of the middle axial slice."""
    k = volume.array.shape[0] // 2
    sl = np.asarray(volume.array[k], dtype=np.float32)
    rows, cols = np.indices(sl.shape)
    body_rows, body_cols = np.nonzero(sl > BODY_HU)
    if body_rows.size == 0:
        raise InputError("The middle slice has no body to pick landmarks on.")
    cy, cx = body_rows.mean(), body_cols.mean()
    width = sl.shape[1]
    bone = sl > BONE_HU
    # image columns run towards the patient's left (i -> -x in RAS) only for the usual axial orientation:
    # name the sides from RAS, not from columns
    x_of_col = volume.ijk_to_ras[0, 0]
    right_cols = (cols < cx) if x_of_col < 0 else (cols > cx)
    posterior = (rows > cy) if volume.ijk_to_ras[1, 1] < 0 else (rows < cy)
    lateral = np.abs(cols - cx) > 0.2 * width
    # the sternum: dense voxels within 50 mm of the skin at the midline (not the calcified aorta behind it)
    central = np.abs(cols - cx) < 0.08 * width
    midline_rows = np.nonzero((sl > BODY_HU) & central)[0]
    front_row = midline_rows.min() if volume.ijk_to_ras[1, 1] < 0 else midline_rows.max()
    front = np.abs(rows - front_row) < 50.0 / abs(volume.ijk_to_ras[1, 1])
    parts = {
        "vertebra": bone & central & posterior,
        "sternum": bone & central & ~posterior & front,
        "right posterior bone": bone & lateral & right_cols & posterior,
        "left posterior bone": bone & lateral & ~right_cols & posterior,
    }
    names, points = ["nodule"], [label_centre(label)]
    for name, mask in parts.items():
        jj, ii = np.nonzero(mask)
        if jj.size:
            names.append(name)
            points.append(ijk_to_ras(volume, [ii.mean(), jj.mean(), k]))
    return names, np.array(points)


def nodule_report(label: Volume) -> str:
    """A one-sentence report of what the label shows (the sample data has none): a nodule up to 30 mm, a mass
    above (the usual radiological cut-off)."""
    size = label_diameter_mm(label)
    kind = "nodule" if size <= 30.0 else "mass"
    return f"A lung {kind} of about {size:.0f} mm is present."

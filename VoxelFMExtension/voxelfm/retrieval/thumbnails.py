"""PNG thumbnails of a query result: the query region (left) beside each hit's matching place (right).

Panels are axial RAS slices sampled through the 4x4 geometry (``resample_to_grid``), displayed in the
radiological convention (patient right on the left, anterior up) at the same physical scale on both sides,
with the region's box drawn on the query and a box of the same size on the hit. The hit's image is read
from the path it was added from; a case whose file is gone gets no thumbnail (and a warning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_write
from ..imaging.io import read_volume
from ..imaging.pictures import ct_gray
from ..imaging.resample import resample_to_grid
from ..imaging.volume import Volume
from .records import clean_id
from .result import QueryResult

log = logging.getLogger(__name__)
PIXELS = 256


def _centre(volume: Volume) -> np.ndarray:
    mid = (np.asarray(volume.shape_ijk, dtype=np.float64) - 1) / 2
    return volume.ijk_to_ras[:3, :3] @ mid + volume.ijk_to_ras[:3, 3]


def _extent(volume: Volume) -> float:
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in volume.shape_ijk], indexing="ij")).reshape(
        3, -1
    )
    ras = volume.ijk_to_ras[:3, :3] @ corners
    return float(np.ptp(ras[:2], axis=1).max())


def axial_panel(volume: Volume, centre: np.ndarray, fov_mm: float, pixels: int = PIXELS) -> np.ndarray:
    """[pixels, pixels] grey values in [0, 1] of the axial plane through ``centre`` (RAS)."""
    step = fov_mm / pixels
    m = np.eye(4)
    m[:3, :3] = np.diag([-step, -step, 1.0])  # columns towards patient left, rows towards posterior
    m[:3, 3] = np.asarray(centre, dtype=np.float64) + np.array(
        [fov_mm / 2 - step / 2, fov_mm / 2 - step / 2, 0]
    )
    plane = resample_to_grid(
        volume.array, volume.ijk_to_ras, (1, pixels, pixels), m, mode="linear", fill=-1024.0
    )
    return ct_gray(plane[0])


def _draw(panel: np.ndarray, half_mm: np.ndarray | None, fov_mm: float, title: str):
    from PIL import Image, ImageDraw  # PIL only when thumbnails are written

    img = Image.fromarray((np.clip(panel, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    if half_mm is not None:
        c = panel.shape[0] / 2
        hx, hy = (float(v) * panel.shape[0] / fov_mm for v in half_mm[:2])
        draw.rectangle([c - hx, c - hy, c + hx, c + hy], outline=(255, 200, 0), width=2)
    draw.rectangle([0, 0, img.width, 14], fill=(0, 0, 0))
    draw.text((3, 1), title[:42], fill=(255, 255, 255))
    return img


def _fov(result: QueryResult, volume: Volume) -> float:
    if result.region_half_extent is not None:
        return float(np.clip(4 * np.max(result.region_half_extent[:2]), 60.0, 400.0))
    return float(np.clip(_extent(volume), 60.0, 500.0))


def write_thumbnails(result: QueryResult, volume: Volume, out_dir: Path) -> list[Path]:
    """One PNG per hit (hit.thumbnail set); returns the paths written."""
    from PIL import Image  # as above

    fov = _fov(result, volume)
    half = result.region_half_extent
    q_centre = result.region_center if result.region_center is not None else _centre(volume)
    query = _draw(axial_panel(volume, q_centre, fov), half, fov, "query")
    written = []
    for n, hit in enumerate(result.hits, 1):
        source = hit.case.abs_path
        if not source or not Path(source).exists():
            result.warnings.append(
                f"No thumbnail for {hit.case_id}: its image {source or '(scene volume)'} is gone."
            )
            continue
        try:
            case = read_volume(source, check_hu=False)
        except InputError as exc:
            result.warnings.append(f"No thumbnail for {hit.case_id}: {exc}")
            continue
        centre = hit.ras if hit.ras is not None else _centre(case)
        title = f"#{n} {hit.case_id}  {hit.score:.3f}"
        side = _draw(axial_panel(case, centre, fov), half, fov, title)
        both = Image.new("RGB", (query.width + side.width + 4, query.height), (40, 40, 40))
        both.paste(query, (0, 0))
        both.paste(side, (query.width + 4, 0))
        path = Path(out_dir) / f"hit{n:02d}_{clean_id(hit.case_id)}.png"
        atomic_write(path, lambda p, im=both: im.save(p, format="PNG"), suffix=".png")
        hit.thumbnail = str(path)
        written.append(path)
    return written

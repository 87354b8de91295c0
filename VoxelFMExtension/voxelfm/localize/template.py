"""A landmark template: everything one-shot transfer needs from a reference scan and its named points.

Built once per reference (coarse descriptors from the whole-volume feature pass, fine descriptors from a small
cube centred on each point, an intensity cube per point, each point's body-frame offset), it can be saved
(``.npz``) and reused without the reference image. It records the backbone and settings it was built with, so
it is only ever matched against features of the same backbone at the same spacings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..features.identity import backbone_record, recorded_backbone
from ..files.atomic import atomic_savez
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .access import FeatureAccess
from .canonical import canonical_volume, centred_grid, covering_grid, resample_onto
from .config import TransferConfig
from .geometry import body_frame
from .matching import FeatureField, Whitening
from .points import PointList, check_points_inside
from .registration import registration_spacing

TEMPLATE_FORMAT = "voxelfm-landmark-template"
TEMPLATE_VERSION = 1


@dataclass
class LandmarkTemplate:
    names: list[str]
    ras: np.ndarray  # [N,3] reference positions (RAS mm)
    coarse: np.ndarray  # [N,kz,ky,kx,C] centred feature blocks in the coarse field (see matching.py)
    frame_uv: np.ndarray  # [N,2] body-frame offsets
    config: TransferConfig
    coarse_spacing: float
    patch_size: int
    backbone: dict[str, Any] = field(default_factory=dict)  # features.identity.backbone_record
    fine: np.ndarray | None = None  # [N,kz,ky,kx,C] centred feature blocks at the centre of a fine cube
    cubes: np.ndarray | None = None  # [N,n,n,n] float32 HU around each point (NCC)
    source: str = ""  # reference name
    # the reference on a coarse patient-aligned grid (HU, int16) and its ijk_to_ras: what the registration
    # that starts each transfer sees (config.initialise == "registration"; absent in older templates)
    scout: np.ndarray | None = None
    scout_to_ras: np.ndarray | None = None

    def scout_volume(self) -> Volume | None:
        if self.scout is None or self.scout_to_ras is None:
            return None
        return Volume(self.scout.astype(np.float32), self.scout_to_ras, self.source)

    @property
    def fine_spacing(self) -> float:
        return self.coarse_spacing * self.config.fine_factor

    @property
    def ncc_spacing(self) -> float:
        return self.coarse_spacing * self.config.ncc_spacing_factor

    def settings_key(self) -> tuple:
        """What must agree between templates matched together."""
        c = self.config
        return (
            round(self.coarse_spacing, 6),
            self.patch_size,
            c.refine,
            c.fine_factor,
            c.fine_cells,
            c.ncc_size_mm,
            c.context_cells,
            c.fine_context_cells,
        )

    # ---- files

    def save(self, path: str | os.PathLike) -> Path:
        meta = {
            "format": TEMPLATE_FORMAT,
            "format_version": TEMPLATE_VERSION,
            "names": self.names,
            "config": self.config.to_dict(),
            "coarse_spacing": self.coarse_spacing,
            "patch_size": self.patch_size,
            "backbone": self.backbone,
            "source": self.source,
        }
        arrays = {"ras": self.ras, "coarse": self.coarse, "frame_uv": self.frame_uv}
        if self.fine is not None:
            arrays["fine"] = self.fine
        if self.cubes is not None:
            arrays["cubes"] = self.cubes.astype(np.float32)
        if self.scout is not None and self.scout_to_ras is not None:
            arrays["scout"], arrays["scout_to_ras"] = self.scout.astype(np.int16), self.scout_to_ras
        return atomic_savez(Path(path), meta=np.array(json.dumps(meta, default=str)), **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> LandmarkTemplate:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"Landmark template not found: {path}.")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"{path} is not a readable landmark template ({exc}); build it again.") from exc
        if meta.get("format") != TEMPLATE_FORMAT or int(meta.get("format_version", 0)) > TEMPLATE_VERSION:
            raise InputError(f"{path} is not a VoxelFM landmark template (format {meta.get('format')!r}).")
        return cls(
            names=list(meta["names"]),
            ras=arrays["ras"],
            coarse=arrays["coarse"],
            frame_uv=arrays["frame_uv"],
            config=TransferConfig.from_dict(meta["config"]),
            coarse_spacing=float(meta["coarse_spacing"]),
            patch_size=int(meta["patch_size"]),
            backbone=recorded_backbone(meta),  # "model" in templates saved before 0.2
            fine=arrays.get("fine"),
            cubes=arrays.get("cubes"),
            source=str(meta.get("source", "")),
            scout=arrays.get("scout"),
            scout_to_ras=arrays.get("scout_to_ras"),
        )


def coarse_spacing_for(volume: Volume, access: FeatureAccess, config: TransferConfig) -> float:
    """The configured spacing, else the model's minimum spacing coarsened until the volume fits the budget."""
    if config.feature_spacing_mm:
        return float(config.feature_spacing_mm)
    s = float(access.min_spacing)
    while True:
        n = np.array(covering_grid(volume, s).shape_kji) // access.patch_size
        if int(np.prod(np.maximum(n, 1))) <= config.coarse_tokens:
            return s
        s *= 1.25


def build_template(
    volume: Volume,
    points: PointList,
    access: FeatureAccess,
    config: TransferConfig | None = None,
    coarse_spacing: float | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> LandmarkTemplate:
    """The template of one reference scan (points checked: present, uniquely named, inside the scan)."""
    config = config or TransferConfig()
    progress = progress or no_progress
    what = f"reference '{points.name or volume.name or 'points'}'"
    points.require_points(what).require_unique_names(what)
    check_points_inside(volume, points, what)
    spacing = float(coarse_spacing or coarse_spacing_for(volume, access, config))
    progress(0.0, "reference features")
    canon = canonical_volume(volume, spacing)
    feats = access.features(canon, True)
    fld = FeatureField.build(feats.patch, feats.grid_to_ras, dim=config.whiten_dim)
    template = LandmarkTemplate(
        names=list(points.names),
        ras=points.ras.copy(),
        coarse=fld.descriptor(points.ras, config.context_cells).numpy(),
        frame_uv=body_frame(canon.array, canon.ijk_to_ras).normalised(points.ras),
        config=config,
        coarse_spacing=spacing,
        patch_size=access.patch_size,
        backbone=backbone_record(feats.model or access.model),
        source=points.name or volume.name,
    )
    if "fine" in config.refine:
        template.fine = _fine_descriptors(volume, points.ras, access, template, progress, cancel)
    if "ncc" in config.refine:
        template.cubes = np.stack([_ncc_cube(volume, p, template) for p in points.ras])
    if config.initialise == "registration":
        scout = canonical_volume(volume, registration_spacing(volume, config.registration_spacing_mm))
        template.scout = np.clip(np.round(scout.array), -1024, 3071).astype(np.int16)
        template.scout_to_ras = scout.ijk_to_ras.copy()
    progress(1.0, "reference ready")
    return template


def fine_field(
    volume: Volume,
    center_ras: np.ndarray,
    access: FeatureAccess,
    t: LandmarkTemplate,
    whitening: Whitening | None,
) -> FeatureField:
    """Features of the fine cube centred on ``center_ras`` (its middle patch centre is the point)."""
    grid = centred_grid(center_ras, t.config.fine_cells, t.patch_size, t.fine_spacing)
    feats = access.features(resample_onto(volume, grid), False)
    return FeatureField.build(feats.patch, feats.grid_to_ras, whitening, t.config.whiten_dim)


def _fine_descriptors(volume, ras, access, template, progress, cancel) -> np.ndarray:
    out = []
    for n, p in enumerate(ras):
        check_cancel(cancel)
        progress(0.5 + 0.5 * n / len(ras), f"reference point {n + 1}/{len(ras)}")
        fld = fine_field(volume, p, access, template, None)
        out.append(fld.descriptor(p[None], template.config.fine_context_cells)[0].numpy())
    return np.stack(out)


def ncc_cube_size(t: LandmarkTemplate) -> int:
    return 2 * max(1, int(round(t.config.ncc_size_mm / t.ncc_spacing / 2))) + 1


def _ncc_cube(volume: Volume, p: np.ndarray, t: LandmarkTemplate) -> np.ndarray:
    grid = centred_grid(p, ncc_cube_size(t), 1, t.ncc_spacing)
    return resample_onto(volume, grid).array.astype(np.float32)

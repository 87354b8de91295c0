"""Frozen features of one CT volume with their geometry; the features .npz format (a public contract).

``voxelfm features IMAGE --out F.npz`` writes exactly these arrays: ``cls`` [C], ``registers`` [R,C], ``patch``
[D',H',W',C], ``grid_to_ras`` (4x4: patch cell (i,j,k,1) -> RAS mm, i along W'), ``prepared_to_ras`` and a JSON
``meta`` entry (format version, prepared shape, model identity, preprocessing, extraction settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_savez

FEATURES_FORMAT_VERSION = 1


@dataclass
class VolumeFeatures:
    cls: np.ndarray  # [C]
    registers: np.ndarray  # [R, C]
    patch: np.ndarray  # [D', H', W', C] float32
    grid_to_ras: np.ndarray  # 4x4: (i, j, k, 1) of a patch-cell centre -> RAS
    prepared_to_ras: np.ndarray = field(default_factory=lambda: np.eye(4))  # 4x4 of the prepared voxel grid
    prepared_shape: tuple[int, int, int] = (0, 0, 0)  # (D, H, W) voxels
    model: dict[str, Any] = field(default_factory=dict)  # id, revision, sha256, source
    preprocess: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] = field(default_factory=dict)  # tiles, max_tokens, device, seconds

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.patch.shape[:3])  # type: ignore[return-value]

    def save(self, path: str | Path) -> Path:
        """Write an .npz (atomic): arrays + a JSON ``meta`` entry."""
        meta = {
            "format_version": FEATURES_FORMAT_VERSION,
            "prepared_shape": list(self.prepared_shape),
            "model": self.model,
            "preprocess": self.preprocess,
            "extraction": self.extraction,
        }
        return atomic_savez(
            Path(path),
            cls=self.cls,
            registers=self.registers,
            patch=self.patch,
            grid_to_ras=self.grid_to_ras,
            prepared_to_ras=self.prepared_to_ras,
            meta=np.array(json.dumps(meta)),
        )

    @classmethod
    def from_parts(cls, arrays, meta: dict) -> VolumeFeatures:
        """Features from their arrays (cls, registers, patch, grid_to_ras, prepared_to_ras) and their plain-data
        record: the one reader of both the .npz file and the server's reply."""
        return cls(
            cls=arrays["cls"],
            registers=arrays["registers"],
            patch=arrays["patch"],
            grid_to_ras=arrays["grid_to_ras"],
            prepared_to_ras=arrays["prepared_to_ras"],
            prepared_shape=tuple(meta.get("prepared_shape", (0, 0, 0))),
            model=meta.get("model", {}),
            preprocess=meta.get("preprocess", {}),
            extraction=meta.get("extraction", {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> VolumeFeatures:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls.from_parts(z, json.loads(str(z["meta"])))
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(
                f"{path} is not a readable VoxelFM features file ({exc}); extract features again."
            ) from exc

"""Where the extension's Resources/ folder (model registry, bundled offline model) is.

The core is used from a source checkout / editable install (Resources/ at the repository top) and from an
installed Slicer extension (Resources/ beside the scripted-module folder that holds ``voxelfm``).
``VOXELFM_RESOURCES`` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parents[1]  # the voxelfm package folder


def resources_dir() -> Path:
    env = os.environ.get("VOXELFM_RESOURCES")
    candidates = [Path(env)] if env else []
    candidates += [_PKG.parent / "Resources", _PKG.parent.parent / "Resources"]
    for c in candidates:
        if (c / "models.json").is_file():
            return c
    raise FileNotFoundError(
        "VoxelFM Resources folder (with models.json) not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + ". Set VOXELFM_RESOURCES to the extension's Resources folder."
    )

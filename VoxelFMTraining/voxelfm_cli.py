"""Headless VoxelFM entry point for Slicer's Python (same parser and commands as the `voxelfm` script).

    Slicer --no-splash --no-main-window --python-script voxelfm_cli.py COMMAND [ARGS ...]
    PythonSlicer voxelfm_cli.py COMMAND [ARGS ...]
    python VoxelFMTraining/voxelfm_cli.py COMMAND [ARGS ...]      (source checkout)

It makes the ``voxelfm`` package importable from wherever the extension put it, then runs
``voxelfm.cli.main.main`` and exits with its status (Slicer does not exit on its own after a script).
Package locations tried, first match wins:
- installed extension: this file is in <qt-scripted-modules>/VoxelFMScripts/, voxelfm in <qt-scripted-modules>/
- source checkout: this file is in <repo>/VoxelFMTraining/, voxelfm in <repo>/VoxelFMExtension/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def candidate_dirs(script: str | os.PathLike) -> list[Path]:
    """Folders that may hold the ``voxelfm`` package, in priority order."""
    here = Path(script).resolve().parent
    return [here.parent, here.parent / "VoxelFMExtension", here, here / "VoxelFMExtension"]


def find_package_dir(script: str | os.PathLike) -> Path | None:
    """The first candidate folder containing voxelfm/__init__.py, or None (then rely on sys.path)."""
    for folder in candidate_dirs(script):
        if (folder / "voxelfm" / "__init__.py").is_file():
            return folder
    return None


def setup_path(script: str | os.PathLike) -> Path | None:
    folder = find_package_dir(script)
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return folder


def run(argv: list[str]) -> int:
    setup_path(__file__)
    try:
        from voxelfm.cli.main import main
    except ImportError as exc:
        print(
            f"voxelfm: cannot import the voxelfm package ({exc}). Looked in: "
            + ", ".join(str(p) for p in candidate_dirs(__file__))
            + ". Reinstall the VoxelFM extension or run from a source checkout.",
            file=sys.stderr,
        )
        return 2
    return int(main(argv) or 0)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

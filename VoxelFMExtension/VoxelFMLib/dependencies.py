"""Which Python packages VoxelFM still needs (no pip, no Qt): requirements.txt and the torch version floor.

The widget layer (VoxelFMWidgets.dependencies) decides from these whether to offer an install:
``slicer.packaging.pip_ensure`` on Slicer >= 5.12, ``slicer.util.pip_install`` after a confirmation on
5.10/5.11, torch through the PyTorch extension. Versions are read from package metadata, never by importing
(importing an old torch would pin it in memory until Slicer restarts).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

TORCH_REQUIREMENT = ">=2.2"  # the oldest torch the core is tested with (PyTorchUtils torchVersionRequirement)
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_FLOOR = re.compile(r"^\s*>=\s*([0-9][0-9.]*)\s*$")


def requirements_path() -> Path:
    from voxelfm.hub.resources import resources_dir

    return resources_dir() / "requirements.txt"


def read_requirements(path: str | Path) -> list[str]:
    """Requirement lines (comments, blank lines and pip options skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def is_satisfied(requirement: str) -> bool:
    """True if the distribution is installed at a version the specifier allows."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no `packaging` (old Slicer): a ">=X.Y" floor or presence only
        return _satisfied_without_packaging(requirement)
    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate():
        return True
    installed = installed_version(req.name)
    return installed is not None and req.specifier.contains(installed, prereleases=True)


def missing_requirements(path: str | Path | None = None) -> list[str]:
    """Requirement strings of requirements.txt that are not satisfied in this Python."""
    return [r for r in read_requirements(path or requirements_path()) if not is_satisfied(r)]


def torch_available() -> bool:
    return installed_version("torch") is not None


def torch_satisfies(requirement: str = TORCH_REQUIREMENT) -> bool:
    """torch is installed AND at a version the requirement (e.g. ">=2.2") allows; local tags (+cu121) ok."""
    return is_satisfied(f"torch{requirement}")


def _version_tuple(version: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: "2.3.1+cu121" -> (2, 3, 1)."""
    parts = []
    for piece in version.split("+", 1)[0].split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def _satisfied_without_packaging(requirement: str) -> bool:
    match = _NAME.match(requirement)
    if not match:
        return False
    installed = installed_version(match.group(1))
    if installed is None:
        return False
    floor = _FLOOR.match(requirement[match.end() :])
    if floor is None:
        return True
    return _version_tuple(installed) >= _version_tuple(floor.group(1))

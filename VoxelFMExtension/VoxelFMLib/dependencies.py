"""Which Python packages from Resources/requirements.txt are missing (no pip, no Qt).

Used by the modules to decide whether to offer an install (slicer.pydeps.pip_ensure on Slicer >= 5.11,
slicer.util.pip_install after confirmation on older Slicer) before importing the core. torch is handled
separately by the PyTorch extension.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


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


def is_satisfied(requirement: str) -> bool:
    """True if the distribution is installed at a version the specifier allows."""
    try:
        from packaging.requirements import Requirement

        req = Requirement(requirement)
        if req.marker is not None and not req.marker.evaluate():
            return True
        installed = importlib.metadata.version(req.name)
        return req.specifier.contains(installed, prereleases=True)
    except importlib.metadata.PackageNotFoundError:
        return False
    except ImportError:  # no `packaging`: presence only
        match = _NAME.match(requirement)
        if not match:
            return False
        try:
            importlib.metadata.version(match.group(1))
            return True
        except importlib.metadata.PackageNotFoundError:
            return False


def missing_requirements(path: str | Path | None = None) -> list[str]:
    """Requirement strings of requirements.txt that are not satisfied in this Python."""
    return [r for r in read_requirements(path or requirements_path()) if not is_satisfied(r)]


def torch_available() -> bool:
    try:
        importlib.metadata.version("torch")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False

"""Which Slicer (and Python) VoxelFM supports, checked when a module is opened.

Slicer >= 5.10: ``vtkSegment.GetTerminology/SetTerminology`` exist from 5.10 on (5.8 only has the terminology
tag), and 5.10 is the first release with Python >= 3.10 (``zip(strict=True)``, ``X | Y`` in isinstance);
5.8 ships Python 3.9. The widget base calls ``unsupported_reason`` before building any GUI, so an older Slicer
shows one clear message instead of a traceback. Written without 3.10-only syntax so that it runs on those
older Pythons itself.
"""

from __future__ import annotations

import sys

MIN_SLICER = (5, 10)
MIN_PYTHON = (3, 10)


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def parse_version(text: str) -> tuple[int, ...]:
    """Leading numeric parts of "5.10.0-2025-..." -> (5, 10, 0); () if it does not start with a number."""
    parts = []
    for piece in str(text).strip().split("-", 1)[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return tuple(parts)


def app_version(app) -> tuple[int, ...]:
    """(major, minor) of a running Slicer application object (``slicer.app``), () if it cannot tell."""
    major, minor = getattr(app, "majorVersion", None), getattr(app, "minorVersion", None)
    if isinstance(major, int) and isinstance(minor, int):
        return (major, minor)
    return parse_version(getattr(app, "applicationVersion", "") or "")


def unsupported_reason(slicer_version: tuple[int, ...], python_version: tuple[int, ...] | None = None) -> str:
    """ "" when this Slicer/Python is supported, else one message saying what is wrong and what to do."""
    python_version = tuple(python_version or sys.version_info[:3])
    problems = []
    if slicer_version and tuple(slicer_version[:2]) < MIN_SLICER:
        problems.append(f"Slicer {version_text(slicer_version)}")
    if python_version[:2] < MIN_PYTHON:
        problems.append(f"Python {version_text(python_version)}")
    if not problems:
        return ""
    return (
        f"VoxelFM needs 3D Slicer {version_text(MIN_SLICER)} or newer (with Python {version_text(MIN_PYTHON)}+), "
        f"but this is {' with '.join(problems)}. Install a current Slicer release from download.slicer.org "
        "and install the VoxelFM extension there."
    )

"""Command lines for VoxelFM jobs run as a separate process (the Training module's launcher).

A job is ``<python> voxelfm_cli.py COMMAND ARGS...``: the same parser and code as the `voxelfm` console
script, in its own process so a long pretraining run neither blocks nor crashes the Slicer GUI.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from voxelfm.errors import InputError

CLI_NAME = "voxelfm_cli.py"


def cli_script(module_dir: str | os.PathLike) -> Path:
    """voxelfm_cli.py beside the Training module (source tree) or in VoxelFMScripts/ (installed)."""
    module_dir = Path(module_dir)
    for candidate in (module_dir / "VoxelFMScripts" / CLI_NAME, module_dir / CLI_NAME):
        if candidate.is_file():
            return candidate
    raise InputError(f"{CLI_NAME} not found next to {module_dir}; reinstall the VoxelFM extension.")


def python_executable() -> str:
    """PythonSlicer inside Slicer (its Python without the GUI), else the current interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    exe = Path(sys.executable)
    sibling = exe.with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(sibling) if sibling.is_file() else sys.executable


def job_arguments(script: str | os.PathLike, command: str, arguments: str = "") -> list[str]:
    """Arguments after the interpreter: [script, command, *split(arguments)] (POSIX shell quoting)."""
    command = command.strip()
    if not command or command.startswith("-") or " " in command:
        raise InputError(f"'{command}' is not a voxelfm command; pick one from the list.")
    try:
        extra = shlex.split(arguments or "", posix=True)
    except ValueError as exc:
        raise InputError(f"Cannot parse the arguments ({exc}); check quotes.") from exc
    return [str(script), command, *extra]


def display_command_line(program: str, args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in [program, *args])

"""The README a newcomer reads names every command the `voxelfm` parser has, and its Quick start is the two
commands that CI and the tour really run."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from voxelfm.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _commands(parser: argparse.ArgumentParser, prefix: str = "voxelfm") -> list[str]:
    """Every command path of the parser (``voxelfm index add`` ...), from its sub-parser actions."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}"
                out.append(path)
                out += _commands(sub, path)
    return out


def _help_commands(args: list[str]) -> list[str]:
    """Command names listed under the positional COMMAND/ACTION heading of a `--help` text."""
    text = subprocess.run(
        [sys.executable, "-m", "voxelfm.cli", *args, "--help"], capture_output=True, text=True, check=True
    ).stdout
    block = text.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return re.findall(r"^    (\S+)", block, re.M)


def test_help_and_parser_agree():
    top = _help_commands([])
    assert top == [c.split()[1] for c in _commands(build_parser()) if len(c.split()) == 2]
    assert _help_commands(["index"]) == sorted(
        c.split()[2] for c in _commands(build_parser()) if c.startswith("voxelfm index ")
    )


def test_readme_names_every_command():
    commands = _commands(build_parser())
    assert len(commands) >= 18  # 15 commands + index add/list/remove/rebuild
    missing = [c for c in commands if not re.search(rf"`{re.escape(c)}(\s|`)", README)]
    assert not missing, f"README.md does not name: {missing}"


def test_readme_has_a_section_per_capability_and_module():
    for module in (
        "VoxelFM Features",
        "VoxelFM Segment",
        "VoxelFM Localize",
        "VoxelFM Retrieve",
        "VoxelFM Report",
    ):
        assert module in README, module
    for picture in re.findall(r"\]\((Resources/Screenshots/[^)]+)\)", README):
        assert (REPO / picture).is_file(), picture


def test_quick_start_is_two_commands_that_ci_runs():
    block = README.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2, commands
    install, tests = commands
    assert "pip install torch==2.13.0 -e ." in install and "voxelfm demo --out demo_out" in install
    assert tests.strip() == "bash Testing/run_all_tests.sh"
    assert "Testing/run_all_tests.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")

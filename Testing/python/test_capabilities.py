"""The capability table (voxelfm.capabilities) against the tree: every CLI command module, Slicer module (with
its .ui and icon), CMake-built module, pipeline and logic is in the table, and everything the table names exists.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from slicer_tree_checks import cmake_listed_files, module_dirs, module_files

from voxelfm.capabilities import CAPABILITIES, command_modules

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "VoxelFMExtension"
# Slicer module name -> its VoxelFMLib logic class ("" when none)
MODULES = {c.module: c.logic for c in CAPABILITIES if c.module}


def test_every_cli_command_module_is_in_the_table():
    on_disk = {f"voxelfm.cli.{p.stem}" for p in (EXT / "voxelfm" / "cli").glob("*_cmd.py")}
    listed = command_modules()
    assert len(set(listed)) == len(listed), "a CLI module is named twice in the table"
    assert on_disk == set(listed), {
        "not in the table": sorted(on_disk - set(listed)),
        "not on disk": sorted(set(listed) - on_disk),
    }


def test_every_slicer_module_is_in_the_table_with_its_ui_and_icon():
    on_disk = {py.stem: py.parent for py in module_files(REPO)}
    listed = set(MODULES)
    assert set(on_disk) == listed, {
        "not in the table": sorted(set(on_disk) - listed),
        "not on disk": sorted(listed - set(on_disk)),
    }
    missing = [
        f"{name}: {rel}"
        for name, folder in on_disk.items()
        for rel in (f"Resources/UI/{name}.ui", f"Resources/Icons/{name}.png")
        if not (folder / rel).is_file()
    ]
    assert not missing, missing


def test_cmake_builds_exactly_the_table_modules():
    built = [
        name
        for folder in module_dirs(REPO)
        for name in cmake_listed_files(folder / "CMakeLists.txt")["modules"]
    ]
    assert sorted(built) == sorted(MODULES), {
        "CMake": sorted(built),
        "table": sorted(MODULES),
    }


@pytest.mark.parametrize("capability", [c for c in CAPABILITIES if c.pipeline], ids=lambda c: c.name)
def test_every_pipeline_exists(capability):
    module, _, name = capability.pipeline.partition(":")
    assert callable(getattr(importlib.import_module(f"voxelfm.{module}"), name, None)), capability.pipeline


def _lib_exports() -> set[str]:
    tree = ast.parse((EXT / "VoxelFMLib" / "__init__.py").read_text(encoding="utf-8"))
    exports = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets)
    )
    return {name for names in ast.literal_eval(exports).values() for name in names}


def test_every_capability_logic_is_in_the_table_and_exported():
    defined = set()
    for py in (EXT / "VoxelFMLib").glob("*.py"):
        defined |= set(re.findall(r"^class (\w+)\(CapabilityLogic\)", py.read_text(encoding="utf-8"), re.M))
    listed = {c.logic for c in CAPABILITIES if c.logic}
    assert defined == listed, {
        "not in the table": sorted(defined - listed),
        "not defined": sorted(listed - defined),
    }
    assert listed <= _lib_exports(), sorted(listed - _lib_exports())

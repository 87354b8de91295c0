"""docs/ARCHITECTURE.md is the map of the tree: its folder map names every core subpackage and top-level
module and every VoxelFMLib module, and nothing that does not exist.

An entry of the folder map is a line of its code block indented by exactly two spaces under a section
header (a line starting without a space): ``name/`` for a subpackage, ``name.py`` for a module.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
EXTENSION = ROOT / "VoxelFMExtension"
ENTRY = re.compile(r"^  (\S+)")


def folder_map() -> dict[str, set[str]]:
    """Section header (first word) -> the entries named under it."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Folder map", 1)[1]
    block = section.split("```", 2)[1]
    sections: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            current = sections.setdefault(line.split()[0], set())
        elif current is not None and (match := ENTRY.match(line)):
            current.add(match.group(1))
    return sections


def core_names() -> set[str]:
    package = EXTENSION / "voxelfm"
    modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    subpackages = {
        p.parent.relative_to(package).as_posix() + "/"
        for p in package.rglob("__init__.py")
        if p.parent != package and "__pycache__" not in p.parts
    }
    return modules | subpackages


def lib_names() -> set[str]:
    return {p.name for p in (EXTENSION / "VoxelFMLib").glob("*.py") if p.name != "__init__.py"}


def difference_message(where: str, documented: set[str], present: set[str]) -> str:
    missing = sorted(present - documented)
    stale = sorted(documented - present)
    lines = [f"docs/ARCHITECTURE.md folder map, section {where}:"]
    if missing:
        lines.append(f"  not named in the map (add a line '  NAME  role' for each): {', '.join(missing)}")
    if stale:
        lines.append(f"  named in the map but not in the tree (remove or rename): {', '.join(stale)}")
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("section", "names"),
    [("VoxelFMExtension/voxelfm/", core_names), ("VoxelFMExtension/VoxelFMLib/", lib_names)],
    ids=["core", "VoxelFMLib"],
)
def test_folder_map_matches_tree(section, names):
    sections = folder_map()
    assert section in sections, f"docs/ARCHITECTURE.md folder map has no section {section}"
    documented, present = sections[section], names()
    assert present, f"nothing found under {section}: the test looks in the wrong place"
    assert documented == present, difference_message(section, documented, present)


def test_every_capability_logic_is_in_the_shape_table():
    """The capability-shape table names each Slicer logic class the tree defines."""
    text = DOC.read_text(encoding="utf-8")
    logic_classes = set()
    for path in (EXTENSION / "VoxelFMLib").glob("*_logic.py"):
        logic_classes |= set(re.findall(r"^class (\w+Logic)\(CapabilityLogic\)", path.read_text(), re.M))
    assert logic_classes, "no CapabilityLogic subclass found"
    missing = sorted(name for name in logic_classes if f"| `{name}` (" not in text)
    assert not missing, f"docs/ARCHITECTURE.md capability-shape table lacks: {', '.join(missing)}"

"""Static checks of what Slicer users get: translatable titles, the declared Slicer floor, the Extensions Index
entry, screenshots and icon that exist, the model panel's choices. Like test_slicer_static, each check is a
function of a tree root returning problems, run on the real tree AND on a broken copy."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest
from slicer_tree_checks import EXT_NAME, TRAIN_NAME, checks_by_name, edit_text, module_files, parse

REPO = Path(__file__).resolve().parents[2]
RAW_PREFIX = "https://raw.githubusercontent.com/voxelfm/SlicerVoxelFM/main/"
# slicer-extension-catalog-entry-schema-v1.0.2 (Slicer/Slicer Schemas/): required keys, allowed keys + types
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_TYPES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "dicom_support_rule": str,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}
TRANSLATED = ("title", "helpText", "acknowledgementText")
CLASS_FIELDS = {"TITLE": "title", "HELP": "helpText", "ACKNOWLEDGEMENT": "acknowledgementText"}


def _parent_assignments(py: Path) -> dict[str, ast.expr]:
    """Values assigned to self.parent.<x> in a module file."""
    found = {}
    for node in ast.walk(parse(py)):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Attribute)
                    and target.value.attr == "parent"
                ):
                    found[target.attr] = node.value
    return found


def _is_call(node: ast.expr, names: set[str]) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names


def _class_assignments(py: Path) -> dict[str, ast.expr]:
    """Values of the upper-case class attributes of the classes of a module file (TITLE = _("..."), ...)."""
    return {
        target.id: node.value
        for cls in parse(py).body
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id in CLASS_FIELDS
    }


def _translated(value: ast.expr) -> bool:
    """_("...") or, in the shared base, a class attribute (checked where it is set) or an ``or`` of those."""
    if isinstance(value, ast.BoolOp):
        return all(_translated(v) for v in value.values)
    is_own_attribute = isinstance(value, ast.Attribute) and value.attr in CLASS_FIELDS
    return _is_call(value, {"_"}) or is_own_attribute


def check_translations(root: Path) -> list[str]:
    """Titles, help and acknowledgements in _() (slicer.i18n.tr), categories in translate(context, text).

    A module sets them on its parent, or as TITLE / HELP / ACKNOWLEDGEMENT of a VoxelFMModule subclass,
    whose base (VoxelFMWidgets/module.py) sets the parent fields and the category."""
    problems = []
    base = root / EXT_NAME / "VoxelFMWidgets" / "module.py"
    for py in [*module_files(root), base]:
        imports = {
            (n.module, a.name, a.asname)
            for n in ast.walk(parse(py))
            if isinstance(n, ast.ImportFrom)
            for a in n.names
        }
        if ("slicer.i18n", "tr", "_") not in imports:
            problems.append(f"{py.name}: needs `from slicer.i18n import tr as _`")
        values = _parent_assignments(py)
        if py != base:
            own = _class_assignments(py)
            values.update({CLASS_FIELDS[name]: value for name, value in own.items()})
            if "title" not in values:
                problems.append(f"{py.name}: sets neither parent.title nor a VoxelFMModule TITLE")
        for field in TRANSLATED:
            if field in values and not _translated(values[field]):
                problems.append(f"{py.name}: parent.{field} is not wrapped in _() for translation")
        categories = values.get("categories")
        if categories is None and py != base:
            continue  # set by the shared base
        if ("slicer.i18n", "translate", None) not in imports:
            problems.append(f"{py.name}: needs `from slicer.i18n import translate` for the category")
        if not isinstance(categories, ast.List) or not all(
            _is_call(c, {"translate"}) for c in categories.elts
        ):
            problems.append(f"{py.name}: parent.categories items must be translate(context, text)")
    return problems


def _cmake_set(text: str, name: str) -> str:
    m = re.search(rf'set\({name}\s+"([^"]*)"\)', text)
    return m.group(1) if m else ""


def check_extension_metadata(root: Path) -> list[str]:
    """Top-level CMake: the Slicer floor matches the module-load check, icon/screenshot URLs name files in the
    repo; README declares the floor; VoxelFM.json follows the index schema and agrees with CMake."""
    from VoxelFMLib.slicer_version import MIN_SLICER, version_text

    problems = []
    cmake = (root / "CMakeLists.txt").read_text(encoding="utf-8")
    floor = version_text(MIN_SLICER)
    if _cmake_set(cmake, "VOXELFM_MINIMUM_SLICER_VERSION") != floor:
        problems.append(f"CMakeLists.txt: VOXELFM_MINIMUM_SLICER_VERSION is not {floor} (slicer_version.py)")
    if "VERSION_LESS VOXELFM_MINIMUM_SLICER_VERSION" not in cmake:
        problems.append("CMakeLists.txt: configuring against an older Slicer is not refused")
    urls = [_cmake_set(cmake, "EXTENSION_ICONURL"), *_cmake_set(cmake, "EXTENSION_SCREENSHOTURLS").split()]
    for url in urls:
        if not url.startswith(RAW_PREFIX) or not (root / url[len(RAW_PREFIX) :]).is_file():
            problems.append(f"CMakeLists.txt names a picture that is not in the repository: {url}")
    if len(urls) < 2:
        problems.append("CMakeLists.txt: no EXTENSION_SCREENSHOTURLS")
    if f"Slicer {floor} or newer" not in (root / "README.md").read_text(encoding="utf-8"):
        problems.append(f"README.md does not declare 'Slicer {floor} or newer'")
    problems += _index_entry_problems(root / "VoxelFM.json", cmake)
    return problems


def _index_entry_problems(path: Path, cmake: str) -> list[str]:
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path.name}: not readable JSON ({exc})"]
    problems = [f"{path.name}: missing required {k}" for k in sorted(SCHEMA_REQUIRED - set(entry))]
    problems += [f"{path.name}: {k} is not in the schema" for k in sorted(set(entry) - set(SCHEMA_TYPES))]
    problems += [
        f"{path.name}: {k} must be {t.__name__}"
        for k, t in SCHEMA_TYPES.items()
        if k in entry and not (isinstance(entry[k], t) and not (t is int and isinstance(entry[k], bool)))
    ]
    if entry.get("$schema") != SCHEMA_URL:
        problems.append(f"{path.name}: $schema is not the current catalog entry schema (v1.0.2)")
    if entry.get("category") != _cmake_set(cmake, "EXTENSION_CATEGORY"):
        problems.append(f"{path.name}: category differs from EXTENSION_CATEGORY")
    if sorted(entry.get("build_dependencies", [])) != sorted(_cmake_set(cmake, "EXTENSION_DEPENDS").split()):
        problems.append(f"{path.name}: build_dependencies differ from EXTENSION_DEPENDS")
    return problems


CHOICE_TABLE = "voxelfm/features/spec.py"  # the one place DEVICES and PRECISIONS are written


def check_one_choice_table(root: Path) -> list[str]:
    """DEVICES and PRECISIONS are written once (CHOICE_TABLE); every other module imports them."""
    problems, found = [], []
    for folder in ("voxelfm", "VoxelFMLib", "VoxelFMWidgets"):
        for py in sorted((root / EXT_NAME / folder).rglob("*.py")):
            for node in parse(py).body:
                if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id in ("DEVICES", "PRECISIONS") for t in node.targets
                ):
                    found.append((py.relative_to(root / EXT_NAME).as_posix(), node.targets[0].id))
    for rel, name in found:
        if rel != CHOICE_TABLE:
            problems.append(f"{rel} defines {name} again: import it from {CHOICE_TABLE}")
    for name in ("DEVICES", "PRECISIONS"):
        if (CHOICE_TABLE, name) not in found:
            problems.append(f"{CHOICE_TABLE} does not define {name}")
    return problems


CHECKS = checks_by_name(check_translations, check_extension_metadata, check_one_choice_table)


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_source_tree_passes(check):
    problems = CHECKS[check](REPO)
    assert not problems, "\n".join(problems)


@pytest.fixture
def tree(tmp_path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "models")
    for name in (EXT_NAME, TRAIN_NAME, "Resources"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=ignore)
    for name in ("CMakeLists.txt", "README.md", "VoxelFM.json"):
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path


def test_copy_of_tree_is_clean(tree):
    for name, check in CHECKS.items():
        assert not check(tree), name


def test_untranslated_title_is_reported(tree):
    edit_text(tree / EXT_NAME / "VoxelFMSegment.py", '_("VoxelFM Segment")', '"VoxelFM Segment"')
    assert any("VoxelFMSegment.py: parent.title" in p for p in check_translations(tree))


def test_untranslated_help_is_reported(tree):
    edit_text(tree / TRAIN_NAME / "VoxelFMJobs.py", "HELP = _(", "HELP = (")
    assert any("VoxelFMJobs.py: parent.helpText" in p for p in check_translations(tree))


def test_untranslated_category_is_reported(tree):
    py = tree / EXT_NAME / "VoxelFMWidgets" / "module.py"
    edit_text(py, '[translate("qSlicerAbstractCoreModule", "VoxelFM")]', '["VoxelFM"]')
    assert any("module.py: parent.categories" in p for p in check_translations(tree))


def test_untranslated_default_acknowledgement_is_reported(tree):
    py = tree / EXT_NAME / "VoxelFMWidgets" / "module.py"
    edit_text(py, "self.ACKNOWLEDGEMENT or _(", "self.ACKNOWLEDGEMENT or (")
    assert any("module.py: parent.acknowledgementText" in p for p in check_translations(tree))


def test_missing_screenshot_is_reported(tree):
    (tree / "Resources" / "Screenshots" / "voxelfm_features_pca.png").unlink()
    assert any("voxelfm_features_pca.png" in p for p in check_extension_metadata(tree))


def test_other_slicer_floor_in_cmake_is_reported(tree):
    edit_text(
        tree / "CMakeLists.txt",
        'VOXELFM_MINIMUM_SLICER_VERSION "5.10"',
        'VOXELFM_MINIMUM_SLICER_VERSION "5.8"',
    )
    assert any("VOXELFM_MINIMUM_SLICER_VERSION" in p for p in check_extension_metadata(tree))


def test_bad_index_entry_is_reported(tree):
    entry = json.loads((tree / "VoxelFM.json").read_text())
    entry["description"] = "not a schema field"
    entry["tier"] = "1"
    del entry["scm_url"]
    (tree / "VoxelFM.json").write_text(json.dumps(entry))
    problems = check_extension_metadata(tree)
    for needle in ("description is not in the schema", "tier must be int", "missing required scm_url"):
        assert any(needle in p for p in problems), needle


def test_a_second_choice_table_is_reported(tree):
    edit_text(
        tree / EXT_NAME / "VoxelFMLib" / "model_panel_state.py",
        "\n\n@dataclass(frozen=True)\nclass ModelStatus:",
        '\nDEVICES = ("auto", "cpu", "cuda", "mps", "xpu")\n\n\n@dataclass(frozen=True)\nclass ModelStatus:',
    )
    assert check_one_choice_table(tree) == [
        "VoxelFMLib/model_panel_state.py defines DEVICES again: import it from voxelfm/features/spec.py"
    ]

"""Static checks of the Slicer extension that need no Slicer: .ui files, widget names, CMake lists, layering.

What only the Slicer application can run (widgets, parameterNodeWrapper) is at least checked for
consistency here: every ``self.ui.<name>`` used by a module exists in its .ui, every file is listed in the
CMake lists (and every listed file exists), and the layers import only what they may.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "VoxelFMExtension"
TRAIN = REPO / "VoxelFMTraining"
MODULE_DIRS = (EXT, TRAIN)
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


# ---------------------------------------------------------------- helpers


def module_files() -> list[Path]:
    """Top-level module scripts (one scripted module each)."""
    out = []
    for folder in MODULE_DIRS:
        for py in sorted(folder.glob("*.py")):
            if py.name != "voxelfm_cli.py":
                out.append(py)
    return out


def ui_widgets(ui: Path) -> dict[str, str]:
    """name -> class of every widget (and action) in a Qt Designer file."""
    root = ET.parse(ui).getroot()
    found = {}
    for tag in ("widget", "action"):
        for el in root.iter(tag):
            if el.get("name"):
                found[el.get("name")] = el.get("class", "QAction")
    return found


def ui_names_used(py: Path) -> set[str]:
    """Names X in every `self.ui.X` / `ui.X` attribute access of a module file."""
    tree = ast.parse(py.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            if (
                node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "self"
            ):
                names.add(node.attr)
    return names


def string_tuple_constant(py: Path, name: str) -> tuple[str, ...] | None:
    tree = ast.parse(py.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    return None


_SET_RE = re.compile(r"\bset\(\s*([A-Za-z_][A-Za-z0-9_]*)\s+(.*?)\)", re.S)
_CALL_RE = re.compile(r"\b(set|slicerMacroBuildScriptedModule|foreach)\s*\(", re.S)


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _expand(token: str, variables: dict[str, list[str]]) -> list[str]:
    m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", token)
    if m:
        return list(variables.get(m.group(1), []))
    return [
        re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda mm: " ".join(variables.get(mm.group(1), [])), token)
    ]


def cmake_listed_files(cmake: Path) -> dict[str, list[str]]:
    """Interpret the `set(...)` lines of a module CMakeLists in order (enough for our files).

    Returns "scripts"/"resources": what each slicerMacroBuildScriptedModule call received (MODULE_*
    variables at that point), and "other": files of lists installed by hand (`foreach(x IN LISTS VAR)`)."""
    text = _strip_comments(cmake.read_text(encoding="utf-8"))
    variables: dict[str, list[str]] = {}
    result: dict[str, list[str]] = {"scripts": [], "resources": [], "other": [], "modules": []}
    pos = 0
    while True:
        m = _CALL_RE.search(text, pos)
        if not m:
            break
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        args = text[m.end() : i - 1].split()
        pos = i
        if m.group(1) == "set" and args:
            values: list[str] = []
            for tok in args[1:]:
                values.extend(_expand(tok, variables))
            variables[args[0]] = values
        elif m.group(1) == "slicerMacroBuildScriptedModule":
            result["modules"].append(variables.get("MODULE_NAME", ["?"])[0])
            result["scripts"] += variables.get("MODULE_PYTHON_SCRIPTS", [])
            result["resources"] += variables.get("MODULE_PYTHON_RESOURCES", [])
        elif m.group(1) == "foreach" and len(args) >= 4 and args[1:3] == ["IN", "LISTS"]:
            for name in args[3:]:
                result["other"] += variables.get(name, [])
    return result


def files_on_disk(folder: Path) -> set[str]:
    out = set()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for f in files:
            if f.endswith((".py", ".ui", ".png")):
                out.add(str((Path(root) / f).relative_to(folder)).replace(os.sep, "/"))
    return out


def imported_modules(py: Path) -> set[str]:
    tree = ast.parse(py.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def attribute_uses(py: Path, base: str) -> set[str]:
    """Attributes X of `base.X` used anywhere (e.g. slicer.modules, slicer.app)."""
    tree = ast.parse(py.read_text(encoding="utf-8"))
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == base
    }


# ---------------------------------------------------------------- .ui and widget names


def all_ui_files() -> list[Path]:
    return sorted(p for d in MODULE_DIRS for p in (d / "Resources" / "UI").glob("*.ui"))


def test_there_are_modules_and_ui_files():
    names = {p.stem for p in module_files()}
    assert {"VoxelFMFeatures", "VoxelFMSegment", "VoxelFMTraining"} <= names
    assert len(all_ui_files()) >= 3


@pytest.mark.parametrize("ui", all_ui_files(), ids=lambda p: p.name)
def test_ui_parses(ui):
    root = ET.parse(ui).getroot()
    assert root.tag == "ui"
    widgets = ui_widgets(ui)
    assert widgets, f"{ui.name} has no widgets"


@pytest.mark.parametrize("py", module_files(), ids=lambda p: p.name)
def test_ui_names_exist(py):
    ui = py.parent / "Resources" / "UI" / f"{py.stem}.ui"
    assert ui.is_file(), f"{py.name} has no {ui.relative_to(REPO)}"
    widgets = ui_widgets(ui)
    missing = sorted(ui_names_used(py) - set(widgets))
    assert not missing, f"{py.name} uses self.ui.<name> not in {ui.name}: {missing}"
    # panels shared across modules name their widgets in a constant; the .ui must provide them
    panel = string_tuple_constant(EXT / "VoxelFMFeatures.py", "MODEL_PANEL_WIDGETS") or ()
    if "ModelPanel" in py.read_text(encoding="utf-8"):
        missing_panel = sorted(set(panel) - set(widgets))
        assert not missing_panel, f"{ui.name} lacks model panel widgets {missing_panel}"


@pytest.mark.parametrize("ui", all_ui_files(), ids=lambda p: p.name)
def test_parameter_bindings_name_real_fields(ui):
    """Widgets bound with the SlicerParameterName property must name a field of the module's parameter node."""
    py = ui.parents[2] / f"{ui.stem}.py"
    tree = ast.parse(py.read_text(encoding="utf-8"))
    fields = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("ParameterNode"):
            fields |= {
                s.target.id
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
    root = ET.parse(ui).getroot()
    bound = []
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound.append(prop.findtext("string"))
    assert bound, f"{ui.name}: no widget is bound to the parameter node"
    assert set(bound) <= fields, f"{ui.name}: bound to unknown parameters {sorted(set(bound) - fields)}"


# ---------------------------------------------------------------- module files


@pytest.mark.parametrize("py", module_files(), ids=lambda p: p.name)
def test_module_shape(py):
    tree = ast.parse(py.read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    stem = py.stem
    for suffix, base in (
        ("", "ScriptedLoadableModule"),
        ("Widget", "ScriptedLoadableModuleWidget"),
        ("Logic", "ScriptedLoadableModuleLogic"),
        ("Test", "ScriptedLoadableModuleTest"),
    ):
        cls = classes.get(stem + suffix)
        assert cls is not None, f"{py.name}: class {stem + suffix} missing"
        bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
        assert base in bases, f"{py.name}: {stem + suffix} must derive from {base}"
    assert '"VoxelFM"' in py.read_text(encoding="utf-8"), f"{py.name}: category 'VoxelFM' not set"


def test_logic_layer_imports():
    forbidden_modules = (
        "qt",
        "ctk",
        "slicer.ScriptedLoadableModule",
        "slicer.parameterNodeWrapper",
        "slicer.i18n",
    )
    bad = {}
    for py in sorted((EXT / "VoxelFMLib").rglob("*.py")):
        mods = imported_modules(py)
        hits = sorted(m for m in mods if m in forbidden_modules or m.split(".")[0] in ("qt", "ctk"))
        hits += [
            f"slicer.{a}"
            for a in sorted(attribute_uses(py, "slicer") & {"modules", "app", "ScriptedLoadableModule"})
        ]
        if hits:
            bad[py.name] = hits
    assert not bad, f"VoxelFMLib must stay Qt-free and app-free: {bad}"


def test_core_never_imports_slicer():
    bad = {}
    for py in sorted((EXT / "voxelfm").rglob("*.py")):
        hits = sorted(m for m in imported_modules(py) if m.split(".")[0] in ("slicer", "qt", "ctk", "vtk"))
        if hits:
            bad[str(py.relative_to(EXT))] = hits
    assert not bad, f"the core package must not import Slicer/Qt/VTK: {bad}"


@pytest.mark.parametrize(
    "py",
    sorted(p for d in MODULE_DIRS for p in d.rglob("*.py") if "__pycache__" not in p.parts),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_python_files_parse(py):
    ast.parse(py.read_text(encoding="utf-8"), filename=str(py))


# ---------------------------------------------------------------- CMake


def test_top_level_cmake_has_extension_calls():
    text = _strip_comments((REPO / "CMakeLists.txt").read_text(encoding="utf-8"))
    for needed in (
        "cmake_minimum_required(",
        "project(VoxelFM)",
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
        "find_package(Slicer REQUIRED)",
        "include(${Slicer_USE_FILE})",
        "add_subdirectory(VoxelFMExtension)",
        "add_subdirectory(VoxelFMTraining)",
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
        "include(${Slicer_EXTENSION_CPACK})",
    ):
        assert needed in text, f"top-level CMakeLists.txt lacks {needed}"
    assert (REPO / "Resources" / "Icons" / "VoxelFM.png").is_file()
    listed = cmake_listed_files(REPO / "CMakeLists.txt")["other"]
    missing = [f for f in listed if not (REPO / f).is_file()]
    assert not missing, f"top-level CMakeLists.txt lists files that do not exist: {missing}"


@pytest.mark.parametrize("folder", MODULE_DIRS, ids=lambda p: p.name)
def test_cmake_lists_match_files(folder):
    cmake = folder / "CMakeLists.txt"
    listed = cmake_listed_files(cmake)
    assert listed["modules"], f"{cmake} builds no scripted module"
    text = cmake.read_text(encoding="utf-8")
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest" in text
    all_listed = listed["scripts"] + listed["resources"] + listed["other"]
    dupes = sorted({f for f in all_listed if all_listed.count(f) > 1})
    assert not dupes, f"{cmake} lists files twice: {dupes}"
    nonexistent = sorted(f for f in all_listed if not (folder / f).is_file())
    unlisted = sorted(files_on_disk(folder) - set(all_listed))
    if nonexistent or unlisted:
        print(f"\n{cmake.relative_to(REPO)}: add to the lists:\n  " + "\n  ".join(unlisted))
        print(f"{cmake.relative_to(REPO)}: listed but missing on disk:\n  " + "\n  ".join(nonexistent))
    assert not nonexistent, f"{cmake} lists files that do not exist: {nonexistent}"
    assert not unlisted, f"{cmake} does not list {len(unlisted)} files (printed above): {unlisted[:20]}"
    for module in listed["modules"]:
        assert f"{module}.py" in listed["scripts"]
        assert f"Resources/UI/{module}.ui" in listed["resources"]
        assert f"Resources/Icons/{module}.png" in listed["resources"]


def test_requirements_file():
    req = REPO / "Resources" / "requirements.txt"
    lines = [ln.strip() for ln in req.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = {re.split(r"[<>=!~\[; ]", ln, maxsplit=1)[0].lower() for ln in lines}
    assert {"safetensors", "huggingface_hub", "pyyaml", "tqdm"} <= names
    assert "torch" not in names, "torch comes from the PyTorch extension, not requirements.txt"


# ---------------------------------------------------------------- headless entry point


def _load_cli_module():
    spec = importlib.util.spec_from_file_location("voxelfm_cli_under_test", TRAIN / "voxelfm_cli.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_finds_package_in_both_layouts(tmp_path):
    cli = _load_cli_module()
    # source checkout
    assert cli.find_package_dir(TRAIN / "voxelfm_cli.py") == EXT
    # installed extension: <qt-scripted-modules>/VoxelFMScripts/voxelfm_cli.py beside <qt-scripted-modules>/voxelfm
    installed = tmp_path / "qt-scripted-modules"
    (installed / "voxelfm").mkdir(parents=True)
    (installed / "voxelfm" / "__init__.py").write_text("")
    (installed / "VoxelFMScripts").mkdir()
    assert cli.find_package_dir(installed / "VoxelFMScripts" / "voxelfm_cli.py") == installed
    assert cli.find_package_dir(tmp_path / "elsewhere" / "voxelfm_cli.py") is None


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    return subprocess.run(
        [sys.executable, str(TRAIN / "voxelfm_cli.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO.parent),
        env=env,
    )


def test_cli_help_and_bad_command():
    proc = _run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: voxelfm" in proc.stdout
    bad = _run_cli("no-such-command")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_cli_models():
    if importlib.util.find_spec("voxelfm.cli.models_cmd") is None:
        pytest.skip("voxelfm models command not written yet")
    proc = _run_cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "voxelfm-tiny" in proc.stdout

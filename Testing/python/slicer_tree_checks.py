"""Static checks of the Slicer extension source tree that need no Slicer: .ui files, names, bindings, CMake,
layers, lazy exports.

Each check is a function of a source-tree root returning a list of problems, so the tests
(test_slicer_static.py, test_slicer_packaging.py) run it on the real tree (no problems) AND on a broken copy
(the problem is reported): a check that cannot fail checks nothing.
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXT_NAME, TRAIN_NAME = "VoxelFMExtension", "VoxelFMTraining"
EXT = REPO / EXT_NAME
TRAIN = REPO / TRAIN_NAME
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
NOT_MODULES = {"voxelfm_cli.py"}  # top-level scripts of a module folder that are not Slicer modules
QT_ONLY = ("qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.i18n")
APP_ONLY_ATTRIBUTES = {"modules", "app", "ScriptedLoadableModule"}  # slicer.<x> that exist only in the app
WIDGET_BASES = {"ScriptedLoadableModuleWidget", "VoxelFMModuleWidget"}
# module class suffix -> (Slicer base, VoxelFM base in VoxelFMWidgets/module.py or module_widget.py)
MODULE_CLASSES = {
    "": ("ScriptedLoadableModule", "VoxelFMModule"),
    "Widget": ("ScriptedLoadableModuleWidget", "VoxelFMModuleWidget"),
    "Logic": ("ScriptedLoadableModuleLogic", "VoxelFMModuleLogic"),
    "Test": ("ScriptedLoadableModuleTest", "VoxelFMModuleTest"),
}
# what voxelfm_add_module (top-level CMakeLists.txt) installs for NAME, besides its SCRIPTS and RESOURCES
ADD_MODULE_FILES = {
    "scripts": ("{name}.py",),
    "resources": ("Resources/Icons/{name}.png", "Resources/UI/{name}.ui"),
}
Check = Callable[[Path], list[str]]  # a tree root -> the problems found in it


# ---------------------------------------------------------------- tree helpers


def module_dirs(root: Path) -> tuple[Path, Path]:
    return root / EXT_NAME, root / TRAIN_NAME


def module_files(root: Path) -> list[Path]:
    """Top-level module scripts (one scripted module each)."""
    return [
        py for folder in module_dirs(root) for py in sorted(folder.glob("*.py")) if py.name not in NOT_MODULES
    ]


def widget_files(root: Path) -> list[Path]:
    return sorted((root / EXT_NAME / "VoxelFMWidgets").glob("*.py"))


def all_ui_files(root: Path) -> list[Path]:
    return sorted(p for d in module_dirs(root) for p in (d / "Resources" / "UI").glob("*.ui"))


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if not SKIP_DIRS & set(p.parts))


def parse(py: Path) -> ast.Module:
    return ast.parse(py.read_text(encoding="utf-8"), filename=str(py))


def ui_widgets(ui: Path) -> dict[str, str]:
    """name -> class of every widget (and action) in a Qt Designer file."""
    root = ET.parse(ui).getroot()
    found = {}
    for tag in ("widget", "action"):
        for el in root.iter(tag):
            if el.get("name"):
                found[el.get("name")] = el.get("class", "QAction")
    return found


def ui_bindings(ui: Path) -> list[tuple[str, str]]:
    """(widget class, parameter name) of each SlicerParameterName dynamic property (connectGui's binding)."""
    return [
        (w.get("class", ""), prop.findtext("string") or "")
        for w in ET.parse(ui).getroot().iter("widget")
        for prop in w.findall("property")
        if prop.get("name") == "SlicerParameterName"
    ]


def ui_names_used(py: Path) -> set[str]:
    """Names X in every `self.ui.X` attribute access of a file."""
    names = set()
    for node in ast.walk(parse(py)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def string_constant(py: Path, name: str) -> str | None:
    for node in parse(py).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return value if isinstance(value, str) else None
    return None


def imported_modules(py: Path) -> set[str]:
    names = set()
    for node in ast.walk(parse(py)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def attribute_uses(py: Path, base: str) -> set[str]:
    """Attributes X of `base.X` used anywhere (e.g. slicer.modules, slicer.app)."""
    return {
        n.attr
        for n in ast.walk(parse(py))
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == base
    }


def _name_of(node: ast.expr) -> str:
    """`Name` -> id, `a.Name` -> Name, `Call(Name)` -> id (decorators and bases)."""
    if isinstance(node, ast.Call):
        node = node.func
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _annotation_type(annotation: ast.expr) -> tuple[str, bool]:
    """(type name, has a Choice validator) of a field annotation: `X` or `Annotated[X, Choice(...), ...]`."""
    if isinstance(annotation, ast.Subscript) and _name_of(annotation.value) == "Annotated":
        parts = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        return _name_of(parts[0]), any(_name_of(a) == "Choice" for a in parts[1:])
    return _name_of(annotation), False


def connector_exists(widget_class: str, type_name: str, choice: bool) -> bool:
    """Whether parameterNodeWrapper has a GUI connector for this widget and field (its guiConnectors.py match
    exact widget types; a QComboBox needs a Choice annotation); connectGui raises RuntimeError otherwise."""
    combo = widget_class == "QComboBox" and choice and type_name in {"str", "int", "float", "bool"}
    widgets = {
        "bool": {"QCheckBox", "QPushButton"},
        "int": {"QSpinBox", "QSlider"},
        "float": {"QDoubleSpinBox", "ctkSliderWidget"},
        "str": {"QLineEdit", "QTextEdit"},
        "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    }.get(
        type_name,
        {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"} if type_name.startswith("vtkMRML") else set(),
    )
    return combo or widget_class in widgets


# ---------------------------------------------------------------- checks (root -> problems)


def check_ui_files_parse(root: Path) -> list[str]:
    problems = []
    for ui in all_ui_files(root):
        try:
            tree = ET.parse(ui).getroot()
        except ET.ParseError as exc:
            problems.append(f"{ui.name}: not valid XML ({exc})")
            continue
        if tree.tag != "ui" or not ui_widgets(ui):
            problems.append(f"{ui.name}: not a Qt Designer file with widgets")
    return problems


def check_ui_names(root: Path) -> list[str]:
    """Every self.ui.<name> exists in the .ui the file loads: <Module>.ui for a module, UI_FILE for a widget file."""
    problems = []
    for py in module_files(root):
        ui = py.parent / "Resources" / "UI" / f"{py.stem}.ui"
        if not ui.is_file():
            problems.append(f"{py.name}: has no Resources/UI/{ui.name}")
            continue
        missing = sorted(ui_names_used(py) - set(ui_widgets(ui)))
        if missing:
            problems.append(f"{py.name} uses self.ui.<name> not in {ui.name}: {missing}")
    for py in widget_files(root):
        used = ui_names_used(py)
        if not used:
            continue
        ui_name = string_constant(py, "UI_FILE")
        ui = root / EXT_NAME / "Resources" / "UI" / (ui_name or "")
        if not ui_name or not ui.is_file():
            problems.append(
                f"VoxelFMWidgets/{py.name} uses self.ui but names no existing UI_FILE ({ui_name})"
            )
            continue
        missing = sorted(used - set(ui_widgets(ui)))
        if missing:
            problems.append(f"VoxelFMWidgets/{py.name} uses self.ui.<name> not in {ui.name}: {missing}")
    return problems


def parameter_classes(files: list[Path]) -> dict[str, dict[str, tuple[str, bool]]]:
    """parameterNodeWrapper / parameterPack classes: class name -> {field: (type name, has Choice)}."""
    classes = {}
    for py in files:
        for node in parse(py).body:
            if isinstance(node, ast.ClassDef) and {_name_of(d) for d in node.decorator_list} & {
                "parameterNodeWrapper",
                "parameterPack",
            }:
                classes[node.name] = {
                    s.target.id: _annotation_type(s.annotation)
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                }
    return classes


def resolve(name: str, cls: str, classes: dict[str, dict[str, tuple[str, bool]]]) -> tuple[str, bool] | None:
    """(type, has Choice) of field `a` or `a.b.c` of `cls`, through parameterPack members like connectGui."""
    top, _, rest = name.partition(".")
    field = classes.get(cls, {}).get(top)
    if field is None or not rest:
        return field
    return resolve(rest, field[0], classes)


def _parameter_node_class(py: Path) -> str | None:
    for node in parse(py).body:
        if isinstance(node, ast.ClassDef) and "parameterNodeWrapper" in {
            _name_of(d) for d in node.decorator_list
        }:
            return node.name
    return None


def _called_names(py: Path) -> set[str]:
    return {_name_of(n.func) for n in ast.walk(parse(py)) if isinstance(n, ast.Call)}


def check_parameter_bindings(root: Path) -> list[str]:
    """Every SlicerParameterName names a field of the parameter node of each module showing that widget."""
    classes = parameter_classes(module_files(root) + widget_files(root))
    # shared panels: a widget file with UI_FILE; a module embeds it when it calls one of the file's classes
    # or when its .ui has the file's PLACEHOLDER widget (the module widget base loads the panel there)
    panels = []
    for py in widget_files(root):
        ui_name = string_constant(py, "UI_FILE")
        if ui_name and (root / EXT_NAME / "Resources" / "UI" / ui_name).is_file():
            defined = {n.name for n in parse(py).body if isinstance(n, ast.ClassDef)}
            placeholder = string_constant(py, "PLACEHOLDER")
            panels.append((root / EXT_NAME / "Resources" / "UI" / ui_name, defined, placeholder))
    problems = []
    for py in module_files(root):
        ui = py.parent / "Resources" / "UI" / f"{py.stem}.ui"
        node_class = _parameter_node_class(py)
        if node_class is None or not ui.is_file():
            problems.append(f"{py.name}: no @parameterNodeWrapper class or no {ui.name}")
            continue
        shown = [(ui, ui_bindings(ui))]
        calls = _called_names(py)
        own_widgets = set(ui_widgets(ui))
        shown += [
            (panel, ui_bindings(panel))
            for panel, defined, placeholder in panels
            if defined & calls or placeholder in own_widgets
        ]
        if not shown[0][1]:
            problems.append(f"{ui.name}: no widget is bound to the parameter node")
        for shown_ui, bound in shown:
            for widget_class, name in bound:
                field = resolve(name, node_class, classes)
                if field is None:
                    problems.append(f"{shown_ui.name} in {py.stem}: bound to unknown parameter {name}")
                elif not connector_exists(widget_class, *field):
                    choice = " with Choice" if field[1] else ""
                    problems.append(
                        f"{shown_ui.name} in {py.stem}: no GUI connector from {widget_class} to {name} "
                        f"({field[0]}{choice})"
                    )
    return problems


def _class_bases(py: Path) -> dict[str, set[str]]:
    return {n.name: {_name_of(b) for b in n.bases} for n in parse(py).body if isinstance(n, ast.ClassDef)}


def check_module_shape(root: Path) -> list[str]:
    """Each module file has its four classes on Slicer's bases (directly or through VoxelFMWidgets' bases)."""
    problems = []
    widgets = root / EXT_NAME / "VoxelFMWidgets"
    shared = _class_bases(widgets / "module.py") | _class_bases(widgets / "module_widget.py")
    for slicer_base, ours in MODULE_CLASSES.values():
        if slicer_base not in shared.get(ours, set()):
            problems.append(f"VoxelFMWidgets: {ours} must derive from {slicer_base}")
    if "VTKObservationMixin" not in shared.get("VoxelFMModuleWidget", set()):
        problems.append(
            "VoxelFMWidgets/module_widget.py: VoxelFMModuleWidget must derive from VTKObservationMixin"
        )
    category_set = '"VoxelFM"' in (widgets / "module.py").read_text(encoding="utf-8")
    for py in module_files(root):
        classes = _class_bases(py)
        for suffix, allowed in MODULE_CLASSES.items():
            bases = classes.get(py.stem + suffix)
            if bases is None:
                problems.append(f"{py.name}: class {py.stem + suffix} missing")
            elif not bases & set(allowed):
                problems.append(f"{py.name}: {py.stem + suffix} must derive from one of {sorted(allowed)}")
        own_category = '"VoxelFM"' in py.read_text(encoding="utf-8")
        if not own_category and not ("VoxelFMModule" in classes.get(py.stem, set()) and category_set):
            problems.append(f"{py.name}: category 'VoxelFM' not set")
    return problems


def check_layering(root: Path) -> list[str]:
    """No Qt (or app-only API, or widget package) below the widget layer; modules do not import modules."""
    ext = root / EXT_NAME
    module_names = {py.stem for py in module_files(root)}
    problems = []
    for py in python_files(ext / "VoxelFMLib"):
        mods = imported_modules(py)
        hits = sorted(m for m in mods if m in QT_ONLY or m.split(".")[0] in {"qt", "ctk", "VoxelFMWidgets"})
        hits += sorted(m for m in mods if m.split(".")[0] in module_names)
        hits += [f"slicer.{a}" for a in sorted(attribute_uses(py, "slicer") & APP_ONLY_ATTRIBUTES)]
        if hits:
            problems.append(f"VoxelFMLib/{py.name} must stay Qt-free and app-free: {hits}")
    for py in python_files(ext / "voxelfm"):
        hits = sorted(
            m
            for m in imported_modules(py)
            if m.split(".")[0] in {"slicer", "qt", "ctk", "vtk", "VoxelFMLib", "VoxelFMWidgets"}
        )
        if hits:
            problems.append(f"{py.relative_to(ext)}: the core must not import Slicer/Qt/VTK: {hits}")
    for py in module_files(root) + widget_files(root):
        others = sorted(m for m in imported_modules(py) if m.split(".")[0] in module_names - {py.stem})
        if others:
            problems.append(
                f"{py.name} imports another module file (use VoxelFMWidgets/VoxelFMLib): {others}"
            )
    return problems


OUR_PACKAGES = {"voxelfm", "VoxelFMLib", "VoxelFMWidgets"}


def lazy_exports(node: ast.stmt) -> dict[str, list[str]]:
    """module -> names of an ``_EXPORTS = {".module": ("Name", ...)}`` table (voxelfm.lazy.lazy_exports)."""
    if not (
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
        and isinstance(node.value, ast.Dict)
    ):
        return {}
    return {
        key.value: [e.value for e in value.elts if isinstance(e, ast.Constant)]
        for key, value in zip(node.value.keys, node.value.values, strict=True)
        if isinstance(key, ast.Constant) and isinstance(value, (ast.Tuple, ast.List))
    }


def check_lazy_exports(root: Path) -> list[str]:
    """Every name of a package's lazy ``_EXPORTS`` table is defined in the module the table names."""
    ext = root / EXT_NAME
    problems = []
    for init in [*python_files(ext / "voxelfm"), *python_files(ext / "VoxelFMLib")]:
        if init.name != "__init__.py":
            continue
        package = ".".join(init.parent.relative_to(ext).parts)
        for node in parse(init).body:
            for module, names in lazy_exports(node).items():
                dotted = package + module if module.startswith(".") else module
                target = _module_file(ext, dotted)
                if target is None:
                    problems.append(f"{package}: lazy table names {module}, which does not exist")
                    continue
                missing = sorted(set(names) - defined_names(target))
                if missing:
                    problems.append(f"{package}: {module} does not define {missing}")
    return problems


def defined_names(py: Path) -> set[str]:
    """Top-level names of a module (also inside if/try blocks), plus the names of a lazy ``_EXPORTS`` table."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
                names.update(n for names_of_module in lazy_exports(node).values() for n in names_of_module)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body + node.orelse + getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(parse(py).body)
    return names


def _module_file(ext: Path, dotted: str) -> Path | None:
    base = ext.joinpath(*dotted.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def check_internal_imports(root: Path) -> list[str]:
    """Imports of voxelfm / VoxelFMLib / VoxelFMWidgets names in the Slicer layers resolve (also lazy ones).

    The modules are written against interfaces other files provide; a renamed or moved name breaks only
    inside Slicer, so it is caught here."""
    ext = root / EXT_NAME
    problems = []
    for py in module_files(root) + widget_files(root) + python_files(ext / "VoxelFMLib"):
        for node in ast.walk(parse(py)):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:  # relative: only inside VoxelFMLib / VoxelFMWidgets (one level)
                module = ".".join(filter(None, [py.parent.name, node.module]))
            else:
                module = node.module or ""
            if module.split(".")[0] not in OUR_PACKAGES:
                continue
            target = _module_file(ext, module)
            if target is None:
                problems.append(f"{py.name}: imports {module}, which does not exist")
                continue
            names = defined_names(target)
            for alias in node.names:
                if alias.name not in names and _module_file(ext, f"{module}.{alias.name}") is None:
                    problems.append(f"{py.name}: {module} has no {alias.name}")
    return problems


_CALL_RE = re.compile(r"\b(set|file|slicerMacroBuildScriptedModule|voxelfm_add_module|foreach)\s*\(", re.S)


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


_FOREACH_ITEMS_RE = re.compile(
    r"\bforeach\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s+IN\s+ITEMS\s+([^)]*)\)(.*?)\bendforeach\s*\(\s*\)", re.S
)


def _unroll_foreach_items(text: str) -> str:
    """``foreach(VAR IN ITEMS a b) BODY endforeach()`` -> ``set(VAR a) BODY set(VAR b) BODY`` (in order)."""
    return _FOREACH_ITEMS_RE.sub(
        lambda m: "".join(f"set({m.group(1)} {item})\n{m.group(3)}" for item in m.group(2).split()), text
    )


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
    variables at that point), "other": files of lists installed by hand (`foreach(x IN LISTS VAR)`), and
    "modules": the module names."""
    text = _unroll_foreach_items(_strip_comments(cmake.read_text(encoding="utf-8")))
    variables: dict[str, list[str]] = {}
    result: dict[str, list[str]] = {"scripts": [], "resources": [], "other": [], "modules": []}
    pos = 0
    while m := _CALL_RE.search(text, pos):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        args = text[m.end() : i - 1].split()
        pos = i
        if m.group(1) == "set" and args:
            variables[args[0]] = [v for tok in args[1:] for v in _expand(tok, variables)]
        elif m.group(1) == "file" and len(args) > 1 and args[0] in ("GLOB", "GLOB_RECURSE"):
            variables[args[1]] = _glob(cmake.parent, args[0] == "GLOB_RECURSE", args[2:])
        elif m.group(1) == "slicerMacroBuildScriptedModule":
            result["modules"].append(variables.get("MODULE_NAME", ["?"])[0])
            result["scripts"] += variables.get("MODULE_PYTHON_SCRIPTS", [])
            result["resources"] += variables.get("MODULE_PYTHON_RESOURCES", [])
        elif m.group(1) == "voxelfm_add_module":
            _add_module_call([v for tok in args for v in _expand(tok, variables)], result)
        elif m.group(1) == "foreach" and len(args) >= 4 and args[1:3] == ["IN", "LISTS"]:
            for name in args[3:]:
                result["other"] += variables.get(name, [])
    return result


def _glob(folder: Path, recurse: bool, args: list[str]) -> list[str]:
    """``file(GLOB[_RECURSE] VAR RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} [CONFIGURE_DEPENDS] PATTERN...)`` as
    CMake evaluates it in ``folder`` (the only form our CMake files use: paths relative to their folder)."""
    if args[:2] != ["RELATIVE", "${CMAKE_CURRENT_SOURCE_DIR}"]:
        raise ValueError(
            f"file(GLOB...) in {folder}: only RELATIVE ${{CMAKE_CURRENT_SOURCE_DIR}} is understood"
        )
    found = []
    for pattern in (a for a in args[2:] if a != "CONFIGURE_DEPENDS"):
        directory, _, name = pattern.removeprefix("${CMAKE_CURRENT_SOURCE_DIR}/").rpartition("/")
        paths = (folder / directory).rglob(name) if recurse else (folder / directory).glob(name)
        found += sorted(p.relative_to(folder).as_posix() for p in paths if p.is_file())
    return found


def _add_module_call(args: list[str], result: dict[str, list[str]]) -> None:
    """``voxelfm_add_module(NAME n [SCRIPTS ...] [RESOURCES ...] [TEST_ARGS ...])`` into ``result``."""
    groups: dict[str, list[str]] = {"NAME": [], "SCRIPTS": [], "RESOURCES": [], "TEST_ARGS": []}
    current = None
    for arg in args:
        if arg in groups and current != "TEST_ARGS":
            current = arg
        elif current is not None:
            groups[current].append(arg)
    name = groups["NAME"][0] if groups["NAME"] else "?"
    result["modules"].append(name)
    for kind, files in ADD_MODULE_FILES.items():
        result[kind] += [f.format(name=name) for f in files]
    result["scripts"] += groups["SCRIPTS"]
    result["resources"] += groups["RESOURCES"]


def check_add_module_function(root: Path) -> list[str]:
    """voxelfm_add_module in the top-level CMakeLists installs what the checker assumes, with both tests."""
    text = _strip_comments((root / "CMakeLists.txt").read_text(encoding="utf-8"))
    m = re.search(r"function\(voxelfm_add_module\)(.*?)endfunction\(\)", text, re.S)
    if m is None:
        return ["CMakeLists.txt: no function(voxelfm_add_module)"]
    body = m.group(1)
    needed = [f.format(name="${VOXELFM_NAME}") for files in ADD_MODULE_FILES.values() for f in files]
    needed += ["slicerMacroBuildScriptedModule(", "WITH_GENERIC_TESTS", "slicer_add_python_unittest("]
    return [f"CMakeLists.txt: voxelfm_add_module lacks {n}" for n in needed if n not in body]


def files_on_disk(folder: Path) -> set[str]:
    out = set()
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for f in files:
            if f.endswith((".py", ".ui", ".png")):
                out.add(str((Path(base) / f).relative_to(folder)).replace(os.sep, "/"))
    return out


def check_cmake_lists(root: Path) -> list[str]:
    """Each module folder's CMakeLists lists every .py/.ui/.png on disk, once, and only files that exist."""
    problems = []
    for folder in module_dirs(root):
        cmake = folder / "CMakeLists.txt"
        listed = cmake_listed_files(cmake)
        where = f"{folder.name}/CMakeLists.txt"
        if not listed["modules"]:
            problems.append(f"{where} builds no scripted module")
        text = cmake.read_text(encoding="utf-8")
        uses_function = "voxelfm_add_module(" in text
        if not uses_function and (
            "WITH_GENERIC_TESTS" not in text or "slicer_add_python_unittest" not in text
        ):
            problems.append(f"{where} lacks WITH_GENERIC_TESTS or slicer_add_python_unittest")
        all_listed = listed["scripts"] + listed["resources"] + listed["other"]
        dupes = sorted({f for f in all_listed if all_listed.count(f) > 1})
        nonexistent = sorted(f for f in all_listed if not (folder / f).is_file())
        unlisted = sorted(files_on_disk(folder) - set(all_listed))
        problems += [f"{where} lists twice: {f}" for f in dupes]
        problems += [f"{where} lists a file that does not exist: {f}" for f in nonexistent]
        problems += [f"{where} does not list {f}" for f in unlisted]
        for module in listed["modules"]:
            for needed, kind in (
                (f"{module}.py", "scripts"),
                (f"Resources/UI/{module}.ui", "resources"),
                (f"Resources/Icons/{module}.png", "resources"),
            ):
                if needed not in listed[kind]:
                    problems.append(f"{where}: module {module} does not install {needed}")
    return problems + check_add_module_function(root)


def checks_by_name(*checks: Check) -> dict[str, Check]:
    """Each check under its function name less "check_" (the test ids)."""
    return {check.__name__.removeprefix("check_"): check for check in checks}


CHECKS = checks_by_name(
    check_ui_files_parse,
    check_ui_names,
    check_parameter_bindings,
    check_module_shape,
    check_layering,
    check_cmake_lists,
    check_internal_imports,
    check_lazy_exports,
)


def edit_text(path: Path, old: str, new: str) -> None:
    """Break one thing in a copied tree: replace ``old`` (which must be there) by ``new`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")

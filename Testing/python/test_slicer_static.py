"""Static checks of the Slicer extension that need no Slicer: .ui files, widget names, bindings, CMake, layers.

What only the Slicer application can run (widgets, parameterNodeWrapper) is at least checked for
consistency here. Each check is a function of a source-tree root returning a list of problems, so the tests
run it on the real tree (no problems) AND on a broken copy (the problem is reported): a check that cannot fail
checks nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slicer_tree_checks import (
    CHECKS,
    EXT,
    EXT_NAME,
    REPO,
    SKIP_DIRS,
    TRAIN,
    TRAIN_NAME,
    _strip_comments,
    all_ui_files,
    check_cmake_lists,
    check_internal_imports,
    check_layering,
    check_lazy_exports,
    check_module_shape,
    check_parameter_bindings,
    check_ui_files_parse,
    check_ui_names,
    cmake_listed_files,
    edit_text,
    module_files,
    parse,
    python_files,
)

# ---------------------------------------------------------------- the real tree passes every check


def test_there_are_modules_and_ui_files():
    assert {p.stem for p in module_files(REPO)} >= {"VoxelFMFeatures", "VoxelFMSegment", "VoxelFMJobs"}
    assert {p.name for p in all_ui_files(REPO)} >= {"ModelPanel.ui", "VoxelFMJobs.ui"}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_source_tree_passes(check):
    problems = CHECKS[check](REPO)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "py", python_files(EXT) + python_files(TRAIN), ids=lambda p: str(p.relative_to(REPO))
)
def test_python_files_parse(py):
    parse(py)


# ---------------------------------------------------------------- each check fails on a broken copy


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the module folders (no caches, no egg-info) to break one thing in."""
    ignore = shutil.ignore_patterns(*SKIP_DIRS, "*.egg-info")
    for name in (EXT_NAME, TRAIN_NAME):
        shutil.copytree(REPO / name, tmp_path / name, ignore=ignore)
    shutil.copy(REPO / "CMakeLists.txt", tmp_path / "CMakeLists.txt")
    return tmp_path


def _reports(problems: list[str], *needles: str) -> bool:
    return any(all(n in p for n in needles) for p in problems)


def test_copy_of_tree_is_clean(tree):
    for name, check in CHECKS.items():
        assert not check(tree), name


def test_broken_ui_file_is_reported(tree):
    (tree / EXT_NAME / "Resources" / "UI" / "ModelPanel.ui").write_text("<ui><widget", encoding="utf-8")
    assert _reports(check_ui_files_parse(tree), "ModelPanel.ui", "not valid XML")


def test_widget_removed_from_module_ui_is_reported(tree):
    edit_text(tree / EXT_NAME / "Resources" / "UI" / "VoxelFMSegment.ui", 'name="fitButton"', 'name="fit"')
    assert _reports(check_ui_names(tree), "VoxelFMSegment.py", "fitButton")


def test_widget_removed_from_model_panel_ui_is_reported(tree):
    ui = tree / EXT_NAME / "Resources" / "UI" / "ModelPanel.ui"
    edit_text(ui, 'name="browseModelButton"', 'name="browse"')
    assert _reports(check_ui_names(tree), "model_panel.py", "browseModelButton")


def test_module_without_ui_file_is_reported(tree):
    (tree / TRAIN_NAME / "Resources" / "UI" / "VoxelFMJobs.ui").unlink()
    assert _reports(check_ui_names(tree), "VoxelFMJobs.py", "no Resources/UI/VoxelFMJobs.ui")


def test_unknown_binding_in_module_ui_is_reported(tree):
    edit_text(
        tree / EXT_NAME / "Resources" / "UI" / "VoxelFMSegment.ui",
        "<string>autoRefit<",
        "<string>autoRefitt<",
    )
    assert _reports(check_parameter_bindings(tree), "VoxelFMSegment.ui", "autoRefitt")


def test_unknown_pack_member_in_model_panel_is_reported(tree):
    edit_text(tree / EXT_NAME / "Resources" / "UI" / "ModelPanel.ui", "model.device", "model.devise")
    problems = check_parameter_bindings(tree)
    assert _reports(problems, "ModelPanel.ui in VoxelFMFeatures", "model.devise")
    assert _reports(problems, "ModelPanel.ui in VoxelFMSegment", "model.devise")


def test_renamed_pack_member_is_reported(tree):
    edit_text(tree / EXT_NAME / "VoxelFMWidgets" / "model_panel.py", "    maxTokens:", "    maxTokenz:")
    assert _reports(check_parameter_bindings(tree), "ModelPanel.ui", "model.maxTokens")


def test_widget_that_cannot_show_its_field_is_reported(tree):
    ui = tree / EXT_NAME / "Resources" / "UI" / "ModelPanel.ui"
    edit_text(
        ui,
        '<widget class="QSpinBox" name="maxTokensSpinBox">',
        '<widget class="QLineEdit" name="maxTokensSpinBox">',
    )
    assert _reports(
        check_parameter_bindings(tree), "no GUI connector from QLineEdit to model.maxTokens (int)"
    )


def test_combo_box_without_choice_is_reported(tree):
    edit_text(
        tree / EXT_NAME / "VoxelFMWidgets" / "model_panel.py", "Annotated[str, Choice(PRECISIONS)]", "str"
    )
    assert _reports(
        check_parameter_bindings(tree), "no GUI connector from QComboBox to model.precision (str)"
    )


def test_module_without_model_field_is_reported(tree):
    edit_text(tree / EXT_NAME / "VoxelFMFeatures.py", "    model: ModelParameters\n", "")
    assert _reports(check_parameter_bindings(tree), "ModelPanel.ui in VoxelFMFeatures", "model.model")


def test_missing_test_class_is_reported(tree):
    edit_text(tree / TRAIN_NAME / "VoxelFMJobs.py", "class VoxelFMJobsTest(", "class JobsTest(")
    assert _reports(check_module_shape(tree), "VoxelFMJobsTest missing")


def test_qt_import_in_logic_layer_is_reported(tree):
    (tree / EXT_NAME / "VoxelFMLib" / "leaky.py").write_text("import qt\n", encoding="utf-8")
    assert _reports(check_layering(tree), "VoxelFMLib/leaky.py", "qt")


def test_app_only_api_in_logic_layer_is_reported(tree):
    (tree / EXT_NAME / "VoxelFMLib" / "leaky.py").write_text("import slicer\nslicer.app.processEvents()\n")
    assert _reports(check_layering(tree), "VoxelFMLib/leaky.py", "slicer.app")


def test_widget_import_in_logic_layer_is_reported(tree):
    (tree / EXT_NAME / "VoxelFMLib" / "leaky.py").write_text("from VoxelFMWidgets import BusyState\n")
    assert _reports(check_layering(tree), "VoxelFMLib/leaky.py", "VoxelFMWidgets")


def test_slicer_import_in_core_is_reported(tree):
    (tree / EXT_NAME / "voxelfm" / "leaky.py").write_text("import slicer\n", encoding="utf-8")
    assert _reports(check_layering(tree), "leaky.py", "slicer")


def test_module_importing_a_module_is_reported(tree):
    edit_text(
        tree / EXT_NAME / "VoxelFMSegment.py",
        "import qt\n",
        "import qt\nfrom VoxelFMFeatures import BusyState\n",
    )
    assert _reports(check_layering(tree), "VoxelFMSegment.py", "VoxelFMFeatures")


def test_missing_imported_name_is_reported(tree):
    edit_text(tree / EXT_NAME / "VoxelFMLib" / "jobs.py", "class JobRunner:", "class Runner:")
    assert _reports(check_internal_imports(tree), "VoxelFMJobs.py", "VoxelFMLib.jobs has no JobRunner")


def test_moved_lazy_name_is_reported(tree):
    """A name imported inside a function (after the dependency check) is checked too."""
    edit_text(
        tree / EXT_NAME / "VoxelFMLib" / "model_panel_state.py", "class ModelPanelState:", "class PanelState:"
    )
    assert _reports(
        check_internal_imports(tree), "model_panel.py", "model_panel_state has no ModelPanelState"
    )


def test_missing_lazy_public_name_is_reported(tree):
    edit_text(tree / EXT_NAME / "VoxelFMLib" / "__init__.py", '("FewShotSegmentLogic",', '("FewShotLogic",')
    assert _reports(
        check_internal_imports(tree), "VoxelFMSegment.py", "VoxelFMLib has no FewShotSegmentLogic"
    )


def test_lazy_name_its_module_lacks_is_reported(tree):
    edit_text(tree / EXT_NAME / "voxelfm" / "features" / "cache.py", "class FeatureCache", "class DiskCache")
    assert _reports(check_lazy_exports(tree), "voxelfm.features", ".cache does not define ['FeatureCache']")


def test_lazy_table_naming_a_missing_module_is_reported(tree):
    edit_text(tree / EXT_NAME / "voxelfm" / "__init__.py", '"voxelfm.imaging.io"', '"voxelfm.imaging.iox"')
    assert _reports(check_lazy_exports(tree), "voxelfm: lazy table names voxelfm.imaging.iox")


def test_unlisted_file_is_reported(tree):
    (tree / EXT_NAME / "Resources" / "Icons" / "extra.png").write_bytes(b"not installed")
    assert _reports(check_cmake_lists(tree), "does not list", "Resources/Icons/extra.png")


def test_listed_file_missing_on_disk_is_reported(tree):
    (tree / EXT_NAME / "Resources" / "Icons" / "VoxelFMLung1.png").unlink()
    assert _reports(check_cmake_lists(tree), "does not exist", "Resources/Icons/VoxelFMLung1.png")


def test_new_package_file_is_installed_by_the_glob(tree):
    """A new .py file in a package (any depth) is installed with no CMake edit; the checker sees the glob."""
    new = tree / EXT_NAME / "voxelfm" / "newpkg" / "thing.py"
    new.parent.mkdir()
    new.write_text('"""New."""\n', encoding="utf-8")
    assert "voxelfm/newpkg/thing.py" in cmake_listed_files(tree / EXT_NAME / "CMakeLists.txt")["scripts"]
    assert not _reports(check_cmake_lists(tree), "voxelfm/newpkg/thing.py")


def test_module_icon_not_installed_is_reported(tree):
    edit_text(tree / "CMakeLists.txt", "RESOURCES Resources/Icons/${VOXELFM_NAME}.png ", "RESOURCES ")
    assert _reports(
        check_cmake_lists(tree), "voxelfm_add_module lacks", "Resources/Icons/${VOXELFM_NAME}.png"
    )


def test_module_not_built_is_reported(tree):
    edit_text(
        tree / TRAIN_NAME / "CMakeLists.txt",
        "voxelfm_add_module(NAME VoxelFMJobs",
        "message(NAME VoxelFMJobs",
    )
    assert _reports(check_cmake_lists(tree), "VoxelFMTraining/CMakeLists.txt builds no scripted module")


def test_module_class_on_a_wrong_base_is_reported(tree):
    edit_text(tree / EXT_NAME / "VoxelFMWidgets" / "module.py", "(ScriptedLoadableModuleLogic):", "(object):")
    assert _reports(
        check_module_shape(tree), "VoxelFMModuleLogic must derive from ScriptedLoadableModuleLogic"
    )


# ---------------------------------------------------------------- extension CMake, requirements


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
    proc = _run_cli("models")
    assert proc.returncode == 0, proc.stderr
    assert "voxelfm-tiny" in proc.stdout

"""The module files on the shared bases of VoxelFMWidgets/module.py and module_widget.py, with fake Qt.

No Slicer application can run here, so the module classes are imported against fakes of the APIs their
import and construction touch (qt, slicer.i18n, slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper,
slicer.app, slicer.mrmlScene) shaped like Slicer's own: a module sets its metadata on its parent, a logic
wraps the scripted module node in its parameter node class, a self-test runs every test method on a
cleared scene, and the widget base builds the busy state from the .ui widgets it finds.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
import unittest
from pathlib import Path
from unittest import mock

import pytest

from voxelfm.capabilities import CAPABILITIES as TABLE

slicer = pytest.importorskip("slicer")

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "VoxelFMExtension"
# every Slicer module of the capability table (module name -> its VoxelFMLib logic class, "" for none)
CAPABILITIES = {c.module: c.logic for c in TABLE if c.module}
MODULE_FILES = [
    next(path for path in (EXT / f"{name}.py", REPO / "VoxelFMTraining" / f"{name}.py") if path.is_file())
    for name in CAPABILITIES
]


class FakeModule:
    """slicer.ScriptedLoadableModule.ScriptedLoadableModule: keeps the parent it describes."""

    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__


class FakeLogic:
    """ScriptedLoadableModuleLogic: getParameterNode() gives the module's scripted module node."""

    def __init__(self, parent=None) -> None:
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        return ("scripted module node", self.moduleName)


class FakeWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent


class FakeTest(unittest.TestCase):
    def __init__(self, methodName: str = "runTest") -> None:
        super().__init__(methodName)
        self.shown: list[str] = []

    def delayDisplay(self, message: str, msec: int = 0) -> None:
        self.shown.append(message)


def parameter_node_wrapper(cls):
    """@parameterNodeWrapper: a class built on the scripted module node (the fields stay annotations)."""

    def __init__(self, node) -> None:
        self.node = node

    return type(cls.__name__, (), {"__init__": __init__, "__annotations__": cls.__annotations__})


class FakeSignal:
    def __init__(self) -> None:
        self.connected: list[tuple] = []

    def connect(self, signal: str, slot) -> None:
        self.connected.append((signal, slot))


class FakeBar:
    def __init__(self) -> None:
        self.visible, self.value = True, -1

    def setVisible(self, visible: bool) -> None:
        self.visible = visible

    def setValue(self, value: int) -> None:
        self.value = value


class FakeLabel:
    def __init__(self) -> None:
        self.text = ""

    def setText(self, text: str) -> None:
        self.text = text


@pytest.fixture
def modules(monkeypatch):
    """name -> imported module file, against the fakes; calls to slicer.app / the scene are recorded."""
    calls: list[tuple] = []
    fakes = {
        "qt": mock.MagicMock(name="qt"),
        "ctk": mock.MagicMock(name="ctk"),
        "slicer.i18n": types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=FakeModule,
            ScriptedLoadableModuleLogic=FakeLogic,
            ScriptedLoadableModuleWidget=FakeWidget,
            ScriptedLoadableModuleTest=FakeTest,
        ),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=parameter_node_wrapper,
            parameterPack=lambda cls: cls,
            Choice=lambda *a: ("Choice", a),
            WithinRange=lambda *a: ("WithinRange", a),
        ),
    }
    for name, fake in fakes.items():
        monkeypatch.setitem(sys.modules, name, fake)
    app = types.SimpleNamespace(connect=lambda signal, slot: calls.append(("app.connect", signal, slot)))
    scene = types.SimpleNamespace(Clear=lambda: calls.append(("scene.Clear",)))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    for folder in (EXT, REPO / "VoxelFMTraining"):
        monkeypatch.syspath_prepend(str(folder))
    ours = ("VoxelFMWidgets", *(py.stem for py in MODULE_FILES))
    stale = [n for n in sys.modules if n.split(".")[0] in ours]
    for name in stale:
        monkeypatch.delitem(sys.modules, name)
    loaded = {}
    for py in MODULE_FILES:
        spec = importlib.util.spec_from_file_location(py.stem, py)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, py.stem, module)
        spec.loader.exec_module(module)
        loaded[py.stem] = module
    yield loaded, calls
    for name in [n for n in sys.modules if n.split(".")[0] in ours]:
        del sys.modules[name]  # imported against the fakes: never seen by later tests


@pytest.mark.parametrize("name", [py.stem for py in MODULE_FILES])
def test_module_sets_its_metadata_through_the_shared_base(modules, name):
    loaded, calls = modules
    parent = types.SimpleNamespace()
    getattr(loaded[name], name)(parent)
    assert parent.title.startswith("VoxelFM ") and parent.title.replace(" ", "") == name
    assert parent.categories == ["VoxelFM"]
    assert parent.contributors == ["VoxelFM Slicer extension contributors"]
    assert len(parent.helpText) > 80 and "licence" in parent.acknowledgementText
    assert parent.dependencies == ([] if name == "VoxelFMFeatures" else ["VoxelFMFeatures"])
    registered = [c for c in calls if c[0] == "app.connect"]
    # the Features module carries the shared packages and registers the sample CT once Slicer has started
    assert bool(registered) == (name == "VoxelFMFeatures")


@pytest.mark.parametrize("name", [py.stem for py in MODULE_FILES])
def test_logic_wraps_its_node_and_names_an_existing_capability(modules, name):
    import VoxelFMLib

    loaded, _calls = modules
    module = loaded[name]
    logic = getattr(module, f"{name}Logic")()
    node = logic.getParameterNode()
    assert type(node).__name__ == f"{name}ParameterNode"
    assert node.node == ("scripted module node", name)
    assert logic.capability == CAPABILITIES[name]
    if logic.capability:
        assert callable(getattr(VoxelFMLib, logic.capability).from_spec)
        assert logic.current is None  # nothing built (no model loaded) until first use
    else:
        assert logic.perModel is None and logic.current is None


def _test_methods_in_source_order(py: Path, cls_name: str) -> list[str]:
    (cls,) = [n for n in ast.parse(py.read_text()).body if isinstance(n, ast.ClassDef) and n.name == cls_name]
    return [n.name for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


@pytest.mark.parametrize("py", MODULE_FILES, ids=[py.stem for py in MODULE_FILES])
def test_self_test_runs_every_test_method_in_order_each_on_a_cleared_scene(modules, py, monkeypatch):
    loaded, calls = modules
    cls = getattr(loaded[py.stem], f"{py.stem}Test")
    expected = _test_methods_in_source_order(py, cls.__name__)
    assert expected, f"{cls.__name__} has no test method"
    for method in expected:
        monkeypatch.setattr(cls, method, lambda self, m=method: calls.append(("test", m)))
    cls().runTest()
    ran = [c for c in calls if c[0] in {"test", "scene.Clear"}]
    assert ran == [item for m in expected for item in (("scene.Clear",), ("test", m))]


def test_missing_package_skips_with_a_message(modules):
    loaded, _calls = modules
    test = loaded["VoxelFMSegment"].VoxelFMSegmentTest()
    assert test.missing("numpy") is False and test.shown == []
    assert test.missing("numpy", "surely_not_installed_pkg_xyz") is True
    assert test.shown == ["surely_not_installed_pkg_xyz not installed: runTest skipped"]


def _bare_widget(loaded, name: str, ui):
    widget = getattr(loaded[name], f"{name}Widget")()
    widget.ui, widget.updates = ui, 0
    widget.updateGUI = lambda: setattr(widget, "updates", widget.updates + 1)
    return widget


def test_widget_base_builds_the_busy_state_from_the_ui(modules):
    loaded, _calls = modules
    ui = types.SimpleNamespace(progressBar=FakeBar(), statusLabel=FakeLabel(), cancelButton=FakeSignal())
    widget = _bare_widget(loaded, "VoxelFMLocalize", ui)
    widget._buildSharedWidgets()
    assert widget.busy is not None and widget.modelPanel is None  # no placeholder in this ui
    assert ui.progressBar.visible is False
    ((signal, slot),) = ui.cancelButton.connected
    assert signal == "clicked(bool)" and slot == widget.busy.requestCancel
    widget.busy.start("working")
    assert ui.cancelButton.enabled is True and widget.updates == 1
    widget.busy.stop("done")
    assert ui.cancelButton.enabled is False and widget.updates == 2
    widget.busy.start("again")
    widget.cancelWork()  # the scene closes: the running work is asked to stop
    assert widget.busy.cancel.is_set()


def test_widget_without_busy_widgets_gets_none(modules):
    loaded, _calls = modules
    widget = _bare_widget(loaded, "VoxelFMJobs", types.SimpleNamespace(statusLabel=FakeLabel()))
    widget._buildSharedWidgets()
    assert widget.busy is None and widget.modelPanel is None
    widget.cancelWork()  # nothing to cancel, no error


def test_ready_to_run_checks_node_busy_dependencies_then_model(modules, monkeypatch):
    loaded, _calls = modules
    module_widget = sys.modules["VoxelFMWidgets.module_widget"]
    ui = types.SimpleNamespace(progressBar=FakeBar(), statusLabel=FakeLabel())
    widget = _bare_widget(loaded, "VoxelFMRetrieve", ui)
    widget._buildSharedWidgets()
    asked: list = []
    widget.modelPanel = types.SimpleNamespace(
        ensureModelReady=lambda fallback: asked.append(fallback) or True
    )
    deps = {"ok": True}
    monkeypatch.setattr(module_widget, "ensureDependencies", lambda: asked.append("deps") or deps["ok"])

    assert widget.readyToRun() is False and asked == []  # no parameter node
    widget._parameterNode = types.SimpleNamespace(inputVolume="ct")
    assert widget.currentVolume() == "ct"
    widget.busy.start("busy")
    assert widget.readyToRun() is False and asked == []  # work running
    widget.busy.stop("idle")
    deps["ok"] = False
    assert widget.readyToRun(fallbackModel=lambda: asked.append("library") or "m") is False
    assert asked == ["deps"]  # the library is not read before the dependencies are there
    deps["ok"], asked[:] = True, []
    assert widget.readyToRun(fallbackModel=lambda: asked.append("library") or "m") is True
    assert asked == ["deps", "library", "m"]
    asked.clear()
    assert widget.readyToRun(fallbackModel=lambda: None) is False and asked == ["deps"]  # unreadable
    asked.clear()
    assert widget.readyToRun(needsModel=False) is True and asked == ["deps"]

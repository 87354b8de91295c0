"""VoxelFMWidgets/dependencies.py against fakes of the Slicer APIs it calls, shaped like Slicer's real source:

- Slicer >= 5.12 ``slicer.packaging.pip_ensure(requirements, requester=...)`` (Base/Python/slicer/packaging.py:
  raises RuntimeError when declined, skips itself in testing mode) with ``load_requirements(path)``;
- Slicer 5.10/5.11: ``slicer.util.confirmOkCancelDisplay`` then ``slicer.util.pip_install(list)`` (one list item per
  requirement), never in testing mode;
- torch through PyTorchUtils ``installTorch(askConfirmation=True, torchVersionRequirement=">=X")`` (which skips its
  confirmation in testing mode, so VoxelFM must not call it there).
The file is loaded on its own (the package __init__ needs the Slicer application).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")

FILE = Path(__file__).resolve().parents[2] / "VoxelFMExtension" / "VoxelFMWidgets" / "dependencies.py"


class FakeApp:
    def __init__(self, testing: bool) -> None:
        self.testing = testing

    def testingEnabled(self) -> bool:
        return self.testing


@pytest.fixture
def widgets(monkeypatch, tmp_path):
    """(module, calls): dependencies.py with fake qt / slicer.app / slicer.util dialogs and pip."""
    calls: list[tuple] = []
    qt = types.SimpleNamespace(
        QApplication=types.SimpleNamespace(
            setOverrideCursor=lambda *a: calls.append(("cursor",)), restoreOverrideCursor=lambda: None
        ),
        Qt=types.SimpleNamespace(WaitCursor=3),
    )
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setattr(slicer, "app", FakeApp(False), raising=False)
    util = slicer.util
    monkeypatch.setattr(
        util, "confirmOkCancelDisplay", lambda *a, **k: calls.append(("confirm", a)) or True, raising=False
    )
    monkeypatch.setattr(
        util, "pip_install", lambda req, *a, **k: calls.append(("pip_install", req)), raising=False
    )
    monkeypatch.setattr(util, "errorDisplay", lambda *a, **k: calls.append(("error", a)), raising=False)
    monkeypatch.setattr(util, "infoDisplay", lambda *a, **k: calls.append(("info", a)), raising=False)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.10/5.11: no slicer.packaging
    spec = importlib.util.spec_from_file_location("voxelfm_widget_dependencies", FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.0\nsurely-not-installed-pkg-xyz>=1\nother-missing-pkg-xyz\n")
    from VoxelFMLib import dependencies

    monkeypatch.setattr(dependencies, "requirements_path", lambda: requirements)
    return module, calls


def test_old_slicer_confirms_then_pip_installs_a_list(widgets, monkeypatch):
    module, calls = widgets
    assert module.ensureRequirements() is False  # the fake pip installs nothing, so they are still missing
    kinds = [c[0] for c in calls]
    assert kinds.index("confirm") < kinds.index("pip_install")
    (installed,) = [c[1] for c in calls if c[0] == "pip_install"]
    assert installed == [
        "surely-not-installed-pkg-xyz>=1",
        "other-missing-pkg-xyz",
    ]  # list form, missing only
    assert any(c[0] == "error" and "still missing" in c[1][0] for c in calls)


def test_declined_or_testing_mode_installs_nothing(widgets, monkeypatch):
    module, calls = widgets
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *a, **k: False)
    assert module.ensureRequirements() is False and not [c for c in calls if c[0] == "pip_install"]
    monkeypatch.setattr(slicer, "app", FakeApp(True))
    assert module.ensureRequirements() is True and not [c for c in calls if c[0] == "pip_install"]


def test_new_slicer_uses_pip_ensure_with_the_requirements_file(widgets, monkeypatch):
    module, calls = widgets
    seen = {}

    def load_requirements(path):
        seen["path"] = path
        return ["parsed"]

    def pip_ensure(requirements, requester=None, **kwargs):
        seen["ensure"] = (requirements, requester)

    packaging = types.SimpleNamespace(load_requirements=load_requirements, pip_ensure=pip_ensure)
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    assert module.ensureRequirements() is True
    assert seen["ensure"] == (["parsed"], "VoxelFM") and seen["path"].endswith("requirements.txt")
    assert not [c for c in calls if c[0] in ("confirm", "pip_install")]  # pip_ensure asks itself

    def declined(requirements, requester=None, **kwargs):
        raise RuntimeError("User declined package installation")

    packaging.pip_ensure = declined
    assert module.ensureRequirements() is False


def test_torch_below_the_floor_goes_through_pytorchutils(widgets, monkeypatch):
    module, calls = widgets
    from VoxelFMLib import dependencies

    monkeypatch.setattr(dependencies, "TORCH_REQUIREMENT", ">=999")  # the installed torch is "too old"
    requested = []

    class Logic:
        def installTorch(self, askConfirmation=False, torchVersionRequirement=None):
            requested.append((askConfirmation, torchVersionRequirement))
            return object()  # installed, but (here) still below the floor

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    assert module.ensureTorch() is False
    assert requested == [(True, ">=999")]  # asks the user, with the floor
    assert any(c[0] == "error" and ">=999" in c[1][0] for c in calls)
    monkeypatch.setattr(slicer, "app", FakeApp(True))  # testing mode: PyTorchUtils would install unasked
    assert module.ensureTorch() is False and len(requested) == 1
    monkeypatch.setattr(dependencies, "TORCH_REQUIREMENT", ">=0.1")
    assert module.ensureTorch() is dependencies.torch_available()

"""Install what VoxelFM needs before the first torch call, with the user's consent (main thread only).

- torch: through the PyTorch extension (PyTorchUtils), which picks the build matching the user's CUDA; the
  version floor (VoxelFMLib.dependencies.TORCH_REQUIREMENT) is enforced also when an older torch is there
  (``installTorch(torchVersionRequirement=">=X")`` runs ``ltt install torch>=X``, which upgrades it; a torch
  already imported needs a restart). Not in testing mode: PyTorchUtils skips its confirmation there and would
  install unasked, so self-tests skip what needs torch instead.
- Resources/requirements.txt: ``slicer.packaging.pip_ensure`` on Slicer >= 5.12 (it prompts, raises
  RuntimeError when declined, skips in testing mode); on 5.10/5.11 ``slicer.util.confirmOkCancelDisplay``
  then ``slicer.util.pip_install([...])`` (list form: one argument per requirement, no shell quoting).
pip creates Qt objects, so none of this may run on the worker thread.
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from types import ModuleType

import qt
import slicer

REQUESTER = "VoxelFM"


def ensureDependencies() -> bool:
    """True when torch and the requirements are importable now; False if declined or a restart is needed."""
    return ensureTorch() and ensureRequirements()


def ensureTorch() -> bool:
    from VoxelFMLib import dependencies

    requirement = dependencies.TORCH_REQUIREMENT
    if dependencies.torch_satisfies(requirement):
        return True
    if slicer.app.testingEnabled():  # self-tests never change Python; they skip what needs torch
        logging.info("Testing mode: not installing PyTorch %s", requirement)
        return False
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(
            f"VoxelFM needs PyTorch {requirement}. Install the 'PyTorch' extension from the Extensions "
            "Manager, restart Slicer, and try again."
        )
        return False
    oldTorchLoaded = "torch" in sys.modules  # an upgrade cannot replace a torch already imported
    try:  # also upgrades a torch below the floor: light-the-torch installs "torch>=floor"
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True, torchVersionRequirement=requirement
        )
    except (subprocess.CalledProcessError, OSError, ImportError, RuntimeError) as exc:
        # RuntimeError: slicer.util's pip helpers raise "PythonSlicer executable not found" when Slicer's
        # Python launcher is missing (a broken or moved installation)
        slicer.util.errorDisplay(
            f"Installing PyTorch {requirement} failed: {exc}. If Slicer's Python launcher (PythonSlicer) is "
            "missing, reinstall Slicer; otherwise install PyTorch from the PyTorch extension's module and try again."
        )
        return False
    if torch is None:  # the user declined
        return False
    importlib.invalidate_caches()
    if not dependencies.torch_satisfies(requirement):
        found = dependencies.installed_version("torch") or "none"
        slicer.util.errorDisplay(f"VoxelFM needs PyTorch {requirement}, but {found} is installed.")
        return False
    if oldTorchLoaded:
        slicer.util.infoDisplay("PyTorch was updated. Restart Slicer to use the new version with VoxelFM.")
        return False
    return True


def ensureRequirements() -> bool:
    from VoxelFMLib import dependencies

    missing = dependencies.missing_requirements()
    if not missing:
        return True
    packaging = _slicerPackaging()
    if packaging is not None:
        try:
            packaging.pip_ensure(
                packaging.load_requirements(str(dependencies.requirements_path())), requester=REQUESTER
            )
        except RuntimeError as exc:  # declined in pip_ensure's dialog
            logging.info("VoxelFM dependencies not installed: %s", exc)
            return False
        except subprocess.CalledProcessError as exc:
            slicer.util.errorDisplay(f"Installing VoxelFM's Python packages failed: {exc}")
            return False
        return True
    return _pipInstallAfterConfirmation(missing)


def _slicerPackaging() -> ModuleType | None:
    """``slicer.packaging`` where it has pip_ensure and load_requirements (Slicer >= 5.12), else None."""
    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    if hasattr(packaging, "pip_ensure") and hasattr(packaging, "load_requirements"):
        return packaging
    return None


def _pipInstallAfterConfirmation(missing: list[str]) -> bool:
    """Slicer 5.10/5.11: ask, then slicer.util.pip_install with one list item per requirement."""
    from VoxelFMLib import dependencies

    if slicer.app.testingEnabled():  # like pip_ensure(skip_in_testing=True): tests never change Python
        logging.info("Testing mode: not installing %s", missing)
        return True
    if not slicer.util.confirmOkCancelDisplay(
        "VoxelFM needs these Python packages, which will be downloaded and installed now:\n\n"
        + "\n".join(missing),
        "VoxelFM: install Python packages",
    ):
        return False
    qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        slicer.util.pip_install(list(missing))
    except (subprocess.CalledProcessError, RuntimeError) as exc:  # RuntimeError: PythonSlicer not found
        slicer.util.errorDisplay(f"Installing VoxelFM's Python packages failed: {exc}")
        return False
    finally:
        qt.QApplication.restoreOverrideCursor()
    importlib.invalidate_caches()
    still = dependencies.missing_requirements()
    if still:
        slicer.util.errorDisplay("These Python packages are still missing: " + ", ".join(still))
        return False
    return True

"""Qt-free helpers the widgets use: worker thread, PCA colour volume, requirements and torch floor, job command lines.

The auto-refit state machine and the job runner have their own files (test_widgets_*.py).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)


from slicer_builders import (  # noqa: E402
    oblique_flipped_matrix,
)

from voxelfm.errors import CancelledError, InputError  # noqa: E402
from VoxelFMLib import volume_nodes  # noqa: E402

pytestmark = pytest.mark.slicer


# ---------------------------------------------------------------- Qt-free helpers used by the widgets


def test_worker_runs_off_thread_pumps_and_relays_progress():
    from VoxelFMLib import worker as background

    main = threading.get_ident()
    seen = {}
    pumps = []
    updates = []

    def job(x, progress, cancel):
        seen["thread"] = threading.get_ident()
        seen["thread_object"] = threading.current_thread()
        for i in range(3):
            progress((i + 1) / 3, f"step {i}")
            threading.Event().wait(0.05)
        return x * 2

    relay = background.ProgressRelay()
    out = background.run_pumping(
        job,
        21,
        pump=lambda: pumps.append(1),
        on_progress=lambda f, m: updates.append((f, m)),
        relay=relay,
        progress=relay,
        cancel=None,
    )
    assert out == 42 and seen["thread"] != main and pumps
    assert updates[-1] == (1.0, "step 2")
    # the same persistent thread serves the next job; exceptions come back to the caller
    second = {}
    background.run_pumping(lambda: second.setdefault("t", threading.get_ident()))
    assert second["t"] == seen["thread"]
    with pytest.raises(CancelledError):
        background.run_pumping(lambda: (_ for _ in ()).throw(CancelledError("stop")))
    # after shutdown (module reload) the next job gets a fresh worker thread
    background.shutdown()
    third = {}
    background.run_pumping(lambda: third.setdefault("t", threading.current_thread()))
    assert third["t"] is not seen["thread_object"] and third["t"].name.startswith("VoxelFM-worker")


def test_pca_colour_volume(mrml_scene):
    from VoxelFMLib import feature_display

    rng = np.random.default_rng(1)
    patch = rng.normal(size=(3, 4, 5, 24)).astype(np.float32)
    patch[:, :, :2] += 5.0  # two groups of cells: the first component must separate them
    rgb = feature_display.pca_rgb(patch)
    assert rgb.shape == (3, 4, 5, 3) and rgb.dtype == np.uint8
    assert abs(float(rgb[:, :, :2, 0].mean()) - float(rgb[:, :, 2:, 0].mean())) > 150
    grid_to_ras = oblique_flipped_matrix(spacing=(14.0, 14.0, 14.0))
    node = feature_display.create_rgb_volume_node(mrml_scene, rgb, grid_to_ras)
    assert node.IsA("vtkMRMLVectorVolumeNode")
    assert node.GetImageData().GetDimensions() == (5, 4, 3)
    assert node.GetImageData().GetNumberOfScalarComponents() == 3
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), rgb)
    np.testing.assert_allclose(volume_nodes.node_ijk_to_ras(node), grid_to_ras, atol=1e-12)
    with pytest.raises(InputError):
        feature_display.pca_rgb(patch[0])


def test_missing_requirements(tmp_path):
    from VoxelFMLib import dependencies

    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nnumpy>=1.0\nnumpy<0.1\nsurely-not-installed-pkg-xyz>=1\n--index-url x\n\n")
    assert dependencies.read_requirements(req) == [
        "numpy>=1.0",
        "numpy<0.1",
        "surely-not-installed-pkg-xyz>=1",
    ]
    assert dependencies.missing_requirements(req) == ["numpy<0.1", "surely-not-installed-pkg-xyz>=1"]
    shipped = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"
    assert dependencies.missing_requirements(shipped) == []  # the test venv has everything


def test_torch_version_floor():
    from VoxelFMLib import dependencies

    installed = dependencies.installed_version("torch")
    assert dependencies.torch_available() == (installed is not None)
    if installed is not None:  # metadata only: an old torch is never imported just to read its version
        assert dependencies.torch_satisfies(">=0.1")
        assert dependencies.torch_satisfies(dependencies.TORCH_REQUIREMENT)
    assert not dependencies.torch_satisfies(">=999")
    assert dependencies.installed_version("surely-not-installed-pkg-xyz") is None


def test_requirement_checks_without_packaging(monkeypatch):
    """Old Slicer Pythons may lack `packaging`: a >= floor is still enforced, other specifiers need presence."""
    from VoxelFMLib import dependencies

    monkeypatch.setitem(sys.modules, "packaging.requirements", None)  # makes the import fail
    assert dependencies.is_satisfied("numpy>=1.0")
    assert not dependencies.is_satisfied("numpy>=999")
    assert not dependencies.is_satisfied("surely-not-installed-pkg-xyz>=1")
    assert dependencies.is_satisfied("numpy<0.1")  # presence only, documented
    assert dependencies._version_tuple("2.3.1+cu121") == (2, 3, 1)
    assert dependencies._version_tuple("2.5.0rc1") == (2, 5, 0)
    assert dependencies._version_tuple("2.10") > dependencies._version_tuple("2.9.1")


def test_job_command_line(tmp_path):
    from VoxelFMLib import jobs

    train = Path(__file__).resolve().parents[2] / "VoxelFMTraining"
    assert jobs.cli_script(train) == train / "voxelfm_cli.py"
    (tmp_path / "VoxelFMScripts").mkdir()
    (tmp_path / "VoxelFMScripts" / "voxelfm_cli.py").write_text("")
    assert jobs.cli_script(tmp_path) == tmp_path / "VoxelFMScripts" / "voxelfm_cli.py"
    with pytest.raises(InputError):
        jobs.cli_script(tmp_path / "nowhere")
    args = jobs.job_arguments("cli.py", "pretrain", "--config 'my run.yaml' --epochs 2")
    assert args == ["cli.py", "pretrain", "--config", "my run.yaml", "--epochs", "2"]
    with pytest.raises(InputError, match="quotes"):
        jobs.job_arguments("cli.py", "pretrain", "--config 'unclosed")
    with pytest.raises(InputError):
        jobs.job_arguments("cli.py", "--help")

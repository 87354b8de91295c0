"""pytest plugin: a real MRML scene from the slicer-core wheel (no Slicer application needed).

Built like the application does it: application logic + colour logic with the default colour tables +
the Volumes / Segmentations / Markups module logics registered, and ``slicer.mrmlScene`` set to the
scene so ``slicer.util`` helpers work. The scene is cleared and the previous ``slicer.mrmlScene``
restored after each test. Skips when slicer-core is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest


def _slicer_core():
    slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core (no vtkMRMLScene)")
    return slicer


@pytest.fixture
def mrml_scene():
    slicer = _slicer_core()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", color_logic)
    module_logics = {
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "Markups": slicer.vtkSlicerMarkupsLogic(),
    }
    for name, logic in module_logics.items():
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    try:
        yield scene
    finally:
        scene.Clear(True)
        for logic in module_logics.values():
            logic.SetMRMLScene(None)
        if previous is None:
            del slicer.mrmlScene
        else:
            slicer.mrmlScene = previous


@pytest.fixture
def volume_node(mrml_scene):
    """A small random CT-like volume node on an oblique, flipped (det < 0) grid."""
    from slicer_builders import SHAPE, oblique_flipped_matrix

    from voxelfm.imaging.volume import Volume
    from VoxelFMLib import volume_nodes

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(0, 100, SHAPE).astype(np.float32), oblique_flipped_matrix(), "ct")
    return volume_nodes.create_volume_node(mrml_scene, vol)

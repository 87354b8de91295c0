"""pytest plugin: the Slicer-logic tests run in two real MRML scenes, a bare one and a Slicer application's.

- "bare": built here like the application does it (application logic, colour logic with the default colour
  tables, the Volumes / Segmentations / Markups module logics, a segment editor logic with its undo history);
  slicer-core wheel only.
- "slicer_app": trame-slicer's ``SlicerApp`` (PyPI ``trame-slicer``): the scene a Slicer application builds,
  with the Colors, Volumes, Terminologies, Segmentations, SubjectHierarchy, Data and Markups logics and its
  segment editor. Skipped where trame-slicer is not installed (``.ci/run`` runs these tests in a second venv
  that has it, pinned to the slicer-core / vtk versions it needs).

``mrml_scene`` is parametrised over both, so every test using it (or ``a_slicer_app`` / ``a_volume`` /
``a_painted_segmentation``) runs in both scenes. One SlicerApp per session (it takes seconds to build); the
scene is cleared after each test and ``slicer.mrmlScene`` restored.
"""

from __future__ import annotations

import numpy as np
import pytest

SCENE_KINDS = ("bare", "slicer_app")
GENERAL_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
# Real entries of Slicer's "3D Slicer General Anatomy list", serialized by vtkSlicerTerminologiesModuleLogic
# (FindTypeInTerminologyBy3dSlicerLabel + SerializeTerminologyEntry); used where no terminology logic is loaded.
KNOWN_TERMINOLOGY = {
    "liver": GENERAL_ANATOMY + "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^~~^^~^^",
    "spleen": GENERAL_ANATOMY + "~SCT^123037004^Anatomical Structure~SCT^78961009^Spleen~^^~~^^~^^",
}


def require_slicer_core(*also: str):
    """The ``slicer`` module, or skip (the calling test, or the whole test module at its top) unless it is
    slicer-core (a ``slicer`` with vtkMRMLScene) and the modules ``also`` are installed."""
    slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip(
            "the installed 'slicer' package is not slicer-core (no vtkMRMLScene)", allow_module_level=True
        )
    for name in also:
        pytest.importorskip(name)
    return slicer


class SceneKit:
    """One test scene and what a user's session has in it: volumes logic, segment editor logic (+ history)."""

    def __init__(self, kind: str, scene, volumes_logic, editor_logic, app=None, terminologies_logic=None):
        self.kind = kind
        self.scene = scene
        self.volumes_logic = volumes_logic
        self.editor_logic = editor_logic
        self.app = app
        self.terminologies_logic = terminologies_logic

    def terminology(self, label: str) -> str:
        """A real terminology entry for a 3D Slicer label ("liver"): from the loaded terminologies if any."""
        if self.terminologies_logic is None:
            return KNOWN_TERMINOLOGY[label]
        import slicer

        entry = slicer.vtkSlicerTerminologyEntry()
        assert self.terminologies_logic.FindTypeInTerminologyBy3dSlicerLabel(GENERAL_ANATOMY, label, entry)
        return self.terminologies_logic.SerializeTerminologyEntry(entry)

    def load_volume(self, volume, folder, name: str = "ct"):
        """Write ``volume`` to NRRD, then load it through the Volumes logic like File > Add data."""
        import slicer

        from VoxelFMLib import volume_nodes
        from VoxelFMLib.scene_guard import temporary_nodes

        path = folder / f"{name}.nrrd"
        with temporary_nodes(self.scene):
            node = volume_nodes.create_volume_node(self.scene, volume, name="to write")
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(str(path))
            assert storage.WriteData(node)
        loaded = self.volumes_logic.AddArchetypeVolume(str(path), name)
        assert loaded is not None, f"volumes logic could not load {path}"
        return loaded

    def paint(self, segmentation_node, volume_node, masks: dict, colors=None, terminology=True) -> list[str]:
        """Paint one segment per mask through the segment editor logic, one undo state per stroke (as the Paint
        effect does); segments share one labelmap layer (values 1, 2, 3 ...). Returns the new segment ids."""
        ids = []
        for n, (name, mask) in enumerate(masks.items()):
            color = colors[n] if colors else (0.1 * (n + 1), 0.5, 0.9)
            segment_id = self._add_segment(segmentation_node, volume_node, name, color)
            segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
            if terminology and name in KNOWN_TERMINOLOGY:
                segment.SetTerminology(self.terminology(name))
            self.stroke(segmentation_node, segment_id, mask)
            ids.append(segment_id)
        return ids

    def stroke(self, segmentation_node, segment_id: str, mask: np.ndarray) -> None:
        """One paint stroke: save an undo state, then add ``mask`` (on the volume grid) to the segment."""
        logic = self.editor_logic
        logic.SaveStateForUndo()
        logic.ResetModifierLabelmapToDefault()
        modifier = logic.GetModifierLabelmap()
        _fill(modifier, mask)
        if self.app is not None:  # trame-slicer's segment modifier (what its Paint effect applies)
            editor = self.app.segmentation_editor
            editor.set_active_segment_id(segment_id)
            editor.active_segment_modifier.apply_labelmap(modifier, segment_id=segment_id)
        else:
            logic.ModifySegmentByLabelmap(
                segmentation_node, segment_id, modifier, logic.ModificationModeAdd, True, False
            )

    def _add_segment(self, segmentation_node, volume_node, name, color) -> str:
        if self.app is not None:
            editor = self.app.segmentation_editor
            if editor.active_segmentation_node is not segmentation_node:
                editor.set_active_segmentation(segmentation_node, volume_node)
            segment_id = editor.add_empty_segment(segment_name=name, segment_color=list(color))
        else:
            logic = self.editor_logic
            if logic.GetSegmentationNode() is not segmentation_node:
                segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
                logic.SetSegmentationNode(segmentation_node)
                logic.SetSourceVolumeNode(volume_node)
            segment_id = logic.AddEmptySegment()
            segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
            segment.SetName(name)
            segment.SetColor(*color)
        return segment_id


def _fill(image, mask: np.ndarray) -> None:
    from vtk.util import numpy_support

    extent = image.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    assert shape == mask.shape, f"modifier labelmap {shape} is not on the volume grid {mask.shape}"
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)
    array[:] = np.asarray(mask, dtype=array.dtype)
    image.Modified()


def _editor_logic(slicer, scene):
    """A segment editor logic (with its default undo history), as Slicer's Segment Editor widget has."""
    editor_node = slicer.vtkMRMLSegmentEditorNode()
    editor_node.SetSingletonOn()
    scene.AddNode(editor_node)
    logic = slicer.vtkSlicerSegmentEditorLogic()
    logic.SetMRMLScene(scene)
    logic.SetSegmentEditorNode(editor_node)
    return logic


def _bare_kit(slicer):
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    color_logic = app_logic.GetColorLogic()
    color_logic.SetMRMLScene(scene)
    color_logic.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", color_logic)
    logics = {
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "Markups": slicer.vtkSlicerMarkupsLogic(),
    }
    for name, logic in logics.items():
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
    editor = _editor_logic(slicer, scene)
    kit = SceneKit("bare", scene, logics["Volumes"], editor)
    kit._keep = (app_logic, logics)  # the logics live as long as the scene
    return kit


_APP_KIT: SceneKit | None = None


def _app_kit(slicer) -> SceneKit:
    """One trame-slicer SlicerApp per test session (building it takes seconds)."""
    global _APP_KIT
    if _APP_KIT is None:
        core = pytest.importorskip("trame_slicer.core", reason="trame-slicer not installed (see .ci/run)")
        app = core.SlicerApp()
        editor_logic = app.segmentation_editor.editor_logic
        # trame-slicer keeps its own undo stack; Slicer's Segment Editor uses vtkSegmentationHistory: give the
        # app's (real) segment editor logic one, as qMRMLSegmentEditorWidget does.
        editor_logic.SetSegmentationHistory(slicer.vtkSegmentationHistory())
        _APP_KIT = SceneKit(
            "slicer_app", app.scene, app.volumes_logic, editor_logic, app, app.terminologies_logic
        )
    return _APP_KIT


@pytest.fixture(params=SCENE_KINDS)
def a_slicer_app(request):
    """The scene kit of this test's scene kind; ``slicer.mrmlScene`` is its scene while the test runs."""
    slicer = require_slicer_core()
    kit = _bare_kit(slicer) if request.param == "bare" else _app_kit(slicer)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = kit.scene
    try:
        yield kit
    finally:
        if kit.app is not None:
            kit.app.segmentation_editor.deactivate_effect()
            kit.editor_logic.SetSegmentationNode(None)
            kit.scene.Clear(0)  # keeps the application's singletons (editor node, colour tables, ...)
        else:
            kit.editor_logic.SetSegmentationNode(None)
            kit.scene.Clear(True)
            for logic in kit._keep[1].values():
                logic.SetMRMLScene(None)
        if previous is None:
            del slicer.mrmlScene
        else:
            slicer.mrmlScene = previous


@pytest.fixture
def mrml_scene(a_slicer_app):
    return a_slicer_app.scene


@pytest.fixture
def volume_node(mrml_scene):
    """A small random CT-like volume node on an oblique, flipped (det < 0) grid."""
    from slicer_builders import SHAPE, oblique_flipped_matrix

    from voxelfm.imaging.volume import Volume
    from VoxelFMLib import volume_nodes

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(0, 100, SHAPE).astype(np.float32), oblique_flipped_matrix(), "ct")
    return volume_nodes.create_volume_node(mrml_scene, vol)


@pytest.fixture
def a_volume(a_slicer_app, tmp_path):
    """The same kind of volume, loaded from a NRRD file through the Volumes logic."""
    from slicer_builders import SHAPE, oblique_flipped_matrix

    from voxelfm.imaging.volume import Volume

    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(0, 100, SHAPE).astype(np.float32), oblique_flipped_matrix(), "ct")
    return a_slicer_app.load_volume(vol, tmp_path, "ct")


@pytest.fixture
def a_painted_segmentation(a_slicer_app, a_volume):
    """'liver' and 'spleen' painted through the segment editor on two slices (one shared labelmap layer)."""
    from slicer_builders import painted_masks

    liver, spleen = painted_masks()
    node = a_slicer_app.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
    node.CreateDefaultDisplayNodes()
    a_slicer_app.paint(node, a_volume, {"liver": liver, "spleen": spleen})
    return node

"""Auto-refit state machine (VoxelFMLib.auto_refit): fakes for the timer and fit, real MRML for the events."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

import vtk  # noqa: E402
from slicer_builders import SHAPE, add_segmentation, oblique_flipped_matrix  # noqa: E402

from VoxelFMLib import volume_nodes  # noqa: E402
from VoxelFMLib.auto_refit import CONTENT_EVENTS, AutoRefit  # noqa: E402


class FakeTimer:
    """Single-shot timer: records starts; ``fire()`` plays the timeout if it is running."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.stops = 0
        self.running = False
        self.on_timeout = lambda: None

    def start(self, milliseconds: int) -> None:
        self.starts.append(milliseconds)
        self.running = True

    def stop(self) -> None:
        self.stops += 1
        self.running = False

    def fire(self) -> None:
        if self.running:
            self.running = False
            self.on_timeout()


@pytest.fixture
def machine():
    timer = FakeTimer()
    fits: list[int] = []
    refit = AutoRefit(timer, fit=lambda: fits.append(1), enabled=True, delay_s=1.5)
    timer.on_timeout = refit.timeout
    return refit, timer, fits


def test_paint_restarts_the_countdown_and_fits_once_when_painting_pauses(machine):
    refit, timer, fits = machine
    for _ in range(3):
        refit.content_changed()
    assert timer.starts == [1500, 1500, 1500] and timer.running
    timer.fire()
    assert fits == [1]
    timer.fire()  # single shot: nothing more
    assert fits == [1]


def test_disabled_ignores_paint_and_turning_off_drops_what_is_pending(machine):
    refit, timer, fits = machine
    refit.configure(False, 2.0)
    refit.content_changed()
    assert timer.starts == []
    refit.configure(True, 0.5)
    refit.content_changed()
    assert timer.starts == [500]
    refit.configure(False, 0.5)
    assert not timer.running
    refit.timeout()  # a timeout already queued when it was switched off
    assert fits == []


def test_our_own_writes_are_ignored(machine):
    refit, timer, _ = machine
    with refit.writing():
        refit.content_changed()
        with refit.writing():  # nested guards
            refit.content_changed()
        refit.content_changed()
    assert timer.starts == []
    refit.content_changed("caller", "event")  # VTK observer arguments are accepted
    assert timer.starts == [1500]


def test_paint_during_a_fit_fits_again_exactly_once_after_it(machine):
    refit, timer, fits = machine
    refit.content_changed()
    timer.fire()  # fit starts ...
    with refit.fitting():
        refit.content_changed()  # ... user paints while it runs
        refit.content_changed()
        assert not timer.running and refit.pending
    assert timer.starts == [1500, 1500] and timer.running  # one countdown after the fit
    timer.fire()
    assert len(fits) == 2
    with refit.fitting():
        pass
    assert timer.starts == [1500, 1500]  # nothing painted during the second fit: no third


def test_timeout_during_a_fit_waits_for_its_end(machine):
    refit, timer, fits = machine
    refit.fit_started()
    refit.timeout()
    assert fits == [] and refit.pending
    refit.fit_finished()
    timer.fire()
    assert fits == [1]


def test_a_manual_fit_absorbs_pending_paint_and_failures_still_end_the_fit(machine):
    refit, timer, fits = machine
    refit.content_changed()
    with pytest.raises(RuntimeError), refit.fitting():  # the user pressed Fit; it failed
        assert not timer.running  # the pending countdown was absorbed by this fit
        raise RuntimeError("fit failed")
    assert not refit.busy and not timer.running and fits == []


def test_scene_close_forgets_everything_pending(machine):
    refit, timer, fits = machine
    refit.fit_started()
    refit.content_changed()
    refit.scene_closed()
    refit.fit_finished()
    assert not timer.running and fits == []


# ---------------------------------------------------------------- which MRML events count (real scene)


@pytest.fixture
def observed(mrml_scene):
    """A painted segmentation whose CONTENT_EVENTS feed an AutoRefit with a fake timer."""
    m = oblique_flipped_matrix()
    mask = np.zeros(SHAPE, bool)
    mask[2, 1:5, 2:6] = True
    node = add_segmentation(mrml_scene, {"liver": mask}, m)
    timer = FakeTimer()
    refit = AutoRefit(timer, fit=lambda: None, enabled=True)
    tags = [node.AddObserver(event, refit.content_changed) for event in CONTENT_EVENTS]
    yield node, timer, m
    for tag in tags:
        node.RemoveObserver(tag)


def _segment(node):
    seg = node.GetSegmentation()
    sid = seg.GetNthSegmentID(0)
    return sid, seg.GetSegment(sid)


def test_content_events_are_the_documented_ones():
    S = slicer.vtkSegmentation
    assert set(CONTENT_EVENTS) == {S.SourceRepresentationModified, S.SegmentAdded, S.SegmentRemoved}
    assert S.SegmentModified not in CONTENT_EVENTS and S.RepresentationModified not in CONTENT_EVENTS


def test_rename_recolour_and_3d_surface_do_not_refit(observed):
    node, timer, _ = observed
    sid, segment = _segment(node)
    other_events = []  # what a naive observer (the old PAINT_EVENTS) would have reacted to
    naive = [slicer.vtkSegmentation.SegmentModified, slicer.vtkSegmentation.RepresentationModified]
    tags = [node.AddObserver(e, lambda caller, event: other_events.append(event)) for e in naive]
    segment.SetName("renamed liver")
    segment.SetColor(0.9, 0.1, 0.1)
    node.CreateClosedSurfaceRepresentation()  # the 3D view's "Show 3D"
    node.GetDisplayNode().SetSegmentVisibility(sid, False)
    for tag in tags:
        node.RemoveObserver(tag)
    assert len(other_events) >= 3  # the changes did raise segmentation events ...
    assert timer.starts == []  # ... but none that means "the labels changed"


def test_painting_refits(observed, mrml_scene):
    node, timer, m = observed
    sid, _ = _segment(node)
    painted = np.zeros(SHAPE, np.uint8)
    painted[5, 2:6, 3:7] = 1
    lab = volume_nodes.create_labelmap_node(mrml_scene, painted, m, name="stroke")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(sid)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(lab, node, ids)
    mrml_scene.RemoveNode(lab)
    assert len(timer.starts) >= 1


def test_segment_editor_style_write_refits(observed):
    """The Segment Editor's effects write through SetBinaryLabelmapToSegment."""
    node, timer, _ = observed
    sid, segment = _segment(node)
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    stroke = slicer.vtkOrientedImageData()
    stroke.DeepCopy(segment.GetRepresentation(name))
    logic.SetBinaryLabelmapToSegment(stroke, node, sid, logic.MODE_MERGE_MAX)
    assert timer.starts == []  # the same voxels again: no content change, no event
    stroke.SetScalarComponentFromFloat(*stroke.GetExtent()[::2], 0, 0)  # erase one voxel
    logic.SetBinaryLabelmapToSegment(stroke, node, sid, logic.MODE_REPLACE)
    assert len(timer.starts) >= 1


def test_adding_and_removing_segments_refits(observed):
    node, timer, _ = observed
    new_id = node.GetSegmentation().AddEmptySegment("", "spleen")
    assert len(timer.starts) == 1
    node.GetSegmentation().RemoveSegment(new_id)
    assert len(timer.starts) >= 2


def test_observed_events_count_only_when_the_content_stamp_changes(machine, monkeypatch):
    """SegmentModified (Undo/Redo, but also rename or colour) is judged by the content stamp."""
    from VoxelFMLib import auto_refit

    refit, timer, _ = machine
    stamps = {"value": ("a", 1)}
    monkeypatch.setattr(auto_refit, "content_stamp", lambda node: stamps["value"])
    refit.watch(object())
    refit.segmentation_event("caller", "event")  # e.g. a rename: same stamp
    assert timer.starts == []
    stamps["value"] = ("a", 2)  # e.g. Undo restored other voxels
    refit.segmentation_event()
    refit.segmentation_event()  # the same change reported twice counts once
    assert timer.starts == [1500]
    refit.watch(None)  # no segmentation: events are ignored
    stamps["value"] = ("b", 3)
    refit.segmentation_event()
    assert timer.starts == [1500]
    assert set(auto_refit.CONTENT_EVENTS) < set(auto_refit.OBSERVED_EVENTS)
    assert slicer.vtkSegmentation.SegmentModified in auto_refit.OBSERVED_EVENTS

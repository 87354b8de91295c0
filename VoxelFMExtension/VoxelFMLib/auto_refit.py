"""When to refit the few-shot probe automatically: a small Qt-free state machine.

The Segment module restarts a countdown on every CONTENT change of the painted segmentation and fits when
painting pauses. ``SourceRepresentationModified``, ``SegmentAdded`` and ``SegmentRemoved`` mean content;
``SegmentModified`` is ambiguous: the Segment Editor's Undo/Redo raise only it (and they restore voxels), but
so do rename, colour change and 3D surface generation (which must not start a fit). So every observed event
is checked against ``segment_tags.content_stamp`` (``watch(node)``): only a changed stamp counts.
``RepresentationModified`` is not observed (it accompanies the others). Our own writes are ignored
(``writing()``), paint that arrives during a fit starts exactly one more fit after it ends, and closing the
scene forgets everything pending.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import slicer

from VoxelFMLib.segment_tags import content_stamp
from VoxelFMLib.timer import Timer

# Events of vtkMRMLSegmentationNode (it forwards its vtkSegmentation's events) that mean "the labels changed".
CONTENT_EVENTS: tuple[int, ...] = (
    slicer.vtkSegmentation.SourceRepresentationModified,
    slicer.vtkSegmentation.SegmentAdded,
    slicer.vtkSegmentation.SegmentRemoved,
)
# What the Segment module observes: the content events + SegmentModified, filtered by the content stamp.
OBSERVED_EVENTS: tuple[int, ...] = (*CONTENT_EVENTS, slicer.vtkSegmentation.SegmentModified)
DEFAULT_DELAY_S = 1.5


@dataclass
class AutoRefit:
    """Debounced refit: ``content_changed()`` per event, ``timeout()`` when the timer fires.

    The owner reports every fit it runs (automatic or not) with ``fit_started()`` / ``fit_finished()``,
    so a manual fit also absorbs pending paint and paint during any fit is not lost.
    """

    timer: Timer
    fit: Callable[[], None]
    enabled: bool = False
    delay_s: float = DEFAULT_DELAY_S
    busy: bool = field(default=False, init=False)
    pending: bool = field(default=False, init=False)  # content changed during a fit
    _writing: int = field(default=0, init=False)
    _stamp: Callable[[], Hashable] | None = field(default=None, init=False)
    _last_stamp: Hashable = field(default=None, init=False)

    def watch(self, segmentation_node: Any) -> None:
        """Judge later ``segmentation_event`` calls by the content stamp of this node (None: stop)."""
        self._stamp = (lambda: content_stamp(segmentation_node)) if segmentation_node is not None else None
        self._last_stamp = self._stamp() if self._stamp else None

    def segmentation_event(self, *_event) -> None:
        """Any observed event of the watched segmentation: a content change only if the stamp changed."""
        if self._stamp is None:
            return
        stamp = self._stamp()
        if stamp == self._last_stamp:
            return
        self._last_stamp = stamp
        self.content_changed()

    def configure(self, enabled: bool, delay_s: float) -> None:
        """Apply the user's settings; turning auto-refit off drops anything pending."""
        self.enabled = bool(enabled)
        self.delay_s = float(delay_s)
        if not self.enabled:
            self.timer.stop()
            self.pending = False

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Changes made inside this block are our own (prediction written, temporary nodes): ignore them."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1

    def content_changed(self, *_event) -> None:
        """A content event of the observed segmentation (extra arguments: VTK's caller, event)."""
        if self._writing or not self.enabled:
            return
        if self.busy:
            self.pending = True
            return
        self.timer.start(self._delay_ms())

    def timeout(self) -> None:
        """The countdown elapsed: fit now, or once the running fit ends."""
        if not self.enabled:
            return
        if self.busy:
            self.pending = True
            return
        self.fit()

    @contextmanager
    def fitting(self) -> Iterator[None]:
        """``fit_started()`` ... ``fit_finished()`` around any fit or probe application, even one that fails."""
        self.fit_started()
        try:
            yield
        finally:
            self.fit_finished()

    def fit_started(self) -> None:
        self.busy = True
        self.pending = False
        self.timer.stop()

    def fit_finished(self) -> None:
        """A fit ended (success or failure): one more fit if the labels changed meanwhile."""
        self.busy = False
        if self.pending and self.enabled:
            self.pending = False
            self.timer.start(self._delay_ms())

    def scene_closed(self) -> None:
        self.timer.stop()
        self.pending = False

    def _delay_ms(self) -> int:
        return max(0, int(round(self.delay_s * 1000)))

"""One long operation at a time per module: progress bar, status line, cancel event, worker thread.

Torch work runs on VoxelFM's single persistent worker thread (VoxelFMLib.worker) while the main thread
pumps Qt events, so the GUI stays alive and Cancel works; MRML is only touched on the main thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import slicer

from VoxelFMWidgets.messages import userMessage

T = TypeVar("T")


class BusyState:
    """Progress bar + status label + cancel event of one long operation, updated on the main thread."""

    def __init__(self, progressBar, statusLabel, onChange: Callable[[], None] | None = None) -> None:
        self.progressBar = progressBar
        self.statusLabel = statusLabel
        self.onChange = onChange or (lambda: None)  # e.g. the widget's updateGUI (enable/disable buttons)
        self.cancel = threading.Event()
        self.running = False
        self.progressBar.setVisible(False)

    def start(self, message: str) -> None:
        self.cancel.clear()
        self.running = True
        self.progressBar.setValue(0)
        self.progressBar.setVisible(True)
        self.statusLabel.setText(message)
        self.onChange()

    def progress(self, fraction: float, message: str = "") -> None:
        self.progressBar.setValue(int(round(100 * max(0.0, min(1.0, float(fraction))))))
        if message:
            self.statusLabel.setText(message)

    def pumpingProgress(self, fraction: float, message: str = "") -> None:
        """Progress for work that must stay on the main thread (it touches MRML): keeps Cancel clickable."""
        self.progress(fraction, message)
        slicer.app.processEvents()

    def stop(self, message: str) -> None:
        self.running = False
        self.progressBar.setVisible(False)
        self.statusLabel.setText(message)
        self.onChange()

    def requestCancel(self) -> None:
        if self.running:
            self.cancel.set()
            self.statusLabel.setText("Cancelling...")

    @contextmanager
    def operation(self, message: str, what: str) -> Iterator[BusyState]:
        """Run a block as the current operation; a failure is logged and shown, never raised into Qt."""
        self.start(message)
        try:
            yield self
        except Exception as exc:  # the user sees one line, the log has the trace
            logging.exception("VoxelFM: %s failed", what)
            self.stop(f"{what} failed: {userMessage(exc)}")
        finally:
            if self.running:
                self.stop(self.statusLabel.text)


def runInWorker(busy: BusyState, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, progress=..., cancel=..., **kwargs)`` on the VoxelFM worker thread, GUI kept alive."""
    from VoxelFMLib.worker import ProgressRelay, run_pumping

    relay = ProgressRelay()
    return run_pumping(
        fn,
        *args,
        pump=slicer.app.processEvents,
        on_progress=busy.progress,
        relay=relay,
        progress=relay,
        cancel=busy.cancel,
        **kwargs,
    )

"""The one timer shape the Qt-free state machines need (auto-refit, job stop grace period).

In Slicer it is a single-shot ``qt.QTimer`` (whose ``start(msec)`` and ``stop()`` match); in tests a fake.
The owner connects the timer's timeout to the state machine's timeout method.
"""

from __future__ import annotations

from typing import Protocol


class Timer(Protocol):
    def start(self, milliseconds: int) -> None:
        """(Re)start the countdown; a running countdown starts over."""

    def stop(self) -> None:
        """Cancel the countdown if it runs."""

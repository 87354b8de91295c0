"""Progress reporting and cancellation shared by every long-running operation.

Long work takes ``progress(fraction, message)`` and a ``cancel`` object with ``is_set()`` (a
``threading.Event`` works). Headless callers wrap it in tqdm, the GUI in a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .errors import CancelledError

ProgressFn = Callable[[float, str], None]


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


def no_progress(fraction: float, message: str) -> None:
    """Default progress callback: does nothing."""


def check_cancel(cancel: CancelFlag | None) -> None:
    """Raise CancelledError if the user asked to stop."""
    if cancel is not None and cancel.is_set():
        raise CancelledError("Cancelled by the user.")


class TqdmProgress:
    """Adapter from progress(fraction, message) to a tqdm bar (headless use)."""

    def __init__(self, desc: str = "", disable: bool | None = None) -> None:
        from tqdm.auto import tqdm  # headless bars only; `voxelfm --help` and Slicer never load tqdm

        self._bar = tqdm(
            total=1000, desc=desc, disable=disable, bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}"
        )

    def __call__(self, fraction: float, message: str) -> None:
        self._bar.n = int(max(0.0, min(1.0, fraction)) * 1000)
        self._bar.set_postfix_str(message, refresh=True)

    def close(self) -> None:
        self._bar.close()

"""Run long torch work off the GUI thread without Qt: one persistent worker + a pumped wait.

All torch work goes to ONE long-lived thread (cuDNN plan caches and CUDA streams are per thread, so
reusing the thread keeps later calls fast). The main thread waits by calling ``pump()`` (in Slicer:
``slicer.app.processEvents``) every ``interval`` seconds, so the GUI stays responsive and can set the
cancel event. Progress from the worker goes through ``ProgressRelay`` and is read on the main thread;
the worker never touches widgets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin before Python 3.11
from typing import Any, TypeVar

from voxelfm.lazy import ProcessWide

T = TypeVar("T")

_WORKER: ProcessWide[ThreadPoolExecutor] = ProcessWide(
    lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="VoxelFM-worker")
)


def worker() -> ThreadPoolExecutor:
    """The process-wide single worker thread (created on first use)."""
    return _WORKER.get()


def shutdown() -> None:
    """Let the worker thread end once idle; the next ``worker()`` starts a new one (used on module reload)."""
    _WORKER.reset(lambda executor: executor.shutdown(wait=False))


class ProgressRelay:
    """progress(fraction, message) callable safe to call from the worker; read with ``latest()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: tuple[float, str] | None = None
        self._changed = False

    def __call__(self, fraction: float, message: str) -> None:
        with self._lock:
            self._value = (float(fraction), str(message))
            self._changed = True

    def latest(self) -> tuple[float, str] | None:
        """The newest value if it changed since the last call, else None."""
        with self._lock:
            if not self._changed:
                return None
            self._changed = False
            return self._value


def run_pumping(
    fn: Callable[..., T],
    *args: Any,
    pump: Callable[[], None] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
    relay: ProgressRelay | None = None,
    interval: float = 0.03,
    **kwargs: Any,
) -> T:
    """Run ``fn(*args, **kwargs)`` on the worker thread; pump events until done; return or re-raise.

    If ``relay`` is given its updates are forwarded to ``on_progress`` on the calling thread.
    """
    future: Future = worker().submit(fn, *args, **kwargs)
    while True:
        try:
            result = future.result(timeout=interval)
            break
        except FutureTimeout:
            pass
        if relay is not None and on_progress is not None:
            value = relay.latest()
            if value is not None:
                on_progress(*value)
        if pump is not None:
            pump()
    if relay is not None and on_progress is not None:
        value = relay.latest()
        if value is not None:
            on_progress(*value)
    return result

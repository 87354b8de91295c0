"""Things made on first use: a package's public names, and process-wide objects.

WHY lazy names: the Slicer GUI imports our packages at start-up, before torch may even be installed, and the
CLI's ``--help`` should answer at once; ``import voxelfm`` (or a subpackage) must not import torch. A package
lists where each public name lives; the module is imported on first attribute access.

WHY ``ProcessWide``: some objects must exist once per process (the feature service holding loaded backbones,
the Slicer worker thread) and must not be built at import time; one holder makes them thread-safely.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def lazy_getattr(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``where[name]`` (a module, relative to ``package`` when it starts
    with a dot) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name], package), name)

    return __getattr__


def lazy_exports(
    package: str, modules: Mapping[str, Iterable[str]]
) -> tuple[Callable[[str], Any], list[str]]:
    """(``__getattr__``, ``__all__``) of a package whose public names live in ``modules``: module -> names.

    Listed by module, so each module appears once and a name's home is read at a glance."""
    where = {name: module for module, names in modules.items() for name in names}
    return lazy_getattr(package, where), sorted(where)


class ProcessWide(Generic[T]):
    """One object per process, made by ``factory`` on the first ``get()`` (thread-safe)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._factory()
            return self._value

    def reset(self, close: Callable[[T], Any] | None = None) -> None:
        """Forget the object, after ``close(object)`` when one was made; the next ``get()`` makes a new one."""
        with self._lock:
            if self._value is not None and close is not None:
                close(self._value)
            self._value = None

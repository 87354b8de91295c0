"""Lazy public names for packages: ``import voxelfm`` (or a subpackage) must not import torch.

WHY: the Slicer GUI imports our packages at start-up, before torch may even be installed, and the CLI's
``--help`` should answer at once. A package lists where each public name lives; the module is imported on
first attribute access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``where[name]`` (a module, relative to ``package`` when it starts
    with a dot) on first use."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name], package), name)

    return __getattr__

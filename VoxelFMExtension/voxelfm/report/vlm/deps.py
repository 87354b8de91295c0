"""The optional packages of the report model, imported in one place with one clear message when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ...errors import VoxelFMError

VLM_PACKAGES = ("transformers", "peft")
MISSING_MESSAGE = (
    "The report model (--vlm, report-train) needs the optional packages transformers and peft, which are not "
    "installed ({missing}). Install them with: pip install voxelfm[vlm]"
)


class MissingExtraError(VoxelFMError):
    """An optional extra is needed for this feature and is not installed."""


def vlm_available() -> bool:
    return all(importlib.util.find_spec(p) is not None for p in VLM_PACKAGES)


def require_vlm() -> tuple[ModuleType, ModuleType]:
    """(transformers, peft), or MissingExtraError naming `pip install voxelfm[vlm]`."""
    missing = [p for p in VLM_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingExtraError(MISSING_MESSAGE.format(missing=", ".join(missing)))
    return importlib.import_module("transformers"), importlib.import_module("peft")

"""The model choices a module offers and the process-wide model/feature service every module shares.

Every VoxelFM module (features, segment, ...) asks the same core service: a backbone is loaded once per
(model, device, precision) in the Slicer process. Importing this module does not import torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from voxelfm.errors import InputError
from voxelfm.features.spec import ModelSpec, is_model_path

if TYPE_CHECKING:
    from voxelfm.features.service import FeatureService

__all__ = [
    "ModelChoice",
    "PerModel",
    "ModelSpec",
    "default_model_reference",
    "feature_service",
    "registry_models",
    "validate_model_reference",
]


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model selector."""

    reference: str  # registry id or local path
    label: str  # text shown in the combo box


def feature_service() -> FeatureService:
    """The process-wide model/feature service (imports torch on first use only)."""
    from voxelfm.features.service import feature_service as core_service

    return core_service()


def registry_models() -> list[ModelChoice]:
    """Models listed in the registry (Resources/models.json); empty if it is not installed or unreadable."""
    try:
        from voxelfm.hub.registry import load_registry

        registry = load_registry()
    except (FileNotFoundError, OSError, ValueError) as exc:  # InputError is a ValueError
        logging.warning("VoxelFM model registry not available: %s", exc)
        return []
    return [
        ModelChoice(mid, f"{entry.name} [{mid}]" if entry.name else mid)
        for mid, entry in registry.models.items()
    ]


def default_model_reference() -> str:
    """The model the core would pick with no explicit choice (VOXELFM_MODEL, then registry preference)."""
    try:
        from voxelfm.hub.registry import default_model_id

        return default_model_id()[0]
    except Exception as exc:  # registry missing/broken: let the user type a path
        logging.warning("No default VoxelFM model: %s", exc)
        return ""


def validate_model_reference(reference: str) -> str:
    """A clean reference ("" = the default policy); a path-looking reference must exist."""
    reference = (reference or "").strip()
    looks_like_path = is_model_path(reference)
    if looks_like_path and not Path(reference).expanduser().exists():
        raise InputError(
            f"Model path '{reference}' does not exist; pick an existing checkpoint file or folder."
        )
    return str(Path(reference).expanduser()) if looks_like_path else reference


T = TypeVar("T")


class PerModel(Generic[T]):
    """One logic object for the current model choice, rebuilt only when the choice changes.

    WHY: a module's logic holds state worth keeping between clicks (a segmenter's per-volume features, a
    library handle), but must not keep using a model the user has since changed in the model panel.
    """

    def __init__(self, factory: Callable[..., T]) -> None:
        self._factory = factory  # factory(spec) or, for a server choice, factory(spec, server=ServerChoice)
        self._spec: Any = None
        self._logic: T | None = None

    def get(self, spec: ModelSpec, server: Any = None) -> T:
        """The logic for ``spec``; ``server``: the panel's ServerChoice (``server_compute``), None = here."""
        key = (spec, server)
        if self._logic is None or key != self._spec:
            logic = self._factory(spec, server=server) if server is not None else self._factory(spec)
            self._spec, self._logic = key, logic
        return self._logic

    @property
    def current(self) -> T | None:
        return self._logic

    @classmethod
    def of(cls, logic_name: str, **options: Any) -> PerModel:
        """A holder of ``VoxelFMLib.<logic_name>.from_spec(spec, **options)``, imported on first use (after the
        module's dependency check: the logics import torch)."""

        def create(spec: ModelSpec, server: Any = None):
            import VoxelFMLib

            remote = {"server": server.url, "api_key": server.key} if server is not None else {}
            return getattr(VoxelFMLib, logic_name).from_spec(spec, **options, **remote)

        return cls(create)


def checked_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` with its model reference validated (a missing path fails here, before any work)."""
    return spec.with_model(validate_model_reference(spec.model))

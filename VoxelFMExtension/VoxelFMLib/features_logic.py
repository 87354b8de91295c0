"""Model choice + feature extraction for a volume node, shared by every VoxelFM module.

The model reference is a registry id (Resources/models.json) or a local path (checkpoint file or folder);
loaded backbones are kept per (reference, device) so repeated runs do not reload weights. Extraction
itself is the core's ``voxelfm.features.extract_features`` (cached on disk by volume content hash).
Call ``volume_from_node`` on the main thread, then ``extract`` may run on the worker thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel, no_progress


@dataclass(frozen=True)
class ModelChoice:
    """What the user picked in the model selector."""

    reference: str  # registry id or local path
    label: str  # text shown in the combo box


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
    """Return a clean reference; a path-looking reference must exist."""
    reference = (reference or "").strip()
    if not reference:
        raise InputError("Choose a VoxelFM model (a registry id or a local checkpoint file/folder).")
    looks_like_path = any(sep in reference for sep in ("/", "\\")) or reference.endswith(
        (".pth", ".safetensors")
    )
    if looks_like_path and not Path(reference).expanduser().exists():
        raise InputError(
            f"Model path '{reference}' does not exist; pick an existing checkpoint file or folder."
        )
    return str(Path(reference).expanduser()) if looks_like_path else reference


class FeaturesLogic:
    """Loads backbones (cached) and extracts VolumeFeatures for volumes."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def model(self, reference: str, device: str = "auto") -> Any:
        reference = validate_model_reference(reference)
        key = (reference, device)
        with self._lock:
            if key not in self._models:
                from voxelfm import load_backbone

                self._models[key] = load_backbone(reference, device=_resolve_device(device))
            return self._models[key]

    def extract(
        self,
        volume: Volume,
        reference: str,
        device: str = "auto",
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache: bool = True,
    ) -> Any:
        """VolumeFeatures of ``volume`` with the chosen model (may run on a worker thread)."""
        progress = progress or no_progress
        check_cancel(cancel)
        progress(0.0, "Loading model")
        model = self.model(reference, device)
        check_cancel(cancel)
        from voxelfm.features.extract import extract_features

        return extract_features(volume, model, device=device, progress=progress, cancel=cancel, cache=cache)

    def clear(self) -> None:
        """Forget loaded models (frees GPU memory once nothing else holds them)."""
        with self._lock:
            self._models.clear()


def _resolve_device(device: str) -> str:
    from voxelfm.device import pick_device

    return str(pick_device(device))

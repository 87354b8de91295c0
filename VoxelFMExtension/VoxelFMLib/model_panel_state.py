"""What the model panel of every VoxelFM module shows and does, without Qt (VoxelFMWidgets.model_panel draws it).

- choices: the default-model policy, every registry model, or a local checkpoint file / folder;
- the chosen model's state: bundled / cached (and verified) / not cached, or a local file's format;
- download only after explicit consent (``consent_text`` says what, from where, how big if known, where to),
  with progress and cancel, sha256/size checked (``voxelfm.hub.download.resolve_model_files``);
- offline or with the Hub unreachable: one line saying so, then the instructions for an offline install;
- device and precision choices, and the token budget's estimated time and memory for the current volume
  (``token_budget``; a budget of 0 is "auto": the machine's budget, ``features.tiling.default_max_tokens``).
Torch is never imported here: the panel works before the PyTorch extension has installed it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from voxelfm.errors import InputError
from voxelfm.hub import download as hub
from voxelfm.hub.registry import ModelEntry, Registry, bundled_dir, default_model_id, load_registry
from voxelfm.progress import CancelFlag, ProgressFn

from .model_service import validate_model_reference
from .token_budget import VIT_B, Architecture, BudgetEstimate, architecture_from_config, estimate


@dataclass(frozen=True)
class ModelStatus:
    """One line for the panel, plus what the user can do about it."""

    reference: str  # what the logic will be given ("" = the default policy)
    model_id: str  # the registry id or path actually meant
    text: str  # e.g. "bundled & verified", "not cached: 2 files to download from owner/repo"
    ready: bool  # usable now without any download
    needs_download: bool  # usable after a download the user must agree to
    instructions: str = ""  # offline / unreachable: how to install the files by hand


def effective_device(device: str) -> str:
    """ "auto" as the core would pick it, judged without importing torch (cpu until torch is loaded)."""
    if device != "auto":
        return device
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return "cuda"
    return "cpu"


class ModelPanelState:
    """Model choice state; ``unreachable()`` is the Hub probe (injected in tests)."""

    def __init__(
        self, registry: Registry | None = None, unreachable: Callable[[], str] | None = None
    ) -> None:
        self._registry = registry
        self._unreachable = unreachable or hub.hub_unreachable_reason

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = load_registry()
        return self._registry

    def choices(self) -> list[tuple[str, str]]:
        """(reference, label) of the selector: the default policy first, then every registry model."""
        default_id, _ = default_model_id(self.registry)
        out = [("", f"Default model ({default_id})")]
        out += [(mid, f"{e.name} [{mid}]" if e.name else mid) for mid, e in self.registry.models.items()]
        return out

    def status(self, reference: str, fallback: str = "") -> ModelStatus:
        """State of the model a run will load: ``reference`` (the panel's choice), else ``fallback`` (what the
        capability loads when the panel names none, e.g. a case library's own model), else the default policy
        (VOXELFM_MODEL, then the registry's preference)."""
        reference = (reference or "").strip() or (fallback or "").strip()
        if not reference and not os.environ.get("VOXELFM_MODEL"):
            return self._default_status()
        model_id = reference or default_model_id(self.registry)[0]
        if model_id in self.registry.models:
            return self._registry_status(reference, self.registry.models[model_id])
        return self._local_status(reference, model_id)

    def _default_status(self) -> ModelStatus:
        """The default policy as it will play out: the first preferred model usable now or after a download."""
        preference = list(self.registry.default_preference) or list(self.registry.models)
        skipped: list[str] = []
        for mid in preference:
            status = self._registry_status("", self.registry.models[mid])
            if status.ready or status.needs_download:
                note = f" ({mid} chosen because {skipped[0]})" if skipped else ""
                return replace(status, text=f"{mid}: {status.text}{note}")
            skipped.append(f"{mid} is not available: {status.text}")
        return replace(status, text="; ".join(skipped))

    def consent_text(self, status: ModelStatus) -> str:
        """What a download fetches: asked before anything is downloaded."""
        entry = self.registry.get(status.model_id)
        sizes = [f.size for f in entry.files.values()]
        size = f", {sum(sizes) / 1e6:.0f} MB" if all(sizes) else " (size not recorded in the registry)"
        files = ", ".join(f.path for f in entry.files.values())
        return (
            f"Download {entry.name} ({entry.id}) from the Hugging Face Hub repository {entry.hub_repo}, revision "
            f"{entry.revision or 'main'}{size}: {files}.\nFiles go into the Hugging Face cache "
            f"{hub.repo_cache_folder(entry.hub_repo or '')} and are checked (size, sha256) before use.\n"
            f"Licence: {entry.licence or 'see the model card'}."
        )

    def download(
        self, status: ModelStatus, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> hub.ResolvedModel:
        """Fetch and verify the files (after consent; any thread). Raises CancelledError, IntegrityError, ..."""
        return hub.resolve_model_files(self.registry.get(status.model_id), progress, self.registry, cancel)

    def architecture(self, reference: str) -> Architecture:
        """Architecture + min_spacing of the chosen model, for the budget estimate (ViT-B if unknown)."""
        model_id = (reference or "").strip() or default_model_id(self.registry)[0]
        entry = self.registry.models.get(model_id)
        config = None
        if entry is not None and entry.source == "bundled":
            config = bundled_dir(entry, self.registry) / entry.files["config"].path
        elif entry is None:
            path = Path(model_id).expanduser()
            config = (path if path.is_dir() else path.parent) / "config.json"
        if config is not None and config.is_file():
            return architecture_from_config(config)
        return VIT_B

    def budget(self, shape_kji, spacing_kji, max_tokens: int, reference: str, device: str) -> BudgetEstimate:
        """The estimate for the panel's values (``max_tokens`` 0: the machine's budget)."""
        return estimate(
            shape_kji, spacing_kji, max_tokens, self.architecture(reference), effective_device(device)
        )

    def _registry_status(self, reference: str, entry: ModelEntry) -> ModelStatus:
        state = hub.cache_state(entry, self.registry, verify=entry.source == "bundled")
        if state.present:
            return ModelStatus(reference, entry.id, state.status, True, False)
        if entry.source == "bundled":
            return ModelStatus(
                reference, entry.id, "bundled files missing: reinstall the extension", False, False
            )
        missing = [entry.files[r].path for r, p in state.files.items() if p is None]
        why = "HF_HUB_OFFLINE=1 forbids downloading" if hub.hub_offline() else self._unreachable()
        if why:
            instructions = hub.not_available_message(entry, missing, why)
            return ModelStatus(reference, entry.id, instructions.splitlines()[0], False, False, instructions)
        text = f"not cached: {len(missing)} file(s) to download from {entry.hub_repo} (asks first)"
        return ModelStatus(reference, entry.id, text, False, True)

    @staticmethod
    def _local_status(reference: str, model_id: str) -> ModelStatus:
        try:
            path = Path(validate_model_reference(model_id))
            files, fmt = hub._find_local_files(path)
        except InputError as exc:
            return ModelStatus(reference, model_id, str(exc), False, False)
        what = "official .pth checkpoint" if fmt == "official-pth" else "VoxelFM safetensors model"
        extra = "" if "config" in files else " (no config file beside it: the ViT-B architecture is assumed)"
        return ModelStatus(reference, str(path), f"local {what}{extra}", True, False)

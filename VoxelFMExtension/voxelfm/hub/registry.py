"""The model registry (Resources/models.json) as validated dataclasses, plus the default-model policy.

One JSON file names every backbone the extension knows: where its files come from (Hugging Face Hub repo +
revision, or a folder bundled under Resources/), which file plays which role (checkpoint / weights /
config), and the sha256 and size of each file where known. Validation happens once, on load, so a broken
registry fails with a message naming the entry and field instead of a KeyError deep inside a download.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.documents import read_mapping
from ..files.integrity import sha256_of
from .resources import resources_dir

SOURCES = ("hub", "bundled")
FORMATS = ("official-pth", "voxelfm-safetensors")
WEIGHT_ROLES = ("checkpoint", "weights")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its role, path inside the repo (or bundled folder), and expected hash/size."""

    role: str
    path: str
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class ModelEntry:
    id: str
    name: str
    source: str  # "hub" | "bundled"
    format: str  # "official-pth" | "voxelfm-safetensors"
    files: dict[str, ModelFile]
    hub_repo: str | None = None
    revision: str | None = None
    path: str | None = None  # bundled: folder relative to Resources/
    licence: str = ""
    architecture: dict[str, Any] | None = None
    notes: str = ""

    @property
    def revision_pinned(self) -> bool:
        """True when the revision is an immutable commit (a branch like "main" can move)."""
        return bool(self.revision and _HEX40.match(self.revision))

    @property
    def verified(self) -> bool:
        """True when every file has a known sha256 (so what is loaded is exactly what was registered)."""
        return all(f.sha256 for f in self.files.values())

    @property
    def weights_role(self) -> str:
        return next(r for r in WEIGHT_ROLES if r in self.files)


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelEntry]
    default_preference: tuple[str, ...] = ()
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def get(self, model_id: str) -> ModelEntry:
        try:
            return self.models[model_id]
        except KeyError:
            raise InputError(
                f"Unknown model {model_id!r}: not a registry id ({', '.join(self.models)}) nor an existing file "
                f"or folder. Pass one of those ids, or the path to a checkpoint file or model folder."
            ) from None


def _bad(where: str, msg: str) -> InputError:
    return InputError(f"Model registry {where}: {msg}. Fix Resources/models.json (see `voxelfm models`).")


def _parse_file(mid: str, role: str, spec: Any) -> ModelFile:
    where = f"entry {mid!r} file {role!r}"
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) or not spec["path"]:
        raise _bad(where, "needs a non-empty 'path'")
    p = spec["path"]
    if p.startswith(("/", "\\")) or ".." in Path(p).parts:
        raise _bad(where, f"path {p!r} must be relative and stay inside the repo/folder")
    sha = spec.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _HEX64.match(sha.lower())):
        raise _bad(where, f"sha256 {sha!r} is not 64 hex digits (use null when unknown)")
    size = spec.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _bad(where, f"size {size!r} is not a non-negative integer (use null when unknown)")
    return ModelFile(role=role, path=p, sha256=sha.lower() if sha else None, size=size)


def _parse_entry(spec: Any, index: int) -> ModelEntry:
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or not spec["id"]:
        raise _bad(f"models[{index}]", "every entry needs a string 'id'")
    mid = spec["id"]
    where = f"entry {mid!r}"
    source = spec.get("source")
    if source not in SOURCES:
        raise _bad(where, f"source {source!r} must be one of {SOURCES}")
    fmt = spec.get("format")
    if fmt not in FORMATS:
        raise _bad(where, f"format {fmt!r} must be one of {FORMATS}")
    files_spec = spec.get("files")
    if not isinstance(files_spec, dict) or not files_spec:
        raise _bad(where, "needs a non-empty 'files' mapping role -> {path, sha256, size}")
    files = {role: _parse_file(mid, role, f) for role, f in files_spec.items()}
    if not any(r in files for r in WEIGHT_ROLES):
        raise _bad(where, f"files must include one of the roles {WEIGHT_ROLES}")
    if source == "hub":
        repo = spec.get("hub_repo")
        if not isinstance(repo, str) or repo.count("/") != 1:
            raise _bad(where, f"hub_repo {repo!r} must be 'owner/name'")
        if not isinstance(spec.get("revision"), str) or not spec["revision"]:
            raise _bad(where, "a hub model needs a 'revision' (a 40-hex commit, or a branch name if unknown)")
    else:
        path = spec.get("path")
        if not isinstance(path, str) or not path or Path(path).is_absolute() or ".." in Path(path).parts:
            raise _bad(where, "a bundled model needs a relative 'path' (folder inside Resources/)")
    arch = spec.get("architecture")
    if arch is not None and not isinstance(arch, dict):
        raise _bad(where, "architecture must be an object or null")
    return ModelEntry(
        id=mid,
        name=str(spec.get("name") or mid),
        source=source,
        format=fmt,
        files=files,
        hub_repo=spec.get("hub_repo"),
        revision=spec.get("revision"),
        path=spec.get("path") if source == "bundled" else None,
        licence=str(spec.get("licence") or ""),
        architecture=arch,
        notes=str(spec.get("notes") or ""),
    )


def parse_registry(data: Any, path: Path | None = None) -> Registry:
    """Validate the JSON content of models.json."""
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise _bad("top level", "expected an object with a 'models' list")
    models: dict[str, ModelEntry] = {}
    for i, spec in enumerate(data["models"]):
        entry = _parse_entry(spec, i)
        if entry.id in models:
            raise _bad(f"entry {entry.id!r}", "duplicate id")
        models[entry.id] = entry
    pref = tuple(data.get("default_preference") or models)
    unknown = [m for m in pref if m not in models]
    if unknown:
        raise _bad("default_preference", f"names unknown ids {unknown}")
    return Registry(models=models, default_preference=pref, path=path, raw=data)


def registry_path() -> Path:
    """VOXELFM_MODELS_JSON if set, else Resources/models.json."""
    env = os.environ.get("VOXELFM_MODELS_JSON")
    if env:
        return Path(env).expanduser()

    return resources_dir() / "models.json"


def load_registry(path: str | Path | None = None) -> Registry:
    """Read and validate the registry (read fresh each call: it is small, and may be edited while running)."""
    p = Path(path) if path is not None else registry_path()
    data = read_mapping(
        p,
        InputError,
        "model registry",
        "fix or restore the file",
        missing="reinstall the extension or set VOXELFM_MODELS_JSON",
    )
    return parse_registry(data, p)


def bundled_dir(entry: ModelEntry, registry: Registry | None = None) -> Path:
    """Folder of a bundled model: relative to the folder holding models.json (Resources/)."""
    if entry.source != "bundled" or entry.path is None:
        raise InputError(f"Model {entry.id!r} is not a bundled model.")
    base = (
        registry.path.parent if registry is not None and registry.path is not None else registry_path().parent
    )
    return base / entry.path


def default_model_id(registry: Registry | None = None) -> tuple[str, str]:
    """(model id or path, reason) that features/probes use when the user names no model.

    VOXELFM_MODEL wins. Otherwise the first entry of ``default_preference`` that is available (cached,
    bundled and present, or downloadable because we are not offline); the last entry is the fallback.
    """
    from . import download as hub  # download imports this module at its top (a cycle)

    env = os.environ.get("VOXELFM_MODEL")
    if env:
        return env, f"set by VOXELFM_MODEL={env}"
    reg = registry if registry is not None else load_registry()
    pref = list(reg.default_preference) or list(reg.models)
    skipped: list[str] = []
    for mid in pref:
        entry = reg.models[mid]
        state = hub.cache_state(entry, reg)
        if state.available:
            if entry.source == "hub" and state.present:
                return mid, f"using official VoxelFM weights ({mid}) from the Hugging Face cache"
            if entry.source == "hub":
                return mid, (
                    f"official VoxelFM weights ({mid}) are not cached yet: they will be downloaded from "
                    f"{entry.hub_repo} on first use"
                )
            lead = f"{'; '.join(skipped)}: " if skipped else ""
            return mid, f"{lead}using bundled offline model {mid}"
        skipped.append(_why_skipped(entry))
    fallback = pref[-1]
    return fallback, f"{'; '.join(skipped)}: falling back to {fallback}"


def _why_skipped(entry: ModelEntry) -> str:
    from .download import hub_offline  # download imports this module at its top (a cycle)

    if entry.source == "hub":
        why = "HF_HUB_OFFLINE=1" if hub_offline() else "not downloadable"
        return f"official weights ({entry.id}) not cached and {why}"
    return f"bundled model {entry.id} is missing"


def pin_bundled_hashes(model_id: str, path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Write the sha256 and size of a bundled model's present files into models.json (maintainer tool).

    Used after (re)training the bundled offline model so later loads verify exactly those bytes.
    Rewrites the file atomically; other entries are kept as they are. Returns the new file specs.
    """
    from ..files.atomic import atomic_write_text  # numpy off the model panel's torch-free import

    reg = load_registry(path)
    entry = reg.get(model_id)
    folder = bundled_dir(entry, reg)
    data = json.loads(json.dumps(reg.raw))
    spec = next(m for m in data["models"] if m.get("id") == model_id)
    pinned: dict[str, dict[str, Any]] = {}
    for role, f in entry.files.items():
        fp = folder / f.path
        if not fp.is_file():
            raise InputError(f"Cannot pin {model_id}: {fp} is missing. Create the bundled model first.")
        pinned[role] = {"path": f.path, "sha256": sha256_of(fp), "size": fp.stat().st_size}
    spec["files"] = pinned
    parse_registry(data)  # never write an invalid registry
    assert reg.path is not None
    atomic_write_text(reg.path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return pinned

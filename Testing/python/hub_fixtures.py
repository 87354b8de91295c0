"""Build a Hugging Face hub cache and a model registry by hand in a temp folder (no network).

The layout is the one huggingface_hub itself writes and reads: models--owner--name/blobs/<hash>,
snapshots/<commit>/<path in repo> (relative symlink to the blob), refs/<branch> holding the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_hub_cache(
    cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main"
) -> Path:
    """Put ``files`` (path in repo -> content) into the cache as one snapshot; returns the repo folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for filename, data in files.items():
        blob = repo / "blobs" / sha256_bytes(data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return repo


def hub_entry(
    mid: str,
    repo: str,
    files: dict[str, tuple[str, bytes | None]],
    revision: str = "main",
    with_hashes: bool = True,
) -> dict[str, Any]:
    """Registry entry; files: role -> (path in repo, expected content or None for 'unknown')."""
    return {
        "id": mid,
        "name": f"test model {mid}",
        "source": "hub",
        "hub_repo": repo,
        "revision": revision,
        "format": "official-pth",
        "files": {
            role: {
                "path": path,
                "sha256": sha256_bytes(data) if (with_hashes and data is not None) else None,
                "size": len(data) if (with_hashes and data is not None) else None,
            }
            for role, (path, data) in files.items()
        },
        "licence": "test",
    }


def bundled_entry(mid: str, folder: str, files: dict[str, tuple[str, bytes | None]]) -> dict[str, Any]:
    return {
        "id": mid,
        "source": "bundled",
        "path": folder,
        "format": "voxelfm-safetensors",
        "files": {
            role: {
                "path": path,
                "sha256": sha256_bytes(data) if data is not None else None,
                "size": len(data) if data is not None else None,
            }
            for role, (path, data) in files.items()
        },
    }


def write_registry(
    resources: Path, entries: list[dict[str, Any]], preference: list[str] | None = None
) -> Path:
    resources.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"format_version": 1, "models": entries}
    if preference is not None:
        data["default_preference"] = preference
    path = resources / "models.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def isolate_hub_env(tmp_path, monkeypatch) -> None:
    """Private HF cache and voxelfm cache for one test, offline, with no model/registry overrides."""
    for var in ("HF_HUB_CACHE", "VOXELFM_MODEL", "VOXELFM_OFFLINE", "VOXELFM_RESOURCES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("VOXELFM_CACHE_DIR", str(tmp_path / "voxelfm"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def isolated_registry(
    tmp_path: Path, monkeypatch, entries: list[dict[str, Any]], preference: list[str] | None = None
) -> Path:
    """``isolate_hub_env``, then a registry of ``entries`` in tmp_path/Resources that VOXELFM_MODELS_JSON names."""
    isolate_hub_env(tmp_path, monkeypatch)
    path = write_registry(tmp_path / "Resources", entries, preference)
    monkeypatch.setenv("VOXELFM_MODELS_JSON", str(path))
    return path

"""`load_backbone(path_or_id)`: one call from a registry id, a hub download, or a local file/folder."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..files.integrity import sha256_of
from ..hub.download import resolve_model_files
from .checkpoint import load_backbone_file
from .config import BackboneConfig
from .vit import VoxelFMBackbone

log = logging.getLogger(__name__)


def load_backbone(
    path_or_id: str | Path,
    config: str | Path | dict | BackboneConfig | None = None,
    device: str | torch.device = "cpu",
) -> VoxelFMBackbone:
    """Load a VoxelFM backbone in eval mode.

    ``path_or_id``: a checkpoint file (.pth official / .safetensors ours), a folder holding one, or a
    registry id from Resources/models.json (downloaded into the Hugging Face cache and verified).
    The returned module carries ``model_info`` (id, revision, sha256, source) for cache keys and probe files.
    """
    path = Path(path_or_id)
    if path.exists():
        model = load_backbone_file(path, config)
        info = {
            "id": str(path.resolve()),
            "revision": None,
            "sha256": _weights_sha256(path),
            "source": "local-path",
        }
    else:
        resolved = resolve_model_files(str(path_or_id))
        weights = resolved.files.get("checkpoint") or resolved.files.get("weights")
        if weights is None:
            raise CheckpointError(f"Registry entry {path_or_id!r} names no checkpoint/weights file.")
        model = load_backbone_file(weights, config if config is not None else resolved.files.get("config"))
        info = {
            "id": resolved.id,
            "revision": resolved.revision,
            "sha256": (resolved.sha256s or {}).get("checkpoint")
            or (resolved.sha256s or {}).get("weights")
            or _weights_sha256(Path(weights)),
            "source": resolved.source,
        }
    model.model_info = info  # type: ignore[attr-defined]
    return model.to(device).eval()


def _weights_sha256(path: Path) -> str:
    if path.is_dir():
        cands = (
            [path / "model.safetensors"]
            if (path / "model.safetensors").is_file()
            else sorted(path.rglob("*.pth"))
        )
        if not cands:
            return ""
        path = cands[-1]
    return sha256_of(path)

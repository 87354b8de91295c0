"""Probe files come in pairs, NAME.safetensors (weights) + NAME.json (metadata); one naming rule for all."""

from __future__ import annotations

import os
from pathlib import Path


def probe_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(NAME.safetensors, NAME.json) for NAME, NAME.json or NAME.safetensors."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")

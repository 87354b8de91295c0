"""Localisation probes on disk through the shared probe format (``voxelfm.files.probe_file``, task
"localisation"): head weights ``head.*`` and ``feature.mean`` / ``feature.std`` in NAME.safetensors; landmark
names, head spec, grid spacing, fitting settings, backbone and preprocessing in NAME.json."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..features.identity import recorded_backbone
from ..files.probe_file import check_fields, read_probe_files, recorded_fields, write_probe_files
from ..files.probe_paths import probe_paths
from .probe import LocalisationProbe, ProbeConfig
from .probe_head import HeadSpec, SoftArgmaxHead

TASK = "localisation"
_FIELDS: dict[str, type] = {
    "landmarks": list,
    "head": dict,
    "spacing_mm": float,
    "grid": str,
    "training": dict,
}
GRID = "patient-aligned (i->L, j->P, k->S), isotropic"


def save_localisation_probe(probe: LocalisationProbe, path: str | os.PathLike) -> tuple[Path, Path]:
    tensors: dict[str, Any] = {f"head.{k}": v for k, v in probe.head.state_dict().items()}
    tensors["feature.mean"] = np.asarray(probe.feat_mean, np.float32)
    tensors["feature.std"] = np.asarray(probe.feat_std, np.float32)
    meta = {
        "landmarks": probe.names,
        "head": probe.head.spec.to_dict(),
        "spacing_mm": probe.spacing_mm,
        "grid": GRID,
        "training": probe.config.to_dict(),
        **recorded_fields(probe),
    }
    return write_probe_files(path, TASK, tensors, meta)


def load_localisation_probe(path: str | os.PathLike) -> LocalisationProbe:
    """A probe file of task "localisation" (other probe kinds are refused by the shared reader)."""
    meta, tensors = read_probe_files(path, (TASK,))
    where = probe_paths(path)[1]
    check_fields(meta, _FIELDS, where)
    try:
        spec = HeadSpec(**{k: int(v) for k, v in meta["head"].items()})
        head = SoftArgmaxHead(spec)
        head.load_state_dict({k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")})
    except (TypeError, RuntimeError, KeyError) as exc:
        raise CheckpointError(
            f"{where}: the head weights do not match field 'head' ({exc}); re-create the probe."
        ) from exc
    if len(meta["landmarks"]) != spec.landmarks:
        raise CheckpointError(
            f"{where}: {len(meta['landmarks'])} landmark names for a head with {spec.landmarks}."
        )
    head.eval()
    return LocalisationProbe(
        names=[str(n) for n in meta["landmarks"]],
        head=head,
        feat_mean=_array(tensors, "feature.mean", where),
        feat_std=_array(tensors, "feature.std", where),
        spacing_mm=float(meta["spacing_mm"]),
        backbone=recorded_backbone(meta),
        preprocess=meta["preprocessing"],
        config=ProbeConfig.from_dict(meta["training"]),
        metrics=meta["metrics"],
    )


def _array(tensors: dict[str, torch.Tensor], name: str, where: Path) -> np.ndarray:
    if name not in tensors:
        raise CheckpointError(f"{where}: weights lack '{name}'; re-create the probe.")
    return tensors[name].numpy().astype(np.float32)

"""Synthetic CTs with planted findings and a tiny random backbone, shared by the report tests."""

from __future__ import annotations

import numpy as np
import torch

SHAPE = (28, 28, 28)


def tiny_backbone(folder, seed: int = 0):
    """A saved 2-layer ViT (random weights): features are a fixed function of the image."""
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(seed)
    return save_backbone(VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2)), folder)


def planted_ct(nodule: bool, effusion: bool, seed: int):
    """Lung-like background; a bright central blob for 'nodule', fluid in the lowest slices for 'effusion'."""
    from voxelfm.imaging.volume import Volume

    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    radius = np.hypot(yy - 13.5, xx - 13.5)
    hu = np.where(radius < 11, rng.normal(-750, 40, SHAPE), np.where(radius < 13.5, 40.0, -1000.0))
    if nodule:
        hu[(zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 < 36] = rng.normal(60, 15)
    if effusion:
        hu[:7][radius[:7] < 11] = rng.normal(15, 10, int((radius[:7] < 11).sum()))
    return Volume(hu.astype(np.float32), np.diag([1.5, 1.5, 1.5, 1.0]), f"case{seed}")


FINDINGS = ["Lung nodule", "Pleural effusion"]


def findings_workspace(root):
    """A tiny backbone, a second one, and a multi-label findings probe (FINDINGS) fitted on 12 planted cases."""
    from voxelfm.features.service import FeatureService
    from voxelfm.features.spec import ModelSpec

    model_dir = tiny_backbone(root / "tiny")
    other_dir = tiny_backbone(root / "other", seed=1)
    service = FeatureService()
    probe = fit_findings_probe(service, ModelSpec(str(model_dir), device="cpu"), 12, root / "findings")
    return {"root": root, "model": model_dir, "other": other_dir, "service": service, "probe": probe}


def registry_findings_probe(root, model: str = "voxelfm-tiny"):
    """A findings probe (FINDINGS) fitted on ``model``'s features of 8 planted cases: its recorded backbone is
    a registry id, which a server loads (a probe of a checkpoint path is refused there)."""
    from voxelfm.features.service import FeatureService
    from voxelfm.features.spec import ModelSpec

    return fit_findings_probe(
        FeatureService(), ModelSpec(model, "cpu", max_tokens=4096), 8, root / "findings"
    )


def fit_findings_probe(service, spec, n_cases: int, path):
    """Fit and save a FINDINGS probe on ``n_cases`` planted cases (every combination of the two findings)."""
    from voxelfm.features.extract import model_identity
    from voxelfm.probes.config import ProbeConfig
    from voxelfm.probes.fit import fit_probe
    from voxelfm.probes.probe_file import save_probe

    cases = [(n % 2 == 0, (n // 2) % 2 == 0) for n in range(n_cases)]
    feats = [service.features(planted_ct(a, b, seed=n), spec, cache=False) for n, (a, b) in enumerate(cases)]
    config = ProbeConfig(folds=2, n_bootstrap=0, knn_k=0)
    identity = model_identity(service.backbone(spec))
    fit = fit_probe(
        "classification", feats, np.array(cases, float), config, target_names=FINDINGS, backbone=identity
    )
    save_probe(fit.probe, path)
    return path

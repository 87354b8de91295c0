"""Fit the soft-argmax localisation head from k annotated scans (features already on the probe's grid).

Each step takes one case, a random crop of its feature grid (the reference's crop protocol: the landmark's
position in the field of view must not be learnt) and Gaussian feature noise; the loss is SmoothL1 between
predicted and true positions in the crop's normalised coordinates, over the landmarks inside the crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..features.volume_features import VolumeFeatures
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .points import PointList, ras_to_ijk
from .probe import LocalisationProbe, ProbeConfig
from .probe_head import HeadSpec, SoftArgmaxHead, grid_coordinates


def landmark_names(cases: Sequence[PointList]) -> list[str]:
    """All landmark names, in first-seen order; each case must name its points uniquely."""
    names: list[str] = []
    for n, pts in enumerate(cases):
        pts.require_unique_names(f"case {n + 1} ('{pts.name}')")
        names += [x for x in pts.names if x not in names]
    if not names:
        raise InputError("No landmarks: every points file of the manifest is empty.")
    return names


def _targets(feats: VolumeFeatures, points: PointList, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cell indices (i, j, k) [L, 3] of each landmark in this case's grid and which are present [L]."""
    ijk = np.zeros((len(names), 3))
    present = np.zeros(len(names), bool)
    for n, name in enumerate(names):
        pos = points.position(name)
        if pos is not None:
            ijk[n], present[n] = ras_to_ijk(feats.grid_to_ras, pos[None])[0], True
    return ijk, present


def _crop(shape_dhw, rng: np.random.Generator, crop_min: float) -> tuple[np.ndarray, np.ndarray]:
    """A random box of cells: start and size along (i, j, k)."""
    size = np.array(shape_dhw[::-1])
    keep = np.maximum(1, np.round(size * rng.uniform(crop_min, 1.0, 3)).astype(int))
    start = np.array([rng.integers(0, s - k + 1) for s, k in zip(size, keep, strict=True)])
    return start, keep


def _sample(tokens, ijk, present, rng, cfg):
    """One training crop: tokens [1, n, C], coords [1, n, 3], target [L, 3] (crop-normalised), mask [L]."""
    d, h, w, _ = tokens.shape
    for _ in range(20):
        start, keep = _crop((d, h, w), rng, cfg.crop_min)
        inside = present & np.all((ijk >= start - 0.5) & (ijk <= start + keep - 0.5), axis=1)
        if inside.any():
            break
    else:
        start, keep, inside = np.zeros(3, int), np.array([w, h, d]), present
    (i0, j0, k0), (ni, nj, nk) = start, keep
    sub = tokens[k0 : k0 + nk, j0 : j0 + nj, i0 : i0 + ni].reshape(1, -1, tokens.shape[-1])
    target = 2.0 * (ijk - start) / np.maximum(keep - 1, 1) - 1.0
    return (
        sub,
        grid_coordinates((nk, nj, ni))[None],
        torch.from_numpy(target).float(),
        torch.from_numpy(inside),
    )


def fit_localisation_probe(
    cases: Sequence[tuple[VolumeFeatures, PointList]],
    spacing_mm: float,
    config: ProbeConfig | None = None,
    backbone: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> LocalisationProbe:
    """The head fitted on ``cases`` (features on the probe's grid + that case's named points)."""
    cfg = config or ProbeConfig()
    progress = progress or no_progress
    if not cases:
        raise InputError("No cases to fit the localisation probe on; the manifest needs at least one row.")
    names = landmark_names([p for _, p in cases])
    rows = np.concatenate([np.asarray(f.patch, np.float32).reshape(-1, f.patch.shape[-1]) for f, _ in cases])
    mean, std = rows.mean(0), rows.std(0) + 1e-6
    data = []
    for feats, pts in cases:
        tokens = torch.from_numpy((np.asarray(feats.patch, np.float32) - mean) / std)
        data.append((tokens, *_targets(feats, pts, names)))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = SoftArgmaxHead(HeadSpec(int(rows.shape[1]), len(names), cfg.heads, cfg.hidden))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    for step in range(cfg.steps):
        check_cancel(cancel)
        tokens, ijk, present = data[step % len(data)]
        sub, coords, target, mask = _sample(tokens, ijk, present, rng, cfg)
        noisy = sub + cfg.noise_std * torch.randn_like(sub)
        pred = head(noisy, coords)[0]
        loss = F.smooth_l1_loss(pred[mask], target[mask])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            progress(step / cfg.steps, f"fitting the localisation probe: step {step}/{cfg.steps}")
    head.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    metrics = {"train_loss_last10pct": float(np.mean(tail)), "cases": len(cases), "steps": cfg.steps}
    return LocalisationProbe(
        names, head, mean, std, float(spacing_mm), dict(backbone or {}), dict(preprocess or {}), cfg, metrics
    )

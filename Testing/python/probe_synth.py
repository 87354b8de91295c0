"""Synthetic feature sets with a planted signal, for the probe tests (no model needed)."""

from __future__ import annotations

import numpy as np


def planted(n: int = 120, c: int = 32, seed: int = 0, amp: float = 2.0, grid=(2, 2, 2)):
    """Features whose cls token carries a latent z [n, 2] in dims 0-1 (+ unit noise everywhere)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    feats = []
    for i in range(n):
        cls = rng.normal(size=c).astype(np.float32)
        cls[:2] += amp * z[i]
        feats.append(
            {
                "cls": cls,
                "registers": rng.normal(size=(4, c)).astype(np.float32),
                "patch": rng.normal(size=(*grid, c)).astype(np.float32),
            }
        )
    return feats, z


def survival_targets(risk: np.ndarray, seed: int = 0, censor_scale: float = 2.0) -> np.ndarray:
    """Exponential event times with hazard exp(risk), independent exponential censoring: [n, 2] (time, event)."""
    rng = np.random.default_rng(seed)
    t_event = rng.exponential(1.0 / np.exp(risk))
    t_cens = rng.exponential(censor_scale, size=risk.size)
    return np.stack([np.minimum(t_event, t_cens), (t_event <= t_cens).astype(float)], axis=1)


def lesion_tokens(n: int = 120, c: int = 16, grid=(4, 4, 4), seed: int = 0, amp: float = 4.0):
    """Binary labels present only in 2 of the patch tokens (a 'small lesion'); mean pooling dilutes it."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    rng.shuffle(y)
    feats = []
    n_tok = int(np.prod(grid))
    for i in range(n):
        patch = rng.normal(size=(n_tok, c)).astype(np.float32)
        if y[i]:
            where = rng.choice(n_tok, size=2, replace=False)
            patch[where, 0] += amp
        feats.append(
            {
                "cls": rng.normal(size=c).astype(np.float32),
                "registers": rng.normal(size=(4, c)).astype(np.float32),
                "patch": patch.reshape(*grid, c),
            }
        )
    return feats, y

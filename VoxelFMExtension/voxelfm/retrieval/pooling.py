"""How patch tokens become one vector: the whole-volume embedding, the regional blocks and the cls vector.

WHY not the plain mean of every token: with the models here (the bundled one and a random init alike) the mean
over all tokens mostly measures how much of the image is air, which a crop, a shift or an oblique grid's
padding changes, and every mean shares one "body" direction (plain cosines of 0.99+ between patients).
Measured on altered copies of the dev CTs, the tour's moved + cropped copies and structure crops
(Testing/Benchmarks/results/retrieval_quality.md, parts A-D), the default "body_standardised" (standardise.py:
the body cells' tokens standardised with the library's token statistics, described by mean and centred std)
keeps the oblique copies and crops that "body_mean_std" handles and finds more of the moved + cropped copies.
"body_mean_std" (unit mean and unit std of the body tokens, concatenated, scored with library centring) and
"mean" (every token averaged, plain cosine) are kept as options and are what older libraries hold.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..imaging.resample import resample_to_grid
from ..imaging.volume import Volume
from .config import STANDARDISED, RetrievalConfig
from .standardise import token_moments
from .vector_index import normalise

BODY_HU = -500.0  # a voxel above this is body (soft tissue, bone, lung parenchyma with vessels), else air
BODY_SHARE = 0.5  # a patch cell is body when at least this share of it is
SUBSAMPLES = 3  # points sampled per patch cell and axis to measure its body share


def uses_body(config: RetrievalConfig) -> bool:
    """The pooling looks only at the body cells (and so needs ``body_fraction``)."""
    return config.pooling in (STANDARDISED, "body_mean_std")


def embedding_dim(embed_dim: int, config: RetrievalConfig) -> int:
    """Length of every vector a library of this pooling stores (mean + std, or the token moments, double the
    token width)."""
    return int(embed_dim) * (2 if uses_body(config) else 1)


def body_fraction(volume: Volume, grid_to_ras: np.ndarray, grid_shape_dhw) -> np.ndarray:
    """Share of body voxels (> BODY_HU) in each patch cell [d, h, w], measured on ``volume`` through RAS
    (SUBSAMPLES^3 points per cell; outside the volume counts as air)."""
    d, h, w = (int(n) for n in grid_shape_dhw)
    n = SUBSAMPLES
    sub = np.eye(4)
    sub[:3, :3] /= n
    sub[:3, 3] = -(n - 1) / (2 * n)  # sample points spread evenly over each cell
    grid = np.asarray(grid_to_ras, dtype=np.float64) @ sub
    hu = resample_to_grid(volume.array, volume.ijk_to_ras, (d * n, h * n, w * n), grid, "linear", -1000.0)
    return (hu > BODY_HU).reshape(d, n, h, n, w, n).mean(axis=(1, 3, 5))


def pooling_weights(features, config: RetrievalConfig, body: np.ndarray | None) -> np.ndarray:
    """[d*h*w] 0/1 weights of the tokens the whole-volume embedding pools: the body cells (the cells with the
    most body when none is mostly body) for "body_mean_std"; every cell for "mean" or without ``body``."""
    n = int(np.prod(np.asarray(features.patch).shape[:3]))
    if not uses_body(config) or body is None:
        return np.ones(n, dtype=np.float32)
    share = np.asarray(body, dtype=np.float32).reshape(-1)
    if share.shape != (n,):
        raise InputError(f"The body map has {share.size} cells, the features {n}.")
    if share.max() <= 0:
        return np.ones(n, dtype=np.float32)
    return (share >= min(BODY_SHARE, float(share.max()))).astype(np.float32)


def pooled_mean(features, weights: np.ndarray) -> np.ndarray:
    """Weighted mean patch token [C] (float64)."""
    patch = np.asarray(features.patch, dtype=np.float32)
    flat = patch.reshape(-1, patch.shape[-1])
    return (flat.T.astype(np.float64) @ weights) / max(float(weights.sum()), 1e-12)


def describe(tokens: np.ndarray, config: RetrievalConfig) -> np.ndarray:
    """Unit vector of a set of tokens [n, C]: their mean for "mean"; for the body poolings the concatenated
    unit mean and unit standard deviation (each half weighs the same in the cosine). WHY regions of a
    "body_standardised" library are pooled so, not standardised: region Recall@k between patients and
    the altered copies' region queries were no better with tokens scaled by the library's or the case's own
    per-dimension std (retrieval_quality.md, part A), and unscaled blocks never depend on the other cases."""
    t = np.asarray(tokens, dtype=np.float64).reshape(-1, np.asarray(tokens).shape[-1])
    mean = t.mean(axis=0)
    if config.pooling == "mean":
        return normalise(mean)[0]
    return normalise(np.concatenate([normalise(mean)[0], normalise(t.std(axis=0))[0]]))[0]


def body_tokens(features, config: RetrievalConfig, body: np.ndarray | None) -> np.ndarray:
    """The tokens [n, C] the whole-volume embedding pools (``pooling_weights``)."""
    patch = np.asarray(features.patch, dtype=np.float32)
    keep = pooling_weights(features, config, body) > 0
    return patch.reshape(-1, patch.shape[-1])[keep]


def global_vector(features, config: RetrievalConfig, body: np.ndarray | None) -> np.ndarray:
    """The whole-volume ("mean") vector a library stores for ``features`` (``body``: its ``body_fraction``
    map): a unit embedding, or for "body_standardised" the body tokens' ``token_moments`` (standardised at
    search time with the library's statistics)."""
    tokens = body_tokens(features, config, body)
    if config.pooling == STANDARDISED:
        return token_moments(tokens)
    return describe(tokens, config)


def cls_vector(features, config: RetrievalConfig) -> np.ndarray:
    """The unit cls token, zero-padded to the library's vector length (a cosine is unchanged by the zeros)."""
    cls = normalise(np.asarray(features.cls, dtype=np.float32))[0]
    width = embedding_dim(cls.shape[-1], config)
    return np.concatenate([cls, np.zeros(width - cls.shape[-1], dtype=cls.dtype)])

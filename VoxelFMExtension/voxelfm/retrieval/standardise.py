"""Whole-volume embeddings standardised with the library's token statistics (pooling "body_standardised").

A case is stored as the moments of its body tokens (per-dimension mean and standard deviation, ``token_moments``;
its token count in the case's info). At each query the library's token statistics are rebuilt exactly from the
stored moments (``moment_sums`` add up over cases, so they stream and follow every add and remove), and every case
and the query become the same unit embedding (``Standardisation.embed``):

    [ sqrt(1/4) unit((mean - mu) / sigma),  sqrt(3/4) unit(unit(std / sigma) - the library's average of that) ]

mu, sigma: per-dimension mean and standard deviation over ALL body tokens of the library's cases (thousands of
tokens even for one case). WHY: the plain mean of body tokens is dominated by what every token shares (plain
cosines of 0.99+ between patients); removing the library's token mean and scaling each dimension by its spread
leaves what distinguishes the cases and finds moved + cropped copies (the tour's); the std half (the texture,
centred on the library's average) keeps the copies resampled onto an oblique grid, which the mean half alone
loses. The std half carries 3/4 of the squared norm (STD_SHARE): with equal halves a 20-degree oblique copy of
torso_3mm ranks another patient first in the tests' four-case library (margin -0.07; 3/4: +0.17); shares from
1/2 to 4/5 were compared on these same measurements, so the share is tuned on seven CTs. Measured against mean +
std with library centring and the standardised mean alone in Testing/Benchmarks/results/retrieval_quality.md
(parts A-D). One case: nothing is removed (its own mean would leave nothing to compare), only scaled; two cases
are standardised (their embeddings are then opposite, so a query ranks by which it is nearer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vector_index import normalise

SIGMA_FLOOR = 1e-6  # relative: a dimension with (almost) no spread is not blown up by standardising it
MIN_CASES = 2  # from this many cases on the library's token mean and average std are removed
STD_SHARE = 0.75  # the std half's share of the squared norm (the mean half has the rest)


def token_moments(tokens: np.ndarray) -> np.ndarray:
    """Per-dimension mean and standard deviation of ``tokens`` [n, C], concatenated [2C] (float64): what a
    "body_standardised" library stores per case, enough to rebuild the library's token statistics exactly."""
    t = np.asarray(tokens, dtype=np.float64)
    return np.concatenate([t.mean(axis=0), t.std(axis=0)])


def moment_sums(moments: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """[1 + 2C]: number of tokens, per-dimension sum and sum of squares of the tokens of the cases whose
    ``token_moments`` are the rows of ``moments`` (``counts``: their numbers of tokens). Sums add up."""
    m = np.atleast_2d(np.asarray(moments, dtype=np.float64))
    c = m.shape[1] // 2
    w = np.asarray(counts, dtype=np.float64).reshape(-1)
    mean, std = m[:, :c], m[:, c:]
    return np.concatenate([[w.sum()], w @ mean, w @ (std**2 + mean**2)])


def library_statistics(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over every token counted in ``moment_sums``."""
    n = max(float(sums[0]), 1e-12)
    c = (len(sums) - 1) // 2
    mu = sums[1 : 1 + c] / n
    return mu, np.sqrt(np.maximum(sums[1 + c :] / n - mu**2, 0.0))


@dataclass
class Standardisation:
    """The library's token mean (None: not removed), token std, and average unit scaled std (None: not
    removed); ``embed`` turns stored or query moments into the unit embeddings that are scored."""

    mu: np.ndarray | None
    sigma: np.ndarray
    std_centre: np.ndarray | None = None

    def _halves(self, moments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = np.atleast_2d(np.asarray(moments, dtype=np.float64))
        c = m.shape[1] // 2
        s = np.maximum(self.sigma, SIGMA_FLOOR * max(float(np.max(self.sigma)), 1e-12))[None, :]
        mean = m[:, :c] - (0.0 if self.mu is None else self.mu[None, :])
        return normalise(mean / s), normalise(m[:, c:] / s)

    def scaled_stds(self, moments: np.ndarray) -> np.ndarray:
        """Unit rows of std / sigma (what ``std_centre`` averages over the library's cases)."""
        return self._halves(moments)[1]

    def embed(self, moments: np.ndarray) -> np.ndarray:
        """Unit rows [n, 2C] (see the module note)."""
        mean, std = self._halves(moments)
        if self.std_centre is not None:
            std = normalise(std - self.std_centre[None, :])
        halves = [np.sqrt(1.0 - STD_SHARE) * mean, np.sqrt(STD_SHARE) * std]
        return normalise(np.concatenate(halves, axis=1))


def fit(stored, counts: dict[int, float]) -> tuple[Standardisation, int]:
    """The Standardisation of a library from its stored moments: ``stored()`` yields (moments [n, 2C], row ids)
    chunks (called twice: token statistics, then the average scaled std); ``counts``: tokens per row id.
    Returns it and the number of cases."""
    sums, n = None, 0
    for mat, ids in stored():
        part = moment_sums(mat, np.array([counts.get(int(i), 1.0) for i in ids]))
        sums = part if sums is None else sums + part
        n += len(ids)
    if sums is None:
        raise ValueError("no stored moments to standardise with")
    mu, sigma = library_statistics(sums)
    if n < MIN_CASES:
        return Standardisation(None, sigma), n
    scaled = Standardisation(mu, sigma)
    total = sum(scaled.scaled_stds(mat).sum(axis=0) for mat, _ in stored())
    return Standardisation(mu, sigma, total / n), n

"""Geometry that keeps left and right apart: a body frame per scan and a global similarity fit across points.

WHY: left and right structures (kidneys, lungs, ribs, femoral heads) look alike, so appearance alone can put
the left kidney's landmark on the right kidney. Two cues that appearance lacks:
* the body frame: a point's offset from the body's midline, in units of the body's half-width (and the same
  front to back), is about the same in every patient; the side of a landmark (sign of that offset) is exact.
  The cranio-caudal axis is not used (fields of view differ along it).
* consistency: the landmarks of one scan map to another by a roughly similar transform (rotation, scale,
  shift); a candidate that breaks it (a swapped side) is an outlier of a fit on the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BODY_HU = -500.0  # soft tissue and denser: the body (and table) against air
PERCENTILES = (2.0, 98.0)  # robust to the table, tubes, a stray arm


@dataclass(frozen=True)
class BodyFrame:
    """Body centre and half-extent along R-L (x) and A-P (y), RAS mm."""

    center_xy: np.ndarray
    half_xy: np.ndarray

    def normalised(self, ras: np.ndarray) -> np.ndarray:
        """[N,2] offsets from the body centre in half-extents (x: + = right side of the image's R-L axis)."""
        ras = np.asarray(ras, dtype=np.float64).reshape(-1, 3)
        return (ras[:, :2] - self.center_xy) / self.half_xy


def body_frame(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> BodyFrame:
    """The body frame of a volume (any grid): percentile extents of the voxels above ``BODY_HU``."""
    arr = np.asarray(array_kji)
    step = max(1, int(round(max(arr.shape) / 96)))  # a subsample is plenty for percentiles
    sub = arr[::step, ::step, ::step]
    kji = np.argwhere(sub > BODY_HU) * step
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    if len(kji) < 10:  # no body found: the whole field of view
        kji = np.argwhere(np.ones(sub.shape, bool)) * step
    ras = kji[:, ::-1] @ m[:3, :3].T + m[:3, 3]
    lo, hi = (
        np.percentile(ras[:, :2], PERCENTILES[0], axis=0),
        np.percentile(ras[:, :2], PERCENTILES[1], axis=0),
    )
    return BodyFrame((lo + hi) / 2.0, np.maximum((hi - lo) / 2.0, 1.0))


def frame_penalty(expected_uv: np.ndarray, candidates_ras: np.ndarray, frame: BodyFrame) -> np.ndarray:
    """Squared distance in body-frame units between each candidate and the expected offset [M]."""
    uv = frame.normalised(candidates_ras)
    return np.sum((uv - np.asarray(expected_uv)[None, :]) ** 2, axis=1)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + shift (Umeyama) mapping src [N,3] -> dst [N,3], as a 4x4."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2, 2] = -1.0
    rot = u @ d @ vt
    var = (a**2).sum() / len(src)
    scale = float(np.trace(np.diag(s) @ d) / var) if var > 0 else 1.0
    m = np.eye(4)
    m[:3, :3] = scale * rot
    m[:3, 3] = mu_d - m[:3, :3] @ mu_s
    return m


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64).reshape(-1, 3) @ m[:3, :3].T + m[:3, 3]


@dataclass
class ConsensusChoice:
    choice: list[int]  # chosen candidate per point
    inliers: list[bool]  # the choice agrees with the consensus transform
    transform: np.ndarray | None  # reference -> target (None: too few points to vote)


def consistent_choice(
    src: np.ndarray,
    candidates: list[np.ndarray],
    scores: list[np.ndarray],
    tolerance_mm: float,
    iterations: int = 300,
    seed: int = 0,
) -> ConsensusChoice:
    """Pick one candidate per point so that most points agree with one similarity transform (RANSAC).

    src [N,3]: the reference positions; candidates[n] [M_n,3] and scores[n] [M_n] (higher = better) in the
    target. Each point keeps its best-scoring candidate unless the consensus transform puts another candidate
    within ``tolerance_mm`` of where it predicts the point (then the best such candidate). With < 4 points
    there is nothing to vote with: the best-scoring candidates are returned.
    """
    n = len(src)
    best = [int(np.argmax(s)) for s in scores]
    if n < 4:
        return ConsensusChoice(best, [True] * n, None)
    rng = np.random.default_rng(seed)
    probs = [np.exp((s - s.max()) / 0.05) / np.exp((s - s.max()) / 0.05).sum() for s in scores]
    top = (-1, -np.inf, None)
    for _ in range(iterations):
        pick = rng.choice(n, size=3, replace=False)
        chosen = [int(rng.choice(len(scores[p]), p=probs[p])) for p in pick]
        m = fit_similarity(src[pick], np.array([candidates[p][c] for p, c in zip(pick, chosen, strict=True)]))
        count, quality = _support(m, src, candidates, scores, tolerance_mm)
        if (count, quality) > top[:2]:
            top = (count, quality, m)
    count, _, m = top
    # refit on the inliers, then choose per point
    near = _nearest_within(m, src, candidates, scores, tolerance_mm)
    inl = [p for p in range(n) if near[p] is not None]
    if len(inl) >= 4:
        m = fit_similarity(src[inl], np.array([candidates[p][near[p]] for p in inl]))
        near = _nearest_within(m, src, candidates, scores, tolerance_mm)
    choice = [best[p] if near[p] is None else near[p] for p in range(n)]
    return ConsensusChoice(choice, [c is not None for c in near], m)


def _nearest_within(m, src, candidates, scores, tol) -> list[int | None]:
    pred = apply(m, src)
    out: list[int | None] = []
    for p in range(len(src)):
        d = np.linalg.norm(candidates[p] - pred[p], axis=1)
        ok = np.flatnonzero(d <= tol)
        out.append(None if not len(ok) else int(ok[np.argmax(scores[p][ok])]))
    return out


def _support(m, src, candidates, scores, tol) -> tuple[int, float]:
    near = _nearest_within(m, src, candidates, scores, tol)
    picked = [scores[p][c] for p, c in enumerate(near) if c is not None]
    return len(picked), float(np.sum(picked))

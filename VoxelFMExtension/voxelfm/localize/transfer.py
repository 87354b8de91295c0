"""One-shot landmark transfer: landmark templates (references) -> the same named points in a target scan.

coarse: the target on a patient-aligned grid at the templates' spacing -> cosine-similarity map of each
        point's descriptor (averaged over references) -> the best peaks as candidates
geometry: candidates scored by similarity minus the body-frame penalty (keeps left and right apart), then
        one consistent choice across points (a similarity transform fitted by RANSAC)
refine: interpolated local search, a fine feature pass around the match, and/or local intensity NCC
start: a coarse intensity registration of each reference predicts every point (``registration``); the
        search favours candidates near that prediction, and a point predicted outside the target is not found
confidence: the final cosine similarity (0..1), lowered when references disagree and when the point lies far
        from its predicted place
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..features.identity import check_backbone
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .access import FeatureAccess
from .canonical import canonical_volume
from .geometry import BodyFrame, apply, body_frame, consistent_choice, fit_similarity, frame_penalty
from .intensity_refine import ncc_refine
from .matching import FeatureField, Whitening, block_similarity, local_search, peaks, similarity_maps
from .points import inside_volume
from .registration import map_points, registration_spacing, try_register
from .result import LocalisationResult
from .template import LandmarkTemplate, fine_field


@dataclass
class _Point:
    """One output landmark: which (template, row) pairs describe it, and what we found so far."""

    name: str
    rows: list[tuple[int, int]]
    candidates: np.ndarray | None = None  # [M,3] RAS
    scores: np.ndarray | None = None
    raw: np.ndarray | None = None  # each candidate's own cosine similarity (before prior and frame penalty)
    ras: np.ndarray | None = None
    similarity: float = 0.0
    spread_mm: float = 0.0
    ncc: float = -1.0  # best local intensity correlation (-1: not computed)
    ncc_here: float | None = None  # the intensity correlation at its final position (None: not computed)
    expected: np.ndarray | None = None  # where the registration (or the consensus transform) puts it (RAS)
    missing: bool = False  # expected outside the target's field of view: not found


def check_templates(templates: Sequence[LandmarkTemplate], model: dict | None = None) -> None:
    """References must exist, come from one backbone (and the pipeline's), and share their settings."""
    if not templates:
        raise InputError("No reference: give at least one reference scan with its named points.")
    first = templates[0]
    for t in templates[1:]:
        check_backbone(
            first.backbone,
            t.backbone,
            f"References come from different backbones: '{first.source}' from",
            "build all references with the same model.",
            f"'{t.source}' from",
        )
        if t.settings_key() != first.settings_key():
            raise InputError(
                f"References '{first.source}' and '{t.source}' were built with different settings "
                f"({first.settings_key()} vs {t.settings_key()}); build them in one run."
            )
    check_backbone(
        first.backbone,
        model,
        "The references were built with",
        "use the references' model (or rebuild them with this one).",
    )


def _points(templates: Sequence[LandmarkTemplate]) -> list[_Point]:
    order: dict[str, _Point] = {}
    for ti, t in enumerate(templates):
        for ri, name in enumerate(t.names):
            order.setdefault(name, _Point(name, [])).rows.append((ti, ri))
    return list(order.values())


def _coarse(points: list[_Point], templates, field: FeatureField, frame: BodyFrame) -> None:
    """Candidates per point: peaks of the block map and (``candidate_maps`` "both") of the single-patch map,
    scored by their similarity minus the body-frame penalty; where a registration predicted the point, the
    maps are first lowered by the distance prior (so candidates come from around the prediction)."""
    cfg = templates[0].config
    maps = [_maps(torch.from_numpy(t.coarse), field, cfg.candidate_maps) for t in templates]
    cells_ras = field.ras_of(np.argwhere(np.ones(field.shape_dhw, bool))[:, ::-1].astype(float))
    cells_ras = cells_ras.reshape(*field.shape_dhw, 3)
    for p in points:
        prior = 0.0
        if p.expected is not None:
            d2 = np.sum((cells_ras - p.expected) ** 2, axis=-1)
            prior = cfg.prior_weight * d2 / cfg.search_radius_mm**2
        cells, vals, raw = [], [], []
        for m in range(len(maps[0])):
            sim = np.mean([maps[ti][m][ri] for ti, ri in p.rows], axis=0)
            c, v = peaks(sim - prior, cfg.candidates)
            cells.append(c)
            vals.append(v)
            raw.append(sim[tuple(c[:, ::-1].astype(int).T)])
        if p.expected is not None:  # the registration's own prediction competes, unpenalised
            at = field.cell_of(p.expected[None])
            own = np.mean(
                [block_similarity(torch.from_numpy(templates[ti].coarse[ri]), field, at) for ti, ri in p.rows]
            )
            cells.append(at)
            vals.append(np.array([own]))
            raw.append(np.array([own]))
        cells, vals, p.raw = np.concatenate(cells), np.concatenate(vals), np.concatenate(raw)
        p.candidates = field.ras_of(cells)
        uv = np.mean([templates[ti].frame_uv[ri] for ti, ri in p.rows], axis=0)
        p.scores = vals - cfg.frame_weight * frame_penalty(uv, p.candidates, frame)
        p.similarity = float(p.raw[int(np.argmax(p.scores))])


def _register(points: list[_Point], templates, target: Volume) -> bool:
    """Each point's ``expected`` position from a coarse registration of each reference (its template's scout)
    to the target, averaged over references; False when no template carries a scout (older templates)."""
    cfg = templates[0].config
    scouts = {ti: t.scout_volume() for ti, t in enumerate(templates)}
    scouts = {ti: v for ti, v in scouts.items() if v is not None}
    if not scouts:
        return False
    small = canonical_volume(target, registration_spacing(target, cfg.registration_spacing_mm))
    matrices = {ti: try_register(v, small) for ti, v in scouts.items()}
    moved = {ti: map_points(m, templates[ti].ras) for ti, m in matrices.items() if m is not None}
    if not moved:
        return False
    for p in points:
        rows = [moved[ti][ri] for ti, ri in p.rows if ti in moved]
        p.expected = np.mean(rows, axis=0) if rows else None
    return True


def _mark_missing(points: list[_Point], target: Volume, margin_mm: float) -> int:
    """Points expected outside the target's field of view are not found (their position: the expected one)."""
    margin = margin_mm / float(np.min(target.spacing)) + 0.5
    for p in points:
        if p.expected is not None and not inside_volume(target, p.expected[None], margin)[0]:
            p.missing, p.ras = True, p.expected.copy()
    return sum(p.missing for p in points)


def _maps(desc: torch.Tensor, field: FeatureField, which: str) -> list[np.ndarray]:
    """[block map] or [block map, single-patch map] (the block's centre patch alone), each [N, d, h, w]."""
    out = [similarity_maps(desc, field)]
    r = desc.shape[1] // 2
    if which == "both" and r > 0:
        out.append(similarity_maps(desc[:, r : r + 1, r : r + 1, r : r + 1], field))
    return out


def _choose(points: list[_Point], templates, field: FeatureField, registered: bool) -> int:
    """Set each point's coarse position; returns how many took the consensus prediction. After a
    registration the geometry is already one transform: each point takes its best-scoring candidate."""
    cfg = templates[0].config
    for p in points:
        best = int(np.argmax(p.scores))
        p.ras, p.similarity = p.candidates[best].copy(), float(p.raw[best])
    primary = max(range(len(templates)), key=lambda ti: len(templates[ti].names))
    voting = [p for p in points if any(ti == primary for ti, _ in p.rows)]
    if registered or not cfg.consistency or len(voting) < 4:
        return 0
    src = np.array([templates[primary].ras[next(ri for ti, ri in p.rows if ti == primary)] for p in voting])
    tol = cfg.consistency_tolerance_cells * field.cell_mm
    found = consistent_choice(src, [p.candidates for p in voting], [p.scores for p in voting], tol)
    predicted = apply(found.transform, src) if found.transform is not None else None
    taken = 0
    for n, p in enumerate(voting):
        p.ras = p.candidates[found.choice[n]].copy()
        p.similarity = float(p.raw[found.choice[n]])
        if p.expected is None and predicted is not None and sum(found.inliers) >= 4:
            p.expected = predicted[n].copy()  # no registration: the consensus says where it should be
        if (
            cfg.predict_outliers
            and predicted is not None
            and not found.inliers[n]
            and sum(found.inliers) >= 4
        ):
            p.ras, taken = predicted[n].copy(), taken + 1
    return taken


def _refine_interp(p: _Point, templates, field: FeatureField) -> None:
    descs = [torch.from_numpy(templates[ti].coarse[ri]) for ti, ri in p.rows]
    ijk, sim = local_search(descs, field, field.cell_of(p.ras)[0], radius=1.0, step=0.25)
    p.ras, p.similarity = field.ras_of(ijk)[0], sim


def _refine_fine(p: _Point, templates, target: Volume, access: FeatureAccess, whitening: Whitening) -> None:
    t0 = templates[0]
    desc = torch.from_numpy(np.stack([templates[ti].fine[ri] for ti, ri in p.rows]))
    for _ in range(max(1, t0.config.fine_iterations)):
        ff = fine_field(target, p.ras, access, t0, whitening)
        sims = similarity_maps(desc, ff)  # [refs, d, h, w]
        cell = np.array(np.unravel_index(int(np.argmax(sims.mean(0))), sims.shape[1:]))[::-1].astype(float)
        ijk, sim = local_search(list(desc), ff, cell, radius=0.5, step=0.25)
        moved = np.linalg.norm(ff.ras_of(ijk)[0] - p.ras)
        p.ras, p.similarity = ff.ras_of(ijk)[0], sim
        if len(desc) > 1:
            own = [np.array(np.unravel_index(int(np.argmax(s)), s.shape))[::-1] for s in sims]
            pos = ff.ras_of(np.array(own, dtype=float))
            p.spread_mm = float(np.sqrt(np.mean(np.sum((pos - pos.mean(0)) ** 2, axis=1))))
        if moved < 0.5 * ff.cell_mm:
            break


def _refine_ncc(
    p: _Point, templates, target: Volume, radius_mm: float, start: np.ndarray | None = None
) -> bool:
    """Move the point to the NCC peak near ``start`` (default: its position) when the peak is convincing: above
    ``ncc_min`` and, for a point placed by the registration, ``ncc_gain`` better than where it stands (the
    same anatomy nearby, a neighbouring rib, must not pull a well-registered point away)."""
    t0 = templates[0]
    cubes = [templates[ti].cubes[ri] for ti, ri in p.rows]
    match = ncc_refine(cubes, target, p.ras if start is None else start, radius_mm, t0.ncc_spacing)
    gain = t0.config.ncc_gain if p.expected is not None and start is None else 0.0
    if match.score >= t0.config.ncc_min and match.score > p.ncc and match.score >= match.start_score + gain:
        p.ras, p.ncc, p.ncc_here = match.ras, match.score, match.score
        return True
    p.ncc_here = match.start_score
    return False


def _refine_all(points, templates, target, access, field, progress, cancel) -> tuple[int, float]:
    """Sub-patch refinement of every point; returns (points moved by NCC, the refinement cell size in mm)."""
    t0 = templates[0]
    cfg = t0.config
    cell = t0.fine_spacing * t0.patch_size if "fine" in cfg.refine else field.cell_mm
    used = 0
    for n, p in enumerate(points):
        check_cancel(cancel)
        if p.missing:
            continue
        progress(0.3 + 0.6 * n / len(points), f"refining '{p.name}' ({n + 1}/{len(points)})")
        if cfg.refine == "interp":
            _refine_interp(p, templates, field)
        if "fine" in cfg.refine:
            _refine_fine(p, templates, target, access, field.whitening)
        if "ncc" in cfg.refine:
            used += _refine_ncc(p, templates, target, cfg.ncc_radius_cells * cell)
    return used, cell


def _reconcile(points: list[_Point], templates, target: Volume, tolerance_mm: float, radius_mm: float) -> int:
    """Second geometric round: a similarity transform fitted on the points NCC confirmed predicts where the
    others should be; a point farther than ``tolerance_mm`` from its prediction is searched again from there.
    Returns how many points moved."""
    primary = max(range(len(templates)), key=lambda ti: len(templates[ti].names))
    rows = {p.name: next((ri for ti, ri in p.rows if ti == primary), None) for p in points}
    usable = [p for p in points if rows[p.name] is not None and not p.missing]
    anchors = [p for p in usable if p.ncc >= templates[0].config.ncc_min]
    if len(anchors) < 4:
        return 0
    src = np.array([templates[primary].ras[rows[p.name]] for p in anchors])
    dst = np.array([p.ras for p in anchors])
    keep = np.ones(len(anchors), bool)
    for _ in range(3):  # trimmed least squares
        m = fit_similarity(src[keep], dst[keep])
        keep = np.linalg.norm(apply(m, src) - dst, axis=1) <= tolerance_mm
        if keep.sum() < 4:
            return 0
    moved = 0
    for p in usable:
        pred = apply(m, templates[primary].ras[rows[p.name]][None])[0]
        if np.linalg.norm(p.ras - pred) > tolerance_mm:
            p.ncc = -1.0
            if not _refine_ncc(p, templates, target, radius_mm, start=pred):
                p.ras = pred
            moved += 1
    return moved


def transfer(
    target: Volume,
    templates: Sequence[LandmarkTemplate],
    access: FeatureAccess,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> LocalisationResult:
    """The templates' points in ``target``: one point per distinct name, in the references' order."""
    progress = progress or no_progress
    t_start = time.perf_counter()
    check_templates(templates, access.model)
    t0 = templates[0]
    cfg = t0.config
    progress(0.0, "target features")
    canon = canonical_volume(target, t0.coarse_spacing)
    feats = access.features(canon, True)
    check_templates(templates, feats.model)
    field = FeatureField.build(feats.patch, feats.grid_to_ras, dim=cfg.whiten_dim)
    points = _points(templates)
    registered = cfg.initialise == "registration" and _register(points, templates, target)
    _coarse(points, templates, field, body_frame(canon.array, canon.ijk_to_ras))
    predicted = _choose(points, templates, field, registered)
    missing = _mark_missing(points, target, cfg.outside_margin_mm)
    coarse_ras = {p.name: p.ras.copy() for p in points}
    ncc_used, cell_mm = _refine_all(points, templates, target, access, field, progress, cancel)
    reconciled = 0
    if cfg.reconcile and "ncc" in cfg.refine:
        tol = cfg.reconcile_tolerance_cells * field.cell_mm
        reconciled = _reconcile(points, templates, target, tol, cfg.ncc_radius_cells * cell_mm)
    progress(1.0, "done")
    return LocalisationResult.build(
        [p.name for p in points],
        np.array([p.ras for p in points]),
        [confidence(p, cell_mm) for p in points],
        "one-shot",
        name=f"{t0.source or 'reference'} in {target.name or 'target'}",
        missing=[p.missing for p in points],
        warnings=[NOT_REGISTERED] if cfg.initialise == "registration" and not registered else [],
        details={
            "coarse_ras": coarse_ras,
            "ncc_used": ncc_used,
            "predicted": predicted,
            "reconciled": reconciled,
            "references": len(templates),
            "registered": bool(registered),
            "missing": missing,
            "points": {p.name: _diagnostics(p) for p in points},
        },
        seconds=time.perf_counter() - t_start,
    )


NOT_REGISTERED = (
    "The coarse registration could not start this transfer (a scan too small or not overlapping the other, or "
    "a template saved before registration existed): the landmarks come from feature matching alone."
)
AGREEMENT_MM = 10.0  # a point this far from its expected place keeps exp(-1/2) of its confidence


def confidence(p: _Point, cell_mm: float) -> float:
    """How much to trust a point, in [0, 1]: the stronger of its two local matches (feature cosine; intensity
    NCC where it confirmed the point), lowered when references disagree (spread) and when the point lies far
    from where the registration / consensus transform expected it (two independent cues agreeing)."""
    conf = max(p.similarity, p.ncc_here or 0.0, 0.0) * float(np.exp(-0.5 * (p.spread_mm / cell_mm) ** 2))
    if p.expected is not None:
        conf *= float(np.exp(-0.5 * (np.linalg.norm(p.ras - p.expected) / AGREEMENT_MM) ** 2))
    return conf


def _diagnostics(p: _Point) -> dict[str, float | None]:
    off = None if p.expected is None else float(np.linalg.norm(p.ras - p.expected))
    return {
        "similarity": p.similarity,
        "ncc": p.ncc_here,
        "spread_mm": p.spread_mm,
        "from_expected_mm": off,
    }

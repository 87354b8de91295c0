"""One-shot landmark transfer: landmark templates (references) -> the same named points in a target scan.

coarse: the target on a patient-aligned grid at the templates' spacing -> cosine-similarity map of each
        point's descriptor (averaged over references) -> the best peaks as candidates
geometry: candidates scored by similarity minus the body-frame penalty (keeps left and right apart), then
        one consistent choice across points (a similarity transform fitted by RANSAC)
refine: interpolated local search, a fine feature pass around the match, and/or local intensity NCC
confidence: the final cosine similarity (0..1), lowered when references disagree
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .access import FeatureAccess, backbone_name, same_backbone
from .canonical import canonical_volume
from .geometry import BodyFrame, apply, body_frame, consistent_choice, fit_similarity, frame_penalty
from .intensity_refine import ncc_refine
from .matching import FeatureField, Whitening, local_search, peaks, similarity_maps
from .result import LocalisationResult
from .template import LandmarkTemplate, fine_field


@dataclass
class _Point:
    """One output landmark: which (template, row) pairs describe it, and what we found so far."""

    name: str
    rows: list[tuple[int, int]]
    candidates: np.ndarray | None = None  # [M,3] RAS
    scores: np.ndarray | None = None
    ras: np.ndarray | None = None
    similarity: float = 0.0
    spread_mm: float = 0.0
    ncc: float = -1.0  # best local intensity correlation (-1: not computed)


def check_templates(templates: Sequence[LandmarkTemplate], model: dict | None = None) -> None:
    """References must exist, come from one backbone (and the pipeline's), and share their settings."""
    if not templates:
        raise InputError("No reference: give at least one reference scan with its named points.")
    first = templates[0]
    for t in templates[1:]:
        if not same_backbone(first.model, t.model):
            raise InputError(
                f"References come from different backbones: '{first.source}' from {backbone_name(first.model)}, "
                f"'{t.source}' from {backbone_name(t.model)}. Build all references with the same model."
            )
        if t.settings_key() != first.settings_key():
            raise InputError(
                f"References '{first.source}' and '{t.source}' were built with different settings "
                f"({first.settings_key()} vs {t.settings_key()}); build them in one run."
            )
    if model and first.model and not same_backbone(first.model, model):
        raise InputError(
            f"The references were built with {backbone_name(first.model)} but the model in use is "
            f"{backbone_name(model)}; use the references' model (or rebuild them with this one)."
        )


def _points(templates: Sequence[LandmarkTemplate]) -> list[_Point]:
    order: dict[str, _Point] = {}
    for ti, t in enumerate(templates):
        for ri, name in enumerate(t.names):
            order.setdefault(name, _Point(name, [])).rows.append((ti, ri))
    return list(order.values())


def _coarse(points: list[_Point], templates, field: FeatureField, frame: BodyFrame) -> None:
    """Candidates per point: peaks of the block map and (``candidate_maps`` "both") of the single-patch map,
    scored by their similarity minus the body-frame penalty."""
    cfg = templates[0].config
    maps = [_maps(torch.from_numpy(t.coarse), field, cfg.candidate_maps) for t in templates]
    for p in points:
        cells, vals = [], []
        for m in range(len(maps[0])):
            sim = np.mean([maps[ti][m][ri] for ti, ri in p.rows], axis=0)
            c, v = peaks(sim, cfg.candidates)
            cells.append(c)
            vals.append(v)
        cells, vals = np.concatenate(cells), np.concatenate(vals)
        p.candidates = field.ras_of(cells)
        uv = np.mean([templates[ti].frame_uv[ri] for ti, ri in p.rows], axis=0)
        p.scores = vals - cfg.frame_weight * frame_penalty(uv, p.candidates, frame)
        p.similarity = float(vals.max())


def _maps(desc: torch.Tensor, field: FeatureField, which: str) -> list[np.ndarray]:
    """[block map] or [block map, single-patch map] (the block's centre patch alone), each [N, d, h, w]."""
    out = [similarity_maps(desc, field)]
    r = desc.shape[1] // 2
    if which == "both" and r > 0:
        out.append(similarity_maps(desc[:, r : r + 1, r : r + 1, r : r + 1], field))
    return out


def _choose(points: list[_Point], templates, field: FeatureField) -> int:
    """Set each point's coarse position; returns how many took the consensus prediction."""
    cfg = templates[0].config
    for p in points:
        p.ras = p.candidates[int(np.argmax(p.scores))].copy()
    primary = max(range(len(templates)), key=lambda ti: len(templates[ti].names))
    voting = [p for p in points if any(ti == primary for ti, _ in p.rows)]
    if not cfg.consistency or len(voting) < 4:
        return 0
    src = np.array([templates[primary].ras[next(ri for ti, ri in p.rows if ti == primary)] for p in voting])
    tol = cfg.consistency_tolerance_cells * field.cell_mm
    found = consistent_choice(src, [p.candidates for p in voting], [p.scores for p in voting], tol)
    predicted = apply(found.transform, src) if found.transform is not None else None
    taken = 0
    for n, p in enumerate(voting):
        p.ras = p.candidates[found.choice[n]].copy()
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
    """Move the point to the NCC peak near ``start`` (default: its position) when the peak is convincing."""
    t0 = templates[0]
    cubes = [templates[ti].cubes[ri] for ti, ri in p.rows]
    match = ncc_refine(cubes, target, p.ras if start is None else start, radius_mm, t0.ncc_spacing)
    if match.score >= t0.config.ncc_min and match.score > p.ncc:
        p.ras, p.ncc = match.ras, match.score
        return True
    return False


def _refine_all(points, templates, target, access, field, progress, cancel) -> tuple[int, float]:
    """Sub-patch refinement of every point; returns (points moved by NCC, the refinement cell size in mm)."""
    t0 = templates[0]
    cfg = t0.config
    cell = t0.fine_spacing * t0.patch_size if "fine" in cfg.refine else field.cell_mm
    used = 0
    for n, p in enumerate(points):
        check_cancel(cancel)
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
    usable = [p for p in points if rows[p.name] is not None]
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
    _coarse(points, templates, field, body_frame(canon.array, canon.ijk_to_ras))
    predicted = _choose(points, templates, field)
    coarse_ras = {p.name: p.ras.copy() for p in points}
    ncc_used, cell_mm = _refine_all(points, templates, target, access, field, progress, cancel)
    reconciled = 0
    if cfg.reconcile and "ncc" in cfg.refine:
        tol = cfg.reconcile_tolerance_cells * field.cell_mm
        reconciled = _reconcile(points, templates, target, tol, cfg.ncc_radius_cells * cell_mm)
    conf = [max(p.similarity, 0.0) * float(np.exp(-0.5 * (p.spread_mm / cell_mm) ** 2)) for p in points]
    progress(1.0, "done")
    return LocalisationResult.build(
        [p.name for p in points],
        np.array([p.ras for p in points]),
        conf,
        "one-shot",
        name=f"{t0.source or 'reference'} in {target.name or 'target'}",
        details={
            "coarse_ras": coarse_ras,
            "ncc_used": ncc_used,
            "predicted": predicted,
            "reconciled": reconciled,
            "references": len(templates),
        },
        seconds=time.perf_counter() - t_start,
    )

"""Settings of one-shot landmark transfer (recorded in each landmark template, so a saved template is applied
exactly as it was built)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

REFINEMENTS = ("none", "interp", "fine", "ncc", "fine+ncc")
INITIALISATIONS = ("registration", "features")


@dataclass
class TransferConfig:
    """How landmarks are transferred; the defaults are the best measured on the benchmark
    (Testing/Benchmarks/results/localisation.md).

    feature_spacing_mm: spacing of the coarse (whole-volume) feature pass; None = the model's own minimum
        spacing, coarsened until the reference fits ``coarse_tokens`` patches.
    refine: sub-patch refinement after the coarse match. "interp": search the trilinearly interpolated
        coarse field within one cell; "fine": a second feature pass on a small cube around the match at
        ``fine_factor`` x the coarse spacing (the reference point sits at a patch centre there); "ncc": local
        intensity correlation; "fine+ncc": fine, then NCC (kept only where the correlation is convincing).
    candidates: coarse peaks kept per point for the geometric checks.
    frame_weight: weight of the body-frame penalty (offset from the body's midline in half-widths, squared)
        against cosine similarity; 0 = appearance only.
    consistency: pick candidates that agree with one similarity transform across all points (>= 4 points);
        with ``predict_outliers`` a point none of whose candidates fits takes the transform's prediction.
    initialise: "registration": a coarse intensity registration of the reference to the target
        (``localize.registration``, at ``registration_spacing_mm``) predicts each point; feature candidates are
        sought around that prediction (cosine minus ``prior_weight`` x (distance / ``search_radius_mm``)^2),
        and a point predicted outside the target's field of view is reported as not found. "features": the
        feature match alone (the whole target searched; a point is not found when the consensus transform
        puts it outside the target).
    """

    feature_spacing_mm: float | None = None
    coarse_tokens: int = 12000
    refine: str = "ncc"
    fine_factor: float = 0.5
    fine_cells: int = 5
    fine_iterations: int = 2
    candidates: int = 8
    frame_weight: float = 1.0
    consistency: bool = True
    consistency_tolerance_cells: float = 1.5
    whiten_dim: int = 32  # principal components kept when whitening features (see matching.py)
    context_cells: int = 2  # descriptor block radius in coarse cells (0 = the point's own feature)
    candidate_maps: str = "block"  # "block": peaks of the block map only; "both": also the single-patch map
    fine_context_cells: int = 1
    predict_outliers: bool = True  # a point no candidate of which fits the consensus takes its prediction
    ncc_size_mm: float = 21.0
    ncc_spacing_factor: float = 1.0  # NCC grid spacing, x the coarse spacing (sub-voxel by a parabola fit)
    ncc_radius_cells: float = 0.75  # search radius, in fine cells (coarse cells when refine is "ncc")
    ncc_min: float = 0.5  # an NCC peak below this leaves the feature position unchanged
    ncc_gain: float = 0.1  # after a registration: how much better than at the start the NCC peak must be
    reconcile: bool = True  # after NCC: re-search points that disagree with a transform fitted on the others
    reconcile_tolerance_cells: float = 0.5  # in coarse cells
    initialise: str = "registration"
    registration_spacing_mm: float = 6.0
    search_radius_mm: float = 30.0
    prior_weight: float = 1.0
    outside_margin_mm: float = 10.0  # a point expected farther than this outside the target is not found

    def __post_init__(self) -> None:
        if self.refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {', '.join(REFINEMENTS)}, got {self.refine!r}")
        if self.initialise not in INITIALISATIONS:
            raise ValueError(
                f"initialise must be one of {', '.join(INITIALISATIONS)}, got {self.initialise!r}"
            )
        if self.fine_cells < 1 or self.fine_cells % 2 == 0:
            raise ValueError(f"fine_cells must be a positive odd number, got {self.fine_cells}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransferConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

"""What a case library records about how its embeddings were made; every case of a library shares it.

WHY one record per library: scores are only comparable between embeddings of the same backbone, the same
preprocessing and the same pooling, so the library stores these once (meta table) and refuses anything else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InputError

GLOBAL_KINDS = ("mean", "cls")  # whole-volume embeddings: mean-pooled patch tokens, the cls token
REGION = "region"
DEFAULT_GLOBAL = "mean"  # the bundled model's cls branch is weak (MODEL_CARD.md); mean pooling is the default
STANDARDISED = (
    "body_standardised"  # body tokens standardised with the library's token statistics, then averaged
)
POOLINGS = (STANDARDISED, "body_mean_std", "mean")  # how tokens become a vector (retrieval/pooling.py)
CENTRINGS = ("library", "none")  # whole-volume scores: cosine after removing the library mean, or plain
LEGACY = {"pooling": "mean", "centring": "none"}  # what a library recorded before these settings existed


@dataclass(frozen=True)
class RetrievalConfig:
    """Embedding settings of a library.

    feature_spacing_mm: extract features from an isotropic resampling at this spacing (None: the model's own
        preprocessing, i.e. the same features `voxelfm features` gives and the feature cache holds). WHY 2 mm
        by default: a patch covers 14 voxels, so without a fixed spacing the same anatomy stored with coarser
        voxels is described at another scale; measured on altered copies of the dev CTs, a 1.25x coarser
        copy finds its source at rank 1 in 4/7 cases at the native spacing and 7/7 at 2 mm, and the margins
        grow (retrieval_quality.md). Libraries recorded with None keep it.
    block_mm: regional embeddings are patch tokens averaged over cubes of about these sizes (rounded to whole
        patch cells, at least one), one scale per size, every half block; each block keeps its RAS centre. A
        region query is compared with the blocks of the scale nearest its own size (a 2 cm point query with
        small blocks, a liver-sized box with large ones), so a pooled region meets blocks pooled alike.
    center_regions: subtract the case's mean patch token before pooling regional embeddings. WHY: averaged
        tokens all lean towards one "body" direction (cosines of 0.99+ between unrelated places with the
        bundled model); removing the case mean leaves what is particular to the place.
    pooling: "body_standardised" (the default) describes the tokens of the patch cells that are mostly body,
        each dimension standardised with the mean and standard deviation of ALL body tokens of the library's
        cases (thousands of tokens even for one case), by their mean and their std (the std half centred on
        the library's average; standardise.py). The library stores each case's token moments (mean and std:
        vectors twice the token width; the token count in the case's info), so the statistics are rebuilt
        exactly from the stored cases at every query (they follow every add and remove) and applied to the
        query alike. "body_mean_std" describes the body tokens by their unit mean and unit std, concatenated.
        "mean" averages every token (the plain mean-token cosine). Regional blocks of both body poolings are
        the tokens minus the case's body mean, described by mean and std: standardising them measured no
        better (retrieval_quality.md, part A). The cls vector is zero-padded to the library's width. Chosen
        by measurement (retrieval_quality.md).
    centring: "library" scores whole-volume queries by the cosine between query and case after subtracting
        the mean embedding of the library's cases (3 or more; with 1 or 2 cases there is no mean worth
        removing and the score is the plain cosine); "none" scores the plain cosine of the embeddings (the
        standardised ones for "body_standardised", which already remove the library's token mean). WHY
        centring for "body_mean_std": its plain cosines are 0.99+ between different patients; centring turns
        a margin of about 0.002 into about 0.4 (retrieval_quality.md). Only the scoring changes: stored
        vectors never do, so adding a case never makes the others stale.
    """

    feature_spacing_mm: float | None = 2.0
    block_mm: tuple[float, ...] = (30.0, 60.0, 120.0)
    center_regions: bool = True
    pooling: str = STANDARDISED
    centring: str = "none"

    def __post_init__(self) -> None:
        if self.feature_spacing_mm is not None and not 0.1 <= self.feature_spacing_mm <= 20:
            raise InputError(f"feature_spacing_mm must be in 0.1..20 mm, got {self.feature_spacing_mm}.")
        object.__setattr__(self, "block_mm", tuple(float(b) for b in self.block_mm))
        if not self.block_mm or min(self.block_mm) <= 0:
            raise InputError(f"block_mm needs positive sizes in mm, got {list(self.block_mm)}.")
        if self.pooling not in POOLINGS:
            raise InputError(f"Unknown pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}.")
        if self.centring not in CENTRINGS:
            raise InputError(f"Unknown centring {self.centring!r}; use one of {', '.join(CENTRINGS)}.")

    def cells(self, patch_mm: float) -> list[tuple[int, int]]:
        """(block, stride) in patch cells for each scale, for patches of ``patch_mm``."""
        out = []
        for size in self.block_mm:
            block = max(1, int(round(size / patch_mm)))
            out.append((block, max(1, int(round(block / 2)))))
        return out

    def scale_for(self, side_mm: float) -> int:
        """Index of the block size nearest (in ratio) to a region of ``side_mm`` (cube-equivalent side)."""
        side = max(float(side_mm), 1e-3)
        return min(range(len(self.block_mm)), key=lambda i: abs(math.log(self.block_mm[i] / side)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_mm"] = list(self.block_mm)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RetrievalConfig:
        """The settings a library recorded (one recorded before pooling/centring existed reads as LEGACY)."""
        known = {k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        if d:
            known = {**LEGACY, **known}
        if "block_mm" in known:
            known["block_mm"] = tuple(known["block_mm"])
        return cls(**known)


def region_kind(scale: int) -> str:
    return f"{REGION}{scale}"


def check_kind(kind: str) -> str:
    if kind not in GLOBAL_KINDS:
        raise InputError(f"Unknown embedding {kind!r}; use one of {', '.join(GLOBAL_KINDS)}.")
    return kind

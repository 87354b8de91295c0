"""Report drafting: findings probes + segment measurements + similar cases -> a draft where every sentence
carries its evidence; the rule extractor and scores for evaluation; the optional VLM head (``report.vlm``).

Imports are lazy so ``import voxelfm.report`` stays cheap (no torch) until a part is used.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    ".pipeline": ("ReportPipeline", "ReportGenerator"),
    ".draft": ("ReportDraft", "Sentence"),
    ".template": ("ReportTemplate",),
    ".template_files": ("load_template", "list_templates"),
    ".neighbours": ("Neighbour", "NeighbourSource", "ConsensusConfig", "consensus"),
    ".measurements": ("SegmentMeasurement", "measure_mask", "measure_labelmap"),
    ".segmentation_files": ("read_segmentation",),
    ".probe_findings": ("FindingsProbe", "FindingCall"),
    ".extract": ("FindingsExtractor", "RuleExtractor", "load_extractor"),
    ".evaluate": ("evaluate_reports", "EvaluationResult"),
    ".files": ("write_draft",),
    ".catalog": ("FINDING_NAMES", "SECTIONS"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)

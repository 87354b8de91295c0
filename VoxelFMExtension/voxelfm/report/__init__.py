"""Report drafting: findings probes + segment measurements + similar cases -> a draft where every sentence
carries its evidence; the rule extractor and scores for evaluation; the optional VLM head (``report.vlm``).

Imports are lazy so ``import voxelfm.report`` stays cheap (no torch) until a part is used.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_WHERE = {
    "ReportPipeline": ".pipeline",
    "ReportGenerator": ".pipeline",
    "ReportDraft": ".draft",
    "Sentence": ".draft",
    "ReportTemplate": ".template",
    "load_template": ".template_files",
    "list_templates": ".template_files",
    "Neighbour": ".neighbours",
    "NeighbourSource": ".neighbours",
    "ConsensusConfig": ".neighbours",
    "consensus": ".neighbours",
    "SegmentMeasurement": ".measurements",
    "measure_mask": ".measurements",
    "measure_labelmap": ".measurements",
    "read_segmentation": ".segmentation_files",
    "FindingsProbe": ".probe_findings",
    "FindingCall": ".probe_findings",
    "FindingsExtractor": ".extract",
    "RuleExtractor": ".extract",
    "load_extractor": ".extract",
    "evaluate_reports": ".evaluate",
    "EvaluationResult": ".evaluate",
    "write_draft": ".files",
    "FINDING_NAMES": ".catalog",
    "SECTIONS": ".catalog",
}

__all__ = sorted(_WHERE)

__getattr__ = lazy_getattr(__name__, _WHERE)

"""Report drafting end to end, the one implementation behind `voxelfm report` and the Slicer logic.

    pipeline = ReportPipeline(ModelSpec("voxelfm-tiny"))
    draft = pipeline.draft(volume, probes=["findings.json"], segmentation=read_segmentation("seg.nrrd"),
                           neighbours=LibraryNeighbours(library))
    draft.text, draft.to_dict()      # every sentence with its section and evidence

Sources, each optional (none at all is an error): findings probes (features from the shared FeatureService,
with each probe's recorded preprocessing, after checking the probe's backbone is the loaded one),
segmentation measurements, similar cases with reports (sentence-level consensus) and a report generator (the
VLM head of ``voxelfm.report.vlm``). ``combine.compose`` turns them into sentences through the template.
A draft is never silent: when no sentence of the similar cases reaches support, or no source states anything,
its text says so (``unsupported``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import InputError
from ..features.service import ConfiguredPipeline, FeatureService
from ..features.spec import FeatureOptions, ModelSpec
from ..imaging.volume import Volume
from ..probes.pipeline import ProbePipeline
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .combine import compose
from .draft import ReportDraft, Sentence
from .extract import FindingsExtractor, RuleExtractor
from .measurements import SegmentMeasurement
from .neighbours import ConsensusConfig, Neighbour, NeighbourSource, consensus
from .probe_findings import FindingCall, as_findings_probe, call_findings
from .sections import section_of_text, split_report
from .segmentation_files import SegmentationData, check_overlap
from .template import ReportTemplate
from .template_files import load_template
from .unsupported import no_support_sentence, nothing_to_state

NO_SOURCES = (
    "Nothing to draft a report from: give findings probes (--probe), a segmentation (--segmentation), a case "
    "library with reports and/or a trained report model (--vlm)."
)


@runtime_checkable
class ReportGenerator(Protocol):
    """Free-text report for a volume (the VLM head); ``evidence()`` describes it for each sentence."""

    def generate(
        self, volume: Volume, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> str: ...

    def evidence(self) -> dict[str, Any]: ...


class ReportPipeline(ConfiguredPipeline[ConsensusConfig]):
    """Draft reports; its config is the neighbour consensus (``consensus_config``)."""

    config_type = ConsensusConfig

    def __init__(
        self,
        spec: ModelSpec | None = None,
        template: ReportTemplate | str | None = None,
        consensus_config: ConsensusConfig | None = None,
        options: FeatureOptions | None = None,
        service: FeatureService | None = None,
        extractor: FindingsExtractor | None = None,
    ) -> None:
        super().__init__(spec, consensus_config, options, service)
        self.template = template if isinstance(template, ReportTemplate) else load_template(template)
        self.extractor = extractor or RuleExtractor()

    # ---- sources

    def probe_calls(
        self, volume: Volume, probes: Sequence[Any], progress: ProgressFn, cancel: CancelFlag | None
    ) -> tuple[list[FindingCall], dict[str, Any]]:
        """Each findings probe applied to ``volume`` exactly as `apply-probe` applies it (``ProbePipeline``:
        its own backbone unless ours is named, its recorded preprocessing); every probe's backbone is checked
        before any features are extracted."""
        loaded = [as_findings_probe(p) for p in probes]
        applier = ProbePipeline(self.spec, self.options, self.service)
        identity = [applier.probe_backbone(p.probe) for p in loaded][0] if loaded else {}
        calls: list[FindingCall] = []
        for n, p in enumerate(loaded):
            check_cancel(cancel)
            sub = lambda f, m, n=n: progress((n + f) / len(loaded), m)  # noqa: E731
            outputs = applier.apply(p.probe, [volume], sub, cancel)[0]
            calls += call_findings(p, outputs, self.template.thresholds)
        info = {
            "model": identity.get("id"),
            "probes": [{"name": p.name, "path": p.path, "findings": p.findings} for p in loaded],
        }
        return calls, info

    @staticmethod
    def measurements(segmentation: Any, volume: Volume | None = None) -> tuple[list[SegmentMeasurement], str]:
        """Measurements of each segment; segmentation data that lies wholly outside ``volume`` is refused."""
        if isinstance(segmentation, SegmentationData):
            if volume is not None:
                check_overlap(segmentation, volume)
            return segmentation.measurements(), segmentation.source
        items = list(segmentation)
        if not all(isinstance(m, SegmentMeasurement) for m in items):
            raise InputError(
                "A segmentation source must be segmentation data or a list of SegmentMeasurement."
            )
        return items, ""

    def neighbour_sentences(
        self, volume: Volume, source: Any, warnings: list[str]
    ) -> tuple[list[Sentence], list[dict[str, Any]]]:
        """Consensus sentences of the k nearest cases (a warning when none reaches the support)."""
        found = source.neighbours(volume, self.config.k) if isinstance(source, NeighbourSource) else source
        found = [n for n in found if isinstance(n, Neighbour)] if found is not None else []
        if not found:
            raise InputError("The case library returned no similar cases; add cases to it first.")
        sections = self.template.section_names
        sentences = consensus(found, self.config, self.extractor, sections, warnings)
        if not sentences:
            warnings.append(
                f"No sentence of the {len(found)} similar cases reached the support threshold "
                f"({self.config.min_support:.2f} of their weight); their similarity scores are too alike "
                "or their reports disagree. Use fewer neighbours, a lower support or a lower temperature."
            )
            sentences = [no_support_sentence(found, self.config, sections[-1])]
        return sentences, [{"case_id": n.case_id, "score": n.score} for n in found]

    def generated_sentences(
        self, volume: Volume, generator: ReportGenerator, progress: ProgressFn, cancel: CancelFlag | None
    ) -> list[Sentence]:
        text = generator.generate(volume, progress, cancel)
        sections = self.template.section_names
        out = []
        for heading, sentence in split_report(text, sections):
            labels = self.extractor.extract(sentence)
            section = heading or section_of_text(sentence, list(labels), sections)
            out.append(Sentence(sentence, section, [dict(generator.evidence())]))
        return out

    # ---- the draft

    def draft(
        self,
        volume: Volume,
        probes: Sequence[Any] = (),
        segmentation: Any = None,
        neighbours: NeighbourSource | Sequence[Neighbour] | None = None,
        generator: ReportGenerator | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> ReportDraft:
        """A draft from whichever sources are given (InputError when none is)."""
        progress = progress or no_progress
        if not probes and segmentation is None and neighbours is None and generator is None:
            raise InputError(NO_SOURCES)
        sources: dict[str, Any] = {"template": self.template.source}
        warnings: list[str] = []
        calls: list[FindingCall] = []
        if probes:
            calls, info = self.probe_calls(volume, probes, lambda f, m: progress(0.5 * f, m), cancel)
            sources.update(info)
        measured: list[SegmentMeasurement] = []
        if segmentation is not None:
            progress(0.5, "measuring segments")
            measured, sources["segmentation"] = self.measurements(segmentation, volume)
        texts: list[Sentence] = []
        if neighbours is not None:
            check_cancel(cancel)
            progress(0.6, "finding similar cases")
            consensus_sentences, sources["neighbours"] = self.neighbour_sentences(
                volume, neighbours, warnings
            )
            texts += consensus_sentences
        if generator is not None:
            check_cancel(cancel)
            texts += self.generated_sentences(
                volume, generator, lambda f, m: progress(0.7 + 0.25 * f, m), cancel
            )
            sources["vlm"] = generator.evidence()
        composed = compose(self.template, self.extractor, calls, measured, texts)
        if not composed.sentences:
            composed.sentences.append(nothing_to_state(calls, generator, self.template.section_names[-1]))
        progress(1.0, "draft ready")
        return ReportDraft(
            composed.sentences,
            list(self.template.section_names),
            self.template.title,
            self.template.heading,
            self.template.name,
            sources,
            [*warnings, *composed.warnings],
        )

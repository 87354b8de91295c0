"""Similar cases with reports -> consensus sentences, weighted by similarity.

The source of neighbours is a protocol (``NeighbourSource.neighbours(volume, k)``), so the draft works with
the retrieval library (``library_source.LibraryNeighbours``), a test double, or anything else that finds
similar cases. Consensus is sentence-level:

1. weights: w_i = exp((score_i - best score) / temperature), normalised to sum 1 (temperature <= 0: equal);
   the default temperature 0.05 suits cosine similarities, where near-duplicates score ~1;
2. every neighbour's report is split into (section, sentence); sentences of different neighbours are the same
   statement when they state the same findings the same way (extractor) and their words overlap
   (Jaccard >= ``similarity`` after numbers are masked, so "5 mm" and "7 mm" agree);
3. a statement enters the draft when the neighbours stating it hold >= ``min_support`` of the weight; its text
   is the highest-weighted neighbour's sentence, its evidence every supporting neighbour (case id, score, weight).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import InputError
from ..imaging.volume import Volume
from .catalog import SECTIONS
from .draft import Sentence, neighbour_evidence
from .extract import FindingsExtractor, RuleExtractor
from .sections import section_of_text, split_report


@dataclass(frozen=True)
class Neighbour:
    case_id: str
    score: float  # similarity (higher = more similar)
    report_text: str = ""
    findings: Any = None  # the library's findings of the case (any JSON), kept for callers
    image: str = ""  # where the case's image is, to open it (Slicer: "open the neighbour case")


@runtime_checkable
class NeighbourSource(Protocol):
    """Anything that returns the k most similar cases of a volume, best first."""

    def neighbours(self, volume: Volume, k: int) -> list[Neighbour]: ...


@dataclass(frozen=True)
class ConsensusConfig:
    k: int = 5
    temperature: float = 0.05
    min_support: float = 0.5
    similarity: float = 0.5
    # A CT report is 1-5 kB; drafting costs ~3 s per MB of neighbour text, so a huge stored text (a whole
    # export pasted as one report) is read only up to this many characters (with a warning).
    max_report_chars: int = 20_000


def bounded_report(text: str, limit: int) -> tuple[str, bool]:
    """(the first ``limit`` characters of ``text``, cut at a line or sentence end when one is near, and
    whether it was cut): keeps the drafting cost bounded whatever a library stores."""
    if len(text) <= limit:
        return text, False
    head = text[:limit]
    cut = max(head.rfind("\n"), head.rfind(". "))
    return (head[: cut + 1] if cut >= limit // 2 else head), True


def neighbour_weights(scores: Sequence[float], temperature: float) -> list[float]:
    if not scores:
        return []
    if temperature <= 0:
        return [1.0 / len(scores)] * len(scores)
    best = max(scores)
    raw = [math.exp((s - best) / temperature) for s in scores]
    total = sum(raw)
    return [r / total for r in raw]


def _words(sentence: str) -> frozenset[str]:
    return frozenset(re.sub(r"\d+([.,]\d+)?", "#", sentence.lower()).replace("#", " # ").split()) - {
        "the",
        "a",
        "an",
    }


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


@dataclass
class _Statement:
    section: str
    labels: dict[str, str]
    words: frozenset[str]
    texts: dict[int, str] = field(default_factory=dict)  # neighbour index -> its sentence


def _place(
    statements: list[_Statement],
    section: str,
    labels: dict[str, str],
    words,
    idx: int,
    text: str,
    similarity: float,
) -> None:
    for st in statements:
        if st.section == section and st.labels == labels and _jaccard(st.words, words) >= similarity:
            st.texts.setdefault(idx, text)
            return
    statements.append(_Statement(section, labels, words, {idx: text}))


def with_reports(neighbours: Sequence[Neighbour]) -> list[Neighbour]:
    """The neighbours that have a report text; an InputError when none has."""
    kept = [n for n in neighbours if (n.report_text or "").strip()]
    if neighbours and not kept:
        raise InputError(
            "None of the similar cases has a report text, so there is nothing to draft from. Attach reports "
            "when adding cases (`voxelfm index add LIBRARY IMAGE --report REPORT.txt`) or use probes and "
            "segmentations only."
        )
    return kept


def consensus(
    neighbours: Sequence[Neighbour],
    config: ConsensusConfig | None = None,
    extractor: FindingsExtractor | None = None,
    sections: Sequence[str] = SECTIONS,
    warnings: list[str] | None = None,
) -> list[Sentence]:
    """Consensus sentences (each with its neighbour evidence), in the order of the best neighbour's report.
    A report longer than ``config.max_report_chars`` is read up to that length (a note in ``warnings``)."""
    config = config or ConsensusConfig()
    extractor = extractor or RuleExtractor()
    kept = sorted(with_reports(neighbours), key=lambda n: -n.score)
    weights = neighbour_weights([n.score for n in kept], config.temperature)
    statements: list[_Statement] = []
    for idx, n in enumerate(kept):
        report, cut = bounded_report(n.report_text, config.max_report_chars)
        if cut and warnings is not None:
            warnings.append(
                f"The report of similar case {n.case_id} has {len(n.report_text)} characters; only its first "
                f"{len(report)} were read (a CT report is a few thousand). Check that report in the library."
            )
        for heading, text in split_report(report, sections):
            labels = extractor.extract(text)
            section = heading or section_of_text(text, list(labels), sections)
            _place(statements, section, labels, _words(text), idx, text, config.similarity)
    out = []
    for st in statements:
        support = sum(weights[i] for i in st.texts)
        if support + 1e-9 < config.min_support:
            continue
        best = min(st.texts, key=lambda i: (-weights[i], i))
        evidence = [
            neighbour_evidence(kept[i].case_id, kept[i].score, weights[i], st.texts[i], kept[i].image)
            for i in sorted(st.texts)
        ]
        evidence.sort(key=lambda e: -e["weight"])
        out.append(Sentence(st.texts[best], st.section, evidence, *_single_label(st.labels)))
    return out


def _single_label(labels: dict[str, str]) -> tuple[str | None, str | None]:
    """(finding, call) when a sentence states exactly one finding."""
    if len(labels) == 1:
        ((finding, call),) = labels.items()
        return finding, call
    return None, None

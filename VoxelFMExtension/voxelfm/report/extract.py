"""Findings from report text: a negation-aware rule extractor for the 18 CT-RATE abnormalities.

WHY rules: scoring generated reports needs the same labels from generated and reference text, offline and
reproducibly. The extractor is a protocol (``extract(text) -> {finding: present|absent|uncertain}``), so an
LLM-based extractor can replace it (``load_extractor("package.module:attribute")``) without touching the
evaluation. A finding a text does not mention is simply absent from the dict (= absent).

Per sentence and clause (split at ';', 'but', 'however', 'although', 'except', 'whereas'): an uncertainty cue
('possible', 'cannot be excluded', ...) -> uncertain; else a negation cue before the mention in its clause
('no', 'without', 'absence of', ...) or after it ('... is not seen', '... was absent') -> absent; else
present. Over a report: present beats uncertain beats absent.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import InputError
from .catalog import FINDING_NAMES
from .sections import split_sentences

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"
_RANK = {ABSENT: 0, UNCERTAIN: 1, PRESENT: 2}


@runtime_checkable
class FindingsExtractor(Protocol):
    """Anything with ``extract(text) -> {finding name: 'present' | 'absent' | 'uncertain'}``."""

    def extract(self, text: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class FindingRule:
    finding: str
    pattern: str  # regex on lower-case text
    exclude: str = ""  # regex: a mention whose clause start..mention matches this is not the finding


_RULES = (
    FindingRule(
        "Medical material",
        r"medical material|catheter|\bport\b|pacemaker|defibrillator|\bstents?\b|prosthe\w*|\bclips?\b"
        r"|(endotracheal|nasogastric|chest|thoracostomy|tracheostomy|feeding) tube|sternotomy wires?"
        r"|surgical (material|sutures?)|\bimplant\w*|\bicd\b",
    ),
    FindingRule(
        "Arterial wall calcification",
        r"(arterial|aort\w*|vascular|vessel) (wall )?calcif\w*|atheroscl\w*|calcified (atheroma|plaques?)"
        r"|calcif\w* (plaques? )?(in|of|on) the (aort\w*|arter\w*|vessels?)",
        exclude=r"coronar",
    ),
    FindingRule(
        "Cardiomegaly",
        r"cardiomegal\w*|(heart|cardiac) (size |contour |silhouette |diameter )?(is |was |appears )?"
        r"(enlarged|increased)|enlarge\w* (heart|cardiac)|increased (heart|cardiac) (size|diameter|volume)",
    ),
    FindingRule("Pericardial effusion", r"pericardial (effusion|fluid)|effusions? (in|of) the pericard\w*"),
    FindingRule(
        "Coronary artery wall calcification",
        r"coronar\w*[^.;]{0,30}(calcif|atheroscl|plaque)\w*|(calcif|atheroscl|plaque)\w*[^.;]{0,50}\bcoronar\w*",
    ),
    FindingRule("Hiatal hernia", r"hiat(al|us) hernia|hernia (of|through) the (esophageal )?hiatus"),
    FindingRule(
        "Lymphadenopathy",
        r"lymphadenopath\w*|adenopath\w*|(enlarged|pathologic\w*|prominent|bulky) [a-z ]{0,25}lymph nodes?"
        r"|lymph nodes?[^.;]{0,40}(pathologic\w* (size|dimension)|enlarged)",
    ),
    FindingRule("Emphysema", r"emphysem\w*|\bbullae\b|\bbulla\b|bullous"),
    FindingRule("Atelectasis", r"atelecta\w*|(lung|lobe|lobar) collapse|collapsed (lung|lobe)"),
    FindingRule(
        "Lung nodule",
        r"nodul\w*|(lung|pulmonary) (mass|masses|tumou?r|lesions?)|\b(mass|masses|tumou?r)\b[^.;]{0,40}"
        r"\b(lung|lobe|pulmonary|hil\w*)|\b(lung|lobe)\b[^.;]{0,30}\b(mass|tumou?r)\b",
        exclude=r"thyroid|adrenal|hepatic|liver|renal|kidney|breast|splen",
    ),
    FindingRule(
        "Lung opacity",
        r"opacit\w*|ground[- ]glass|\bggo\b|infiltrat\w*|(increased|increase in) (density|attenuation)",
    ),
    FindingRule(
        "Pulmonary fibrotic sequela",
        r"fibro\w*|sequel\w*|parenchymal bands?|\bscar\w*",
    ),
    FindingRule(
        "Pleural effusion",
        r"pleural (and |or |/ ?)?(pericardial )?(effusion|fluid)|hydrothorax|effusions? (in|of) the pleura\w*",
    ),
    FindingRule("Mosaic attenuation pattern", r"mosaic"),
    FindingRule(
        "Peribronchial thickening",
        r"peribronchial (wall |interstitial )?(thicken\w*|cuffing)|bronchial wall thicken\w*"
        r"|thicken\w* (of )?(the )?(peri)?bronchial walls?",
    ),
    FindingRule("Consolidation", r"consolidat\w*"),
    FindingRule("Bronchiectasis", r"bronchiecta\w*|bronchiolecta\w*"),
    FindingRule(
        "Interlobular septal thickening",
        r"sept(al|a|um) thicken\w*|thicken\w* (of )?(the )?(interlobular )?sept\w*|crazy[- ]paving",
    ),
)

_CLAUSE = re.compile(r";|\bbut\b|\bhowever\b|\balthough\b|\bexcept\b|\bwhereas\b|\bwhile\b")
_UNCERTAIN = re.compile(
    r"\b(possible|possibly|probable|probably|may|might|could|suspicio\w*|questionabl\w*|equivocal|likely"
    r"|cannot be (excluded|ruled out)|not (be )?excluded|concern(ing)? for|differential)\b"
)
_NEG_BEFORE = re.compile(
    r"\b(no|not|without|absence of|absent|negative for|free of|rule[sd]? out|resolution of|neither|nor|none"
    r"|nor any|there is no|there are no)\b"
)
_NEG_AFTER = re.compile(
    r"^[^.;]{0,50}?\b((is|are|was|were|has been|have been) (not|absent|no longer)|not (seen|detected|observed|"
    r"identified|present|noted|evident|visuali[sz]ed|demonstrated|found)|absent|resolved|disappeared|"
    r"(has|have) (resolved|regressed|disappeared))\b"
)


def _clauses(sentence: str) -> list[str]:
    return [c for c in _CLAUSE.split(sentence) if c.strip()]


def _call(clause: str, start: int, end: int) -> str:
    before, after = clause[:start], clause[end:]
    if _UNCERTAIN.search(before) or _UNCERTAIN.search(after[:60]):
        return UNCERTAIN
    if _NEG_BEFORE.search(before) or _NEG_AFTER.search(after):
        return ABSENT
    return PRESENT


class RuleExtractor:
    """The default, offline extractor (see the module docstring for the rules)."""

    name = "rules"

    def __init__(self, rules: Iterable[FindingRule] = _RULES) -> None:
        self.rules = [(r, re.compile(r.pattern), re.compile(r.exclude) if r.exclude else None) for r in rules]

    def extract_sentence(self, sentence: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for clause in _clauses(sentence.lower()):
            for rule, pattern, exclude in self.rules:
                for m in pattern.finditer(clause):
                    if exclude is not None and exclude.search(clause[: m.end() + 20]):
                        continue
                    out[rule.finding] = _merge(out.get(rule.finding), _call(clause, m.start(), m.end()))
        return out

    def extract(self, text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for sentence in split_sentences(text or ""):
            for finding, call in self.extract_sentence(sentence).items():
                out[finding] = _merge(out.get(finding), call)
        return out


def _merge(old: str | None, new: str) -> str:
    return new if old is None or _RANK[new] > _RANK[old] else old


def as_binary(
    labels: dict[str, str], findings: Iterable[str] = FINDING_NAMES, uncertain_as: int = 1
) -> list[int]:
    """0/1 per finding (unmentioned = 0; uncertain counted as ``uncertain_as``)."""
    value = {PRESENT: 1, ABSENT: 0, UNCERTAIN: int(uncertain_as)}
    return [value.get(labels.get(f, ABSENT), 0) for f in findings]


def load_extractor(spec: str | Any = "rules") -> FindingsExtractor:
    """'rules' (default), or 'package.module:attribute' naming an extractor object, class or factory."""
    if not isinstance(spec, str):
        extractor = spec
    elif spec in ("", "rules"):
        return RuleExtractor()
    else:
        module_name, _, attr = spec.partition(":")
        try:
            extractor = getattr(importlib.import_module(module_name), attr or "extractor")
        except (ImportError, AttributeError) as exc:
            raise InputError(
                f"Findings extractor {spec!r} cannot be imported ({exc}); use 'rules' or 'package.module:name'."
            ) from exc
        if isinstance(extractor, type) or (callable(extractor) and not hasattr(extractor, "extract")):
            extractor = extractor()
    if not callable(getattr(extractor, "extract", None)):
        raise InputError(f"Findings extractor {spec!r} has no extract(text) method.")
    return extractor

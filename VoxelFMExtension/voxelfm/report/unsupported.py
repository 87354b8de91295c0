"""The sentences a draft states when its sources gave nothing: a draft is never empty without saying why.

WHY in the text and not only in a warning: the text is what a reader sees (the Slicer module, REPORT.txt);
a title-only draft reads as "nothing found", which is not what happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .draft import Sentence, neighbour_evidence, probe_evidence
from .neighbours import ConsensusConfig, Neighbour, neighbour_weights
from .probe_findings import FindingCall

CLOSEST_NAMED = 3  # how many of the closest cases the no-support sentence names


def no_support_sentence(found: Sequence[Neighbour], config: ConsensusConfig, section: str) -> Sentence:
    """'No statement of the k similar cases reached support; closest: A (0.912), ...', with the closest cases
    (score and weight, no sentence of theirs) as evidence."""
    ranked = sorted(found, key=lambda n: -n.score)
    weights = neighbour_weights([n.score for n in ranked], config.temperature)
    named = ", ".join(f"{n.case_id} (similarity {n.score:.3f})" for n in ranked[:CLOSEST_NAMED])
    text = (
        f"Nothing is drafted from the {len(ranked)} similar cases: no statement of theirs reached the support "
        f"threshold ({config.min_support:.2f} of their weight). Closest cases: {named}."
    )
    evidence = [
        neighbour_evidence(n.case_id, n.score, w, "", n.image)
        for n, w in zip(ranked[:CLOSEST_NAMED], weights, strict=False)
    ]
    return Sentence(text, section, evidence)


def nothing_to_state(calls: Sequence[FindingCall], generator: Any, section: str) -> Sentence:
    """Why a draft has no sentence at all, with what was consulted as evidence."""
    reasons, evidence = [], []
    if calls:
        reasons.append(f"the findings probes called all {len(calls)} findings absent")
        evidence += [probe_evidence(c.probe, c.finding, c.probability, c.call) for c in calls]
    if generator is not None:  # with probes, its sentences may all have contradicted them (see the warnings)
        reasons.append(
            "no sentence of the report model was kept" if calls else "the report model wrote nothing"
        )
        evidence.append(dict(generator.evidence()))
    why = " and ".join(reasons) if reasons else "no source gave a sentence"
    return Sentence(f"Nothing to report: {why}.", section, evidence)

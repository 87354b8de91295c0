"""Findings probes (binary or multi-label classification probes from `voxelfm fit-probe`) -> finding calls.

Each target of a probe is a finding (matched to the CT-RATE catalogue by name; other names are the user's own
findings, placed in the last section). The probability of the positive class becomes present / uncertain /
absent through the template's thresholds (default: >= 0.6 present, < 0.4 absent, else uncertain). A probe
fitted on another backbone is refused (``probes.pipeline.check_probe_backbone``), never silently applied.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..probes.probe import Probe
from ..probes.probe_file import load_probe
from .template import Thresholds

FINDING_KINDS = ("binary", "multilabel")


@dataclass(frozen=True)
class FindingCall:
    finding: str
    probability: float
    call: str  # present | uncertain | absent
    probe: str  # name of the probe that made it


@dataclass
class FindingsProbe:
    name: str  # shown in evidence: the probe file's stem
    probe: Probe
    path: str = ""

    @property
    def findings(self) -> list[str]:
        return list(self.probe.target_names)


def check_findings_probe(probe: Probe, name: str) -> None:
    if probe.task != "classification" or probe.kind not in FINDING_KINDS:
        raise InputError(
            f"Probe {name} is a {probe.kind} {probe.task} probe; report findings need binary or multi-label "
            "classification probes (fit-probe --task classification with 0/1 finding columns)."
        )


def as_findings_probe(
    probe: Probe | FindingsProbe | str | os.PathLike, name: str | None = None
) -> FindingsProbe:
    """A loaded findings probe from a path (PROBE, PROBE.json, PROBE.safetensors) or a Probe."""
    if isinstance(probe, FindingsProbe):
        return probe
    if isinstance(probe, Probe):
        found = FindingsProbe(name or (probe.target_names[0] if probe.target_names else "probe"), probe)
    else:
        path = Path(probe)
        stem = path.name[: -len(path.suffix)] if path.suffix in (".json", ".safetensors") else path.name
        found = FindingsProbe(name or stem, load_probe(path), str(path))
    check_findings_probe(found.probe, found.name)
    return found


def finding_probabilities(probe: FindingsProbe, outputs: np.ndarray) -> dict[str, float]:
    """Probability of each target's positive class from the probe's outputs for one volume."""
    out = np.atleast_1d(np.asarray(outputs, dtype=np.float64))
    names = probe.findings
    if probe.probe.kind == "binary":
        return {names[0]: float(out[0])}
    if out.size != len(names):
        raise InputError(
            f"Probe {probe.name} gave {out.size} outputs for {len(names)} targets; refit the probe."
        )
    return {n: float(p) for n, p in zip(names, out, strict=True)}


def call_findings(probe: FindingsProbe, outputs: np.ndarray, thresholds: Thresholds) -> list[FindingCall]:
    return [
        FindingCall(finding, p, thresholds.call(p), probe.name)
        for finding, p in finding_probabilities(probe, outputs).items()
    ]

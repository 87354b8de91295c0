"""Report evaluation as in the reference: findings extracted from generated and reference reports ->
per-finding precision, recall, F1 (positive class), macro F1, and bootstrap 95% confidence intervals.

Conventions (documented because papers differ): a finding whose F1 is undefined (no reference positives and
no predicted positives) is left out of the macro F1 and reported as None; uncertain mentions count as positive
(``uncertain_as=1``); confidence intervals are percentile intervals over cases resampled with replacement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .catalog import FINDING_NAMES
from .extract import FindingsExtractor, RuleExtractor, as_binary


@dataclass
class FindingScore:
    finding: str
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float | None
    recall: float | None
    f1: float | None
    ci95: dict[str, list[float | None]] = field(default_factory=dict)  # precision/recall/f1 -> [lo, hi]

    @property
    def support(self) -> int:
        return self.tp + self.fn


@dataclass
class EvaluationResult:
    findings: list[FindingScore]
    macro_f1: float | None
    macro_f1_ci95: list[float | None]
    n_cases: int
    extractor: str = "rules"
    uncertain_as: int = 1
    n_bootstrap: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for f, s in zip(d["findings"], self.findings, strict=True):
            f["support"] = s.support
        return d

    def table(self) -> str:
        """A plain-text table (one row per finding, then macro F1)."""

        def fmt(v: float | None) -> str:
            return "  n/a" if v is None else f"{v:.3f}"

        def ci(s: FindingScore) -> str:
            lo, hi = s.ci95.get("f1", [None, None])
            return "" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"

        width = max(len(s.finding) for s in self.findings)
        lines = [f"{'finding':<{width}}  support  precision  recall     F1  F1 95% CI"]
        for s in self.findings:
            lines.append(
                f"{s.finding:<{width}}  {s.support:7d}  {fmt(s.precision):>9}  {fmt(s.recall):>6}  {fmt(s.f1):>5}  {ci(s)}"
            )
        lo, hi = self.macro_f1_ci95
        band = "" if lo is None or hi is None else f"  95% CI [{lo:.3f}, {hi:.3f}]"
        lines.append(f"macro F1 over {self.n_cases} cases: {fmt(self.macro_f1)}{band}")
        return "\n".join(lines)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 with NaN where undefined (array-wise)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return precision, recall, f1


def _counts(pred: np.ndarray, ref: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    tp = (pred & ref).sum(axis)
    fp = (pred & ~ref).sum(axis)
    fn = (~pred & ref).sum(axis)
    return tp, fp, fn


def _none(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _interval(samples: np.ndarray) -> list[float | None]:
    good = samples[np.isfinite(samples)]
    if good.size < max(10, samples.size // 2):
        return [None, None]
    return [float(np.percentile(good, 2.5)), float(np.percentile(good, 97.5))]


def _bootstrap(pred: np.ndarray, ref: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Metric samples over resampled cases: precision/recall/f1 [B, F], macro [B]."""
    rng = np.random.default_rng(seed)
    n = pred.shape[0]
    out: dict[str, list[np.ndarray]] = {"precision": [], "recall": [], "f1": [], "macro": []}
    for start in range(0, n_bootstrap, 100):
        idx = rng.integers(0, n, size=(min(100, n_bootstrap - start), n))
        p, r, f1 = _prf(*_counts(pred[idx], ref[idx], axis=1))
        out["precision"].append(p)
        out["recall"].append(r)
        out["f1"].append(f1)
        with np.errstate(invalid="ignore"):
            defined = np.isfinite(f1)
            out["macro"].append(
                np.where(defined.any(1), np.nansum(f1, 1) / np.maximum(defined.sum(1), 1), np.nan)
            )
    return {k: np.concatenate(v) for k, v in out.items()}


def score_labels(
    predicted: np.ndarray,
    reference: np.ndarray,
    findings: Sequence[str] = FINDING_NAMES,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[list[FindingScore], float | None, list[float | None]]:
    """Per-finding scores, macro F1 and its CI from 0/1 matrices [cases, findings]."""
    pred = np.asarray(predicted).astype(bool)
    ref = np.asarray(reference).astype(bool)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] != len(findings):
        raise InputError(
            f"Label matrices must both be [cases, {len(findings)}]; got {pred.shape} and {ref.shape}."
        )
    if pred.shape[0] == 0:
        raise InputError("No report pairs to evaluate.")
    tp, fp, fn = _counts(pred, ref, axis=0)
    tn = pred.shape[0] - tp - fp - fn
    precision, recall, f1 = _prf(tp, fp, fn)
    boot = _bootstrap(pred, ref, n_bootstrap, seed) if n_bootstrap > 0 else None
    scores = []
    for j, name in enumerate(findings):
        ci = {k: _interval(boot[k][:, j]) for k in ("precision", "recall", "f1")} if boot else {}
        scores.append(
            FindingScore(
                name,
                int(tp[j]),
                int(fp[j]),
                int(fn[j]),
                int(tn[j]),
                _none(precision[j]),
                _none(recall[j]),
                _none(f1[j]),
                ci,
            )
        )
    defined = np.isfinite(f1)
    macro = float(f1[defined].mean()) if defined.any() else None
    macro_ci = _interval(boot["macro"]) if boot else [None, None]
    return scores, macro, macro_ci


def evaluate_reports(
    generated: Sequence[str],
    reference: Sequence[str],
    extractor: FindingsExtractor | None = None,
    findings: Sequence[str] = FINDING_NAMES,
    n_bootstrap: int = 1000,
    seed: int = 0,
    uncertain_as: int = 1,
) -> EvaluationResult:
    """Score paired generated/reference report texts with one extractor."""
    if len(generated) != len(reference):
        raise InputError(
            f"{len(generated)} generated reports but {len(reference)} references; pair them one to one."
        )
    extractor = extractor or RuleExtractor()
    pred = np.array([as_binary(extractor.extract(t), findings, uncertain_as) for t in generated], dtype=bool)
    ref = np.array([as_binary(extractor.extract(t), findings, uncertain_as) for t in reference], dtype=bool)
    pred = pred.reshape(len(generated), len(findings))
    ref = ref.reshape(len(reference), len(findings))
    scores, macro, macro_ci = score_labels(pred, ref, findings, n_bootstrap, seed)
    return EvaluationResult(
        scores,
        macro,
        macro_ci,
        len(generated),
        getattr(extractor, "name", type(extractor).__name__),
        uncertain_as,
        n_bootstrap,
    )

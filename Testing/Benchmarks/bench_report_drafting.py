"""Report drafting on the real CTs of ../shared/data: consensus of similar cases vs simple baselines.

Seven real CTs (Testing/python/report_library_cases.py: reports and findings written from what is known of
each case; 3 of 7 have a lung mass / tumour / nodule, the other findings are absent everywhere), resampled to
5 mm, in a case library built with each backbone:
  voxelfm-tiny   the bundled offline model (weak: 800 CPU pretraining steps)
  random-init    the same architecture with random weights
Two settings:
  altered copy   the query is a noisy, HU-scaled, cropped copy of a library case (its source is in the library)
  leave-one-out  the query's own case is excluded from the neighbours (the realistic setting)
Methods: consensus (k=3, temperature 0.05 (default) or 0.01, support >= 0.5), top-1 (copy the nearest case's report), empty
(no findings: the majority prior for every finding here). Scores: findings extracted by the rule extractor from
the draft vs the case's findings; micro F1 over all (case, finding) positives; how often the source case is the
top neighbour (altered copy); the median cosine gap between the first and second neighbour. Prints a table.

python Testing/Benchmarks/bench_report_drafting.py --data ../shared/data [--threads 1] [--huge-report-only]

First line: the time of one draft whose nearest case carries a 23 MB report (the consensus reads each
neighbour report up to ConsensusConfig.max_report_chars).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

from report_library_cases import CASES, altered, load_case  # noqa: E402

from voxelfm.features.service import FeatureService  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.report.catalog import FINDING_NAMES  # noqa: E402
from voxelfm.report.extract import RuleExtractor, as_binary  # noqa: E402
from voxelfm.report.library_source import library_neighbours  # noqa: E402
from voxelfm.report.neighbours import ConsensusConfig, Neighbour, consensus  # noqa: E402
from voxelfm.report.pipeline import ReportPipeline  # noqa: E402

METHODS = {
    "consensus k=3": ConsensusConfig(k=3, temperature=0.05, min_support=0.5),
    "consensus k=3, T=0.01": ConsensusConfig(k=3, temperature=0.01, min_support=0.5),
    "top-1 report": ConsensusConfig(k=1, temperature=0.05, min_support=0.0),
}


def random_backbone(folder: Path) -> Path:
    """voxelfm-tiny's architecture with random weights."""
    from voxelfm.model.checkpoint import save_backbone
    from voxelfm.model.loading import load_backbone

    torch.manual_seed(0)
    model = load_backbone("voxelfm-tiny", device="cpu")
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return save_backbone(model, folder)


def build_library(folder: Path, spec: ModelSpec, service: FeatureService, volumes: dict, root: Path) -> None:
    from voxelfm.imaging.io import write_volume
    from voxelfm.retrieval.pipeline import RetrievalPipeline
    from voxelfm.retrieval.records import CaseSource

    sources = []
    for c in CASES:
        path = root / f"{c.case_id}.nii.gz"
        if not path.exists():
            write_volume(volumes[c.case_id], path)
        sources.append(CaseSource(path=str(path), case_id=c.case_id, report=c.report, findings=c.findings))
    RetrievalPipeline(spec, service=service).add_sources(folder, sources).raise_failures()


def micro_f1(pred: np.ndarray, ref: np.ndarray) -> float:
    both = pred.sum() + ref.sum()
    return float(2 * (pred & ref).sum() / both) if both else float("nan")


def run_setting(pipeline, library, spec, service, volumes, leave_out: bool):
    extractor = RuleExtractor()
    ref = np.array([[c.findings.get(f, 0) for f in FINDING_NAMES] for c in CASES], bool)
    out, top1_hits, seconds, gaps = {}, 0, [], []
    for name, config in METHODS.items():
        pipeline.config = config
        pred = []
        for n, c in enumerate(CASES):
            query = altered(volumes[c.case_id], seed=n) if not leave_out else volumes[c.case_id]
            source = library_neighbours(library, spec, service, exclude={c.case_id} if leave_out else ())
            t0 = time.perf_counter()
            draft = pipeline.draft(query, neighbours=source)
            seconds.append(time.perf_counter() - t0)
            pred.append(as_binary(extractor.extract(draft.text)))
            if name == "consensus k=3":
                found = draft.sources["neighbours"]
                top1_hits += found[0]["case_id"] == c.case_id
                gaps.append(found[0]["score"] - found[1]["score"])
        out[name] = micro_f1(np.array(pred, bool), ref)
    out["empty (no findings)"] = micro_f1(np.zeros_like(ref), ref)
    return out, top1_hits, float(np.median(seconds)), float(np.median(gaps))


def huge_report_seconds(megabytes: float = 23.0) -> tuple[float, int]:
    """Seconds to draft from three neighbours, the nearest carrying a ``megabytes`` report (a whole export
    stored as one case's report), and the sentences drafted: the consensus reads a bounded prefix."""
    line = "Lungs: There is a 5 mm nodule in the right upper lobe. Heart: Normal size. No pericardial effusion.\n"
    big = line * int(megabytes * 1e6 / len(line))
    cases = [
        Neighbour("big", 0.9, big),
        Neighbour("b", 0.9, "Lungs: clear."),
        Neighbour("c", 0.8, "Heart: ok."),
    ]
    start = time.perf_counter()
    sentences = consensus(cases)
    return time.perf_counter() - start, len(sentences)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--huge-report-only", action="store_true", help="only time a draft with a 23 MB report")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    secs, n = huge_report_seconds()
    print(f"| a neighbour report of 23 MB | {secs:.2f} s per draft | {n} sentences |")
    if args.huge_report_only:
        return
    root = Path(tempfile.mkdtemp(prefix="bench_report_"))
    os.environ.setdefault(
        "VOXELFM_CACHE_DIR", str(root / "cache")
    )  # a fresh feature cache: timings include features
    volumes = {c.case_id: load_case(args.data, c) for c in CASES}
    backbones = {"voxelfm-tiny": "voxelfm-tiny", "random-init": str(random_backbone(root / "random"))}
    print(
        f"{len(CASES)} real CTs, {sum(bool(c.findings) for c in CASES)} with a lung nodule/mass; micro F1 of findings"
    )
    header = " | ".join([*METHODS, "empty (no findings)"])
    print(f"| backbone | setting | {header} | source is top-1 | score gap top-1 - top-2 | s / draft |")
    print("|---|---|" + "---:|" * (len(METHODS) + 4))
    for label, model in backbones.items():
        spec, service = ModelSpec(model, device="cpu"), FeatureService()
        library = root / f"library_{label}"
        build_library(library, spec, service, volumes, root)
        pipeline = ReportPipeline(spec, service=service)
        for setting, leave_out in (("altered copy", False), ("leave-one-out", True)):
            scores, top1, sec, gap = run_setting(pipeline, library, spec, service, volumes, leave_out)
            cells = " | ".join(f"{scores[m]:.3f}" for m in [*METHODS, "empty (no findings)"])
            hit = f"{top1}/{len(CASES)}" if not leave_out else "-"
            print(f"| {label} | {setting} | {cells} | {hit} | {gap:.5f} | {sec:.2f} |")


if __name__ == "__main__":
    main()

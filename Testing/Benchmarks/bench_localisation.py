"""Localisation benchmark: one-shot landmark transfer and the few-shot probe, on the real CT in ../shared/data.

Transfer (table 1): landmarks (localisation_cases.py) moved (a) between different patients (abdomen_3mm <->
chest_dicom, T12-aligned slab centroids), (b) from a scan into a rotated, shifted, resampled, cropped and
flipped copy of itself and (c) into a copy that stops short (its upper half cut off: the points there must be
reported as not found). Methods: ours (coarse intensity registration, then feature matching around it) with the
bundled voxelfm-tiny and the same architecture at random init; matching alone (``initialise="features"``, the
whole target searched); registration alone (the same coarse registration, points mapped through it). Errors
count the points that are inside the target and reported found; "not found" counts points reported missing
(right = truly outside the target). AUROC: how well the confidence ranks points within 10 mm above the others,
over every found point of every case. Table 2: design alternatives (voxelfm-tiny). Table 3: the few-shot
probe on crops (the reference's crop protocol).

    python Testing/Benchmarks/bench_localisation.py --threads 1 --skip-variants --skip-probe [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import localisation_cases as lc  # noqa: E402

from voxelfm.features.service import FeatureService  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.localize.config import TransferConfig  # noqa: E402
from voxelfm.localize.pipeline import LocalisationPipeline, Reference  # noqa: E402
from voxelfm.localize.points import inside_volume  # noqa: E402

DUMP: list[dict] = []  # per-point records for --dump
# False when run against the code before issue 21 (the "before" table)
NEW_API = "initialise" in TransferConfig.__dataclass_fields__

VARIANTS = {
    "default (ncc + reconcile)": {},
    "refine none": {"refine": "none"},
    "refine interp": {"refine": "interp"},
    "refine fine": {"refine": "fine"},
    "refine fine+ncc": {"refine": "fine+ncc"},
    "ncc, no reconcile": {"reconcile": False},
    "no geometry (frame, consistency)": {"frame_weight": 0.0, "consistency": False, "reconcile": False},
    "context 0 (single patch)": {"context_cells": 0},
    "candidates from block + single-patch maps": {"candidate_maps": "both"},
}


def pairs(data: Path) -> list[tuple[str, str, lc.Case, lc.Case]]:
    """(setting, label, reference case, target case with the true points)."""
    out = []
    abd, chest = lc.slab_pair(data)
    out += [
        ("between patients", "abdomen -> chest", abd, chest),
        ("between patients", "chest -> abdomen", chest, abd),
    ]
    lr = lc.ORGANS + ("autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right")
    abdomen = lc.abdomen_case(data, lr)
    for case in (
        lc.torso_case(data),
        abdomen,
        lc.pulmonary_case(data),
        lc.elastix_case(data),
        lc.chest_case(data, lc.SLAB_STRUCTURES),
    ):
        moved, _ = lc.moved_copy(case)
        out.append(("moved copy", case.name, case, moved))
    out.append(("out of view copy", abdomen.name, abdomen, lc.out_of_view_copy(abdomen)))
    return out


def errors(pred: np.ndarray, names: list[str], truth) -> np.ndarray:
    return np.array([np.linalg.norm(pred[n] - truth.position(name)) for n, name in enumerate(names)])


def side_swaps(pred: np.ndarray, names: list[str], truth) -> int:
    """Points named *_left / *_right predicted nearer their opposite's true position."""
    count = 0
    for n, name in enumerate(names):
        for a, b in (("_left", "_right"), ("_right", "_left")):
            other = truth.position(name.replace(a, b)) if name.endswith(a) else None
            if other is not None and np.linalg.norm(pred[n] - other) < np.linalg.norm(
                pred[n] - truth.position(name)
            ):
                count += 1
    return count


@dataclasses.dataclass
class Run:
    pred: np.ndarray  # [N,3] RAS
    names: list[str]
    seconds: float
    confidence: np.ndarray | None = None
    missing: np.ndarray | None = None  # [N] bool: reported not found
    similarity: np.ndarray | None = None  # the feature similarity alone (the confidence before issue 21)
    diagnostics: list | None = None  # per point: similarity, ncc, spread, distance from the expected place


def run_ours(pipeline, ref, tgt) -> Run:
    names = [n for n in ref.points.names if n in tgt.points.names]
    start = time.perf_counter()
    res = pipeline.transfer(tgt.volume, [Reference(ref.volume, ref.points.subset(names))])
    secs = time.perf_counter() - start
    missing = getattr(res.points, "missing", np.zeros(len(names), bool))
    diag = res.details.get("points", {})
    sim = np.array([diag[n]["similarity"] for n in names]) if diag else None
    return Run(res.points.ras, names, secs, res.confidence, missing, sim, [diag.get(n, {}) for n in names])


def run_registration(ref, tgt) -> Run:
    from voxelfm.localize.canonical import canonical_volume
    from voxelfm.localize.registration import map_points, register, registration_spacing

    names = [n for n in ref.points.names if n in tgt.points.names]
    start = time.perf_counter()
    cfg = TransferConfig()
    small = [
        canonical_volume(v, registration_spacing(v, cfg.registration_spacing_mm))
        for v in (ref.volume, tgt.volume)
    ]
    pred = map_points(register(*small), ref.points.subset(names).ras)
    margin = cfg.outside_margin_mm / float(np.min(tgt.volume.spacing)) + 0.5  # the pipeline's not-found rule
    return Run(pred, names, time.perf_counter() - start, None, ~inside_volume(tgt.volume, pred, margin))


def random_init_model(tmp: Path) -> str:
    from voxelfm.model import VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone
    from voxelfm.model.loading import load_backbone

    tiny = load_backbone("voxelfm-tiny")
    torch.manual_seed(0)
    rnd = VoxelFMBackbone(tiny.cfg).eval()
    return str(save_backbone(rnd, tmp / "random_init", preprocess=dict(tiny.preprocess_defaults)))


def row(label, errs, missing, seconds, n_targets) -> str:
    e = np.concatenate(errs) if errs else np.zeros(0)
    stats = (
        "- | - | - | - | -"
        if not len(e)
        else (
            f"{e.mean():.1f} | {np.median(e):.1f} | {np.percentile(e, 90):.1f} | {np.mean(e <= 5) * 100:.0f}% | "
            f"{np.mean(e <= 10) * 100:.0f}%"
        )
    )
    right, outside, wrong = missing
    return (
        f"| {label} | {len(e)} | {stats} | {right}/{outside} | {wrong} | {seconds / max(n_targets, 1):.1f} |"
    )


HEADER = [
    "| | points | mean mm | median mm | p90 mm | within 5 mm | within 10 mm | not found: right / outside "
    "| not found wrongly | s / target |",
    "|---|---|---|---|---|---|---|---|---|---|",
]


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U / (n+ n-))."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def evaluate(run: Run, tgt) -> tuple[np.ndarray, tuple[int, int, int], np.ndarray]:
    """(errors of the found points inside the target, (right not-found, points outside, wrong not-found),
    mask of those found-inside points among the run's points)."""
    truth = tgt.points.subset(run.names).ras
    inside = inside_volume(tgt.volume, truth)
    missing = run.missing if run.missing is not None else np.zeros(len(run.names), bool)
    counted = inside & ~missing
    e = np.linalg.norm(run.pred - truth, axis=1)[counted]
    return e, (int((missing & ~inside).sum()), int((~inside).sum()), int((missing & inside).sum())), counted


def transfer_tables(cases, methods) -> tuple[list[str], dict]:
    per_pair = [*HEADER]
    summary: dict = {}
    confidences: dict = {}
    for setting, label, ref, tgt in cases:
        for mname, fn in methods.items():
            run = fn(ref, tgt)
            e, missing, counted = evaluate(run, tgt)
            per_pair.append(row(f"{label} ({setting}): {mname}", [e], missing, run.seconds, 1))
            acc = summary.setdefault((setting, mname), [[], [0, 0, 0], 0.0, 0])
            acc[0].append(e)
            acc[1] = [a + b for a, b in zip(acc[1], missing, strict=True)]
            acc[2] += run.seconds
            acc[3] += 1
            if run.diagnostics is not None:
                truth = tgt.points.subset(run.names).ras
                for n, d in enumerate(run.diagnostics):
                    err = float(np.linalg.norm(run.pred[n] - truth[n]))
                    DUMP.append(
                        {
                            "method": mname,
                            "case": label,
                            "setting": setting,
                            "point": run.names[n],
                            "error_mm": err,
                            "confidence": float(run.confidence[n]),
                            "counted": bool(counted[n]),
                            **d,
                        }
                    )
            if run.confidence is not None:
                rec = confidences.setdefault(mname, [[], [], []])
                rec[0].append(e)
                rec[1].append(run.confidence[counted])
                rec[2].append(
                    run.similarity[counted] if run.similarity is not None else run.confidence[counted]
                )
            print(per_pair[-1], flush=True)
    return per_pair, {"summary": summary, "confidences": confidences}


def summary_table(summary) -> list[str]:
    lines = [*HEADER]
    for (setting, mname), (errs, missing, secs, n) in sorted(summary.items()):
        lines.append(row(f"{setting}: {mname}", errs, missing, secs, n))
    return lines


def confidence_table(confidences) -> list[str]:
    lines = [
        "| method | points | AUROC of the confidence (error < 10 mm) | AUROC of the similarity alone | "
        "Spearman (confidence, -error) |",
        "|---|---|---|---|---|",
    ]
    for mname, (errs, confs, sims) in confidences.items():
        e, c, s = np.concatenate(errs), np.concatenate(confs), np.concatenate(sims)
        lines.append(
            f"| {mname} | {len(e)} | {auroc(c, e < 10):.2f} | {auroc(s, e < 10):.2f} | {spearman(c, -e):.2f} |"
        )
    return lines


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 2 else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-variants", action="store_true")
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--out", default=None, help="also write the tables (markdown) here")
    p.add_argument("--dump", default=None, help="also write every point's error and diagnostics (JSON) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    data = Path(args.data)
    cases = pairs(data)
    tmp = Path(tempfile.mkdtemp(prefix="bench_localisation_"))
    service = FeatureService()
    tiny_spec = ModelSpec("voxelfm-tiny", device="cpu")
    rnd_spec = ModelSpec(random_init_model(tmp), device="cpu")
    methods = {
        "ours voxelfm-tiny": LocalisationPipeline(tiny_spec, service=service),
        "ours random init": LocalisationPipeline(rnd_spec, service=service),
    }
    if NEW_API:
        alone = TransferConfig(initialise="features")
        methods["matching alone voxelfm-tiny"] = LocalisationPipeline(tiny_spec, alone, service=service)
        methods["matching alone random init"] = LocalisationPipeline(rnd_spec, alone, service=service)
    methods = {k: (lambda r, t, pipe=v: run_ours(pipe, r, t)) for k, v in methods.items()}
    if NEW_API:
        methods["registration alone (coarse, 6 mm)"] = run_registration
    out = ["## One-shot transfer, per pair", ""]
    per_pair, info = transfer_tables(cases, methods)
    out += per_pair + ["", "## One-shot transfer, summary", "", *summary_table(info["summary"])]
    out += ["", "## Confidence (all found points, every case)", "", *confidence_table(info["confidences"])]
    if not args.skip_variants:
        out += ["", "## Design alternatives (voxelfm-tiny), summary", "", *variant_table(cases, service)]
    if not args.skip_probe:
        from bench_localisation_probe import probe_tables

        out += ["", "## Few-shot probe on crops", "", *probe_tables(data, service, tmp, random_init_model)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.dump:
        Path(args.dump).write_text(json.dumps(DUMP, indent=1))
    if args.out:
        Path(args.out).write_text(text)
    return 0


def variant_table(cases, service) -> list[str]:
    summary: dict = {}
    for vname, kw in VARIANTS.items():
        cfg = dataclasses.replace(TransferConfig(), **kw)
        pipe = LocalisationPipeline(ModelSpec("voxelfm-tiny", device="cpu"), cfg, service=service)
        for setting, _, ref, tgt in cases:
            e, missing, _ = evaluate(run_ours(pipe, ref, tgt), tgt)
            acc = summary.setdefault((setting, vname), [[], [0, 0, 0], 0.0, 0])
            acc[0].append(e)
            acc[1] = [a + b for a, b in zip(acc[1], missing, strict=True)]
            acc[3] += 1
        print(vname, "done", flush=True)
    return summary_table(summary)


if __name__ == "__main__":
    sys.exit(main())

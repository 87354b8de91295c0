"""Localisation benchmark: one-shot landmark transfer and the few-shot probe, on the real CT in ../shared/data.

Transfer (table 1): landmarks (localisation_cases.py) moved (a) between different patients (abdomen_3mm <->
chest_dicom, T12-aligned slab centroids) and (b) from a scan into a rotated, shifted, resampled, cropped and
flipped copy of itself. Methods: ours with the bundled voxelfm-tiny, the same architecture at random init, and
SimpleITK rigid + affine registration mapping the points. Table 2: our design alternatives (refinement, geometry,
context) with voxelfm-tiny. Table 3: the few-shot probe on crops around labelled structures (the reference's
crop protocol: a structure's centre at a random offset in a crop; leave-one-structure-out), error in mm and in
normalised crop units with hit rates within 0.05 / 0.1 / 0.2.

    python Testing/Benchmarks/bench_localisation.py --threads 1 [--out results/localisation.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import localisation_cases as lc  # noqa: E402
from localisation_registration import register_points  # noqa: E402

from voxelfm.features.service import FeatureService  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.localize.config import TransferConfig  # noqa: E402
from voxelfm.localize.pipeline import LocalisationPipeline, Reference  # noqa: E402

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
    for case in (
        lc.torso_case(data),
        lc.abdomen_case(data, lr),
        lc.pulmonary_case(data),
        lc.elastix_case(data),
        lc.chest_case(data, lc.SLAB_STRUCTURES),
    ):
        moved, _ = lc.moved_copy(case)
        out.append(("moved copy", case.name, case, moved))
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


def run_ours(pipeline, ref, tgt):
    names = [n for n in ref.points.names if n in tgt.points.names]
    start = time.perf_counter()
    res = pipeline.transfer(tgt.volume, [Reference(ref.volume, ref.points.subset(names))])
    return res.points.ras, names, time.perf_counter() - start, res.confidence


def run_registration(ref, tgt):
    names = [n for n in ref.points.names if n in tgt.points.names]
    start = time.perf_counter()
    pred = register_points(ref.volume, ref.points.subset(names).ras, tgt.volume)
    return pred, names, time.perf_counter() - start, None


def random_init_model(tmp: Path) -> str:
    from voxelfm.model import VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone
    from voxelfm.model.loading import load_backbone

    tiny = load_backbone("voxelfm-tiny")
    torch.manual_seed(0)
    rnd = VoxelFMBackbone(tiny.cfg).eval()
    return str(save_backbone(rnd, tmp / "random_init", preprocess=dict(tiny.preprocess_defaults)))


def row(label, errs, swaps, seconds, n_targets) -> str:
    e = np.concatenate(errs) if errs else np.zeros(0)
    return (
        f"| {label} | {len(e)} | {e.mean():.1f} | {np.median(e):.1f} | {np.mean(e <= 5) * 100:.0f}% | "
        f"{np.mean(e <= 10) * 100:.0f}% | {swaps} | {seconds / max(n_targets, 1):.1f} |"
    )


HEADER = [
    "| | points | mean mm | median mm | within 5 mm | within 10 mm | side swaps | s / target |",
    "|---|---|---|---|---|---|---|---|",
]


def transfer_tables(cases, methods) -> tuple[list[str], dict]:
    per_pair = [*HEADER]
    summary: dict = {}
    confidences = []
    for setting, label, ref, tgt in cases:
        for mname, fn in methods.items():
            pred, names, secs, conf = fn(ref, tgt)
            e = errors(pred, names, tgt.points)
            s = side_swaps(pred, names, tgt.points)
            per_pair.append(row(f"{label} ({setting}): {mname}", [e], s, secs, 1))
            acc = summary.setdefault((setting, mname), [[], 0, 0.0, 0])
            acc[0].append(e)
            acc[1] += s
            acc[2] += secs
            acc[3] += 1
            if conf is not None and mname.startswith("ours"):
                confidences.append((e, conf))
            print(per_pair[-1], flush=True)
    return per_pair, {"summary": summary, "confidences": confidences}


def summary_table(summary) -> list[str]:
    lines = [*HEADER]
    for (setting, mname), (errs, swaps, secs, n) in sorted(summary.items()):
        lines.append(row(f"{setting}: {mname}", errs, swaps, secs, n))
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    data = Path(args.data)
    cases = pairs(data)
    tmp = Path(tempfile.mkdtemp(prefix="bench_localisation_"))
    service = FeatureService()
    tiny = LocalisationPipeline(ModelSpec("voxelfm-tiny", device="cpu"), service=service)
    rnd = LocalisationPipeline(ModelSpec(random_init_model(tmp), device="cpu"), service=service)
    methods = {
        "ours voxelfm-tiny": lambda r, t: run_ours(tiny, r, t),
        "ours random init": lambda r, t: run_ours(rnd, r, t),
        "SimpleITK rigid+affine": run_registration,
    }
    out = ["## One-shot transfer, per pair", ""]
    per_pair, info = transfer_tables(cases, methods)
    out += per_pair + ["", "## One-shot transfer, summary", "", *summary_table(info["summary"])]
    e = np.concatenate([c[0] for c in info["confidences"]])
    c = np.concatenate([c[1] for c in info["confidences"]])
    out += [
        "",
        f"Confidence vs error (ours, both models, all pairs): Spearman {spearman(c, -e):.2f} "
        f"(positive = higher confidence, smaller error); n = {len(e)}.",
    ]
    if not args.skip_variants:
        out += ["", "## Design alternatives (voxelfm-tiny), summary", "", *variant_table(cases, service)]
    if not args.skip_probe:
        from bench_localisation_probe import probe_tables

        out += ["", "## Few-shot probe on crops", "", *probe_tables(data, service, tmp, random_init_model)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def variant_table(cases, service) -> list[str]:
    summary: dict = {}
    for vname, kw in VARIANTS.items():
        cfg = dataclasses.replace(TransferConfig(), **kw)
        pipe = LocalisationPipeline(ModelSpec("voxelfm-tiny", device="cpu"), cfg, service=service)
        for setting, _, ref, tgt in cases:
            pred, names, secs, _ = run_ours(pipe, ref, tgt)
            acc = summary.setdefault((setting, vname), [[], 0, 0.0, 0])
            acc[0].append(errors(pred, names, tgt.points))
            acc[1] += side_swaps(pred, names, tgt.points)
            acc[2] += secs
            acc[3] += 1
        print(vname, "done", flush=True)
    return summary_table(summary)


if __name__ == "__main__":
    sys.exit(main())

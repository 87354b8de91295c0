"""Refit results before/after a change of the segmentation code: labelmaps compared voxel by voxel on real CT.

Runs the same fits with two copies of the `voxelfm` package (``--before DIR``: a folder holding an older
`voxelfm/`, e.g. from ``git archive <rev> VoxelFMExtension/voxelfm | tar -x -C DIR`` with its Resources beside it;
the working tree otherwise), each in its own process, on identical inputs (features computed once and saved).
For every voxel whose label changed it reports the decision margin of the *before* run (the best class score
minus the runner-up, background = 0): changes at margins of float-rounding size are ties broken differently,
not different results.

    .venv/bin/python Testing/Benchmarks/bench_refit_compare.py --before /tmp/voxelfm_before/VoxelFMExtension
Cases: abdomen_3mm (voxelfm-tiny features; liver | liver + spleen + left kidney from 3 labelled slices) and the
refit benchmark's 512x512x100 POPI chest CT with random 864-channel features (1 and 3 painted blobs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"


def _pick(mask: np.ndarray, n: int) -> list[int]:
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    return sorted({int(round(z.min() + (z.max() - z.min()) * (i + 1) / (n + 1))) for i in range(n)})


def prepare_inputs(work: Path) -> list[str]:
    """Write each case's CT, features and sparse labels to work/<case>.npz (computed once, shared by both runs)."""
    import torch

    from voxelfm import load_backbone
    from voxelfm.features.extract import extract_features
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.resample import patch_grid_to_ras
    from voxelfm.segment.labels import select_slices

    torch.set_num_threads(1)
    names = []
    abd = DATA / "totalseg" / "abdomen_3mm"
    vol = read_volume(str(abd / "ct.nii.gz"))
    ref = np.rint(read_volume(str(abd / "labels.nii.gz"), check_hu=False).array).astype(np.int64)
    f = extract_features(vol, load_backbone("voxelfm-tiny"), cache=False, precision="fp32", device="cpu")
    for k, classes in ((1, [5]), (3, [5, 1, 3])):
        lab = select_slices(ref, _pick(np.isin(ref, classes), 3), classes=classes)
        np.savez(
            work / f"abdomen_K{k}.npz",
            ct=vol.array,
            m=vol.ijk_to_ras,
            patch=f.patch,
            g2r=f.grid_to_ras,
            labels=lab,
        )
        names.append(f"abdomen_K{k}")
    popi = read_volume(str(DATA / "public_ct" / "popi_phase00_chest.nii.gz"))
    arr, m = np.ascontiguousarray(popi.array[:100, :512, :512], dtype=np.float32), popi.ijk_to_ras
    d, h, w = 14, 36, 36
    g2r = patch_grid_to_ras(m @ np.diag([512 / (w * 14), 512 / (h * 14), 100 / (d * 14), 1.0]), 14)
    patch = np.random.default_rng(1).normal(size=(d, h, w, 864)).astype(np.float32)
    kk, jj, ii = np.ogrid[:100, :512, :512]
    for k in (1, 3):
        painted = np.zeros(arr.shape, np.uint8)
        for c in range(1, k + 1):
            painted[(kk - 50) ** 2 / 900 + (jj - 100 - 80 * c) ** 2 / 1600 + (ii - 256) ** 2 / 2500 < 1] = c
        lab = np.where(np.isin(kk, [35, 50, 65]), painted, 255).astype(np.uint8)
        np.savez(work / f"popi_K{k}.npz", ct=arr, m=m, patch=patch, g2r=g2r, labels=lab)
        names.append(f"popi_K{k}")
    return names


def child(case_file: str, out_file: str) -> None:
    """Fit + predict one case with whatever `voxelfm` is importable; save labelmap, margins and weights."""
    import torch

    torch.set_num_threads(1)
    from voxelfm.imaging.volume import Volume
    from voxelfm.segment import SegmentationConfig, SegmentationContext, fit_segmentation

    z = np.load(case_file)
    vol = Volume(z["ct"].astype(np.float32), z["m"])
    feats = type("F", (), {"patch": z["patch"], "grid_to_ras": z["g2r"], "model": {}, "preprocess": {}})()
    ctx = SegmentationContext(vol, feats)
    probe = fit_segmentation(vol, feats, Volume(z["labels"], z["m"]), SegmentationConfig(), context=ctx)
    res = probe.predict(vol, feats, context=ctx, with_probabilities=False)
    delta = probe.delta_slabs(vol, feats, ctx)(0, vol.array.shape[0])
    scores = np.concatenate([np.zeros((1, *delta.shape[1:]), np.float32), delta])
    top2 = np.sort(scores, axis=0)[-2:]
    np.savez(
        out_file,
        labelmap=res.labelmap,
        margin=top2[1] - top2[0],
        weight=probe.patch_weight,
        coef=probe.intensity_coef,
        evals=probe.metrics["lbfgs_evaluations"],
    )


def run_child(package_root: str | None, case: str, work: Path, tag: str) -> Path:
    out = work / f"{case}_{tag}.npz"
    env = dict(os.environ)
    if package_root:
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    subprocess.run(
        [sys.executable, __file__, "--child", str(work / f"{case}.npz"), str(out)], env=env, check=True
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=False, help="folder holding the older voxelfm package")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="voxelfm_refit_cmp_"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        "| case | voxels | changed voxels | max before-margin at changed voxels | median margin (all) "
        "| patch weight max abs diff | LBFGS evals before / after |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for case in prepare_inputs(work):
        a = np.load(run_child(args.before, case, work, "before"))
        b = np.load(run_child(None, case, work, "after"))
        changed = a["labelmap"] != b["labelmap"]
        worst = float(a["margin"][changed].max()) if changed.any() else 0.0
        wdiff = float(np.abs(a["weight"] - b["weight"]).max())
        print(
            f"| {case} | {changed.size} | {int(changed.sum())} | {worst:.2e} | {float(np.median(a['margin'])):.2f} "
            f"| {wdiff:.2e} | {int(a['evals'])} / {int(b['evals'])} |",
            flush=True,
        )
    print(json.dumps({"work": str(work)}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What input/output safety costs, and what the manifest rules prevent (issue 9).

1. Reading: ``imaging.file_checks`` decompresses every gzip stream end to end (truncation, CRC) and scans
   NIfTI floats for NaN/inf before SimpleITK reads the image. Time of the check vs SimpleITK's own read on
   every real NIfTI in ../shared/data.
2. Outputs: ``OutputPlan.check()`` for typical commands (new outputs, an own earlier output to re-hash, a
   folder of 200 images).
3. Leaks the manifest rules stop: a cohort of real-CT crops, two "scans" per patient (the second shifted by
   4 voxels plus 10 HU noise), labels random per patient, so any held-out AUC above 0.5 is a leak. 5-fold CV
   AUC of a linear probe (cls+mean) and of the 1-NN baseline: one row per patient (reference), both scans
   with folds grouped by patient (what a ``patient`` column gives), both scans ungrouped, and every row listed
   twice (now refused). Models: the bundled voxelfm-tiny and the same architecture at random init.

    python Testing/Benchmarks/bench_safety.py --model Resources/models/voxelfm-tiny --threads 1 [--parts 1,2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "VoxelFMExtension"))
DATA = REPO.parent / "shared" / "data"


def _best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_reading(repeats: int) -> list[str]:
    import SimpleITK as sitk

    from voxelfm.imaging.file_checks import check_image_file

    rows = [
        "| image | MB on disk | voxels (M) | check s | SimpleITK read s | overhead |",
        "|---|---|---|---|---|---|",
    ]
    for path in sorted(DATA.rglob("*.nii.gz")):
        if "label" in path.name or path.stat().st_size < 200_000:
            continue  # label maps / small masks: CTs only
        img = sitk.ReadImage(str(path))
        n = int(np.prod(img.GetSize())) / 1e6
        check = _best_of(lambda p=path: check_image_file(p), repeats)
        read = _best_of(lambda p=path: sitk.ReadImage(str(p)), repeats)
        name = str(path.relative_to(DATA))
        rows.append(
            f"| {name} | {path.stat().st_size / 1e6:.1f} | {n:.1f} | {check:.3f} | {read:.3f} | {check / read:.0%} |"
        )
    return rows


def bench_outputs(repeats: int) -> list[str]:
    from voxelfm.files.output_ledger import record_output
    from voxelfm.files.outputs import OutputPlan

    rows = ["| plan | check ms |", "|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "ct.nii.gz").write_bytes(b"x" * 1000)
        own = root / "own.npz"
        own.write_bytes(np.random.default_rng(0).bytes(50_000_000))  # a 50 MB features file
        record_output(own)
        images = root / "images"
        images.mkdir()
        for n in range(200):
            (images / f"c{n}.nii.gz").write_bytes(b"x")

        def plan(outputs, inputs):
            p = OutputPlan().input(*inputs)
            for o in outputs:
                p.output(o)
            return p.check

        cases = {
            "features: 2 new outputs": plan([root / "o.npz", root / "o.png"], [root / "ct.nii.gz"]),
            "features: rerun over its own 50 MB output": plan([own], [root / "ct.nii.gz"]),
            "segment --probe on a folder of 200 images": plan(
                [root / "segs" / f"c{n}_seg.nii.gz" for n in range(200)], [images, *images.iterdir()]
            ),
        }
        for name, fn in cases.items():
            rows.append(f"| {name} | {1000 * _best_of(fn, repeats):.1f} |")
    return rows


# --- 3. the leak ------------------------------------------------------------------------------------------


def _cts() -> list[Path]:
    found = [p for p in sorted(DATA.rglob("ct.nii.gz"))] + sorted((DATA / "public_ct").glob("*.nii.gz"))
    return found + [DATA / "public_ct" / "elastix_lung_small" / "3DCT_lung_baseline_small.mha"]


def _crops(per_ct: int, side_mm: float, seed: int):
    """(first scan, second scan) per patient: a random box of a real CT and the same box shifted + noise."""
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.volume import Volume

    rng = np.random.default_rng(seed)
    pairs = []
    for path in _cts():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = read_volume(path)
        size = np.minimum(np.round(side_mm / vol.spacing[::-1]).astype(int), np.array(vol.array.shape) - 5)
        for _ in range(per_ct):
            start = [int(rng.integers(0, s - n - 4 + 1)) for s, n in zip(vol.array.shape, size, strict=True)]
            boxes = []
            for shift in (0, 4):
                sl = tuple(slice(a + shift, a + shift + n) for a, n in zip(start, size, strict=True))
                arr = vol.array[sl].copy()
                if shift:
                    arr += rng.normal(0, 10, arr.shape).astype(np.float32)
                boxes.append(Volume(arr, vol.ijk_to_ras, path.name))
            pairs.append(tuple(boxes))
    return pairs


def _features(pairs, model) -> np.ndarray:
    """cls+mean pooled vectors [patients, 2, 2C]."""
    from voxelfm.features.extract import extract_features

    out = []
    for pair in pairs:
        scans = []
        for vol in pair:
            f = extract_features(vol, model, cache=False, device="cpu")
            scans.append(np.concatenate([f.cls, f.patch.reshape(-1, f.patch.shape[-1]).mean(0)]))
        out.append(scans)
    return np.asarray(out, np.float32)


def _aucs(x, y, groups, seed) -> tuple[float, float]:
    from voxelfm.probes.config import ProbeConfig
    from voxelfm.probes.fit import fit_probe_inputs

    cfg = ProbeConfig(pooling="cls+mean", knn_k=1, n_bootstrap=0, folds=5, seed=seed)
    r = fit_probe_inputs("classification", x, y, cfg, groups=groups)
    return r.metrics["auc"]["value"], r.metrics["knn_baseline"]["auc"]["value"]


def bench_leak(model_ref: str, per_ct: int, label_seeds: int) -> list[str]:
    from voxelfm.model import VoxelFMBackbone
    from voxelfm.model.loading import load_backbone

    tiny = load_backbone(model_ref, device="cpu")
    torch.manual_seed(0)
    random_init = VoxelFMBackbone(tiny.cfg).eval()
    pairs = _crops(per_ct, 84.0, 0)
    n = len(pairs)
    rows = [
        f"{n} patients x 2 scans, labels random per patient ({label_seeds} label draws: mean ± sd of the AUC)",
        "",
        "| model | evaluation | cases | linear AUC | 1-NN AUC |",
        "|---|---|---|---|---|",
    ]
    for name, model in (("voxelfm-tiny", tiny), ("random init", random_init)):
        feats = _features(pairs, model)
        results: dict[str, list[tuple[float, float]]] = {}
        for s in range(label_seeds):
            y = np.random.default_rng(100 + s).integers(0, 2, n)
            pat = np.arange(n)
            both, both_y, both_g = feats.reshape(2 * n, -1), np.repeat(y, 2), np.repeat(pat, 2)
            setups = {
                "one row per patient (reference)": (feats[:, 0], y, None),
                "both scans, folds grouped by patient": (both, both_y, both_g),
                "both scans, ungrouped (no patient column)": (both, both_y, None),
                "every row listed twice (now refused)": (np.repeat(feats[:, 0], 2, 0), both_y, None),
            }
            for label, (x, yy, g) in setups.items():
                results.setdefault(label, []).append(_aucs(x, yy, g, s))
        for label, vals in results.items():
            lin, knn = zip(*vals, strict=True)
            cases = n if "reference" in label else 2 * n
            rows.append(f"| {name} | {label} | {cases} | {_ms(lin)} | {_ms(knn)} |")
    return rows


def _ms(values) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "Resources" / "models" / "voxelfm-tiny"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--crops-per-ct", type=int, default=6)
    ap.add_argument("--label-seeds", type=int, default=5)
    ap.add_argument("--parts", default="1,2,3", help="which tables, e.g. 1,2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = {
        "1": (
            "1. Image integrity check vs SimpleITK read (best of repeats)",
            lambda: bench_reading(args.repeats),
        ),
        "2": ("2. Output plan check", lambda: bench_outputs(args.repeats)),
        "3": (
            "3. Held-out AUC with no signal: what grouping and one-row-per-image prevent",
            lambda: bench_leak(args.model, args.crops_per_ct, args.label_seeds),
        ),
    }
    for key in args.parts.split(","):
        title, run = parts[key.strip()]
        print(f"\n## {title}\n")
        print("\n".join(run()), flush=True)


if __name__ == "__main__":
    main()

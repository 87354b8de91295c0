"""Few-shot segmentation benchmark: Dice / HD95 from 1, 3, 5 fully labelled axial slices.

Methods (same sparse labels for all): our probe on the given model's frozen features (+ local intensity
features, the default), the same probe on a randomly initialised backbone of the same architecture, a
classic ilastik-style random forest on a multi-scale filter bank, and two ablations of our probe (intensity
features only; patch features only). Cases: abdomen_3mm (liver, spleen, left kidney, aorta), torso_3mm
(vertebra L1) from ../shared/data/totalseg, and the pyradiomics lung1 nodule (a hard case).

    .venv/bin/python Testing/Benchmarks/bench_fewshot_segmentation.py --model voxelfm-tiny \
        --out Testing/Benchmarks/results/fewshot_segmentation.md

Labelled slices are spread evenly over the structure's axial extent; Dice / HD95 are computed over the whole
volume (labelled slices included). The reference masks of totalseg are TotalSegmentator predictions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]

TOTALSEG = [
    (
        "abdomen_3mm",
        "ct.nii.gz",
        "labels.nii.gz",
        [("liver", 5), ("spleen", 1), ("kidney_left", 3), ("aorta", 52)],
    ),
    ("torso_3mm", "ct.nii.gz", "vertebrae_labels.nii.gz", [("vertebra_L1", 31)]),
]


def pick_slices(mask: np.ndarray, n: int) -> list[int]:
    z = np.flatnonzero(mask.any(axis=(1, 2)))
    lo, hi = int(z.min()), int(z.max())
    return sorted({int(round(lo + (hi - lo) * (i + 1) / (n + 1))) for i in range(n)})


def load_cases(data: Path, lung1_dir: Path | None):
    from voxelfm.imaging.io import read_volume

    cases = []
    for folder, ct, lab, structs in TOTALSEG:
        d = data / "totalseg" / folder
        if not d.exists():
            print(f"skip {folder}: {d} missing", file=sys.stderr)
            continue
        cases.append((folder, read_volume(str(d / ct)), read_volume(str(d / lab), check_hu=False), structs))
    if lung1_dir is None:
        try:
            from voxelfm.samples.fetch import fetch_sample_data

            got = fetch_sample_data(case="lung1")
            lung1 = (got.image, got.label)
        except Exception as exc:  # noqa: BLE001 - the benchmark runs without the tumour case
            print(f"skip lung1: {exc}", file=sys.stderr)
            lung1 = None
    else:
        lung1 = (lung1_dir / "lung1_image.nrrd", lung1_dir / "lung1_label.nrrd")
    if lung1 is not None:
        cases.append(
            ("lung1", read_volume(str(lung1[0])), read_volume(str(lung1[1]), check_hu=False), [("tumour", 1)])
        )
    return cases


def features_for(volume, model, feature_spacing):
    from voxelfm.features.extract import extract_features
    from voxelfm.imaging.resample import resample_isotropic as resample_for_features

    src = resample_for_features(volume, feature_spacing) if feature_spacing else volume
    return extract_features(src, model, cache=False, device="cpu", max_tokens=4096)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default=None, help="registry id or checkpoint path (default: the default model)"
    )
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--lung1-dir", default=None, help="folder with lung1_image.nrrd + lung1_label.nrrd")
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument(
        "--feature-spacing", type=float, default=None, help="resample to this spacing for features"
    )
    ap.add_argument("--rf-trees", type=int, default=50)
    ap.add_argument("--random-seed", type=int, default=1, help="seed of the random-init control backbone")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", default="", help="a line to put under the title (e.g. what the model is)")
    ap.add_argument("--cases", nargs="+", default=None, help="subset: abdomen_3mm torso_3mm lung1")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from baselines.random_forest import filter_bank, rf_segment  # beside this script (sys.path[0])

    from voxelfm import load_backbone
    from voxelfm.imaging.volume import Volume
    from voxelfm.model import VoxelFMBackbone
    from voxelfm.segment import SegmentationConfig, SegmentationContext, fit_segmentation
    from voxelfm.segment.labels import select_slices
    from voxelfm.segment.metrics import dice, hd95
    from voxelfm.segment.voxel_features import IntensityConfig

    model_id = args.model
    if model_id is None:
        from voxelfm.hub.registry import default_model_id

        model_id, _ = default_model_id()
    model = load_backbone(model_id)
    # Not seed 0: that is the pretraining run's own starting point, which would make the control the
    # pretrained model's initial weights rather than an independent random init.
    torch.manual_seed(args.random_seed)
    random_model = VoxelFMBackbone(model.cfg).eval()
    random_model.preprocess_defaults = dict(getattr(model, "preprocess_defaults", {}))  # same preprocessing
    random_model.model_info = {"id": f"random-init({model_id})", "sha256": f"random-seed-{args.random_seed}"}
    methods = ["ours", "ours random-init", "RF filter bank", "probe intensity-only", "probe patch-only"]
    rows = []  # (case, structure, n, method, dice, hd95, seconds)
    t_start = time.time()
    for name, vol, ref, structs in load_cases(
        Path(args.data), Path(args.lung1_dir) if args.lung1_dir else None
    ):
        if args.cases and name not in args.cases:
            continue
        t = time.time()
        feats = {
            "ours": features_for(vol, model, args.feature_spacing),
            "ours random-init": features_for(vol, random_model, args.feature_spacing),
        }
        t_feat = time.time() - t
        t = time.time()
        bank = filter_bank(vol)
        t_bank = time.time() - t
        print(
            f"{name}: grid {feats['ours'].grid_shape} ({t_feat:.1f}s features), filter bank {t_bank:.1f}s",
            flush=True,
        )
        ctx = {k: SegmentationContext(vol, f) for k, f in feats.items()}
        ref_arr = np.rint(ref.array).astype(np.int64)
        spacing_kji = vol.spacing[::-1]
        for sname, value in structs:
            truth = ref_arr == value
            for n in args.slices:
                sl = pick_slices(truth, n)
                labels = Volume(select_slices(ref_arr, sl, classes=[value]), ref.ijk_to_ras)
                for m in methods:
                    t = time.time()
                    if m == "RF filter bank":
                        pred = rf_segment(vol, labels, bank=bank, n_estimators=args.rf_trees) == 1
                    else:
                        key = "ours random-init" if m == "ours random-init" else "ours"
                        cfg = SegmentationConfig()
                        if m == "probe intensity-only":
                            cfg = SegmentationConfig(use_patch_features=False)
                        elif m == "probe patch-only":
                            cfg = SegmentationConfig(intensity=IntensityConfig(enabled=False))
                        probe = fit_segmentation(vol, feats[key], labels, cfg, context=ctx[key])
                        pred = (
                            probe.predict(
                                vol, feats[key], context=ctx[key], with_probabilities=False
                            ).labelmap
                            == 1
                        )
                    secs = time.time() - t
                    rows.append(
                        (name, sname, len(sl), n, m, dice(pred, truth), hd95(pred, truth, spacing_kji), secs)
                    )
                    r = rows[-1]
                    print(
                        f"  {sname:12s} n={n} ({len(sl)} used) {m:22s} Dice {r[5]:.3f} HD95 {r[6]:7.1f} mm "
                        f"{secs:5.1f}s",
                        flush=True,
                    )
    report = render(rows, methods, args, model, time.time() - t_start)
    if not args.cases or "geometry" in args.cases:
        report += geometry_checks(Path(args.data), model, args.feature_spacing)
    print(report)
    if args.out:
        from voxelfm.files.atomic import atomic_write_text

        atomic_write_text(Path(args.out), report)
    return 0


def geometry_checks(data: Path, model, feature_spacing) -> str:
    """chest_dicom: labels on a flipped grid; abdomen: the same CT and labels with an oblique direction matrix."""
    import SimpleITK as sitk

    from voxelfm.imaging.io import read_volume, volume_to_sitk
    from voxelfm.imaging.volume import Volume
    from voxelfm.segment import SegmentationConfig, fit_segmentation
    from voxelfm.segment.labels import select_slices
    from voxelfm.segment.metrics import dice

    lines = ["", "Geometry checks (our probe, 3 labelled slices):", ""]
    chest = data / "totalseg" / "chest_dicom"
    if chest.exists():
        vol = read_volume(str(chest / "dicom"))
        lab_img = sitk.ReadImage(str(chest / "labels.nii.gz"))
        lab = read_volume(lab_img, check_hu=False)
        truth = sitk.GetArrayFromImage(
            sitk.Resample(lab_img, volume_to_sitk(vol), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        )
        feats = features_for(vol, model, feature_spacing)
        for name, value in (("liver", 5), ("aorta", 52)):
            ref = np.rint(lab.array).astype(np.int64)
            sparse = Volume(select_slices(ref, pick_slices(ref == value, 3), classes=[value]), lab.ijk_to_ras)
            pred = fit_segmentation(vol, feats, sparse, SegmentationConfig()).predict(
                vol, feats, with_probabilities=False
            )
            d = dice(pred.labelmap == 1, truth == value)
            lines.append(
                f"- chest_dicom {name}, labels on the flipped label grid: Dice {d:.3f} (vs reference resampled "
                "onto the DICOM grid)"
            )
    abd = data / "totalseg" / "abdomen_3mm"
    if abd.exists():
        vol = read_volume(str(abd / "ct.nii.gz"))
        ref = np.rint(read_volume(str(abd / "labels.nii.gz"), check_hu=False).array).astype(np.int64)
        sparse = select_slices(ref, pick_slices(ref == 5, 3), classes=[5])
        c, s = np.cos(0.4), np.sin(0.4)
        rot = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])
        out = []
        for m in (vol.ijk_to_ras, rot @ vol.ijk_to_ras):
            v = Volume(vol.array, m)
            feats = features_for(v, model, feature_spacing)
            pred = fit_segmentation(v, feats, Volume(sparse, m), SegmentationConfig()).predict(
                v, feats, with_probabilities=False
            )
            out.append(pred.labelmap == 1)
        lines.append(
            f"- abdomen liver, axis-aligned: Dice {dice(out[0], ref == 5):.3f}; same scan with an oblique "
            f"direction matrix (23 deg): Dice {dice(out[1], ref == 5):.3f}; voxel agreement "
            f"{(out[0] == out[1]).mean():.4f}"
        )
    return "\n".join(lines) + "\n"


def _fmt_hd(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.1f}"


def render(rows, methods, args, model, seconds) -> str:
    info = getattr(model, "model_info", {})
    lines = [
        "# Few-shot segmentation benchmark",
        "",
        *([args.note, ""] if args.note else []),
        f"Command: `.venv/bin/python {shlex.join(sys.argv)}`  ",
        f"Date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='minutes')}; model `{info.get('id')}` "
        f"(sha256 {str(info.get('sha256'))[:12]}…, embed_dim {model.cfg.embed_dim}, depth {model.cfg.depth}); "
        f"feature spacing {args.feature_spacing or 'model default preprocessing'}; total {seconds:.0f} s on CPU.",
        "",
        "Dice / HD95 (mm) over the whole volume; n = fully labelled axial slices requested (used, if fewer exist).",
        "",
        "| structure | n | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    keys = sorted(
        {(r[0], r[1], r[3]) for r in rows}, key=lambda k: ([r[:2] for r in rows].index(k[:2]), k[2])
    )
    for case, s, n in keys:
        cells = []
        used = None
        for m in methods:
            r = next(r for r in rows if r[0] == case and r[1] == s and r[3] == n and r[4] == m)
            used = r[2]
            cells.append(f"{r[5]:.3f} / {_fmt_hd(r[6])}")
        n_txt = f"{n}" if used == n else f"{n} ({used})"
        lines.append(f"| {case}/{s} | {n_txt} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean Dice (mean finite HD95, mm; failures = empty predictions):",
        "",
        "| n | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for n in sorted({r[3] for r in rows}) + ["all"]:
        cells = []
        for m in methods:
            sel = [r for r in rows if r[4] == m and (n == "all" or r[3] == n)]
            d = np.mean([r[5] for r in sel])
            hd = [r[6] for r in sel if math.isfinite(r[6])]
            fails = len(sel) - len(hd)
            cells.append(
                f"{d:.3f} ({np.mean(hd):.1f}{f', {fails} fail' if fails else ''})" if hd else f"{d:.3f}"
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    sec = {m: np.mean([r[7] for r in rows if r[4] == m]) for m in methods}
    lines += ["", "Mean seconds per fit+predict: " + ", ".join(f"{m} {v:.2f}" for m, v in sec.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

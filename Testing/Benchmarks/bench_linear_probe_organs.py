"""Does pretraining help? Linear probe on patch features -> organ labels, cross-validated across volumes.

Two real CTs with TotalSegmentator reference labels (../shared/data/totalseg): abdomen_3mm and chest_dicom
(different patients; torso_3mm is the same patient as abdomen_3mm and is left out). Classes = structures
labelled in both volumes (grouped: liver, spleen, stomach, aorta, inferior vena cava, vertebra, rib, back
muscle, spinal cord, pancreas, colon) + background. Voxels of structures labelled in only one volume are
dropped. For each model: features of each CT (resampled to --spacing mm first), patch features
trilinearly sampled at up to --per-class voxels per class, a multinomial logistic regression (scikit-learn,
standardised) fitted on one volume and tested on the other, both directions. Reported: balanced accuracy
and macro F1 on the test volume. Compared: a pretrained model vs the same architecture at random init
(several seeds).

    python Testing/Benchmarks/bench_linear_probe_organs.py --model Resources/models/voxelfm-tiny
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

GROUPS = {
    "liver": r"^liver$",
    "spleen": r"^spleen$",
    "stomach": r"^stomach$",
    "aorta": r"^aorta$",
    "ivc": r"^inferior_vena_cava$",
    "vertebra": r"^vertebrae_",
    "rib": r"^(rib_|costal)",
    "back_muscle": r"^autochthon_",
    "spinal_cord": r"^spinal_cord$",
    "pancreas": r"^pancreas$",
    "colon": r"^colon$",
}


def group_map(names: dict[str, str]) -> dict[int, int]:
    """label value -> group index (1..G), -1 for structures we drop; 0 stays background."""
    out = {}
    for value, name in names.items():
        g = -1
        for gi, (_, pat) in enumerate(GROUPS.items(), start=1):
            if re.search(pat, name):
                g = gi
        out[int(value)] = g
    return out


def load_case(data: Path, name: str):
    from voxelfm.imaging.io import read_volume

    folder = data / "totalseg" / name
    ct = read_volume(folder / ("dicom" if (folder / "dicom").is_dir() else "ct.nii.gz"))
    lab = read_volume(folder / "labels.nii.gz", check_hu=False)
    names = json.loads((folder / "labels.json").read_text())
    gm = group_map(names)
    lut = np.full(int(lab.array.max()) + 1, -1, dtype=np.int64)
    lut[0] = 0
    for v, g in gm.items():
        if v < lut.size:
            lut[v] = g
    lab.array = lut[lab.array.astype(np.int64)]
    return ct, lab


def sample_points(ct, lab, per_class: int, rng: np.random.Generator):
    """RAS points + group labels: labels resampled (nearest) onto the CT grid, then sampled per class."""
    from voxelfm.imaging.resample import resample_to_grid

    on_ct = resample_to_grid(
        lab.array.astype(np.int16), lab.ijk_to_ras, ct.array.shape, ct.ijk_to_ras, mode="nearest", fill=-1
    )
    pts, ys = [], []
    for g in range(len(GROUPS) + 1):
        idx = np.flatnonzero(on_ct.ravel() == g)
        if idx.size < 20:
            continue
        pick = rng.choice(idx, size=min(per_class, idx.size), replace=False)
        kji = np.stack(np.unravel_index(pick, on_ct.shape), axis=1)
        ras = kji[:, ::-1].astype(np.float64) @ ct.ijk_to_ras[:3, :3].T + ct.ijk_to_ras[:3, 3]
        pts.append(ras)
        ys.append(np.full(len(pick), g))
    return np.concatenate(pts), np.concatenate(ys)


def features_at(model, ct, ras: np.ndarray, spacing: float, max_tokens: int):
    from voxelfm.features.extract import default_preprocess_for, extract_features
    from voxelfm.imaging.resample import resample_isotropic as resample_for_features
    from voxelfm.segment.voxel_features import grid_index_of_ras, sample_patch_features

    src = resample_for_features(ct, spacing)
    f = extract_features(
        src, model, preprocess=default_preprocess_for(model), max_tokens=max_tokens, cache=False
    )
    ijk = grid_index_of_ras(f.grid_to_ras, ras)
    d, h, w = f.grid_shape
    inside = np.all((ijk >= -0.5) & (ijk <= np.array([w, h, d]) - 0.5), axis=1)
    rows = torch.from_numpy(f.patch.reshape(-1, f.patch.shape[-1]))
    return sample_patch_features(rows, (d, h, w), ijk).numpy(), inside


def evaluate(model, cases, spacing: float, max_tokens: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = {}
    for name, (ct, ras, y) in cases.items():
        x, inside = features_at(model, ct, ras, spacing, max_tokens)
        feats[name] = (x[inside], y[inside])
    res = {}
    names = list(cases)
    for tr, te in [(names[0], names[1]), (names[1], names[0])]:
        (xtr, ytr), (xte, yte) = feats[tr], feats[te]
        common = np.intersect1d(np.unique(ytr), np.unique(yte))
        mtr, mte = np.isin(ytr, common), np.isin(yte, common)
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
        )
        clf.fit(xtr[mtr], ytr[mtr])
        pred = clf.predict(xte[mte])
        res[f"{tr}->{te} bal_acc"] = balanced_accuracy_score(yte[mte], pred)
        res[f"{tr}->{te} macro_f1"] = f1_score(yte[mte], pred, average="macro")
        res[f"{tr}->{te} classes"] = len(common)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", required=True, nargs="+", help="pretrained model(s): registry id, folder or checkpoint"
    )
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--spacing", type=float, default=1.5, help="isotropic mm for feature extraction")
    p.add_argument("--per-class", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3, help="random-init seeds")
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from voxelfm import load_backbone
    from voxelfm.model import VoxelFMBackbone

    rng = np.random.default_rng(0)
    cases = {}
    for name in ("abdomen_3mm", "chest_dicom"):
        ct, lab = load_case(Path(args.data), name)
        ras, y = sample_points(ct, lab, args.per_class, rng)
        cases[name] = (ct, ras, y)
    rows = []
    t0 = time.perf_counter()
    for model in args.model:
        pre = load_backbone(model)
        rows.append(
            ("pretrained " + Path(str(model)).name, evaluate(pre, cases, args.spacing, args.max_tokens))
        )
    n_pre = len(rows)
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        rnd = VoxelFMBackbone(pre.cfg).eval()
        rnd.preprocess_defaults = dict(getattr(pre, "preprocess_defaults", {}))
        rows.append((f"random init seed {seed}", evaluate(rnd, cases, args.spacing, args.max_tokens)))
    keys = list(rows[0][1])
    lines = [
        f"Linear probe, organ groups, train on one CT / test on the other (features at {args.spacing} mm, "
        f"{args.per_class} voxels per class per CT), architecture {pre.cfg.embed_dim}/{pre.cfg.depth}/{pre.cfg.num_heads}",
        "",
        "| model | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
        )
    rnd_means = {k: np.mean([r[k] for n, r in rows[n_pre:]]) for k in keys if "classes" not in k}
    lines.append(
        "| random init (mean) | "
        + " | ".join(f"{rnd_means[k]:.3f}" if k in rnd_means else "" for k in keys)
        + " |"
    )
    lines.append(f"\n({time.perf_counter() - t0:.0f} s; command: {' '.join(sys.argv)})")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

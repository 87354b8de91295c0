"""bf16 vs fp32 features on real CT: patch-token agreement, and few-shot Dice with bf16 vs fp32 features.

Part 1, for the bundled voxelfm-tiny and a ViT-B/14-sized model at random init (dim 864, depth 12, 12 heads;
the official weights are not downloadable here; LayerScale 1.0 so every block changes the tokens: with the
reference init 1e-5 the blocks are near-identity and agreement would be trivially high): cosine and max abs
difference of patch tokens, bf16 autocast (what ``precision=bf16`` runs) and a bf16 copy of the weights, vs fp32.
Part 2: the few-shot protocol of bench_fewshot_segmentation.py (our probe, default settings; 1/3/5 labelled
axial slices) on voxelfm-tiny features extracted in fp32 and in bf16.
Token counts are moderate because bf16 is emulated (slow) on CPUs without native bf16.

    .venv/bin/python Testing/Benchmarks/bench_precision_accuracy.py --tokens-tiny 2048 --tokens-vitb 512
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
CTS = {
    "abdomen_3mm": DATA / "totalseg" / "abdomen_3mm" / "ct.nii.gz",
    "popi_chest": DATA / "public_ct" / "popi_phase00_chest.nii.gz",
}


def _agreement(ref: np.ndarray, other: np.ndarray) -> tuple[float, float, float, float]:
    a = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    b = other.reshape(-1, other.shape[-1]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    diff = np.abs(a - b).max()
    return float(cos.mean()), float(cos.min()), float(diff), float(diff / np.abs(a).max())


def token_agreement(name: str, model, tokens: int) -> list[str]:
    from voxelfm.features.extract import default_preprocess_for, forward_prepared
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.preprocess import prepare

    rows = []
    cast = copy.deepcopy(model).to(torch.bfloat16)  # weights (and so every op) in bf16
    for ct, path in CTS.items():
        cfg = dataclasses.replace(default_preprocess_for(model), max_patches=tokens)
        x = prepare(read_volume(str(path)), cfg).normalized().numpy()
        runs = {}
        for label, m, precision in (
            ("fp32", model, "fp32"),
            ("bf16 autocast", model, "bf16"),
            ("bf16 weights", cast, "fp32"),
        ):
            t = time.perf_counter()
            runs[label] = forward_prepared(m, x, max_tokens=10**6, device="cpu", precision=precision).patch
            runs[label + " s"] = time.perf_counter() - t
        n = int(np.prod(runs["fp32"].shape[:3]))
        for label in ("bf16 autocast", "bf16 weights"):
            cm, cmin, d, rel = _agreement(runs["fp32"], runs[label])
            rows.append(
                f"| {name} | {ct} | {n} | {label} | {cm:.6f} | {cmin:.6f} | {d:.4f} | {rel:.2e} "
                f"| {runs['fp32 s']:.1f} / {runs[label + ' s']:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def fewshot_dice(model, slices: list[int]) -> list[str]:
    from bench_fewshot_segmentation import load_cases, pick_slices  # beside this script

    from voxelfm.features.extract import extract_features
    from voxelfm.imaging.volume import Volume
    from voxelfm.segment import SegmentationConfig, SegmentationContext, fit_segmentation
    from voxelfm.segment.labels import select_slices
    from voxelfm.segment.metrics import dice

    rows, pairs = [], []
    for name, vol, ref, structs in load_cases(DATA, None):
        feats = {
            p: extract_features(vol, model, cache=False, device="cpu", max_tokens=4096, precision=p)
            for p in ("fp32", "bf16")
        }
        ctx = {p: SegmentationContext(vol, f) for p, f in feats.items()}
        ref_arr = np.rint(ref.array).astype(np.int64)
        for sname, value in structs:
            truth = ref_arr == value
            for n in slices:
                labels = Volume(
                    select_slices(ref_arr, pick_slices(truth, n), classes=[value]), ref.ijk_to_ras
                )
                d = {}
                for p in ("fp32", "bf16"):
                    probe = fit_segmentation(vol, feats[p], labels, SegmentationConfig(), context=ctx[p])
                    pred = (
                        probe.predict(vol, feats[p], context=ctx[p], with_probabilities=False).labelmap == 1
                    )
                    d[p] = dice(pred, truth)
                pairs.append((d["fp32"], d["bf16"]))
                rows.append(
                    f"| {name}/{sname} | {n} | {d['fp32']:.3f} | {d['bf16']:.3f} | {d['bf16'] - d['fp32']:+.3f} |"
                )
                print(rows[-1], flush=True)
    f32, b16 = (np.array(v) for v in zip(*pairs, strict=True))
    rows.append(
        f"| **mean** | all | {f32.mean():.3f} | {b16.mean():.3f} | {b16.mean() - f32.mean():+.3f} "
        f"(max abs {np.abs(b16 - f32).max():.3f}) |"
    )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens-tiny", type=int, default=2048)
    ap.add_argument("--tokens-vitb", type=int, default=512)
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-fewshot", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from voxelfm import load_backbone
    from voxelfm.device import cpu_bf16_support
    from voxelfm.model import BackboneConfig, VoxelFMBackbone

    tiny = load_backbone("voxelfm-tiny")
    torch.manual_seed(0)
    vitb = VoxelFMBackbone(BackboneConfig(embed_dim=864, depth=12, num_heads=12, layerscale=1.0)).eval()
    vitb.preprocess_defaults = {}
    out = [
        f"CPU bf16 support: {cpu_bf16_support()}; torch {torch.__version__}, {args.threads} threads, load average "
        f"{os.getloadavg()[0]:.1f}",
        "",
        "| model | CT | tokens | bf16 mode | cosine mean | cosine min | max abs diff | max abs diff / max abs "
        "| seconds fp32 / bf16 |",
        "|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    out += token_agreement("voxelfm-tiny", tiny, args.tokens_tiny)
    out += token_agreement("ViT-B/14 random init", vitb, args.tokens_vitb)
    if not args.skip_fewshot:
        out += [
            "",
            "Few-shot Dice (voxelfm-tiny features, our probe):",
            "",
            "| structure | labelled slices | Dice fp32 features | Dice bf16 features | difference |",
            "|---|---:|---:|---:|---:|",
        ]
        out += fewshot_dice(tiny, args.slices)
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

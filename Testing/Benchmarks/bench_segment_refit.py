"""Interactive refit timing: fit + labelmap prediction with cached features on a 512x512x100 CT.

The features are random (refit cost does not depend on the weights) on the grid a 512x512x100 CT of
0.98 x 0.98 x 2 mm gets from the default preprocessing (isotropic 0.98 mm -> 36 x 36 x 14 patches), with
864 channels (ViT-B) by default. The CT is real if --ct is given (first 100 slices), else synthetic.

    .venv/bin/python Testing/Benchmarks/bench_segment_refit.py [--ct ../shared/data/public_ct/popi_phase00_chest.nii.gz]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class CachedFeatures:
    patch: np.ndarray
    grid_to_ras: np.ndarray
    model: dict = field(default_factory=dict)
    preprocess: dict = field(default_factory=dict)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=None)
    ap.add_argument("--channels", type=int, default=864)
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from voxelfm.imaging.resample import patch_grid_to_ras
    from voxelfm.imaging.volume import Volume
    from voxelfm.segment import SegmentationConfig, SegmentationContext, fit_segmentation
    from voxelfm.segment.labels import painted_slices_to_labels

    m = np.diag([0.977, 0.977, 2.0, 1.0])
    if args.ct:
        from voxelfm.imaging.io import read_volume

        v = read_volume(args.ct)
        arr, m = np.ascontiguousarray(v.array[:100, :512, :512]), v.ijk_to_ras
    else:
        rng = np.random.default_rng(0)
        arr = rng.normal(0, 30, (100, 512, 512)).astype(np.float32)
    vol = Volume(arr.astype(np.float32), m)
    d, h, w = 14, 36, 36
    prep = m @ np.diag([512 / (w * 14), 512 / (h * 14), 100 / (d * 14), 1.0])
    feats = CachedFeatures(
        np.random.default_rng(1).normal(size=(d, h, w, args.channels)).astype(np.float32),
        patch_grid_to_ras(prep, 14),
    )
    kk, jj, ii = np.ogrid[:100, :512, :512]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"volume {arr.shape}, feature grid {feats.patch.shape}, torch threads {args.threads}, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs (wall times inflate under load; CPU time does not)"
    )
    for k_classes in args.classes:
        painted = np.zeros(arr.shape, np.uint8)
        for c in range(1, k_classes + 1):
            blob = (kk - 50) ** 2 / 900 + (jj - 100 - 80 * c) ** 2 / 1600 + (ii - 256) ** 2 / 2500 < 1
            painted[blob] = c
        sl = [35, 50, 65]
        lab = painted_slices_to_labels(np.where(np.isin(kk, sl), painted, 0).astype(np.uint8))
        labels = Volume(lab, m)
        t = time.perf_counter()
        ctx = SegmentationContext(vol, feats)
        ctx.intensity(SegmentationConfig().intensity)
        ctx.upsampler()
        t_ctx = time.perf_counter() - t
        fit_t, pred_t, prob_t, cpu_t = [], [], [], []
        for _ in range(args.repeats):
            c0 = time.process_time()
            t0 = time.perf_counter()
            probe = fit_segmentation(vol, feats, labels, SegmentationConfig(), context=ctx)
            t1 = time.perf_counter()
            probe.predict(vol, feats, context=ctx, with_probabilities=False)
            t2 = time.perf_counter()
            cpu_t.append(time.process_time() - c0)
            fit_t.append(t1 - t0)
            pred_t.append(t2 - t1)
        t3 = time.perf_counter()
        probe.predict(vol, feats, context=ctx, with_probabilities=True)
        prob_t.append(time.perf_counter() - t3)
        total = [a + b for a, b in zip(fit_t, pred_t, strict=True)]
        print(
            f"K={k_classes}: one-time context {t_ctx:.2f} s; refit median {statistics.median(total):.3f} s "
            f"(fit {statistics.median(fit_t):.3f} + labelmap {statistics.median(pred_t):.3f}); "
            f"CPU time median {statistics.median(cpu_t):.3f} s; with probabilities {prob_t[0]:.2f} s; LBFGS evals {probe.metrics['lbfgs_evaluations']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Probe fitting time at realistic feature sizes (synthetic features, CPU). Prints a table; no asserts.

python Testing/Benchmarks/bench_probes.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from voxelfm.probes import ProbeConfig
from voxelfm.probes.fit import fit_probe_inputs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dim", type=int, default=1728, help="pooled dim (cls+mean of an 864-channel backbone)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{'task':<15}{'head':<8}{'cases':>6}{'dim':>6}{'seconds':>9}  metric")
    for n in (200, 1000):
        x = rng.normal(size=(n, args.dim)).astype(np.float32)
        s = x[:, :4].sum(1)
        targets = {
            "classification": (s + rng.normal(size=n) > 0).astype(int),
            "regression": s + rng.normal(size=n),
            "survival": np.stack([rng.exponential(1 / np.exp(0.5 * s)), rng.integers(0, 2, n)], axis=1),
        }
        for task, y in targets.items():
            for head in ("linear", "mlp"):
                t0 = time.perf_counter()
                r = fit_probe_inputs(task, x, y, ProbeConfig(head=head, pooling="cls"))
                key = {"classification": "auc", "regression": "r2", "survival": "c_index"}[task]
                dt = time.perf_counter() - t0
                print(
                    f"{task:<15}{head:<8}{n:>6}{args.dim:>6}{dt:>9.1f}  {key}={r.metrics[key]['value']:.3f}"
                )


if __name__ == "__main__":
    main()

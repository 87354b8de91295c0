"""Speed table: `voxelfm features` on a real chest CT at 4k-25k tokens, fp32 / bf16 / explicit attention.

Each (implementation, token count) runs the real command (`voxelfm.cli.main`) in its own process on a ViT-B/14
(dim 864, depth 12, 12 heads; random weights: speed does not depend on them) with no tiles, and reports the
forward time (``extraction.seconds``), the process peak RSS at the end of the forward, the whole command's wall
time (process start to exit: imports, checkpoint load, reading, preprocessing, hashing, forward, writing) and
its peak RSS, the achieved TFLOP/s of the forward and the patch-token cosine vs fp32. A matmul micro-benchmark
of the same machine (fp32 and bf16 ``linear``) is printed first. The CT (default: the 0.98 mm POPI chest CT,
25,920 tokens at the default preprocessing) is shrunk with --max-patches for the smaller token counts.
"explicit" replaces SDPA by attention that materialises the N x N logits (the reference's way), under an
address-space cap so an out-of-memory case is reported instead of taking the machine down.

    .venv/bin/python Testing/Benchmarks/bench_speed_table.py --tokens 4096 8192 16384 25920 \\
        --impl fp32 bf16 explicit --skip bf16:16384 bf16:25920 explicit:16384 explicit:25920
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from child_runs import child_argv, patch_explicit_attention, run_child

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CT = REPO.parent / "shared" / "data" / "public_ct" / "popi_phase00_chest.nii.gz"
VITB = {"embed_dim": 864, "depth": 12, "num_heads": 12}


def forward_flops(tokens: int, embed_dim: int, depth: int, mlp_ratio: float = 4.0, patch: int = 14) -> float:
    """Multiply-adds x 2 of one forward: qkv + proj + MLP (2 N C^2 (4 + 2 r)), attention (4 N^2 C), embed."""
    n = tokens + 5  # cls + 4 registers
    per_block = 2 * n * embed_dim**2 * (4 + 2 * mlp_ratio) + 4 * n * n * embed_dim
    return depth * per_block + 2 * tokens * patch**3 * embed_dim


def matmul_gflops(dtype: str, size: int, threads: int, budget_s: float = 20.0) -> float:
    import torch

    from voxelfm.device import matmul_gflops as measure

    torch.set_num_threads(threads)
    return measure({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype], size, budget_s=budget_s)


def child(impl: str, ct: str, tokens: int, model_dir: str, out: str, threads: int) -> None:
    """One real `voxelfm features` run in this process; prints a JSON line of measurements."""
    import torch

    torch.set_num_threads(threads)
    from voxelfm.cli.main import main
    from voxelfm.features import extract

    if impl == "explicit":
        patch_explicit_attention()
    seen: dict = {}
    original = extract.forward_prepared

    def measured(*a, **k):
        res = original(*a, **k)
        seen["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return res

    extract.forward_prepared = measured
    precision = "bf16" if impl == "bf16" else "fp32"
    argv = ["features", ct, "--out", out, "--model", model_dir, "--precision", precision, "--device", "cpu"]
    rc = main([*argv, "--max-patches", str(tokens), "--max-tokens", "1000000", "--no-cache", "--overwrite"])
    import numpy as np

    meta = json.loads(str(np.load(out)["meta"]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rc": rc,
                "extraction": meta["extraction"],
                "forward_rss_mb": seen.get("rss_mb"),
                "peak_rss_mb": peak,
                "grid": list(np.load(out)["patch"].shape[:3]),
            }
        )
    )


def run_one(impl: str, tokens: int, args: argparse.Namespace, model_dir: str, work: Path) -> dict:
    out = work / f"{impl}_{tokens}.npz"
    argv = child_argv(
        __file__, impl, tokens, ct=args.ct, model_dir=model_dir, out_npz=out, threads=args.threads
    )
    t0 = time.perf_counter()
    res = run_child(argv, args.mem_cap_gb, capped=impl == "explicit", timeout=args.timeout)
    if "error" in res:
        return res
    res["command_s"] = time.perf_counter() - t0
    res["npz"] = str(out)
    return res


def cosine_vs(a_npz: str, b_npz: str) -> tuple[float, float]:
    import numpy as np

    a, b = np.load(a_npz)["patch"], np.load(b_npz)["patch"]
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def save_model(work: Path, layerscale: float) -> str:
    import torch

    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    folder = work / "vitb"
    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        save_backbone(VoxelFMBackbone(BackboneConfig(**VITB, layerscale=layerscale)), folder)
    return str(folder)


def render(rows, args, mm: dict) -> str:
    lines = [
        f"Machine: {os.cpu_count()} CPUs, torch threads {args.threads}, load average {os.getloadavg()[0]:.1f} at "
        "the end (other jobs share this machine: wall times inflate under load).",
        "Matmul micro-benchmark (linear, best of 5): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items()),
        "",
        "| tokens | grid | impl | forward (s) | forward TFLOP/s | RSS after forward (MB) | whole command (s) "
        "| outside the forward | command peak RSS (MB) | cosine vs fp32 (mean / min) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for tokens, impl, r, cos in rows:
        if "error" in r:
            lines.append(f"| {tokens} | | {impl} | - | - | - | - | - | - | {r['error']} |")
            continue
        fwd = r["extraction"]["seconds"]
        n = 1
        for s in r["grid"]:
            n *= s
        tf = forward_flops(n, VITB["embed_dim"], VITB["depth"]) / fwd / 1e12
        share = (r["command_s"] - fwd) / fwd
        g = "x".join(map(str, r["grid"]))
        c = f"{cos[0]:.6f} / {cos[1]:.6f}" if cos else "(reference)" if impl == "fp32" else "-"
        lines.append(
            f"| {n} | {g} | {impl} | {fwd:.1f} | {tf:.3f} | {r['forward_rss_mb']:.0f} | {r['command_s']:.1f} "
            f"| {share:.0%} | {r['peak_rss_mb']:.0f} | {c} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384, 25920])
    p.add_argument("--impl", nargs="+", default=["fp32", "bf16", "explicit"])
    p.add_argument("--skip", nargs="*", default=[], help="IMPL:TOKENS pairs not to run (e.g. bf16:25920)")
    p.add_argument("--ct", default=str(DEFAULT_CT))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run before it is stopped")
    p.add_argument("--mem-cap-gb", type=float, default=12.0, help="address-space cap of explicit runs")
    p.add_argument("--layerscale", type=float, default=1.0)
    p.add_argument("--work", default=None, help="folder for the model and outputs (default: a temp folder)")
    p.add_argument("--child", nargs=2, metavar=("IMPL", "TOKENS"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--out-npz", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.ct, int(args.child[1]), args.model_dir, args.out_npz, args.threads)
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="voxelfm_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = save_model(work, args.layerscale)
    mm = {f"{d} {s}^3": matmul_gflops(d, s, args.threads) for d, s in (("fp32", 4096), ("bf16", 2048))}
    print(json.dumps(mm), file=sys.stderr, flush=True)
    run_one("fp32", 64, args, model_dir, work)  # warm-up: checkpoint hash memo, page cache
    rows = []
    for tokens in args.tokens:
        ref = None
        for impl in args.impl:
            if f"{impl}:{tokens}" in args.skip:
                continue
            r = run_one(impl, tokens, args, model_dir, work)
            if impl == "fp32" and "error" not in r:
                ref = r["npz"]
            cos = cosine_vs(ref, r["npz"]) if ref and impl != "fp32" and "error" not in r else None
            rows.append((tokens, impl, r, cos))
            print(f"{impl} {tokens}: {json.dumps(r)}", file=sys.stderr, flush=True)
    print(render(rows, args, mm))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time and peak memory of one backbone forward: our SDPA attention vs plain explicit attention.

Each (implementation, token count) runs in a fresh subprocess so peak RSS is its own. ViT-B/14 (dim 864,
depth 12, heads 12) with random weights, fp32 on CPU, batch 1, a near-cubic volume with the given token
count. Explicit attention materialises the [heads, N, N] logits like the reference implementation; its
child gets an address-space cap so an out-of-memory case is reported instead of taking the machine down.

    python Testing/Benchmarks/bench_attention_memory.py --tokens 4096 8192 16384
Target (issue 2): >= 2x lower peak memory at 8k tokens and no slower.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from child_runs import child_argv, patch_explicit_attention, run_child


def grid_for(tokens: int) -> tuple[int, int, int]:
    best = None
    for d in range(1, 64):
        for h in range(d, 64):
            w = round(tokens / (d * h))
            if w < h:
                continue
            n = d * h * w
            score = (abs(n - tokens), w - d)
            if best is None or score < best[0]:
                best = (score, (d, h, w))
    return best[1]  # type: ignore[index]


def child(impl: str, tokens: int, embed_dim: int, depth: int, heads: int, threads: int) -> None:
    import torch

    from voxelfm.model import BackboneConfig, VoxelFMBackbone

    torch.set_num_threads(threads)
    if impl == "explicit":
        patch_explicit_attention()
    torch.manual_seed(0)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=embed_dim, depth=depth, num_heads=heads)).eval()
    d, h, w = grid_for(tokens)
    x = torch.randn(1, 1, 14 * d, 14 * h, 14 * w)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.forward_features(x)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "grid": [d, h, w],
                "tokens": d * h * w,
                "seconds": dt,
                "peak_rss_mb": peak / 1024,
                "model_rss_mb": base_rss / 1024,
                "finite": bool(torch.isfinite(out["patch"]).all()),
            }
        )
    )


def run_one(impl: str, tokens: int, args: argparse.Namespace) -> dict:
    dims = {"embed_dim": args.embed_dim, "depth": args.depth, "heads": args.heads}
    return run_child(child_argv(__file__, impl, tokens, **dims, threads=args.threads), args.mem_cap_gb)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--impl", nargs="+", default=["sdpa", "explicit"])
    p.add_argument("--embed-dim", type=int, default=864)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mem-cap-gb", type=float, default=20.0)
    p.add_argument("--child", nargs=2, metavar=("IMPL", "TOKENS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.embed_dim, args.depth, args.heads, args.threads)
        return
    rows = []
    for n in args.tokens:
        res = {impl: run_one(impl, n, args) for impl in args.impl}
        rows.append((n, res))
        print(f"done {n} tokens: {json.dumps(res)}", file=sys.stderr, flush=True)
    print(
        f"\nViT dim {args.embed_dim} depth {args.depth} heads {args.heads}, fp32 CPU, {args.threads} threads\n"
    )
    print("| tokens | grid | impl | time (s) | peak RSS (MB) |")
    print("|---:|---|---|---:|---:|")
    for n, res in rows:
        for impl, r in res.items():
            if "error" in r:
                print(f"| {n} | | {impl} | - | {r['error']} |")
            else:
                g = "x".join(map(str, r["grid"]))
                print(f"| {r['tokens']} | {g} | {impl} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    if "sdpa" in args.impl and "explicit" in args.impl:
        print("\n| tokens | memory ratio explicit/sdpa | speed ratio explicit/sdpa |")
        print("|---:|---:|---:|")
        for n, res in rows:
            a, b = res["sdpa"], res["explicit"]
            if "error" in a or "error" in b:
                print(f"| {n} | {'inf (explicit OOM)' if 'error' in b else '-'} | - |")
            else:
                print(
                    f"| {n} | {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} | {b['seconds'] / a['seconds']:.2f} |"
                )


if __name__ == "__main__":
    main()

"""Where the time of `voxelfm features` goes outside the backbone forward, before and after a change, in one run.

Runs the real command (ViT-B/14 random weights saved as our checkpoint format, a real chest CT shrunk to
--tokens patches, default cache on, as a user runs it) in a fresh process under cProfile, once per package copy
(``--before DIR``: a folder holding an older `voxelfm/` and its Resources, e.g. ``git archive <rev>
VoxelFMExtension/voxelfm | tar -x -C DIR``; then the working tree), and splits the wall time into: start-up +
imports, checkpoint load (of which: sha256), reading, preprocessing, content hash, forward, tiling/blending,
writing. A warm-up run first fills the checkpoint's hash memo and the page cache, as after a first use.

    .venv/bin/python Testing/Benchmarks/bench_features_overhead.py --before /tmp/voxelfm_before/VoxelFMExtension
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CT = REPO.parent / "shared" / "data" / "public_ct" / "popi_phase00_chest.nii.gz"
STAGES = {  # name -> (file suffix, function): cumulative time of these calls
    "main": ("voxelfm/cli/main.py", "main"),
    "read volume": ("voxelfm/imaging/io.py", "read_volume"),
    "checkpoint load": ("voxelfm/model/loading.py", "load_backbone"),
    "  of which sha256": ("voxelfm/files/integrity.py", "sha256_of"),
    "  of which model build": ("voxelfm/model/checkpoint.py", "build_and_load"),
    "preprocess": ("voxelfm/imaging/preprocess.py", "prepare"),
    "normalise": ("voxelfm/imaging/preprocess.py", "normalized"),
    "content hash": ("voxelfm/imaging/volume.py", "content_hash"),
    "forward_prepared": ("voxelfm/features/extract.py", "forward_prepared"),
    "forward": ("voxelfm/model/vit.py", "forward_features"),
    "write .npz (output + cache)": ("voxelfm/features/volume_features.py", "save"),
}


def stage_times(prof: Path) -> dict[str, float]:
    ps = pstats.Stats(str(prof))
    stats = ps.stats  # type: ignore[attr-defined]
    out = dict.fromkeys(STAGES, 0.0)
    out["profiled"] = ps.total_tt  # type: ignore[attr-defined]
    out["imports"] = sum(
        v[3] for k, v in stats.items() if k[0] == "<frozen importlib._bootstrap>" and k[2] == "_find_and_load"
    )
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
        for name, (suffix, fn) in STAGES.items():
            if func == fn and file.replace(os.sep, "/").endswith(suffix):
                out[name] = max(out[name], ct) if name == "main" else out[name] + ct
    return out


def run(root: str | None, args: argparse.Namespace, work: Path, tag: str, tokens: int, profile: bool) -> dict:
    env = dict(os.environ, VOXELFM_CACHE_DIR=str(work / "cache"))
    if root:
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    prof = work / f"{tag}.prof"
    cmd = [
        sys.executable,
        *(["-m", "cProfile", "-o", str(prof)] if profile else []),
        "-m",
        "voxelfm.cli",
        "features",
        args.ct,
        "--out",
        str(work / f"{tag}.npz"),
        "--model",
        str(work / "vitb"),
        "--max-patches",
        str(tokens),
        "--max-tokens",
        "1000000",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if not profile:
        return {"wall": wall}
    st = stage_times(prof)
    st["wall"] = wall
    return st


def render(results: dict[str, dict]) -> str:
    tags = list(results)
    lines = ["| stage | " + " | ".join(f"{t} (s)" for t in tags) + " |", "|---|" + "---:|" * len(tags)]
    rows = {}
    for t, st in results.items():
        fwd = st["forward"]
        tiling = st["forward_prepared"] - fwd
        named = ("checkpoint load", "read volume", "preprocess", "normalise", "content hash")
        write = st["write .npz (output + cache)"]
        rest = st["profiled"] - st["imports"] - sum(st[k] for k in named) - st["forward_prepared"] - write
        rows.setdefault("interpreter start-up (before profiling)", {})[t] = st["wall"] - st["profiled"]
        rows.setdefault("imports (all; a few inside the stages below)", {})[t] = st["imports"]
        for k in ("checkpoint load", "  of which sha256", "  of which model build", *named[1:]):
            rows.setdefault(k, {})[t] = st[k]
        rows.setdefault("tiling / blending", {})[t] = tiling
        rows.setdefault("write .npz (output + cache)", {})[t] = write
        rows.setdefault("rest (argument parsing, cache key, logging, overlap)", {})[t] = rest
        rows.setdefault("**outside the forward**", {})[t] = st["wall"] - fwd
        rows.setdefault("**forward**", {})[t] = fwd
        rows.setdefault("**whole command**", {})[t] = st["wall"]
    for k, v in rows.items():
        lines.append(f"| {k} | " + " | ".join(f"{v[t]:.2f}" for t in tags) + " |")
    lines.append(
        "| **outside / forward** | "
        + " | ".join(
            f"{(results[t]['wall'] - results[t]['forward']) / results[t]['forward']:.0%}" for t in tags
        )
        + " |"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=None, help="folder holding the older voxelfm package")
    ap.add_argument("--ct", default=str(CT))
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="voxelfm_overhead_"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "vitb" / "model.safetensors").is_file():
        import torch

        from voxelfm.model import BackboneConfig, VoxelFMBackbone
        from voxelfm.model.checkpoint import save_backbone

        torch.manual_seed(0)
        save_backbone(VoxelFMBackbone(BackboneConfig(embed_dim=864, depth=12, num_heads=12)), work / "vitb")
    versions = {"before": args.before, "after": None} if args.before else {"after": None}
    results = {}
    for tag, root in versions.items():
        run(root, args, work, f"{tag}_warmup", 64, profile=False)
        results[tag] = run(root, args, work, tag, args.tokens, profile=True)
        print(f"{tag}: {results[tag]}", file=sys.stderr, flush=True)
    print(
        f"`voxelfm features` at {args.tokens} tokens (ViT-B/14, fp32, cache on), load average "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

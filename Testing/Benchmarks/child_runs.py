"""One measurement per child process, for benchmarks whose peak memory must be the measurement's own.

A benchmark script runs itself again as ``SCRIPT --child IMPL TOKENS --option value ...``; the child prints its
measurements as a JSON line last. ``run_child`` runs it, optionally under an address-space cap so that an
out-of-memory case is reported instead of taking the machine down, and returns that line parsed or
``{"error": ...}``. ``patch_explicit_attention`` is the "explicit" implementation both attention benchmarks
time against SDPA.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def child_argv(script: str, impl: str, tokens: int, **options: object) -> list[str]:
    """``python SCRIPT --child IMPL TOKENS --some-option value ...`` (option names with "_" as "-")."""
    argv = [sys.executable, script, "--child", impl, str(tokens)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def run_child(argv: list[str], mem_cap_gb: float, capped: bool = True, timeout: float | None = None) -> dict:
    """Run ``argv`` (capped: at most ``mem_cap_gb`` of address space); its last stdout line as JSON, or an error."""

    def cap() -> None:
        if capped:
            limit = int(mem_cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, preexec_fn=cap, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"> {timeout} s (stopped)"}
    if proc.returncode != 0:
        if "memory" in proc.stderr.lower() or proc.returncode < 0:  # MemoryError, or killed
            return {"error": f"OOM (> {mem_cap_gb:g} GB cap)"}
        return {"error": (proc.stderr.strip().splitlines()[-1:] or ["?"])[0][:80]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def patch_explicit_attention() -> None:
    """Swap SDPA for attention that materialises the logits (what the reference implementation does)."""
    from voxelfm.model import attention as attn_mod

    def explicit_sdpa(q, k, v, *args, **kwargs):
        logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        return logits.softmax(dim=-1) @ v

    attn_mod.F = type("F", (), {"scaled_dot_product_attention": staticmethod(explicit_sdpa)})

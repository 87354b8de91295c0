"""Device and precision choice, in one place: cuda > mps > cpu; bf16 only where the hardware runs it fast.

WHY a policy and not a fixed rule: bf16 matmuls are ~6x faster than fp32 on CPUs with native bf16 units (AMX,
AVX512-BF16) and on recent GPUs, but 6-9x *slower* on CPUs that emulate them (AVX2-only, most laptops), where
fp32 is the right choice. ``precision="auto"`` resolves per machine (``resolve_precision``):

- CUDA: bf16 if the GPU supports it (``torch.cuda.is_bf16_supported()``), else fp32;
- CPU: bf16 if the CPU has native bf16 matrix support (``cpu_bf16_support``: torch's and /proc/cpuinfo's CPU
  flags; where they cannot tell, a one-off matmul micro-benchmark cached per CPU model + torch version);
- anything else (MPS, ...): fp32.

``fp32`` and ``bf16`` force the choice; bf16 on a CPU without native support runs, with a warning that it is
slow. The backbone runs bf16 under autocast (matmuls and attention in bf16, LayerNorm / softmax statistics
and the residual stream in fp32): as fast as a bf16 copy of the weights and closer to fp32
(Testing/Benchmarks/results/precision_accuracy.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .errors import InputError
from .features.spec import PRECISIONS
from .files.atomic import atomic_write_text
from .files.locations import cache_root

log = logging.getLogger(__name__)

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 /proc/cpuinfo flags of native bf16 matrix units
MIN_BF16_SPEEDUP = 1.25  # the micro-benchmark's bf16/fp32 throughput ratio that counts as native


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"{device!r} is not a device; use auto, cpu, cuda, cuda:N or mps.") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(
                f"device={str(device)!r} requested but no CUDA GPU is available; use --device cpu or auto."
            )
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            n = torch.cuda.device_count()
            raise InputError(
                f"device={str(device)!r} requested but this machine has {n} CUDA GPU(s) (cuda:0 to cuda:{n - 1}); "
                "use one of those, or --device auto."
            )
        if dev.type == "mps" and not _mps_available():
            raise InputError(
                "device='mps' requested but this PyTorch has no usable Apple MPS GPU (MPS runs on Apple-silicon "
                "Macs only); use --device cpu or auto."
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@dataclass(frozen=True)
class Bf16Support:
    """Whether this CPU runs bf16 matmuls natively, and how that was decided (logged, shown in benchmarks)."""

    native: bool
    reason: str
    speedup: float | None = None  # measured bf16/fp32 matmul throughput ratio, when measured


def _cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (x86 'flags', ARM 'Features'); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() in ("model name", "cpu model", "hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_cpu_flags() -> set[str]:
    """The bf16-relevant CPU features torch itself detects (works on Windows and macOS too)."""
    found = set()
    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    for flag, fn in probes.items():
        check = getattr(torch.cpu, fn, None)
        with contextlib.suppress(Exception):
            if check is not None and check():
                found.add(flag)
    with contextlib.suppress(Exception):
        found.add("capability:" + torch.backends.cpu.get_cpu_capability().lower())
    return found


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _time_linear(x: torch.Tensor, w: torch.Tensor, reps: int, budget_s: float) -> float:
    """Best seconds of one ``linear`` after a warm-up; stops early once over ``budget_s`` (emulated bf16)."""
    torch.nn.functional.linear(x, w)
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best


def matmul_gflops(dtype: torch.dtype, size: int, reps: int = 5, budget_s: float = 20.0) -> float:
    """Achieved GFLOP/s of a [size x size] @ [size x size] linear in ``dtype`` (the machine's matmul ceiling)."""
    x, w = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    with torch.inference_mode():
        return 2 * size**3 / _time_linear(x, w, reps, budget_s) / 1e9


def measure_bf16_speedup(size: int = 512, reps: int = 5) -> float:
    """bf16 / fp32 throughput of a [size x size] @ [size x size] linear (>1: bf16 faster). About 0.1-2 s."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(size, size, generator=g)
    w = torch.randn(size, size, generator=g)
    with torch.inference_mode():
        t32 = _time_linear(x, w, reps, 1.0)
        t16 = _time_linear(x.bfloat16(), w.bfloat16(), reps, max(1.0, 10 * t32))
    return t32 / t16


def _benchmark_cache_file() -> Path:
    return cache_root() / "device" / "cpu_bf16.json"


def _machine_key() -> str:
    blob = f"{_cpu_model()}|{platform.machine()}|torch {torch.__version__}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _benchmarked_support() -> Bf16Support:
    """The micro-benchmark's answer, measured once per CPU model + torch version and kept in the cache."""
    path, key = _benchmark_cache_file(), _machine_key()
    cached: dict = {}
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(path.read_text())
    entry = cached.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("native"), bool):
        return Bf16Support(entry["native"], str(entry.get("reason", "")), entry.get("speedup"))
    speedup = measure_bf16_speedup()
    native = speedup >= MIN_BF16_SPEEDUP
    support = Bf16Support(native, f"matmul micro-benchmark: bf16 {speedup:.2f}x fp32 throughput", speedup)
    cached[key] = asdict(support) | {"cpu": _cpu_model(), "torch": torch.__version__}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=1, sort_keys=True))
    return support


@functools.lru_cache(maxsize=1)
def cpu_bf16_support() -> Bf16Support:
    """Native bf16 matrix support of this CPU: flags when they decide it, else the cached micro-benchmark.

    Decided by flags: AMX-BF16 / AVX512-BF16 present -> native; an x86 CPU without AVX-512 -> emulated.
    Measured: ARM (BF16 / SME), x86 AVX-512 without the bf16 flags, or a platform without flag information.
    """
    flags = _cpu_flags() | _torch_cpu_flags()
    hits = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if hits:
        return Bf16Support(True, f"CPU flag {hits[0]}")
    avx512 = any(f.startswith("avx512") or f == "capability:avx512" for f in flags)
    if _is_x86() and not avx512:
        return Bf16Support(False, "x86 CPU without AVX-512/AMX: bf16 matmuls are emulated")
    return _benchmarked_support()


@functools.lru_cache(maxsize=8)
def _warn_slow_bf16(reason: str) -> None:
    log.warning(
        "precision bf16 on a CPU without native bf16 support (%s): expect it to run several times slower "
        "than fp32; use --precision auto or fp32.",
        reason,
    )


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """'fp32' or 'bf16': what ``precision`` (auto | fp32 | bf16) means on ``device`` (see the module doc)."""
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    dev = pick_device(device) if str(device) == "auto" else torch.device(device)
    if precision == "fp32":
        return "fp32"
    if dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return "bf16" if ok or precision == "bf16" else "fp32"
    if dev.type == "cpu":
        support = cpu_bf16_support()
        if precision == "bf16" and not support.native:
            _warn_slow_bf16(support.reason)
        return "bf16" if support.native or precision == "bf16" else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def autocast_for(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The backbone's arithmetic context: bf16 autocast when ``precision`` resolves to bf16, else none."""
    if resolve_precision(precision, device) != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)

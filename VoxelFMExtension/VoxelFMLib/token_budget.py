"""Estimated time and memory of one feature extraction for a volume and a token budget (Qt-free, torch-free).

The model panel shows it next to the token budget, so a user sees what a budget costs before pressing Run.
Tokens: the volume is resampled like ``imaging.preprocess.prepare`` does (isotropic at max(min spacing,
the model's min_spacing) unless already isotropic), cropped to whole 14-voxel patches, and tiled with
``features.tiling.plan_tiles`` when the patch grid exceeds the budget. A budget of 0 (``AUTO``) means the
machine's budget, ``features.tiling.default_max_tokens()``, the same default the core and the CLI use.

Where the constants come from (all fp32, SDPA attention, batch 1, 2 torch threads, this project's 2-core AVX2
CPU, ViT-B/14 = dim 864, depth 12, random weights, the POPI chest CT; Testing/Benchmarks/results/):
- forward time: ``speed_table.md``, the quieter run (2026-12-01 22:21-22:26 UTC, load average ~3.5):
  3971 tokens in 23.0 s and 8064 tokens in 87.2 s (66 and 51 GFLOP/s). The estimate divides a forward's
  FLOPs (``Architecture.forward_flops``, the count ``bench_speed_table.forward_flops`` reports TFLOP/s with)
  by that rate, interpolated log-linearly in the tokens per tile and held at the nearest measured rate
  outside 3971-8064 tokens. The 16k and 25.9k rows of that table ran under a load average of 11-13 (13 and
  34 GFLOP/s) and are not used; the table's own reading of 25.9k "at the forward rates measured at quieter
  moments" (5-11 minutes) is what the 51 GFLOP/s rate gives (11 min). Another architecture uses the same
  rate at the same token count (its FLOPs differ, the machine does not);
- time outside the forward that a Slicer process still pays per extraction: ``features_overhead.md``, the
  "after" column: checkpoint load, preprocess, normalise, content hash, tiling/blending, writing the cache
  and the rest (10.17 s of its 49.03 s; interpreter start-up, imports and reading the file are not paid in
  Slicer), measured under a load that made its 8064-token forward 447.71 s, so scaled by 87.2 / 447.71 to
  the quieter run above: ~2 s;
- peak memory: ``speed_table.md``, the whole command's peak RSS of every SDPA fp32 row (both runs; memory
  does not depend on the load), fitted linearly in the token count: ~1101 MB + ~0.054 MB per token. The
  slope is charged per token of a tile and per embedding channel (``ACTIVATION_MB``: 6.3e-5 MB per token and
  channel), the intercept is split into RUNTIME_MB (torch + Python: ``token_costs.md``, ViT-B RSS with the
  model loaded, 676 MB, less its 420 MB of weights), 4 bytes per parameter, and the copies of the CT the
  command holds (read, float, isotropic resample: the rest of the intercept over the POPI CT's
  512x512x141 voxels, ~12 bytes per input voxel, ``CT_BYTES_PER_VOXEL``).
Nothing was measured on GPUs, so other devices get no time estimate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxelfm.features.tiling import default_max_tokens, plan_tiles

PATCH = 14
DEFAULT_MIN_SPACING = 0.75  # PreprocessConfig.min_spacing (the official model)
AUTO = 0  # a token budget of 0: the machine's budget (features.tiling.default_max_tokens)
MIN_TOKENS = 64  # smallest explicit budget the panel accepts (WithinRange of ModelParameters.maxTokens)
MAX_TOKENS = 65536
EXTRA_TOKENS = 5  # the class token and 4 registers go through every block with the patch tokens

# speed_table.md, quieter run: (patch tokens, forward seconds) of ViT-B/14 fp32
MEASURED_FORWARD_SECONDS = ((3971, 23.0), (8064, 87.2))
# features_overhead.md "after" column: stages a Slicer process pays per extraction, and the loaded forward
SLICER_STAGES_SECONDS = 0.68 + 5.54 + 0.65 + 1.71 + 0.07 + 0.54 + 0.98
OVERHEAD_RUN_FORWARD_SECONDS = (8064, 447.71)
# speed_table.md: (patch tokens, whole-command peak RSS in MB) of every SDPA fp32 row, both runs
MEASURED_PEAK_MB = ((3971, 1304), (8064, 1696), (16337, 1970), (25920, 2488), (3971, 1234), (8064, 1500))
MEASURED_CT_VOXELS = 512 * 512 * 141  # the POPI chest CT of those rows
RUNTIME_MB = 250.0  # token_costs.md: ViT-B with the model loaded 676 MB - 4 bytes x 110.0 M parameters
MEASURED_DEVICES = ("cpu",)


@dataclass(frozen=True)
class Architecture:
    embed_dim: int = 864
    depth: int = 12
    parameters: int = 110_029_536
    min_spacing: float = DEFAULT_MIN_SPACING
    mlp_ratio: float = 4.0

    def forward_flops(self, tokens: int) -> float:
        """Multiply-adds x 2 of one forward over ``tokens`` patch tokens: qkv + projection + MLP
        (2 n C^2 (4 + 2 r)) and attention (4 n^2 C) in every block, n = tokens + 5, plus the patch embedding."""
        n = tokens + EXTRA_TOKENS
        c = self.embed_dim
        block = 2.0 * n * c**2 * (4 + 2 * self.mlp_ratio) + 4.0 * n * n * c
        return self.depth * block + 2.0 * tokens * PATCH**3 * c


VIT_B = Architecture()


def _peak_fit() -> tuple[float, float]:
    tokens, mb = np.array(MEASURED_PEAK_MB, dtype=np.float64).T
    slope, intercept = np.polyfit(tokens, mb, 1)
    return float(slope), float(intercept)


_PEAK_SLOPE_MB, _PEAK_INTERCEPT_MB = _peak_fit()
ACTIVATION_MB = _PEAK_SLOPE_MB / VIT_B.embed_dim  # per token of a tile and embedding channel
CT_BYTES_PER_VOXEL = (
    (_PEAK_INTERCEPT_MB - RUNTIME_MB - 4.0 * VIT_B.parameters / 2**20) * 2**20 / MEASURED_CT_VOXELS
)
OVERHEAD_SECONDS = (
    SLICER_STAGES_SECONDS * dict(MEASURED_FORWARD_SECONDS)[OVERHEAD_RUN_FORWARD_SECONDS[0]]
) / OVERHEAD_RUN_FORWARD_SECONDS[1]


@dataclass(frozen=True)
class BudgetEstimate:
    grid: tuple[int, int, int]  # patch cells (d, h, w) of the whole prepared volume
    tiles: int
    tokens_per_tile: int
    seconds: float | None  # None: no measured costs for this device
    peak_mb: float
    device: str
    max_tokens: int = 0  # the budget the estimate is for (the machine's when the panel says "auto")
    auto: bool = False  # the budget is the machine's (panel value 0)

    @property
    def tokens(self) -> int:
        return int(np.prod(self.grid))

    def summary(self) -> str:
        grid = "x".join(str(n) for n in self.grid)
        tiling = f"{self.tiles} tiles of {self.tokens_per_tile}" if self.tiles > 1 else "one pass"
        when = (
            f"about {_duration(self.seconds)} on a 2-core CPU (faster with more cores)"
            if self.seconds is not None
            else f"time not measured for {self.device}"
        )
        budget = f"auto budget {self.max_tokens} tokens (this machine's); " if self.auto else ""
        return (
            f"{budget}{self.tokens} tokens ({grid}, {tiling}): {when}, "
            f"peak memory about {self.peak_mb / 1024:.1f} GB"
        )


def resolve_max_tokens(value: int, memory_bytes: int | None = None) -> int:
    """The token budget a panel value means: ``AUTO`` (0) -> the machine's budget, else the value (at least
    MIN_TOKENS, at most MAX_TOKENS). ``memory_bytes``: the machine's memory (tests); None: this machine's."""
    value = int(value)
    if value <= AUTO:
        return default_max_tokens(memory_bytes)
    return max(MIN_TOKENS, min(MAX_TOKENS, value))


def budget_text(value: int, memory_bytes: int | None = None) -> str:
    """How the panel names a budget value: "auto (N tokens: this machine's budget)" or "N tokens"."""
    tokens = resolve_max_tokens(value, memory_bytes)
    return f"auto ({tokens} tokens: this machine's budget)" if int(value) <= AUTO else f"{tokens} tokens"


def prepared_grid(shape_kji, spacing_kji, min_spacing: float = DEFAULT_MIN_SPACING) -> tuple[int, int, int]:
    """Patch grid of the prepared volume (the rule of ``imaging.preprocess.isotropic_shape``, without torch)."""
    spacing = [float(s) for s in spacing_kji]
    shape = [int(n) for n in shape_kji]
    if not all(math.isclose(s, spacing[0], rel_tol=1e-6, abs_tol=0.0) for s in spacing):
        target = max(min(spacing), float(min_spacing))
        shape = [max(1, round(n * s / target)) for n, s in zip(shape, spacing, strict=True)]
    return tuple(n // PATCH for n in shape)  # type: ignore[return-value]


def forward_rate(tokens: int) -> float:
    """Measured forward FLOP/s at ``tokens`` per pass: MEASURED_FORWARD_SECONDS as rates, interpolated
    log-linearly in the token count, the nearest measured rate outside the measured range."""
    points = np.array(MEASURED_FORWARD_SECONDS, dtype=np.float64)
    rates = np.array([VIT_B.forward_flops(int(n)) / s for n, s in points])
    return float(np.interp(math.log(max(int(tokens), 1)), np.log(points[:, 0]), rates))


def forward_seconds(tokens: int, architecture: Architecture = VIT_B) -> float:
    """Seconds of one forward over ``tokens`` patch tokens (at a measured point of ViT-B: the measurement)."""
    return architecture.forward_flops(int(tokens)) / forward_rate(tokens)


def estimate(
    shape_kji,
    spacing_kji,
    max_tokens: int,
    architecture: Architecture = VIT_B,
    device: str = "cpu",
    overlap: int = 2,
    memory_bytes: int | None = None,
) -> BudgetEstimate:
    """Tiles, time and peak memory of extracting features of a volume of this shape and spacing.

    ``max_tokens``: the panel's value (``AUTO`` = the machine's budget; ``memory_bytes`` overrides the
    machine's memory for that, in tests)."""
    auto = int(max_tokens) <= AUTO
    budget = resolve_max_tokens(max_tokens, memory_bytes)
    grid = prepared_grid(shape_kji, spacing_kji, architecture.min_spacing)
    ct_mb = CT_BYTES_PER_VOXEL * float(np.prod([int(n) for n in shape_kji])) / 2**20
    weights_mb = 4.0 * architecture.parameters / 2**20
    if min(grid) < 1:
        return BudgetEstimate(grid, 0, 0, 0.0, RUNTIME_MB + weights_mb + ct_mb, device, budget, auto)
    tiles = plan_tiles(grid, budget, overlap)
    per_tile = int(np.prod(tiles[0].size))
    seconds = None
    if device.split(":")[0] in MEASURED_DEVICES:
        seconds = OVERHEAD_SECONDS + len(tiles) * forward_seconds(per_tile, architecture)
    peak = RUNTIME_MB + weights_mb + ct_mb + ACTIVATION_MB * architecture.embed_dim * per_tile
    return BudgetEstimate(grid, len(tiles), per_tile, seconds, peak, device, budget, auto)


def architecture_from_config(config_json: str | Path) -> Architecture:
    """The architecture and min_spacing of a model folder's config.json (our safetensors format)."""
    data = json.loads(Path(config_json).read_text(encoding="utf-8"))
    arch = data.get("architecture", {})
    return _architecture(arch, data.get("preprocess", {}).get("min_spacing", DEFAULT_MIN_SPACING))


def _architecture(arch: dict, min_spacing: float) -> Architecture:
    dim, depth = int(arch.get("embed_dim", VIT_B.embed_dim)), int(arch.get("depth", VIT_B.depth))
    mlp = float(arch.get("mlp_ratio", 4.0))
    params = int(arch.get("backbone_parameters") or depth * (4 + 2 * mlp) * dim * dim)
    return Architecture(dim, depth, params, float(min_spacing), mlp)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"

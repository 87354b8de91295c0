"""Estimated time and memory of one feature extraction for a volume and a token budget (Qt-free, torch-free).

The model panel shows it next to the token budget, so a user sees what a budget costs before pressing Run.
Tokens: the volume is resampled like ``imaging.preprocess.prepare`` does (isotropic at max(min spacing,
the model's min_spacing) unless already isotropic), cropped to whole 14-voxel patches, and tiled with
``features.tiling.plan_tiles`` when the patch grid exceeds the budget.

Per-token costs (fp32, batch 1, 2 CPU threads, this project's 2-core CPU machine; measured with
``Testing/Benchmarks/bench_attention_memory.py --impl sdpa``, see Testing/Benchmarks/results/token_costs.md):
- time: ViT-B/14 (dim 864, depth 12) forward, REFERENCE_SECONDS below (2026-11-28, results/attention_memory.md),
  interpolated log-log in the token count; another architecture takes the ViT-B time at the same token count
  times its FLOP ratio (linear layers 24·depth·dim² per token, attention 4·depth·dim·tokens per token);
- peak memory: RUNTIME_MB (torch + Python) + 4 bytes per parameter + ACTIVATION_MB per token and channel,
  fitted to peak RSS of ViT-B (512-16384 tokens) and of voxelfm-tiny (dim 216, depth 6).
No costs were measured on GPUs (none was available), so other devices get no time estimate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxelfm.features.tiling import plan_tiles

PATCH = 14
DEFAULT_MIN_SPACING = 0.75  # PreprocessConfig.min_spacing (the official model)
REFERENCE_SECONDS = ((4096, 15.6), (8192, 42.8), (16384, 193.8))  # ViT-B/14 forward on the 2-core CPU
RUNTIME_MB = 250.0
ACTIVATION_MB = 8e-5  # per token and embedding channel (ViT-B: 0.069 MB per token)
MEASURED_DEVICES = ("cpu",)


@dataclass(frozen=True)
class Architecture:
    embed_dim: int = 864
    depth: int = 12
    parameters: int = 110_029_536
    min_spacing: float = DEFAULT_MIN_SPACING

    def flops_per_token(self, tokens: int) -> float:
        return 24.0 * self.depth * self.embed_dim**2 + 4.0 * self.depth * self.embed_dim * tokens


VIT_B = Architecture()


@dataclass(frozen=True)
class BudgetEstimate:
    grid: tuple[int, int, int]  # patch cells (d, h, w) of the whole prepared volume
    tiles: int
    tokens_per_tile: int
    seconds: float | None  # None: no measured costs for this device
    peak_mb: float
    device: str

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
        return (
            f"{self.tokens} tokens ({grid}, {tiling}): {when}, peak memory about {self.peak_mb / 1024:.1f} GB"
        )


def prepared_grid(shape_kji, spacing_kji, min_spacing: float = DEFAULT_MIN_SPACING) -> tuple[int, int, int]:
    """Patch grid of the prepared volume (the rule of ``imaging.preprocess.isotropic_shape``, without torch)."""
    spacing = [float(s) for s in spacing_kji]
    shape = [int(n) for n in shape_kji]
    if not all(math.isclose(s, spacing[0], rel_tol=1e-6, abs_tol=0.0) for s in spacing):
        target = max(min(spacing), float(min_spacing))
        shape = [max(1, round(n * s / target)) for n, s in zip(shape, spacing, strict=True)]
    return tuple(n // PATCH for n in shape)  # type: ignore[return-value]


def reference_seconds(tokens: int) -> float:
    """ViT-B forward time for ``tokens``: log-log interpolation of REFERENCE_SECONDS (end slopes outside)."""
    pts = np.log(np.array(REFERENCE_SECONDS, dtype=np.float64))
    x = math.log(max(tokens, 1))
    i = int(np.clip(np.searchsorted(pts[:, 0], x) - 1, 0, len(pts) - 2))
    slope = (pts[i + 1, 1] - pts[i, 1]) / (pts[i + 1, 0] - pts[i, 0])
    return float(math.exp(pts[i, 1] + slope * (x - pts[i, 0])))


def estimate(
    shape_kji,
    spacing_kji,
    max_tokens: int,
    architecture: Architecture = VIT_B,
    device: str = "cpu",
    overlap: int = 2,
) -> BudgetEstimate:
    """Tiles, time and peak memory of extracting features of a volume of this shape and spacing."""
    grid = prepared_grid(shape_kji, spacing_kji, architecture.min_spacing)
    if min(grid) < 1:
        return BudgetEstimate(grid, 0, 0, 0.0, RUNTIME_MB, device)
    tiles = plan_tiles(grid, int(max_tokens), overlap)
    per_tile = int(np.prod(tiles[0].size))
    seconds = None
    if device.split(":")[0] in MEASURED_DEVICES:
        ratio = architecture.flops_per_token(per_tile) / VIT_B.flops_per_token(per_tile)
        seconds = len(tiles) * reference_seconds(per_tile) * ratio
    weights_mb = 4.0 * architecture.parameters / 2**20
    peak = RUNTIME_MB + weights_mb + ACTIVATION_MB * architecture.embed_dim * per_tile
    return BudgetEstimate(grid, len(tiles), per_tile, seconds, peak, device)


def architecture_from_config(config_json: str | Path) -> Architecture:
    """The architecture and min_spacing of a model folder's config.json (our safetensors format)."""
    data = json.loads(Path(config_json).read_text(encoding="utf-8"))
    arch = data.get("architecture", {})
    return _architecture(arch, data.get("preprocess", {}).get("min_spacing", DEFAULT_MIN_SPACING))


def _architecture(arch: dict, min_spacing: float) -> Architecture:
    dim, depth = int(arch.get("embed_dim", VIT_B.embed_dim)), int(arch.get("depth", VIT_B.depth))
    mlp = float(arch.get("mlp_ratio", 4.0))
    params = int(arch.get("backbone_parameters") or depth * (4 + 2 * mlp) * dim * dim)
    return Architecture(dim, depth, params, float(min_spacing))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"

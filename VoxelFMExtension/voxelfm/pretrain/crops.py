"""3D multi-crop: 2 global + N local random-resized crops with flips, axis permutation and HU windowing.

The 3D analogue of DINO's RandomResizedCrop: a box covering a random fraction (``scale``) of the volume,
with jittered aspect ratios, resampled to the crop size. CT has no canonical "up" for a model trained
on mixed orientations, so axis permutations and flips are cheap invariances; a random HU window stands
in for colour jitter. Normalisation (z-score) matches inference so features stay comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import PretrainConfig


@dataclass
class CropSpec:
    size: tuple[int, int, int]
    scale: tuple[float, float]
    zoom: tuple[float, float] | None = None  # set: side = size x zoom (crop_mode "zoom"), scale unused

    def side_factor(self, shape: tuple[int, ...], rng: np.random.Generator) -> float:
        """How many times ``size`` a crop's sides are: ~U(zoom) on a log scale ("zoom"), else the factor that
        makes the box hold ~U(scale) of the volume's voxels (the reference's volume fraction)."""
        if self.zoom is not None:
            return math.exp(rng.uniform(math.log(self.zoom[0]), math.log(self.zoom[1])))
        target = float(np.prod(shape)) * rng.uniform(*self.scale)
        return (target / float(np.prod(self.size))) ** (1 / 3)


def _jittered_box(
    shape: tuple[int, ...],
    out_size: tuple[int, int, int],
    factor: float,
    aspect_range: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(offset, extent): sides out_size x factor with volume-preserving aspect jitter, clipped to the volume."""
    log_ar = rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1]), size=3)
    log_ar -= log_ar.mean()  # keep the volume, only change the proportions
    extent = tuple(
        int(min(max(1, round(o * factor * math.exp(a))), n))
        for o, a, n in zip(out_size, log_ar, shape, strict=True)
    )
    offset = tuple(int(rng.integers(0, n - e + 1)) for n, e in zip(shape, extent, strict=True))
    return offset, extent  # type: ignore[return-value]


def sample_box(
    shape: tuple[int, ...], spec: CropSpec, aspect_range: tuple[float, float], rng: np.random.Generator
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(offset, extent) of a random crop box of ``spec`` inside a volume of ``shape`` (aspect jittered)."""
    return _jittered_box(shape, spec.size, spec.side_factor(shape, rng), aspect_range, rng)


def resize(block: torch.Tensor, out_size: tuple[int, int, int]) -> torch.Tensor:
    """[D,H,W] -> out_size: integer average pooling first (anti-aliasing), then trilinear."""
    x = block[None, None]
    k = tuple(max(1, s // o) for s, o in zip(x.shape[2:], out_size, strict=True))
    if any(f > 1 for f in k):
        x = F.avg_pool3d(x, kernel_size=k, stride=k)
    if tuple(x.shape[2:]) != tuple(out_size):
        x = F.interpolate(x, size=out_size, mode="trilinear", align_corners=False)
    return x[0]


class MultiCrop:
    """Callable: (volume HU [D,H,W], rng) -> {"global_crops": [Tensor[1,*G]] * 2, "local_crops": [...] * N}."""

    def __init__(self, cfg: PretrainConfig) -> None:
        c, a, ds = cfg.crops, cfg.augment, cfg.datasets[0]
        zoom = a.crop_mode == "zoom"
        self.global_spec = CropSpec(
            tuple(c.global_crops_size),  # type: ignore[arg-type]
            tuple(c.global_crops_scale),  # type: ignore[arg-type]
            tuple(a.global_zoom_range) if zoom else None,  # type: ignore[arg-type]
        )
        self.local_spec = CropSpec(
            tuple(c.local_crops_size),  # type: ignore[arg-type]
            tuple(c.local_crops_scale),  # type: ignore[arg-type]
            tuple(a.local_zoom_range) if zoom else None,  # type: ignore[arg-type]
        )
        self.n_local = c.local_crops_number
        self.aug = a
        self.clip = (ds.pixel_range.lower, ds.pixel_range.upper)
        self.mean, self.std = ds.norm.mean, ds.norm.std

    def crop(self, vol: np.ndarray, spec: CropSpec, rng: np.random.Generator) -> torch.Tensor:
        a = self.aug
        aspect = tuple(a.aspect_ratio_range)
        offset, extent = sample_box(vol.shape, spec, aspect, rng)  # type: ignore[arg-type]
        sl = tuple(slice(o, o + e) for o, e in zip(offset, extent, strict=True))
        block = torch.from_numpy(np.array(vol[sl], dtype=np.float32))  # copy: the cache is a read-only memmap
        perm = [int(i) for i in rng.permutation(3)] if a.permute_axes else [0, 1, 2]
        # Resize first, then permute the small result: transposing the large block costs more than the rest.
        size = [0, 0, 0]
        for out_axis, in_axis in enumerate(perm):
            size[in_axis] = spec.size[out_axis]
        block = resize(block, tuple(size)).permute(0, *[p + 1 for p in perm]).contiguous()
        flips = [d + 1 for d in range(3) if rng.random() < a.flip_prob]
        if flips:
            block = torch.flip(block, dims=flips)
        lo, hi = self.clip
        if rng.random() < a.window_prob:
            lo = max(lo, rng.uniform(*a.window_lower_range))
            hi = min(hi, rng.uniform(*a.window_upper_range))
        block = block.clamp(lo, hi)
        return ((block - self.mean) / self.std).contiguous()

    def __call__(self, vol: np.ndarray, rng: np.random.Generator) -> dict[str, list[torch.Tensor]]:
        return {
            "global_crops": [self.crop(vol, self.global_spec, rng) for _ in range(2)],
            "local_crops": [self.crop(vol, self.local_spec, rng) for _ in range(self.n_local)],
        }

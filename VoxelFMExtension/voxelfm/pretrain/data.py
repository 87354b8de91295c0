"""Pretraining data: CT files (folder or CSV/JSONL manifest) -> a cache of isotropic float32 HU volumes.

Decoding and resampling full CTs costs far more than cropping, so each file is prepared once and stored
as ``.npy`` (memory-mapped by the workers). The cache key covers the file identity (path, size, mtime)
and the preparation settings, so edited inputs or changed settings are re-prepared automatically.

Sampling is a pure function of (seed, draw index): draw ``i`` picks a volume from a per-epoch permutation
and seeds its own crop RNG. The loader position is therefore just the step number, which makes resume
exact and independent of worker count and scheduling.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..errors import InputError
from ..files.atomic import atomic_write
from ..files.locations import cache_root
from ..files.manifest_table import JSONL_SUFFIXES, read_manifest_rows, resolve_path
from ..imaging.canonical import to_canonical
from ..imaging.formats import IMAGE_SUFFIXES, has_suffix, is_dicom_dir, is_image_file, list_images
from ..progress import ProgressFn, no_progress
from .config import PretrainConfig
from .crops import MultiCrop
from .masking import sample_masks

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: volumes in the canonical (LPS) index order, as inference sees them
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")  # not .txt: a stray notes.txt is no manifest
LABEL_WORDS = ("label", "mask", "seg")


def _looks_like_label(name: str) -> bool:
    """Folder mode skips masks/label maps that commonly sit beside the CTs (use a manifest to be explicit)."""
    n = name.lower()
    return any(w in n for w in LABEL_WORDS)


def discover_sources(data: str | Path) -> list[Path]:
    """CT sources from a folder (image files + DICOM series folders, recursive) or a CSV/JSONL manifest."""
    src = Path(data)
    if not src.exists():
        raise InputError(
            f"Training data not found: {src}. Pass a folder of CT files or a CSV/JSONL manifest."
        )
    if src.is_file():
        if not has_suffix(src, MANIFEST_SUFFIXES):
            if is_image_file(src):
                return [src]
            raise InputError(
                f"{src} is neither a CT image nor a manifest (.csv with a 'path' column, or .jsonl)."
            )
        paths = _read_manifest(src)
        missing = [str(p) for p in paths if not (is_image_file(p) or is_dicom_dir(p))]
        if missing:
            raise InputError(
                f"Manifest {src} lists {len(missing)} missing or unreadable file(s), e.g. {missing[:3]}. "
                "Fix the paths (relative paths are relative to the manifest) or remove those rows."
            )
    else:
        found = list_images(src)
        skipped = [p.name for p in found if not p.is_dir() and _looks_like_label(p.name)]
        paths = [p for p in found if p.is_dir() or not _looks_like_label(p.name)]
        if skipped:
            log.info("Skipped %d label/mask file(s) in %s, e.g. %s", len(skipped), src, skipped[:3])
    if not paths:
        raise InputError(
            f"No CT files found in {src}. Supported: {', '.join(IMAGE_SUFFIXES)}, DICOM folders (*.dcm), "
            "or a manifest listing them."
        )
    return paths


def _read_manifest(path: Path) -> list[Path]:
    """The CT paths of a manifest: a 'path' (or 'image') column, or JSON lines holding one or a bare string."""
    table = read_manifest_rows(path)
    if table.columns is None and not table.rows and not has_suffix(path, JSONL_SUFFIXES):
        raise InputError(f"Manifest {path} is empty; add a 'path' column with one CT per row.")
    if table.columns is None:
        rows = [_json_line_path(path, n, obj) for n, obj in table.rows]
    else:
        col = _path_column(table.columns)
        if col is None:
            raise InputError(f"Manifest {path} has no 'path' column (header: {table.columns}).")
        rows = [v.strip() for _, r in table.rows if isinstance(v := r.get(col), str) and v.strip()]
    if not rows:
        raise InputError(f"Manifest {path} lists no files; add one CT path per row.")
    return [resolve_path(path, p) for p in rows]


def _path_column(columns: list[str]) -> str | None:
    names = {c.lower(): c for c in reversed(columns)}  # the first of equal names (case-insensitive) wins
    return names.get("path") or names.get("image")


def _json_line_path(path: Path, n: int, obj: Any) -> str:
    value = obj.get("path") or obj.get("image") if isinstance(obj, dict) else obj
    if not isinstance(value, str):
        raise InputError(f"{path}:{n} needs a 'path' (or 'image') string.")
    return value


def read_ct(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """HU array (z, y, x) float32 and spacing (z, y, x) mm, via the shared reader (InputError if unusable), in
    the canonical index order inference uses (``imaging.canonical``), so the model trains on what it will see."""
    from ..imaging.io import read_volume  # SimpleITK off the GPU training path (files only here)

    # check_hu=False: looks_like_ct() decides, with a clearer message
    vol, _ = to_canonical(read_volume(path, check_hu=False))
    sx, sy, sz = (float(s) for s in vol.spacing)
    return np.asarray(vol.array, dtype=np.float32), (sz, sy, sx)


def resample_isotropic(
    arr: np.ndarray, spacing: tuple[float, float, float], target: float | None
) -> np.ndarray:
    """Trilinear (align_corners=False) to ``target`` mm; None = the inference rule (voxelfm.imaging.preprocess)."""
    if target is None:
        from ..imaging.preprocess import PreprocessConfig, isotropic_shape  # scipy (body crop) off training

        iso = isotropic_shape(arr.shape, spacing, PreprocessConfig().min_spacing)
        if iso is None:
            return arr
        size = iso[0]
    else:
        size = tuple(max(1, round(n * s / float(target))) for n, s in zip(arr.shape, spacing, strict=True))
    if tuple(size) == arr.shape:
        return arr
    x = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    with torch.inference_mode():
        return F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)[0, 0].numpy()


def default_cache_root() -> Path:
    return cache_root() / "pretrain"


@dataclass
class CachedVolume:
    source: str
    path: str  # .npy, float32 HU (z, y, x), clipped to the pixel range
    shape: tuple[int, int, int]


def _cache_key(src: Path, cfg: PretrainConfig) -> str:
    st = src.stat() if src.is_file() else max((f.stat() for f in src.iterdir()), key=lambda s: s.st_mtime_ns)
    pr = cfg.datasets[0].pixel_range
    ident = [
        CACHE_VERSION,
        str(src.resolve()),
        st.st_size,
        st.st_mtime_ns,
        cfg.data.spacing_mm,
        pr.lower,
        pr.upper,
    ]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def looks_like_ct(arr: np.ndarray) -> bool:
    """CT contains air (about -1000 HU); label maps and masks (values >= 0) do not."""
    return float(arr.min()) < -500.0


def build_cache(
    sources: list[Path], cfg: PretrainConfig, progress: ProgressFn = no_progress, strict: bool = False
) -> list[CachedVolume]:
    """Prepare every source once (skips up-to-date entries); writes are atomic.

    Images without air (label maps, masks) are skipped with a warning, or rejected when ``strict`` (a
    manifest names its files explicitly).
    """
    root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    pr = cfg.datasets[0].pixel_range
    out: list[CachedVolume] = []
    for n, src in enumerate(sources):
        progress(n / len(sources), f"preparing {src.name}")
        key = _cache_key(src, cfg)
        target, skip = root / f"{key}.npy", root / f"{key}.not_ct"
        if skip.is_file() and not strict:
            continue
        if not target.is_file():
            arr, spacing = read_ct(src)
            if not looks_like_ct(arr):
                msg = f"{src} does not look like a CT (minimum {arr.min():.0f}, no air below -500 HU)"
                if strict:
                    raise InputError(msg + "; remove it from the manifest.")
                log.warning("%s; skipped.", msg)
                skip.touch()
                continue
            arr = resample_isotropic(arr, spacing, cfg.data.spacing_mm)
            arr = np.clip(arr, pr.lower, pr.upper).astype(np.float32)
            atomic_write(target, lambda tmp, arr=arr: np.save(tmp, arr), suffix=".npy")
        shape = np.load(target, mmap_mode="r").shape
        out.append(CachedVolume(str(src), str(target), tuple(int(s) for s in shape)))  # type: ignore[arg-type]
    if not out:
        raise InputError(f"None of the {len(sources)} input file(s) looks like a CT volume; check --data.")
    progress(1.0, f"{len(out)} volumes prepared")
    return out


class CropDataset(Dataset):
    """Map-style dataset over *draw indices* (unbounded): item i = multi-crops of volume perm_epoch[i % n]."""

    def __init__(self, volumes: list[CachedVolume], cfg: PretrainConfig) -> None:
        if not volumes:
            raise InputError("No training volumes.")
        self.volumes = volumes
        self.seed = cfg.train.seed
        self.multicrop = MultiCrop(cfg)
        self._arrays: dict[int, np.ndarray] = {}

    def volume_index(self, draw: int) -> int:
        n = len(self.volumes)
        perm = np.random.default_rng([self.seed, 1, draw // n]).permutation(n)
        return int(perm[draw % n])

    def __len__(self) -> int:  # nominal; the sampler is unbounded
        return len(self.volumes)

    def __getitem__(self, draw: int) -> dict[str, Any]:
        vi = self.volume_index(draw)
        if vi not in self._arrays:
            self._arrays[vi] = np.load(self.volumes[vi].path, mmap_mode="r")
        rng = np.random.default_rng([self.seed, 2, draw])
        sample = self.multicrop(self._arrays[vi], rng)
        sample["draw"] = draw
        return sample


class StepBatchSampler(Sampler[list[int]]):
    """Yields the draw indices of steps start, start+1, ... for this rank (disjoint across ranks)."""

    def __init__(
        self, batch_size: int, start_step: int, rank: int = 0, world_size: int = 1, micro_steps: int = 1
    ):
        self.b, self.start, self.rank, self.world, self.micro = (
            batch_size,
            start_step,
            rank,
            world_size,
            micro_steps,
        )

    def __iter__(self):
        step = self.start * self.micro
        while True:
            base = (step * self.world + self.rank) * self.b
            yield list(range(base, base + self.b))
            step += 1

    def __len__(self) -> int:  # pragma: no cover - unbounded
        return 2**62


class Collate:
    """Stack crops crop-major (all samples' crop 0, then crop 1, ...) and draw iBOT masks for global crops."""

    def __init__(self, cfg: PretrainConfig) -> None:
        p = cfg.student.patch_size
        self.grid = tuple(s // p for s in cfg.crops.global_crops_size)
        self.ratio = tuple(cfg.ibot.mask_ratio_min_max)
        self.prob = cfg.ibot.mask_sample_probability
        self.seed = cfg.train.seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n_g, n_l = len(samples[0]["global_crops"]), len(samples[0]["local_crops"])
        glob = torch.stack([s["global_crops"][i] for i in range(n_g) for s in samples])
        out = {"global_crops": glob, "draws": torch.tensor([s["draw"] for s in samples])}
        if n_l:
            out["local_crops"] = torch.stack([s["local_crops"][i] for i in range(n_l) for s in samples])
        rng = np.random.default_rng([self.seed, 3, int(samples[0]["draw"])])
        out["masks"] = sample_masks(len(glob), self.grid, self.ratio, self.prob, rng)  # type: ignore[arg-type]
        return out

"""Pretraining config: dataclasses mirroring the reference training YAML schema and its defaults.

Sections ``student dino ibot crops train optim schedules checkpointing datasets compute_precision`` follow
the reference ``config.yaml`` (an official config file loads as-is). Two sections are ours: ``data``
(isotropic spacing and cache of the preprocessed volumes) and ``augment`` (flips, axis permutation,
intensity windowing), because the reference keeps those outside its YAML.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.documents import read_mapping
from ..model.config import BackboneConfig

_ARCH = BackboneConfig()  # the released architecture: the student's defaults, kept in one place


@dataclass
class StudentConfig:
    embed_dim: int = _ARCH.embed_dim
    depth: int = _ARCH.depth
    num_heads: int = _ARCH.num_heads
    patch_size: int = _ARCH.patch_size
    mlp_ratio: float = _ARCH.mlp_ratio
    drop_path_rate: float = 0.1
    layerscale: float | None = _ARCH.layerscale
    rope_base: float = _ARCH.rope_base
    rope_rescale_coords: float | None = None
    drop_path_uniform: bool = True
    pretrained_weights: str = ""
    ffn_layer: str = "mlp"
    qkv_bias: bool = _ARCH.qkv_bias
    proj_bias: bool = _ARCH.proj_bias
    ffn_bias: bool = _ARCH.ffn_bias
    num_register_tokens: int = _ARCH.num_register_tokens


@dataclass
class ProjectionHeadConfig:
    """What the ``dino`` and ``ibot`` sections share: the loss weight and the projection head's shape (one
    builder, ``meta_arch.projection_head``, makes either head from it)."""

    loss_weight: float = 1.0
    head_n_prototypes: int = 65536
    head_bottleneck_dim: int = 256
    head_nlayers: int = 3
    head_hidden_dim: int = 2048


@dataclass
class DinoConfig(ProjectionHeadConfig):
    koleo_loss_weight: float = 0.1
    student_temp: float = 0.1  # ours (reference hard-codes 0.1)
    center_momentum: float = 0.9  # ours (reference hard-codes 0.9)


@dataclass
class IbotConfig(ProjectionHeadConfig):
    mask_sample_probability: float = 0.5
    mask_ratio_min_max: list[float] = field(default_factory=lambda: [0.1, 0.5])
    separate_head: bool = False


@dataclass
class TrainConfig:
    grad_accum_steps: int = 16
    batch_size_per_gpu: int = 16
    total_batch_size: int = 2048
    output_dir: str = "."
    print_freq: int = 100
    seed: int = 0
    num_workers: int = 10
    official_epoch_length: int = 1000
    # ours (DINOv2 key): "centering" = EMA-centred softmax (the reference), "sinkhorn_knopp" = batch
    # equipartition of the teacher targets, which cannot collapse to uniform at small batch sizes.
    centering: str = "centering"
    # ours: "ddp" = full replica per rank; "fsdp2" = torch fully_shard of student, teacher and AdamW state.
    sharding: str = "ddp"


@dataclass
class EvaluationConfig:
    eval_period_iterations: int = 10000


@dataclass
class OptimConfig:
    epochs: int = 100
    clip_grad: float = 3.0
    patch_embed_lr_mult: float = 0.2
    layerwise_decay: float = 0.9
    adamw_beta1: float = 0.9
    adamw_beta2: float = 0.999


@dataclass
class CheckpointingConfig:
    period: int = 100
    max_to_keep: int = 3
    keep_every: int = 5000


@dataclass
class ScheduleConfig:
    """Linear warmup start -> peak over warmup_epochs, then cosine peak -> end."""

    start: float = 0.0
    peak: float = 0.0
    end: float = 0.0
    warmup_epochs: float = 0.0
    freeze_last_layer_epochs: float = 0.0  # only meaningful for lr


@dataclass
class SchedulesConfig:
    lr: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(0.0, 1e-3, 1e-6, warmup_epochs=10, freeze_last_layer_epochs=1)
    )
    weight_decay: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(0.04, 0.04, 0.2))
    momentum: ScheduleConfig = field(default_factory=lambda: ScheduleConfig(0.994, 0.994, 0.994))
    teacher_temp: ScheduleConfig = field(
        default_factory=lambda: ScheduleConfig(0.04, 0.07, 0.07, warmup_epochs=30)
    )


@dataclass
class CropsConfig:
    global_crops_scale: list[float] = field(default_factory=lambda: [0.32, 1.0])
    local_crops_number: int = 8
    local_crops_scale: list[float] = field(default_factory=lambda: [0.05, 0.32])
    global_crops_size: list[int] = field(default_factory=lambda: [112, 112, 112])
    local_crops_size: list[int] = field(default_factory=lambda: [56, 56, 56])
    crop_pairs_ratios: float = 1.0


@dataclass
class PixelRange:
    lower: float = -1000.0
    upper: float = 1900.0


@dataclass
class Norm:
    mean: float = -573.8
    std: float = 461.3


@dataclass
class DatasetConfig:
    name: str = "radiomics_datasets"
    weight: float = 1.0
    index_path: str = "."
    modality: str = "ct"
    storage: str = "torch"
    pixel_range: PixelRange = field(default_factory=PixelRange)
    norm: Norm = field(default_factory=Norm)


@dataclass
class DataConfig:
    """Ours: how raw CT files become the cached training volumes."""

    spacing_mm: float | None = None  # None: the inference rule max(min spacing, 0.75 mm)
    cache_dir: str | None = None  # None: $VOXELFM_CACHE_DIR/pretrain (or ~/.cache/voxelfm/pretrain)


@dataclass
class AugmentConfig:
    """Ours: 3D counterparts of the reference's 2D photometric/geometric augmentations."""

    flip_prob: float = 0.5  # per axis
    permute_axes: bool = True
    window_prob: float = 0.5  # random HU window (clip) before normalisation
    window_lower_range: list[float] = field(default_factory=lambda: [-1000.0, -500.0])
    window_upper_range: list[float] = field(default_factory=lambda: [200.0, 1900.0])
    aspect_ratio_range: list[float] = field(default_factory=lambda: [0.75, 1.3333])
    # "volume_fraction" (the reference): crops.*_crops_scale is the fraction of the whole volume a crop covers,
    # so a large CT is seen at a far coarser voxel size than at inference. "zoom": a crop's side is its size
    # in voxels times a factor from *_zoom_range, so crops keep (about) the cached spacing the model will
    # see at inference; crops.*_crops_scale is then unused.
    crop_mode: str = "volume_fraction"
    global_zoom_range: list[float] = field(default_factory=lambda: [1.0, 1.5])
    local_zoom_range: list[float] = field(default_factory=lambda: [0.8, 1.25])


@dataclass
class PretrainConfig:
    # "auto" (ours, default): bf16 autocast on GPU, fp32 on CPU. "fp32" (the reference file's value) is honoured
    # literally; "bf16" = autocast on GPU (CPU still runs fp32).
    compute_precision: str = "auto"
    dino: DinoConfig = field(default_factory=DinoConfig)
    ibot: IbotConfig = field(default_factory=IbotConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpointing: CheckpointingConfig = field(default_factory=CheckpointingConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    datasets: list[DatasetConfig] = field(default_factory=lambda: [DatasetConfig()])
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @property
    def total_iterations(self) -> int:
        return int(self.optim.epochs * self.train.official_epoch_length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        cfg = _build(cls(), d, "")
        validate(cfg)
        return cfg


def _build(default: Any, d: Any, where: str) -> Any:
    """A copy of the dataclass instance ``default`` with the keys of ``d`` applied (unknown keys rejected)."""
    cls = type(default)
    if not isinstance(d, dict):
        raise InputError(
            f"Config section '{where or 'top level'}' must be a mapping, got {type(d).__name__}."
        )
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise InputError(
            f"Unknown config key(s) {[f'{where}{k}' for k in unknown]}; valid keys in "
            f"'{where.rstrip('.') or 'top level'}': {sorted(known)}. Fix the spelling or remove them."
        )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in d:
            continue
        value = d[name]
        current = getattr(default, name)
        if is_dataclass(current):
            kwargs[name] = _build(current, value or {}, f"{where}{name}.")
        elif name == "datasets":
            if not isinstance(value, list) or not value:
                raise InputError("Config 'datasets' must be a non-empty list of dataset sections.")
            kwargs[name] = [_build(DatasetConfig(), v, f"datasets[{i}].") for i, v in enumerate(value)]
        else:
            kwargs[name] = _coerce(value, current, f"{where}{name}", str(f.type))
    return dataclasses.replace(default, **kwargs)


def _coerce(value: Any, current: Any, key: str, ftype: str) -> Any:
    """Type-check a leaf against its declared type (``ftype``, the annotation string)."""
    if value is None:
        if "None" in ftype:
            return None
        raise InputError(f"Config key '{key}' must not be null; expected something like {current!r}.")
    try:
        if ftype.startswith("list"):
            if not isinstance(value, (list, tuple)) or len(value) != len(current):
                raise TypeError
            conv = float if "float" in ftype else int
            return [conv(v) for v in value]
        if isinstance(value, (list, dict)):
            raise TypeError
        if ftype.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if ftype.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if ftype.startswith("float"):
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise TypeError
            return float(value)
        if ftype.startswith("str"):
            return str(value)
    except (TypeError, ValueError):
        raise InputError(
            f"Config key '{key}' has invalid value {value!r}; expected something like {current!r}."
        ) from None
    return value


# Numbers the trainer needs in range: key -> (rule, test). A negative learning rate would train "uphill" and a
# zero head count divides by zero, so they are refused here (exit 2 naming the key) instead of mid-run.
_POSITIVE = ("> 0", lambda v: v > 0)
_NON_NEGATIVE = (">= 0", lambda v: v >= 0)
_FRACTION = ("in [0, 1]", lambda v: 0 <= v <= 1)
_OPEN_FRACTION = ("in [0, 1)", lambda v: 0 <= v < 1)
_RANGES: dict[str, tuple[str, Any]] = {
    **{f"student.{k}": _POSITIVE for k in ("embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio")},
    "student.rope_base": _POSITIVE,
    "student.drop_path_rate": _OPEN_FRACTION,
    "student.num_register_tokens": _NON_NEGATIVE,
    **{f"{h}.loss_weight": _NON_NEGATIVE for h in ("dino", "ibot")},
    **{
        f"{h}.head_{k}": _POSITIVE
        for h in ("dino", "ibot")
        for k in ("n_prototypes", "bottleneck_dim", "nlayers", "hidden_dim")
    },
    "dino.koleo_loss_weight": _NON_NEGATIVE,
    "dino.student_temp": _POSITIVE,
    "dino.center_momentum": _FRACTION,
    "train.num_workers": _NON_NEGATIVE,
    "train.seed": _NON_NEGATIVE,
    "train.print_freq": _POSITIVE,
    "train.total_batch_size": _POSITIVE,
    "evaluation.eval_period_iterations": _POSITIVE,
    "optim.clip_grad": _NON_NEGATIVE,
    "optim.patch_embed_lr_mult": _NON_NEGATIVE,
    "optim.layerwise_decay": ("in (0, 1]", lambda v: 0 < v <= 1),
    "optim.adamw_beta1": _OPEN_FRACTION,
    "optim.adamw_beta2": _OPEN_FRACTION,
    "checkpointing.keep_every": _NON_NEGATIVE,
    "schedules.lr.start": _NON_NEGATIVE,
    "schedules.lr.peak": _POSITIVE,
    "schedules.lr.end": _NON_NEGATIVE,
    **{f"schedules.weight_decay.{k}": _NON_NEGATIVE for k in ("start", "peak", "end")},
    **{f"schedules.momentum.{k}": _FRACTION for k in ("start", "peak", "end")},
    **{f"schedules.teacher_temp.{k}": _POSITIVE for k in ("start", "peak", "end")},
    **{
        f"schedules.{s}.{k}": _NON_NEGATIVE
        for s in ("lr", "weight_decay", "momentum", "teacher_temp")
        for k in ("warmup_epochs", "freeze_last_layer_epochs")
    },
    "crops.crop_pairs_ratios": _POSITIVE,
    "augment.flip_prob": _FRACTION,
    "augment.window_prob": _FRACTION,
}


def _range_errors(cfg: PretrainConfig) -> list[str]:
    errs = []
    for key, (rule, ok) in _RANGES.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value is not None and not ok(value):
            errs.append(f"{key}={value!r}: must be {rule}")
    for i, ds in enumerate(cfg.datasets):
        if ds.weight <= 0:
            errs.append(f"datasets[{i}].weight={ds.weight!r}: must be > 0")
    for name in ("window_lower_range", "window_upper_range", "aspect_ratio_range"):
        lo, hi = getattr(cfg.augment, name)
        if lo > hi or (name == "aspect_ratio_range" and lo <= 0):
            errs.append(
                f"augment.{name}={[lo, hi]}: need min <= max" + (" and min > 0" if "aspect" in name else "")
            )
    return errs


def validate(cfg: PretrainConfig) -> None:
    """Check values the trainer relies on; messages name the key and say what to change."""
    errs = _range_errors(cfg)
    if errs:  # the checks below divide by these numbers
        raise InputError("Invalid pretraining config: " + "; ".join(errs) + ".")
    st = cfg.student
    p = st.patch_size
    if st.embed_dim % st.num_heads or (st.embed_dim // st.num_heads) % 6:
        errs.append(
            f"student.embed_dim/num_heads = {st.embed_dim}/{st.num_heads}: head_dim must be an integer divisible by 6 (3D RoPE)"
        )
    if st.ffn_layer != "mlp":
        errs.append(f"student.ffn_layer={st.ffn_layer!r}: only 'mlp' is supported")
    for name in ("global_crops_size", "local_crops_size"):
        size = getattr(cfg.crops, name)
        if any(s <= 0 or s % p for s in size):
            errs.append(f"crops.{name}={size}: every size must be a positive multiple of patch_size {p}")
    for name in ("global_crops_scale", "local_crops_scale"):
        lo, hi = getattr(cfg.crops, name)
        if not 0 < lo <= hi <= 1:
            errs.append(f"crops.{name}={[lo, hi]}: need 0 < min <= max <= 1")
    if cfg.crops.local_crops_number < 0:
        errs.append("crops.local_crops_number must be >= 0")
    lo, hi = cfg.ibot.mask_ratio_min_max
    if not 0 <= lo <= hi < 1:
        errs.append(f"ibot.mask_ratio_min_max={[lo, hi]}: need 0 <= min <= max < 1")
    if not 0 <= cfg.ibot.mask_sample_probability <= 1:
        errs.append("ibot.mask_sample_probability must be in [0, 1]")
    for name in ("batch_size_per_gpu", "grad_accum_steps", "official_epoch_length"):
        if getattr(cfg.train, name) < 1:
            errs.append(f"train.{name} must be >= 1")
    if cfg.optim.epochs <= 0:
        errs.append("optim.epochs must be > 0")
    if cfg.checkpointing.period < 1 or cfg.checkpointing.max_to_keep < 1:
        errs.append("checkpointing.period and checkpointing.max_to_keep must be >= 1")
    if cfg.augment.crop_mode not in ("volume_fraction", "zoom"):
        errs.append(f"augment.crop_mode={cfg.augment.crop_mode!r}: use 'volume_fraction' or 'zoom'")
    for name in ("global_zoom_range", "local_zoom_range"):
        lo, hi = getattr(cfg.augment, name)
        if not 0 < lo <= hi:
            errs.append(f"augment.{name}={[lo, hi]}: need 0 < min <= max")
    if cfg.train.centering not in ("centering", "sinkhorn_knopp"):
        errs.append(f"train.centering={cfg.train.centering!r}: use 'centering' or 'sinkhorn_knopp'")
    if cfg.train.sharding not in ("ddp", "fsdp2"):
        errs.append(f"train.sharding={cfg.train.sharding!r}: use 'ddp' or 'fsdp2'")
    if cfg.compute_precision not in ("fp32", "bf16", "auto"):
        errs.append(f"compute_precision={cfg.compute_precision!r}: use 'fp32', 'bf16' or 'auto'")
    if (
        cfg.datasets[0].norm.std <= 0
        or cfg.datasets[0].pixel_range.lower >= cfg.datasets[0].pixel_range.upper
    ):
        errs.append("datasets[0]: need norm.std > 0 and pixel_range.lower < upper")
    if cfg.data.spacing_mm is not None and cfg.data.spacing_mm <= 0:
        errs.append("data.spacing_mm must be > 0 (or null)")
    if errs:
        raise InputError("Invalid pretraining config: " + "; ".join(errs) + ".")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (override wins); lists are replaced, not merged."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["optim.epochs=2", "crops.local_crops_number=0"]`` -> nested dict (values parsed as YAML)."""
    import yaml  # PyYAML only for .yaml configs (this module is torch-free: CLI parse time)

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"Override {item!r} is not KEY=VALUE (e.g. optim.epochs=2).")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> PretrainConfig:
    """Defaults <- YAML file <- overrides, validated."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_mapping(
            path,
            InputError,
            "pretraining config",
            "fix the file (YAML mapping of config sections)",
            missing="pass an existing YAML file to --config",
            syntax="YAML",
        )
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        data = merge(data, overrides)
    return PretrainConfig.from_dict(data)

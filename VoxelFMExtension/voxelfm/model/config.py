"""Backbone architecture config, readable from the official training YAML or our JSON."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..files.documents import read_mapping


@dataclass(frozen=True)
class BackboneConfig:
    embed_dim: int = 864
    depth: int = 12
    num_heads: int = 12
    patch_size: int = 14
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    layerscale: float | None = 1e-5  # init value; None = no LayerScale modules
    rope_base: float = 100.0
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise CheckpointError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}."
            )
        if self.head_dim % 6:
            raise CheckpointError(
                f"head_dim {self.head_dim} must be divisible by 6 (3 axes x rotation pairs) for 3D RoPE."
            )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"Unknown backbone config keys {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**d)

    @classmethod
    def from_official_yaml(cls, source: str | Path | dict[str, Any]) -> BackboneConfig:
        """Read the `student` section of the reference training config (config.yaml)."""
        cfg = _load_yaml(source)
        st = cfg.get("student")
        if not isinstance(st, dict):
            raise CheckpointError(f"{source}: no 'student' section; is this a VoxelFM config.yaml?")
        ffn = st.get("ffn_layer", "mlp")
        if ffn != "mlp":
            raise CheckpointError(f"{source}: ffn_layer={ffn!r} is not supported (only 'mlp').")
        return cls.from_student(st)

    @classmethod
    def from_student(cls, st: Mapping[str, Any], drop_path_rate: float = 0.0) -> BackboneConfig:
        """The architecture in a training config's ``student`` section (the reference YAML and our
        ``pretrain.config.StudentConfig`` share its names); absent keys keep our defaults. WHY one reader: the
        official YAML and our pretraining must build the same backbone from the same section."""
        kwargs: dict[str, Any] = {"drop_path_rate": drop_path_rate}
        for name, cast in _STUDENT_KEYS.items():
            if name in st:
                kwargs[name] = cast(st[name])
        ls = st.get("layerscale", cls.layerscale)
        kwargs["layerscale"] = float(ls) if ls else None  # 0 or null: no LayerScale modules
        return cls(**kwargs)


# The ``student`` keys that carry over to BackboneConfig as they are: every field but these (layerscale and
# drop_path_rate: see ``from_student``; norm_eps is ours, the reference hard-codes it).
_NOT_IN_STUDENT = ("layerscale", "drop_path_rate", "norm_eps")
_CASTS: dict[str, Callable[[Any], Any]] = {"int": int, "float": float, "bool": bool}
_STUDENT_KEYS = {f.name: _CASTS[str(f.type)] for f in fields(BackboneConfig) if f.name not in _NOT_IN_STUDENT}


def official_preprocess_params(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """HU clip range and z-score constants of the first dataset in the reference config."""
    cfg = _load_yaml(source)
    try:
        ds = cfg["datasets"][0]
        return {
            "clip_hu": [float(ds["pixel_range"]["lower"]), float(ds["pixel_range"]["upper"])],
            "mean": float(ds["norm"]["mean"]),
            "std": float(ds["norm"]["std"]),
        }
    except (KeyError, IndexError, TypeError):
        return {}


def _load_yaml(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    return read_mapping(
        source,
        CheckpointError,
        "training config",
        "pass the config.yaml that came with the checkpoint",
        syntax="YAML",
    )

"""What a finished run hands on: the EMA teacher's backbone, as a backbone folder and as a hub-style folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..files.atomic import atomic_write_text
from ..model.checkpoint import save_backbone
from .config import PretrainConfig
from .meta_arch import SSLMetaArch


def _export_meta(cfg: PretrainConfig, step: int) -> tuple[dict, dict]:
    ds = cfg.datasets[0]
    meta = {
        "source": "voxelfm pretrain",
        "step": step,
        "crops": cfg.to_dict()["crops"],
        "spacing_mm": cfg.data.spacing_mm,
    }
    pre = {"clip_hu": [ds.pixel_range.lower, ds.pixel_range.upper], "mean": ds.norm.mean, "std": ds.norm.std}
    if cfg.data.spacing_mm is not None:
        # Trained at this isotropic spacing: inference resamples to it too (PreprocessConfig.min_spacing),
        # so patch tokens cover the same physical size as in pretraining.
        pre["min_spacing"] = float(cfg.data.spacing_mm)
    return meta, pre


def unsharded_copy(cfg: PretrainConfig, full_state: dict[str, torch.Tensor]) -> SSLMetaArch:
    """A plain CPU SSLMetaArch holding a gathered full state (what the exports read under FSDP2)."""
    plain = SSLMetaArch(
        dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, pretrained_weights=""))
    )
    plain.load_state_dict(full_state)
    return plain


def export_teacher(meta: SSLMetaArch, cfg: PretrainConfig, out_dir: Path, step: int) -> Path:
    """The EMA teacher's backbone in our safetensors format (loadable by ``load_backbone``)."""
    m, pre = _export_meta(cfg, step)
    return save_backbone(meta.teacher.backbone, out_dir, meta=m, preprocess=pre)


def export_hub_folder(meta: SSLMetaArch, cfg: PretrainConfig, out_dir: Path, step: int) -> Path:
    """Hub-style folder: model.safetensors + config.json + README.md (model card)."""
    export_teacher(meta, cfg, out_dir, step)
    st = cfg.student
    card = (
        "---\nlibrary_name: voxelfm\ntags: [ct, 3d, self-supervised, dinov2]\n---\n"
        f"# VoxelFM backbone (pretrained {step} steps)\n\n"
        f"3D ViT: embed_dim {st.embed_dim}, depth {st.depth}, heads {st.num_heads}, patch {st.patch_size}, "
        f"{st.num_register_tokens} registers, 3D RoPE. Teacher (EMA) weights from DINO + iBOT + KoLeo pretraining.\n\n"
        "Load with `voxelfm.load_backbone(path)`.\n"
    )
    atomic_write_text(out_dir / "README.md", card)
    return out_dir

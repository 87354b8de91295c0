"""Read the official checkpoint format, read/write ours (safetensors + JSON config).

Official: a ``.pth`` whose top level holds ``teacher`` (keys ``backbone.*`` plus DINO/iBOT heads), with
the training ``config.yaml`` beside it. A resumable training checkpoint (``model`` -> ``teacher.backbone.*``)
and a bare backbone state dict are accepted too. Ours: ``model.safetensors`` + ``config.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from ..errors import CheckpointError
from ..files.atomic import atomic_write, atomic_write_text
from ..files.documents import read_mapping
from ..files.file_kinds import describe_file
from ..imaging.formats import IMAGE_SUFFIXES, has_suffix, is_dicom_file
from .config import BackboneConfig, official_preprocess_params
from .vit import VoxelFMBackbone

log = logging.getLogger(__name__)

FORMAT_NAME = "voxelfm-backbone"
FORMAT_VERSION = 1
_HEAD_PREFIXES = ("dino_head", "ibot_head")


def extract_backbone_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Backbone tensors from any supported checkpoint layout, with prefixes removed and heads dropped."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}.")
    if "teacher" in obj and isinstance(obj["teacher"], dict):
        sd = obj["teacher"]
    elif (
        "model" in obj
        and isinstance(obj["model"], dict)
        and any(k.startswith("teacher.") for k in obj["model"])
    ):
        sd = {k[len("teacher.") :]: v for k, v in obj["model"].items() if k.startswith("teacher.")}
    else:
        sd = obj
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        k = key.replace("module.", "")
        if k.startswith(_HEAD_PREFIXES):
            continue
        if k.startswith("backbone."):
            k = k[len("backbone.") :]
        out[k] = value
    if "patch_embed.proj.weight" not in out:
        raise CheckpointError(
            f"{source}: no VoxelFM backbone found (missing 'patch_embed.proj.weight'); keys start with "
            f"{sorted({k.split('.')[0] for k in sd})[:8]}. Is this a VoxelFM teacher checkpoint?"
        )
    return out


def infer_config(sd: dict[str, torch.Tensor]) -> BackboneConfig:
    """Architecture from tensor shapes alone (heads from the RoPE periods buffer: head_dim = 6 * len)."""
    w = sd["patch_embed.proj.weight"]
    embed_dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    if "rope_embed.periods" not in sd:
        raise CheckpointError(
            "Checkpoint has no 'rope_embed.periods'; pass the model's config.yaml/config.json."
        )
    periods = sd["rope_embed.periods"].double()
    head_dim = 6 * int(periods.numel())
    base = float(periods[1] ** (head_dim // 6)) if periods.numel() > 1 else 100.0
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    return BackboneConfig(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // head_dim,
        patch_size=patch,
        mlp_ratio=hidden / embed_dim,
        num_register_tokens=int(sd["register_tokens"].shape[1]) if "register_tokens" in sd else 0,
        layerscale=1e-5 if "blocks.0.ls1.gamma" in sd else None,
        rope_base=round(base, 3),
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        ffn_bias="blocks.0.mlp.fc1.bias" in sd,
    )


def build_and_load(sd: dict[str, torch.Tensor], cfg: BackboneConfig, source: str) -> VoxelFMBackbone:
    # Built on the meta device without init, then the checkpoint tensors are assigned: a random init of ViT-B's
    # 110M weights (thrown away by the load) took 5-7 s of every `voxelfm features` run. (init_weights on meta
    # would import torch._dynamo through the normal_ reference: seconds.)
    with torch.device("meta"):
        model = VoxelFMBackbone(cfg, init=False)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(sd) & set(expected))
        if sd[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source} does not match the architecture {cfg.to_dict()}:"
            + (f" missing {missing[:5]}{'...' if len(missing) > 5 else ''};" if missing else "")
            + (f" unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''};" if unexpected else "")
            + (f" shape mismatch {wrong[:3]};" if wrong else "")
            + " Use the config that belongs to this checkpoint."
        )
    model.load_state_dict({k: v.float().contiguous() for k, v in sd.items()}, strict=True, assign=True)
    return model.eval()


def load_official(path: Path, config: str | Path | dict | BackboneConfig | None = None) -> VoxelFMBackbone:
    """Load an official ``.pth`` (teacher state dict) with its config.yaml (found beside it if not given)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(
            f"Cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]}. The file is corrupt, "
            "truncated or not a PyTorch checkpoint; give a VoxelFM checkpoint (a .pth with its config.yaml, a "
            "model folder or a registry id from `voxelfm models`), or download the file again if it came damaged."
        ) from exc
    sd = extract_backbone_state_dict(obj, str(path))
    inferred = infer_config(sd)
    preprocess: dict[str, Any] = {}
    if config is None:
        for cand in (path.parent / "config.yaml", path.parent.parent / "config.yaml"):
            if cand.is_file():
                config = cand
                break
    if isinstance(config, BackboneConfig):
        cfg = config
    elif config is not None:
        cfg = BackboneConfig.from_official_yaml(config)
        preprocess = official_preprocess_params(config)
    else:
        cfg = inferred
    model = build_and_load(sd, cfg, str(path))
    model.preprocess_defaults = preprocess  # type: ignore[attr-defined]
    return model


def load_ours(path: Path) -> VoxelFMBackbone:
    """Load ``model.safetensors`` + ``config.json`` (path = the folder or the .safetensors file)."""
    folder = path if path.is_dir() else path.parent
    weights = path if path.is_file() else folder / "model.safetensors"
    cfg_path = folder / "config.json"
    if not weights.is_file():
        raise CheckpointError(f"No model.safetensors in {folder}.")
    meta = read_mapping(
        cfg_path,
        CheckpointError,
        "model config",
        "restore the config.json that came with the model",
        missing=f"our format needs it beside {weights.name}",
    )
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{cfg_path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}.")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version {meta['format_version']} is newer than this code; update."
        )
    try:
        sd = safetensors.torch.load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Cannot read {weights}: {exc}. The file is corrupt or truncated; replace it."
        ) from exc
    model = build_and_load(sd, BackboneConfig.from_dict(meta["architecture"]), str(weights))
    model.preprocess_defaults = dict(meta.get("preprocess", {}))  # type: ignore[attr-defined]
    model.meta = dict(meta.get("meta", {}))  # type: ignore[attr-defined]
    return model


def load_backbone_file(
    path: str | Path, config: str | Path | dict | BackboneConfig | None = None
) -> VoxelFMBackbone:
    """Load a backbone from a local file or folder in either format (eval mode, fp32, CPU)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path}")
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return load_ours(path)
        pths = sorted(path.rglob("*.pth"))
        if not pths:
            raise CheckpointError(f"{path}: no model.safetensors or .pth checkpoint inside.")
        return load_official(pths[-1], config)
    if path.suffix == ".safetensors":
        header = describe_file(path.with_suffix(".json")) or ""
        if "probe header" in header:
            raise CheckpointError(
                f"{path} holds the weights of {header.replace(' header', '')} ({path.stem}.json), not a model. "
                "Use it with --probe; give --model a registry id, a checkpoint or a model folder."
            )
        return load_ours(path)
    image = has_suffix(path, IMAGE_SUFFIXES) or is_dicom_file(path)
    what = "an image (NIfTI/NRRD/DICOM)" if image else describe_file(path)
    if what:  # a CT, a probe, a features file, a case library given as the model: say so, never "delete it"
        raise CheckpointError(
            f"{path} is {what}, not a model. Give --model a registry id (see `voxelfm models`), a checkpoint "
            "(.pth with its config.yaml, or .safetensors) or a model folder."
        )
    return load_official(path, config)


def save_backbone(
    model: VoxelFMBackbone,
    out_dir: str | Path,
    meta: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write out_dir/model.safetensors + out_dir/config.json atomically; returns out_dir.

    ``dtype=torch.float16`` halves the file (used for the bundled model); loading always gives float32.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {name for name, _ in model.named_parameters()}  # buffers (RoPE periods) stay float32
    sd = {
        k: v.detach().to("cpu", dtype if k in params else torch.float32).contiguous()
        for k, v in model.state_dict().items()
    }
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": model.cfg.to_dict(),
        "preprocess": preprocess if preprocess is not None else getattr(model, "preprocess_defaults", {}),
        "meta": meta or {},
    }
    atomic_write(out / "model.safetensors", lambda tmp: safetensors.torch.save_file(sd, str(tmp)))
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    return out

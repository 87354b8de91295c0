"""Checkpoint formats: official .pth -> ours round trip; corrupt / wrong-architecture files are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from voxelfm import load_backbone
from voxelfm.errors import CheckpointError, InputError
from voxelfm.model import BackboneConfig, VoxelFMBackbone
from voxelfm.model.checkpoint import load_backbone_file, save_backbone


def test_official_to_ours_round_trip(parity_dir, tmp_path):
    official = load_backbone_file(parity_dir / "tiny_checkpoint.pth", parity_dir / "tiny_config.yaml")
    out = save_backbone(official, tmp_path / "ours", meta={"source": "parity"})
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    ours = load_backbone(out)
    x = torch.load(parity_dir / "input.pt")[:, None]
    with torch.inference_mode():
        a, b = official.forward_features(x), ours.forward_features(x)
    assert torch.equal(a["patch"], b["patch"]) and torch.equal(a["cls"], b["cls"])
    assert ours.preprocess_defaults == {"clip_hu": [-1000.0, 1900.0], "mean": -573.8, "std": 461.3}
    assert len(ours.model_info["sha256"]) == 64


def test_official_config_found_beside_checkpoint(parity_dir, tmp_path):
    shutil.copy(parity_dir / "tiny_checkpoint.pth", tmp_path / "99999.pth")
    shutil.copy(parity_dir / "tiny_config.yaml", tmp_path / "config.yaml")
    m = load_backbone(tmp_path / "99999.pth")
    assert m.preprocess_defaults["std"] == pytest.approx(461.3)


def test_truncated_official_checkpoint_refused(parity_dir, tmp_path):
    data = (parity_dir / "tiny_checkpoint.pth").read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        load_backbone(bad)


def test_garbage_safetensors_refused(tmp_path):
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1))
    out = save_backbone(model, tmp_path / "m")
    blob = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(blob[: len(blob) - 100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_backbone(out)


def test_wrong_architecture_refused(parity_dir, tmp_path):
    """The tiny weights with a config that says ViT-B: a clear mismatch error, nothing loaded."""
    cfg = BackboneConfig(embed_dim=864, depth=12, num_heads=12)
    with pytest.raises(CheckpointError, match="does not match the architecture"):
        load_backbone_file(parity_dir / "tiny_checkpoint.pth", cfg)


def test_non_voxelfm_checkpoint_refused(tmp_path):
    p = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(3, 3)}}, p)
    with pytest.raises(CheckpointError, match="no VoxelFM backbone"):
        load_backbone(p)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_file(tmp_path / "nope.pth")


def test_future_format_version_refused(tmp_path):
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1))
    out = save_backbone(model, tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    cfg["format_version"] = 99
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="newer"):
        load_backbone(out)


def test_bad_input_shapes():
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1)).eval()
    with pytest.raises(InputError, match="multiple of the patch size"):
        model.forward_features(torch.zeros(1, 1, 14, 14, 15))
    with pytest.raises(InputError, match="Expected input"):
        model.forward_features(torch.zeros(14, 14))
    with pytest.raises(InputError, match="Expected input"):
        model.forward_features(torch.zeros(1, 2, 14, 14, 14))


def test_masks_replace_tokens():
    torch.manual_seed(0)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1)).eval()
    torch.nn.init.normal_(model.mask_token)
    x = torch.randn(2, 1, 28, 28, 28)
    masks = torch.zeros(2, 8, dtype=torch.bool)
    with torch.no_grad():
        base = model(x)["patch_tokens"]
        same = model(x, masks)["patch_tokens"]
        masks[0, 3] = True
        changed = model(x, masks)["patch_tokens"]
    assert torch.equal(base, same)
    assert not torch.allclose(changed[0], base[0]) and torch.allclose(changed[1], base[1], atol=1e-6)


def test_half_precision_file_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1)).eval()
    full = save_backbone(model, tmp_path / "fp32")
    half = save_backbone(model, tmp_path / "fp16", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = load_backbone(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(loaded.rope_embed.periods, model.rope_embed.periods)  # buffers kept in float32
    x = torch.randn(1, 1, 28, 28, 28)
    with torch.no_grad():
        a, b = model(x)["patch"], loaded(x)["patch"]
    assert (a - b).abs().max() < 1e-2

"""The speed-ups give the same numbers as the plain formulas they replace (issue 14): patch embedding as one
matmul, RoPE from per-channel tables, skipped random init on load, compact intensity codes, matmul
upsampling of logits, the slab arg max; and the default token budget rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voxelfm.features import tiling
from voxelfm.features.spec import ModelSpec
from voxelfm.model import BackboneConfig, VoxelFMBackbone
from voxelfm.model.checkpoint import load_backbone_file, save_backbone
from voxelfm.model.patch_embed import PatchEmbed3D
from voxelfm.model.rope import RopePositionEmbedding3D, apply_rope, apply_rope_tables
from voxelfm.segment.probe import SegmentationProbe
from voxelfm.segment.voxel_features import IntensityConfig, IntensityMaps, LogitUpsampler

GIB = 2**30


def test_patch_embed_matmul_equals_conv():
    torch.manual_seed(0)
    pe = PatchEmbed3D(14, 32)
    x = torch.randn(2, 1, 28, 42, 56)
    tokens, grid = pe(x)
    ref = F.conv3d(x, pe.proj.weight, pe.proj.bias, stride=14)
    assert grid == (2, 3, 4) and torch.allclose(tokens, ref.flatten(2).transpose(1, 2), atol=1e-5)


def test_rope_tables_are_bit_identical_to_pairwise_rope():
    rope = RopePositionEmbedding3D(72)
    x = torch.randn(1, 3, 2 * 3 * 4, 72)
    sin, cos = rope.sin_cos(2, 3, 4)
    assert torch.equal(apply_rope_tables(x, *rope.tables(2, 3, 4)), apply_rope(x, sin, cos))


def test_loading_skips_random_init_but_keeps_every_weight(tmp_path):
    torch.manual_seed(0)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=2, num_heads=1)).eval()
    loaded = load_backbone_file(save_backbone(model, tmp_path))
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert b.device.type == "cpu" and b.dtype == torch.float32 and torch.equal(a, b), k
    assert all(p.requires_grad for p in loaded.parameters())  # still trainable (pretraining from a backbone)


def _ct(shape=(9, 30, 34)) -> np.ndarray:
    rng = np.random.default_rng(0)
    arr = np.full(shape, -900.0, np.float32)
    arr[:, 5:25, 6:28] = 40.0
    arr[3:6, 10:16, 10:18] = 300.0
    return arr + rng.normal(0, 30, shape).astype(np.float32)


def test_intensity_term_equals_hat_basis_times_coefficients():
    cfg = IntensityConfig()
    maps = IntensityMaps(_ct(), np.array([2.0, 0.8, 0.8]), cfg)
    coef = np.random.default_rng(1).normal(size=sum(len(c.knots) for c in cfg.channels))
    kji = np.argwhere(np.ones(_ct().shape, bool))
    expected = (maps.basis_at(kji).astype(np.float64) @ coef).reshape(_ct().shape)
    delta = np.zeros(_ct().shape, np.float32)
    maps.add_to(delta[2:], coef, k0=2)  # a slab, as prediction does
    assert np.allclose(delta[2:], expected[2:], atol=1e-4) and not delta[:2].any()
    assert maps.codes.max() + 1 == len(maps.code_index) < cfg.levels ** len(cfg.channels)


def test_matmul_upsampling_equals_separable_lerp():
    g2r = np.diag([2.5, 3.0, 4.0, 1.0])
    g2r[:3, 3] = [1.0, -2.0, 0.5]
    up = LogitUpsampler((3, 4, 5), g2r, (9, 10, 11), np.diag([1.1, 0.9, 1.3, 1.0]))
    grid = torch.randn(2, 3, 4, 5)
    got = up(grid)
    (k0, k1, kw), (j0, j1, jw), (i0, i1, iw) = up._taps
    v = grid.permute(0, *(p + 1 for p in up._perm)).numpy().astype(np.float64)
    v = v[..., i0] * (1 - iw) + v[..., i1] * iw
    v = v[:, :, j0] * (1 - jw)[:, None] + v[:, :, j1] * jw[:, None]
    v = v[:, k0] * (1 - kw)[:, None, None] + v[:, k1] * kw[:, None, None]
    assert got.shape == (2, 9, 10, 11) and np.allclose(got, v, atol=1e-5)


def test_slab_argmax_ties_and_background():
    delta = np.array([[[0.0, 1.0, 2.0, -1.0]], [[0.0, 1.0, 3.0, -2.0]]], np.float32)[:, None]  # [K=2,1,1,4]
    out = np.empty((1, 1, 4), np.uint8)
    best = SegmentationProbe._argmax_into(
        delta, out, np.empty((1, 1, 4), bool), np.array([0, 7, 9], np.uint8)
    )
    assert out.ravel().tolist() == [0, 7, 9, 0]  # 0 ties -> background; equal classes -> the lower one
    assert np.array_equal(best.ravel(), [0.0, 1.0, 3.0, 0.0])
    one = np.empty((1, 1, 4), np.uint8)
    SegmentationProbe._argmax_into(delta[:1], one, np.empty((1, 1, 4), bool), np.array([0, 5], np.uint8))
    assert one.ravel().tolist() == [0, 5, 5, 0]


@pytest.mark.parametrize(("memory", "budget"), [(2 * GIB, 4096), (8 * GIB, 22528), (16 * GIB, 32768)])
def test_default_token_budget_follows_memory(memory, budget):
    assert tiling.default_max_tokens(memory) == budget
    one_pass = len(tiling.plan_tiles((20, 36, 36), budget)) == 1  # a 0.98 mm chest CT, 25,920 tokens
    assert one_pass == (budget >= 25920)


def test_model_spec_default_budget_is_the_machine_rule(monkeypatch):
    monkeypatch.setattr(tiling, "physical_memory_bytes", lambda: 64 * GIB)
    assert ModelSpec().max_tokens == 32768
    monkeypatch.setattr(tiling, "physical_memory_bytes", lambda: None)
    assert ModelSpec().max_tokens == 16384

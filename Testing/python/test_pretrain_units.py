"""Unit tests of the pretraining building blocks against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voxelfm.errors import InputError
from voxelfm.pretrain.config import PretrainConfig, load_config
from voxelfm.pretrain.crops import CropSpec, MultiCrop, sample_box
from voxelfm.pretrain.heads import DINOHead
from voxelfm.pretrain.losses import CenteredTeacher, dino_loss, ibot_patch_loss, koleo_loss
from voxelfm.pretrain.masking import block_mask_3d, sample_masks
from voxelfm.pretrain.optim import build_param_groups
from voxelfm.pretrain.schedules import Schedules, WarmupCosine


# ---- config ---------------------------------------------------------------------------------------------
def test_reference_config_loads_and_defaults_match_reference(parity_dir):
    cfg = load_config(parity_dir / "tiny_config.yaml")
    assert cfg.student.embed_dim == 96 and cfg.dino.head_n_prototypes == 64
    d = PretrainConfig()
    assert (d.student.embed_dim, d.student.depth, d.student.num_heads) == (864, 12, 12)
    assert (d.dino.head_n_prototypes, d.dino.head_bottleneck_dim, d.dino.head_hidden_dim) == (
        65536,
        256,
        2048,
    )
    assert d.schedules.lr.peak == 1e-3 and d.schedules.lr.warmup_epochs == 10
    assert (d.schedules.teacher_temp.start, d.schedules.teacher_temp.peak) == (0.04, 0.07)
    assert d.optim.layerwise_decay == 0.9 and d.optim.patch_embed_lr_mult == 0.2 and d.optim.clip_grad == 3.0
    assert d.crops.global_crops_size == [112] * 3 and d.crops.local_crops_size == [56] * 3
    assert d.crops.local_crops_number == 8 and d.ibot.mask_ratio_min_max == [0.1, 0.5]
    assert d.total_iterations == 100_000


def test_config_overrides_keep_other_defaults():
    cfg = load_config(None, ["schedules.lr.peak=0.01", "crops.local_crops_number=0"])
    assert (
        cfg.schedules.lr.peak == 0.01
        and cfg.schedules.lr.end == 1e-6
        and cfg.schedules.lr.warmup_epochs == 10
    )
    assert cfg.crops.local_crops_number == 0


@pytest.mark.parametrize(
    "override, words",
    [
        ({"optim": {"epohcs": 3}}, "optim.epohcs"),
        ({"nonsense": 1}, "nonsense"),
        ({"crops": {"global_crops_size": [30, 28, 28]}}, "multiple of patch_size"),
        ({"student": {"embed_dim": 64, "num_heads": 2}}, "divisible by 6"),
        ({"train": {"batch_size_per_gpu": "two"}}, "train.batch_size_per_gpu"),
        ({"ibot": {"mask_ratio_min_max": [0.5, 0.1]}}, "mask_ratio_min_max"),
        ({"augment": {"local_zoom_range": [0.0, 1.0]}}, "augment.local_zoom_range"),
        ({"augment": {"global_zoom_range": [2.0, 1.0]}}, "augment.global_zoom_range"),
        ({"train": {"sharding": "fsdp"}}, "train.sharding"),
    ],
)
def test_bad_config_raises_input_error(tmp_path, override, words):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(override))
    with pytest.raises(InputError, match=words.replace(".", r"\.").replace("[", r"\[")):
        load_config(p)


# ---- losses ---------------------------------------------------------------------------------------------
def test_dino_loss_hand_computed():
    temp = 0.1
    s0 = torch.tensor([[temp * math.log(3.0), 0.0]])  # softmax(s0/T) = [3/4, 1/4]
    s1 = torch.tensor([[0.0, 0.0]])  # softmax = [1/2, 1/2]
    t0 = torch.tensor([[0.3, 0.7]])
    t1 = torch.tensor([[1.0, 0.0]])
    # pairs (t0, s1) and (t1, s0); (t0, s0) and (t1, s1) are the same crop and skipped
    expected = 0.5 * (math.log(2.0) + math.log(4.0 / 3.0))
    got = dino_loss([s0, s1], [t0, t1], temp)
    assert float(got) == pytest.approx(expected, abs=1e-6)
    # a local crop adds the two (teacher, local) pairs
    s2 = torch.tensor([[0.0, 0.0]])
    got3 = dino_loss([s0, s1, s2], [t0, t1], temp)
    assert float(got3) == pytest.approx((2 * expected + 2 * math.log(2.0)) / 4, abs=1e-6)


def test_centering_update_and_softmax():
    c = CenteredTeacher(2, momentum=0.9)
    logits = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    p = c.softmax(logits, temp=0.5)  # centre is zero at first
    assert torch.allclose(p[0], torch.softmax(torch.tensor([2.0, 4.0]), 0))
    c.update(logits)
    assert torch.allclose(c.center, torch.tensor([[0.2, 0.3]]))
    c.update(logits)
    assert torch.allclose(c.center, torch.tensor([[0.9 * 0.2 + 0.2, 0.9 * 0.3 + 0.3]]))
    before = c.center.clone()
    c.update(torch.zeros(0, 2))  # nothing to average: unchanged
    assert torch.equal(c.center, before)
    q = c.softmax(torch.tensor([[0.38, 0.57]]), temp=1.0)  # equals the centre -> uniform
    assert torch.allclose(q, torch.tensor([[0.5, 0.5]]))


def test_koleo_hand_computed_and_scale_invariant():
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    # nearest-neighbour distances: sqrt(0.8), sqrt(0.8), sqrt(3.2)
    expected = -(math.log(math.sqrt(0.8)) * 2 + math.log(math.sqrt(3.2))) / 3
    assert float(koleo_loss(x)) == pytest.approx(expected, abs=1e-5)
    assert float(koleo_loss(5 * x)) == pytest.approx(expected, abs=1e-5)
    assert float(koleo_loss(x[:1])) == 0.0


def test_ibot_loss_averages_per_crop():
    temp = 0.1
    s = torch.zeros(3, 2)  # uniform student: CE = ln 2 regardless of teacher
    s[2] = torch.tensor([temp * math.log(3.0), 0.0])  # [3/4, 1/4]
    t = torch.tensor([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    idx = torch.tensor([0, 0, 3])  # crop 0 has two masked tokens, crop 3 one; crops 1, 2 none
    expected = 0.5 * (math.log(2.0) + math.log(4.0 / 3.0))
    assert float(ibot_patch_loss(s, t, idx, 4, temp)) == pytest.approx(expected, abs=1e-6)
    empty = ibot_patch_loss(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 2), idx[:0], 4, temp)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


# ---- schedules / optimiser ------------------------------------------------------------------------------
def test_warmup_cosine_values():
    s = WarmupCosine(start=0.0, peak=1.0, end=0.1, warmup_iters=10, total_iters=110)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    cfg = load_config(None, {"optim": {"epochs": 2}, "train": {"official_epoch_length": 10}})
    sch = Schedules(cfg)
    assert sch.at(0)["last_layer_lr_factor"] == 0.0 and sch.at(10)["last_layer_lr_factor"] == 1.0
    assert sch.at(0)["teacher_temp"] == pytest.approx(0.04) and sch.at(19)["teacher_temp"] < 0.07


def test_param_groups_layer_decay_and_no_wd():
    from voxelfm.model import BackboneConfig, VoxelFMBackbone

    bb = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=2, num_heads=2))
    head = DINOHead(48, 8, 3, 16, 8)
    cfg = load_config(None)
    groups = build_param_groups(bb, {"dino_head": head}, 2, cfg.optim)
    lookup = {id(p): g for g in groups for p in g["params"]}
    n_params = sum(1 for _ in bb.parameters()) + sum(1 for _ in head.parameters())
    assert len(lookup) == n_params
    g = lambda p: lookup[id(p)]  # noqa: E731
    assert g(bb.patch_embed.proj.weight)["lr_multiplier"] == pytest.approx(0.9**3 * 0.2)
    assert g(bb.blocks[0].attn.qkv.weight)["lr_multiplier"] == pytest.approx(0.9**2)
    assert g(bb.blocks[1].mlp.fc1.weight)["lr_multiplier"] == pytest.approx(0.9)
    assert g(bb.norm.weight)["lr_multiplier"] == pytest.approx(1.0)
    assert g(head.mlp[0].weight)["lr_multiplier"] == 1.0
    assert g(bb.blocks[0].attn.qkv.weight)["wd_multiplier"] == 1.0
    for p in (
        bb.blocks[0].attn.qkv.bias,
        bb.norm.weight,
        bb.cls_token,
        bb.register_tokens,
        bb.mask_token,
        bb.blocks[0].ls1.gamma,
    ):
        assert g(p)["wd_multiplier"] == 0.0
    assert g(head.last_layer.parametrizations.weight.original1)["is_last_layer"]


def test_dino_head_keys_match_reference_layout():
    keys = set(DINOHead(96, 64, 3, 32, 16).state_dict())
    assert keys == {
        "mlp.0.weight",
        "mlp.0.bias",
        "mlp.2.weight",
        "mlp.2.bias",
        "mlp.4.weight",
        "mlp.4.bias",
        "last_layer.parametrizations.weight.original0",
        "last_layer.parametrizations.weight.original1",
    }


# ---- masking / crops ------------------------------------------------------------------------------------
def test_block_mask_exact_count_and_blocky():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 40, 100):
        m = block_mask_3d((4, 5, 6), n, rng)
        assert m.shape == (4, 5, 6) and int(m.sum()) == n
    # blocks: masked tokens have far more masked neighbours than random scattering would give
    m = block_mask_3d((8, 8, 8), 128, np.random.default_rng(1))
    nb = sum(np.logical_and(m, np.roll(m, 1, axis=a)).sum() for a in range(3)) / m.sum()
    assert nb > 1.5  # random 25% masking gives ~0.75


def test_sample_masks_fraction_and_ratios():
    masks = sample_masks(8, (4, 4, 4), (0.1, 0.5), 0.5, np.random.default_rng(0))
    assert masks.shape == (8, 64) and masks.dtype == torch.bool
    counts = sorted(int(c) for c in masks.sum(1))
    assert counts[:4] == [0, 0, 0, 0] and all(6 <= c <= 32 for c in counts[4:])


def test_multicrop_shapes_normalisation_and_box():
    cfg = load_config(
        None,
        {
            "crops": {
                "global_crops_size": [28, 28, 28],
                "local_crops_size": [14, 14, 14],
                "local_crops_number": 3,
            }
        },
    )
    vol = np.full((40, 50, 60), -1000.0, dtype=np.float32)
    out = MultiCrop(cfg)(vol, np.random.default_rng(0))
    assert len(out["global_crops"]) == 2 and len(out["local_crops"]) == 3
    assert out["global_crops"][0].shape == (1, 28, 28, 28) and out["local_crops"][0].shape == (1, 14, 14, 14)
    assert torch.allclose(out["global_crops"][0], torch.full((1, 28, 28, 28), (-1000 + 573.8) / 461.3))
    rng = np.random.default_rng(3)
    for _ in range(50):
        off, ext = sample_box((40, 50, 60), CropSpec((28, 28, 28), (0.32, 1.0)), (0.75, 1.333), rng)
        assert all(o >= 0 and o + e <= n for o, e, n in zip(off, ext, (40, 50, 60), strict=True))
        assert 0.1 < np.prod(ext) / (40 * 50 * 60) <= 1.0


def test_zoom_crops_keep_the_voxel_size_whatever_the_volume_size():
    """crop_mode 'zoom': a crop spans size x zoom voxels in a small and a large volume alike."""
    rng = np.random.default_rng(4)
    for shape in ((60, 60, 60), (300, 400, 400)):
        for _ in range(30):
            off, ext = sample_box(
                shape, CropSpec((28, 28, 28), (0.32, 1.0), zoom=(1.0, 1.5)), (1.0, 1.0), rng
            )
            assert all(o >= 0 and o + e <= n for o, e, n in zip(off, ext, shape, strict=True))
            assert all(28 <= e <= 42 for e in ext)
    off, ext = sample_box(
        (20, 100, 100), CropSpec((28, 28, 28), (0.32, 1.0), zoom=(1.0, 1.0)), (1.0, 1.0), rng
    )
    assert ext == (20, 28, 28)  # clipped to the volume
    cfg = load_config(
        None,
        {
            "crops": {"global_crops_size": [28, 28, 28], "local_crops_size": [14, 14, 14]},
            "augment": {
                "crop_mode": "zoom",
                "global_zoom_range": [1.0, 1.0],
                "window_prob": 0.0,
                "aspect_ratio_range": [1.0, 1.0],
            },
        },
    )
    i, j, k = np.indices((200, 200, 200))
    vol = (((i + j + k) % 2) * 1000 - 500).astype(np.float32)  # voxel-scale checkerboard
    out = MultiCrop(cfg)(vol, np.random.default_rng(0))
    assert out["global_crops"][0].shape == (1, 28, 28, 28)
    assert out["global_crops"][0].std() > 1.0  # a 28-voxel box at full resolution: the pattern survives
    cfg.augment.crop_mode = "volume_fraction"
    assert MultiCrop(cfg)(vol, np.random.default_rng(0))["global_crops"][0].std() < 0.2  # averaged away
    with pytest.raises(InputError, match="crop_mode"):
        load_config(None, {"augment": {"crop_mode": "mm"}})


# ---- meta architecture ----------------------------------------------------------------------------------
def _tiny_meta(**over):
    from voxelfm.pretrain.meta_arch import SSLMetaArch

    base = {
        "student": {"embed_dim": 48, "depth": 2, "num_heads": 2},
        "dino": {"head_n_prototypes": 32, "head_bottleneck_dim": 8, "head_hidden_dim": 16},
        "ibot": {"head_n_prototypes": 24, "head_bottleneck_dim": 8, "head_hidden_dim": 16},
        "crops": {
            "global_crops_size": [28, 28, 28],
            "local_crops_size": [14, 14, 14],
            "local_crops_number": 2,
        },
    }
    from voxelfm.pretrain.config import merge

    cfg = load_config(None, merge(base, over))
    torch.manual_seed(0)
    return SSLMetaArch(cfg), cfg


def _batch(b: int = 2, masked: bool = True) -> dict[str, torch.Tensor]:
    g = torch.randn(2 * b, 1, 28, 28, 28)
    masks = torch.zeros(2 * b, 8, dtype=torch.bool)
    if masked:
        masks[0, :3] = True
        masks[3, 5] = True
    return {"global_crops": g, "local_crops": torch.randn(2 * b, 1, 14, 14, 14), "masks": masks}


def test_losses_backward_reach_mask_token_and_heads():
    meta, _ = _tiny_meta()
    meta.train()
    loss, parts = meta.losses(_batch(), teacher_temp=0.04)
    assert {"dino", "ibot", "koleo", "teacher_entropy", "ibot_teacher_entropy"} <= set(parts) and all(
        math.isfinite(v) for v in parts.values()
    )
    loss.backward()
    bb = meta.student.backbone
    assert bb.mask_token.grad is not None and bb.mask_token.grad.abs().sum() > 0
    assert meta.student.dino_head.last_layer.parametrizations.weight.original1.grad.abs().sum() > 0
    assert all(p.grad is None for p in meta.teacher.parameters())
    assert meta.dino_center.center.abs().sum() > 0 and meta.ibot_center.center.abs().sum() > 0
    # no masked token anywhere: iBOT is 0, the mask token still gets a (zero) gradient (DDP-safe), no error
    meta.zero_grad()
    loss, parts = meta.losses(_batch(masked=False), teacher_temp=0.04)
    loss.backward()
    assert parts["ibot"] == 0.0 and bb.mask_token.grad is not None


def test_ema_update_formula_and_separate_ibot_head():
    meta, _ = _tiny_meta(ibot={"separate_head": True})
    assert "teacher.ibot_head.last_layer.parametrizations.weight.original1" in meta.state_dict()
    assert meta.ibot_center.center.shape == (1, 24)
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(1.0)
    t_before = [p.clone() for p in meta.teacher.parameters()]
    s_now = [p.clone() for p in meta.student.parameters()]
    meta.update_teacher(0.9)
    for t0, s, t1 in zip(t_before, s_now, meta.teacher.parameters(), strict=True):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s, atol=1e-6)
    loss, parts = meta.losses(_batch(), teacher_temp=0.05)
    assert math.isfinite(float(loss.detach()))


def test_teacher_has_no_stochastic_depth_and_linear_drop_path():
    meta, _ = _tiny_meta(student={"drop_path_rate": 0.2, "drop_path_uniform": False})
    assert [b.drop_path.p for b in meta.student.backbone.blocks] == [0.0, 0.2]
    assert all(b.drop_path.p == 0.0 for b in meta.teacher.backbone.blocks)
    meta.train()
    assert not meta.teacher.training and meta.student.training


def test_multicrop_axis_permutation_moves_the_gradient_axis():
    cfg = load_config(
        None,
        {
            "crops": {
                "global_crops_size": [14, 14, 14],
                "global_crops_scale": [1.0, 1.0],
                "local_crops_number": 0,
            },
            "augment": {"flip_prob": 0.0, "window_prob": 0.0, "aspect_ratio_range": [1.0, 1.0]},
        },
    )
    z = np.linspace(-900, 900, 28, dtype=np.float32)
    vol = np.broadcast_to(z[:, None, None], (28, 28, 28)).copy()  # HU varies along axis 0 only
    axes = set()
    for seed in range(12):
        crop = MultiCrop(cfg).crop(vol, MultiCrop(cfg).global_spec, np.random.default_rng(seed))[0]
        varying = [a for a in range(3) if float(crop.std(dim=a).max()) > 1e-4]
        assert len(varying) == 1  # still a pure 1D ramp: a permutation, not a mix of axes
        a = varying[0]
        ramp = crop.mean(dim=tuple(b for b in range(3) if b != a))
        assert torch.all(ramp[1:] > ramp[:-1])  # increasing: no flip
        axes.add(a)
    assert axes == {0, 1, 2}


def test_sinkhorn_centering_option_gives_equipartitioned_targets():
    meta, cfg = _tiny_meta(train={"centering": "sinkhorn_knopp"})
    assert cfg.train.centering == "sinkhorn_knopp"
    batch = _batch(b=4)
    t = meta.teacher_targets(batch["global_crops"], batch["masks"], temp=0.04)
    assert torch.allclose(t["dino"].sum(dim=1), torch.ones(8), atol=1e-5)
    col = t["dino"].sum(dim=0)  # each of the 32 prototypes gets 8/32 of the mass
    assert torch.allclose(col, torch.full_like(col, 8 / 32), atol=0.05)
    assert meta.dino_center.center.abs().sum() == 0  # the EMA centre is not used
    loss, parts = meta.losses(batch, teacher_temp=0.04)
    loss.backward()
    assert math.isfinite(float(loss))
    with pytest.raises(InputError, match="train.centering"):
        _tiny_meta(train={"centering": "sk"})


def test_device_choice_is_the_shared_one_with_the_torchrun_gpu(monkeypatch):
    from voxelfm.pretrain import trainer

    assert trainer._on_local_rank(torch.device("cuda"), 3) == torch.device("cuda", 3)  # torchrun: LOCAL_RANK
    assert trainer._on_local_rank(torch.device("cuda", 1), 3) == torch.device(
        "cuda", 1
    )  # explicit index kept
    assert trainer._on_local_rank(torch.device("mps"), 3) == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dev, info = trainer._setup_device("auto")
    assert dev.type in ("cpu", "mps") and not info.enabled
    with pytest.raises(InputError, match="no CUDA GPU"):
        trainer._setup_device("cuda")

"""Feature extraction: shapes + geometry of the grid, tiling, cache, progress and cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from voxelfm.errors import CancelledError
from voxelfm.features.cache import FeatureCache
from voxelfm.features.extract import VolumeFeatures, extract_features, forward_prepared
from voxelfm.features.tiling import blend_weights, plan_tiles
from voxelfm.imaging.volume import Volume
from voxelfm.model import BackboneConfig, VoxelFMBackbone


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=2, num_heads=1)).eval()


def _ct(shape=(30, 40, 44), spacing=(1.0, 1.0, 1.0), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    arr = np.full(shape, -1000.0, dtype=np.float32)
    k, j, i = np.indices(shape)
    body = ((j - shape[1] / 2) ** 2 + (i - shape[2] / 2) ** 2) < (0.4 * min(shape[1:])) ** 2
    arr[body] = 40.0
    arr += rng.normal(0, 10, size=shape).astype(np.float32)
    m = np.diag([*spacing, 1.0])
    m[:3, 3] = [-10.0, 20.0, 5.0]
    return Volume(arr, m, name="synthetic")


def test_shapes_and_grid_geometry(model, tmp_path):
    vol = _ct()
    f = extract_features(vol, model, cache=FeatureCache(tmp_path))
    d, h, w = f.grid_shape
    assert f.patch.shape == (d, h, w, 48) and f.cls.shape == (48,) and f.registers.shape == (4, 48)
    assert (d, h, w) == tuple(s // 14 for s in f.prepared_shape)
    # cell (0,0,0) centre = prepared voxel (6.5, 6.5, 6.5); the step between cells = 14 prepared voxels
    centre = f.prepared_to_ras @ np.array([6.5, 6.5, 6.5, 1.0])
    assert np.allclose(f.grid_to_ras @ np.array([0, 0, 0, 1.0]), centre)
    assert np.allclose(f.grid_to_ras[:3, :3], f.prepared_to_ras[:3, :3] * 14)
    # every cell centre lies inside the original volume's physical extent
    corners = np.linalg.inv(vol.ijk_to_ras) @ (f.grid_to_ras @ np.array([w - 1, h - 1, d - 1, 1.0]))
    assert np.all(corners[:3] >= -0.5) and np.all(corners[:3] <= np.array(vol.shape_ijk) - 0.5)


def test_cache_hit_skips_the_model(model, tmp_path):
    vol = _ct()
    cache = FeatureCache(tmp_path)
    a = extract_features(vol, model, cache=cache)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    calls = []
    orig = model.forward_features
    model.forward_features = lambda *a_, **k: calls.append(1) or orig(*a_, **k)
    try:
        b = extract_features(vol, model, cache=cache)
    finally:
        del model.forward_features
    assert calls == []
    assert np.array_equal(a.patch, b.patch) and np.allclose(a.grid_to_ras, b.grid_to_ras)
    # a different volume is a different key
    c = extract_features(_ct(seed=1), model, cache=cache)
    assert len(list(tmp_path.glob("*.npz"))) == 2 and not np.array_equal(a.patch, c.patch)


def test_save_load_round_trip(model, tmp_path):
    f = extract_features(_ct(), model, cache=False)
    f.save(tmp_path / "f.npz")
    g = VolumeFeatures.load(tmp_path / "f.npz")
    assert np.array_equal(f.patch, g.patch) and g.model["sha256"] == f.model["sha256"]
    assert g.prepared_shape == f.prepared_shape


def test_tiling_single_tile_equals_plain_forward(model):
    x = np.random.default_rng(0).normal(size=(28, 42, 56)).astype(np.float32)
    whole = forward_prepared(model, x, max_tokens=10_000, device="cpu", precision="fp32")
    with torch.inference_mode():
        ref = model.forward_features(torch.from_numpy(x)[None, None])
    assert whole.extraction["tiles"] == 1
    assert np.allclose(whole.patch, ref["patch"][0].numpy(), atol=1e-6)


def test_tiling_covers_grid_and_blends(model):
    x = np.random.default_rng(0).normal(size=(42, 56, 70)).astype(np.float32)  # grid 3x4x5 = 60 tokens
    tiled = forward_prepared(model, x, max_tokens=27, overlap=1, device="cpu")
    assert tiled.extraction["tiles"] > 1 and tiled.patch.shape == (3, 4, 5, 48)
    assert np.isfinite(tiled.patch).all()
    whole = forward_prepared(model, x, max_tokens=100, device="cpu")
    # tiles see less context, so features differ, but stay strongly correlated with the whole-volume pass
    a, b = tiled.patch.ravel(), whole.patch.ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8


def test_plan_tiles_cover_every_cell():
    grid = (7, 9, 11)
    tiles = plan_tiles(grid, max_tokens=100, overlap=2)
    seen = np.zeros(grid, dtype=int)
    for t in tiles:
        assert int(np.prod(t.size)) <= 100
        seen[t.slices()] += 1
    assert seen.min() >= 1
    w = blend_weights((5, 5, 5), 2)
    assert w[2, 2, 2] == 1.0 and w[0, 0, 0] < w[1, 1, 1] < 1.0


def test_progress_and_cancel(model):
    x = np.zeros((28, 28, 28), dtype=np.float32)
    seen: list[float] = []
    forward_prepared(model, x, progress=lambda f, m: seen.append(f), device="cpu")
    assert seen and seen == sorted(seen) and 0 <= seen[0] and seen[-1] <= 1.0
    ev = threading.Event()

    def stop_after_first(f, m):
        ev.set()

    with pytest.raises(CancelledError):
        forward_prepared(model, x, progress=stop_after_first, cancel=ev, device="cpu")

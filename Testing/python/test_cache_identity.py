"""The disk feature cache never serves features made another way: another model (id, revision or sha256 of its
weights), another precision, other preprocessing. Each change must cost a real recompute (counted at the
forward pass, not mocked away) and, where the change alters the arithmetic, give other values.

Issue 22: with the model identity or the preprocessing dropped from the cache key, the suite still passed,
though every capability would then be served the features of another model with exit 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import voxelfm.features.extract as extract
from voxelfm.features.cache import FeatureCache
from voxelfm.imaging.preprocess import PreprocessConfig
from voxelfm.imaging.volume import Volume
from voxelfm.model import BackboneConfig, VoxelFMBackbone

torch.set_num_threads(1)


def _backbone(seed: int, ident: str = "tiny", revision: str | None = "r1", sha: str = "a" * 64):
    torch.manual_seed(seed)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=2)).eval()
    model.model_info = {"id": ident, "revision": revision, "sha256": sha}
    return model


@pytest.fixture(scope="module")
def volume() -> Volume:
    rng = np.random.default_rng(3)
    hu = rng.normal(-600, 200, size=(28, 28, 28)).astype(np.float32)
    hu[8:20, 8:20, 8:20] += 700
    return Volume(hu, np.diag([1.0, 1.0, 2.0, 1.0]), "synthetic")  # anisotropic: min_spacing matters


@pytest.fixture()
def runs(monkeypatch):
    """Counts real forward passes (the real function runs)."""
    calls: list[int] = []
    real = extract.forward_prepared

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(extract, "forward_prepared", counted)
    return calls


def _features(volume, model, cache, precision="fp32", preprocess=None):
    return extract.extract_features(
        volume, model, preprocess=preprocess, device="cpu", precision=precision, cache=cache, max_tokens=4096
    )


def test_cache_serves_a_repeat_and_nothing_across_a_model_identity_change(volume, runs, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    base = _backbone(0)
    first = _features(volume, base, cache)
    again = _features(volume, base, cache)
    assert len(runs) == 1, "the same request must be served from the cache"
    np.testing.assert_array_equal(first.patch, again.patch)

    # the same weights under another id / revision / sha256: a recompute each (identity is the contract)
    for change in ({"id": "other"}, {"revision": "r2"}, {"sha256": "b" * 64}):
        info = {**base.model_info, **change}
        model = _backbone(0, info["id"], info["revision"], info["sha256"])
        _features(volume, model, cache)
    assert len(runs) == 4, "a change of model id, revision or sha256 must recompute the features"

    # other weights (what a changed sha256 means): recomputed, and the values are the other model's
    other = _backbone(1, sha="c" * 64)
    got = _features(volume, other, cache)
    assert len(runs) == 5
    assert not np.allclose(got.patch, first.patch), "another model's features must differ"
    np.testing.assert_allclose(got.patch, _features(volume, other, None).patch, rtol=1e-5, atol=1e-5)


def test_cache_serves_nothing_across_precision_or_preprocessing(volume, runs, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    model = _backbone(0)
    fp32 = _features(volume, model, cache, "fp32")
    bf16 = _features(volume, model, cache, "bf16")
    assert len(runs) == 2, "fp32 and bf16 features must never be served for each other"
    assert bf16.extraction["precision"] == "bf16" and fp32.extraction["precision"] == "fp32"
    assert not np.array_equal(bf16.patch, fp32.patch), "bf16 arithmetic gives (slightly) other values"

    default = PreprocessConfig.from_dict(getattr(model, "preprocess_defaults", {}) or {})
    for changed in (
        dataclasses.replace(default, clip_hu=(-200.0, 300.0)),
        dataclasses.replace(default, min_spacing=2.0),
        dataclasses.replace(default, mean=0.0, std=1000.0),
    ):
        runs.clear()
        got = _features(volume, model, cache, "fp32", changed)
        assert len(runs) == 1, f"preprocessing {changed} must recompute the features"
        differs = got.patch.shape != fp32.patch.shape or not np.allclose(got.patch, fp32.patch)
        assert differs, f"preprocessing {changed} must change the features"
        assert got.preprocess == changed.to_dict() and PreprocessConfig.from_dict(got.preprocess) == changed

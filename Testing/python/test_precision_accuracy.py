"""bf16 features agree with fp32 features on real CT (the bundled voxelfm-tiny, a small grid: bf16 is emulated,
hence slow, on CPUs without native bf16). The full-size check (ViT-B, more tokens) is
Testing/Benchmarks/bench_precision_accuracy.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from voxelfm import load_backbone
from voxelfm.features.extract import default_preprocess_for, extract_features
from voxelfm.imaging.io import read_volume


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_patch_tokens_match_fp32_on_real_ct(data_dir):
    torch.set_num_threads(1)
    model = load_backbone("voxelfm-tiny")
    vol = read_volume(data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz")
    cfg = dataclasses.replace(default_preprocess_for(model), max_patches=160)
    f32 = extract_features(vol, model, preprocess=cfg, precision="fp32", device="cpu", cache=False)
    b16 = extract_features(vol, model, preprocess=cfg, precision="bf16", device="cpu", cache=False)
    assert b16.extraction["precision"] == "bf16" and f32.extraction["precision"] == "fp32"
    assert f32.patch.shape == b16.patch.shape and np.prod(f32.grid_shape) >= 100
    cos = _cosine(f32.patch, b16.patch)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99, (cos.mean(), cos.min())
    scale = np.abs(f32.patch).max()
    assert np.abs(f32.patch - b16.patch).max() <= 0.05 * scale
    assert not np.array_equal(f32.patch, b16.patch)  # the bf16 path really ran in bf16

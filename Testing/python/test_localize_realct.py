"""One-shot transfer on a moved copy of a real CT (abdomen_3mm, bundled voxelfm-tiny): within a few mm, and the
left/right landmarks (kidneys, back muscles, psoas) stay on their side in a copy stored flipped left-right."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from voxelfm.features.spec import ModelSpec
from voxelfm.localize.pipeline import LocalisationPipeline, Reference

BENCHMARKS = Path(__file__).resolve().parents[1] / "Benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import localisation_cases as lc  # noqa: E402

PAIRED = (
    "kidney_left",
    "kidney_right",
    "autochthon_left",
    "autochthon_right",
    "iliopsoas_left",
    "iliopsoas_right",
)


def test_transfer_to_a_moved_flipped_copy_lands_within_a_few_mm(data_dir):
    pytest.importorskip("safetensors")
    case = lc.abdomen_case(data_dir, lc.ORGANS + PAIRED)
    moved, _ = lc.moved_copy(case, flip=(True, False, True))  # stored with L-R and S-I reversed
    assert np.linalg.det(moved.volume.direction) > 0 and moved.volume.direction[0, 0] < 0
    result = LocalisationPipeline(ModelSpec("voxelfm-tiny", device="cpu")).transfer(
        moved.volume, [Reference(case.volume, case.points)]
    )
    err = result.distances_to(moved.points)
    print("one-shot on a moved copy of abdomen_3mm (mm):", {k: round(v, 1) for k, v in err.items()})
    print(f"median {np.median(list(err.values())):.2f} mm, mean {np.mean(list(err.values())):.2f} mm")
    assert result.points.names == case.points.names
    assert np.median(list(err.values())) < 3.0
    assert np.mean(np.array(list(err.values())) <= 5.0) >= 0.75
    for name in PAIRED:  # each predicted point nearer its own side's truth than the opposite one
        other = name.replace("_left", "_X").replace("_right", "_left").replace("_X", "_right")
        pred = result.points.position(name)
        assert np.linalg.norm(pred - moved.points.position(name)) < np.linalg.norm(
            pred - moved.points.position(other)
        )

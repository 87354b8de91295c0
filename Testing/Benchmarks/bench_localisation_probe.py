"""Few-shot localisation probe on crops around labelled structures (the reference's crop protocol).

Task: the centre (centroid) of a vertebral body in a 105 mm crop (5 x 5 x 5 patches at 1.5 mm) whose centre is
offset from it by up to a quarter of the side along each axis. Leave one vertebra out over torso_3mm's S1..T12
(train on crops of the other six, test on crops of the held-out one), plus crops of chest_dicom's T11/T12 (another
patient) with the probe trained on all of torso_3mm. Error in mm and in normalised crop units (error / side),
hit rates within 0.05 / 0.1 / 0.2 as the reference reports; baseline "crop centre" = predict the middle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import localisation_cases as lc  # noqa: E402

from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.localize.canonical import centred_grid, resample_onto  # noqa: E402
from voxelfm.localize.pipeline import LocalisationPipeline, Reference  # noqa: E402
from voxelfm.localize.points import PointList  # noqa: E402
from voxelfm.localize.probe import ProbeConfig  # noqa: E402

CELLS, PATCH, SPACING = 5, 14, 1.5
SIDE = CELLS * PATCH * SPACING  # 105 mm
CROPS = 8  # per structure
STEPS = 1500


def crops(volume: Volume, name: str, center: np.ndarray, rng, n: int = CROPS) -> list[Reference]:
    out = []
    for c in range(n):
        offset = rng.uniform(-SIDE / 4, SIDE / 4, 3)
        grid = centred_grid(center + offset, CELLS, PATCH, SPACING)
        crop = resample_onto(volume, grid)
        crop.name = f"{name}_crop{c}"
        out.append(Reference(crop, PointList(["centre"], center[None], name=crop.name)))
    return out


def vertebra_crops(data: Path, rng) -> tuple[dict[str, list[Reference]], dict[str, list[Reference]]]:
    torso = lc.torso_case(data)
    own = {
        n: crops(torso.volume, n, torso.points.position(n), rng)
        for n in torso.points.names
        if n != "vertebrae_T11"
    }
    chest = lc.chest_case(data, ("vertebrae_T11", "vertebrae_T12"))
    other = {n: crops(chest.volume, n, chest.points.position(n), rng) for n in chest.points.names}
    return own, other


def evaluate(pipeline, train: list[Reference], test: list[Reference]) -> np.ndarray:
    probe = pipeline.fit_probe(train, ProbeConfig(feature_spacing_mm=SPACING, steps=STEPS))
    return np.array(
        [np.linalg.norm(pipeline.apply_probe(t.volume, probe).points.ras[0] - t.points.ras[0]) for t in test]
    )


def centre_errors(test: list[Reference]) -> np.ndarray:
    mids = [
        t.volume.ijk_to_ras[:3, :3] @ (np.array(t.volume.shape_ijk) - 1) / 2 + t.volume.ijk_to_ras[:3, 3]
        for t in test
    ]
    return np.array([np.linalg.norm(m - t.points.ras[0]) for m, t in zip(mids, test, strict=True)])


def line(label: str, e: np.ndarray) -> str:
    u = e / SIDE
    return (
        f"| {label} | {len(e)} | {e.mean():.1f} | {np.median(e):.1f} | {u.mean():.3f} | "
        f"{np.mean(u <= 0.05) * 100:.0f}% | {np.mean(u <= 0.1) * 100:.0f}% | {np.mean(u <= 0.2) * 100:.0f}% |"
    )


def probe_tables(data: Path, service, tmp: Path, random_init_model) -> list[str]:
    rng = np.random.default_rng(0)
    own, other = vertebra_crops(data, rng)
    models = {"voxelfm-tiny": "voxelfm-tiny", "random init": random_init_model(tmp)}
    lines = [
        f"Crops {SIDE:.0f} mm ({CELLS}^3 patches at {SPACING} mm), {CROPS} per vertebra, {STEPS} steps; "
        "normalised unit = error / crop side.",
        "",
        "| | crops | mean mm | median mm | mean (norm.) | within 0.05 | within 0.1 | within 0.2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, model in models.items():
        pipe = LocalisationPipeline(ModelSpec(model, device="cpu"), service=service)
        loo = np.concatenate(
            [evaluate(pipe, [c for m, cs in own.items() if m != held for c in cs], own[held]) for held in own]
        )
        lines.append(line(f"{label}: leave one vertebra out (torso)", loo))
        allc = [c for cs in own.values() for c in cs]
        lines.append(
            line(
                f"{label}: trained on torso, tested on chest_dicom",
                evaluate(pipe, allc, [c for cs in other.values() for c in cs]),
            )
        )
        print(lines[-2], "\n", lines[-1], flush=True)
    lines.append(line("crop centre (baseline): torso", centre_errors([c for cs in own.values() for c in cs])))
    lines.append(
        line("crop centre (baseline): chest_dicom", centre_errors([c for cs in other.values() for c in cs]))
    )
    return lines

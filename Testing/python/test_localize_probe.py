"""The few-shot localisation probe: it learns from k scans, its file round-trips, bad uses are refused.

Planted features (``localize_fakes``): each scan has a bright blob at a random place; the landmark is the blob.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from localize_fakes import planted_access

from voxelfm.errors import CheckpointError, InputError
from voxelfm.files.probe_file import read_probe_header
from voxelfm.imaging.volume import Volume
from voxelfm.localize.pipeline import LocalisationPipeline, Reference
from voxelfm.localize.points import PointList
from voxelfm.localize.probe import ProbeConfig
from voxelfm.localize.probe_file import load_localisation_probe, save_localisation_probe
from voxelfm.localize.probe_head import HeadSpec, SoftArgmaxHead, grid_coordinates

SPACING = 2.0


class PlantedPipeline(LocalisationPipeline):
    def __init__(self, seed: int = 0, model: dict | None = None) -> None:
        super().__init__()
        self._access = planted_access(seed=seed, model=model)

    def access(self, spec=None):
        return self._access


def blob_scan(rng, shape=(10, 12, 12)) -> Reference:
    arr = rng.normal(0, 40, shape).astype(np.float32)
    c = rng.integers(3, np.array(shape) - 3)  # k, j, i
    arr[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, c[2] - 2 : c[2] + 2] += 900.0
    m = np.diag([-SPACING, -SPACING, SPACING, 1.0])
    m[:3, 3] = rng.uniform(-50, 50, 3)
    ras = m[:3, :3] @ (c[::-1] - 0.5) + m[:3, 3]  # the blob's centre (its 4 voxels span c-2 .. c+1)
    return Reference(Volume(arr, m, "scan"), PointList(["blob"], ras[None], name="blob points"))


def test_head_matches_the_reference_design():
    head = SoftArgmaxHead(HeadSpec(dim=864, landmarks=1))
    assert head.attn.num_heads == 4
    assert [m.weight.shape for m in head.score if hasattr(m, "weight")] == [(128, 864), (1, 128)]
    coords = grid_coordinates((2, 3, 4))
    assert coords.shape == (24, 3) and coords.min() == -1 and coords.max() == 1
    tokens = torch.zeros(1, 24, 864)
    tokens[0, 5] = 50.0  # one token stands out
    with torch.no_grad():
        head.score[-1].weight.zero_()
        head.score[-1].bias.zero_()
        torch.testing.assert_close(head(tokens, coords[None])[0, 0], coords.mean(0))  # equal scores: the mean
        head.score[-1].weight.fill_(1.0)
        weights = head.weights(tokens, coords[None])[0, 0]
    assert weights.sum().item() == pytest.approx(1.0) and int(weights.argmax()) == 5


def test_probe_learns_from_a_few_scans_and_beats_the_centre(tmp_path):
    rng = np.random.default_rng(0)
    train = [blob_scan(rng) for _ in range(6)]
    test = [blob_scan(rng) for _ in range(3)]
    pipe = PlantedPipeline()
    probe = pipe.fit_probe(train, ProbeConfig(feature_spacing_mm=SPACING, steps=120, lr=5e-3, seed=0))
    errs, centre = [], []
    for case in test:
        res = pipe.apply_probe(case.volume, probe)
        assert res.points.names == ["blob"] and res.method == "probe"
        errs.append(np.linalg.norm(res.points.ras[0] - case.points.ras[0]))
        mid = (
            case.volume.ijk_to_ras[:3, :3] @ ((np.array(case.volume.shape_ijk) - 1) / 2)
            + case.volume.ijk_to_ras[:3, 3]
        )
        centre.append(np.linalg.norm(mid - case.points.ras[0]))
    print(f"probe error {np.round(errs, 1)} mm vs crop centre {np.round(centre, 1)} mm")
    assert np.mean(errs) < 0.5 * np.mean(centre) and np.mean(errs) < 8.0
    # saved through the shared probe format and loaded back: identical predictions
    st, js = save_localisation_probe(probe, tmp_path / "landmarks")
    meta = read_probe_header(tmp_path / "landmarks")
    assert meta["task"] == "localisation" and meta["landmarks"] == ["blob"] and meta["spacing_mm"] == SPACING
    again = load_localisation_probe(js)
    a = pipe.apply_probe(test[0].volume, probe).points.ras
    b = pipe.apply_probe(test[0].volume, again).points.ras
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_probe_bad_uses_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    train = [blob_scan(rng) for _ in range(2)]
    pipe = PlantedPipeline(model={"id": "model-a", "sha256": "a" * 64})
    probe = pipe.fit_probe(train, ProbeConfig(feature_spacing_mm=SPACING, steps=5))
    other = PlantedPipeline(seed=3, model={"id": "model-b", "sha256": "b" * 64})
    with pytest.raises(InputError, match="fitted on 'model-a'.*model in use is 'model-b'"):
        other.apply_probe(train[0].volume, probe)
    with pytest.raises(InputError, match="No annotated scans"):
        pipe.fit_probe([], ProbeConfig())
    empty = Reference(train[0].volume, PointList([], np.zeros((0, 3)), name="nothing"))
    with pytest.raises(InputError, match="holds no points"):
        pipe.fit_probe([empty], ProbeConfig())
    save_localisation_probe(probe, tmp_path / "p")
    meta = json.loads((tmp_path / "p.json").read_text())
    meta["task"] = "classification"
    (tmp_path / "p.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="'classification', but only localisation probes"):
        load_localisation_probe(tmp_path / "p")

"""One implementation per capability: the CLI and the Slicer logic give the same segmentation; one backbone load.

A probe fitted with a non-default feature spacing and post-processing, saved, then applied through
`voxelfm segment --probe` and through ``FewShotSegmentLogic.apply_probe`` on a slicer-core scene must give
voxel-identical labelmaps (the Slicer path once ignored both settings).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mrml_scene import require_slicer_core
from test_segment_core import planted_case

from voxelfm.cli.main import main
from voxelfm.features.service import FeatureService, ModelSpec, feature_service
from voxelfm.imaging.io import read_volume, write_labelmap, write_volume
from voxelfm.segment import PostprocessConfig, SegmentationPipeline, load_segmentation_probe
from voxelfm.segment.labels import select_slices

slicer = require_slicer_core()

from slicer_builders import add_segmentation  # noqa: E402

from VoxelFMLib import FeaturesLogic, FewShotSegmentLogic, segmentation_nodes, volume_nodes  # noqa: E402

SPACING = 2.5  # mm: not the default (features on the image grid)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(0)
    return save_backbone(
        VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2)), tmp_path_factory.mktemp("tiny")
    )


def speckled_case():
    """The planted case plus small bright specks far from the structures: intensity calls them structure, so
    largest-component post-processing changes the result."""
    vol, feats, truth = planted_case()
    for k, j, i in ((5, 5, 5), (34, 6, 48), (6, 42, 30), (33, 42, 50)):
        vol.array[k : k + 3, j : j + 3, i : i + 3] += 120.0
    return vol, feats, truth


def _labelmap_from_segments(result, volume_node) -> np.ndarray:
    """The written segments back as one labelmap with the class values."""
    out = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), np.uint8)
    for sid, cls in zip(result.segment_ids, result.result.classes, strict=True):
        out[segmentation_nodes.segment_mask_on_volume(result.output_node, sid, volume_node)] = cls.value
    return out


def test_cli_and_slicer_logic_apply_a_probe_identically(tmp_path, tiny_model, mrml_scene):
    vol, _, truth = speckled_case()
    ct = write_volume(vol, tmp_path / "ct.nii.gz")
    labels = select_slices(truth, [14, 20, 26])
    lab = write_labelmap(labels, vol.ijk_to_ras, tmp_path / "labels.nii.gz")
    fit_args = ["segment", str(ct), "--labels", str(lab), "--model", str(tiny_model), "--device", "cpu"]
    fit_args += ["--feature-spacing", str(SPACING), "--largest-component", "--fill-holes"]
    fit_args += ["--out", str(tmp_path / "fit.nii.gz"), "--save-probe", str(tmp_path / "probe")]
    assert main([*fit_args, "--class-names", "left,right"]) == 0
    meta = json.loads((tmp_path / "probe.json").read_text())
    assert meta["feature_config"]["feature_spacing_mm"] == SPACING
    assert meta["feature_config"]["postprocess"] == {"largest_component": True, "fill_holes": True}

    # the CLI applies the probe with its own model, spacing and post-processing (no options given)
    assert (
        main(["segment", str(ct), "--probe", str(tmp_path / "probe"), "--out", str(tmp_path / "cli.nrrd")])
        == 0
    )
    cli = read_volume(str(tmp_path / "cli.nrrd"), check_hu=False).array.astype(np.uint8)
    np.testing.assert_array_equal(cli, read_volume(str(tmp_path / "fit.nii.gz"), check_hu=False).array)

    # the Slicer logic on a volume node read by Slicer's own reader
    node = volume_nodes.load_volume_file(mrml_scene, str(ct))
    n_nodes = mrml_scene.GetNumberOfNodes()
    logic = FewShotSegmentLogic(device="cpu")
    result = logic.apply_probe(node, tmp_path / "probe.json")
    assert mrml_scene.GetNumberOfNodes() == n_nodes + 2  # the output segmentation + its display node only
    assert [c.name for c in result.result.classes] == ["left", "right"]
    np.testing.assert_array_equal(_labelmap_from_segments(result, node), cli)

    # both settings matter on this case, so the test would catch a path that ignores either of them
    probe = load_segmentation_probe(tmp_path / "probe")
    pipeline = logic.pipeline
    sides = np.linalg.norm(pipeline._context.features.prepared_to_ras[:3, :3], axis=0)
    assert np.allclose(sides, SPACING, atol=0.05)  # the resampling rounds to whole voxels
    raw = pipeline.apply(vol, probe, postprocess=PostprocessConfig())
    assert not np.array_equal(raw.labelmap, cli)
    probe.config.feature_spacing_mm = None
    assert not np.array_equal(SegmentationPipeline(service=pipeline.service).apply(vol, probe).labelmap, cli)


def test_fit_in_slicer_equals_fit_in_cli(tmp_path, tiny_model, mrml_scene):
    """Painting the same slices in Slicer and fitting gives the CLI's labelmap from the same label file."""
    vol, _, truth = planted_case()
    ct = write_volume(vol, tmp_path / "ct.nii.gz")
    labels = select_slices(truth, [14, 20, 26])
    lab = write_labelmap(labels, vol.ijk_to_ras, tmp_path / "labels.nii.gz")
    out = tmp_path / "fit.nii.gz"
    args = ["segment", str(ct), "--labels", str(lab), "--model", str(tiny_model), "--device", "cpu"]
    assert main([*args, "--feature-spacing", str(SPACING), "--fill-holes", "--out", str(out)]) == 0
    cli = read_volume(str(out), check_hu=False).array.astype(np.uint8)

    from voxelfm.segment import SegmentationConfig

    node = volume_nodes.load_volume_file(mrml_scene, str(ct))
    painted = {name: labels == v for v, name in ((1, "structure_1"), (2, "structure_2"))}
    seg = add_segmentation(mrml_scene, painted, vol.ijk_to_ras)
    config = SegmentationConfig(feature_spacing_mm=SPACING, postprocess=PostprocessConfig(fill_holes=True))
    result = FewShotSegmentLogic(model=str(tiny_model), device="cpu", config=config).run(node, seg)
    np.testing.assert_array_equal(_labelmap_from_segments(result, node), cli)


def test_backbone_is_loaded_once_for_two_module_logics(tmp_path, tiny_model, mrml_scene):
    vol, _, truth = planted_case()
    node = volume_nodes.create_volume_node(mrml_scene, vol)
    seg = add_segmentation(mrml_scene, {"a": select_slices(truth == 1, [20]) == 1}, vol.ijk_to_ras)
    service = feature_service()
    service.release()
    loads = service.loads
    spec = ModelSpec(str(tiny_model), device="cpu")
    features = FeaturesLogic(model=str(tiny_model), device="cpu")  # the Features module's logic
    segment = FewShotSegmentLogic(model=str(tiny_model), device="cpu")  # the Segment module's logic
    features.extract(node, cache=False)
    segment.run(node, seg)
    assert service.loads == loads + 1 and segment.pipeline.service is features.service is service
    assert service.loaded() == [(str(tiny_model.resolve()), "cpu", "auto")]
    assert service.release(spec) == 1 and service.loaded() == []


def test_service_keys_by_model_device_and_precision():
    calls = []

    def loader(reference, config=None, device="cpu"):
        calls.append((reference, device))
        return torch.nn.Linear(1, 1)

    service = FeatureService(loader=loader)
    a = service.backbone(ModelSpec("m1", device="cpu"))
    assert service.backbone(ModelSpec("m1", device="cpu", max_tokens=64)) is a  # the budget is not a model
    assert service.backbone(ModelSpec("m1", device="cpu", precision="bf16")) is not a
    service.backbone(ModelSpec("m2", device="cpu"))
    assert calls == [("m1", "cpu"), ("m1", "cpu"), ("m2", "cpu")] and service.loads == 3
    assert service.release() == 3 and service.loaded() == []

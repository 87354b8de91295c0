"""Every Slicer logic has one shape (docs/ARCHITECTURE.md): built as ``Logic(model, device, precision,
max_tokens)`` around its capability's pipeline, with the steps ``prepare`` / ``predict`` / ``write`` and the
one-call ``run``; and a logic hands its pipeline the core's own request type (the one the CLI builds from files),
so label preparation and the features request exist once."""

from __future__ import annotations

import importlib
import inspect
import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

from slicer_builders import CopyPaintPipeline, add_segmentation, painted_masks  # noqa: E402

import VoxelFMLib  # noqa: E402
from voxelfm.capabilities import CAPABILITIES  # noqa: E402
from voxelfm.features.request import FeaturesRequest  # noqa: E402
from voxelfm.features.service import FeaturePipeline  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.features.volume_features import VolumeFeatures  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.segment.request import SegmentationApplyRequest, SegmentationFitRequest  # noqa: E402
from VoxelFMLib.capability_logic import CapabilityLogic  # noqa: E402
from VoxelFMLib.volume_nodes import node_ijk_to_ras  # noqa: E402

pytestmark = pytest.mark.slicer

LOGICS = [c for c in CAPABILITIES if c.logic]
STEPS = ("prepare", "predict", "write", "run")


@pytest.mark.parametrize("capability", LOGICS, ids=lambda c: c.logic)
def test_every_logic_is_built_the_same_way_and_names_its_steps_the_same_way(capability):
    cls = getattr(VoxelFMLib, capability.logic)
    assert issubclass(cls, CapabilityLogic)
    assert [s for s in STEPS if not callable(getattr(cls, s, None))] == [], "steps missing"
    assert {"progress", "cancel"} <= set(
        inspect.signature(cls.predict).parameters
    )  # the worker thread's step
    positional = cls("voxelfm-tiny", "cpu", "fp32", 4096)
    keywords = cls(model="voxelfm-tiny", device="cpu", precision="fp32", max_tokens=4096)
    assert positional.spec == keywords.spec == ModelSpec("voxelfm-tiny", "cpu", "fp32", 4096)
    module, _, name = capability.pipeline.partition(":")
    pipeline_type = getattr(importlib.import_module(f"voxelfm.{module}"), name)
    assert isinstance(positional.pipeline, pipeline_type), type(positional.pipeline)  # the table's pipeline
    assert positional.pipeline.spec == positional.spec


class RecordingSegmentation(CopyPaintPipeline):
    """The fake segmentation pipeline, keeping what the logic handed it."""

    def __init__(self):
        self.received = []

    def run_fit(self, request, *args, **kwargs):
        self.received.append(request)
        return super().run_fit(request, *args, **kwargs)

    def run_apply(self, request, *args, **kwargs):
        self.received.append(request)
        return super().run_apply(request, *args, **kwargs)


def test_the_segment_logic_hands_the_pipeline_the_clis_requests(mrml_scene, volume_node):
    liver, spleen = painted_masks()
    geometry = node_ijk_to_ras(volume_node)
    seg = add_segmentation(mrml_scene, {"liver": liver, "spleen": spleen}, geometry, [(1, 0, 0), (0, 0, 1)])
    pipeline = RecordingSegmentation()
    logic = VoxelFMLib.FewShotSegmentLogic(pipeline=pipeline)
    result = logic.run(volume_node, seg, mode="slices")
    (request,) = pipeline.received
    assert type(request) is SegmentationFitRequest
    # the label rule is the CLI's: the same paint as a label file with --painted-slices prepares the same labels
    paint = np.zeros(liver.shape, np.uint8)
    paint[liver], paint[spleen] = 1, 2
    as_file = SegmentationFitRequest(request.volume, Volume(paint, geometry), painted_slices=True)
    labels = request.prepared_labels()
    np.testing.assert_array_equal(labels.array, as_file.prepared_labels().array)
    # ... and the classes are the painted segments, with their colours
    classes = request.classes(labels)
    assert [(c.value, c.name, c.color) for c in classes] == [
        (1, "liver", (1, 0, 0)),
        (2, "spleen", (0, 0, 1)),
    ]
    assert [s.name for s in result.stats] == ["liver", "spleen"]
    # all but the arrays travel as plain data (the server's form)
    back = SegmentationFitRequest.from_settings(
        request.volume, request.labels, json.loads(json.dumps(request.settings()))
    )
    assert back.settings() == request.settings() and back.classes(labels) == classes

    logic.apply_probe(volume_node, result.probe)
    assert type(pipeline.received[-1]) is SegmentationApplyRequest
    assert pipeline.received[-1].probe is result.probe


class RecordingFeatures(FeaturePipeline):
    """A feature pipeline that keeps its requests and answers with a small synthetic grid (no backbone)."""

    received: list

    def run(self, request, progress=None, cancel=None):
        self.received.append(request)
        return VolumeFeatures(
            cls=np.zeros(8, np.float32),
            registers=np.zeros((4, 8), np.float32),
            patch=np.random.default_rng(0).normal(size=(2, 3, 3, 8)).astype(np.float32),
            grid_to_ras=request.volume.ijk_to_ras @ np.diag([3.0, 3.0, 3.0, 1.0]),
        )


def test_the_features_logic_hands_the_pipeline_the_clis_request(mrml_scene, volume_node):
    pipeline = RecordingFeatures(service=object())
    pipeline.received = []
    logic = VoxelFMLib.FeaturesLogic(pipeline=pipeline)
    output = logic.run(volume_node, cache=False)
    (request,) = pipeline.received
    assert type(request) is FeaturesRequest and request.cache is False and request.preprocess is None
    np.testing.assert_array_equal(request.volume.array, slicer.util.arrayFromVolume(volume_node))
    assert (
        output.pca_node is not None
        and output.pca_node.GetTransformNodeID() == volume_node.GetTransformNodeID()
    )
    assert logic.extract(volume_node).patch.shape == (2, 3, 3, 8)  # the documented one-call form
    assert type(pipeline.received[-1]) is FeaturesRequest and pipeline.received[-1].cache is True

"""Features of a volume node through the core's feature pipeline, and their PCA picture as a colour volume.

    logic = FeaturesLogic(model="voxelfm-tiny", device="cpu")
    features = logic.extract(volume_node)               # prepare + predict
    pca_node = logic.show_pca(features, volume_node)    # the colour volume over the CT

Extraction is the core's ``FeaturePipeline.run`` (disk-cached by volume content), handed the same
``FeaturesRequest`` `voxelfm features` builds from a file; this class only turns nodes into arrays and back. The
steps of every logic: ``prepare`` (main thread: copy the CT; labelmaps and colour volumes are refused) ->
``predict`` (any thread) -> ``write`` (main thread: the PCA colour volume); ``run`` does all three.

Features are of the CT's voxels in its own frame (``grid_to_ras`` before any parent transform): moving the CT
with a transform does not change them, and the PCA colour volume is put under the CT's transform, so it
follows the CT (harden the transform first to save features in the moved frame).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxelfm.client.capabilities import remote_features
from voxelfm.features.request import FeaturesRequest
from voxelfm.features.service import FeaturePipeline, FeatureService, ModelSpec
from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.progress import CancelFlag, ProgressFn

from .capability_logic import CapabilityLogic, direct
from .feature_display import show_features_pca
from .volume_nodes import check_input_volume, ct_volume_from_node, volume_key


@dataclass
class FeaturesInputs:
    """The pipeline's request, detached from MRML, and the node it was read from."""

    request: FeaturesRequest  # handed to FeaturePipeline.run unchanged (the CLI's type too)
    volume_node_id: str
    volume_key: str  # node state when copied: a server logic hashes the voxels once per state


@dataclass
class FeaturesOutput:
    features: VolumeFeatures
    pca_node: Any = None  # the colour volume shown over the CT (None when not asked for)


class FeaturesLogic(CapabilityLogic):
    """``FeaturesLogic(model, device, precision, max_tokens)`` like every capability logic; its pipeline is the
    core's ``FeaturePipeline`` on the shared feature service (``service=`` injects another, e.g. in tests)."""

    def build_pipeline(self, spec: ModelSpec, service: FeatureService | None) -> FeaturePipeline:
        return FeaturePipeline(spec, service=service)

    @property
    def service(self) -> FeatureService:
        return self.pipeline.service

    def prepare(self, volume_node: Any, cache: bool = True) -> FeaturesInputs:
        """The features request of a volume node (main thread: its voxels copied); ``cache=False`` skips the
        disk cache."""
        volume = ct_volume_from_node(volume_node, "the CT")
        return FeaturesInputs(
            FeaturesRequest(volume, cache=cache), volume_node.GetID(), volume_key(volume_node)
        )

    def predict(
        self, inputs: FeaturesInputs, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> VolumeFeatures:
        """The features (safe on the worker thread: no MRML)."""
        request = inputs.request
        if self.server is not None:
            volume = self.server.known(request.volume, inputs.volume_key)
            options = dataclasses.replace(self.pipeline.options, cache=request.cache)
            return remote_features(self.server.remote(self.spec, options, progress, cancel), volume)
        return self.pipeline.run(request, progress, cancel)

    def write(
        self, inputs: FeaturesInputs, features: VolumeFeatures, volume_node: Any, pca: bool = True
    ) -> FeaturesOutput:
        """The PCA colour volume over the CT (main thread; none with ``pca=False``)."""
        check_input_volume(volume_node, inputs.volume_node_id, "the features were extracted", "extract again")
        return FeaturesOutput(features, self.show_pca(features, volume_node) if pca else None)

    def run(
        self,
        volume_node: Any,
        cache: bool = True,
        show_pca: bool = True,
        in_worker: Callable[..., Any] = direct,
    ) -> FeaturesOutput:
        """The "Extract" button: prepare (main thread), predict (``in_worker``), write (main thread)."""
        inputs = self.prepare(volume_node, cache)
        return self.write(inputs, in_worker(self.predict, inputs), volume_node, show_pca)

    def extract(
        self,
        volume_node: Any,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache: bool = True,
    ) -> VolumeFeatures:
        """Features of a volume node, all on the calling thread (scripts, tests): prepare + predict."""
        return self.predict(self.prepare(volume_node, cache), progress, cancel)

    def show_pca(self, features: VolumeFeatures, volume_node: Any, name: str | None = None) -> Any:
        """A new colour volume of the first 3 principal components over the CT (uniquely named), under the CT's
        parent transform: it stays on the CT wherever the transform moves it."""
        scene = volume_node.GetScene()
        name = scene.GenerateUniqueName(name or f"{volume_node.GetName()} VoxelFM PCA")
        node = show_features_pca(scene, features, name)
        node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
        return node

    @staticmethod
    def describe(features: VolumeFeatures) -> str:
        d, h, w, c = features.patch.shape
        model = (features.model or {}).get("id", "?")
        return f"{d}x{h}x{w} patch grid, {c} channels, model {model}"

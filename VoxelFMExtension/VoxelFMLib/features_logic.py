"""Features of a volume node with the shared model service, and their PCA picture as a colour volume.

Extraction is the core's (``FeatureService.features``: disk-cached by volume content); this class only turns
nodes into arrays. Copy the node on the main thread (``ct_volume_from_node``: labelmaps and colour volumes are
refused), then ``extract_volume`` may run on the worker thread.

Features are of the CT's voxels in its own frame (``grid_to_ras`` before any parent transform): moving the CT
with a transform does not change them, and the PCA colour volume is put under the CT's transform, so it
follows the CT (harden the transform first to save features in the moved frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxelfm.client.capabilities import remote_features
from voxelfm.features.service import FeatureService, ModelSpec, feature_service
from voxelfm.features.spec import FeatureOptions
from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn

from .capability_logic import CapabilityLogic
from .volume_nodes import ct_volume_from_node, volume_key


def direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run the slow step on the calling thread (the module passes its worker-thread runner instead)."""
    return fn(*args, **kwargs)


@dataclass
class FeaturesOutput:
    features: VolumeFeatures
    pca_node: Any = None  # the colour volume shown over the CT (None when not asked for)


class FeaturesLogic(CapabilityLogic):
    """``FeaturesLogic(model, device, precision, max_tokens)`` like every capability logic; its "pipeline" is
    the shared feature service (``service=`` injects another, e.g. in tests)."""

    def build_pipeline(self, spec: ModelSpec, service: FeatureService | None) -> FeatureService:
        return service if service is not None else feature_service()

    @property
    def service(self) -> FeatureService:
        return self.pipeline

    def extract_volume(
        self,
        volume: Volume,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache: bool = True,
        state: str | None = None,
    ) -> VolumeFeatures:
        """Features of an already copied volume (safe on the worker thread); ``state`` (``volume_key`` of its
        node) lets a server logic hash the voxels once per node state."""
        if self.server is not None:
            if state is not None:
                volume = self.server.known(volume, state)
            options = FeatureOptions(cache=cache)
            return remote_features(self.server.client, volume, self.spec, options, progress, cancel)
        return self.service.features(volume, self.spec, cache=cache, progress=progress, cancel=cancel)

    def extract(
        self,
        volume_node: Any,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache=True,
    ) -> VolumeFeatures:
        """Features of a volume node, all on the calling thread (scripts, tests)."""
        volume = ct_volume_from_node(volume_node, "the CT")
        return self.extract_volume(volume, progress, cancel, cache, volume_key(volume_node))

    def run(
        self,
        volume_node: Any,
        cache: bool = True,
        show_pca: bool = True,
        in_worker: Callable[..., Any] = direct,
    ) -> FeaturesOutput:
        """The "Extract" button: copy the CT (main thread), extract (``in_worker``), show the PCA (main thread)."""
        volume = ct_volume_from_node(volume_node, "the CT")
        features = in_worker(self.extract_volume, volume, cache=cache, state=volume_key(volume_node))
        pca = self.show_pca(features, volume_node) if show_pca else None
        return FeaturesOutput(features, pca)

    def show_pca(self, features: VolumeFeatures, volume_node: Any, name: str | None = None) -> Any:
        """A new colour volume of the first 3 principal components over the CT (uniquely named), under the CT's
        parent transform: it stays on the CT wherever the transform moves it."""
        from .feature_display import show_features_pca

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

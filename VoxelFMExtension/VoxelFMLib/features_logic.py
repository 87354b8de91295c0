"""Features of a volume node with the shared model service, and their PCA picture as a colour volume.

Extraction is the core's (``FeatureService.features``: disk-cached by volume content); this class only turns
nodes into arrays. Copy the node on the main thread (``volume_from_node``), then ``extract_volume`` may run on
the worker thread.
"""

from __future__ import annotations

from typing import Any

from voxelfm.features.service import FeatureService, ModelSpec, feature_service
from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn

from .model_service import checked_spec
from .volume_nodes import volume_from_node


class FeaturesLogic:
    def __init__(self, spec: ModelSpec | None = None, service: FeatureService | None = None) -> None:
        self.spec = checked_spec(spec or ModelSpec())
        self.service = service or feature_service()

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> FeaturesLogic:
        """The logic for a model panel's choice (the same constructor PerModel.of uses for every logic)."""
        return cls(spec)

    def extract_volume(
        self,
        volume: Volume,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache: bool = True,
    ) -> VolumeFeatures:
        """Features of an already copied volume (safe on the worker thread)."""
        return self.service.features(volume, self.spec, cache=cache, progress=progress, cancel=cancel)

    def extract(
        self,
        volume_node: Any,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache=True,
    ) -> VolumeFeatures:
        """Features of a volume node, all on the calling thread (scripts, tests)."""
        return self.extract_volume(volume_from_node(volume_node), progress, cancel, cache)

    def show_pca(self, features: VolumeFeatures, volume_node: Any, name: str | None = None) -> Any:
        """A new colour volume of the first 3 principal components, aligned with the CT (uniquely named)."""
        from .feature_display import show_features_pca

        scene = volume_node.GetScene()
        name = scene.GenerateUniqueName(name or f"{volume_node.GetName()} VoxelFM PCA")
        return show_features_pca(scene, features, name)

    @staticmethod
    def describe(features: VolumeFeatures) -> str:
        d, h, w, c = features.patch.shape
        model = (features.model or {}).get("id", "?")
        return f"{d}x{h}x{w} patch grid, {c} channels, model {model}"

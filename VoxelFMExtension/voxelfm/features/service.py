"""One model and feature service per process: a backbone is loaded once and shared by every command and module.

WHY: a ViT-B checkpoint is ~440 MB and takes seconds to load and verify; the Slicer modules (features,
segmentation, retrieval, ...) and the CLI pipelines all ask for "this model on this device at this precision".
The service keys loaded backbones by (resolved model, device, precision) and releases them on request.
``FeaturePipeline`` / ``ConfiguredPipeline`` are the bases of the capability pipelines that use it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from ..device import pick_device
from ..hub.download import resolve_default_model
from ..imaging.preprocess import PreprocessConfig
from ..imaging.volume import Volume
from ..lazy import ProcessWide
from ..model import loading
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .extract import default_preprocess_for, extract_features
from .request import FeaturesRequest
from .spec import FeatureOptions, ModelSpec, is_model_path
from .volume_features import VolumeFeatures

log = logging.getLogger(__name__)


def resolve_reference(model: str) -> tuple[str, str]:
    """(registry id or absolute path, why): the default policy for "", a normalised path for a path."""
    reference = (model or "").strip()
    if not reference:
        resolved, why = resolve_default_model()
        return resolved.id, why
    path = Path(reference).expanduser()
    if path.exists() or is_model_path(reference):
        return str(path.resolve()), "chosen by the user"
    return reference, "chosen by the user"


Loader = Callable[..., torch.nn.Module]


class FeatureService:
    """Loaded backbones (shared) + feature extraction with the disk cache behind it."""

    def __init__(self, loader: Loader | None = None) -> None:
        self._loader = loader
        self._models: dict[tuple[str, str, str, str | None], torch.nn.Module] = {}
        self._lock = threading.Lock()
        self.loads = 0  # backbones actually loaded from disk by this service
        self._default: tuple[str, str] | None = None  # the default policy's answer, until release()

    def resolve(self, spec: ModelSpec) -> tuple[str, str]:
        """(model reference, why it was chosen); the default policy's answer is kept until ``release()``."""
        if not spec.model and self._default is not None:
            return self._default
        reference, why = resolve_reference(spec.model)
        if not spec.model:
            self._default = (reference, why)
        return reference, why

    def _key(self, spec: ModelSpec) -> tuple[tuple[str, str, str, str | None], str]:
        reference, why = self.resolve(spec)
        return (reference, str(pick_device(spec.device)), spec.precision, spec.config), why

    def backbone(self, spec: ModelSpec) -> torch.nn.Module:
        """The backbone for ``spec``, loaded on first use only."""
        key, why = self._key(spec)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                loader = self._loader or loading.load_backbone  # looked up now: tests spy on it
                log.info("model: %s (%s)", key[0], why)
                model = loader(key[0], config=key[3], device=key[1])
                self._models[key] = model
                self.loads += 1
            return model

    def features(
        self,
        volume: Volume,
        spec: ModelSpec,
        preprocess: Any = None,
        overlap: int = 2,
        cache: bool = True,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> VolumeFeatures:
        """Features of ``volume`` (served from the disk cache when the same request was made before)."""
        progress = progress or no_progress
        check_cancel(cancel)
        progress(0.0, "loading the model")
        model = self.backbone(spec)
        check_cancel(cancel)
        return extract_features(
            volume,
            model,
            preprocess=preprocess,
            max_tokens=spec.max_tokens,
            overlap=overlap,
            device=spec.device,
            precision=spec.precision,
            progress=progress,
            cancel=cancel,
            cache=cache,
        )

    def release(self, spec: ModelSpec | None = None) -> int:
        """Forget one loaded backbone (or all): frees its memory once nothing else holds it. Returns how many."""
        with self._lock:
            if spec is None:
                n = len(self._models)
                self._models.clear()
                self._default = None
            else:
                n = int(self._models.pop(self._key(spec)[0], None) is not None)
        if n and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return n

    def loaded(self) -> list[tuple[str, str, str]]:
        """(model, device, precision) of every backbone held now."""
        with self._lock:
            return [k[:3] for k in self._models]


_SERVICE = ProcessWide(FeatureService)


def feature_service() -> FeatureService:
    """The process-wide service (created on first use)."""
    return _SERVICE.get()


class FeaturePipeline:
    """What every user of the service holds (the segment, localize, retrieval and report pipelines, the VLM
    reporter): the model it asks for, how features are extracted, and the service they come from (the
    process-wide one unless the caller passes its own)."""

    def __init__(
        self,
        spec: ModelSpec | None = None,
        options: FeatureOptions | None = None,
        service: FeatureService | None = None,
    ) -> None:
        self.spec = spec or ModelSpec()
        self.options = options or FeatureOptions()
        self.service = service or feature_service()

    def volume_features(
        self,
        volume: Volume,
        spec: ModelSpec | None = None,
        preprocess: PreprocessConfig | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        cache: bool = True,
    ) -> VolumeFeatures:
        """Features of ``volume`` from the service, with this pipeline's overlap and cache choice (``spec``:
        ours unless given; ``preprocess``: the model's own unless given; ``cache=False`` skips the disk cache)."""
        return self.service.features(
            volume,
            spec or self.spec,
            preprocess,
            self.options.overlap,
            cache and self.options.cache,
            progress,
            cancel,
        )

    def run(
        self, request: FeaturesRequest, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> VolumeFeatures:
        """A features request (the CLI's and the server's form) with our model and options."""
        preprocess = self.preprocess_for(self.spec, request.preprocess)
        return self.volume_features(request.volume, None, preprocess, progress, cancel, request.cache)

    def preprocess_for(self, spec: ModelSpec, recorded: dict[str, Any] | None) -> PreprocessConfig:
        """The preprocessing a probe or run recorded (applied exactly as it was fitted), else the model's own
        with our options: the one reading of a preprocessing record (``PreprocessConfig.to_dict`` writes it)."""
        if recorded:
            return PreprocessConfig.from_dict(recorded)
        return self.model_preprocess(spec)

    def model_preprocess(self, spec: ModelSpec) -> PreprocessConfig:
        """The model's own preprocessing with our background crop, patch budget and orientation."""
        cfg = default_preprocess_for(self.service.backbone(spec))
        return dataclasses.replace(
            cfg,
            crop_background=self.options.crop_background,
            max_patches=self.options.max_patches,
            orientation=self.options.orientation,
        )


C = TypeVar("C")


class ConfiguredPipeline(FeaturePipeline, Generic[C]):
    """A pipeline built as ``Pipeline(spec, config, options, service)`` (every capability pipeline):
    ``config_type()`` gives the config when the caller passes none."""

    config_type: Callable[[], C]

    def __init__(
        self,
        spec: ModelSpec | None = None,
        config: C | None = None,
        options: FeatureOptions | None = None,
        service: FeatureService | None = None,
    ) -> None:
        super().__init__(spec, options, service)
        self.config: C = config if config is not None else self.config_type()

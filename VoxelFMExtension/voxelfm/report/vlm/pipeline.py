"""Train the report model from a manifest, and draft with a trained run (the ``ReportGenerator`` of the draft).

Features come from the shared FeatureService like every other pipeline; the run records the backbone and
the preprocessing so that drafting uses the same ones (a different backbone is refused).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ...device import pick_device
from ...features.extract import default_preprocess_for, model_identity
from ...features.identity import backbone_record
from ...features.service import ConfiguredPipeline, FeatureService, feature_service
from ...features.spec import FeatureOptions, ModelSpec
from ...imaging.io import read_volume
from ...imaging.volume import Volume
from ...probes.pipeline import check_probe_backbone
from ...progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .config import GenerationConfig, HeadConfig, TrainConfig
from .inputs import VisualTokens, visual_tokens
from .language_model import hidden_size, load_language_model
from .model import ReportModel
from .resampler import ReportHead
from .run_files import load_run, save_run
from .train import train_report_model

FEATURES_SHARE = 0.3  # progress spent on features before training


def _device(spec: ModelSpec) -> str:
    return str(pick_device(spec.device))


def _features(
    service: FeatureService,
    volume: Volume,
    spec: ModelSpec,
    preprocess: Any,
    options: FeatureOptions,
    progress: ProgressFn,
    cancel: CancelFlag | None,
) -> VisualTokens:
    feats = service.features(
        volume,
        spec,
        preprocess=preprocess,
        overlap=options.overlap,
        cache=options.cache,
        progress=progress,
        cancel=cancel,
    )
    return visual_tokens(feats)


def training_tokens(
    images: list[str | os.PathLike | Volume],
    spec: ModelSpec,
    options: FeatureOptions,
    service: FeatureService,
    progress: ProgressFn,
    cancel: CancelFlag | None,
) -> tuple[list[VisualTokens], Any, Any]:
    """(visual tokens of every image, the backbone, the preprocessing used): what training reads."""
    backbone = service.backbone(spec)
    preprocess = dataclasses.replace(
        default_preprocess_for(backbone),
        crop_background=options.crop_background,
        max_patches=options.max_patches,
    )
    visual = []
    for n, image in enumerate(images):
        check_cancel(cancel)
        volume = image if isinstance(image, Volume) else read_volume(str(image))
        sub = lambda f, m, n=n: progress(FEATURES_SHARE * (n + f) / len(images), m)  # noqa: E731
        visual.append(_features(service, volume, spec, preprocess, options, sub, cancel))
    return visual, backbone, preprocess


def train_report_run(
    images: list[str | os.PathLike | Volume],
    reports: list[str],
    lm: str | os.PathLike,
    out: str | os.PathLike,
    spec: ModelSpec | None = None,
    head: HeadConfig | None = None,
    train: TrainConfig | None = None,
    tokenizer: str | os.PathLike | None = None,
    options: FeatureOptions | None = None,
    service: FeatureService | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> tuple[Path, dict[str, list[float]]]:
    """Features of every image -> two-stage training -> a saved run at ``out``; returns (run, loss history)."""
    spec, options, service = spec or ModelSpec(), options or FeatureOptions(), service or feature_service()
    head, train = head or HeadConfig(), train or TrainConfig()
    progress = progress or no_progress
    device = _device(spec)
    language_model, tok, reference = load_language_model(lm, tokenizer, device)  # fail before any features
    visual, backbone, preprocess = training_tokens(images, spec, options, service, progress, cancel)
    dim = int(visual[0].tokens.shape[1])
    model = ReportModel(
        ReportHead(dim, hidden_size(language_model), head).to(device), language_model, tok, head
    )
    rest = lambda f, m: progress(FEATURES_SHARE + (1 - FEATURES_SHARE) * f, m)  # noqa: E731
    history = train_report_model(model, visual, reports, train, rest, cancel)
    meta = {
        "head": head.to_dict(),
        "train": train.to_dict(),
        "lm": {"source": reference, "class": type(language_model).__name__},
        "feature_dim": dim,
        "backbone": backbone_record(model_identity(backbone)),
        "preprocess": preprocess.to_dict(),
        "n_cases": len(reports),
        "history": history,
    }
    return save_run(model, out, meta), history


class VLMReporter(ConfiguredPipeline[GenerationConfig]):
    """A trained run as the draft's ``ReportGenerator``: features of a volume -> generated report text."""

    config_type = GenerationConfig

    def __init__(
        self,
        run: str | os.PathLike,
        spec: ModelSpec | None = None,
        generation: GenerationConfig | None = None,
        options: FeatureOptions | None = None,
        service: FeatureService | None = None,
    ) -> None:
        super().__init__(spec, generation, options, service)
        self.run = Path(run)
        self.model, self.meta = load_run(self.run, _device(self.spec))
        self.spec = self.spec.for_record(self.meta)  # the run's own backbone unless one is named

    def generate(
        self, volume: Volume, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> str:
        progress = progress or no_progress
        check_probe_backbone(self.meta, model_identity(self.service.backbone(self.spec)))
        preprocess = self.preprocess_for(self.spec, self.meta.get("preprocess"))
        tokens = _features(
            self.service,
            volume,
            self.spec,
            preprocess,
            self.options,
            lambda f, m: progress(0.7 * f, m),
            cancel,
        )
        check_cancel(cancel)
        progress(0.7, "generating the report")
        return self.model.generate(tokens, self.config)

    def evidence(self) -> dict[str, Any]:
        return {
            "kind": "vlm",
            "run": str(self.run),
            "lm": (self.meta.get("lm") or {}).get("source", ""),
            "strategy": self.config.strategy,
        }

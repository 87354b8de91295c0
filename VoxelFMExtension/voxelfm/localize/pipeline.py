"""Localisation end to end, the one implementation behind `voxelfm localize` / `fit-probe --task localisation`
and the Slicer logic.

    pipeline = LocalisationPipeline(ModelSpec("voxelfm-tiny"))
    result = pipeline.transfer(target, [Reference(ref_volume, ref_points)])   # one-shot, any number of refs
    probe = pipeline.fit_probe([(volume, points), ...])                       # few-shot probe
    result = pipeline.apply_probe(target, probe)

Backbones and features come from the shared feature service (loaded once per process). The pipeline owns
what must agree between references and targets: the backbone (checked), the patient-aligned grids, the
spacings and refinement settings (recorded in each template and probe).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError
from ..features.extract import default_preprocess_for, model_identity
from ..features.identity import backbone_record, check_backbone
from ..features.service import ConfiguredPipeline
from ..features.spec import ModelSpec
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .access import FeatureAccess
from .canonical import canonical_volume
from .config import TransferConfig
from .points import PointList, check_points_inside
from .probe import LocalisationProbe, ProbeConfig
from .probe_fit import fit_localisation_probe
from .result import LocalisationResult
from .template import LandmarkTemplate, build_template, coarse_spacing_for
from .transfer import check_templates, transfer


@dataclass
class Reference:
    """A reference scan with its named points (RAS)."""

    volume: Volume
    points: PointList


class LocalisationPipeline(ConfiguredPipeline[TransferConfig]):
    """``LocalisationPipeline(spec, config, options, service)``; every argument optional."""

    config_type = TransferConfig

    def access(self, spec: ModelSpec | None = None) -> FeatureAccess:
        """Features through the shared service with the model's own preprocessing (no background crop: the
        patient-aligned grid already decides what is seen)."""
        spec = spec or self.spec
        model = self.service.backbone(spec)
        pre = dataclasses.replace(default_preprocess_for(model), crop_background=False, max_patches=None)

        def extract(volume: Volume, cache: bool):
            return self.volume_features(volume, spec, pre, cache=cache)

        return FeatureAccess(extract, int(model.patch_size), float(pre.min_spacing), model_identity(model))

    # ---- one-shot

    def templates(
        self,
        references: Sequence[Reference | LandmarkTemplate],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        access: FeatureAccess | None = None,
    ) -> list[LandmarkTemplate]:
        """Templates of the references (saved templates are used as they are; new ones share the spacing of
        the first template)."""
        progress = progress or no_progress
        access = access or self.access()
        out: list[LandmarkTemplate] = []
        for n, ref in enumerate(references):
            check_cancel(cancel)
            if isinstance(ref, LandmarkTemplate):
                out.append(ref)
                continue
            spacing = out[0].coarse_spacing if out else None
            out.append(
                build_template(
                    ref.volume,
                    ref.points,
                    access,
                    self.config,
                    spacing,
                    lambda f, m, n=n: progress((n + f) / len(references), m),
                    cancel,
                )
            )
        check_templates(out, access.model)
        return out

    def transfer(
        self,
        target: Volume,
        references: Sequence[Reference | LandmarkTemplate],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> LocalisationResult:
        """The references' named points in ``target`` (one per distinct name), with a confidence each."""
        progress = progress or no_progress
        access = self.access()
        templates = self.templates(references, lambda f, m: progress(0.5 * f, m), cancel, access)
        return transfer(target, templates, access, lambda f, m: progress(0.5 + 0.5 * f, m), cancel)

    # ---- few-shot probe

    def fit_probe(
        self,
        cases: Sequence[Reference],
        config: ProbeConfig | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> LocalisationProbe:
        """The soft-argmax probe fitted on k annotated scans (features on patient-aligned grids, cached)."""
        progress = progress or no_progress
        cfg = config or ProbeConfig()
        if not cases:
            raise InputError("No annotated scans to fit the localisation probe on.")
        for n, case in enumerate(cases):
            what = f"case {n + 1} ('{case.points.name or case.volume.name}')"
            case.points.require_points(what).require_unique_names(what)
            check_points_inside(case.volume, case.points, what)
        access = self.access()
        budget = TransferConfig(feature_spacing_mm=cfg.feature_spacing_mm, coarse_tokens=cfg.max_tokens)
        spacing = coarse_spacing_for(cases[0].volume, access, budget)
        feats = []
        for n, case in enumerate(cases):
            check_cancel(cancel)
            progress(0.5 * n / len(cases), f"features of case {n + 1}/{len(cases)}")
            feats.append(access.features(canonical_volume(case.volume, spacing), True))
        return fit_localisation_probe(
            [(f, c.points) for f, c in zip(feats, cases, strict=True)],
            spacing,
            cfg,
            backbone=backbone_record(access.model),
            preprocess=dict(feats[0].preprocess),
            progress=lambda f, m: progress(0.5 + 0.5 * f, m),
            cancel=cancel,
        )

    def apply_probe(
        self,
        target: Volume,
        probe: LocalisationProbe,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> LocalisationResult:
        """The probe's landmarks in ``target``, with the probe's backbone (unless the pipeline names one: it
        must then be the same weights)."""
        progress = progress or no_progress
        start = time.perf_counter()
        access = self.access(self.spec.for_record(probe))
        check_backbone(
            probe.backbone, access.model, "The probe was fitted on", "apply it with its own model."
        )
        check_cancel(cancel)
        progress(0.0, "features")
        feats = access.features(canonical_volume(target, probe.spacing_mm), True)
        ras, conf = probe.predict(feats)
        progress(1.0, "done")
        return LocalisationResult.build(
            probe.names,
            ras,
            conf,
            "probe",
            name=f"probe in {target.name or 'target'}",
            seconds=time.perf_counter() - start,
        )

"""Run one job's capability with the core pipelines, exactly as the CLI does, on the worker's device.

features: ``FeaturePipeline(spec, options).volume_features(volume, preprocess=model_preprocess(spec))`` (the
`voxelfm features` call); segment-fit / segment-apply: ``SegmentationPipeline(spec, config, options).fit`` /
``.apply`` (the `voxelfm segment` calls). Features come from the process-wide service and the disk feature
cache, keyed by the volume's content hash, i.e. the volume store's address. Each device worker keeps its last
few segmentation pipelines, so a refit on the same volume reuses their per-volume caches.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..client.payloads import (
    RESULT_CODECS,
    features_frame,
    labels_from_sparse,
    probe_from_files,
    segmentation_frame,
)
from ..errors import InputError
from ..features.request import FeaturesRequest
from ..features.service import FeaturePipeline
from ..features.spec import FeatureOptions, ModelSpec
from ..imaging.volume import Volume
from ..progress import check_cancel
from ..segment.config import SegmentationConfig
from ..segment.pipeline import SegmentationPipeline
from ..segment.request import SegmentationApplyRequest, SegmentationFitRequest
from .analysis import check_model_name, run_index_add, run_localize, run_query, run_report
from .jobs import Job
from .models import JobRequest
from .store import VolumeStore

KEPT_PIPELINES = 2  # per device: each holds one volume's features and caches


class CapabilityRunner:
    """The job runner the JobManager calls on a device's worker thread."""

    def __init__(self, store: VolumeStore, libraries: dict[str, Path] | None = None) -> None:
        self.store = store
        self.libraries = libraries or {}
        self._pipelines: dict[str, OrderedDict[str, SegmentationPipeline]] = {}

    def __call__(self, job: Job, device: str) -> bytes:
        req: JobRequest = job.request
        check_cancel(job.cancel)
        volume = self.fetch(req.volume)
        spec = req.model.to_core(device)
        check_model_name(spec.model)
        options = req.features.to_core()
        if req.kind == "localize":
            return run_localize(job, volume, spec, options, self.fetch)
        if req.kind == "query":
            return run_query(job, volume, spec, options, self.libraries, self.fetch)
        if req.kind == "index-add":
            return run_index_add(job, volume, spec, options, self.libraries)
        if req.kind == "report":
            return run_report(job, volume, spec, options, self.libraries, self.fetch)
        if req.kind == "features":
            request = FeaturesRequest.from_settings(volume, {"cache": options.cache})
            feats = FeaturePipeline(spec, options).run(request, job.progress, job.cancel)
            return features_frame(feats).encode(RESULT_CODECS)
        if req.kind == "segment-fit":
            if req.fit is None:
                raise InputError("a segment-fit job needs 'fit' (labels, classes, config).")
            labels = labels_from_sparse(req.fit.labels.model_dump(), self.store.max_voxels)
            fit = SegmentationFitRequest.from_settings(volume, labels, req.fit.settings(), req.volume)
            pipeline = self._pipeline(device, spec, options, fit.config)
            result = pipeline.run_fit(fit, job.progress, job.cancel)
            return segmentation_frame(result, with_probe=True).encode(RESULT_CODECS)
        if req.apply is None:
            raise InputError("a segment-apply job needs 'apply' (the probe files).")
        probe = probe_from_files(req.apply.probe.model_dump(by_alias=True))
        if not spec.model:  # the pipeline will load the probe's recorded backbone: a registry id here too
            check_model_name(spec.for_record(probe).model, "the probe's recorded backbone")
        apply = SegmentationApplyRequest.from_settings(volume, probe, req.apply.settings(), req.volume)
        result = self._pipeline(device, spec, options, None).run_apply(apply, job.progress, job.cancel)
        return segmentation_frame(result, with_probe=False).encode(RESULT_CODECS)

    def fetch(self, sha: str) -> Volume:
        try:
            return self.store.get(sha)
        except KeyError:
            raise InputError(f"volume {sha} is not on the server (evicted?); upload it again.") from None

    def _pipeline(
        self, device: str, spec: ModelSpec, options: FeatureOptions, config: SegmentationConfig | None
    ) -> SegmentationPipeline:
        key = json.dumps([repr(spec), repr(options), config.to_dict() if config else None], default=str)
        kept = self._pipelines.setdefault(device, OrderedDict())
        if key not in kept:
            kept[key] = SegmentationPipeline(spec, config, options)
            while len(kept) > KEPT_PIPELINES:
                kept.popitem(last=False)[1].release()
        kept.move_to_end(key)
        return kept[key]


def describe(req: JobRequest) -> dict[str, Any]:
    return {"kind": req.kind, "volume": req.volume[:12], "model": req.model.model or "(default)"}

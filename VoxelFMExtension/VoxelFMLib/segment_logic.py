"""Few-shot segmentation in a Slicer scene: painted segments -> the core pipeline -> new segments.

    logic = FewShotSegmentLogic(model="voxelfm-tiny", device="cpu")
    result = logic.run(volume_node, segmentation_node, mode="slices", output_node=None)
    result.output_node, result.segment_ids       # the prediction, written as new segments

All segmentation behaviour (label preparation, features at the probe's spacing, class identity,
post-processing, probe files) is the core's ``SegmentationPipeline``, shared with `voxelfm segment`: this class
reads the scene into the same ``SegmentationFitRequest`` / ``SegmentationApplyRequest`` the CLI builds from
files, hands it over unchanged, and writes the result back.
Three steps so a GUI can run the slow middle one on a worker thread while MRML (not thread-safe) is touched
only on the main thread: ``prepare`` (main) -> ``predict`` (any thread) -> ``write`` (main).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.client.capabilities import remote_segment_apply, remote_segment_fit
from voxelfm.errors import InputError
from voxelfm.features.service import FeatureService, ModelSpec
from voxelfm.files.file_kinds import SEGMENTATION_PROBE
from voxelfm.files.outputs import OutputPlan
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.pipeline import SegmentationPipeline
from voxelfm.segment.probe import SegmentationProbe
from voxelfm.segment.probe_file import load_segmentation_probe, save_segmentation_probe
from voxelfm.segment.request import SegmentationApplyRequest, SegmentationFitRequest
from voxelfm.segment.result import ClassStats, SegmentationResult

from .capability_logic import CapabilityLogic
from .segmentation_nodes import edited_prediction_ids, labels_from_segmentation, write_prediction
from .undo import SaveUndoState
from .volume_nodes import check_input_volume, ct_volume_from_node, volume_key


@dataclass
class FewShotInputs:
    """The pipeline's request, detached from MRML, and the nodes it was read from."""

    request: SegmentationFitRequest  # handed to SegmentationPipeline.run_fit unchanged (the CLI's type too)
    volume_node_id: str
    segmentation_node_id: str
    volume_key: str  # identifies the voxels + geometry cheaply, so a refit reuses the features

    @property
    def volume(self) -> Volume:
        return self.request.volume


@dataclass
class FewShotResult:
    """A segmentation result as written into the scene."""

    output_node: Any  # vtkMRMLSegmentationNode holding the prediction
    segment_ids: list[str]  # its new segment ids, in class order
    result: SegmentationResult
    kept_segments: list[str] = field(
        default_factory=list
    )  # names of predicted segments the user edited (kept)

    @property
    def stats(self) -> list[ClassStats]:
        return self.result.statistics()

    @property
    def warnings(self) -> list[str]:
        return self.result.warnings

    @property
    def probe(self) -> SegmentationProbe | None:
        return self.result.probe


def check_result(result: SegmentationResult, volume: Volume) -> SegmentationResult:
    """A labelmap on the volume's grid whose values all name one of its classes."""
    labels = np.asarray(result.labelmap)
    if labels.shape != volume.array.shape:
        raise InputError(f"Prediction has shape {labels.shape}, expected the volume's {volume.array.shape}.")
    known = {0, *(c.value for c in result.classes)}
    found = set(np.unique(labels).tolist())
    if not found <= known:
        raise InputError(
            f"Prediction contains label {sorted(found - known)[0]} but only classes "
            f"{sorted(known - {0})} exist."
        )
    result.labelmap = labels.astype(np.uint8, copy=False)
    return result


class FewShotSegmentLogic(CapabilityLogic):
    """Qt-free driver of the few-shot workflow; the module widget only calls these methods."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """``FewShotSegmentLogic(model, device, precision, max_tokens, config=SegmentationConfig(...))``."""
        super().__init__(*args, **kwargs)
        self.last_probe: SegmentationProbe | None = None

    def build_pipeline(
        self, spec: ModelSpec, service: FeatureService | None, config: SegmentationConfig | None = None
    ) -> SegmentationPipeline:
        return SegmentationPipeline(spec, config, service=service)

    def prepare(self, volume_node: Any, segmentation_node: Any, mode: str = "slices") -> FewShotInputs:
        """The fit request of the painted segments (main thread): the label image they make on the volume's
        grid (``labels_from_segmentation``), their classes and the pipeline's settings."""
        if volume_node is None:
            raise InputError("Select the CT volume to segment.")
        volume = ct_volume_from_node(volume_node, "the CT to segment")
        if segmentation_node is None:
            raise InputError("Select the segmentation holding your painted examples.")
        painted = labels_from_segmentation(segmentation_node, volume_node, mode=mode)
        request = SegmentationFitRequest(
            volume,
            Volume(painted.labels, volume.ijk_to_ras),
            self.pipeline.config,
            segment_classes=painted.classes,
            warnings=painted.warnings,
        )
        return FewShotInputs(request, volume_node.GetID(), segmentation_node.GetID(), volume_key(volume_node))

    def predict(
        self, inputs: FewShotInputs, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> SegmentationResult:
        """Fit on the painted labels and segment the volume (safe on the worker thread)."""
        check_cancel(cancel)
        if self.server is not None:
            result = self._fit_on_server(inputs, progress, cancel)
        else:
            result = self.pipeline.run_fit(inputs.request, progress, cancel, volume_key=inputs.volume_key)
        check_cancel(cancel)
        return check_result(result, inputs.volume)

    def write(
        self,
        inputs: FewShotInputs,
        result: SegmentationResult,
        volume_node: Any,
        output_node: Any = None,
        save_undo_state: SaveUndoState | None = None,
    ) -> FewShotResult:
        """Write the prediction (main thread). ``save_undo_state``: see ``undo`` (the Segment Editor's Undo)."""
        check_input_volume(volume_node, inputs.volume_node_id, "the prediction ran", "run it again")
        return self._write(result, volume_node, output_node, save_undo_state)

    def run(
        self,
        volume_node: Any,
        segmentation_node: Any,
        mode: str = "slices",
        output_node: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        save_undo_state: SaveUndoState | None = None,
    ) -> FewShotResult:
        """All three steps on the calling thread (scripts, tests, headless use)."""
        inputs = self.prepare(volume_node, segmentation_node, mode)
        prediction = self.predict(inputs, progress, cancel)
        return self.write(inputs, prediction, volume_node, output_node, save_undo_state)

    def apply_probe(
        self,
        volume_node: Any,
        probe: SegmentationProbe | str | Path,
        output_node: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        save_undo_state: SaveUndoState | None = None,
    ) -> FewShotResult:
        """Segment a volume node with a saved probe (a file path or a loaded probe), as `voxelfm segment --probe`."""
        if volume_node is None:
            raise InputError("Select the CT volume to segment.")
        if not isinstance(probe, SegmentationProbe):
            probe = load_segmentation_probe(probe)
        request = SegmentationApplyRequest(ct_volume_from_node(volume_node, "the CT to segment"), probe)
        key = volume_key(volume_node)
        if self.server is not None:
            p = self.pipeline
            result = remote_segment_apply(
                self.server.remote(p.spec, p.options, progress, cancel),
                self.server.known(request.volume, key),
                probe,
                request.postprocess,
            )
        else:
            result = self.pipeline.run_apply(request, progress, cancel, volume_key=key)
        return self._write(check_result(result, request.volume), volume_node, output_node, save_undo_state)

    def _fit_on_server(
        self, inputs: FewShotInputs, progress: ProgressFn | None, cancel: CancelFlag | None
    ) -> SegmentationResult:
        """``pipeline.run_fit`` on the server: the volume is hashed once per node state (``known``) and uploaded
        once; only the painted slices travel per refit."""
        request, p = inputs.request, self.pipeline
        labels = request.prepared_labels()
        result = remote_segment_fit(
            self.server.remote(p.spec, p.options, progress, cancel),
            self.server.known(request.volume, inputs.volume_key),
            labels,
            request.classes(labels),
            request.config,
        )
        result.warnings = [*request.warnings, *result.warnings]
        return result

    def save_probe(self, path: str | Path, overwrite: bool = False) -> str:
        """Save NAME.json + NAME.safetensors; a file VoxelFM did not write is replaced only with ``overwrite``."""
        if self.last_probe is None:
            raise InputError("Fit a probe first (Fit and predict), then save it.")
        plan = OutputPlan(overwrite=overwrite, by="VoxelFM Segment", hint="delete it first")
        plan.probe_outputs(path, "The probe file", kind=SEGMENTATION_PROBE)
        plan.check()
        _, meta = save_segmentation_probe(self.last_probe, path)
        plan.done()
        return str(meta)

    def _write(
        self, result: SegmentationResult, volume_node: Any, output_node: Any, save_undo_state=None
    ) -> FewShotResult:
        node, ids = write_prediction(
            result.labelmap, volume_node, result.classes, output_node, save_undo_state=save_undo_state
        )
        self.last_probe = result.probe
        seg = node.GetSegmentation()
        kept = [seg.GetSegment(sid).GetName() for sid in edited_prediction_ids(node)]
        return FewShotResult(node, ids, result, kept)

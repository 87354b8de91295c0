"""Typed request and reply bodies of the HTTP layer (pydantic), converted to and from the core's dataclasses.

These types exist only at the HTTP edge: the capabilities run on ``ModelSpec``, ``FeatureOptions``,
``SegmentationConfig``, ``SegmentClass``, ``Volume`` and ``SegmentationProbe``, built by the ``to_core``
methods here. Array payloads are ``EncodedArray`` (dtype, shape, codec, base64 data: voxelfm.client.wire).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..features.spec import FeatureOptions, ModelSpec
from .analysis_models import IndexAddRequest, LocalizeRequest, QueryRequest, ReportRequest

SHA = Field(
    pattern=r"^[0-9a-f]{64}$", description="Volume.content_hash(): sha256 of voxels, dtype, shape, geometry"
)


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    protocol: int
    devices: list[str]
    jobs_active: int
    max_upload_bytes: int = Field(description="largest request body; a client checks it before uploading")
    max_voxels: int = Field(description="largest volume or label grid")


class VolumeInfo(BaseModel):
    sha256: str
    stored_bytes: int
    uploaded: bool = Field(description="False when the server already held this volume")


class ModelRequest(BaseModel):
    model: str = Field(
        "", max_length=200, description="registry id (`voxelfm models`); '' = the server's default"
    )
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    max_tokens: int = Field(8192, ge=64, le=1 << 20)

    def to_core(self, device: str) -> ModelSpec:
        return ModelSpec(
            model=self.model, device=device, precision=self.precision, max_tokens=self.max_tokens
        )


class FeatureOptionsModel(BaseModel):
    crop_background: bool = False
    max_patches: int | None = Field(None, ge=1)
    overlap: int = Field(2, ge=0, le=64)
    cache: bool = True

    def to_core(self) -> FeatureOptions:
        return FeatureOptions(
            crop_background=self.crop_background,
            max_patches=self.max_patches,
            overlap=self.overlap,
            cache=self.cache,
        )


class EncodedArray(BaseModel):
    dtype: str
    shape: list[int]
    codec: str
    data: str = Field(description="base64 of the codec's payload")


class SparseLabels(BaseModel):
    shape: list[int] = Field(min_length=3, max_length=3, description="[k, j, i] of the label grid")
    ijk_to_ras: list[list[float]] = Field(min_length=4, max_length=4)
    slices: list[int] = Field(
        description="k indices of the slices sent; every other slice is 255 (unlabelled)"
    )
    values: EncodedArray = Field(description="[len(slices), j, i] label values 0 / 1..254 / 255")


class ClassModel(BaseModel):
    value: int = Field(ge=1, le=254)
    name: str = Field(max_length=200)
    color: list[float] = Field(min_length=3, max_length=3)
    terminology: str = ""


class SegmentFitRequest(BaseModel):
    """The sparse labels plus ``SegmentationFitRequest.settings()`` (the core request's plain data)."""

    labels: SparseLabels
    config: dict[str, Any] = Field(default_factory=dict, description="SegmentationConfig.to_dict()")
    class_names: str = Field("", max_length=20_000)
    painted_slices: bool = False
    segment_classes: list[ClassModel] | None = Field(None, max_length=254)

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"labels"})


class ProbeFilesModel(BaseModel):
    json_text: str = Field(alias="json", description="the probe's .json file")
    weights: str = Field(description="base64 of the probe's .safetensors file")


class SegmentApplyRequest(BaseModel):
    """The probe's files plus ``SegmentationApplyRequest.settings()``."""

    probe: ProbeFilesModel
    postprocess: dict[str, bool] | None = None

    def settings(self) -> dict[str, Any]:
        return self.model_dump(exclude={"probe"})


class JobRequest(BaseModel):
    kind: Literal["features", "segment-fit", "segment-apply", "localize", "query", "index-add", "report"]
    volume: str = SHA
    model: ModelRequest = Field(default_factory=ModelRequest)
    features: FeatureOptionsModel = Field(default_factory=FeatureOptionsModel)
    fit: SegmentFitRequest | None = None
    apply: SegmentApplyRequest | None = None
    localize: LocalizeRequest | None = None
    query: QueryRequest | None = None
    index_add: IndexAddRequest | None = None
    report: ReportRequest | None = None


class JobStatus(BaseModel):
    id: str
    kind: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float
    message: str
    device: str
    seconds: float = Field(0.0, description="time the job has run on its device (not queueing or transfer)")
    error: str | None = None
    error_kind: Literal["input", "internal"] | None = None

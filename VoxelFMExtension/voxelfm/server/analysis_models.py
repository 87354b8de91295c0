"""Request bodies of localisation, retrieval and report jobs (pydantic), beside the segmentation ones in models.

Clients name case libraries by the ids of the server's --libraries file, never by a folder; every volume is
named by its content hash in the volume store.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..client.analysis_payloads import LIBRARY_ID_PATTERN

SHA_PATTERN = r"^[0-9a-f]{64}$"
LIBRARY_ID = Field(pattern=LIBRARY_ID_PATTERN, description="a library id of the server")


class PointsModel(BaseModel):
    names: list[str] = Field(max_length=1000)
    ras: list[list[float]] = Field(max_length=1000, description="RAS mm, one [R, A, S] per name")
    descriptions: list[str] = Field(default_factory=list, max_length=1000)
    name: str = Field("", max_length=200)
    missing: list[bool] = Field(default_factory=list, max_length=1000)


class ReferenceModel(BaseModel):
    volume: str = Field(pattern=SHA_PATTERN, description="the reference scan in the volume store")
    points: PointsModel


class ProbeFiles(BaseModel):
    json_text: str = Field(alias="json", description="the probe's .json file")
    weights: str = Field(description="base64 of the probe's .safetensors file")


class LocalizeRequest(BaseModel):
    """From reference scans and/or saved templates (one-shot), or from a localisation probe."""

    references: list[ReferenceModel] = Field(default_factory=list, max_length=32)
    templates: list[str] = Field(default_factory=list, max_length=32, description="base64 of template .npz")
    probe: ProbeFiles | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="TransferConfig.to_dict()")
    return_templates: bool = Field(False, description="also return the templates built (--save-template)")


class RegionModel(BaseModel):
    """A query region: a box (to_ras 4x4, size mm), a ball (center RAS, radius mm) or a mask in the store."""

    kind: Literal["box", "sphere", "mask"]
    to_ras: list[list[float]] | None = Field(None, min_length=4, max_length=4)
    size: list[float] | None = Field(None, min_length=3, max_length=3)
    center: list[float] | None = Field(None, min_length=3, max_length=3)
    radius: float | None = None
    mask: str | None = Field(
        None, pattern=SHA_PATTERN, description="a uint8 mask (non-zero = in) in the store"
    )
    name: str = Field("mask", max_length=200)


class QueryRequest(BaseModel):
    library: str = LIBRARY_ID
    region: RegionModel | None = None
    k: int = Field(10, ge=1, le=10000)
    embedding: Literal["mean", "cls"] = "mean"
    with_reports: bool = False
    thumbnails: bool = Field(
        False, description="render a PNG per hit here (the cases' images are the server's)"
    )


class IndexAddRequest(BaseModel):
    library: str = LIBRARY_ID
    case_id: str = Field("", max_length=200)
    name: str = Field("", max_length=200, description="the volume's name (default case id: from it)")
    report: str | None = Field(None, max_length=1_000_000)
    findings: Any = None


class SegmentModel(BaseModel):
    name: str = Field(max_length=200)
    segment_id: str = Field(max_length=200)
    layer: int = Field(0, ge=0)
    value: int


class SegmentationModel(BaseModel):
    layers: list[str] = Field(min_length=1, max_length=64, description="label layers in the volume store")
    segments: list[SegmentModel] = Field(min_length=1, max_length=1000)
    name: str = Field("", max_length=200, description="the file name (layer volumes' name)")
    source: str = Field("", max_length=1000, description="the file as the user named it (the draft cites it)")


class FindingsProbeModel(BaseModel):
    name: str = Field(max_length=200, description="shown in the draft's evidence")
    path: str = Field("", max_length=4096, description="the client's path of the probe, shown in the draft")
    files: ProbeFiles


class TemplateFileModel(BaseModel):
    source: str = Field(max_length=4096, description="the client's path of the template, named in the draft")
    mapping: dict[str, Any] = Field(description="the template file's parsed contents")


class ReportRequest(BaseModel):
    library: str | None = Field(None, pattern=LIBRARY_ID_PATTERN)
    segmentation: SegmentationModel | None = None
    template: str | None = Field(None, max_length=100, description="a built-in template name")
    template_file: TemplateFileModel | None = Field(None, description="a template of the client's")
    probes: list[FindingsProbeModel] = Field(default_factory=list, max_length=64)
    neighbours: int = Field(5, ge=1, le=1000)
    temperature: float = Field(0.05, ge=0.0)
    min_support: float = Field(0.5, gt=0.0, le=1.0)

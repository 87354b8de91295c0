"""What a caller asks of the model service: which backbone where and how, and how features are extracted.

Torch-free on purpose: the Slicer model panel builds these before torch is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .identity import model_for
from .tiling import default_max_tokens

# The one table of device and precision choices (CLI options, model panel, device policy); "cuda:N" also
# names one GPU. Here because this module is torch-free (the Slicer model panel reads it before torch exists).
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
# checkpoint files a model reference may name (hub.download reads .pth/.pt official, .safetensors ours)
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def is_model_path(reference: str) -> bool:
    """The one model-path rule: a reference with a path separator or a checkpoint suffix names a file or
    folder (it must exist); anything else is a registry id."""
    return any(sep in reference for sep in ("/", "\\")) or reference.endswith(CHECKPOINT_SUFFIXES)


@dataclass(frozen=True)
class ModelSpec:
    """Which backbone, where and how: the one parameter set every pipeline, command and model panel uses."""

    model: str = ""  # registry id, checkpoint file or folder; "" = the default-model policy
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16
    max_tokens: int = field(default_factory=default_max_tokens)  # tile budget in patch tokens (per machine)
    config: str | None = None  # config.yaml for an official .pth not stored beside it

    def with_model(self, model: str) -> ModelSpec:
        return ModelSpec(model, self.device, self.precision, self.max_tokens, self.config)

    def for_record(self, record: Any) -> ModelSpec:
        """This spec, with the backbone a probe/run recorded when it names no model (``identity.model_for``)."""
        return self if self.model else self.with_model(model_for("", record))


@dataclass(frozen=True)
class FeatureOptions:
    """How features are extracted beyond the model spec (the CLI's --crop-background, --max-patches, ...)."""

    crop_background: bool = False
    max_patches: int | None = None
    overlap: int = 2
    cache: bool = True
    orientation: str = "canonical"  # PreprocessConfig.orientation: canonical (LPS index order) | stored

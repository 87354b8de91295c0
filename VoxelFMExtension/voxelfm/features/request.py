"""What a front end asks of the feature pipeline: one volume's features (``FeaturePipeline.run``).

Everything but the volume goes to and from plain data (``settings`` / ``from_settings``), so the CLI, the
Slicer logic and the server describe an extraction the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..imaging.volume import Volume


@dataclass
class FeaturesRequest:
    """Features of ``volume``: with a recorded ``preprocess`` (``PreprocessConfig.to_dict``) or, when None,
    the model's own with the pipeline's options; ``cache=False`` skips the disk cache."""

    volume: Volume
    preprocess: dict[str, Any] | None = None
    cache: bool = True

    def settings(self) -> dict[str, Any]:
        return {"preprocess": self.preprocess, "cache": self.cache}

    @classmethod
    def from_settings(cls, volume: Volume, settings: dict[str, Any]) -> FeaturesRequest:
        return cls(volume, settings.get("preprocess"), bool(settings.get("cache", True)))

"""What every capability's Slicer logic shares: a checked model choice and its one core pipeline.

A logic is built from the same four model settings the model panel shows (``model``, ``device``,
``precision``, ``max_tokens``; ``max_tokens=None`` = the machine's budget); its pipeline is built from them,
or injected (tests pass a fake pipeline, so the MRML side is tested without a backbone).

``server=URL`` (and ``api_key``, else ``$VOXELFM_API_KEY``) computes the predict step on a VoxelFM server
(``voxelfm serve``) instead of this computer; reading inputs and writing results stay here, so the scene gets
the same nodes either way. The key is held by the logic only, never written to the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from voxelfm.features.spec import ModelSpec

from .model_service import checked_spec
from .server_compute import ServerCompute


def direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run the slow step on the calling thread (a module passes its worker-thread runner instead)."""
    return fn(*args, **kwargs)


class CapabilityLogic:
    def __init__(
        self,
        model: str = "",
        device: str = "auto",
        precision: str = "auto",
        max_tokens: int | None = None,
        *,
        service: Any = None,
        pipeline: Any = None,
        server: str | None = None,
        api_key: str | None = None,
        **options: Any,
    ) -> None:
        self.server = ServerCompute(server, api_key) if server else None
        budget = {"max_tokens": max_tokens} if max_tokens else {}
        self.spec = checked_spec(ModelSpec(model, device, precision, **budget))
        self.pipeline = (
            pipeline if pipeline is not None else self.build_pipeline(self.spec, service, **options)
        )

    @classmethod
    def from_spec(cls, spec: ModelSpec, **kwargs: Any):
        """The logic for a model panel's choice."""
        return cls(spec.model, spec.device, spec.precision, spec.max_tokens, **kwargs)

    def build_pipeline(self, spec: ModelSpec, service: Any, **options: Any) -> Any:
        """The capability's core pipeline (``options`` are its own settings, e.g. a segmentation config)."""
        raise NotImplementedError(f"{type(self).__name__} must build its pipeline")

"""The one backbone identity (id, revision, sha256, config) and the one compatibility check.

Probes (segmentation, localisation, classification/regression/survival), landmark templates, report-model
runs, case libraries and the feature cache all record the identity written by ``backbone_record`` and compare
it with ``check_backbone``, so "same backbone" means the same thing everywhere: the same weights (sha256 when
both sides know it, else the same id). Torch-free (the feature spec and the Slicer model panel import it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError

# the keys that name the weights (the feature cache key and the library check use these; ``config`` is the
# architecture, recorded beside them so a record says what the features look like)
IDENTITY_KEYS = ("id", "revision", "sha256")


class BackboneMismatchError(InputError):
    """A probe, template, run or library was made with other backbone weights than the model in use."""


def backbone_record(model_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """What every record stores: id, revision, sha256 (and the architecture ``config`` when known)."""
    info = dict(model_info or {})
    record = {k: info.get(k) for k in IDENTITY_KEYS}
    if info.get("config"):
        record["config"] = dict(info["config"])
    return record


def recorded_backbone(record: Any) -> dict[str, Any]:
    """The backbone a probe/template/run records: ``backbone`` (written today) or ``model`` (older files);
    ``record`` is a mapping (a file header) or an object with one of those attributes."""
    if isinstance(record, Mapping):
        found = record.get("backbone") or record.get("model")
    else:
        found = getattr(record, "backbone", None) or getattr(record, "model", None)
    return dict(found) if isinstance(found, Mapping) else {}


def same_backbone(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two identities name the same weights (sha256 when both have one, else the id)."""
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return bool(a.get("id")) and a.get("id") == b.get("id")


def describe_backbone(identity: Mapping[str, Any]) -> str:
    ident = identity.get("id") or "unknown model"
    revision = f"revision {identity['revision']}, " if identity.get("revision") else ""
    sha = str(identity.get("sha256") or "")[:12]
    return f"{ident!r} ({revision}sha256 {sha}...)" if sha else repr(ident)


def check_backbone(
    recorded: Mapping[str, Any] | None,
    loaded: Mapping[str, Any] | None,
    what: str,
    todo: str,
    against: str = "the model in use is",
) -> None:
    """BackboneMismatchError unless ``loaded`` is the backbone ``recorded`` names; nothing to check when either
    side is unknown. ``what`` starts the message ("This probe was fitted on"), ``todo`` says what to do."""
    if not recorded or not loaded or not (recorded.get("sha256") or recorded.get("id")):
        return
    if not same_backbone(recorded, loaded):
        raise BackboneMismatchError(
            f"{what} {describe_backbone(recorded)}, but {against} {describe_backbone(loaded)}; {todo}"
        )


def model_for(requested: str, record: Any) -> str:
    """The one rule: the model the user names, else the one the probe/run/library recorded ("" when neither)."""
    return requested or str(recorded_backbone(record).get("id") or "")

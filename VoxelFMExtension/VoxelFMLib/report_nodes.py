"""Report drafts in the scene: one vtkMRMLTextNode per draft, its evidence kept with it, edits never lost.

The text node holds the (editable) text; attributes hold the draft JSON (sentences, sections, evidence) and the
sha256 of the text as VoxelFM wrote it, so ``is_edited`` tells a user's edit from our draft. Text and
attributes are part of the scene file, so a saved scene keeps both. A new draft only ever replaces the text
of a node VoxelFM wrote and nobody edited; otherwise it goes into a new node.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import slicer

from voxelfm.errors import InputError
from voxelfm.report.draft import ReportDraft

REPORT_ATTRIBUTE = "VoxelFM.Report"  # "draft" on every text node VoxelFM writes
DRAFT_ATTRIBUTE = "VoxelFM.ReportDraft"  # the draft JSON
TEXT_SHA_ATTRIBUTE = "VoxelFM.ReportTextSha256"  # sha256 of the text as written by VoxelFM
VOLUME_REFERENCE = "voxelfmReportVolume"


def _sha(text: str) -> str:
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def is_report_node(node: Any) -> bool:
    return node is not None and node.IsA("vtkMRMLTextNode") and node.GetAttribute(REPORT_ATTRIBUTE) == "draft"


def is_edited(node: Any) -> bool:
    """True when the node's text is not the text VoxelFM wrote (a user edited it), or it is not ours."""
    return not is_report_node(node) or _sha(node.GetText() or "") != node.GetAttribute(TEXT_SHA_ATTRIBUTE)


def draft_of(node: Any) -> ReportDraft:
    """The draft (sentences with evidence) stored with a report text node."""
    raw = node.GetAttribute(DRAFT_ATTRIBUTE) if node is not None else None
    if not raw:
        raise InputError("This text node holds no VoxelFM draft; draft a report first.")
    return ReportDraft.from_dict(json.loads(raw))


def _fill(node: Any, draft: ReportDraft, volume_node: Any) -> None:
    text = draft.text
    node.SetText(text)
    node.SetAttribute(REPORT_ATTRIBUTE, "draft")
    node.SetAttribute(DRAFT_ATTRIBUTE, json.dumps(draft.to_dict()))
    node.SetAttribute(TEXT_SHA_ATTRIBUTE, _sha(text))
    if volume_node is not None:
        node.SetNodeReferenceID(VOLUME_REFERENCE, volume_node.GetID())


def write_report_node(
    scene: slicer.vtkMRMLScene, draft: ReportDraft, volume_node: Any, text_node: Any = None
) -> tuple[Any, Any]:
    """(node holding the draft, the edited node left untouched or None).

    ``text_node``: an earlier draft node to reuse; it is reused only when VoxelFM wrote it and it was not
    edited, otherwise the draft goes into a new node and the given node is returned as kept.
    """
    kept = text_node if text_node is not None and is_edited(text_node) else None
    node = text_node if text_node is not None and kept is None else None
    if node is None:
        base = f"{volume_node.GetName()} report draft" if volume_node is not None else "VoxelFM report draft"
        node = scene.AddNewNodeByClass("vtkMRMLTextNode", scene.GenerateUniqueName(base))
    _fill(node, draft, volume_node)
    return node, kept


def sentence_at(text: str, position: int, draft: ReportDraft) -> int | None:
    """Index of the draft sentence under character ``position`` of ``text`` (the node's text, maybe edited).

    Sentences are found in reading order; an edited sentence that no longer appears is skipped.
    """
    start = 0
    for index, sentence in enumerate(draft.sentences):
        at = text.find(sentence.text, start)
        if at < 0:
            continue
        if at <= position < at + len(sentence.text):
            return index
        start = at + len(sentence.text)
    return None

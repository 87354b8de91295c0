"""Open the image of a library case in the scene once: the node already showing it is reused.

Retrieve's "Load hit" and Report's "open similar case" both show a case's image; a double-click must not load
another copy each time (a volume, storage and display node more per click). A node shows an image when it was
loaded from that file (its storage node) or opened by VoxelFM from it (``CASE_IMAGE_ATTRIBUTE``: DICOM folders
are read by the core and have no storage node). Only nodes that can be a CT are considered. A case of a
server's library is fetched from the server once (``open_server_case``) and its node marked with
``SERVER_CASE_ATTRIBUTE`` (library id, case id and when it was added: never the server's URL or key).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxelfm.imaging.volume import Volume

from .scene_guard import nodes_by_class
from .volume_nodes import create_volume_node, ct_refusal, load_volume_file

CASE_IMAGE_ATTRIBUTE = "VoxelFM.CaseImage"
SERVER_CASE_ATTRIBUTE = "VoxelFM.ServerCase"


def first_ct_volume(scene: Any) -> Any:
    """The scene's first volume that can be a CT (the default input of a module), or None.

    WHY: the first ``vtkMRMLScalarVolumeNode`` may be a labelmap or VoxelFM's own PCA colour volume."""
    return next((n for n in nodes_by_class(scene, "vtkMRMLScalarVolumeNode") if not ct_refusal(n)), None)


def node_file(node: Any) -> str:
    """The file a volume node was loaded from ("" when it has none)."""
    storage = node.GetStorageNode() if node is not None else None
    name = storage.GetFileName() if storage is not None else ""
    return str(name or "")


def _same(a: str, b: str) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


def node_showing(scene: Any, image: str) -> Any:
    """The CT volume node of the scene showing ``image`` (a file or DICOM folder), or None."""
    for node in nodes_by_class(scene, "vtkMRMLScalarVolumeNode"):
        if not ct_refusal(node) and (
            _same(node_file(node), image) or _same(node.GetAttribute(CASE_IMAGE_ATTRIBUTE) or "", image)
        ):
            return node
    return None


def open_case_image(scene: Any, image: str, name: str) -> Any:
    """The node showing ``image``: the one already in the scene, else a new node read from it (InputError when
    Slicer cannot read it)."""
    node = node_showing(scene, image)
    if node is not None:
        return node
    if Path(image).is_dir():  # a DICOM series: read by the core, shown as a new node
        from voxelfm.imaging.io import read_volume

        node = create_volume_node(scene, read_volume(image), name=name)
    else:
        node = load_volume_file(scene, image, name=name)
    node.SetAttribute(CASE_IMAGE_ATTRIBUTE, str(image))
    return node


def open_server_case(scene: Any, key: str, fetch: Callable[[], Volume], name: str) -> Any:
    """The node holding the server case ``key``: the one already in the scene, else a new node of the volume
    ``fetch()`` returns. The volume is fetched before any node is added, so a refused key, an unreachable
    server or a missing image leaves the scene as it was."""
    node = server_case_node(scene, key)
    if node is not None:
        return node
    node = create_volume_node(scene, fetch(), name=name)
    node.SetAttribute(SERVER_CASE_ATTRIBUTE, key)
    return node


def server_case_node(scene: Any, key: str) -> Any:
    """The CT node of the scene already holding the server case ``key`` (None: it must be fetched)."""
    for node in nodes_by_class(scene, "vtkMRMLScalarVolumeNode"):
        if node.GetAttribute(SERVER_CASE_ATTRIBUTE) == key and not ct_refusal(node):
            return node
    return None

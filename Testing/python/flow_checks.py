"""Checks every user-flow test makes after EVERY step: the exact scene census, and the user's data untouched.

census = Census(scene)
... one user action ...
census.step({"vtkMRMLSegmentationNode": 1, "vtkMRMLSegmentationDisplayNode": 1})  # exactly these added
keep = Kept(); keep.volume(ct); keep.segments(painted, ct); keep.text(node)
... VoxelFM action ...
keep.check()                     # nothing the user made or edited changed
... the user's own edit ...
keep.segments(painted, ct)       # record the edit as the new state to keep
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import slicer

from VoxelFMLib import segmentation_nodes, volume_nodes
from VoxelFMLib.scene_guard import node_ids


def census(scene) -> Counter:
    """How many nodes of each class the scene holds."""
    return Counter(scene.GetNthNode(n).GetClassName() for n in range(scene.GetNumberOfNodes()))


class Census:
    """The scene's nodes after the last step; ``step(added, removed)`` asserts the exact change by class."""

    def __init__(self, scene: slicer.vtkMRMLScene) -> None:
        self.scene = scene
        self.user_step()

    def _now(self) -> dict[str, str]:
        return {i: self.scene.GetNodeByID(i).GetClassName() for i in node_ids(self.scene)}

    def step(self, added: dict[str, int] | None = None, removed: dict[str, int] | None = None) -> list[Any]:
        """Assert the nodes added since the last step are exactly ``added`` (class -> count) and the removed
        ones exactly ``removed``; returns the added nodes (scene order)."""
        now = self._now()
        new = sorted(set(now) - set(self.classes))
        got_added = Counter(now[i] for i in new)
        got_removed = Counter(c for i, c in self.classes.items() if i not in now)
        assert got_added == Counter(added or {}), f"nodes added: {dict(got_added)}, expected {added or {}}"
        assert got_removed == Counter(removed or {}), (
            f"nodes removed: {dict(got_removed)}, expected {removed or {}}"
        )
        self.classes = now
        return [self.scene.GetNodeByID(i) for i in new]

    def removed_since(self) -> Counter:
        """Nodes of each class removed since the last step (what the scene itself removed with a node)."""
        now = self._now()
        return Counter(c for i, c in self.classes.items() if i not in now)

    def user_step(self) -> list[Any]:
        """The user's own action between VoxelFM steps: taken as the new baseline; returns the nodes they added."""
        now = self._now()
        new = sorted(set(now) - set(getattr(self, "classes", now)))
        self.classes = now
        return [self.scene.GetNodeByID(i) for i in new]

    def same(self) -> None:
        """The step added and removed nothing."""
        self.step()


class Kept:
    """Snapshots of what the user made or edited; ``check()`` asserts each is exactly as recorded."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], None]] = {}

    def volume(self, node) -> None:
        array = np.array(slicer.util.arrayFromVolume(node), copy=True)
        matrix = volume_nodes.node_ijk_to_ras(node)
        transform = node.GetTransformNodeID()

        def check() -> None:
            assert node.GetScene() is not None, f"volume '{node.GetName()}' was removed"
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
            np.testing.assert_array_equal(volume_nodes.node_ijk_to_ras(node), matrix)
            assert node.GetTransformNodeID() == transform

        self._checks[f"volume:{node.GetID()}"] = check

    def segments(self, segmentation_node, volume_node, ids: list[str] | None = None) -> None:
        """The named segments (default: every segment now in the node): ids, names, voxels on the volume grid."""
        seg = segmentation_node.GetSegmentation()
        ids = ids if ids is not None else [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
        state = {
            sid: (seg.GetSegment(sid).GetName(), _mask(segmentation_node, sid, volume_node)) for sid in ids
        }

        def check() -> None:
            for sid, (name, mask) in state.items():
                segment = seg.GetSegment(sid)
                assert segment is not None, f"the user's segment '{name}' was removed"
                assert segment.GetName() == name
                np.testing.assert_array_equal(_mask(segmentation_node, sid, volume_node), mask, err_msg=name)

        self._checks[f"segments:{segmentation_node.GetID()}"] = check

    def text(self, node) -> None:
        text = node.GetText()

        def check() -> None:
            assert node.GetScene() is not None, f"text node '{node.GetName()}' was removed"
            assert node.GetText() == text, f"the text of '{node.GetName()}' changed"

        self._checks[f"text:{node.GetID()}"] = check

    def forget(self, node) -> None:
        """The user deleted ``node`` themselves: no longer checked."""
        for key in [k for k in self._checks if k.endswith(":" + node.GetID())]:
            del self._checks[key]

    def check(self) -> None:
        for check in self._checks.values():
            check()


def _mask(segmentation_node, segment_id, volume_node) -> np.ndarray:
    return segmentation_nodes.segment_mask_on_volume(segmentation_node, segment_id, volume_node)


# What ``load_ct`` adds to the scene: the volume, its display node and its storage node.
CT_LOADED = {
    "vtkMRMLScalarVolumeNode": 1,
    "vtkMRMLScalarVolumeDisplayNode": 1,
    "vtkMRMLVolumeArchetypeStorageNode": 1,
}


def load_ct(kit, path, name: str):
    """A CT file loaded like File > Add data (the Volumes logic)."""
    node = kit.volumes_logic.AddArchetypeVolume(str(path), name)
    assert node is not None, f"the volumes logic could not load {path}"
    return node

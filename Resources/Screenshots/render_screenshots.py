"""Render the README / Extensions Index screenshots with Slicer's own slice views, offscreen.

trame-slicer's SlicerApp builds a Slicer application scene (Volumes, Segmentations, Terminologies, ... logics
and Slicer's displayable managers); its views render through VTK offscreen. The pictures show the sample
chest CT (pyradiomics lung1, via voxelfm.samples) loaded through the Volumes logic, one slice of the nodule
painted through the segment editor, and the few-shot prediction of VoxelFMLib.FewShotSegmentLogic with the
bundled voxelfm-tiny model; then the PCA colouring of the features. Needs the second venv of .ci/run:

    .venv-slicerapp/bin/python Resources/Screenshots/render_screenshots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "VoxelFMExtension"))

import slicer  # noqa: E402
import torch  # noqa: E402
from trame_slicer.core import SlicerApp  # noqa: E402
from trame_slicer.views import DirectViewFactory, ViewLayoutDefinition, ViewProps, ViewType  # noqa: E402
from vtkmodules.vtkIOImage import vtkPNGWriter  # noqa: E402
from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter  # noqa: E402

from VoxelFMLib import FeaturesLogic, FewShotSegmentLogic  # noqa: E402
from VoxelFMLib.sample_data import prepare_files, sample_source  # noqa: E402
from VoxelFMLib.volume_nodes import node_ijk_to_ras  # noqa: E402

SIZE = 640


def slice_view(app, tag: str, orientation: str):
    view = app.view_manager.create_view(
        ViewLayoutDefinition(tag, ViewType.SLICE_VIEW, ViewProps(orientation=orientation))
    )
    view.interactor().UpdateSize(SIZE, SIZE)
    return view


def save(view, path: Path) -> None:
    view.render()
    grab = vtkWindowToImageFilter()
    grab.SetInput(view.render_window())
    grab.Update()
    writer = vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    print("wrote", path)


def centre_on(view, ras, fov_mm: float) -> None:
    view.fit_view_to_content()  # also sizes the slice node to the render window
    node = view.get_view_node()
    node.JumpSliceByCentering(*ras)
    node.SetFieldOfView(fov_mm, fov_mm, node.GetFieldOfView()[2])


def paint_one_slice(app, volume, truth):
    """The user's example: the nodule's largest axial slice, painted through the segment editor."""
    k = int(np.argmax(truth.sum(axis=(1, 2))))
    painted = np.zeros(truth.shape, np.uint8)
    painted[k] = truth[k]
    editor = app.segmentation_editor
    node = editor.create_empty_segmentation_node()
    node.SetName("painted nodule")
    editor.set_active_segmentation(node, volume)
    segment_id = editor.add_empty_segment(segment_name="nodule", segment_color=[1.0, 0.85, 0.1])
    editor.active_segment_modifier.set_segment_labelmap(segment_id, painted)
    return node, k


def main() -> None:
    torch.set_num_threads(2)
    app = SlicerApp()
    slicer.mrmlScene = app.scene
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    case = prepare_files(sample_source())
    volume = app.volumes_logic.AddArchetypeVolume(str(case.image), "lung1 chest CT")
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1500, -500)
    label = app.volumes_logic.AddArchetypeVolume(str(case.label), "nodule label", 1)
    truth = slicer.util.arrayFromVolume(label) > 0
    app.scene.RemoveNode(label)
    painted, k = paint_one_slice(app, volume, truth)
    result = FewShotSegmentLogic(model="voxelfm-tiny", device="cpu").run(volume, painted)
    result.output_node.GetDisplayNode().SetOpacity2DFill(0.55)
    painted.GetDisplayNode().SetVisibility2DFill(False)  # the user's paint: a cyan outline
    painted.GetSegmentation().GetNthSegment(0).SetColor(0.1, 0.9, 1.0)

    zs = np.flatnonzero(truth.any(axis=(1, 2)))
    other = int(zs[0] if zs[0] != k else zs[-1])  # a slice that was NOT painted
    j, i = np.argwhere(truth[other]).mean(axis=0)
    ras = (node_ijk_to_ras(volume) @ np.array([i, j, other, 1.0]))[:3]

    axial = slice_view(app, "Red", "Axial")
    app.display_manager.show_volume(volume)
    centre_on(axial, ras, 120.0)
    save(axial, HERE / "voxelfm_segment_prediction.png")

    wide = slice_view(app, "Green", "Coronal")
    app.display_manager.show_volume(volume)
    centre_on(wide, ras, 250.0)
    save(wide, HERE / "voxelfm_segment_coronal.png")

    for node in (painted, result.output_node):
        node.GetDisplayNode().SetVisibility(False)
    features_logic = FeaturesLogic(model="voxelfm-tiny", device="cpu")
    pca = features_logic.show_pca(features_logic.extract(volume), volume)
    axial.set_foreground_volume_id(pca.GetID())
    axial.set_foreground_opacity(0.5)
    centre_on(axial, ras, 330.0)
    save(axial, HERE / "voxelfm_features_pca.png")

    axial.set_foreground_volume_id(None)
    axial.interactor().UpdateSize(256, 256)
    axial.fit_view_to_content()
    save(axial, REPO / "VoxelFMExtension" / "Resources" / "Icons" / "VoxelFMLung1.png")


if __name__ == "__main__":
    main()

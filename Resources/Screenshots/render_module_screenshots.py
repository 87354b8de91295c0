"""Render the README pictures of VoxelFM Localize, Retrieve and Report with Slicer's own slice views, offscreen.

As render_screenshots.py: trame-slicer's SlicerApp (a Slicer application scene with its logics and
displayable managers), views rendered through VTK offscreen. Inputs are the files a `voxelfm demo` run wrote
(the moved copy of lung1, the landmarks given on lung1, the tumour segmentation, the case library), loaded
into the scene; each capability runs through its Slicer logic's one-call form with the bundled voxelfm-tiny:

    .venv/bin/voxelfm demo --out demo_out
    .venv-slicerapp/bin/python Resources/Screenshots/render_module_screenshots.py demo_out
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "VoxelFMExtension"))
sys.path.insert(0, str(HERE))

import slicer  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from render_screenshots import centre_on, slice_view  # noqa: E402
from trame_slicer.core import SlicerApp  # noqa: E402
from trame_slicer.views import DirectViewFactory  # noqa: E402
from vtkmodules.vtkIOImage import vtkPNGWriter  # noqa: E402
from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter  # noqa: E402

from voxelfm.localize.markups_json import read_point_list  # noqa: E402
from voxelfm.samples.fetch import fetch_sample_data  # noqa: E402
from VoxelFMLib import LocalisationLogic, ReportLogic, RetrievalLogic  # noqa: E402

MODEL = {"model": "voxelfm-tiny", "device": "cpu"}
BAR = 34


def grab(view) -> Image.Image:
    view.render()
    f = vtkWindowToImageFilter()
    f.SetInput(view.render_window())
    f.Update()
    tmp = HERE / ".grab.png"
    w = vtkPNGWriter()
    w.SetFileName(str(tmp))
    w.SetInputConnection(f.GetOutputPort())
    w.Write()
    img = Image.open(tmp).convert("RGB")
    img.load()
    tmp.unlink()
    return img


def titled(panels: list[tuple[str, Image.Image]], title: str, footer: str = "") -> Image.Image:
    """Panels side by side, each with its caption, under one title (and an optional text footer)."""
    width = sum(p.width for _, p in panels) + 6 * (len(panels) - 1)
    lines = [ln for para in footer.splitlines() for ln in textwrap.wrap(para, 150)] if footer else []
    height = BAR + 22 + panels[0][1].height + 16 * len(lines) + (10 if lines else 0)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    draw.text((8, 10), title, fill=(0, 0, 0))
    x = 0
    for caption, panel in panels:
        draw.text((x + 6, BAR + 4), caption, fill=(20, 20, 120))
        out.paste(panel, (x, BAR + 22))
        x += panel.width + 6
    y = BAR + 22 + panels[0][1].height + 6
    for ln in lines:
        draw.text((8, y), ln, fill=(0, 0, 0))
        y += 16
    return out


def load(app, path: Path, name: str):
    node = app.volumes_logic.AddArchetypeVolume(str(path), name)
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1500, -500)
    return node


def point_node(scene, path: Path, name: str, colour):
    points = read_point_list(path)
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for label, ras in zip(points.names, points.ras, strict=True):
        node.AddControlPoint(*[float(v) for v in ras], label)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetSelectedColor(*colour)
    return node


def show(app, view, volume, ras, fov: float) -> Image.Image:
    view.set_background_volume_id(volume.GetID())
    centre_on(view, ras, fov)
    return grab(view)


def main(demo: Path) -> None:
    torch.set_num_threads(2)
    app = SlicerApp()
    slicer.mrmlScene = app.scene
    app.view_manager.register_factory(DirectViewFactory(do_render_offscreen=True))
    lung1 = load(app, fetch_sample_data(case="lung1").image, "lung1")
    moved = load(app, demo / "cases" / "lung1_moved.nrrd", "lung1 moved + cropped")
    given = point_node(app.scene, demo / "landmarks_lung1.mrk.json", "landmarks (lung1)", (0.1, 0.9, 0.3))
    view = slice_view(app, "Red", "Axial")
    app.display_manager.show_volume(lung1)

    # Localize: the points given on lung1, found in the moved and cropped copy
    found = LocalisationLogic(**MODEL).run(moved, [(lung1, given)]).node
    ras = np.array(found.GetNthControlPointPositionWorld(0))
    given.GetDisplayNode().SetVisibility(True)
    found.GetDisplayNode().SetVisibility(False)
    ref_ras = np.array(given.GetNthControlPointPositionWorld(0))
    left = show(app, view, lung1, ref_ras, 250.0)
    given.GetDisplayNode().SetVisibility(False)
    found.GetDisplayNode().SetVisibility(True)
    right = show(app, view, moved, ras, 250.0)
    titled(
        [
            ("lung1 with the points given (nodule, bones)", left),
            ("moved + cropped copy: points found", right),
        ],
        "VoxelFM Localize: LocalisationLogic.run(target, [(reference, points)]) -> a new point list",
    ).save(HERE / "voxelfm_localize.png")
    found.GetDisplayNode().SetVisibility(False)

    # Retrieve: lung1 as the query of the demo's case library; the best hit loaded and shown
    retrieval = RetrievalLogic(**MODEL)
    hits = retrieval.run_query(str(demo / "case_library"), lung1, k=3).hits
    q = show(app, view, lung1, np.array(given.GetNthControlPointPositionWorld(1)), 330.0)
    panels = [("query: lung1", q)]
    for n, hit in enumerate(hits[:2], 1):
        loaded = retrieval.load_hit(app.scene, hit).node
        loaded.GetDisplayNode().AutoWindowLevelOff()
        loaded.GetDisplayNode().SetWindowLevel(1500, -500)
        centre = np.array(loaded.GetImageData().GetCenter())  # ijk of the middle voxel
        m = __import__("vtk").vtkMatrix4x4()
        loaded.GetIJKToRASMatrix(m)
        mid = np.array(m.MultiplyPoint([*centre, 1.0])[:3])
        panels.append(
            (f"#{n} {hit.case_id}: similarity {hit.score:.3f}", show(app, view, loaded, mid, 330.0))
        )
    titled(
        panels, "VoxelFM Retrieve: RetrievalLogic.run_query(library, volume, k) -> hits; load_hit -> volume"
    ).save(HERE / "voxelfm_retrieve.png")

    # Report: the demo's tumour segmentation measured, the library's similar cases, one draft with evidence
    from voxelfm.imaging.io import read_volume

    seg_node = app.segmentation_editor.create_empty_segmentation_node()
    seg_node.SetName("tumour")
    app.segmentation_editor.set_active_segmentation(seg_node, lung1)
    sid = app.segmentation_editor.add_empty_segment(segment_name="tumour", segment_color=[1.0, 0.85, 0.1])
    mask = read_volume(demo / "tumour_seg.nii.gz", check_hu=False).array > 0
    app.segmentation_editor.active_segment_modifier.set_segment_labelmap(sid, mask.astype(np.uint8))
    draft = (
        ReportLogic(**MODEL)
        .run(lung1, segmentation_nodes=[seg_node], library=str(demo / "case_library"))
        .draft
    )
    img = show(app, view, lung1, np.array(given.GetNthControlPointPositionWorld(0)), 120.0)
    evidence = "\n".join(f"- {s.text}  [evidence: {', '.join(sorted(s.kinds()))}]" for s in draft.sentences)
    titled(
        [("lung1 with the segmentation that is measured", img)],
        "VoxelFM Report: ReportLogic.run(volume, segmentation_nodes=[...], library=...) -> a text node",
        draft.text
        + "\n"
        + evidence
        + "\n(the demo's library holds a moved copy of lung1 itself: its report is"
        " the nearest neighbour here)",
    ).save(HERE / "voxelfm_report.png")
    print("wrote", *(HERE / f"voxelfm_{n}.png" for n in ("localize", "retrieve", "report")))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out").resolve())

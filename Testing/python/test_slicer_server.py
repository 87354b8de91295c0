"""The Slicer logics computing through a real `voxelfm serve` on 127.0.0.1: the scene gets the same results.

Each capability runs through its logic twice in the same scene (bare MRML and the SlicerApp's), once here and
once with ``server=URL``: voxel-identical segments (fit, refit after the user paints more, apply the probe),
identical features, the same landmarks, the same ranking and scores. A refit of an unchanged CT hashes it
once. A wrong key or an unreachable server raises one clear error and leaves the scene as it was.
Real CT (abdomen_3mm, cropped), the bundled tiny model, CPU fp32 on both sides.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from mrml_scene import require_slicer_core
from report_cases import registry_findings_probe
from server_harness import KEY, free_port, library_server

require_slicer_core("faiss")  # skips this module without slicer-core or faiss

from slicer_builders import add_segmentation, segment_masks  # noqa: E402

from voxelfm.cli.main import main  # noqa: E402
from voxelfm.client.errors import KeyRefusedError, ServerRequestError, ServerUnreachableError  # noqa: E402
from voxelfm.errors import InputError  # noqa: E402
from voxelfm.imaging.io import read_volume, write_volume  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.localize.points import PointList  # noqa: E402
from VoxelFMLib import (  # noqa: E402
    FeaturesLogic,
    FewShotSegmentLogic,
    LocalisationLogic,
    ReportLogic,
    RetrievalLogic,
    markups_nodes,
    volume_nodes,
)
from VoxelFMLib.scene_guard import node_ids  # noqa: E402

pytestmark = [pytest.mark.slicer, pytest.mark.usefixtures("server_thread_count")]

MODEL = {"model": "voxelfm-tiny", "device": "cpu", "precision": "fp32", "max_tokens": 4096}
SLICES = slice(6, 22)  # 16 of abdomen_3mm's 30 slices: small enough for two runs per scene kind
POINTS_IJK = {"a": (40, 50, 4), "b": (80, 45, 8), "c": (61, 70, 12)}
SHIFT_MM = np.array([6.0, -3.0, 3.0])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with library_server(tmp_path_factory.mktemp("slicer_server"), "scene") as s:
        yield s


@pytest.fixture(scope="module")
def ct(data_dir):
    """A crop of a real abdomen CT and two of its organs' label masks (the largest labels)."""
    d = data_dir / "totalseg" / "abdomen_3mm"
    image, labels = read_volume(str(d / "ct.nii.gz")), read_volume(str(d / "labels.nii.gz"))
    array = np.ascontiguousarray(image.array[SLICES]).astype(np.float32)
    m = image.ijk_to_ras.copy()
    m[:3, 3] += m[:3, :3] @ np.array(
        [0.0, 0.0, SLICES.start]
    )  # keep world positions (array order is k, j, i)
    lab = np.asarray(labels.array[SLICES])
    values, counts = np.unique(lab[lab > 0], return_counts=True)
    first, second = values[np.argsort(counts)[-2:]]
    return Volume(array, m, "abdomen"), {"organ_a": lab == first, "organ_b": lab == second}


def _logics(cls, server, **kw):
    return cls(**MODEL, **kw), cls(**MODEL, server=server.url, api_key=KEY, **kw)


def _painted(scene, volume, masks, slices):
    keep = np.zeros(volume.array.shape, bool)
    keep[list(slices)] = True
    return add_segmentation(scene, {n: m & keep for n, m in masks.items()}, volume.ijk_to_ras)


def _predicted(result, volume_node):
    masks = segment_masks(result.output_node, volume_node)
    return {name: masks[name] for name in masks}


def test_segment_fit_refit_apply_through_the_server_is_voxel_identical(a_slicer_app, server, ct):
    """Fit, paint one more slice and refit, then apply the saved probe: the same segments either way."""
    scene, (volume, masks) = a_slicer_app.scene, ct
    node = volume_nodes.create_volume_node(scene, volume, name="abdomen")
    painted = _painted(scene, volume, masks, (3, 11))
    local, remote = _logics(FewShotSegmentLogic, server)
    here, there = local.run(node, painted), remote.run(node, painted)
    assert there.output_node.GetID() != here.output_node.GetID()
    first = _predicted(here, node)
    assert first.keys() == _predicted(there, node).keys() == set(masks)
    for name, mask in _predicted(there, node).items():
        assert np.array_equal(mask, first[name]), name
    assert any(m.any() for m in first.values())
    assert remote.server.hashed == 1

    # the user paints one more slice: a refit sends only labels (the CT is hashed once for this node state)
    add_segmentation(scene, {"organ_a": masks["organ_a"] & _slab(volume, 7)}, volume.ijk_to_ras, node=painted)
    here2 = local.run(node, painted, output_node=here.output_node)
    there2 = remote.run(node, painted, output_node=there.output_node)
    again = _predicted(there2, node)
    for name, mask in _predicted(here2, node).items():
        assert np.array_equal(again[name], mask), name
    assert remote.server.hashed == 1
    xml = _scene_xml(scene)
    assert "abdomen" in xml and KEY not in xml  # the key is held by the logic, never written to the scene
    assert remote.server.client.connection.transfer.sent < volume.array.nbytes  # one compressed upload

    # apply the fitted probe to the CT as a new segmentation
    applied_here = local.apply_probe(node, local.last_probe)
    applied_there = remote.apply_probe(node, remote.last_probe)
    from_server = _predicted(applied_there, node)
    for name, mask in _predicted(applied_here, node).items():
        assert np.array_equal(from_server[name], mask), name


def _scene_xml(scene) -> str:
    """The scene as a .mrml file would hold it."""
    scene.SetSaveToXMLString(1)
    scene.Commit()
    try:
        return scene.GetSceneXMLString()
    finally:
        scene.SetSaveToXMLString(0)


def _slab(volume, k):
    out = np.zeros(volume.array.shape, bool)
    out[k] = True
    return out


def test_features_through_the_server_are_identical(a_slicer_app, server, ct):
    node = volume_nodes.create_volume_node(a_slicer_app.scene, ct[0], name="abdomen")
    local, remote = _logics(FeaturesLogic, server)
    here, there = local.extract(node, cache=False), remote.extract(node, cache=False)
    assert np.array_equal(here.patch, there.patch)
    assert np.array_equal(here.grid_to_ras, there.grid_to_ras)
    before = node_ids(a_slicer_app.scene)
    pca = remote.show_pca(there, node)
    assert node_ids(a_slicer_app.scene) - before == {pca.GetID(), pca.GetDisplayNodeID()}


def test_localise_through_the_server_gives_the_same_landmarks(a_slicer_app, server, ct):
    """A reference CT with three points, a shifted copy as target: the same predicted points, both ways."""
    scene, volume = a_slicer_app.scene, ct[0]
    ref = volume_nodes.create_volume_node(scene, volume, name="reference")
    ijk = np.array(list(POINTS_IJK.values()), np.float64)
    ras = ijk @ volume.ijk_to_ras[:3, :3].T + volume.ijk_to_ras[:3, 3]
    points = markups_nodes.write_points_node(
        scene, PointList(list(POINTS_IJK), ras, name="ref"), "ref points"
    )
    m = volume.ijk_to_ras.copy()
    m[:3, 3] += SHIFT_MM
    target = volume_nodes.create_volume_node(scene, Volume(volume.array.copy(), m, "target"), name="target")
    local, remote = _logics(LocalisationLogic, server)
    here = markups_nodes.points_from_node(local.run(target, [(ref, points)]).node)
    there = markups_nodes.points_from_node(remote.run(target, [(ref, points)]).node)
    assert here.names == there.names == list(POINTS_IJK)
    assert np.array_equal(here.ras, there.ras)


def test_query_through_the_server_ranks_the_same(a_slicer_app, server, ct, tmp_path):
    """The same three scene volumes added to a local library and to the server's: same hits, same scores."""
    scene, volume = a_slicer_app.scene, ct[0]
    rng = np.random.default_rng(3)
    nodes = [volume_nodes.create_volume_node(scene, volume, name="case_a")]
    flipped = Volume(np.ascontiguousarray(volume.array[:, ::-1]), volume.ijk_to_ras, "b")
    nodes.append(volume_nodes.create_volume_node(scene, flipped, name="case_b"))
    noisy = Volume(
        volume.array + rng.normal(0, 200, volume.array.shape).astype(np.float32), volume.ijk_to_ras
    )
    nodes.append(volume_nodes.create_volume_node(scene, noisy, name="case_c"))
    local, remote = _logics(RetrievalLogic, server)
    library = tmp_path / "lib"
    assert not local.add_volume_nodes(library, nodes).failed
    added = remote.add_volume_nodes("scene", nodes)
    assert [r.case_id for r in added.added] == ["case_a", "case_b", "case_c"]
    query = volume_nodes.create_volume_node(scene, Volume(volume.array[1:], volume.ijk_to_ras), name="query")
    here, there = local.run_query(library, query, k=3), remote.run_query("scene", query, k=3)
    assert [h.case_id for h in there.hits] == [h.case_id for h in here.hits]
    assert [h.score for h in there.hits] == pytest.approx([h.score for h in here.hits], abs=1e-6)
    assert here.hits[0].case_id == "case_a"
    # the best hit is a scene volume the user still has open: that node is the case, nothing is fetched
    assert remote.load_hit(scene, there.hits[0]).node.GetID() == nodes[0].GetID()
    # thumbnails: the server renders them; scene volumes have no image file on either side, so each says so
    here = local.run_query(library, query, k=3, thumbnails=tmp_path / "here")
    there = remote.run_query("scene", query, k=3, thumbnails=tmp_path / "there")
    assert there.warnings == here.warnings and sum("No thumbnail" in w for w in here.warnings) == 3


def test_opening_a_hit_of_the_server_library_fetches_its_image(a_slicer_app, server, ct):
    """Two cases of the server's library, one added from an image file of the server and one from a scene
    volume the user has since closed: each hit opens as a node with the case image's voxels and geometry,
    opening it again reuses that node, and a refused key or an unknown case adds nothing."""
    scene, volume = a_slicer_app.scene, ct[0]
    m = volume.ijk_to_ras.copy()
    m[:3, 3] += SHIFT_MM
    image = server.data.parent / "file_case.nii.gz"  # the same file for each scene kind: added once
    if not image.exists():
        write_volume(Volume(volume.array[2:].copy(), m, "file_case"), image)
    add = ["index", "add", str(server.library), str(image), "--case-id", "file_case", "--no-progress"]
    assert main([*add, "--model", "voxelfm-tiny", "--max-tokens", "4096"]) == 0
    closed = Volume(np.ascontiguousarray(volume.array[:, :, ::-1]) + 7.5, volume.ijk_to_ras, "closed_case")
    node = volume_nodes.create_volume_node(scene, closed, name="closed_case")
    remote = RetrievalLogic(**MODEL, server=server.url, api_key=KEY)
    assert [r.case_id for r in remote.add_volume_nodes("scene", [node]).added] == ["closed_case"]
    scene.RemoveNode(node)  # the user closes it: its image is now only on the server
    query = volume_nodes.create_volume_node(scene, volume, name="query")
    hits = {h.case_id: h for h in remote.run_query("scene", query, k=10).hits}
    truth = {"file_case": read_volume(str(image)), "closed_case": closed}

    before = node_ids(scene)
    refused = RetrievalLogic(**MODEL, server=server.url, api_key="not-a-key")
    with pytest.raises(KeyRefusedError, match="refused the API key"):
        refused.load_hit(scene, hits["file_case"])
    nobody = replace(hits["file_case"], case=replace(hits["file_case"].case, case_id="nobody"))
    with pytest.raises(ServerRequestError, match="library 'scene' of this server has no case 'nobody'"):
        remote.load_hit(scene, nobody)
    assert node_ids(scene) == before

    for case_id, expected in truth.items():
        view = remote.load_hit(scene, hits[case_id])
        opened = volume_nodes.volume_from_node(view.node)
        assert view.node.GetName() == case_id
        assert np.array_equal(opened.array, expected.array), case_id
        assert np.array_equal(opened.ijk_to_ras, expected.ijk_to_ras), case_id
        added = node_ids(scene) - before
        assert view.node.GetID() in added
        assert remote.load_hit(scene, hits[case_id]).node.GetID() == view.node.GetID()  # reused, not fetched
        assert node_ids(scene) - before == added
        before = node_ids(scene)


def test_the_panel_downloads_a_server_hit_off_the_scene_then_writes_it(a_slicer_app, server, ct):
    """The Retrieve panel's two steps: ``fetch_hit`` (worker thread: no scene, as ``runInWorker`` calls it) and
    ``load_hit(scene, hit, fetched)`` (main thread); ``loaded_node`` says when no download is needed."""
    scene, volume = a_slicer_app.scene, ct[0]
    remote = RetrievalLogic(**MODEL, server=server.url, api_key=KEY)
    panel = Volume(np.ascontiguousarray(volume.array[::-1]) - 3.0, volume.ijk_to_ras, "panel_case")
    node = volume_nodes.create_volume_node(scene, panel, name="panel_case")
    remote.add_volume_nodes("scene", [node])  # (added once: the second scene kind finds it there)
    scene.RemoveNode(node)  # closed: its image is now only on the server
    query = volume_nodes.create_volume_node(scene, volume, name="query")
    hit = next(h for h in remote.run_query("scene", query, k=50).hits if h.case_id == "panel_case")
    assert remote.loaded_node(scene, hit) is None
    before = node_ids(scene)
    fetched = remote.fetch_hit(hit, progress=lambda f, m: None, cancel=None)
    assert node_ids(scene) == before  # the download touches no scene
    view = remote.load_hit(scene, hit, fetched)
    assert np.array_equal(volume_nodes.volume_from_node(view.node).array, fetched.array)
    assert remote.loaded_node(scene, hit).GetID() == view.node.GetID()
    local = RetrievalLogic(**MODEL)
    assert local.fetch_hit(hit) is None  # without a server there is nothing to download


@pytest.mark.parametrize("where", ["wrong key", "unreachable"])
def test_a_refused_key_or_absent_server_leaves_the_scene_as_it_was(a_slicer_app, server, ct, where):
    scene, (volume, masks) = a_slicer_app.scene, ct
    node = volume_nodes.create_volume_node(scene, volume, name="abdomen")
    painted = _painted(scene, volume, masks, (3, 11))
    url = server.url if where == "wrong key" else f"http://127.0.0.1:{free_port()}"
    error = KeyRefusedError if where == "wrong key" else ServerUnreachableError
    before = node_ids(scene)
    logic = FewShotSegmentLogic(**MODEL, server=url, api_key="not-a-key")
    with pytest.raises(error) as caught:
        logic.run(node, painted)
    message = str(caught.value)
    assert ("refused the API key" in message) if where == "wrong key" else ("cannot be reached" in message)
    assert "\n" not in message
    with pytest.raises(error):
        FeaturesLogic(**MODEL, server=url, api_key="not-a-key").run(node)
    assert node_ids(scene) == before
    assert painted.GetSegmentation().GetNumberOfSegments() == 2


@pytest.fixture(scope="module")
def findings_probe(tmp_path_factory):
    return registry_findings_probe(tmp_path_factory.mktemp("findings"))


def test_report_through_the_server_drafts_the_same_text(a_slicer_app, server, ct, findings_probe):
    """A findings probe, two segmented organs (one of them edited into two pieces) and an empty segment: the
    same draft; a trained report model stays on this computer (said, nothing written)."""
    scene, (volume, masks) = a_slicer_app.scene, ct
    node = volume_nodes.create_volume_node(scene, volume, name="abdomen")
    organs = dict(masks)
    organs["organ_b"] = organs["organ_b"] & ~_slab(volume, 8)
    organs["empty"] = np.zeros(volume.array.shape, bool)
    seg = add_segmentation(scene, organs, volume.ijk_to_ras)
    local, remote = _logics(ReportLogic, server)
    here = local.run(node, probes=[findings_probe], segmentation_nodes=[seg])
    there = remote.run(node, probes=[findings_probe], segmentation_nodes=[seg])
    assert "organ_a" in here.text_node.GetText()
    assert any(e["kind"] == "probe" for s in here.draft.sentences for e in s.evidence)
    assert there.text_node.GetText() == here.text_node.GetText()
    assert [s.to_dict() for s in there.draft.sentences] == [s.to_dict() for s in here.draft.sentences]
    assert there.draft.warnings == here.draft.warnings and "empty" in " ".join(here.draft.warnings)
    assert there.text_node.GetID() != here.text_node.GetID()
    before = node_ids(scene)
    with pytest.raises(InputError, match="runs on this computer"):
        remote.run(node, vlm="report_model_run")
    assert node_ids(scene) == before


def test_a_similar_case_of_a_server_drafted_report_opens_from_the_server(a_slicer_app, server, ct, tmp_path):
    """A draft from the server's library names its similar cases by library and case id (not the server's file
    paths); "open the case" fetches the image from the server once, and without the server says why."""
    scene, volume = a_slicer_app.scene, ct[0]
    image = server.data.parent / "reported_case.nii.gz"  # the same file for each scene kind: added once
    if not image.exists():
        write_volume(Volume(volume.array[1:].copy(), volume.ijk_to_ras, "reported_case"), image)
    report = tmp_path / "report.txt"
    report.write_text("Findings: The liver is enlarged. No pleural effusion.")
    add = [
        "index",
        "add",
        str(server.library),
        str(image),
        "--case-id",
        "reported_case",
        "--report",
        str(report),
    ]
    assert main([*add, "--no-progress", "--model", "voxelfm-tiny", "--max-tokens", "4096"]) == 0
    node = volume_nodes.create_volume_node(scene, volume, name="abdomen")
    remote = ReportLogic(**MODEL, server=server.url, api_key=KEY)
    draft = remote.run(node, library="scene").draft
    cases = [
        t
        for i in range(len(draft.sentences))
        for t in ReportLogic.targets(draft, i)
        if t.case_id == "reported_case"
    ]
    assert cases and all(t.library == "scene" and not t.image for t in cases)
    before = node_ids(scene)
    with pytest.raises(InputError, match="server library scene"):
        ReportLogic.open_case(scene, cases[0])
    assert node_ids(scene) == before
    opened = ReportLogic.open_case(scene, cases[0], remote.server)
    assert opened.GetID() in node_ids(scene) - before
    np.testing.assert_array_equal(volume_nodes.volume_from_node(opened).array, read_volume(str(image)).array)
    assert ReportLogic.open_case(scene, cases[0], remote.server) is opened  # fetched once

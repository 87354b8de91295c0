"""Localisation, retrieval and report drafting through `voxelfm serve`: the same outputs as a local run.

A real server process on 127.0.0.1 (server_harness) with a --libraries file naming a case library by id, the
real CLI, small real CT (totalseg abdomen_3mm and a shifted, cropped copy; torso_3mm) and the bundled tiny
model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from report_cases import planted_ct, registry_findings_probe
from server_harness import KEY, free_port, library_server, running_server

from voxelfm.cli.main import main
from voxelfm.client.analysis import remote_case_volume
from voxelfm.client.client import VoxelFMClient
from voxelfm.client.errors import KeyRefusedError, ServerRequestError
from voxelfm.errors import InputError
from voxelfm.features.spec import ModelSpec
from voxelfm.imaging.io import read_volume, write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.localize.markups_json import read_point_list, write_point_list
from voxelfm.localize.pipeline import LocalisationPipeline, Reference
from voxelfm.localize.points import PointList
from voxelfm.localize.probe import ProbeConfig
from voxelfm.localize.probe_file import save_localisation_probe
from voxelfm.report.template_files import templates_dir
from voxelfm.retrieval.library import CaseLibrary
from voxelfm.retrieval.records import CaseRecord
from voxelfm.server.libraries import case_image
from VoxelFMLib.server_compute import ServerChoice
from VoxelFMLib.server_libraries import chosen_library, describe_server_library, library_choices

MODEL = ["--model", "voxelfm-tiny", "--max-tokens", "4096"]
# voxel (i, j, k) of abdomen_3mm; the last lies in slices the cropped target does not hold
POINTS_IJK = {"a": (40, 50, 6), "b": (80, 45, 12), "c": (61, 70, 15), "d": (30, 40, 18), "top": (60, 50, 28)}
TARGET_SLICES = 20  # the target keeps slices 0..19: "top" is 24 mm beyond its last slice
SHIFT_MM = np.array([9.0, -6.0, 3.0])

pytestmark = pytest.mark.usefixtures("server_thread_count")  # local and server sum alike


@pytest.fixture(scope="module")
def files(tmp_path_factory, data_dir):
    """Reference CT + points, a shifted copy cropped to 20 slices, and a one-case-library image."""
    d = tmp_path_factory.mktemp("analysis")
    ref_path = data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz"
    ref = read_volume(str(ref_path))
    ijk = np.array(list(POINTS_IJK.values()), np.float64)
    ras = ijk @ ref.ijk_to_ras[:3, :3].T + ref.ijk_to_ras[:3, 3]
    write_point_list(PointList(list(POINTS_IJK), ras, name="ref"), d / "ref.mrk.json")
    m = ref.ijk_to_ras.copy()
    m[:3, 3] += SHIFT_MM
    write_volume(Volume(ref.array[:TARGET_SLICES].copy(), m, "target"), d / "target.nii.gz")
    return {"ref": ref_path, "points": d / "ref.mrk.json", "target": d / "target.nii.gz", "dir": d}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with library_server(tmp_path_factory.mktemp("server"), "abdomen") as s:
        yield s


def _markups(path):
    return json.loads(path.read_text())


def test_localize_through_the_server_writes_the_same_markups(server, files, tmp_path, monkeypatch):
    """From a reference scan (+ --save-template), then from the saved templates: same files as local."""
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    target, ref = str(files["target"]), ["--reference", str(files["ref"]), str(files["points"])]
    for where, extra in (("local", []), ("server", ["--server", server.url])):
        save = ["--save-template", str(tmp_path / f"{where}-t")]
        assert (
            main(
                [
                    "localize",
                    target,
                    *ref,
                    "--out",
                    str(tmp_path / f"{where}.mrk.json"),
                    *save,
                    *MODEL,
                    *extra,
                ]
            )
            == 0
        )
        again = [
            "--template",
            str(tmp_path / f"{where}-t-1.npz"),
            "--out",
            str(tmp_path / f"{where}-again.mrk.json"),
        ]
        assert main(["localize", target, *again, *MODEL, *extra]) == 0
    local, remote = _markups(tmp_path / "local.mrk.json"), _markups(tmp_path / "server.mrk.json")
    assert local == remote  # same labels, positions, "confidence 0.NN" descriptions and position status
    assert (
        _markups(tmp_path / "local-again.mrk.json") == _markups(tmp_path / "server-again.mrk.json") == local
    )
    with np.load(tmp_path / "local-t-1.npz") as a, np.load(tmp_path / "server-t-1.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    status = {p["label"]: p["positionStatus"] for p in local["markups"][0]["controlPoints"]}
    assert status["top"] == "missing" and list(status.values()).count("defined") == 4
    found = read_point_list(tmp_path / "server.mrk.json")  # the placed points, RAS: moved by the shift
    truth = read_point_list(files["points"])
    moved = [
        np.linalg.norm(found.ras[n] - truth.position(name) - SHIFT_MM) for n, name in enumerate(found.names)
    ]
    assert len(moved) == 4 and np.median(moved) < 10.0, moved
    # four server runs, two scans: the server holds exactly the target and the reference, once each
    stored = {p.stem for p in (server.data / "volumes").rglob("*.vfm")}
    assert stored == {read_volume(str(files[n])).content_hash() for n in ("target", "ref")}


def test_localize_with_a_probe_through_the_server(server, files, tmp_path, monkeypatch):
    """A localisation probe's files travel with the request; same markups as applying it here."""
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    ref = read_volume(str(files["ref"]))
    points = read_point_list(files["points"])
    pipeline = LocalisationPipeline(ModelSpec("voxelfm-tiny", device="cpu", max_tokens=4096))
    probe = pipeline.fit_probe([Reference(ref, points)], ProbeConfig(steps=3, seed=0))
    save_localisation_probe(probe, tmp_path / "probe")
    target = str(files["target"])
    for where, extra in (("local", []), ("server", ["--server", server.url])):
        out = ["--out", str(tmp_path / f"{where}.mrk.json")]
        assert main(["localize", target, "--probe", str(tmp_path / "probe"), *out, *MODEL, *extra]) == 0
    local = _markups(tmp_path / "local.mrk.json")
    assert local == _markups(tmp_path / "server.mrk.json") and len(local["markups"][0]["controlPoints"]) == 5


REPORTS = {
    "abdomen": "Liver: The liver is delineated, of normal size.\nSpleen: The spleen is delineated.",
    "torso": "Kidneys: Both kidneys are delineated. No hydronephrosis.",
    "pulmonary": "Heart: The pulmonary artery is delineated, of normal calibre.",
}
CASES = {
    "abdomen": "totalseg/abdomen_3mm/ct.nii.gz",
    "torso": "totalseg/torso_3mm/ct.nii.gz",
    "pulmonary": "totalseg/pulmonary_1p5mm/ct.nii.gz",
}


def _json_out(capsys, argv: list[str]):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def library(server, files, data_dir):
    """The server's library 'abdomen' (folder server.library), two cases added on this computer."""
    for case_id in ("abdomen", "torso"):
        report = files["dir"] / f"{case_id}.txt"
        report.write_text(REPORTS[case_id])
        image = str(data_dir / CASES[case_id])
        args = ["index", "add", str(server.library), image, "--report", str(report), "--case-id", case_id]
        assert main([*args, *MODEL, "--no-progress"]) == 0
    return server.library


def test_index_add_and_list_through_the_server(server, library, files, data_dir, capsys, monkeypatch):
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    report = files["dir"] / "pulmonary.txt"
    report.write_text(REPORTS["pulmonary"])
    image = str(data_dir / CASES["pulmonary"])
    add = ["index", "add", "abdomen", image, "--report", str(report), "--case-id", "pulmonary", *MODEL]
    assert main([*add, "--server", server.url]) == 0
    local = _json_out(capsys, ["index", "list", str(library), "--json"])
    remote = _json_out(capsys, ["index", "list", "abdomen", "--json", "--server", server.url])
    assert remote == local and [c["case_id"] for c in remote] == ["abdomen", "torso", "pulmonary"]
    assert remote[2]["has_report"] and remote[2]["path"] == ""  # an uploaded volume: no file of the server's
    assert (
        main(["index", "list", "elsewhere", "--server", server.url]) == 2
    )  # an id the server does not offer


@pytest.mark.usefixtures("server_thread_count")  # the thumbnails' resampling sums in the server's order
def test_query_through_the_server_ranks_and_scores_as_local(
    server, library, files, data_dir, tmp_path, capsys, monkeypatch
):
    """Whole-volume (mean, cls) and region queries (ball, box, mask file): same hits, scores and places."""
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    target = str(files["target"])
    centre = read_point_list(files["points"]).position("b") + SHIFT_MM
    truth = read_volume(str(data_dir / "totalseg" / "abdomen_3mm" / "labels.nii.gz"), check_hu=False)
    m = truth.ijk_to_ras.copy()
    m[:3, 3] += SHIFT_MM
    write_volume(Volume(truth.array[:TARGET_SLICES].astype(np.uint8), m, "mask"), tmp_path / "mask.nii.gz")
    r, a, s = (f"{v:.1f}" for v in centre)
    queries = {
        "mean": [],
        "cls": ["--embedding", "cls", "-k", "2"],
        "ball": ["--roi", f"point:{r},{a},{s},25"],
        "box": ["--roi", f"box:{r},{a},{s},40,40,30"],
        "mask": ["--roi", f"mask:{tmp_path / 'mask.nii.gz'}:5"],
    }
    for name, extra in queries.items():
        local = _json_out(capsys, ["query", str(library), target, "--json", *extra, *MODEL, "--no-progress"])
        remote = _json_out(
            capsys,
            ["query", "abdomen", target, "--json", *extra, *MODEL, "--no-progress", "--server", server.url],
        )
        assert remote == local and len(local) >= 2, name
        assert ("ras" in local[0]) == (name in ("ball", "box", "mask")), name
    whole = _json_out(capsys, ["query", str(library), target, "--json", *MODEL, "--no-progress"])
    assert whole[0]["case_id"] == "abdomen"  # the target is a shifted crop of that case

    # --thumbnails: the server renders them from its cases' images; the same files, the same names
    out = {}
    for where, lib, extra in (("local", str(library), []), ("server", "abdomen", ["--server", server.url])):
        folder = tmp_path / f"thumbs-{where}"
        args = ["query", lib, target, "--json", "--thumbnails", str(folder), *MODEL, "--no-progress", *extra]
        hits = _json_out(capsys, args)
        out[where] = (folder, [{**h, "thumbnail": Path(h.get("thumbnail", "")).name} for h in hits])
    (here, local), (there, remote) = out["local"], out["server"]
    names = sorted(p.name for p in here.glob("*.png"))  # (each run folder's own record says when it was made)
    assert names and names == sorted(p.name for p in there.glob("*.png")) and remote == local
    assert all((here / n).read_bytes() == (there / n).read_bytes() for n in names)
    assert all(h["thumbnail"] for h in local if h["path"])  # every hit with an image has its PNG


def test_report_through_the_server_drafts_as_local(
    server, library, files, data_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    truth = read_volume(str(data_dir / "totalseg" / "abdomen_3mm" / "labels.nii.gz"), check_hu=False)
    m = truth.ijk_to_ras.copy()
    m[:3, 3] += SHIFT_MM
    seg = tmp_path / "seg.nii.gz"
    keep = np.isin(truth.array[:TARGET_SLICES], [1, 5]) * truth.array[:TARGET_SLICES]
    write_volume(Volume(keep.astype(np.uint8), m, "seg"), seg)
    (tmp_path / "seg.json").write_text(json.dumps({"1": "spleen", "5": "liver"}))
    target = str(files["target"])
    common = ["--json", "--segmentation", str(seg), "--neighbours", "2", *MODEL]
    local = _json_out(capsys, ["report", str(library), target, *common])
    remote = _json_out(capsys, ["report", "abdomen", target, *common, "--server", server.url])
    assert remote == local
    texts = " ".join(s["text"] for s in local["sentences"])
    assert "liver" in texts.lower() and any(s["evidence"] for s in local["sentences"])


@pytest.fixture(scope="module")
def findings_probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    image = write_volume(planted_ct(True, False, seed=300), root / "chest.nii.gz")
    return {"probe": registry_findings_probe(root), "image": image}


def test_report_with_a_probe_and_a_template_file_through_the_server_drafts_as_local(
    server, library, findings_probe, files, tmp_path, capsys, monkeypatch
):
    """Findings probes and a template of this computer travel with the request (their contents, never a path
    the server opens); the draft, its evidence and its named sources are the local ones."""
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    template = tmp_path / "mine.yaml"
    shipped = (templates_dir() / "chest_ct.yaml").read_text()
    template.write_text(
        shipped.replace('title: "CT chest', 'title: "My CT chest').replace(": false", ": true")
    )
    probe = ["--probe", str(findings_probe["probe"])]
    common = ["--json", *probe, "--template", str(template), *MODEL]
    image = str(findings_probe["image"])
    local = _json_out(capsys, ["report", image, *common])
    remote = _json_out(capsys, ["report", image, *common, "--server", server.url])
    assert remote == local
    assert any(e["kind"] == "probe" for s in local["sentences"] for e in s["evidence"])
    assert local["sources"]["template"] == str(template) and local["text"].startswith("My CT chest")
    assert local["sources"]["probes"][0]["path"] == str(findings_probe["probe"])
    with_library = ["report", str(library), str(files["target"]), *common, "--neighbours", "2"]
    local = _json_out(capsys, with_library)
    with_library[1] = "abdomen"
    assert _json_out(capsys, [*with_library, "--server", server.url]) == local


def test_server_paths_and_this_computers_files_are_refused(
    server, library, files, tmp_path, capsys, monkeypatch
):
    """Libraries only by an id the server offers; options that need this computer's files say so; exit 2."""
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    target = str(files["target"])
    capsys.readouterr()
    assert main(["query", "elsewhere", target, *MODEL, "--server", server.url]) == 2
    err = capsys.readouterr().err
    assert "no case library 'elsewhere'" in err and "it offers: abdomen" in err
    assert main(["query", str(library), target, *MODEL, "--server", server.url]) == 2  # a folder, not an id
    err = capsys.readouterr().err
    assert "not a folder" in err and "offers: abdomen" in err


def test_a_case_image_is_sent_by_library_and_case_id_only(server, library, data_dir):
    """GET /libraries/{id}/cases/{case}/volume: the case file's voxels and geometry; unknown library, unknown
    or path-like case id and a missing or wrong key are refused with one clear message each."""
    client = VoxelFMClient(server.url, KEY)
    image = read_volume(str(data_dir / CASES["torso"]), check_hu=False)
    sent = remote_case_volume(client, "abdomen", "torso")
    assert sent.name == "torso" and sent.array.dtype == np.int16  # whole-number HU travel as int16
    assert np.array_equal(sent.array, image.array) and np.array_equal(sent.ijk_to_ras, image.ijk_to_ras)
    with pytest.raises(ServerRequestError, match="HTTP 404.*no case library 'elsewhere'.*offers: abdomen"):
        remote_case_volume(client, "elsewhere", "torso")
    with pytest.raises(InputError, match="'../torso' is not a case id"):  # refused before anything is sent
        remote_case_volume(client, "abdomen", "../torso")
    for raw in ("..%2Ftorso", "no%20such", "torso%2F..%2F..%2Fabdomen"):  # a client that sends anything
        with pytest.raises(ServerRequestError, match="HTTP 404"):
            client.connection.request("GET", f"/libraries/abdomen/cases/{raw}/volume")
    for case_id in ("nobody", "abdomen.nii.gz"):
        with pytest.raises(
            ServerRequestError, match=r"HTTP 404.*library 'abdomen' of this server has no case"
        ):
            remote_case_volume(client, "abdomen", case_id)
    for key, why in ((None, "missing API key"), ("not-a-key", "the API key was refused")):
        with pytest.raises(KeyRefusedError, match=why):
            remote_case_volume(VoxelFMClient(server.url, key), "abdomen", "torso")


def test_a_case_whose_image_is_gone_says_so(tmp_path):
    """A case file moved away, an uploaded volume evicted from the store, a record with neither: 'not on the
    server any more'; a stored volume comes back exactly as uploaded."""
    uploaded = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4) + 0.5, np.diag([2.0, 2.0, 3.0, 1.0]))
    sha = uploaded.content_hash()
    stored = {sha: uploaded}.__getitem__
    records = {
        "moved": CaseRecord(1, "moved", "a.nii.gz", str(tmp_path / "a.nii.gz"), "file:/x/a.nii.gz"),
        "evicted": CaseRecord(2, "evicted", "", "", "volume:" + "0" * 64),
        "neither": CaseRecord(3, "neither", "", "", ""),
    }
    for record in records.values():
        with pytest.raises(
            InputError, match=f"case '{record.case_id}' of library 'lib': the case's image is not"
        ):
            case_image(record, "lib", stored)
    back = case_image(CaseRecord(4, "kept", "", "", "volume:" + sha), "lib", stored)
    assert back.array is uploaded.array and back.name == "kept"


def test_libraries_file_is_checked(tmp_path):
    from voxelfm.errors import InputError
    from voxelfm.server.libraries import library_folder, read_libraries

    assert read_libraries(None) == {}
    good = tmp_path / "libraries.json"
    good.write_text(json.dumps({"chest": "libs/chest", "abs": "/data/abs"}))
    assert read_libraries(good) == {"chest": tmp_path / "libs" / "chest", "abs": Path("/data/abs")}
    good.write_text(json.dumps({"../up": "x"}))
    with pytest.raises(InputError, match="library id '../up' must be"):
        read_libraries(good)
    with pytest.raises(InputError, match="no case library 'x'.*offers: none"):
        library_folder({}, "x")


def test_box_accepts_server_and_computes_here(files, data_dir, tmp_path):
    """`voxelfm box` is geometry on the client: with --server (even an unreachable one) the same ROI file."""
    labels = str(data_dir / "totalseg" / "abdomen_3mm" / "labels.nii.gz")
    for where, extra in (("local", []), ("server", ["--server", "http://127.0.0.1:9"])):
        assert (
            main(
                [
                    "box",
                    "--labels",
                    labels,
                    "--label",
                    "5",
                    "--out",
                    str(tmp_path / f"{where}.mrk.json"),
                    *extra,
                ]
            )
            == 0
        )
    assert _markups(tmp_path / "local.mrk.json") == _markups(tmp_path / "server.mrk.json")


# last: it kills the module's server
def test_the_panels_library_choice_lists_the_servers_libraries(server, library):
    """Retrieve and Report with "Compute: server": the list, the status line and what the logic gets."""
    choice = ServerChoice(server.url, KEY)
    listed = library_choices(choice)
    assert listed.ok and listed.ids == ["abdomen"] and listed.text == f"1 case library on {server.url}."
    line = describe_server_library(choice, "abdomen")
    with CaseLibrary.open(library) as lib:
        cases = len(lib.cases())
    assert line == (
        f"Server library abdomen: {cases} cases ({cases} with a report), backbone voxelfm-tiny."
    ), line
    assert "no case library 'elsewhere'" in describe_server_library(choice, "elsewhere")
    refused = library_choices(ServerChoice(server.url, "not-a-key"))
    assert not refused.ok and not refused.ids and "refused the API key" in refused.text
    gone = library_choices(ServerChoice(f"http://127.0.0.1:{free_port()}", KEY))
    assert not gone.ok and "cannot be reached" in gone.text
    assert chosen_library(f" {library} ", "abdomen", None) == str(library)  # this computer: the folder
    assert chosen_library(str(library), " abdomen ", choice) == "abdomen"  # a server: the id, never a path
    with pytest.raises(InputError, match="Choose one of the case libraries"):
        chosen_library(str(library), "", choice)


def test_a_restarted_server_serves_the_same_library(server, library, files, tmp_path, capsys, monkeypatch):
    """Killed (SIGKILL) and started again on the same data and libraries file: same cases, same ranking."""
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    target = str(files["target"])
    query = ["query", "abdomen", target, "--json", *MODEL, "--no-progress", "--server"]
    listing = ["index", "list", "abdomen", "--json", "--server"]
    before = _json_out(capsys, [*query, server.url]), _json_out(capsys, [*listing, server.url])
    server.kill()
    folder = server.data.parent
    with running_server(folder, "--libraries", str(folder / "libraries.json"), data=server.data) as again:
        after = _json_out(capsys, [*query, again.url]), _json_out(capsys, [*listing, again.url])
    assert after == before and len(before[1]) == 3

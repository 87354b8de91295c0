"""`voxelfm index` / `voxelfm query` on real CT (../shared/data) with a tiny random backbone.

The library holds four CTs of different patients (one a DICOM folder). Altered copies (crop, shift, noise,
mirrored storage, resampling) must retrieve their source at rank 1 through the CLI's JSON contract; a region
query must find the case holding the structure and a location inside it; bad inputs exit 2 with one clear
message and leave the library as it was.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from retrieval_helpers import ABDOMEN_IN_TORSO, ALTERATIONS, LIBRARY_CTS, altered, tiny_backbone

from voxelfm.cli.main import main
from voxelfm.imaging.io import read_volume, write_volume
from voxelfm.retrieval.library import CaseLibrary

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def library(data_dir, model, tmp_path_factory):
    """The library built by `voxelfm index add` (one call for three CTs, one with a report)."""
    root = tmp_path_factory.mktemp("retrieval")
    lib = root / "cases"
    paths = {name: str(data_dir / rel) for name, rel in LIBRARY_CTS.items()}
    common = ["--model", str(model), "--device", "cpu", "--no-progress"]
    assert (
        main(["index", "add", str(lib), *[paths[n] for n in ("torso", "pulmonary", "elastix")], *common]) == 0
    )
    report = root / "report.txt"
    report.write_text("FINDINGS: Clear lungs.\nIMPRESSION: Normal chest.")
    findings = '{"nodule": false}'
    args = [
        "index",
        "add",
        str(lib),
        paths["chest"],
        "--report",
        str(report),
        "--findings",
        findings,
        "--case-id",
        "chest",
    ]
    assert main([*args, *common]) == 0
    return lib, paths, root


def _query(capsys, lib, image, *extra) -> list[dict]:
    capsys.readouterr()
    assert main(["query", str(lib), str(image), "-k", "4", "--json", "--no-progress", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _case_of(paths: dict, hit: dict) -> str:
    return next(name for name, p in paths.items() if p == hit["path"])


def test_library_lists_its_cases_with_their_report(library, capsys):
    lib, paths, _ = library
    capsys.readouterr()
    assert main(["index", "list", str(lib), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["path"] for r in rows) == sorted(paths.values())
    chest = next(r for r in rows if r["case_id"] == "chest")
    assert chest["has_report"] and chest["path"] == paths["chest"]  # a DICOM folder is one case
    with CaseLibrary.open(lib) as opened:
        assert opened.findings("chest") == {"nodule": False}
        assert "Normal chest" in opened.report("chest")


# each alteration once through the CLI (the Slicer-logic tests repeat three of them on volume nodes)
@pytest.mark.parametrize(
    "kind, name", list(zip(ALTERATIONS, ["torso", "pulmonary", "chest", "torso", "pulmonary"], strict=True))
)
def test_altered_copies_retrieve_their_source_at_rank_1(library, capsys, kind, name, tmp_path):
    lib, paths, _ = library
    copy = write_volume(altered(read_volume(paths[name]), kind, seed=3), tmp_path / f"{name}_{kind}.nii.gz")
    hits = _query(capsys, lib, copy)
    assert _case_of(paths, hits[0]) == name, (kind, hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert set(hits[0]) == {"case_id", "path", "score"}  # the contract: no "ras" for whole volumes


def _liver_in_torso(data_dir, torso_shape) -> np.ndarray:
    """The abdomen_3mm liver label on the torso_3mm grid (abdomen is torso slices 82..111)."""
    abdomen = read_volume(str(data_dir / "totalseg/abdomen_3mm/labels.nii.gz"), check_hu=False)
    truth = np.zeros(torso_shape, bool)
    truth[ABDOMEN_IN_TORSO:] = abdomen.array == 5  # liver
    return truth


def test_region_query_finds_the_case_and_a_place_inside_the_structure(library, capsys, data_dir, tmp_path):
    from scipy import ndimage

    lib, paths, _ = library
    torso = read_volume(paths["torso"])
    truth = _liver_in_torso(data_dir, torso.array.shape)
    depth = ndimage.distance_transform_edt(truth, sampling=torso.spacing[::-1])
    k, j, i = np.unravel_index(np.argmax(depth), depth.shape)
    centre = (torso.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3]
    query = write_volume(altered(torso, "noise", seed=3), tmp_path / "torso_noisy.nii.gz")
    for roi in (
        f"box:{','.join(f'{v:.1f}' for v in centre)},40,40,40",
        f"point:{','.join(f'{v:.1f}' for v in centre)},15",
    ):
        hits = _query(capsys, lib, query, "--roi", roi)
        assert _case_of(paths, hits[0]) == "torso", (roi, hits)
        assert all(len(h["ras"]) == 3 for h in hits)
        ijk = np.linalg.inv(torso.ijk_to_ras) @ np.array([*hits[0]["ras"], 1.0])
        kk, jj, ii = (int(round(v)) for v in ijk[2::-1])
        assert truth[kk, jj, ii], f"{roi}: hit at {hits[0]['ras']} is not inside the liver"


def test_thumbnails_show_query_and_hit_side_by_side(library, capsys, tmp_path):
    from PIL import Image

    lib, paths, _ = library
    query = write_volume(altered(read_volume(paths["pulmonary"]), "noise"), tmp_path / "q.nii.gz")
    hits = _query(capsys, lib, query, "--roi", "point:0,200,600,20", "--thumbnails", str(tmp_path / "thumbs"))
    assert len(hits) == 4 and all(h["thumbnail"].endswith(".png") for h in hits)
    img = Image.open(hits[0]["thumbnail"])
    assert img.width > 2 * img.height - 10  # two square panels side by side


def _broken_copy(tmp_path, src, name):
    data = open(src, "rb").read()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 3])
    return bad


@pytest.mark.parametrize(
    "case", ["unreadable", "other_backbone", "unknown_case", "roi_outside", "bad_roi", "empty"]
)
def test_bad_inputs_exit_2_with_a_clear_message_and_leave_the_library_intact(
    library, capsys, case, tmp_path, model
):
    lib, paths, root = library
    target = lib
    if case == "empty":
        target = tmp_path / "empty"
        shutil.copytree(lib, target)
        for c in ("torso", "pulmonary", "elastix", "chest"):
            cid = {"chest": "chest"}.get(c) or next(
                r.case_id for r in CaseLibrary.open(target).cases() if r.path == paths[c]
            )
            assert main(["index", "remove", str(target), cid]) == 0
    with CaseLibrary.open(target) as opened:
        before = (opened.generation, [r.case_id for r in opened.cases()])
    capsys.readouterr()
    args = {
        "unreadable": [
            "index",
            "add",
            str(target),
            str(_broken_copy(tmp_path, paths["torso"], "bad.nii.gz")),
            "--no-progress",
        ],
        "other_backbone": [
            "index",
            "add",
            str(target),
            paths["torso"],
            "--model",
            str(tiny_backbone(tmp_path / "m2", seed=1)),
            "--no-progress",
        ],
        "unknown_case": ["index", "remove", str(target), "no-such-case"],
        "roi_outside": [
            "query",
            str(target),
            paths["pulmonary"],
            "--roi",
            "box:5000,5000,5000,10,10,10",
            "--no-progress",
        ],
        "bad_roi": ["query", str(target), paths["pulmonary"], "--roi", "box:1,2,3", "--no-progress"],
        "empty": ["query", str(target), paths["pulmonary"], "--no-progress"],
    }[case]
    with pytest.raises(SystemExit) if case == "bad_roi" else _no_exit() as exc:
        rc = main([*args, "--device", "cpu"] if args[0] == "index" and args[1] == "add" else args)
    err = capsys.readouterr().err
    if case == "bad_roi":
        assert exc.value.code == 2 and "box:R,A,S,SIZE_R,SIZE_A,SIZE_S needs 6" in err
    else:
        assert rc == 2, err
        expected = {
            "unreadable": "could not be added: .*bad.nii.gz",
            "other_backbone": "holds embeddings of backbone",
            "unknown_case": "No case 'no-such-case'",
            "roi_outside": "lies outside the volume",
            "empty": "has no cases",
        }[case]
        assert any(__import__("re").search(expected, line) for line in err.splitlines()), err
    with CaseLibrary.open(target) as opened:
        assert (opened.generation, [r.case_id for r in opened.cases()]) == before
        assert opened.indexes.check() == []


class _no_exit:
    """A context manager that expects nothing (pairs with pytest.raises in one `with`)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

"""Report drafting from a case library of the real CTs in ../shared/data (tiny random backbone).

The library holds the seven real CTs (resampled to 5 mm) with reports and findings written from what is known
of each case (report_library_cases.py). Proves: an altered copy of each case drafts a report whose extracted
findings match its source (micro/macro F1 printed), every sentence carries neighbour evidence with case id and
score; the CLI prints the JSON contract; a library without reports is a clear error; the Slicer logic drafts
from an open library into a text node whose evidence opens the neighbour case.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from report_cases import tiny_backbone
from report_library_cases import CASES, altered, load_case

from voxelfm.errors import InputError
from voxelfm.features.service import FeatureService
from voxelfm.features.spec import ModelSpec
from voxelfm.report.catalog import FINDING_NAMES
from voxelfm.report.evaluate import score_labels
from voxelfm.report.extract import RuleExtractor, as_binary
from voxelfm.report.library_source import library_neighbours
from voxelfm.report.neighbours import ConsensusConfig
from voxelfm.report.pipeline import ReportPipeline

torch.set_num_threads(1)
pytestmark = pytest.mark.slow  # builds a library of seven real CTs (about 15 s)


@pytest.fixture(scope="module")
def library(tmp_path_factory, data_dir):
    """The library (7 real cases with reports) + one without reports, built with a tiny random backbone."""
    from voxelfm.imaging.io import write_volume
    from voxelfm.retrieval.pipeline import RetrievalPipeline
    from voxelfm.retrieval.records import CaseSource

    root = tmp_path_factory.mktemp("report_library")
    spec = ModelSpec(str(tiny_backbone(root / "tiny")), device="cpu")
    service = FeatureService()
    volumes = {c.case_id: load_case(data_dir, c) for c in CASES}
    for case_id, volume in volumes.items():  # files, so the Slicer logic can open a neighbour case
        write_volume(volume, root / f"{case_id}.nii.gz")
    sources = [
        CaseSource(
            path=str(root / f"{c.case_id}.nii.gz"), case_id=c.case_id, report=c.report, findings=c.findings
        )
        for c in CASES
    ]
    retrieval = RetrievalPipeline(spec, service=service)
    retrieval.add_sources(root / "library", sources).raise_failures()
    bare = [CaseSource(path=str(root / f"{c.case_id}.nii.gz"), case_id=c.case_id) for c in CASES[:2]]
    retrieval.add_sources(root / "no_reports", bare).raise_failures()
    return {"root": root, "spec": spec, "service": service, "volumes": volumes, "path": root / "library"}


def _pipeline(library, k=3):
    return ReportPipeline(library["spec"], consensus_config=ConsensusConfig(k=k), service=library["service"])


def test_altered_copies_draft_their_source_findings(library):
    pipeline = _pipeline(library)
    source = library_neighbours(library["path"], library["spec"], library["service"])
    extractor = RuleExtractor()
    predicted, reference = [], []
    for n, case in enumerate(CASES):
        query = altered(library["volumes"][case.case_id], seed=n)
        draft = pipeline.draft(query, neighbours=source)
        assert draft.sentences, case.case_id
        for sentence in draft.sentences:
            assert sentence.evidence and all(e["kind"] == "neighbour" for e in sentence.evidence)
            assert all(isinstance(e["case_id"], str) and -1.0 <= e["score"] <= 1.0 for e in sentence.evidence)
        best = max((e for s in draft.sentences for e in s.evidence), key=lambda e: e["score"])
        assert best["case_id"] == case.case_id  # the altered copy finds its own source first
        predicted.append(as_binary(extractor.extract(draft.text)))
        reference.append([case.findings.get(f, 0) for f in FINDING_NAMES])
        print(
            f"{case.case_id}: {draft.text.splitlines()[1:]} <- {[(n['case_id'], round(n['score'], 4)) for n in draft.sources['neighbours']]}"
        )
    scores, macro, _ = score_labels(np.array(predicted), np.array(reference), n_bootstrap=0)
    pred, ref = np.array(predicted, bool), np.array(reference, bool)
    micro = 2 * (pred & ref).sum() / max(pred.sum() + ref.sum(), 1)
    print(f"findings of altered copies vs their sources: micro F1 {micro:.3f}, macro F1 {macro:.3f}")
    assert micro == 1.0 and macro == 1.0 and (pred == ref).all()


def test_report_cli_prints_the_json_contract(library, capsys):
    from voxelfm.cli.main import main

    image = library["root"] / "query.nii.gz"
    from voxelfm.imaging.io import write_volume

    write_volume(altered(library["volumes"]["lung_pet_ct_dx_a0002"], seed=7), image)
    rc = main(["report", str(library["path"]), str(image), "--json", "--neighbours", "3", "--device", "cpu"])
    assert rc == 0  # the library's own model is used: no --model needed
    data = json.loads(capsys.readouterr().out)
    assert isinstance(data["text"], str) and data["sentences"]
    for s in data["sentences"]:
        assert isinstance(s["text"], str) and isinstance(s["section"], str) and s["evidence"]
        for e in s["evidence"]:
            assert (
                e["kind"] == "neighbour" and isinstance(e["case_id"], str) and isinstance(e["score"], float)
            )
    assert any("right lower lobe" in s["text"] for s in data["sentences"])


def test_a_library_without_reports_is_a_clear_error(library, capsys):
    from voxelfm.cli.main import main

    volume = library["volumes"]["lidc_idri_0314"]
    source = library_neighbours(library["root"] / "no_reports", library["spec"], library["service"])
    with pytest.raises(InputError, match="none has a report text.*--report REPORT.txt"):
        _pipeline(library).draft(volume, neighbours=source)
    image = library["root"] / "lidc_idri_0314.nii.gz"
    assert main(["report", str(library["root"] / "no_reports"), str(image), "--device", "cpu"]) == 2
    assert "none has a report text" in capsys.readouterr().err


def test_slicer_logic_drafts_from_an_open_library(library, mrml_scene):
    pytest.importorskip("slicer")
    from voxelfm.retrieval.library import CaseLibrary
    from VoxelFMLib import volume_nodes
    from VoxelFMLib.report_logic import ReportLogic

    node = volume_nodes.create_volume_node(
        mrml_scene, altered(library["volumes"]["popi_phase00"], 3), "chest"
    )
    logic = ReportLogic(device="cpu", consensus=ConsensusConfig(k=3), service=library["service"])
    with CaseLibrary.open(library["path"]) as lib:
        result = logic.run(node, library=lib)
    assert "A tumour in the right lung." in result.text_node.GetText()
    index = next(i for i, s in enumerate(result.draft.sentences) if "tumour" in s.text)
    case = next(t for t in ReportLogic.targets(result.draft, index) if t.case_id == "popi_phase00")
    opened = ReportLogic.open_case(mrml_scene, case)
    assert opened.GetName() == "popi_phase00 (similar case)" and opened.GetImageData() is not None


def test_report_eval_drafts_images_then_scores_them(library, capsys, tmp_path):
    from voxelfm.cli.main import main
    from voxelfm.imaging.io import write_volume

    rows = ["id,image,reference"]
    for n, case in enumerate(CASES[:3]):
        write_volume(altered(library["volumes"][case.case_id], seed=20 + n), tmp_path / f"q{n}.nii.gz")
        rows.append(f'{case.case_id},q{n}.nii.gz,"{case.report}"')
    (tmp_path / "eval.csv").write_text("\n".join(rows) + "\n")
    args = ["report-eval", str(tmp_path / "eval.csv"), "--library", str(library["path"]), "--neighbours", "3"]
    assert (
        main([*args, "--bootstrap", "20", "--device", "cpu", "--json", "--out", str(tmp_path / "e.json")])
        == 0
    )
    scores = json.loads(capsys.readouterr().out)
    nodule = next(f for f in scores["findings"] if f["finding"] == "Lung nodule")
    assert (nodule["tp"], nodule["fp"], nodule["fn"]) == (3, 0, 0) and scores["macro_f1"] == 1.0
    saved = json.loads((tmp_path / "e.json").read_text())
    assert [d["id"] for d in saved["drafts"]] == [c.case_id for c in CASES[:3]]
    assert (
        main(
            [
                *args,
                "--leave-out-self",
                "--bootstrap",
                "0",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "l.json"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    for draft in json.loads((tmp_path / "l.json").read_text())["drafts"]:  # leave-one-out: never its own case
        assert draft["id"] not in {n["case_id"] for n in draft["sources"]["neighbours"]}

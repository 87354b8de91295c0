"""`voxelfm report` end to end on files (tiny random backbone): the JSON contract, outputs, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from report_cases import findings_workspace, planted_ct

from voxelfm.cli.main import main
from voxelfm.imaging.io import write_labelmap, write_volume

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    ws = findings_workspace(tmp_path_factory.mktemp("report_cli"))
    volume = planted_ct(True, False, seed=300)
    ws["image"] = write_volume(volume, ws["root"] / "chest.nii.gz")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[10:19, 10:19, 10:19] = 1
    ws["seg"] = write_labelmap(labels, volume.ijk_to_ras, ws["root"] / "chest_seg.nii.gz")
    (ws["root"] / "chest_seg.json").write_text(json.dumps({"1": "nodule"}))
    return ws


def _args(files, *extra):
    return ["report", str(files["image"]), "--model", str(files["model"]), "--device", "cpu", *extra]


def test_json_is_one_object_with_evidence_per_sentence(files, capsys):
    assert (
        main(_args(files, "--probe", str(files["probe"]), "--segmentation", str(files["seg"]), "--json")) == 0
    )
    out = capsys.readouterr().out
    data = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(data["text"], str) and data["text"].startswith("CT chest")
    assert data["sentences"] and all(s["text"] and s["section"] and s["evidence"] for s in data["sentences"])
    kinds = {e["kind"] for s in data["sentences"] for e in s["evidence"]}
    assert kinds == {"probe", "measurement"}
    assert any(s["text"].startswith("nodule: volume") and s["section"] == "Lungs" for s in data["sentences"])
    for s in data["sentences"]:
        assert s["text"] in data["text"]


def test_text_output_and_files(files, capsys, tmp_path):
    out = tmp_path / "draft"
    assert main(_args(files, "--segmentation", str(files["seg"]), "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "draft.txt").read_text() and "nodule: volume" in printed
    assert json.loads((tmp_path / "draft.json").read_text())["text"] == printed
    assert main(_args(files, "--segmentation", str(files["seg"]), "--out", str(out))) == 0  # ours: replaced
    (tmp_path / "mine.txt").write_text("the user's own report")
    assert main(_args(files, "--segmentation", str(files["seg"]), "--out", str(tmp_path / "mine"))) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "the user's own report"


def test_bad_inputs_exit_2_with_one_message(files, capsys, tmp_path):
    assert main(_args(files)) == 2
    assert "Nothing to draft a report from" in capsys.readouterr().err
    assert main(_args(files, "--probe", str(files["probe"]), "--model", str(files["other"]))) == 2
    assert "fitted on features of model" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("sections: [{name: Lungs}]\nsentences: {present: '{Phrase} of {size}'}\n")
    with pytest.raises(SystemExit) as exit_:
        main(_args(files, "--probe", str(files["probe"]), "--template", str(bad)))
    assert exit_.value.code == 2 and "unknown field(s) {size}" in capsys.readouterr().err
    assert main(["report", "a", "b", "c", "--probe", str(files["probe"])]) == 2

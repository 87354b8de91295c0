"""Findings extraction (negation-aware rules for the 18 CT-RATE abnormalities) and report scoring.

Scores are checked against scikit-learn on random labels; the bootstrap CI brackets the estimate; the
extractor is pluggable by name; `voxelfm report-eval` scores a manifest of report pairs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxelfm.cli.main import main
from voxelfm.errors import InputError
from voxelfm.report.catalog import FINDING_NAMES, FINDINGS
from voxelfm.report.evaluate import evaluate_reports, score_labels
from voxelfm.report.extract import RuleExtractor, as_binary, load_extractor

E = RuleExtractor()

CASES = [
    (
        "No pleural or pericardial effusion was detected.",
        {"Pleural effusion": "absent", "Pericardial effusion": "absent"},
    ),
    (
        "Bilateral pleural effusion, no pericardial effusion.",
        {"Pleural effusion": "present", "Pericardial effusion": "absent"},
    ),
    ("No lymph node was observed in the mediastinum in pathological size.", {"Lymphadenopathy": "absent"}),
    ("Mediastinal lymphadenopathy.", {"Lymphadenopathy": "present"}),
    ("A nodule of 6 mm in the right upper lobe.", {"Lung nodule": "present"}),
    ("A 3 cm mass in the right lower lobe.", {"Lung nodule": "present"}),
    ("Thyroid nodule.", {}),
    ("A pulmonary nodule cannot be excluded.", {"Lung nodule": "uncertain"}),
    ("Possible consolidation in the left lower lobe.", {"Consolidation": "uncertain"}),
    (
        "Emphysematous changes in both lungs; no consolidation.",
        {"Emphysema": "present", "Consolidation": "absent"},
    ),
    ("Consolidation is not seen.", {"Consolidation": "absent"}),
    ("Atelectasis has resolved.", {"Atelectasis": "absent"}),
    (
        "Calcified plaques in the aorta and coronary arteries.",
        {"Arterial wall calcification": "present", "Coronary artery wall calcification": "present"},
    ),
    ("Coronary artery calcification.", {"Coronary artery wall calcification": "present"}),
    ("Heart size is increased.", {"Cardiomegaly": "present"}),
    ("There is a small hiatal hernia.", {"Hiatal hernia": "present"}),
    ("Ground-glass opacities in both lungs.", {"Lung opacity": "present"}),
    ("Fibrotic sequelae in the left apex.", {"Pulmonary fibrotic sequela": "present"}),
    ("Mosaic attenuation pattern.", {"Mosaic attenuation pattern": "present"}),
    (
        "Peribronchial thickening and bronchiectasis.",
        {"Peribronchial thickening": "present", "Bronchiectasis": "present"},
    ),
    ("Interlobular septal thickening without effusion.", {"Interlobular septal thickening": "present"}),
    ("A central venous catheter is seen.", {"Medical material": "present"}),
    ("Heart: No abnormal cardiac or vascular finding.", {}),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_rule_extractor(text, expected):
    assert E.extract(text) == expected


def test_every_finding_reads_back_from_its_template_sentences():
    for f in FINDINGS:
        assert E.extract(f"{f.phrase[0].upper()}{f.phrase[1:]} (probability 0.93).") == {f.name: "present"}
        assert E.extract(f"No {f.phrase}.") == {f.name: "absent"}
        assert E.extract(f"Possible {f.phrase} (probability 0.50).") == {f.name: "uncertain"}


def test_report_level_present_beats_absent():
    labels = E.extract("Lungs: No lung nodule in the left lung. A nodule in the right upper lobe.")
    assert labels == {"Lung nodule": "present"}
    assert as_binary(labels)[FINDING_NAMES.index("Lung nodule")] == 1
    assert as_binary({"Lung nodule": "uncertain"}, uncertain_as=0) == [0] * 18


def test_scores_match_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    ref = rng.random((80, 18)) < 0.3
    pred = np.where(rng.random((80, 18)) < 0.8, ref, ~ref)
    pred[:, 5] = False
    ref[:, 5] = False  # a finding nobody has: F1 undefined, left out of the macro F1
    scores, macro, ci = score_labels(pred, ref, n_bootstrap=200)
    p, r, f, _ = precision_recall_fscore_support(ref, pred, average=None, zero_division=np.nan)
    for j, s in enumerate(scores):
        if j == 5:
            assert s.f1 is None and s.precision is None and s.recall is None
            continue
        assert (s.precision, s.recall, s.f1) == pytest.approx((p[j], r[j], f[j]))
        lo, hi = s.ci95["f1"]
        assert lo <= s.f1 <= hi
    assert macro == pytest.approx(np.nanmean(np.delete(f, 5)))
    assert ci[0] < macro < ci[1]
    with pytest.raises(InputError, match=r"\[cases, 18\]"):
        score_labels(pred[:, :3], ref[:, :3])


def test_generated_vs_reference_reports():
    generated = ["Lungs: Lung nodule (probability 0.90).", "Lungs: No lung nodule. Heart: Cardiomegaly."]
    reference = ["A nodule in the right upper lobe.", "Cardiomegaly. Small pleural effusion."]
    result = evaluate_reports(generated, reference, n_bootstrap=0)
    by = {s.finding: s for s in result.findings}
    assert (by["Lung nodule"].tp, by["Cardiomegaly"].tp, by["Pleural effusion"].fn) == (1, 1, 1)
    assert result.macro_f1 == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert "macro F1 over 2 cases" in result.table()
    with pytest.raises(InputError, match="pair them one to one"):
        evaluate_reports(generated, reference[:1])


def test_the_extractor_is_pluggable():
    keyword = load_extractor("report_extractor_plugin:Keyword")
    assert keyword.extract("No emphysema.") == {
        "Emphysema": "present"
    }  # it ignores negation, unlike the rules
    result = evaluate_reports(["No emphysema."], ["Emphysema."], extractor=keyword, n_bootstrap=0)
    assert result.extractor == "keyword" and result.macro_f1 == 1.0
    with pytest.raises(InputError, match="cannot be imported"):
        load_extractor("no_such_module:Thing")


def test_report_eval_command(tmp_path, capsys):
    (tmp_path / "ref2.txt").write_text("Emphysema. No pleural effusion.")
    lines = [
        {"id": "a", "generated": "Lungs: Emphysema (probability 0.8).", "reference_file": "ref2.txt"},
        {"id": "b", "generated": "Lungs: Pleural effusion (probability 0.7).", "reference": "No effusion."},
    ]
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert (
        main(["report-eval", str(manifest), "--bootstrap", "50", "--out", str(tmp_path / "scores.json")]) == 0
    )
    table = capsys.readouterr().out
    print(table)
    assert "Emphysema" in table and "macro F1 over 2 cases" in table
    data = json.loads((tmp_path / "scores.json").read_text())
    by = {f["finding"]: f for f in data["findings"]}
    assert by["Emphysema"]["f1"] == 1.0 and by["Pleural effusion"]["fp"] == 1
    assert main(["report-eval", str(manifest), "--bootstrap", "0", "--extractor", "nope:x"]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,hello\n")
    assert main(["report-eval", str(bad)]) == 2

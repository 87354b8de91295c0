"""Issue 9, manifests and cross-validation: one row per image, and folds grouped by patient.

Duplicate rows and scans of one patient on both sides of a split leak the test cases into training; the
leak shows as a too-good held-out metric (a 1-NN finds the twin). Grouped folds remove it, and say so.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safety_workspace import build_workspace, tiny_backbone

from voxelfm.cli.main import main
from voxelfm.errors import InputError
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.cv import make_splits
from voxelfm.probes.fit import fit_probe_inputs
from voxelfm.probes.manifest import read_manifest

torch.set_num_threads(1)


def _write(path, text: str):
    path.write_text(text)
    return path


@pytest.fixture()
def images(tmp_path):
    for n in range(4):
        (tmp_path / f"c{n}.nii.gz").write_bytes(
            f"image {n}".encode()
        )  # distinct: byte-identical files are one image
    return tmp_path


def test_repeated_rows_are_refused_naming_the_lines(images):
    m = _write(images / "m.csv", "image,label\nc0.nii.gz,1\nc1.nii.gz,0\n./c0.nii.gz,1\n")
    with pytest.raises(InputError, match=r"listed more than once \(c0.nii.gz \(lines 2, 4\)\)"):
        read_manifest(m, "classification")
    assert len(read_manifest(m, "classification", need_targets=False)) == 3  # applying twice is harmless


def test_one_image_with_two_labels_is_refused(images):
    m = _write(images / "m.jsonl", '{"image": "c0.nii.gz", "label": 1}\n{"image": "c1.nii.gz", "label": 0}\n')
    m.write_text(
        m.read_text() + f'{{"image": "{images / "c0.nii.gz"}", "label": 0}}\n'
    )  # same file, absolute
    with pytest.raises(
        InputError, match=r"conflicting targets \(c0.nii.gz: line 1 says \[1\], line 3 says \[0\]\)"
    ):
        read_manifest(m, "classification")


def test_patient_column_is_read_and_not_a_target(images):
    m = _write(
        images / "m.csv", "image,label,patient\nc0.nii.gz,1,A\nc1.nii.gz,0,A\nc2.nii.gz,1,B\nc3.nii.gz,0,B\n"
    )
    man = read_manifest(m, "classification")
    assert man.groups == ["A", "A", "B", "B"] and man.target_names == ["label"]
    both = _write(images / "b.csv", "image,label,patient,group\nc0.nii.gz,1,A,g\n")
    with pytest.raises(InputError, match="both 'patient' and 'group'"):
        read_manifest(both, "classification")
    empty = _write(images / "e.csv", "image,label,group\nc0.nii.gz,1,A\nc1.nii.gz,0,\n")
    with pytest.raises(InputError, match="column 'group' is empty"):
        read_manifest(empty, "classification")


def test_grouped_folds_keep_each_patient_in_one_fold():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(23)], rng.integers(1, 4, size=23))
    strata = rng.integers(0, 2, size=groups.size)
    splits, fold = make_splits(groups.size, strata, 5, 0, 0.2, groups=groups)
    for g in np.unique(groups):
        assert np.unique(fold[groups == g]).size == 1
    for sp in splits:
        test_groups = set(groups[sp.test])
        assert not test_groups & set(groups[sp.train]) and not test_groups & set(groups[sp.val])
    sizes = np.bincount(fold)
    assert sizes.min() >= 0.6 * sizes.max()  # balanced by cases, not only by patients


def test_given_folds_or_split_must_not_split_a_patient():
    groups = ["a", "a", "b", "b", "c", "c"]
    with pytest.raises(InputError, match="Patient/group a, b, c has cases in more than one fold"):
        make_splits(6, None, 2, 0, 0.0, folds=[0, 1, 0, 1, 0, 1], groups=groups)
    with pytest.raises(InputError, match="more than one split"):
        make_splits(
            6, None, 2, 0, 0.0, split=["train", "test", "train", "train", "test", "test"], groups=groups
        )
    make_splits(6, None, 2, 0, 0.0, folds=[0, 0, 1, 1, 0, 0], groups=groups)
    with pytest.raises(InputError, match="3 patients/groups are too few for 5-fold"):
        make_splits(6, None, 5, 0, 0.0, groups=groups)


def test_grouping_removes_the_leak_of_twin_scans():
    """Two near-identical scans per patient, labels unrelated to the features: only a leak can score."""
    rng = np.random.default_rng(0)
    n_pat = 40
    base = rng.normal(size=(n_pat, 16))
    x = (np.repeat(base, 2, axis=0) + 0.01 * rng.normal(size=(2 * n_pat, 16))).astype(np.float32)
    y = np.repeat(rng.integers(0, 2, size=n_pat), 2)
    groups = np.repeat(np.arange(n_pat), 2)
    cfg = ProbeConfig(pooling="cls", knn_k=1, n_bootstrap=0, l2_grid=(1.0,), folds=5)
    leaky = fit_probe_inputs("classification", x, y, cfg)
    grouped = fit_probe_inputs("classification", x, y, cfg, groups=groups)
    auc = lambda r: r.metrics["knn_baseline"]["auc"]["value"]  # noqa: E731
    assert auc(leaky) > 0.75 and auc(grouped) < 0.65  # seed 0: 0.81 vs 0.49
    assert "grouped by patient (40 patients" in grouped.metrics["evaluation"]
    assert grouped.metrics["grouping"] == {"groups": 40, "cases": 80, "kept_apart": True}
    assert "grouped" not in leaky.metrics["evaluation"]


def test_fit_probe_cli_groups_folds_and_the_report_says_so(tmp_path):
    model = tiny_backbone(tmp_path / "tiny")
    ws = build_workspace(tmp_path, model)
    out = tmp_path / "results" / "probe"
    argv = ["fit-probe", "--task", "classification", "--manifest", str(ws / "cohort.csv"), "--out", str(out)]
    assert main([*argv, "--folds", "2", "--bootstrap", "0", "--model", str(model), "--device", "cpu"]) == 0
    report = json.loads(out.with_name("probe.report.json").read_text())
    assert "grouped by patient (4 patients" in report["metrics"]["evaluation"]
    fold = {row["id"]: row["fold"] for row in report["out_of_fold"]}
    for p in range(4):  # cases 2p and 2p+1 belong to patient p
        assert fold[f"case{2 * p}.nii.gz"] == fold[f"case{2 * p + 1}.nii.gz"]

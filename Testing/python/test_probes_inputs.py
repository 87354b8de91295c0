"""Manifests and bad probe inputs: every problem is an InputError that names it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from probe_synth import planted

from voxelfm.errors import InputError
from voxelfm.features.identity import BackboneMismatchError
from voxelfm.probes import ProbeConfig, fit_probe
from voxelfm.probes.manifest import read_manifest
from voxelfm.probes.pipeline import check_probe_backbone

FEATS, Z = planted(n=30, c=8, amp=3.0, seed=0)
CFG = ProbeConfig(n_bootstrap=0, knn_k=0, folds=3, pooling="cls")


def _write(path, text):
    path.write_text(text)
    return path


def test_csv_manifest_relative_paths_targets_and_splits(tmp_path):
    (tmp_path / "imgs").mkdir()
    for n in ("a.nii.gz", "b.nii.gz"):
        (tmp_path / "imgs" / n).write_bytes(n.encode())  # distinct: byte-identical files are one image
    m = read_manifest(
        _write(
            tmp_path / "m.csv",
            "image,id,split,label,age\nimgs/a.nii.gz,A,train,1,50\nimgs/b.nii.gz,,test,0,61\n",
        ),
        "classification",
    )
    assert m.images == [tmp_path / "imgs" / "a.nii.gz", tmp_path / "imgs" / "b.nii.gz"]
    assert m.ids == ["A", "b.nii.gz"] and m.split == ["train", "test"] and m.folds is None
    assert m.target_names == ["label", "age"] and m.targets == [["1", "50"], ["0", "61"]]
    m = read_manifest(tmp_path / "m.csv", "classification", targets=["label"])
    assert m.target_names == ["label"]


def test_jsonl_survival_manifest(tmp_path):
    (tmp_path / "a.nrrd").write_bytes(b"x")
    rows = [{"image": str(tmp_path / "a.nrrd"), "time": 3.5, "event": 1, "fold": 2}]
    path = _write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    m = read_manifest(path, "survival")
    assert m.target_names == ["time", "event"] and m.targets == [[3.5, 1]] and m.folds == ["2"]


def test_tsv_with_bom_home_paths_and_bad_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.nii").write_bytes(b"x")
    path = tmp_path / "m.tsv"
    path.write_text("image\tlabel\n~/a.nii\t1\n\t\n", encoding="utf-8-sig")
    m = read_manifest(path, "classification")
    assert m.images == [tmp_path / "a.nii"] and m.targets == [["1"]]
    with pytest.raises(InputError, match="line 2: each line must be a JSON object"):
        read_manifest(_write(tmp_path / "m.jsonl", '{"image": "a.nii", "label": 1}\n[1]\n'), "classification")
    with pytest.raises(InputError, match="line 1: not valid JSON"):
        read_manifest(_write(tmp_path / "n.jsonl", "{oops\n"), "classification")
    with pytest.raises(InputError, match="unsupported format"):
        read_manifest(_write(tmp_path / "m.xlsx", "x"), "classification")


def test_empty_manifest(tmp_path):
    with pytest.raises(InputError, match="no cases"):
        read_manifest(_write(tmp_path / "m.csv", "image,label\n"), "classification")
    with pytest.raises(InputError, match="no cases"):
        read_manifest(_write(tmp_path / "e.csv", ""), "classification")
    with pytest.raises(InputError, match="No cases"):
        fit_probe("classification", [], [], CFG)


def test_missing_files_listed(tmp_path):
    path = _write(tmp_path / "m.csv", "image,label\nnope1.nii.gz,1\nnope2.nii.gz,0\n")
    with pytest.raises(InputError, match=r"(?s)2 image\(s\) not found.*nope1\.nii\.gz"):
        read_manifest(path, "classification")
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "absent.csv", "classification")


def test_missing_columns(tmp_path):
    (tmp_path / "a.nii").write_bytes(b"x")
    with pytest.raises(InputError, match="no 'image' column"):
        read_manifest(_write(tmp_path / "m.csv", "path,label\na.nii,1\n"), "classification")
    with pytest.raises(InputError, match="lacks column"):
        read_manifest(_write(tmp_path / "s.csv", "image,time\na.nii,1\n"), "survival")


def test_one_class_labels():
    with pytest.raises(InputError, match="only one class"):
        fit_probe("classification", FEATS, np.ones(30), CFG)
    labels = np.stack([Z[:, 0] > 0, np.zeros(30)], axis=1).astype(int)
    with pytest.raises(InputError, match="one class only"):
        fit_probe("classification", FEATS, labels, CFG, target_names=["a", "b"])


def test_all_censored_survival():
    with pytest.raises(InputError, match="All 30 cases are censored"):
        fit_probe("survival", FEATS, np.stack([np.arange(1.0, 31.0), np.zeros(30)], axis=1), CFG)


def test_nan_targets_named():
    y = (Z[:, 0] > 0).astype(float)
    y[[3, 7]] = np.nan
    with pytest.raises(InputError, match=r"missing.*case\(s\) 3, 7"):
        fit_probe("classification", FEATS, y, CFG)
    v = Z[:, 0].copy()
    v[5] = np.nan
    with pytest.raises(InputError, match="case.*5"):
        fit_probe("regression", FEATS, v, CFG)
    s = np.stack([np.arange(1.0, 31.0), np.ones(30)], axis=1)
    s[2, 0] = np.nan
    with pytest.raises(InputError, match="missing"):
        fit_probe("survival", FEATS, s, CFG)


def test_other_bad_targets():
    with pytest.raises(InputError, match="30 targets|targets"):
        fit_probe("classification", FEATS, (Z[:20, 0] > 0).astype(int), CFG)
    with pytest.raises(InputError, match="same value"):
        fit_probe("regression", FEATS, np.ones(30), CFG)
    with pytest.raises(InputError, match="0 \\(censored\\) or 1"):
        fit_probe("survival", FEATS, np.stack([np.arange(1.0, 31.0), np.full(30, 2.0)], axis=1), CFG)
    with pytest.raises(InputError, match="negative"):
        fit_probe("survival", FEATS, np.stack([-np.arange(1.0, 31.0), np.ones(30)], axis=1), CFG)
    with pytest.raises(InputError, match="not a finite number"):
        fit_probe("regression", FEATS, ["x"] * 30, CFG)
    with pytest.raises(InputError, match="Unknown task"):
        fit_probe("segmentation", FEATS, np.ones(30), CFG)


def test_bad_config_and_features():
    with pytest.raises(InputError, match="Unknown pooling"):
        ProbeConfig(pooling="max")
    with pytest.raises(InputError, match="token pooling"):
        ProbeConfig(head="attentive", pooling="cls")
    bad = [dict(f) for f in FEATS]
    bad[4] = {**bad[4], "cls": np.full(8, np.nan, np.float32)}
    with pytest.raises(InputError, match="NaN"):
        fit_probe("classification", bad, (Z[:, 0] > 0).astype(int), CFG)
    with pytest.raises(InputError, match="'cls' and 'patch'"):
        fit_probe("classification", [{"cls": np.zeros(8)}] * 30, (Z[:, 0] > 0).astype(int), CFG)


def test_backbone_mismatch_is_refused():
    probe = fit_probe("classification", FEATS, (Z[:, 0] > 0).astype(int), CFG).probe
    probe.backbone = {"id": "voxelfm-a", "revision": "1", "sha256": "a" * 64}
    check_probe_backbone(probe, {"id": "/some/path/voxelfm-a", "sha256": "a" * 64})  # same weights: fine
    with pytest.raises(BackboneMismatchError, match="fitted on features of model 'voxelfm-a'"):
        check_probe_backbone(probe, {"id": "other", "sha256": "b" * 64})

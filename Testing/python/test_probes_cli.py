"""End to end: tiny CT NIfTIs + manifest -> `voxelfm fit-probe` -> `voxelfm apply-probe` (tiny random backbone)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from voxelfm.cli.main import main
from voxelfm.model import BackboneConfig, VoxelFMBackbone, checkpoint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):

    root = tmp_path_factory.mktemp("probe_cli")
    (root / "ct").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    zz, yy, xx = np.mgrid[:28, :28, :28]
    for n in range(8):
        label = n % 2
        hu = rng.normal(-700, 40, size=(28, 28, 28))  # lung-like background
        hu[6:22, 6:22, 6:22] = rng.normal(40, 20, size=(16, 16, 16))  # soft tissue
        if label:  # a bright blob for positives
            hu[(zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 < 16] = 900
        img = sitk.GetImageFromArray(hu.astype(np.int16))
        img.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(img, str(root / "ct" / f"case{n}.nii.gz"))
        rows.append(
            {"image": f"ct/case{n}.nii.gz", "id": f"case{n}", "label": label, "size": 10.0 + 3 * label + n}
        )
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "id", "label", "size"])
        w.writeheader()
        w.writerows(rows)
    torch.manual_seed(0)
    model = VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2))
    checkpoint.save_backbone(model, root / "tiny")
    torch.manual_seed(1)
    checkpoint.save_backbone(
        VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2)), root / "other"
    )
    return root


def test_fit_and_apply_probe_end_to_end(workspace, capsys):
    root = workspace
    probe = root / "out" / "blob"
    rc = main(
        [
            "fit-probe",
            "--task",
            "classification",
            "--manifest",
            str(root / "manifest.csv"),
            "--targets",
            "label",
            "--out",
            str(probe),
            "--model",
            str(root / "tiny"),
            "--folds",
            "2",
            "--bootstrap",
            "50",
            "--knn-k",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    meta = json.loads((root / "out" / "blob.json").read_text())
    assert meta["task"] == "classification" and meta["kind"] == "binary" and meta["class_names"] == ["0", "1"]
    assert meta["backbone"]["sha256"] and meta["preprocessing"]["patch_size"] == 14
    assert meta["metrics"]["n_cases"] == 8 and "auc" in meta["metrics"] and "knn_baseline" in meta["metrics"]
    assert (root / "out" / "blob.safetensors").is_file()
    assert (root / "out" / "blob.report.png").stat().st_size > 1000
    report = json.loads((root / "out" / "blob.report.json").read_text())
    assert [c["id"] for c in report["out_of_fold"]] == [f"case{n}" for n in range(8)]

    capsys.readouterr()
    images = [str(root / "ct" / f"case{n}.nii.gz") for n in range(3)]
    rc = main(["apply-probe", str(probe) + ".json", *images, "--device", "cpu"])  # model from the probe
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split("\t") == ["image", "label_prob", "label"]
    assert len(lines) == 4 and all(r.split("\t")[2] in ("0", "1") for r in lines[1:])

    # the table agrees with the probe applied in Python to the same (cached) features
    from voxelfm.features.extract import extract_features
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.preprocess import PreprocessConfig
    from voxelfm.model.loading import load_backbone
    from voxelfm.probes import load_probe

    p = load_probe(probe)
    model = load_backbone(root / "tiny")
    feats = [
        extract_features(read_volume(i), model, PreprocessConfig.from_dict(p.preprocess), device="cpu")
        for i in images
    ]
    expected = p.predict(feats)
    got = np.array([float(r.split("\t")[1]) for r in lines[1:]])
    np.testing.assert_allclose(got, expected, rtol=1e-5)

    out_csv = root / "out" / "table.csv"
    rc = main(
        [
            "apply-probe",
            str(probe),
            "--manifest",
            str(root / "manifest.csv"),
            "--out",
            str(out_csv),
            "--model",
            str(root / "tiny"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    table = list(csv.DictReader(out_csv.open()))
    assert len(table) == 8 and table[0]["image"] == "case0"


def _fit_probe(root, task: str, manifest, name: str, *extra: str) -> int:
    """`fit-probe` with the tiny model, 2 folds and no bootstrap (quick)."""
    args = ["fit-probe", "--task", task, "--manifest", str(manifest), "--out", str(root / "out" / name)]
    return main(
        [*args, *extra, "--model", str(root / "tiny"), "--folds", "2", "--bootstrap", "0", "--device", "cpu"]
    )


def test_regression_and_survival_cli(workspace):
    root = workspace
    rc = _fit_probe(
        root,
        "regression",
        root / "manifest.csv",
        "size",
        "--targets",
        "size",
        "--head",
        "mlp",
        "--epochs",
        "20",
    )
    assert rc == 0 and (root / "out" / "size.report.png").is_file()
    surv = root / "surv.csv"
    surv.write_text(
        "image,time,event\n" + "".join(f"ct/case{n}.nii.gz,{5 + n},{n % 3 != 0:d}\n" for n in range(8))
    )
    assert _fit_probe(root, "survival", surv, "surv") == 0
    assert "kaplan_meier" in json.loads((root / "out" / "surv.report.json").read_text())


def test_cli_errors_are_clear(workspace, capsys):
    root = workspace
    rc = main(
        [
            "apply-probe",
            str(root / "out" / "blob"),
            str(root / "ct" / "case0.nii.gz"),
            "--model",
            str(root / "other"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
    assert "fitted on features of model" in capsys.readouterr().err
    bad = root / "bad.csv"
    bad.write_text("image,label\nct/case0.nii.gz,1\nct/missing.nii.gz,0\n")
    rc = main(
        [
            "fit-probe",
            "--task",
            "classification",
            "--manifest",
            str(bad),
            "--out",
            str(root / "x"),
            "--model",
            str(root / "tiny"),
        ]
    )
    assert rc == 2 and "not found" in capsys.readouterr().err
    one = root / "one.csv"
    one.write_text("image,label\nct/case0.nii.gz,1\nct/case1.nii.gz,1\n")
    rc = main(
        [
            "fit-probe",
            "--task",
            "classification",
            "--manifest",
            str(one),
            "--out",
            str(root / "x"),
            "--model",
            str(root / "tiny"),
        ]
    )
    assert rc == 2 and "only one class" in capsys.readouterr().err
    assert not (root / "x.json").exists()

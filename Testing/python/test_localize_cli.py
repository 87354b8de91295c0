"""`voxelfm localize`, `voxelfm box` and `fit-probe --task localisation` end to end with a tiny random backbone.

The contract: OUT is a Slicer markups point list (LPS) whose control point labels are the reference's labels,
one per reference point, with "confidence 0.NN" in each description; inputs are never modified; bad inputs
exit 2 with one clear message.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from voxelfm.cli.main import main
from voxelfm.imaging.io import write_labelmap, write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.localize.markups_json import read_point_list, write_point_list
from voxelfm.localize.points import PointList

NAMES = ["apex", "left_node", "right_node"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(0)
    return save_backbone(
        VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=2)), tmp_path_factory.mktemp("tiny")
    )


def phantom(rng) -> tuple[np.ndarray, np.ndarray]:
    arr = np.full((40, 44, 48), -1000.0, np.float32)
    k, j, i = np.meshgrid(*[np.arange(n) for n in arr.shape], indexing="ij")
    body = ((i - 24) / 21) ** 2 + ((j - 22) / 19) ** 2 < 1
    arr[body] = rng.normal(30, 60, int(body.sum()))
    blobs = np.array([[24, 12, 30], [12, 26, 20], [36, 26, 20]])  # (i, j, k)
    for n, (ci, cj, ck) in enumerate(blobs):
        arr[ck - 2 : ck + 3, cj - 2 : cj + 3, ci - 2 : ci + 3] += 400 + 200 * n + rng.normal(0, 80, (5, 5, 5))
    return arr, blobs.astype(float)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """reference CT + its LPS points file, a moved (shifted, stored flipped) target, the true target points."""
    d = tmp_path_factory.mktemp("loc")
    rng = np.random.default_rng(0)
    arr, blobs = phantom(rng)
    m = np.diag([2.0, 2.0, 2.0, 1.0])
    m[:3, 3] = [-40.0, -30.0, 10.0]
    ref = Volume(arr, m, "ref")
    pts = PointList(NAMES, blobs @ m[:3, :3].T + m[:3, 3], name="ref points")
    shift = np.array([6.0, -4.0, 10.0])
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = arr.shape[2] - 1
    tm = m @ flip
    tm[:3, 3] += shift
    tgt = Volume(arr[:, :, ::-1].copy(), tm, "target")
    write_volume(ref, d / "ref.nii.gz")
    write_volume(tgt, d / "target.nrrd")
    write_point_list(pts, d / "ref.mrk.json")
    return d, pts.ras + shift


def _args(d, model, *extra):
    return [
        "localize",
        str(d / "target.nrrd"),
        "--model",
        str(model),
        "--device",
        "cpu",
        "--feature-spacing",
        "2",
        *extra,
    ]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_localize_writes_the_contract_file_and_leaves_inputs_alone(files, tiny_model, tmp_path):
    d, truth = files
    before = _sha(d / "ref.mrk.json")
    out = tmp_path / "found.mrk.json"
    assert (
        main(
            [
                *_args(d, tiny_model, "--reference", str(d / "ref.nii.gz"), str(d / "ref.mrk.json")),
                "--out",
                str(out),
                "--save-template",
                str(tmp_path / "tpl"),
            ]
        )
        == 0
    )
    doc = json.loads(out.read_text())
    markup = doc["markups"][0]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    points = markup["controlPoints"]
    assert [p["label"] for p in points] == NAMES
    for p in points:
        assert p["description"].startswith("confidence ")
        assert 0.0 <= float(p["description"].split()[1]) <= 1.0
    found = read_point_list(out)
    err = np.linalg.norm(found.ras - truth, axis=1)
    print(f"CLI one-shot errors on the moved phantom: {np.round(err, 2)} mm")
    assert np.all(err < 4.0)
    assert _sha(d / "ref.mrk.json") == before
    # the saved template gives the same answer without the reference image
    again = tmp_path / "again.mrk.json"
    assert main([*_args(d, tiny_model, "--template", str(tmp_path / "tpl-1.npz")), "--out", str(again)]) == 0
    np.testing.assert_allclose(read_point_list(again).ras, found.ras, atol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "roi.mrk.json", "holds a markups 'ROI', not a point list"),
        (lambda d: d / "empty.mrk.json", "holds no points"),
        (lambda d: d / "far.mrk.json", "'far' of reference 'far'.*outside"),
    ],
)
def test_bad_reference_points_exit_2(files, tiny_model, tmp_path, capsys, make, message):
    d, _ = files
    (d / "roi.mrk.json").write_text(json.dumps({"@schema": "", "markups": [{"type": "ROI"}]}))
    write_point_list(PointList([], np.zeros((0, 3)), name="empty"), d / "empty.mrk.json")
    write_point_list(PointList(["far"], [[0.0, 0.0, 900.0]], name="far"), d / "far.mrk.json")
    code = main(
        [
            *_args(d, tiny_model, "--reference", str(d / "ref.nii.gz"), str(make(d))),
            "--out",
            str(tmp_path / "o.mrk.json"),
        ]
    )
    assert code == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_out_must_not_be_an_input_and_must_be_markups(files, tiny_model, capsys):
    d, _ = files
    before = _sha(d / "ref.mrk.json")
    ref = ["--reference", str(d / "ref.nii.gz"), str(d / "ref.mrk.json")]
    assert main([*_args(d, tiny_model, *ref), "--out", str(d / "ref.mrk.json")]) == 2
    assert "inputs are never overwritten" in capsys.readouterr().err
    assert _sha(d / "ref.mrk.json") == before
    with pytest.raises(SystemExit) as exc:
        main([*_args(d, tiny_model, *ref), "--out", str(d / "out.csv")])
    assert exc.value.code == 2 and "must end in .mrk.json" in capsys.readouterr().err


def test_templates_from_different_backbones_exit_2(files, tiny_model, tmp_path, capsys):
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    d, _ = files
    torch.manual_seed(1)
    other = save_backbone(
        VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=2)), tmp_path / "m2"
    )
    ref = ["--reference", str(d / "ref.nii.gz"), str(d / "ref.mrk.json")]
    for model, name in ((tiny_model, "a"), (other, "b")):
        assert (
            main(
                [
                    *_args(d, model, *ref),
                    "--out",
                    str(tmp_path / f"{name}.mrk.json"),
                    "--save-template",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    code = main(
        [
            *_args(
                d,
                tiny_model,
                "--template",
                str(tmp_path / "a-1.npz"),
                "--template",
                str(tmp_path / "b-1.npz"),
            ),
            "--out",
            str(tmp_path / "mixed.mrk.json"),
        ]
    )
    assert code == 2 and "different backbones" in capsys.readouterr().err


def test_fit_probe_localisation_then_localize_with_it(files, tiny_model, tmp_path):
    d, _ = files
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"image,points\n{d / 'ref.nii.gz'},{d / 'ref.mrk.json'}\n")
    probe = tmp_path / "landmarks"
    fit = ["fit-probe", "--task", "localisation", "--manifest", str(manifest), "--out", str(probe)]
    assert main([*fit, "--model", str(tiny_model), "--device", "cpu", "--epochs", "3"]) == 0
    meta = json.loads((tmp_path / "landmarks.json").read_text())
    assert meta["task"] == "localisation" and meta["landmarks"] == NAMES
    out = tmp_path / "probe.mrk.json"
    assert main(["localize", str(d / "target.nrrd"), "--probe", str(probe), "--out", str(out)]) == 0
    assert read_point_list(out).names == NAMES
    manifest.write_text("image,points\nmissing.nii.gz,ref.mrk.json\n")
    assert main([*fit, "--model", str(tiny_model)]) == 2


def test_box_from_labels_and_from_corner_points(tmp_path):
    lab = np.zeros((10, 12, 14), np.uint8)
    lab[2:6, 3:7, 4:9] = 2
    m = np.diag([1.0, 1.0, 2.0, 1.0])
    write_labelmap(lab, m, tmp_path / "seg.nii.gz")
    from_labels = ["box", "--labels", str(tmp_path / "seg.nii.gz"), "--label"]
    assert main([*from_labels, "2", "--out", str(tmp_path / "a.mrk.json")]) == 0
    roi = json.loads((tmp_path / "a.mrk.json").read_text())["markups"][0]
    assert roi["type"] == "ROI" and roi["coordinateSystem"] == "LPS"
    np.testing.assert_allclose(roi["size"], [5.0, 4.0, 8.0])
    write_point_list(PointList(["c1", "c2"], [[0, 0, 0], [10, 20, 30]]), tmp_path / "c.mrk.json")
    assert main(["box", "--points", str(tmp_path / "c.mrk.json"), "--out", str(tmp_path / "b.mrk.json")]) == 0
    roi = json.loads((tmp_path / "b.mrk.json").read_text())["markups"][0]
    np.testing.assert_allclose(roi["center"], [-5.0, -10.0, 15.0])
    assert main([*from_labels, "9", "--out", str(tmp_path / "x.mrk.json")]) == 2

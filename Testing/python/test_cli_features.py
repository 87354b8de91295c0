"""`voxelfm features` end to end (console script and the Slicer --python-script entry point)."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO

from voxelfm.cli.main import main


@pytest.fixture()
def tiny_args(parity_dir):
    return [
        "--model",
        str(parity_dir / "tiny_checkpoint.pth"),
        "--model-config",
        str(parity_dir / "tiny_config.yaml"),
    ]


def test_features_npz_contract(parity_dir, tiny_args, tmp_path):
    out = tmp_path / "f.npz"
    png = tmp_path / "f.png"
    rc = main(
        [
            "features",
            str(parity_dir / "preproc_input.nii.gz"),
            "--out",
            str(out),
            "--png",
            str(png),
            *tiny_args,
        ]
    )
    assert rc == 0 and png.stat().st_size > 1000
    z = np.load(out)
    assert z["cls"].shape == (96,)
    d, h, w, c = z["patch"].shape
    assert (d, h, w, c) == (2, 3, 3, 96)  # variant A of the parity fixture
    m = z["grid_to_ras"]
    assert m.shape == (4, 4) and np.allclose(m[3], [0, 0, 0, 1])
    # (i, j, k) = (W', H', D') order: stepping i moves along the x axis of the 14-voxel patches
    step_i = m[:3, 0]
    # x: 80 voxels x 0.4 mm resampled to round(32 / 0.75) = 43 voxels (then centre-cropped to 42)
    assert np.linalg.norm(step_i) == pytest.approx(14 * 80 * 0.4 / 43, rel=1e-4)


def test_bad_inputs_exit_2_with_message(tiny_args, tmp_path, capsys, caplog):
    img2d = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(img2d))
    assert main(["features", str(img2d), "--out", str(tmp_path / "x.npz"), *tiny_args]) == 2
    assert "2" in capsys.readouterr().err.lower()  # names the dimensionality problem
    assert (
        main(["features", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "x.npz"), *tiny_args])
        == 2
    )
    err = capsys.readouterr().err
    assert "missing.nii.gz" in err and "Traceback" not in err
    bad_ckpt = tmp_path / "broken.pth"
    bad_ckpt.write_bytes(b"not a checkpoint")
    vol = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.Image(28, 28, 28, sitk.sitkInt16), str(vol))
    # an all-zero image: warned, then the model fails
    with caplog.at_level(logging.WARNING, logger="voxelfm"):
        assert main(["features", str(vol), "--out", str(tmp_path / "x.npz"), "--model", str(bad_ckpt)]) == 2
    assert "corrupt" in capsys.readouterr().err
    said = [r.getMessage() for r in caplog.records if "same value" in r.getMessage()]
    assert len(said) == 1 and "UserWarning" not in caplog.text  # one plain line, not a Python warning twice


def test_slicer_script_entry_point_same_command(parity_dir, tiny_args, tmp_path):
    """`Slicer --python-script VoxelFMTraining/voxelfm_cli.py features ...` runs the same code path."""
    out = tmp_path / "f.npz"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "VoxelFMTraining" / "voxelfm_cli.py"),
            "features",
            str(parity_dir / "preproc_input.nii.gz"),
            "--out",
            str(out),
            *tiny_args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    ref = tmp_path / "g.npz"
    assert main(["features", str(parity_dir / "preproc_input.nii.gz"), "--out", str(ref), *tiny_args]) == 0
    assert np.array_equal(np.load(out)["patch"], np.load(ref)["patch"])

"""A user's folder for the safety tests: CTs, labels, probes, manifests and the user's own files beside them.

Built once per module (``build_workspace``) and copied for each case, so every case starts from the same
files and none of them is in VoxelFM's output ledger (copies are the user's, as far as VoxelFM knows).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from test_segment_core import planted_case

from voxelfm.cli.main import main
from voxelfm.imaging.io import write_labelmap, write_volume
from voxelfm.segment.labels import select_slices

USER_TEXT = "the user's own file\n"


def tiny_backbone(folder: Path) -> Path:
    """A random 2-block ViT saved as a backbone folder (the tests' stand-in for a real model)."""
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(0)
    return save_backbone(VoxelFMBackbone(BackboneConfig(embed_dim=96, depth=2, num_heads=2)), folder)


def _cube(n: int, seed: int, positive: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hu = rng.normal(-700, 40, size=(n, n, n))
    hu[6:22, 6:22, 6:22] = rng.normal(40, 20, size=(16, 16, 16))
    if positive:
        zz, yy, xx = np.mgrid[:n, :n, :n]
        hu[(zz - 14) ** 2 + (yy - 14) ** 2 + (xx - 14) ** 2 < 16] = 900
    return hu.astype(np.int16)


def _write_image(arr: np.ndarray, path: Path, spacing=(1.0, 1.0, 1.0)) -> Path:
    img = sitk.GetImageFromArray(arr, isVector=False)
    img.SetSpacing(spacing[: img.GetDimension()] if img.GetDimension() < 4 else (*spacing, 1.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def _cohort(ws: Path) -> None:
    rows = []
    for n in range(8):
        _write_image(_cube(28, n, bool(n % 2)), ws / "cohort" / f"case{n}.nii.gz")
        rows.append({"image": f"cohort/case{n}.nii.gz", "label": n % 2, "patient": f"p{n // 2}"})
    _manifest(ws / "cohort.csv", rows)
    _manifest(ws / "cohort_dup.csv", rows + rows[:2])  # two rows repeated
    conflict = [dict(r) for r in rows]
    conflict.append({**rows[0], "label": 1 - rows[0]["label"]})  # the same image, the other label
    _manifest(ws / "cohort_conflict.csv", conflict)
    (ws / "no_image_column.csv").write_text("path,label\ncohort/case0.nii.gz,1\n")


def _manifest(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _probes(ws: Path, model: Path, scratch: Path) -> None:
    """A segmentation probe fitted with the tiny model, and a classification probe with edited copies."""
    from test_probe_files import _probe

    from voxelfm.probes.probe_file import save_probe

    rc = main(
        ["segment", str(ws / "ct.nii.gz"), "--labels", str(ws / "labels.nii.gz"), "--model", str(model)]
        + ["--device", "cpu", "--out", str(scratch / "fit.nii.gz"), "--save-probe", str(scratch / "seg")]
    )
    assert rc == 0
    for suffix in (".json", ".safetensors"):
        shutil.copy(scratch / f"seg{suffix}", ws / f"seg{suffix}")
    save_probe(_probe("binary"), ws / "cls")
    for name, edit in (("astro_task", {"task": "astrology"}), ("astro_kind", {"kind": "astrology"})):
        meta = json.loads((ws / "cls.json").read_text())
        meta.update(edit)
        (ws / f"{name}.json").write_text(json.dumps(meta))
        shutil.copy(ws / "cls.safetensors", ws / f"{name}.safetensors")


def _bad_images(ws: Path, ct: Path) -> None:
    data = ct.read_bytes()
    (ws / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(ct))).astype(np.float32)
    arr[20, 20, 20] = np.nan
    _write_image(arr, ws / "nan.nii.gz", (1.5, 1.5, 2.0))
    (ws / "empty.nii.gz").write_bytes(b"")
    _write_image(np.zeros((32, 32), np.int16), ws / "slice2d.nii.gz")
    _write_image(np.zeros((2, 8, 8, 8), np.int16), ws / "vol4d.nii.gz")
    _write_image((np.arange(27).reshape(3, 3, 3) * 50 - 1000).astype(np.int16), ws / "tiny.nii.gz")
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(ws / "labels.nii.gz"))).astype(np.float32)
    lab[lab == 1] = 0.5
    _write_image(lab, ws / "labels_float.nii.gz", (1.5, 1.5, 2.0))


def _user_files(ws: Path) -> None:
    """Files the user made that VoxelFM must never replace (some named as if VoxelFM had written them)."""
    for name in (
        "notes.npz",
        "notes.png",
        "user_probe.json",
        "table.csv",
        "a_file",
        "samples/lung1_image.nrrd",
    ):
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(USER_TEXT)
    (ws / "folder.npz").mkdir()
    foreign = ws / "runs" / "foreign"
    foreign.mkdir(parents=True)
    for name in ("config.yaml", "metrics.jsonl", "model.safetensors"):
        (foreign / name).write_text(USER_TEXT)
    (ws / "neg_lr.yaml").write_text("schedules:\n  lr:\n    peak: -0.001\n")


def build_workspace(root: Path, model: Path) -> Path:
    ws = root / "template"
    ws.mkdir()
    vol, _, truth = planted_case()
    ct = write_volume(vol, ws / "ct.nii.gz")
    write_labelmap(select_slices(truth, [14, 20, 26]), vol.ijk_to_ras, ws / "labels.nii.gz")
    for folder in ("images", "one", "one_with_seg"):
        (ws / folder).mkdir()
        shutil.copy(ct, ws / folder / "ct.nii.gz")
    shutil.copy(ct, ws / "images" / "ct_copy.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(ct)), str(ws / "images" / "ct.nrrd"), True)  # same stem as ct.nii.gz
    _cohort(ws)
    _bad_images(ws, ct)
    _user_files(ws)
    scratch = root / "scratch"
    scratch.mkdir()
    _probes(ws, model, scratch)
    return ws


def file_sums(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (relative path -> digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@contextmanager
def read_only_folder(folder: Path):
    """A folder this process cannot write to: immutable for root (chmod does not stop root), else 0555."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            import pytest

            pytest.skip("running as root without chattr: cannot make a read-only folder")
        try:
            yield folder
        finally:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        return
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)

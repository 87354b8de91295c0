"""End-to-end pretraining on small real CT volumes: outputs, export, exact resume, crash safety, bad inputs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from voxelfm.errors import InputError
from voxelfm.pretrain import checkpointing
from voxelfm.pretrain.checkpointing import list_checkpoints, load_latest
from voxelfm.pretrain.trainer import run_pretraining

TINY = {
    "student": {"embed_dim": 48, "depth": 2, "num_heads": 2},
    "dino": {"head_n_prototypes": 64, "head_bottleneck_dim": 16, "head_hidden_dim": 32},
    "ibot": {"head_n_prototypes": 64, "head_bottleneck_dim": 16, "head_hidden_dim": 32},
    "crops": {"global_crops_size": [28, 28, 28], "local_crops_size": [14, 14, 14], "local_crops_number": 2},
    "train": {"batch_size_per_gpu": 2, "grad_accum_steps": 1, "num_workers": 0, "official_epoch_length": 10},
    "optim": {"epochs": 2},
    "schedules": {
        "lr": {"warmup_epochs": 0.2, "freeze_last_layer_epochs": 0.1},
        "teacher_temp": {"warmup_epochs": 1},
    },
    "checkpointing": {"period": 2, "max_to_keep": 2},
    "data": {"spacing_mm": 3.0},
}


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory, data_dir) -> Path:
    """Two small real CTs (NIfTI + MHA) linked into one folder."""
    d = tmp_path_factory.mktemp("ct")
    os.symlink(data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz", d / "abdomen.nii.gz")
    os.symlink(data_dir / "public_ct" / "elastix_lung_small" / "3DCT_lung_baseline_small.mha", d / "lung.mha")
    return d


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    import yaml

    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def _params(out: Path) -> dict[str, torch.Tensor]:
    return load_latest(out)["model"]


def test_few_step_run_writes_everything(ct_folder, config_path, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    res = run_pretraining(ct_folder, config_path, out, steps=3, show_bar=False, export_hub=tmp_path / "hub")
    assert res.final_step == 3 and res.last_loss is not None and res.last_loss == res.last_loss
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(r["loss"] > 0 and {"dino", "ibot", "koleo", "lr", "samples_per_s"} <= set(r) for r in recs)
    assert recs[0]["lr"] == 0.0 and recs[1]["lr"] > 0  # warmup
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s for s, _ in list_checkpoints(out)] == [2, 3]
    from voxelfm.model.checkpoint import load_backbone_file

    for folder in (out / "backbone", tmp_path / "hub"):
        model = load_backbone_file(folder)
        with torch.no_grad():
            f = model.forward_features(torch.randn(1, 1, 28, 42, 28))
        assert f["patch"].shape == (1, 2, 3, 2, 48) and torch.isfinite(f["patch"]).all()
    assert (tmp_path / "hub" / "README.md").is_file()
    # the exported backbone is the EMA teacher, not the student
    teacher = {
        k[len("teacher.backbone.") :]: v for k, v in _params(out).items() if k.startswith("teacher.backbone.")
    }
    exported = load_backbone_file(out / "backbone").state_dict()
    assert all(torch.equal(exported[k], teacher[k]) for k in exported)
    # an intermediate training checkpoint loads as a backbone too (weights_only: no pickled objects)
    from_ckpt = load_backbone_file(list_checkpoints(out)[-1][1]).state_dict()
    assert all(torch.equal(from_ckpt[k], exported[k]) for k in exported)
    # a second run into the same folder without --resume must not clobber it
    with pytest.raises(InputError, match="--resume"):
        run_pretraining(ct_folder, config_path, out, steps=3, show_bar=False)


def test_resume_is_exact(ct_folder, config_path, tmp_path):
    torch.set_num_threads(1)
    a, b = tmp_path / "straight", tmp_path / "resumed"
    run_pretraining(ct_folder, config_path, a, steps=6, show_bar=False)
    run_pretraining(ct_folder, config_path, b, steps=3, show_bar=False)
    run_pretraining(ct_folder, config_path, b, steps=6, resume=True, show_bar=False)
    pa, pb = _params(a), _params(b)
    assert load_latest(a)["step"] == load_latest(b)["step"] == 6
    diff = [k for k in pa if not torch.equal(pa[k], pb[k])]
    assert not diff, f"parameters differ after resume: {diff[:5]}"
    oa, ob = load_latest(a)["optimizer"]["state"], load_latest(b)["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)
    la = [json.loads(x)["loss"] for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert la == lb and len(la) == 6
    # and the training really changed the weights
    init = run_pretraining(ct_folder, config_path, tmp_path / "one", steps=1, show_bar=False)
    assert not torch.equal(
        _params(init.out_dir)["student.backbone.blocks.0.attn.qkv.weight"],
        pa["student.backbone.blocks.0.attn.qkv.weight"],
    )


def test_crash_during_checkpoint_write_keeps_previous(ct_folder, config_path, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    run_pretraining(ct_folder, config_path, out, steps=2, show_bar=False)
    good = _params(out)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial garbage")  # half-written file, then the process "dies"
        raise KeyboardInterrupt("killed during checkpoint write")

    monkeypatch.setattr(checkpointing.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(ct_folder, config_path, out, steps=4, resume=True, show_bar=False)
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    assert [s for s, _ in list_checkpoints(out)] == [2]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    latest = load_latest(out)
    assert latest["step"] == 2 and all(torch.equal(good[k], latest["model"][k]) for k in good)
    # a corrupt newest file (e.g. disk full outside our control) falls back to the previous one
    (out / "checkpoints" / "step_00000003.pt").write_bytes(b"corrupt")
    (out / "checkpoints" / "latest.json").write_text('{"step": 3, "file": "step_00000003.pt"}')
    assert load_latest(out)["step"] == 2
    res = run_pretraining(ct_folder, config_path, out, steps=4, resume=True, show_bar=False)
    assert res.start_step == 2 and res.final_step == 4


def test_manifest_csv_and_jsonl(ct_folder, config_path, tmp_path):
    from voxelfm.pretrain.data import discover_sources

    (tmp_path / "m.csv").write_text(f"path,label\n{ct_folder / 'abdomen.nii.gz'},x\nlung.mha,y\n")
    os.symlink(ct_folder / "lung.mha", tmp_path / "lung.mha")
    assert [p.name for p in discover_sources(tmp_path / "m.csv")] == ["abdomen.nii.gz", "lung.mha"]
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "lung.mha"}) + "\n")
    res = run_pretraining(tmp_path / "m.jsonl", config_path, tmp_path / "run", steps=1, show_bar=False)
    assert res.final_step == 1


def test_manifest_formats_shared_with_probes(ct_folder, tmp_path):
    """TSV, a header in any case, bare JSON strings and a BOM: the manifest reader probes use too."""
    from voxelfm.pretrain.data import discover_sources

    os.symlink(ct_folder / "lung.mha", tmp_path / "lung.mha")
    (tmp_path / "m.tsv").write_text(
        f"id\tPath\nA\t{ct_folder / 'abdomen.nii.gz'}\nB\tlung.mha\n", "utf-8-sig"
    )
    assert [p.name for p in discover_sources(tmp_path / "m.tsv")] == ["abdomen.nii.gz", "lung.mha"]
    (tmp_path / "m.jsonl").write_text('"lung.mha"\n\n{"image": "lung.mha"}\n')
    assert discover_sources(tmp_path / "m.jsonl") == [tmp_path.resolve() / "lung.mha"] * 2
    bad = {"bad.jsonl": "{oops\n", "bad2.jsonl": '{"file": "lung.mha"}\n', "bad.csv": "file\nlung.mha\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match="line 1: not valid JSON"):
        discover_sources(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match=r"bad2.jsonl:1 needs a 'path'"):
        discover_sources(tmp_path / "bad2.jsonl")
    with pytest.raises(InputError, match="no 'path' column"):
        discover_sources(tmp_path / "bad.csv")


def test_list_images_top_level_and_dicom_switch(data_dir, tmp_path):
    from voxelfm.imaging.formats import list_images

    (tmp_path / "sub").mkdir()
    os.symlink(data_dir / "totalseg" / "chest_dicom" / "dicom", tmp_path / "sub" / "dicom")
    for name in ("b.NII.GZ", "a.mha", "notes.txt", "sub/c.nrrd"):
        (tmp_path / name).write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.mha", "b.NII.GZ", "sub/c.nrrd", "sub/dicom"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.mha", "b.NII.GZ"]
    assert "sub/dicom" not in [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, dicom=False)]


def _written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


# case -> the run_pretraining arguments it replaces (data, cfg, steps), made in tmp_path
BAD_INPUTS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "empty_folder": lambda tmp: {"data": _folder(tmp / "empty")},
    "empty_csv": lambda tmp: {"data": _written(tmp / "m.csv", "")},
    "header_only_csv": lambda tmp: {"data": _written(tmp / "m.csv", "path\n")},
    "missing_file": lambda tmp: {
        "data": _written(tmp / "m.jsonl", json.dumps({"path": str(tmp / "nope.nii.gz")}) + "\n")
    },
    "not_ct": lambda tmp: {"data": _written(tmp / "notes.txt", "hello")},
    "bad_key": lambda tmp: {"cfg": _written(tmp / "bad.yaml", "optim:\n  learning_rate: 0.1\n")},
    "missing_config": lambda tmp: {"cfg": tmp / "nope.yaml"},
    "bad_steps": lambda tmp: {"steps": 0},
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_input_error(ct_folder, config_path, tmp_path, case):
    given = {"data": ct_folder, "cfg": config_path, "steps": 1, **BAD_INPUTS[case](tmp_path)}
    with pytest.raises(InputError):
        run_pretraining(given["data"], given["cfg"], tmp_path / "out", steps=given["steps"], show_bar=False)


def _one_step_args(ct_folder, config_path, out) -> list[str]:
    """`pretrain` arguments for one quick step (shared by the console-script and Slicer-script tests)."""
    args = ["pretrain", "--data", str(ct_folder), "--config", str(config_path), "--out", str(out)]
    return [*args, "--steps", "1", "--no-progress"]


def test_cli_entry_point(ct_folder, config_path, tmp_path, capsys):
    from voxelfm.cli.main import main

    out = tmp_path / "cli"
    rc = main([*_one_step_args(ct_folder, config_path, out), "--set", "crops.local_crops_number=1"])
    assert rc == 0 and (out / "backbone" / "model.safetensors").is_file()
    assert load_latest(out)["config"]["crops"]["local_crops_number"] == 1
    rc = main(["pretrain", "--data", str(tmp_path / "nothing"), "--out", str(out), "--steps", "1"])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_folder_discovery_dicom_and_label_skipping(data_dir, tmp_path):
    from voxelfm.pretrain.config import load_config
    from voxelfm.pretrain.data import build_cache, discover_sources

    d = tmp_path / "mixed"
    (d / "case1").mkdir(parents=True)
    os.symlink(data_dir / "totalseg" / "chest_dicom" / "dicom", d / "case1" / "dicom")  # extension-less DICOM
    os.symlink(data_dir / "totalseg" / "abdomen_3mm" / "labels.nii.gz", d / "case1" / "labels.nii.gz")
    os.symlink(data_dir / "totalseg" / "pulmonary_1p5mm" / "heart.nii.gz", d / "case1" / "heart.nii.gz")
    srcs = discover_sources(d)
    assert sorted(p.name for p in srcs) == ["dicom", "heart.nii.gz"]  # label by name skipped
    cfg = load_config(None, {"data": {"spacing_mm": 3.0}})
    vols = build_cache(srcs, cfg)  # the heart mask has no air -> skipped
    assert [Path(v.source).name for v in vols] == ["dicom"]
    assert vols[0].shape == (13, 167, 167)  # 20 x 2 mm, 512 x 0.977 mm at 3 mm
    with pytest.raises(InputError, match="does not look like a CT"):
        build_cache([p for p in srcs if p.name == "heart.nii.gz"], cfg, strict=True)


def test_loader_workers_do_not_change_batches(ct_folder, config_path):
    from torch.utils.data import DataLoader

    from voxelfm.pretrain.config import load_config
    from voxelfm.pretrain.data import Collate, CropDataset, StepBatchSampler, build_cache, discover_sources

    cfg = load_config(config_path)
    vols = build_cache(discover_sources(ct_folder), cfg)

    def batches(workers: int, start: int) -> list[dict]:
        dl = DataLoader(
            CropDataset(vols, cfg),
            batch_sampler=StepBatchSampler(2, start),
            collate_fn=Collate(cfg),
            num_workers=workers,
        )
        it = iter(dl)
        return [next(it) for _ in range(3 - start)]

    ref, par, late = batches(0, 0), batches(2, 0), batches(0, 1)
    for a, b in zip(ref, par, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(ref[1][k], late[0][k]) for k in ref[1])  # position = step number
    assert not torch.equal(ref[0]["global_crops"], ref[1]["global_crops"])


@pytest.mark.slow  # a fresh interpreter importing torch: 5-25 s depending on machine load
def test_slicer_script_runs_same_code_path(ct_folder, config_path, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "VoxelFMTraining" / "voxelfm_cli.py"
    out = tmp_path / "slicer"
    cmd = [sys.executable, str(script), *_one_step_args(ct_folder, config_path, out)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "backbone" / "config.json").is_file() and load_latest(out)["step"] == 1


def test_cancel_saves_checkpoint_and_resume_continues(ct_folder, config_path, tmp_path):
    import threading

    from voxelfm.errors import CancelledError

    torch.set_num_threads(1)
    out, stop = tmp_path / "run", threading.Event()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("step 3/"):
            stop.set()  # the GUI's Cancel button, pressed during step 3

    with pytest.raises(CancelledError):
        run_pretraining(ct_folder, config_path, out, steps=6, progress=progress, cancel=stop, show_bar=False)
    assert load_latest(out)["step"] == 3  # odd step: saved because of the cancel, not the period (2)
    res = run_pretraining(ct_folder, config_path, out, steps=4, resume=True, show_bar=False)
    assert (res.start_step, res.final_step) == (3, 4)


def test_under_torchrun_only_rank_0_checks_and_claims_the_run_folder(
    ct_folder, config_path, tmp_path, monkeypatch
):
    """Another rank looking while rank 0 claims the folder saw the marker's temporary file as a foreign file
    and refused the run (a flaky 2-process test): only rank 0 checks and claims; its refusal ends the run."""
    from voxelfm.cli import pretrain_run
    from voxelfm.cli.main import build_parser
    from voxelfm.errors import InputError

    out = tmp_path / "run"
    out.mkdir()
    (out / ".voxelfm-run.json.0m4_0zmb.tmp").write_text("{")  # rank 0's claim, half written
    args = build_parser().parse_args(_one_step_args(ct_folder, config_path, out))
    monkeypatch.setenv("RANK", "1")
    pretrain_run._checked_plan(args)  # rank 1 leaves the folder to rank 0
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(InputError, match="did not write"):
        pretrain_run._checked_plan(args)

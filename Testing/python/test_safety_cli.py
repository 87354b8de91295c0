"""Issue 9, table-driven: every command, bad input or unsafe output -> exit code, message, and no user file lost.

Each case runs one `voxelfm` command in a fresh copy of a user's folder (``safety_workspace``) and checks:
the exit code; a fragment of the message; the sha256 of every file that was there before (all unchanged,
except the outputs a successful case is meant to write); for refused cases, that no file appeared and that no
model was loaded and no run started (the check comes first, so these cases take milliseconds).
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safety_workspace import build_workspace, file_sums, read_only_folder, tiny_backbone

from voxelfm.cli.main import main

torch.set_num_threads(1)


@dataclass(frozen=True)
class Case:
    name: str
    argv: str  # {ws}: the user's folder, {model}: the tiny backbone
    code: int
    message: str  # a fragment of stderr
    changes: tuple[str, ...] = ()  # user files a successful case may rewrite (its declared outputs)
    setup: Callable[[Path, str], None] | None = None  # e.g. an earlier run whose outputs the case meets
    new: tuple[str, ...] | None = None  # exactly the files a successful case adds (None: not checked)
    after_load: bool = False  # refused only once the model is known (its patch size decides "too small")


def _run(argv: list[str]) -> int:
    try:
        return int(main(argv))
    except SystemExit as exc:  # argparse: a bad option value exits 2 itself
        return int(exc.code)


def _earlier(argv: str) -> Callable[[Path, str], None]:
    def setup(ws: Path, model: str) -> None:
        assert _run(shlex.split(argv.format(ws=ws, model=model))) == 0

    return setup


M = "--model {model} --device cpu"
FEAT = f"features {{ws}}/ct.nii.gz {M}"
SEG = f"segment {{ws}}/ct.nii.gz --labels {{ws}}/labels.nii.gz {M}"
APPLY = f"segment --probe {{ws}}/seg {M}"
FIT = "fit-probe --task classification --manifest {ws}/cohort.csv --out {ws}/probe --folds 2 " + M
PRE = "pretrain --data {ws}/cohort --out {ws}/run --steps 1"

CASES = [
    # --- data loss: an output onto an input, a foreign file, or another output --------------------------
    Case("segment --out = the CT", f"{SEG} --out {{ws}}/ct.nii.gz", 2, "is the input"),
    Case("segment --out = the labels", f"{SEG} --out {{ws}}/labels.nii.gz", 2, "is the input"),
    Case("features --png = the CT", f"{FEAT} --out {{ws}}/o.npz --png {{ws}}/ct.nii.gz", 2, "--png must end with .png"),
    Case("features --out = --png", f"{FEAT} --out {{ws}}/o.npz --png {{ws}}/o.npz", 2, "--png must end with .png"),
    Case("features --out a user's .npz", f"{FEAT} --out {{ws}}/notes.npz", 2, "already exists"),
    Case("features --png a user's .png", f"{FEAT} --out {{ws}}/o.npz --png {{ws}}/notes.png", 2, "already exists"),
    Case("segment --save-probe a user's JSON", f"{SEG} --out {{ws}}/s.nii.gz --save-probe {{ws}}/user_probe", 2, "already exists"),
    Case("segment --save-probe into the --model folder", f"{SEG} --out {{ws}}/s.nii.gz --save-probe {{model}}/model", 2, "inside the input folder"),
    Case("segment --probe FOLDER: two images, one output name", f"{APPLY} {{ws}}/images --out {{ws}}/segs", 2, "are both"),
    Case("segment --probe FOLDER into itself", f"{APPLY} {{ws}}/one --out {{ws}}/one", 2, "inside the input folder"),
    Case("segment --probe FOLDER into a sub-folder", f"{APPLY} {{ws}}/one --out {{ws}}/one/segs", 2, "inside the input folder"),
    Case("fit-probe --out onto a user's JSON", f"{FIT.replace('/probe ', '/user_probe ')}", 2, "already exists"),
    Case("apply-probe --out a user's table", "apply-probe {ws}/cls {ws}/ct.nii.gz --out {ws}/table.csv " + M, 2, "already exists"),
    Case("apply-probe --out .xlsx", "apply-probe {ws}/cls {ws}/ct.nii.gz --out {ws}/t.xlsx " + M, 2, "must end with .csv"),
    Case("pretrain --out a folder of user files", f"{PRE.replace('/run ', '/runs/foreign ')}", 2, "holds files VoxelFM did not write"),
    Case("pretrain --out inside its --data", f"{PRE.replace('/run ', '/cohort/run ')}", 2, "inside the input folder"),
    Case("demo --out a folder of user files", "demo --out {ws}/runs/foreign", 2, "holds files VoxelFM did not write"),
    Case("sample-data --out over a user's file", "sample-data --out {ws}/samples", 2, "already exists"),
    # --- tracebacks before: a bad output place, exit 2 before any work ----------------------------------
    Case("features --out onto a folder", f"{FEAT} --out {{ws}}/folder.npz", 2, "is a folder"),
    Case("features --out under a file", f"{FEAT} --out {{ws}}/a_file/o.npz", 2, "is a file, not a folder"),
    Case("pretrain --out onto a file", f"{PRE.replace('/run ', '/a_file ')}", 2, "is a file"),
    Case("demo --out onto a file", "demo --out {ws}/a_file", 2, "is a file"),
    # --- option values: exit 2 at parse time ------------------------------------------------------------
    Case("features --overlap -3", f"{FEAT} --out {{ws}}/o.npz --overlap -3", 2, "--overlap"),
    Case("features --max-tokens 0", f"{FEAT} --out {{ws}}/o.npz --max-tokens 0", 2, "--max-tokens"),
    Case("features --device banana", f"{FEAT} --out {{ws}}/o.npz --device banana", 2, "is not a device"),
    Case("features --max-patches 0", f"{FEAT} --out {{ws}}/o.npz --max-patches 0", 2, "--max-patches"),
    Case("segment --feature-spacing 0", f"{SEG} --out {{ws}}/s.nii.gz --feature-spacing 0", 2, "--feature-spacing"),
    Case("segment --feature-spacing nan", f"{SEG} --out {{ws}}/s.nii.gz --feature-spacing nan", 2, "not a finite number"),
    Case("segment --precision fp8", f"{SEG} --out {{ws}}/s.nii.gz --precision fp8", 2, "--precision"),
    Case("fit-probe --lr -1", f"{FIT} --lr -1", 2, "--lr"),
    Case("fit-probe --folds 1", f"{FIT} --folds 1", 2, "--folds"),
    Case("fit-probe --epochs 0", f"{FIT} --epochs 0", 2, "--epochs"),
    Case("fit-probe --bootstrap -5", f"{FIT} --bootstrap -5", 2, "--bootstrap"),
    Case("fit-probe --pooling median", f"{FIT} --pooling median", 2, "--pooling"),
    Case("fit-probe --task astrology", FIT.replace("classification", "astrology"), 2, "--task"),
    Case("pretrain --steps 0", f"{PRE.replace('--steps 1', '--steps 0')}", 2, "--steps"),
    Case("pretrain --threads 0", f"{PRE} --threads 0", 2, "--threads"),
    Case("pretrain --device banana", f"{PRE} --device banana", 2, "is not a device"),
    Case("pretrain --set without =", f"{PRE} --set optim.epochs", 2, "KEY=VALUE"),
    Case("pretrain --set negative lr", f"{PRE} --set schedules.lr.peak=-0.001", 2, "schedules.lr.peak"),
    Case("pretrain --set zero heads", f"{PRE} --set student.num_heads=0", 2, "student.num_heads"),
    Case("pretrain --set nan", f"{PRE} --set optim.clip_grad=.nan", 2, "optim.clip_grad"),
    Case("pretrain config file, negative lr", f"{PRE} --config {{ws}}/neg_lr.yaml", 2, "schedules.lr.peak"),
    Case("demo --slices 0", "demo --out {ws}/d --slices 0", 2, "--slices"),
    Case("sample-data --case lung9", "sample-data --out {ws}/s --case lung9", 2, "--case"),
    # --- wrong results with exit 0 before: now refused -------------------------------------------------
    Case("truncated .nii.gz", f"features {{ws}}/trunc.nii.gz --out {{ws}}/o.npz {M}", 2, "truncated"),
    Case("NaN voxels in NIfTI", f"features {{ws}}/nan.nii.gz --out {{ws}}/o.npz {M}", 2, "NaN/infinite"),
    Case("probe task astrology", "apply-probe {ws}/astro_task {ws}/ct.nii.gz " + M, 2, "field 'task' is 'astrology'"),
    Case("probe kind astrology", "apply-probe {ws}/astro_kind {ws}/ct.nii.gz " + M, 2, "field 'kind' is 'astrology'"),
    Case("manifest with repeated rows", FIT.replace("cohort.csv", "cohort_dup.csv"), 2, "listed more than once"),
    Case("manifest: one image, two labels", FIT.replace("cohort.csv", "cohort_conflict.csv"), 2, "conflicting targets"),
    Case("--class-names a,b,c for 2 classes", f"{SEG} --out {{ws}}/s.nii.gz --class-names a,b,c", 2, "gives 3 names"),
    Case("--series with a file", f"{FEAT} --out {{ws}}/o.npz --series 1.2.3", 2, "is not a folder"),
    # --- handled well before (kept) ---------------------------------------------------------------------
    Case("missing image", f"features {{ws}}/absent.nii.gz --out {{ws}}/o.npz {M}", 2, "not found"),
    Case("empty image file", f"features {{ws}}/empty.nii.gz --out {{ws}}/o.npz {M}", 2, "empty.nii.gz"),
    Case("2D image", f"features {{ws}}/slice2d.nii.gz --out {{ws}}/o.npz {M}", 2, "2D"),
    Case("4D image", f"features {{ws}}/vol4d.nii.gz --out {{ws}}/o.npz {M}", 2, "4 dimensions"),
    Case("tiny image", f"features {{ws}}/tiny.nii.gz --out {{ws}}/o.npz {M}", 2, "too small", after_load=True),
    Case("non-integer labels", f"segment {{ws}}/ct.nii.gz --labels {{ws}}/labels_float.nii.gz --out {{ws}}/s.nii.gz {M}", 2, "integers"),
    Case("manifest without an image column", FIT.replace("cohort.csv", "no_image_column.csv"), 2, "no 'image' column"),
    Case("missing probe", "apply-probe {ws}/absent {ws}/ct.nii.gz " + M, 2, "not found"),
    # --- outputs VoxelFM may replace: its own, or with --overwrite --------------------------------------
    Case(
        "features rerun replaces its own output",
        f"{FEAT} --out {{ws}}/o.npz --png {{ws}}/o.png",
        0,
        "",
        ("o.npz", "o.png"),
        _earlier(f"{FEAT} --out {{ws}}/o.npz --png {{ws}}/o.png"),
    ),
    Case("features --overwrite replaces a user's file", f"{FEAT} --out {{ws}}/notes.npz --overwrite", 0, "", ("notes.npz",)),
    Case(
        "segment --probe FOLDER rerun into the same --out",
        f"{APPLY} {{ws}}/one --out {{ws}}/segs",
        0,
        "",
        ("segs/ct_seg.nii.gz",),
        _earlier(f"{APPLY} {{ws}}/one --out {{ws}}/segs"),
    ),
    Case(
        "segment --probe FOLDER skips its own earlier outputs",
        f"{APPLY} {{ws}}/one_with_seg --out {{ws}}/segs",
        0,
        "skipping",
        (),
        _earlier(f"{APPLY} {{ws}}/one_with_seg/ct.nii.gz --out {{ws}}/one_with_seg/ct_seg.nii.gz"),
        ("segs/ct_seg.nii.gz",),  # not segs/ct_seg_seg.nii.gz
    ),
    Case(
        "segment: an edited earlier output is the user's",
        f"{SEG} --out {{ws}}/s.nii.gz",
        2,
        "already exists",
        (),
        lambda ws, model: (_earlier(f"{SEG} --out {{ws}}/s.nii.gz")(ws, model), (ws / "s.nii.gz").write_bytes(b"x")),
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    model = tiny_backbone(root / "tiny")
    return build_workspace(root, model), model


@pytest.fixture()
def work(monkeypatch):
    """Counts model loads and started runs (pretraining, demo, sample-data download): none for a refused case."""
    import voxelfm.model.loading as loading
    import voxelfm.pretrain.trainer as trainer
    import voxelfm.samples.demo as demo
    import voxelfm.samples.fetch as fetch
    from voxelfm.features.service import feature_service

    feature_service().release()  # a backbone loaded by an earlier test must not hide a load here
    calls: list[str] = []
    for module, name in (
        (loading, "load_backbone"),
        (trainer, "run_pretraining"),
        (demo, "run_demo"),
        (fetch, "fetch_sample_data"),
    ):
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name), _real(*a, **k))[1]
        )
    return calls


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_safety_case(case: Case, template, work, tmp_path, capsys, caplog):
    tpl, model = template
    ws = tmp_path / "user"
    shutil.copytree(tpl, ws)
    if case.setup is not None:
        case.setup(ws, str(model))
    before = file_sums(ws)
    work.clear()
    capsys.readouterr()
    code = _run(shlex.split(case.argv.format(ws=ws, model=model)))
    err = capsys.readouterr().err + caplog.text  # errors on stderr, warnings through logging
    assert code == case.code, err
    assert case.message in err
    assert "Traceback" not in err
    after = file_sums(ws)
    changed = sorted(name for name, digest in before.items() if after.get(name) != digest)
    assert changed == sorted(n for n in case.changes if n in before and after[n] != before[n])
    assert set(changed) <= set(case.changes), f"user files changed: {changed}"
    added = sorted(set(after) - set(before))
    if code != 0:
        assert added == [], f"a refused run left files: {added}"
        assert work == (["load_backbone"] if case.after_load else []), f"work before the refusal: {work}"
    elif case.new is not None:
        assert added == sorted(case.new)


def test_read_only_output_folder_is_refused_before_work(template, work, tmp_path, capsys):
    tpl, model = template
    ws = tmp_path / "user"
    shutil.copytree(tpl, ws)
    with read_only_folder(ws / "locked") as locked:
        argv = ["features", str(ws / "ct.nii.gz"), "--out", str(locked / "o.npz"), "--model", str(model)]
        assert _run(argv) == 2
        assert "is not writable" in capsys.readouterr().err
        assert _run(["pretrain", "--data", str(ws / "cohort"), "--out", str(locked / "run")]) == 2
        assert "is not writable" in capsys.readouterr().err
    assert work == []


def test_ctrl_c_during_features_exits_130_and_leaves_nothing(template, tmp_path, monkeypatch, capsys):
    import voxelfm.features.extract as extract

    tpl, model = template
    ws = tmp_path / "user"
    shutil.copytree(tpl, ws)
    before = file_sums(ws)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "forward_prepared", interrupted)
    argv = [
        "features",
        str(ws / "ct.nii.gz"),
        "--out",
        str(ws / "o.npz"),
        "--model",
        str(model),
        "--no-cache",
    ]
    assert _run(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert file_sums(ws) == before  # no partial output, no temporary file left

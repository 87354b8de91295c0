"""Issue 9, outputs: the plan's rules one by one, the ledger, run folders, file modes, the Slicer probe save."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from voxelfm.errors import InputError
from voxelfm.files.atomic import atomic_write_text
from voxelfm.files.output_ledger import is_own_output, record_output
from voxelfm.files.outputs import OutputPlan
from voxelfm.files.run_folder import MARKER, claim_run_folder


def _plan(*outputs, inputs=(), overwrite=False) -> OutputPlan:
    plan = OutputPlan(overwrite=overwrite).input(*inputs)
    for n, p in enumerate(outputs):
        plan.output(p, f"out{n}")
    return plan


def _refused(plan: OutputPlan, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        plan.check()


def test_ledger_knows_own_outputs_until_they_change(tmp_path):
    f = atomic_write_text(tmp_path / "r.csv", "a,b\n1,2\n")
    assert not is_own_output(f)  # written, but not noted as an output
    record_output(f)
    assert is_own_output(f)
    os.utime(f, (1, 1))  # a new time alone (a copy with -p, a backup tool): same bytes, still ours
    assert is_own_output(f)
    f.write_text("a,b\n1,3\n")  # same size, other bytes: the user's now
    assert not is_own_output(f)
    record_output(f)
    link = tmp_path / "link.csv"
    link.symlink_to(f)
    assert not is_own_output(link)  # a symlink at the output name is never "ours"


def test_inputs_are_never_outputs_by_any_name(tmp_path):
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"ct")
    (tmp_path / "alias.nii.gz").symlink_to(ct)
    os.link(ct, tmp_path / "hard.nii.gz")
    for name in ("ct.nii.gz", "./sub/../ct.nii.gz", "alias.nii.gz", "hard.nii.gz"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        _refused(_plan(tmp_path / name, inputs=[ct], overwrite=True), "is the input")
    folder = tmp_path / "dicom"
    folder.mkdir()
    _refused(_plan(folder / "x" / "seg.nii.gz", inputs=[folder], overwrite=True), "inside the input folder")
    _plan(tmp_path / "seg.nii.gz", inputs=[ct, folder]).check()  # beside the inputs is fine


def test_outputs_of_one_run_never_collide(tmp_path):
    _refused(_plan(tmp_path / "a.npz", tmp_path / "x" / ".." / "a.npz"), "are both")
    plan = OutputPlan()
    plan.probe_outputs(tmp_path / "p", "--save-probe")
    plan.output(tmp_path / "p.json", "--out")
    _refused(plan, "--save-probe and --out are both")


def test_existing_files_replaced_only_when_ours_identical_or_allowed(tmp_path):
    user = tmp_path / "t.csv"
    user.write_text("mine\n")
    _refused(_plan(user), "already exists and is not an unchanged VoxelFM output")
    _plan(user, overwrite=True).check()
    plan = OutputPlan()
    import hashlib

    plan.output(user, same_sha256=hashlib.sha256(b"mine\n").hexdigest())
    plan.check()  # already holds exactly what would be written
    record_output(user)
    _plan(user).check()


def test_done_notes_what_the_run_wrote_and_nothing_else(tmp_path):
    plan = _plan(tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt").check()
    atomic_write_text(tmp_path / "a.txt", "new\n")
    plan.written(tmp_path / "a.txt")
    assert is_own_output(tmp_path / "a.txt")
    atomic_write_text(tmp_path / "b.txt", "also new\n")
    plan.done()
    assert is_own_output(tmp_path / "b.txt")
    assert not (tmp_path / "c.txt").exists()  # declared, not written: nothing noted, nothing created


def test_folder_and_parent_problems(tmp_path):
    (tmp_path / "d.npz").mkdir()
    _refused(_plan(tmp_path / "d.npz", overwrite=True), "is a folder")
    (tmp_path / "f").write_text("x")
    _refused(_plan(tmp_path / "f" / "deep" / "o.npz", overwrite=True), "is a file, not a folder")
    _plan(tmp_path / "new" / "deeper" / "o.npz").check()  # missing folders are created by the writers
    with pytest.raises(InputError, match="must end with .npz"):
        OutputPlan().output(tmp_path / "o.nii.gz", "--out", suffixes=(".npz",))


def test_run_folders(tmp_path):
    def plan(folder, kind="demo", overwrite=False):
        p = OutputPlan(overwrite=overwrite)
        p.run_folder(folder, kind, ("summary.json", "checkpoints"))
        return p

    run = tmp_path / "run"
    plan(run).check()  # new
    run.mkdir()
    plan(run).check()  # empty
    (run / "summary.json").write_text("{}")
    _refused(plan(run), "holds files VoxelFM did not write \\(summary.json\\)")  # no marker: not ours
    claim_run_folder(run, "demo")
    assert (run / MARKER).is_file()
    (run / ".summary.json.abc123.tmp").write_text("")  # a killed run's temporary file
    plan(run).check()
    _refused(plan(run, "pretrain"), "is a VoxelFM demo folder, not a pretrain one")
    (run / "config.yaml").write_text("mine")
    _refused(plan(run), "holds files VoxelFM did not write \\(config.yaml\\)")
    plan(run, overwrite=True).check()
    (tmp_path / "file").write_text("x")
    _refused(plan(tmp_path / "file", overwrite=True), "is a file")


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_every_writer_gives_the_same_mode(tmp_path, mask, expected):
    import voxelfm.files.atomic as atomic
    from voxelfm.features.volume_features import VolumeFeatures
    from voxelfm.imaging.io import write_labelmap
    from voxelfm.imaging.pictures import label_overlay_png
    from voxelfm.imaging.volume import Volume
    from voxelfm.segment.classes import SegmentClass
    from voxelfm.segment.files import write_seg_nrrd

    old = os.umask(mask)
    try:
        labels = np.zeros((4, 5, 6), np.uint8)
        labels[1:3, 2:4, 2:5] = 1
        files = [
            atomic.atomic_write_text(tmp_path / "a.json", "{}"),
            write_labelmap(labels, np.eye(4), tmp_path / "l.nii.gz"),
            write_labelmap(labels, np.eye(4), tmp_path / "l.nhdr"),
            write_seg_nrrd(labels, np.eye(4), tmp_path / "s.seg.nrrd", [SegmentClass(1, "a", (1, 0, 0))]),
            VolumeFeatures(np.zeros(4), np.zeros((1, 4)), np.zeros((1, 1, 1, 4)), np.eye(4)).save(
                tmp_path / "f.npz"
            ),
            label_overlay_png(Volume(labels.astype(np.float32) * 100 - 50), labels, tmp_path / "o.png"),
        ]
        files.append(tmp_path / "l.raw.gz")  # the .nhdr's data file
        modes = {f.name: stat.S_IMODE(os.stat(f).st_mode) for f in files}
        assert set(modes.values()) == {expected}, modes
    finally:
        os.umask(old)


def test_a_replaced_file_keeps_its_mode(tmp_path):
    from voxelfm.files.atomic import atomic_write_text
    from voxelfm.imaging.io import write_labelmap

    private = tmp_path / "p.json"
    private.write_text("{}")
    private.chmod(0o600)
    atomic_write_text(private, '{"a": 1}')
    label = write_labelmap(np.ones((2, 3, 3), np.uint8), np.eye(4), tmp_path / "l.nhdr")
    os.chmod(label, 0o640)
    os.chmod(tmp_path / "l.raw.gz", 0o640)
    write_labelmap(np.zeros((2, 3, 3), np.uint8), np.eye(4), label)
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in (tmp_path / "l.nhdr", tmp_path / "l.raw.gz")} == {0o640}
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_slicer_logic_probe_save_follows_the_same_rules(tmp_path):
    pytest.importorskip("slicer")
    from test_segment_core import planted_case

    from voxelfm.imaging.volume import Volume
    from voxelfm.segment import fit_segmentation
    from voxelfm.segment.labels import select_slices
    from VoxelFMLib.segment_logic import FewShotSegmentLogic

    vol, feats, truth = planted_case()
    logic = FewShotSegmentLogic(model="voxelfm-tiny", device="cpu")
    logic.last_probe = fit_segmentation(vol, feats, Volume(select_slices(truth, [14, 20]), vol.ijk_to_ras))
    (tmp_path / "mine.json").write_text("the user's notes")
    with pytest.raises(InputError, match="already exists .* delete it first"):
        logic.save_probe(tmp_path / "mine.json")
    assert (tmp_path / "mine.json").read_text() == "the user's notes"
    assert not (tmp_path / "mine.safetensors").exists()
    saved = logic.save_probe(tmp_path / "probe.json")
    assert logic.save_probe(tmp_path / "probe") == saved  # its own earlier save is replaced
    logic.save_probe(tmp_path / "mine", overwrite=True)  # the widget may ask the user, then allow it
    assert (tmp_path / "mine.json").read_text().startswith("{")


def test_an_output_is_replaced_only_by_an_output_of_its_own_kind(tmp_path):
    """A rerun replaces its own output; another command's output (a probe under a report's name) is refused,
    naming what the file is; a record from before kinds were recorded counts for the same command only."""
    import json

    from voxelfm.files.output_ledger import _record_path, entry_path

    def plan(by: str, kind: str) -> OutputPlan:
        made = OutputPlan(by=by)
        made.output(f, "--out", kind=kind)
        return made

    f = tmp_path / "probeA.json"
    f.write_text("{}\n")
    record_output(f, "voxelfm segment", "segmentation probe")
    plan("voxelfm segment", "segmentation probe").check()  # a rerun
    plan("VoxelFM Segment", "segmentation probe").check()  # the Slicer module saving the same kind
    _refused(
        plan("voxelfm report", "report draft"), r"it is a segmentation probe \(voxelfm segment wrote it\)"
    )
    record = _record_path(entry_path(f))
    legacy = {k: v for k, v in json.loads(record.read_text()).items() if k != "kind"}
    record.write_text(json.dumps(legacy))
    plan("voxelfm segment", "segmentation probe").check()
    _refused(plan("voxelfm report", "report draft"), "it is an output of voxelfm segment, not a report draft")

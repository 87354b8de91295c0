"""Issue 22, table-driven: commands in sequence, as a careless user runs them.

Each case starts from a fresh copy of a user's folder (``safety_workspace``), runs its setup (earlier commands,
or an edit of a file), then the command under test in-process, and checks: the exit code; a fragment the
message must contain (and fragments it must not: a traceback, advice to delete the user's file); that the
files named in ``unchanged`` are byte for byte what they were before the command; and, for some cases, what
the command left behind (``after``). A refused case must also leave no new file.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safety_workspace import build_workspace, file_sums, tiny_backbone

from voxelfm.cli.main import main

torch.set_num_threads(1)

Step = str | Callable[[Path], object]  # a command that must succeed ({ws}, {model}), or an edit of the folder


@dataclass(frozen=True)
class Case:
    name: str
    argv: str
    code: int
    message: str = ""
    setup: tuple[Step, ...] = ()
    unchanged: tuple[
        str, ...
    ] = ()  # files (or folders: every file below) the command must leave as they were
    absent: tuple[str, ...] = ()  # fragments the output must not contain
    after: Callable[[Path, str], None] | None = None  # more checks on the folder and the output
    around: Callable[[Path], AbstractContextManager] | None = (
        None  # e.g. a read-only library during the command
    )


def _run(argv: list[str]) -> int:
    try:
        return int(main(argv))
    except SystemExit as exc:  # argparse: a bad option value exits 2 itself
        return int(exc.code)


M = "--model {model} --device cpu"
CT = "{ws}/ct.nii.gz"
SEG_FIT = f"segment {CT} --labels {{ws}}/labels.nii.gz {M} --out {{ws}}/fit.nii.gz"
FIT = "fit-probe --task classification --manifest {ws}/cohort.csv --folds 2 " + M
ADD = f"index add {{ws}}/lib {CT} {M} --no-progress"
LIB = (f"{ADD} --report {{ws}}/report.txt",)  # a library whose one case has a report
ADD3 = f"index add {{ws}}/lib {CT} {{ws}}/cohort/case1.nii.gz {{ws}}/cohort/case2.nii.gz {M} --no-progress"


# ---- edits of the user's folder --------------------------------------------------------------------------


def text(name: str, content: str | bytes) -> Callable[[Path], None]:
    def write(ws: Path) -> None:
        data = content.encode() if isinstance(content, str) else content
        (ws / name).write_bytes(data)

    return write


REPORT = text("report.txt", "Lungs: no nodules.\nLiver: normal.\n")
LATIN1 = text("latin1.txt", "Lungs: opacité basale.\n".encode("latin-1"))
BINARY = text("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
HUGE = text("huge.txt", "Lungs: clear. " * 100_000)  # 1.4 MB


def empty_database(ws: Path) -> None:
    (ws / "lib" / "library.sqlite").write_bytes(b"")


def truncated_database(ws: Path) -> None:
    db = ws / "lib" / "library.sqlite"
    os.truncate(db, db.stat().st_size - 100)  # the last page cut short


def garbage_database(ws: Path) -> None:
    db = ws / "lib" / "library.sqlite"
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page overwritten
    db.write_bytes(bytes(data))


def far_labels(ws: Path) -> None:
    """The label image moved 500 mm away: it does not overlap the CT at all."""
    image = sitk.ReadImage(str(ws / "labels.nii.gz"))
    origin = np.array(image.GetOrigin()) + (500.0, 0.0, 0.0)
    image.SetOrigin(tuple(float(v) for v in origin))
    sitk.WriteImage(image, str(ws / "far.nii.gz"))


REPEATED_HEADINGS = text(
    "headed.txt", "Findings:\nLungs: Findings: Lungs: No nodules.\nLiver: Liver: normal.\n"
)


def no_repeated_heading(ws: Path, out: str) -> None:
    for repeated in ("Lungs: Findings:", "Lungs: Lungs:", "Liver: Liver:"):
        assert repeated not in out, out


def manifest(name: str, header: str, *rows: str) -> Callable[[Path], None]:
    return text(name, "\n".join([header, *rows]) + "\n")


def copy_image(ws: Path) -> None:
    shutil.copy(ws / "cohort" / "case0.nii.gz", ws / "cohort" / "copy_of_case0.nii.gz")


def dicom_without_suffix(ws: Path) -> None:
    (ws / "IM.30000022120808113428000016573").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 40)


def gzip_named_nii(ws: Path) -> None:
    shutil.copy(ws / "ct.nii.gz", ws / "CT.NII")  # gzip data under an uncompressed name


def all_zero(ws: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((30, 30, 30), np.int16)), str(ws / "zero.nii.gz"))


def landmarks(ws: Path) -> None:
    from voxelfm.localize.markups_json import write_point_list
    from voxelfm.localize.points import PointList

    write_point_list(
        PointList(["a", "b"], np.array([[0.0, 20.0, 40.0], [10.0, 30.0, 50.0]])), ws / "pts.mrk.json"
    )
    (ws / "landmarks.csv").write_text("image,points\nct.nii.gz,pts.mrk.json\n")


def sample_data_ct(ws: Path) -> None:
    """A CT VoxelFM downloaded (in its output ledger, but not as a segmentation)."""
    from voxelfm.files.output_ledger import record_output

    record_output(ws / "one" / "ct.nii.gz", "voxelfm sample-data")


def report_eval_manifest(ws: Path) -> None:
    (ws / "gen.txt").write_bytes("Lungs: opacité.\n".encode("latin-1"))
    (ws / "eval.csv").write_text("id,generated_file,reference\na,gen.txt,Lungs: clear.\n")


def chattr(*names: str) -> Callable[[Path], AbstractContextManager]:
    """The named folders/files immutable (root) or without write permission during the command."""

    class Locked:
        def __init__(self, ws: Path) -> None:
            self.paths = [p for n in names for p in sorted((ws / n).parent.glob((ws / n).name))]

        def __enter__(self):
            for p in self.paths:
                if os.geteuid() == 0:
                    if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                        pytest.skip("root without chattr: cannot make a read-only library")
                else:
                    p.chmod(0o555 if p.is_dir() else 0o444)
            return self

        def __exit__(self, *exc):
            for p in reversed(self.paths):
                if os.geteuid() == 0:
                    subprocess.run(["chattr", "-i", str(p)], capture_output=True)
                else:
                    p.chmod(0o755 if p.is_dir() else 0o644)

    return Locked


# ---- checks after a command ------------------------------------------------------------------------------


def has_report(case_id: str, text_part: str) -> Callable[[Path, str], None]:
    def check(ws: Path, out: str) -> None:
        from voxelfm.retrieval.library import CaseLibrary

        with CaseLibrary.open(ws / "lib") as lib:
            assert text_part in (lib.report(case_id) or "")

    return check


def said_once(fragment: str) -> Callable[[Path, str], None]:
    def check(ws: Path, out: str) -> None:
        assert out.count(fragment) == 1, out

    return check


def library_lists(n: int) -> Callable[[Path, str], None]:
    def check(ws: Path, out: str) -> None:
        assert f"{n} case(s)" in out, out

    return check


READ_ONLY_LIB = chattr("lib", "lib/*")  # the folder and every file in it

CASES = [
    # --- data loss: one command's output over another command's file ---------------------------------------
    Case("report --out over a probe saved by segment", f"report {{ws}}/lib {CT} --out {{ws}}/probeA {M}", 2,
         "is a segmentation probe (voxelfm segment wrote it), not a report draft",
         (REPORT, *LIB, f"{SEG_FIT} --save-probe {{ws}}/probeA"), ("probeA.json", "probeA.safetensors")),
    Case("segment --save-probe over a probe saved by fit-probe", f"{SEG_FIT} --save-probe {{ws}}/p01", 2,
         "is a classification/regression/survival probe (voxelfm fit-probe wrote it)",
         (f"{FIT} --out {{ws}}/p01",), ("p01.json", "p01.safetensors", "p01.report.json", "p01.report.png")),
    Case("fit-probe --out over a segmentation probe", f"{FIT} --out {{ws}}/p02", 2, "is a segmentation probe",
         (f"{SEG_FIT} --save-probe {{ws}}/p02",), ("p02.json", "p02.safetensors")),
    Case("fit-probe --task localisation --out over a segmentation probe", "fit-probe --task localisation "
         "--manifest {ws}/landmarks.csv --out {ws}/p04 " + M, 2, "is a segmentation probe",
         (f"{SEG_FIT} --save-probe {{ws}}/p04", landmarks), ("p04.json", "p04.safetensors")),
    Case("index add on a 0-byte library.sqlite", ADD, 2, "is damaged (the file is empty, 0 bytes)",
         (ADD, empty_database), ("lib",)),
    # --- reruns over a command's own outputs keep working ----------------------------------------------------
    Case("report --out rerun replaces its own draft", f"report {{ws}}/lib {CT} --out {{ws}}/draft {M}", 0, "",
         (REPORT, *LIB, f"report {{ws}}/lib {CT} --out {{ws}}/draft {M}")),
    Case("segment --save-probe rerun replaces its own probe", f"{SEG_FIT} --save-probe {{ws}}/probeB", 0, "",
         (f"{SEG_FIT} --save-probe {{ws}}/probeB",)),
    Case("segment --probe FOLDER segments a CT that sample-data wrote", f"segment --probe {{ws}}/seg {{ws}}/one "
         f"--out {{ws}}/segs {M}", 0, "wrote", (sample_data_ct,), after=lambda ws, out: (ws / "segs/ct_seg.nii.gz").stat()),
    # --- wrong results with exit 0 before --------------------------------------------------------------------
    Case("index add --report on a case already there: attached", f"{ADD} --report {{ws}}/report.txt", 0,
         "attached the report of case ct", (REPORT, ADD), after=has_report("ct", "no nodules")),
    Case("index add --report again: replaced", f"{ADD} --report {{ws}}/other.txt", 0,
         "replaced the report of case ct", (REPORT, *LIB, text("other.txt", "Lungs: a nodule.\n")),
         after=has_report("ct", "a nodule")),
    Case("box --labels given the CT", f"box --labels {CT} --label 1 --out {{ws}}/b.mrk.json", 2,
         "is not a label map"),
    Case("query --roi mask: given the CT", f"query {{ws}}/lib {CT} --roi mask:{CT} {M}", 2,
         "is not a region mask", (ADD,)),
    Case("query --roi mask:FILE:9 names the labels present", f"query {{ws}}/lib {CT} --roi "
         "mask:{ws}/labels.nii.gz:9 " + M, 2, "the labels present are 1, 2", (ADD,)),
    Case("segment --labels given the CT", f"segment {CT} --labels {CT} {M} --out {{ws}}/s.nii.gz", 2,
         "is not a label image"),
    Case("a byte-identical copy under another name in a manifest", f"{FIT} --out {{ws}}/p03 "
         "--manifest {ws}/copies.csv", 2, "listed more than once",
         (copy_image, manifest("copies.csv", "image,label", *(f"cohort/case{n}.nii.gz,{n % 2}" for n in range(4)),
                               "cohort/copy_of_case0.nii.gz,0"))),
    Case("a report above the size cap", f"{ADD} --report {{ws}}/huge.txt", 2, "are not stored", (HUGE,)),
    # --- tracebacks before -----------------------------------------------------------------------------------
    Case("index add --report Latin-1 text", f"{ADD} --report {{ws}}/latin1.txt", 2,
         "is not UTF-8 text (byte 0xe9", (LATIN1,)),
    Case("index add --report a binary file", f"{ADD} --report {{ws}}/binary.txt", 2, "is a binary file",
         (BINARY,)),
    Case("manifest report_file in Latin-1", "index add {ws}/lib {ws}/cases.csv " + M, 2,
         "line 2: report_file", (LATIN1, manifest("cases.csv", "image,report_file", "ct.nii.gz,latin1.txt"))),
    Case("report-eval generated_file in Latin-1", "report-eval {ws}/eval.csv", 2, "generated_file",
         (report_eval_manifest,)),
    Case("index remove on an immutable library", "index remove {ws}/lib ct", 2, "is read-only",
         (ADD,), ("lib",), around=READ_ONLY_LIB),
    Case("index rebuild on an immutable library", "index rebuild {ws}/lib", 2, "is read-only",
         (ADD,), ("lib",), around=READ_ONLY_LIB),
    Case("index add on an immutable library", ADD.replace("ct.nii.gz", "cohort/case1.nii.gz"), 2,
         "not writable", (ADD,), ("lib",), around=READ_ONLY_LIB),
    Case("--device mps without MPS", f"features {CT} --out {{ws}}/o.npz --model {{model}} --device mps", 2,
         "no usable Apple MPS"),
    # --- unclear messages before -----------------------------------------------------------------------------
    Case("index list on a read-only library", "index list {ws}/lib", 0, "", (ADD,), ("lib",),
         after=library_lists(1), around=READ_ONLY_LIB),
    Case("query on a read-only library", f"query {{ws}}/lib {CT} {M} --json", 0, "", (ADD,), ("lib",),
         around=READ_ONLY_LIB),
    Case("report on a read-only library", f"report {{ws}}/lib {CT} {M}", 0, "", (REPORT, *LIB), ("lib",),
         around=READ_ONLY_LIB),
    Case("--model a CT file", f"features {CT} --out {{ws}}/o.npz --model {CT}", 2, "is an image", (),
         ("ct.nii.gz",), ("delete",)),
    Case("--model a probe", f"features {CT} --out {{ws}}/o.npz --model {{ws}}/seg.json", 2,
         "is a VoxelFM segmentation probe header, not a model", (), ("seg.json",), ("delete",)),
    Case("box --label 9 not in the label map", "box --labels {ws}/labels.nii.gz --label 9 --out {ws}/b.mrk.json",
         2, "Label 9 has no voxels in"),
    Case("box --label 9 names the labels present", "box --labels {ws}/labels.nii.gz --label 9 --out "
         "{ws}/b.mrk.json", 2, "the labels present are 1, 2"),
    Case("a DICOM file without suffix", f"features {{ws}}/IM.30000022120808113428000016573 --out {{ws}}/o.npz {M}",
         2, "is a single DICOM file", (dicom_without_suffix,)),
    Case("gzip data named .NII", f"features {{ws}}/CT.NII --out {{ws}}/o.npz {M}", 2,
         "holds gzip-compressed data", (gzip_named_nii,)),
    Case("a folder of image files given as a DICOM series", f"features {{ws}}/images --out {{ws}}/o.npz {M}", 2,
         "is a folder of image files (ct.nii.gz, ct.nrrd, ct_copy.nii.gz), not a DICOM series",
         absent=("GDCMSeriesFileNames",)),
    Case("index add a file that is no image: refused before a library is made", "index add {ws}/newlib "
         "{ws}/a_file " + M, 2, "is not a CT image VoxelFM reads", after=lambda ws, out: not (ws / "newlib").exists()
         or pytest.fail("a library was created")),
    Case("manifest row whose image is missing", "index add {ws}/lib {ws}/missing.csv " + M, 2,
         "line 3: ", (manifest("missing.csv", "image", "ct.nii.gz", "cohort/absent.nii.gz"),)),
    Case("duplicate id in a manifest", "index add {ws}/lib {ws}/ids.csv " + M, 2, "line 3 repeats the id of line 2",
         (manifest("ids.csv", "image,id", "cohort/case0.nii.gz,a", "cohort/case1.nii.gz,a"),)),
    Case("-k 2.5", f"query {{ws}}/lib {CT} -k 2.5 {M}", 2, "is not a whole number"),
    Case("segment --probe P --save-probe P", f"segment --probe {{ws}}/seg {CT} --out {{ws}}/s.nii.gz "
         f"--save-probe {{ws}}/seg {M}", 2, "--save-probe saves a probe fitted from --labels", (),
         ("seg.json", "seg.safetensors")),
    Case("an all-zero volume: one warning line", f"features {{ws}}/zero.nii.gz --out {{ws}}/o.npz {M}", 0,
         "Every voxel has the same value", (all_zero,), absent=("UserWarning",),
         after=said_once("Every voxel has the same value")),
    Case("a truncated library.sqlite", "index list {ws}/lib", 2, "is damaged (the file is truncated",
         (ADD, truncated_database), ("lib",)),
    Case("a library.sqlite with a garbage page", f"query {{ws}}/lib {CT} {M}", 2, "is damaged",
         (ADD, garbage_database), ("lib",)),
    Case("index rebuild recovers a truncated library.sqlite", "index rebuild {ws}/lib", 0, "could NOT recover",
         (ADD3, truncated_database), after=lambda ws, out: _lists_after_rebuild(ws, out)),
    # --- report drafting in sequence --------------------------------------------------------------------------
    Case("report --segmentation that does not overlap the CT", f"report {CT} --segmentation {{ws}}/far.nii.gz {M}",
         2, "far.nii.gz", (far_labels,), absent=("mL",)),
    Case("a neighbour report with repeated headings drafts each heading once",
         f"report {{ws}}/lib {CT} {M}", 0, "", (REPEATED_HEADINGS, f"{ADD} --report {{ws}}/headed.txt"),
         after=no_repeated_heading),
    Case("index rebuild on a 0-byte library.sqlite says nothing is left", "index rebuild {ws}/lib", 2,
         "nothing is left in it to recover", (ADD, empty_database), ("lib",)),
]  # fmt: skip


def _lists_after_rebuild(ws: Path, out: str) -> None:
    """The cases whose rows survive are back (and searchable); the lost ones are named. How many survive the cut
    depends on how the rows lie in the pages (the vector width), so the count is read from the message."""
    from voxelfm.retrieval.library import CaseLibrary

    n = int(re.search(r"recovered (\d+) case\(s\)", out).group(1))
    assert 1 <= n < 3, out

    with CaseLibrary.open(ws / "lib") as lib:
        kept = [c.case_id for c in lib.cases()]
        assert len(kept) == n and not lib.indexes.check()
    lost = sorted({"ct", "case1", "case2"} - set(kept))
    said = out.split(f"could NOT recover {len(lost)}: ")[1]
    assert all(f"{c} (" in said for c in lost), out
    assert list((ws / "lib").glob("library.sqlite.damaged-*")), "the damaged file is kept"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("sequences")
    model = tiny_backbone(root / "tiny")
    return build_workspace(root, model), model


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sequence(case: Case, template, tmp_path, capfd, caplog):
    tpl, model = template
    ws = tmp_path / "user"
    shutil.copytree(tpl, ws)
    for step in case.setup:
        if callable(step):
            step(ws)
        else:
            assert _run(shlex.split(step.format(ws=ws, model=model))) == 0, capfd.readouterr().err
    watched = {n: _sums(ws, n) for n in case.unchanged}
    before = set(file_sums(ws))
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)  # what the command logs (its summary, its warnings) is part of its output
    with case.around(ws) if case.around else nullcontext():
        code = _run(shlex.split(case.argv.format(ws=ws, model=model)))
    captured = capfd.readouterr()  # the file descriptors: what ITK or SQLite print reaches the user too
    out = captured.err + captured.out + caplog.text
    assert code == case.code, out
    assert case.message in out, out
    for fragment in ("Traceback", *case.absent):
        assert fragment not in out, out
    for name, sums in watched.items():
        assert _sums(ws, name) == sums, f"{name} changed"
    if code != 0:
        assert set(file_sums(ws)) <= before | _sqlite_sidecars(ws), "a refused command left files"
    if case.after is not None:
        case.after(ws, out)


def _sums(ws: Path, name: str) -> dict[str, str] | str | None:
    """sha256 of a file, or of every file below a folder (SQLite's -wal/-shm beside a library left out: the
    database engine's own scratch files, not content)."""
    if (ws / name).is_dir():
        return {k: v for k, v in file_sums(ws / name).items() if "library.sqlite-" not in k}
    return file_sums(ws).get(name)


def _sqlite_sidecars(ws: Path) -> set[str]:
    """SQLite's own -wal/-shm files beside a library a reader opened (not an output)."""
    return {str(p.relative_to(ws)) for p in ws.rglob("library.sqlite-*")}


def test_slicer_save_probe_follows_the_same_rule(template, tmp_path):
    """The Slicer logic refuses what the CLI refuses: a segmentation probe is not saved over fit-probe's."""
    from voxelfm.errors import InputError
    from voxelfm.segment.probe_file import load_segmentation_probe
    from VoxelFMLib.segment_logic import FewShotSegmentLogic

    tpl, model = template
    ws = tmp_path / "user"
    shutil.copytree(tpl, ws)
    assert _run(shlex.split(f"{FIT} --out {{ws}}/p01".format(ws=ws, model=model))) == 0
    before = file_sums(ws)
    logic = FewShotSegmentLogic(model=str(model), device="cpu")
    logic.last_probe = load_segmentation_probe(ws / "seg")
    with pytest.raises(InputError, match="is a classification/regression/survival probe"):
        logic.save_probe(ws / "p01")
    assert file_sums(ws) == before
    logic.save_probe(ws / "mine")  # a new name: saved
    logic.save_probe(ws / "mine")  # and again over its own earlier save
    assert (ws / "mine.json").is_file()

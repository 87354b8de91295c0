"""A writer that fails half-way leaves the previous file whole, for every kind of output VoxelFM writes.

Each case writes version 1 with the real writer, then writes version 2 while the serialiser underneath it (numpy,
SimpleITK, safetensors, FAISS, PIL, a text write) has written part of its bytes and then fails as a full disk
would. The atomic write itself is never mocked: the folder must hold exactly version 1's files, byte for
byte, and no temporary file. Outputs in pairs (a probe's weights + header, a report's .txt + .json) must
keep the previous pair whole whichever half fails.
"""

from __future__ import annotations

import errno
import hashlib
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.files.atomic import atomic_write_text
from voxelfm.files.probe_file import TASKS, write_probe_files
from voxelfm.imaging.io import write_labelmap, write_volume
from voxelfm.imaging.pictures import save_panels
from voxelfm.imaging.volume import Volume
from voxelfm.localize.markups_json import write_point_list, write_roi
from voxelfm.localize.points import PointList
from voxelfm.report.draft import ReportDraft
from voxelfm.report.files import write_draft
from voxelfm.segment.classes import SegmentClass
from voxelfm.segment.files import write_seg_nrrd


def _full_disk() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device (injected)")


def _partial(target) -> None:
    """Write a few bytes where the serialiser was writing (a path or an open file), as a real failure does."""
    if hasattr(target, "write"):
        target.write(b"PK\x03\x04partial")
    else:
        Path(target).write_bytes(b"partial")


def serialiser_fails(*targets: str, at: int = 0, error: Callable[[], Exception] = _full_disk):
    """An injector: each of ``targets`` (a dotted name, imported when patched) writes part of its bytes where it
    was writing (its positional argument ``at``: a path or an open file), then raises ``error()``."""

    def inject(monkeypatch) -> None:
        def write(*args, **kwargs):
            _partial(args[at])
            raise error()

        for target in targets:
            monkeypatch.setattr(target, write)

    return inject


def _itk_error() -> Exception:
    return RuntimeError("ITK ERROR: could not write (injected full disk)")


def _faiss_error() -> Exception:
    return RuntimeError("Error in faiss::FileIOWriter (injected full disk)")


fail_numpy = serialiser_fails("numpy.savez", "numpy.savez_compressed")
fail_sitk = serialiser_fails("SimpleITK.WriteImage", at=1, error=_itk_error)
fail_safetensors = serialiser_fails("safetensors.torch.save_file", at=1)
fail_faiss = serialiser_fails("faiss.write_index", at=1, error=_faiss_error)
fail_pil = serialiser_fails("PIL.Image.Image.save", at=1)  # a method: argument 0 is the image


def fail_text(monkeypatch):
    real = pathlib.Path.write_text

    def write_text(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise _full_disk()

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


def fail_named(part: str):
    """Only the text file whose name holds ``part`` fails: the second half of a pair (a probe's header after
    its weights, a report's .txt after its .json)."""

    def fail(monkeypatch):
        real = pathlib.Path.write_text

        def write_text(self, data, *args, **kwargs):
            if part in self.name:
                real(self, data[:10], *args, **kwargs)
                raise _full_disk()
            return real(self, data, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text)

    return fail


# ---- the writers, version v of each output ------------------------------------------------------------


def features(folder: Path, v: int) -> None:
    rng = np.random.default_rng(v)
    VolumeFeatures(
        rng.normal(size=8).astype(np.float32),
        rng.normal(size=(2, 8)).astype(np.float32),
        rng.normal(size=(2, 2, 2, 8)).astype(np.float32),
        np.eye(4),
    ).save(folder / "f.npz")


def _labels(v: int) -> np.ndarray:
    arr = np.zeros((6, 7, 8), np.uint8)
    arr[1 : 2 + v, 2:5, 3:6] = 1
    return arr


def labelmap(folder: Path, v: int) -> None:
    write_labelmap(_labels(v), np.eye(4), folder / "seg.nii.gz")


def volume(folder: Path, v: int) -> None:
    write_volume(Volume(np.full((6, 7, 8), v * 10.0, np.float32), np.eye(4), "ct"), folder / "ct.nrrd")


def seg_nrrd(folder: Path, v: int) -> None:
    write_seg_nrrd(_labels(v), np.eye(4), folder / "s.seg.nrrd", [SegmentClass(1, f"organ {v}", (1, 0, 0))])


def probe(task: str) -> Callable[[Path, int], None]:
    def write(folder: Path, v: int) -> None:
        write_probe_files(folder / "probe", task, {"w": torch.full((3,), float(v))}, {"metrics": {"v": v}})

    return write


def markups(folder: Path, v: int) -> None:
    write_point_list(PointList(["a", "b"], np.array([[0.0, 1.0, v], [2.0, 3.0, 4.0]])), folder / "p.mrk.json")


def roi(folder: Path, v: int) -> None:
    from voxelfm.localize.markups_json import roi_markup

    write_roi(
        roi_markup("box", np.array([0.0, 0.0, v]), np.array([1.0, 2.0, 3.0]), np.eye(3)),
        folder / "b.mrk.json",
    )


def report(folder: Path, v: int) -> None:
    write_draft(ReportDraft([], ["Lungs"], title=f"draft {v}"), folder / "report")


def table(folder: Path, v: int) -> None:
    atomic_write_text(folder / "predictions.csv", f"case,score\nct,{v}\n")


def picture(folder: Path, v: int) -> None:
    save_panels([np.full((20, 30, 3), v / 4.0)], folder / "pca.png")


def faiss_index(folder: Path, v: int) -> None:
    from voxelfm.retrieval.vector_index import IndexPolicy, VectorIndex

    vectors = np.random.default_rng(v).normal(size=(4, 8)).astype(np.float32)
    index = VectorIndex.build(8, iter([(vectors, np.arange(4, dtype=np.int64))]), 4, IndexPolicy())
    index.save(folder / "mean.faiss")


def backbone(folder: Path, v: int) -> None:
    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(v)
    save_backbone(VoxelFMBackbone(BackboneConfig(embed_dim=24, depth=1, num_heads=2)), folder / "model")


@dataclass(frozen=True)
class Case:
    kind: str
    write: Callable[[Path, int], None]
    fail: Callable
    raises: type[BaseException] = OSError


CASES = [
    Case("features .npz", features, fail_numpy),
    Case("labelmap .nii.gz", labelmap, fail_sitk, RuntimeError),
    Case("volume .nrrd", volume, fail_sitk, RuntimeError),
    Case("segmentation .seg.nrrd", seg_nrrd, fail_sitk, RuntimeError),
    *(Case(f"{task} probe: weights fail", probe(task), fail_safetensors) for task in TASKS),
    *(Case(f"{task} probe: header fails", probe(task), fail_named(".json")) for task in TASKS),
    Case("markups point list", markups, fail_text),
    Case("markups ROI", roi, fail_text),
    Case("report draft .txt + .json", report, fail_text),
    Case("report draft: the .txt fails after the .json", report, fail_named(".txt")),
    Case("prediction table .csv", table, fail_text),
    Case("picture .png", picture, fail_pil),
    Case("FAISS index", faiss_index, fail_faiss, RuntimeError),
    Case("backbone model.safetensors", backbone, fail_safetensors),
]  # fmt: skip


def _sums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_failed_write_keeps_the_previous_output(case: Case, tmp_path, monkeypatch):
    case.write(tmp_path, 1)
    before = _sums(tmp_path)
    assert before, "version 1 wrote nothing"
    case.write(tmp_path, 2)
    assert _sums(tmp_path) != before, "version 2 must differ, else the test cannot see a failure"
    case.write(tmp_path, 1)
    before = _sums(tmp_path)
    with monkeypatch.context() as m:
        case.fail(m)
        with pytest.raises(case.raises):
            case.write(tmp_path, 2)
    assert _sums(tmp_path) == before  # every file of version 1 intact, nothing half-written, no temp file

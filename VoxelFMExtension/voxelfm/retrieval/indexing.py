"""`voxelfm index add` over an archive: resumable, with progress, data-parallel under torchrun.

Every rank builds the same list of inputs, drops those already in the library (done) or staged by an
interrupted run, and computes its shard (input i goes to rank i % world). Finished cases are staged
(``staging.py``); one process merges them: at once when running alone, in one step at the end under
torchrun (rank 0, which holds the writer lock from start to end). A killed run is resumed by running the same
command again: committed cases are skipped, staged ones are merged, nothing is added twice (one row per
source, enforced by the database).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, VoxelFMError
from ..imaging.io import read_volume
from ..pretrain.distributed import DistInfo, barrier, gather_objects
from ..progress import CancelFlag, ProgressFn, check_cancel
from . import staging
from .library import CaseLibrary
from .records import CaseRecord, CaseSource
from .sources import check_readable_kind, with_dicom_ids

if TYPE_CHECKING:
    from .pipeline import RetrievalPipeline

log = logging.getLogger(__name__)
INDEX_EVERY_S = 600.0  # a long single-process run brings the index files up to date this often


@dataclass
class AddReport:
    added: list[CaseRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already in the library
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, why)
    reports: list[str] = field(default_factory=list)  # "attached ..." / "replaced ...": cases already there
    merged_from_staging: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        text = f"added {len(self.added)} case(s), skipped {len(self.skipped)} already in the library"
        if self.reports:
            text += "; " + "; ".join(self.reports)
        if self.merged_from_staging:
            text += f", merged {self.merged_from_staging} computed by an interrupted run"
        if self.failed:
            text += f", {len(self.failed)} failed"
        return text + f" ({self.seconds:.1f} s)"

    def raise_failures(self) -> None:
        if self.failed:
            lines = "; ".join(f"{src}: {why.rstrip('.')}" for src, why in self.failed[:5])
            more = f" (and {len(self.failed) - 5} more)" if len(self.failed) > 5 else ""
            done = f" The other {len(self.added)} case(s) were added." if self.added else ""
            raise InputError(f"{len(self.failed)} case(s) could not be added: {lines}{more}.{done}")


def _dist(dist):
    if dist is not None:
        return dist

    return DistInfo()


def _agree(dist, error: str | None) -> None:
    """Every rank raises the same error when any rank has one (no rank is left waiting in a collective)."""
    errors = [e for e in gather_objects(dist, error) if e]
    if errors:
        raise InputError(errors[0])


def _open_writer(folder: Path, dist) -> CaseLibrary | None:
    lib, error = None, None
    if dist.is_main:
        try:
            lib = CaseLibrary.open(folder, create=True, writer=True)
        except VoxelFMError as exc:
            error = str(exc)
    _agree(dist, error)
    return lib


def compute_case(
    pipeline: RetrievalPipeline,
    folder: Path,
    source: CaseSource,
    spec,
    config,
    identity,
    reference,
    progress,
    cancel,
) -> staging.StagedCase:
    """Read one input and embed it; the StagedCase (InputError for an unreadable image)."""
    check_readable_kind(source)
    t = time.perf_counter()
    volume = source.volume if source.volume is not None else read_volume(source.path)
    emb, feats = pipeline.embed(volume, spec, config, progress, cancel)
    info = {
        "shape_kji": list(volume.array.shape),
        "spacing_mm": [round(float(v), 4) for v in volume.spacing],
        "patch_grid": list(feats.grid_shape),
        "seconds": round(time.perf_counter() - t, 3),
        "name": volume.name,
    }
    return staging.StagedCase(
        staging.staged_path(folder, source.key),
        with_dicom_ids(source),
        emb,
        identity,
        reference,
        dict(feats.preprocess),
        info,
        volume.content_hash(),
    )


def merge_staged(lib: CaseLibrary, paths: list[Path], config, report: AddReport) -> None:
    """Insert staged cases (skipping sources already present), deleting each file once committed."""
    for path in paths:
        try:
            case = staging.load_staged(path)
            record = lib.add_case(
                case.source,
                case.embeddings,
                case.identity,
                case.model_reference,
                case.preprocess,
                config,
                case.info,
                case.content_sha256,
            )
        except InputError as exc:
            report.failed.append((str(path), str(exc)))
            log.error("could not merge %s: %s", path.name, exc)
            staging.discard(path)
            continue
        staging.discard(path)
        if record is not None:
            report.added.append(record)
            log.info("added %s from %s", record.case_id, record.path or "a scene volume")


def attach_reports(lib: CaseLibrary, sources: list[CaseSource], report: AddReport) -> None:
    """A report / findings given for a case already in the library is attached to it, or replaces its own
    (never dropped): the AddReport says which."""
    for source in sources:
        if source.report is None and source.findings is None:
            continue
        record = lib.case_by_source(source.key)
        text = source.report if source.report is not None else record.report
        findings = source.findings if source.findings is not None else record.findings
        if text == record.report and findings == record.findings:
            line = f"case {record.case_id} already has this report"
        else:
            what = "report" if source.report is not None else "findings"
            had = record.report if source.report is not None else record.findings
            verb = "replaced the" if had else "attached the"
            lib.set_report(record.case_id, text, findings)
            line = f"{verb} {what} of case {record.case_id} (already in the library)"
        report.reports.append(line)
        log.info("%s", line)


@dataclass
class _Plan:
    """What every rank agreed on before computing: model, settings, and which inputs are left."""

    spec: object
    config: object
    identity: dict
    reference: str
    done: set[str]
    staged: dict[str, Path]


def _plan(pipeline, folder: Path, lib: CaseLibrary | None, dist) -> _Plan:
    reader = lib if lib is not None else CaseLibrary.open(folder)
    try:
        spec = pipeline.spec_for(reader, dist.local_rank if dist.enabled else None)
        config = pipeline.config_for(reader)
        error, identity = None, {}
        try:
            identity = pipeline.check_model(reader, spec)
        except VoxelFMError as exc:
            error = str(exc)
        _agree(dist, error)
        done, staged = _rank0_view(dist, reader.done_sources(), staging.staged_keys(folder))
        reference = reader.model_reference or str(identity.get("id") or spec.model)
        return _Plan(spec, config, identity, reference, done, staged)
    finally:
        if reader is not lib:
            reader.close()


def _rank0_view(dist, done: set[str], staged: dict[str, Path]) -> tuple[set[str], dict[str, Path]]:
    """Every rank shards rank 0's list of what is left.

    Each rank reading the folder itself is a race: rank 0 may stage its first case before a slower rank looks,
    and that rank's list (so its shard) then shifts and an input is computed by no rank.
    """
    views = gather_objects(dist, (done, staged))
    return views[0]


def _compute_shard(pipeline, folder, lib, plan: _Plan, mine, report, progress, cancel, dist) -> None:
    """Embed and stage this rank's inputs; alone, merge each at once (and refresh the index files now and then)."""
    last_index = time.perf_counter()
    for n, source in enumerate(mine):
        check_cancel(cancel)
        where = f"{source.display} ({n + 1}/{len(mine)})"

        def sub(f: float, m: str, n: int = n, where: str = where) -> None:
            progress((n + f) / max(1, len(mine)), f"{where}: {m}")

        try:
            args = (plan.spec, plan.config, plan.identity, plan.reference, sub, cancel)
            case = compute_case(pipeline, folder, source, *args)
        except InputError as exc:
            report.failed.append((source.display, str(exc)))
            log.error("%s: %s", source.display, exc)
            continue
        path = staging.stage(folder, case)
        if lib is not None and not dist.enabled:
            merge_staged(lib, [path], plan.config, report)
            if time.perf_counter() - last_index > INDEX_EVERY_S:
                lib.indexes.update()
                last_index = time.perf_counter()


def run_add(
    pipeline, folder: Path, sources: list[CaseSource], progress: ProgressFn, cancel: CancelFlag | None, dist
):
    """The body of ``RetrievalPipeline.add_sources``; returns an AddReport (failures listed, not raised)."""
    t0, dist = time.perf_counter(), _dist(dist)
    report = AddReport()
    lib = _open_writer(folder, dist)
    try:
        plan = _plan(pipeline, folder, lib, dist)
        report.skipped = [s.display for s in sources if s.key in plan.done]
        if lib is not None:
            attach_reports(lib, [s for s in sources if s.key in plan.done], report)
        todo = [s for s in sources if s.key not in plan.done and s.key not in plan.staged]
        if lib is not None and plan.staged:  # left by an interrupted run
            merge_staged(lib, sorted(plan.staged.values()), plan.config, report)
            report.merged_from_staging = len(report.added)
        mine = todo[dist.rank :: dist.world_size]
        _compute_shard(pipeline, folder, lib, plan, mine, report, progress, cancel, dist)
        barrier(dist)
        failures = gather_objects(dist, report.failed)
        if lib is not None:
            report.failed = [f for part in failures for f in part]
            if dist.enabled:  # the one merge step, in input order
                wanted = [staging.staged_path(folder, s.key) for s in todo]
                rest = sorted(set(staging.staged_files(folder)) - set(wanted))
                merge_staged(lib, [p for p in wanted if p.is_file()] + rest, plan.config, report)
            progress(0.99, "updating the index files")
            lib.indexes.update()
        barrier(dist)
    finally:
        if lib is not None:
            lib.close()
    report.seconds = time.perf_counter() - t0
    progress(1.0, report.summary())
    return report

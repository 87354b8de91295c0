"""The default sample CT: two chest CT cases with nodule labels from the pyradiomics 3.0.1 source archive.

Real CT that anyone can fetch from PyPI (a registry that stays reachable where model hubs are not), with
exact hashes: the archive's sha256 is the one PyPI publishes, and each extracted file's sha256 was measured
from that archive. Only the needed members are extracted, by name, as regular files, into names we choose
(no path from the archive is ever used as a destination), each verified before an atomic rename.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, IntegrityError, ModelNotAvailableError
from ..files.integrity import verify_file
from ..files.locations import cache_root
from ..progress import ProgressFn, no_progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchiveMember:
    member: str  # name inside the archive
    sha256: str
    size: int

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SampleSpec:
    name: str
    description: str
    image: ArchiveMember
    label: ArchiveMember


@dataclass(frozen=True)
class SampleArchive:
    """A source archive on PyPI holding sample cases, with its published sha256 and size."""

    filename: str
    sha256: str
    size: int
    pip_requirement: str
    licence: str
    cases: dict[str, SampleSpec] = field(default_factory=dict)


def _m(name: str, sha256: str, size: int) -> ArchiveMember:
    return ArchiveMember(f"pyradiomics-3.0.1/data/{name}", sha256, size)


# sha256/size of the archive: as published by PyPI (simple index) for pyradiomics-3.0.1.tar.gz.
# Member hashes: measured from that archive (2026-11-28).
PYRADIOMICS_301 = SampleArchive(
    filename="pyradiomics-3.0.1.tar.gz",
    sha256="47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5",
    size=34473030,
    pip_requirement="pyradiomics==3.0.1",
    licence="BSD-3-Clause (pyradiomics source distribution)",
    cases={
        "lung1": SampleSpec(
            "lung1",
            "chest CT 512x512x48, 0.57x0.57x5 mm, int16 HU, with a lung nodule label",
            _m(
                "lung1_image.nrrd",
                "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
                12548518,
            ),
            _m("lung1_label.nrrd", "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a", 24999),
        ),
        "lung2": SampleSpec(
            "lung2",
            "chest CT 512x512x61, 0.63x0.63x5 mm, int16 HU, with a lung nodule label",
            _m(
                "lung2_image.nrrd",
                "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
                17817709,
            ),
            _m("lung2_label.nrrd", "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a", 33427),
        ),
    },
)
DEFAULT_CASE = "lung1"


@dataclass(frozen=True)
class SampleCase:
    name: str
    image: Path
    label: Path
    description: str
    source: str
    licence: str


def sample_data_dir() -> Path:
    return cache_root() / "sample_data"


def _downloads_dir() -> Path:
    return cache_root() / "downloads"


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("VOXELFM_OFFLINE", "HF_HUB_OFFLINE")
    )


def _case_files(spec: SampleArchive, case: str, dest: Path) -> tuple[SampleSpec, Path, Path]:
    if case not in spec.cases:
        raise InputError(f"Unknown sample case {case!r}; available: {', '.join(spec.cases)}.")
    s = spec.cases[case]
    return s, dest / s.image.filename, dest / s.label.filename


def _present_and_valid(path: Path, m: ArchiveMember) -> bool:
    if not path.is_file():
        return False
    try:
        verify_file(path, m.sha256, m.size, f"sample file {m.filename}", "")
        return True
    except IntegrityError as exc:
        log.warning("%s Re-extracting it.", exc)
        return False


def fetch_sample_data(
    dest_dir: str | Path | None = None,
    case: str = DEFAULT_CASE,
    archive: str | Path | None = None,
    progress: ProgressFn | None = None,
    spec: SampleArchive | None = None,
) -> SampleCase:
    """Return the sample case's image + label files, extracting (and if needed downloading) them once.

    ``dest_dir``: default VOXELFM_CACHE_DIR/sample_data (~/.cache/voxelfm/sample_data). ``archive``: a local
    copy of the source archive (else VOXELFM_SAMPLE_ARCHIVE, else a previous download, else PyPI).
    """
    progress = progress or no_progress
    spec = spec or PYRADIOMICS_301
    dest = Path(dest_dir).expanduser() if dest_dir is not None else sample_data_dir()
    s, image, label = _case_files(spec, case, dest)
    if not (_present_and_valid(image, s.image) and _present_and_valid(label, s.label)):
        tar_path = _find_or_download_archive(spec, archive, dest, progress)
        members = [m for c in spec.cases.values() for m in (c.image, c.label)]
        extract_members(tar_path, members, dest, progress)
    progress(1.0, f"sample case {case} ready")
    return SampleCase(case, image, label, s.description, f"{spec.filename} (PyPI)", spec.licence)


def _find_or_download_archive(
    spec: SampleArchive, archive: str | Path | None, dest: Path, progress: ProgressFn
) -> Path:
    explicit = archive or os.environ.get("VOXELFM_SAMPLE_ARCHIVE")
    fix_local = f"Use an intact copy of {spec.filename} (sha256 {spec.sha256}), e.g. download it again."
    if explicit:
        path = Path(explicit).expanduser()
        verify_file(path, spec.sha256, spec.size, f"sample archive {spec.filename}", fix_local)
        return path
    for cand in (dest / spec.filename, _downloads_dir() / spec.filename):
        if cand.is_file():
            verify_file(
                cand, spec.sha256, spec.size, f"sample archive {spec.filename}", f"Delete {cand} and retry."
            )
            return cand
    return download_archive(spec, progress)


def not_available_message(spec: SampleArchive, cause: str) -> str:
    target = _downloads_dir() / spec.filename
    return "\n".join(
        [
            f"Sample CT data is not available: {spec.filename} ({spec.size / 1e6:.1f} MB, {spec.licence}) is not "
            f"on this machine and {cause}.",
            f"  On a machine with internet: pip download --no-deps --no-binary :all: --no-build-isolation "
            f"{spec.pip_requirement} ",
            f"  then copy {spec.filename} (sha256 {spec.sha256}) to {target}",
            "  or pass it directly: voxelfm sample-data --archive /path/to/" + spec.filename,
        ]
    )


def download_archive(spec: SampleArchive, progress: ProgressFn | None = None) -> Path:
    """Download the source archive with `pip download` (the package registry's own client) and verify it."""
    progress = progress or no_progress
    if _offline():
        raise ModelNotAvailableError(
            not_available_message(spec, "offline mode (VOXELFM_OFFLINE/HF_HUB_OFFLINE) forbids downloading")
        )
    target = _downloads_dir() / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{spec.filename}.{os.getpid()}.part")
    try:
        progress(0.0, f"pip download {spec.pip_requirement}")
        try:
            _pip_download(spec, tmp)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ModelNotAvailableError(
                not_available_message(spec, f"downloading it failed (pip download: {exc})")
            ) from exc
        verify_file(
            tmp, spec.sha256, spec.size, f"downloaded {spec.filename}", "The download was discarded; retry."
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _pip_download(spec: SampleArchive, out: Path, timeout: float = 600.0) -> None:
    """`pip download` of the sdist (works behind pip-configured mirrors); raises OSError if no archive results."""
    with tempfile.TemporaryDirectory(dir=out.parent) as d:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
        ]
        proc = subprocess.run(
            cmd + ["-d", d, spec.pip_requirement], capture_output=True, text=True, timeout=timeout
        )
        got = Path(d) / spec.filename
        if not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip exited with {proc.returncode}: {tail[0][:300]}")
        shutil.move(str(got), out)


def extract_members(
    tar_path: Path, members: list[ArchiveMember], dest: Path, progress: ProgressFn | None = None
) -> list[Path]:
    """Extract exactly these members as regular files into ``dest`` (flat), verifying each before renaming."""
    progress = progress or no_progress
    dest.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    with tarfile.open(tar_path, "r:*") as tar:
        for i, m in enumerate(members):
            progress(0.8 + 0.2 * i / max(len(members), 1), f"extracting {m.filename}")
            try:
                info = tar.getmember(m.member)
            except KeyError:
                raise IntegrityError(
                    f"{tar_path} has no member {m.member}: not the expected archive."
                ) from None
            if not info.isreg():  # symlinks, hard links, devices: refuse rather than follow
                raise IntegrityError(f"{tar_path}: {m.member} is not a regular file; refusing to extract it.")
            target = dest / m.filename
            tmp = dest / f".{m.filename}.{os.getpid()}.part"
            h = hashlib.sha256()
            try:
                src = tar.extractfile(info)
                assert src is not None
                with src, open(tmp, "wb") as f:
                    while block := src.read(1 << 20):
                        h.update(block)
                        f.write(block)
                size = tmp.stat().st_size
                if size != m.size or h.hexdigest() != m.sha256:
                    raise IntegrityError(
                        f"{tar_path}: {m.member} is {size} bytes with sha256 {h.hexdigest()}, expected {m.size} "
                        f"bytes with sha256 {m.sha256}. The archive is not the expected one; nothing was kept."
                    )
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
            out.append(target)
    return out

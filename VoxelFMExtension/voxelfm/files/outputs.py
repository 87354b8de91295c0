"""Every command declares its inputs and outputs up front; ``check()`` refuses a bad plan before any work.

The rules (the CLI and the Slicer logic alike; nothing a user made is replaced by accident):
- an output is never an input (nor a link to one), never inside an input folder (a later run would read it
  as input), never an existing folder; its folder exists or can be created, and is writable;
- two outputs of one run never share a path;
- an existing file is replaced only when it is VoxelFM's own earlier output OF THE SAME KIND, unchanged since
  (the ledger, ``files.output_ledger``: a rerun replaces its own outputs, but a report never replaces a probe's
  header), when it already holds exactly the content to be written (``same_sha256``), or when the caller
  allows it (``overwrite``, the CLI's ``--overwrite``); the refusal names what the file is;
- a run folder is new, empty, or a VoxelFM run folder of the same kind holding only what such runs write
  (``files.run_folder``); a managed folder (a case library, which recognises its own files) gets the
  place checks only.

Use: ``plan = OutputPlan(overwrite=args.overwrite, by="voxelfm segment")``; ``plan.input(...)``;
``out = plan.output(args.out, "--out", suffixes=(".nii.gz",), kind=SEGMENTATION)``; ``plan.check()``; do the work; then
``plan.done()`` notes every output this run wrote in the ledger (or ``plan.written(path)`` file by file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .file_kinds import describe_file
from .integrity import sha256_of
from .output_ledger import entry_path, own_output, record_output
from .probe_paths import probe_paths
from .run_folder import MARKER, claim_run_folder, foreign_entries, run_kind

PathLike = str | os.PathLike


@dataclass
class _Output:
    path: Path  # as given (what messages show)
    entry: Path  # the directory entry a write replaces
    what: str  # how the user named it: "--out", "--png", "the probe weights", ...
    kind: str  # what the file is ("segmentation probe"); only an earlier output of this kind is replaced
    same_sha256: str | None = None  # an existing file with this content may be replaced (it is identical)
    stamp: tuple[int, int] | None = None  # (size, mtime_ns) seen by check(); None: absent


@dataclass
class _RunFolder:
    path: Path
    entry: Path
    what: str
    kind: str | None  # None: a managed folder (its owner checks the contents)
    names: tuple[str, ...]  # top-level entries runs of this kind write (names or patterns)


@dataclass
class OutputPlan:
    """Inputs and outputs of one run; see the module docstring for the rules ``check()`` applies."""

    overwrite: bool = False
    by: str = "voxelfm"  # recorded in the ledger: which command wrote a file
    hint: str = "pass --overwrite to replace it"  # how to allow replacing (the Slicer logic says its own)
    folder_hint: str = "pass --overwrite to use it anyway"
    inputs: list[Path] = field(default_factory=list)
    outputs: list[_Output] = field(default_factory=list)
    folders: list[_RunFolder] = field(default_factory=list)
    checked: bool = False
    _known: _Inputs | None = field(default=None, repr=False)

    def input(self, *paths: PathLike | None) -> OutputPlan:
        """Files or folders this run reads (None is skipped)."""
        self.inputs += [Path(p).expanduser() for p in paths if p is not None and str(p) != ""]
        return self

    def output(
        self,
        path: PathLike,
        what: str = "--out",
        suffixes: Iterable[str] | None = None,
        same_sha256: str | None = None,
        kind: str | None = None,
    ) -> Path:
        """Declare one output file; ``suffixes``: the names it may end with (checked now, case-insensitive);
        ``kind``: what it is (default: ``by``, the command), only an earlier output of the same kind is replaced."""
        path = Path(path).expanduser()
        allowed = tuple(suffixes or ())
        if allowed and not path.name.lower().endswith(tuple(s.lower() for s in allowed)):
            raise InputError(f"{what} must end with {_or(allowed)}; got {path.name!r}.")
        kind = kind or self.by  # by default, only this command's own earlier outputs are replaced
        self.outputs.append(_Output(path, entry_path(path), what, kind, same_sha256))
        return path

    def probe_outputs(self, path: PathLike, what: str = "--out", kind: str = "probe") -> tuple[Path, Path]:
        """NAME.safetensors + NAME.json of a probe (of ``kind``, e.g. "segmentation probe") saved as ``path``."""
        st, js = probe_paths(path)
        return self.output(st, f"{what} (weights)", kind=kind), self.output(js, what, kind=kind)

    def run_folder(self, path: PathLike, kind: str, names: Iterable[str], what: str = "--out") -> Path:
        """Declare a run folder of ``kind`` whose runs write the top-level entries ``names``."""
        path = Path(path).expanduser()
        self.folders.append(_RunFolder(path, entry_path(path), what, kind, tuple(names)))
        return path

    def managed_folder(self, path: PathLike, what: str) -> Path:
        """Declare a folder whose contents its own code recognises and guards (e.g. a case library with its
        database): only not-an-input, not-inside-an-input, not-a-file and writable are checked here."""
        path = Path(path).expanduser()
        self.folders.append(_RunFolder(path, entry_path(path), what, None, ()))
        return path

    def check(self) -> OutputPlan:
        """InputError listing every problem (nothing is written); stamps existing outputs for ``done()``."""
        problems = _collisions(self)
        self._known = _Inputs.of(self.inputs)
        for out in self.outputs:
            problems += self._check_output(out)
        for folder in self.folders:
            problems += self._check_folder(folder)
        if problems:
            head = "Output check failed, nothing was written:" if len(problems) > 1 else ""
            raise InputError("\n  ".join([head, *problems]) if head else problems[0])
        for out in self.outputs:
            out.stamp = _stamp(out.entry)
        self.checked = True
        return self

    def claim_folders(self) -> None:
        """Create each run folder and write its marker (call after ``check()``, before the run writes)."""
        for folder in self.folders:
            if folder.kind is not None:
                claim_run_folder(folder.path, folder.kind)

    def written(self, *paths: PathLike) -> None:
        """Note in the ledger that this run wrote these files (so a later run may replace them)."""
        kinds = {out.entry: out.kind for out in self.outputs}
        for p in paths:
            record_output(p, self.by, kinds.get(entry_path(p)))

    def done(self) -> None:
        """Note every declared output this run created or changed since ``check()``."""
        for out in self.outputs:
            now = _stamp(out.entry)
            if now is not None and now != out.stamp:
                record_output(out.entry, self.by, out.kind)

    # --- the rules -------------------------------------------------------------------------------------

    def _check_output(self, out: _Output) -> list[str]:
        name = f"{out.what} {out.path}"
        if out.entry.is_dir() and not out.entry.is_symlink():
            return [f"{name} is a folder; give a file name."]
        problems = self._known.clash(name, out.entry)
        problems += _parent_problem(name, out.entry)
        if not problems and os.path.lexists(out.entry):
            problems += self._existing_problem(name, out)
        return problems

    def _existing_problem(self, name: str, out: _Output) -> list[str]:
        """Why an existing file may not be replaced by this output (empty when it may)."""
        if self.overwrite:
            return []
        own = own_output(out.entry)
        if own is not None and (own.kind == out.kind or (own.legacy and own.by == self.by)):
            return []
        if out.same_sha256 and out.entry.is_file():
            if sha256_of(out.entry, memo=False) == out.same_sha256:
                return []
        if own is not None:
            mine = f"an output of {self.by}" if out.kind == self.by else f"a {out.kind}"
            theirs = f"an output of {own.by}" if own.kind == own.by else f"a {own.kind} ({own.by} wrote it)"
            what = f": it is {theirs}, not {mine}"
        else:
            seen = describe_file(out.entry)
            what = " and is not an unchanged VoxelFM output" + (f" (it is {seen})" if seen else "")
        return [f"{name} already exists{what}; choose another name or {self.hint}."]

    def _check_folder(self, folder: _RunFolder) -> list[str]:
        name = f"{folder.what} {folder.path}"
        if os.path.lexists(folder.entry) and not folder.entry.is_dir():
            return [f"{name} is a file; give a folder (new or empty) for the run."]
        problems = self._known.clash(name, folder.entry, folder=True)
        problems += _parent_problem(name, folder.entry)
        if problems or not folder.entry.is_dir():
            return problems
        if not os.access(folder.entry, os.W_OK | os.X_OK):
            return [f"{name} is not writable (a read-only folder); choose a folder you can write to."]
        if self.overwrite or folder.kind is None:
            return problems
        if not any(folder.entry.iterdir()):
            return []
        foreign = foreign_entries(folder.entry, folder.kind, folder.names)
        if not foreign:
            return []
        other = run_kind(folder.entry)
        why = (
            f"is a VoxelFM {other} folder, not a {folder.kind} one"
            if other and other != folder.kind
            else (f"holds files VoxelFM did not write ({_few(foreign)})")
        )
        return [f"{name} {why}; choose a new or empty folder, or {self.folder_hint}."]


def _collisions(plan: OutputPlan) -> list[str]:
    """Two outputs (or run folders) of one run on the same path."""
    seen: dict[Path, str] = {}
    problems = []
    for what, entry in [(o.what, o.entry) for o in plan.outputs] + [(f.what, f.entry) for f in plan.folders]:
        key = _target(entry)
        if key in seen:
            problems.append(f"{seen[key]} and {what} are both {entry}: each output needs its own name.")
        else:
            seen[key] = what
    return problems


@dataclass
class _Inputs:
    """The inputs resolved once per check (a folder of 200 images has 200 outputs to compare with them)."""

    real: dict[Path, Path]  # real path -> the input as given
    ids: dict[tuple[int, int], Path]  # (device, inode) of existing inputs: hard links are the same file
    folders: list[tuple[Path, Path]]  # (real path, as given) of the inputs that are folders

    @classmethod
    def of(cls, inputs: list[Path]) -> _Inputs:
        real = {_target(p): p for p in inputs}
        ids = {i: p for p in inputs if (i := _file_id(p)) is not None}
        return cls(real, ids, [(r, p) for r, p in real.items() if r.is_dir()])

    def clash(self, name: str, entry: Path, folder: bool = False) -> list[str]:
        target = _target(entry)
        same = self.real.get(target) or self.ids.get(_file_id(entry) or (-1, -1))
        if same is not None:
            return [f"{name} is the input {same}: inputs are never overwritten; choose another name."]
        for real, inp in self.folders:
            if _inside(target, real):
                return [
                    f"{name} lies inside the input folder {inp}: a later run would read it as input; write it "
                    "outside that folder."
                ]
        held = [inp for real, inp in self.real.items() if folder and _inside(real, target)]
        return [f"{name} holds the input {held[0]}: write the outputs to another folder."] if held else []


def _parent_problem(name: str, entry: Path) -> list[str]:
    """The nearest existing ancestor must be a writable folder (missing folders are created)."""
    anc = entry.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        return [f"{name}: {anc} is a file, not a folder."]
    if not os.access(anc, os.W_OK | os.X_OK):
        return [f"{name}: the folder {anc} is not writable; choose a folder you can write to."]
    return []


def _target(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _inside(child: Path, folder: Path) -> bool:
    return child != folder and child.is_relative_to(folder)


def _stat(p: Path, *fields: str, follow: bool = True) -> tuple[int, ...] | None:
    """The named ``os.stat`` fields of ``p`` (of the link itself when not ``follow``), None if it is gone."""
    try:
        st = os.stat(p, follow_symlinks=follow)
    except OSError:
        return None
    return tuple(getattr(st, f) for f in fields)


def _file_id(p: Path) -> tuple[int, ...] | None:
    """Which file ``p`` is (device, inode): the same file under two names is one file."""
    return _stat(p, "st_dev", "st_ino")


def _stamp(p: Path) -> tuple[int, ...] | None:
    """(size, mtime) of the entry itself: it changes when something else rewrites an output."""
    return _stat(p, "st_size", "st_mtime_ns", follow=False)


def _or(items: tuple[str, ...]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"


def _few(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


__all__ = ["MARKER", "OutputPlan"]

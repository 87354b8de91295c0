"""VoxelFM jobs run as a separate process (the Jobs module's launcher): command lines and a Qt-free runner.

A job is ``<python> voxelfm_cli.py COMMAND ARGS...``: the same parser and code as the `voxelfm` console
script, in its own process so a long pretraining run neither blocks nor crashes the Slicer GUI.
``JobRunner`` holds what the widget must get right (tqdm output, stop-then-kill, the final status) and
takes its process and timer as arguments, so it is tested with fakes; in Slicer they are a ``qt.QProcess``
adapter and a single-shot ``qt.QTimer``.
"""

from __future__ import annotations

import codecs
import enum
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from voxelfm.capabilities import job_commands
from voxelfm.errors import InputError
from VoxelFMLib.timer import Timer

CLI_NAME = "voxelfm_cli.py"
# voxelfm sub-commands offered in the launcher (from the capability table; a test checks them against the parser)
JOB_COMMANDS = job_commands()
STOP_GRACE_MS = 5000  # time a stopped job gets to save a checkpoint before it is killed
MAX_LINE_CHARS = 100_000  # a line never ended by a newline is cut here so the buffer stays bounded


def cli_script(module_dir: str | os.PathLike) -> Path:
    """voxelfm_cli.py beside the Jobs module (source tree) or in VoxelFMScripts/ (installed)."""
    module_dir = Path(module_dir)
    for candidate in (module_dir / "VoxelFMScripts" / CLI_NAME, module_dir / CLI_NAME):
        if candidate.is_file():
            return candidate
    raise InputError(f"{CLI_NAME} not found next to {module_dir}; reinstall the VoxelFM extension.")


def python_executable() -> str:
    """PythonSlicer inside Slicer (its Python without the GUI), else the current interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    exe = Path(sys.executable)
    sibling = exe.with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(sibling) if sibling.is_file() else sys.executable


def job_arguments(script: str | os.PathLike, command: str, arguments: str = "") -> list[str]:
    """Arguments after the interpreter: [script, command, *split(arguments)] (POSIX shell quoting)."""
    command = command.strip()
    if not command or command.startswith("-") or " " in command:
        raise InputError(f"'{command}' is not a voxelfm command; pick one from the list.")
    try:
        extra = shlex.split(arguments or "", posix=True)
    except ValueError as exc:
        raise InputError(f"Cannot parse the arguments ({exc}); check quotes.") from exc
    return [str(script), command, *extra]


def display_command_line(program: str, args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in [program, *args])


# ----------------------------------------------------------------------------- output lines


class LineAssembler:
    """Turns raw process output into log lines, keeping only the last state of each line.

    tqdm redraws its bar with carriage returns (``\\r 10%|..`` ``\\r 20%|..``, then ``\\n``): each finished
    line is its last non-empty ``\\r`` segment, so the log gets one bar line, not hundreds. Chunks may split
    anywhere, also inside a UTF-8 character or between ``\\r`` and ``\\n``.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._segment = ""  # text after the last \r or \n
        self._state = ""  # last non-empty segment of the current line

    def feed(self, chunk: bytes | str) -> list[str]:
        """Completed lines in this chunk (the unfinished line stays buffered, see ``partial``)."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        lines: list[str] = []
        start = 0
        for i, char in enumerate(text):
            if char == "\r":
                self._end_segment(text[start:i])
                start = i + 1
            elif char == "\n":
                self._end_segment(text[start:i])
                lines.append(self._state)
                self._state = ""
                start = i + 1
        self._segment += text[start:]
        if len(self._segment) > MAX_LINE_CHARS:
            lines.append(self._segment)
            self._segment = ""
        return lines

    @property
    def partial(self) -> str:
        """What the unfinished line shows now (e.g. the live tqdm bar)."""
        return self._segment if self._segment.strip() else self._state

    def flush(self) -> list[str]:
        """The unfinished line, if any, as a completed one (the process ended)."""
        self._segment += self._decoder.decode(b"", final=True)
        last = self.partial
        self._segment = self._state = ""
        return [last] if last.strip() else []

    def _end_segment(self, tail: str) -> None:
        segment = self._segment + tail
        self._segment = ""
        if segment.strip():
            self._state = segment
        elif segment:  # tqdm(leave=False) clears its bar with spaces
            self._state = ""


# ----------------------------------------------------------------------------- runner


class JobProcess(Protocol):
    """What the runner needs of a process; output and the end are delivered by the owner."""

    def start(self, program: str, args: list[str]) -> None:
        """Start the process; raise OSError if it cannot start."""

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def is_running(self) -> bool: ...


class JobState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(frozen=True)
class JobUpdate:
    """What the widget shows after an event: new log lines, the live line, the status, button state."""

    lines: tuple[str, ...] = ()
    live_line: str = ""
    status: str = ""
    running: bool = False


@dataclass
class JobRunner:
    """One job at a time: start, output, stop (terminate, then kill after ``grace_ms``), finished."""

    process: JobProcess
    timer: Timer  # single-shot; its timeout calls ``grace_expired``
    grace_ms: int = STOP_GRACE_MS
    state: JobState = field(default=JobState.IDLE, init=False)
    status: str = field(default="idle", init=False)
    killed: bool = field(default=False, init=False)
    _lines: LineAssembler = field(default_factory=LineAssembler, init=False)

    @property
    def running(self) -> bool:
        return self.state is not JobState.IDLE

    def start(self, program: str, args: list[str]) -> JobUpdate:
        if self.running:
            return self._update(status=self.status)
        self._lines = LineAssembler()
        self.killed = False
        try:
            self.process.start(program, args)
        except OSError as exc:
            self.status = f"Could not start {program}: {exc}"
            return self._update()
        self.state = JobState.RUNNING
        self.status = "Running"
        return self._update()

    def output(self, chunk: bytes | str) -> JobUpdate:
        return self._update(lines=self._lines.feed(chunk))

    def stop(self) -> JobUpdate:
        """Ask the job to end (it may save a checkpoint); it is killed if still alive after the grace period."""
        if self.state is not JobState.RUNNING:
            return self._update()
        self.state = JobState.STOPPING
        self.status = "Stopping..."
        self.process.terminate()
        self.timer.start(self.grace_ms)
        return self._update()

    def grace_expired(self) -> JobUpdate:
        if self.state is JobState.STOPPING and self.process.is_running():
            self.killed = True
            self.status = f"Killing (no exit {self.grace_ms / 1000:g} s after the stop request)..."
            self.process.kill()
        return self._update()

    def finished(self, exit_code: int, crashed: bool) -> JobUpdate:
        """The process ended; ``crashed``: it died from a signal (QProcess.CrashExit) rather than exiting."""
        stopped = self.state is JobState.STOPPING
        self.timer.stop()
        self.state = JobState.IDLE
        self.status = finished_status(exit_code, crashed, stopped, self.killed)
        return self._update(lines=self._lines.flush())

    def _update(self, lines: list[str] | None = None, status: str | None = None) -> JobUpdate:
        return JobUpdate(
            lines=tuple(lines or ()),
            live_line=self._lines.partial if self.running else "",
            status=self.status if status is None else status,
            running=self.running,
        )


def finished_status(exit_code: int, crashed: bool, stopped: bool, killed: bool = False) -> str:
    """One line for the end of a job."""
    if stopped:
        how = "killed" if killed else ("terminated" if crashed else f"exit code {exit_code}")
        return f"Stopped ({how})"
    if crashed:
        return "Crashed (the process died without an exit code; see the end of the log)"
    if exit_code == 0:
        return "Finished"
    return f"Failed with exit code {exit_code} (see the end of the log)"

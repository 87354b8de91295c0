"""The Jobs module's Qt-free runner (VoxelFMLib.jobs): fake process and timer, real tqdm output."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from VoxelFMLib.jobs import JOB_COMMANDS, STOP_GRACE_MS, JobRunner, JobState, LineAssembler, finished_status


class FakeProcess:
    def __init__(self, fail_to_start: bool = False) -> None:
        self.fail_to_start = fail_to_start
        self.started: list[tuple[str, list[str]]] = []
        self.calls: list[str] = []
        self.alive = False

    def start(self, program: str, args: list[str]) -> None:
        if self.fail_to_start:
            raise OSError("No such file or directory")
        self.started.append((program, list(args)))
        self.alive = True

    def terminate(self) -> None:
        self.calls.append("terminate")

    def kill(self) -> None:
        self.calls.append("kill")

    def is_running(self) -> bool:
        return self.alive


class FakeTimer:
    def __init__(self) -> None:
        self.starts: list[int] = []
        self.running = False

    def start(self, milliseconds: int) -> None:
        self.starts.append(milliseconds)
        self.running = True

    def stop(self) -> None:
        self.running = False


@pytest.fixture
def runner():
    return JobRunner(FakeProcess(), FakeTimer())


def test_start_runs_one_job_at_a_time(runner):
    update = runner.start("python", ["cli.py", "models"])
    assert update.running and update.status == "Running" and runner.state is JobState.RUNNING
    again = runner.start("python", ["cli.py", "pretrain"])
    assert again.running and runner.process.started == [("python", ["cli.py", "models"])]


def test_a_job_that_cannot_start_says_so():
    runner = JobRunner(FakeProcess(fail_to_start=True), FakeTimer())
    update = runner.start("/nowhere/PythonSlicer", ["cli.py"])
    assert not update.running and update.status.startswith("Could not start /nowhere/PythonSlicer")


def test_output_keeps_the_last_state_of_each_tqdm_line(runner):
    runner.start("python", [])
    lines = []
    for chunk in (b"loading\n", b"\r 10%|#", b"  |\r 50%|#####|", b"\r100%|##########|\n", b"done"):
        update = runner.output(chunk)
        lines += update.lines
    assert lines == ["loading", "100%|##########|"]
    assert update.live_line == "done"  # unfinished line, shown live
    end = runner.finished(0, crashed=False)
    assert end.lines == ("done",) and end.status == "Finished" and not end.running and end.live_line == ""


def test_live_line_follows_the_bar(runner):
    runner.start("python", [])
    assert runner.output(b"\r 10%|#").live_line == " 10%|#"
    assert runner.output(b"\r 20%|##\r").live_line == " 20%|##"  # just redrawn, next not written yet


def test_stop_terminates_then_kills_after_the_grace_period(runner):
    runner.start("python", [])
    update = runner.stop()
    assert runner.process.calls == ["terminate"] and runner.timer.starts == [STOP_GRACE_MS]
    assert update.running and update.status == "Stopping..." and runner.state is JobState.STOPPING
    assert runner.stop().status == "Stopping..."  # a second click does not terminate again
    assert runner.process.calls == ["terminate"]
    runner.grace_expired()  # still alive after 5 s
    assert runner.process.calls == ["terminate", "kill"]
    runner.process.alive = False
    end = runner.finished(9, crashed=True)
    assert end.status == "Stopped (killed)" and not runner.timer.running


def test_a_job_that_exits_in_time_is_not_killed(runner):
    runner.start("python", [])
    runner.stop()
    runner.process.alive = False
    end = runner.finished(0, crashed=False)  # it saved its checkpoint and exited
    assert end.status == "Stopped (exit code 0)" and not runner.timer.running
    runner.grace_expired()  # a timeout already queued
    assert runner.process.calls == ["terminate"]


def test_stop_when_idle_does_nothing(runner):
    update = runner.stop()
    assert not update.running and runner.process.calls == [] and runner.timer.starts == []


@pytest.mark.parametrize(
    "code, crashed, stopped, killed, expected",
    [
        (0, False, False, False, "Finished"),
        (2, False, False, False, "Failed with exit code 2 (see the end of the log)"),
        (0, True, False, False, "Crashed (the process died without an exit code; see the end of the log)"),
        (15, True, True, False, "Stopped (terminated)"),
        (9, True, True, True, "Stopped (killed)"),
        (0, False, True, False, "Stopped (exit code 0)"),
    ],
)
def test_finished_status(code, crashed, stopped, killed, expected):
    assert finished_status(code, crashed, stopped, killed) == expected


def test_a_new_job_starts_with_a_clean_log(runner):
    runner.start("python", [])
    runner.output(b"half a line")
    runner.process.alive = False
    runner.finished(0, crashed=False)
    runner.start("python", [])
    assert runner.output(b"second\n").lines == ("second",)


# ---------------------------------------------------------------- line assembly details


def test_carriage_return_newline_split_across_chunks():
    lines = LineAssembler()
    assert lines.feed(b"windows line\r") == []
    assert lines.feed(b"\nnext\r\n") == ["windows line", "next"]


def test_utf8_character_split_across_chunks():
    lines = LineAssembler()
    data = "Volumen: 12 µL ✓\n".encode()
    cut = data.index("µ".encode()) + 1
    assert lines.feed(data[:cut]) == [] and lines.feed(data[cut:]) == ["Volumen: 12 µL ✓"]


def test_blank_lines_are_kept_and_a_cleared_bar_is_dropped():
    lines = LineAssembler()
    assert lines.feed(b"usage: voxelfm\n\noptions:\n") == ["usage: voxelfm", "", "options:"]
    # tqdm(leave=False) overwrites its bar with spaces, then the next message follows on the same line
    assert lines.feed(b"\r 50%|#####|\r          \rINFO: done\n") == ["INFO: done"]
    assert lines.flush() == []


def test_real_tqdm_output_in_random_chunks():
    script = (
        "import sys, time\n"
        "from tqdm import tqdm\n"
        "print('start', flush=True)\n"
        "for _ in tqdm(range(50), file=sys.stdout, mininterval=0, ncols=60, desc='epoch'):\n"
        "    pass\n"
        "print('done')\n"
    )
    data = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, timeout=120).stdout
    assert data.count(b"\r") > 10  # tqdm really redrew the bar
    rng = random.Random(0)
    lines, pos = LineAssembler(), 0
    out = []
    while pos < len(data):
        step = rng.randint(1, 17)
        out += lines.feed(data[pos : pos + step])
        pos += step
    out += lines.flush()
    assert out[0] == "start" and out[-1] == "done" and len(out) == 3
    assert out[1].startswith("epoch: 100%") and "50/50" in out[1]


# ---------------------------------------------------------------- the launcher's commands exist


def test_job_commands_are_voxelfm_commands():
    from voxelfm.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(JOB_COMMANDS) <= set(commands), sorted(set(JOB_COMMANDS) - set(commands))

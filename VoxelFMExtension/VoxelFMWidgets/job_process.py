"""qt.QProcess in the shape VoxelFMLib.jobs.JobRunner expects (start, terminate, kill, is_running)."""

from __future__ import annotations

from collections.abc import Callable

import qt

START_TIMEOUT_MS = 10000


class QtJobProcess:
    """One reusable QProcess with stdout+stderr merged; output and the end are passed to callbacks."""

    def __init__(self, onOutput: Callable[[bytes], None], onFinished: Callable[[int, bool], None]) -> None:
        self._onOutput = onOutput
        self._onFinished = onFinished
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        environment = qt.QProcessEnvironment.systemEnvironment()
        environment.insert("PYTHONUNBUFFERED", "1")  # stream progress lines as they come
        self.process.setProcessEnvironment(environment)
        self.process.connect("readyReadStandardOutput()", self._readOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._finished)

    def start(self, program: str, args: list[str]) -> None:
        self.process.start(program, args)
        if not self.process.waitForStarted(START_TIMEOUT_MS):
            raise OSError(self.process.errorString())

    def terminate(self) -> None:
        self.process.terminate()  # SIGTERM: the job may save a checkpoint (on Windows: WM_CLOSE)

    def kill(self) -> None:
        self.process.kill()

    def is_running(self) -> bool:
        return self.process.state() != qt.QProcess.NotRunning

    def _readOutput(self) -> None:
        data = self.process.readAllStandardOutput().data()
        self._onOutput(data if isinstance(data, bytes) else str(data).encode("utf-8"))

    def _finished(self, exitCode: int, exitStatus) -> None:
        self._readOutput()  # anything written just before the end
        self._onFinished(int(exitCode), exitStatus == qt.QProcess.CrashExit)

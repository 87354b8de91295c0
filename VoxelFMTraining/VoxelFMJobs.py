"""VoxelFM Jobs: launch and watch any voxelfm command (pretraining, probe fitting, batch features, ...).

Each job runs ``voxelfm_cli.py COMMAND ARGS`` in a separate PythonSlicer process whose output streams into
the log, so long runs neither freeze nor crash Slicer and can be stopped (VoxelFMLib.jobs.JobRunner: tqdm
lines, terminate-then-kill, final status). The same jobs run without any GUI:

    Slicer --no-splash --no-main-window --python-script <...>/voxelfm_cli.py COMMAND ARGS
    voxelfm COMMAND ARGS                                   (the console script, same parser)
"""

from __future__ import annotations

import os
from typing import Annotated

import qt
import slicer
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from VoxelFMWidgets import QtJobProcess, VoxelFMModuleWidget, userMessage
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest

from VoxelFMLib.jobs import JOB_COMMANDS, JobRunner, JobState, JobUpdate, display_command_line


class VoxelFMJobs(VoxelFMModule):
    TITLE = _("VoxelFM Jobs")
    HELP = _(
        "Run VoxelFM jobs (pretraining, probe fitting, batch feature extraction, ...) as separate "
        "processes and watch their output. The same commands work headless: Slicer --no-main-window "
        "--python-script voxelfm_cli.py COMMAND ARGS, or `voxelfm COMMAND ARGS`."
    )


@parameterNodeWrapper
class VoxelFMJobsParameterNode:
    command: Annotated[str, Choice(list(JOB_COMMANDS))] = "pretrain"
    arguments: str = ""


class VoxelFMJobsWidget(VoxelFMModuleWidget):
    defaultVolumeParameter = None

    def createLogic(self):
        return VoxelFMJobsLogic()

    def setupWidgets(self) -> None:
        self.ui.logTextEdit.setMaximumBlockCount(20000)
        self.stopTimer = qt.QTimer()
        self.stopTimer.setSingleShot(True)
        self.runner = JobRunner(QtJobProcess(self.onOutput, self.onFinished), self.stopTimer)
        self.stopTimer.connect("timeout()", lambda: self.showUpdate(self.runner.grace_expired()))
        self.ui.launchButton.connect("clicked(bool)", self.onLaunch)
        self.ui.stopButton.connect("clicked(bool)", lambda checked: self.showUpdate(self.runner.stop()))

    def cleanup(self) -> None:
        if self.ui is not None and self.runner.running:  # a scene close leaves the job running; unloading not
            self.runner.process.kill()
        super().cleanup()

    def updateGUI(self) -> None:
        node = self.parameterNode
        self.ui.launchButton.enabled = node is not None and not self.runner.running
        self.ui.stopButton.enabled = self.runner.state is JobState.RUNNING
        if node is not None:
            try:
                self.ui.commandLineLabel.setText(display_command_line(*self.logic.commandLine(node)))
            except Exception as exc:
                self.ui.commandLineLabel.setText(userMessage(exc))

    def onLaunch(self) -> None:
        try:
            program, args = self.logic.commandLine(self.parameterNode)
        except Exception as exc:
            slicer.util.errorDisplay(userMessage(exc))
            return
        self.ui.logTextEdit.clear()
        self.ui.logTextEdit.appendPlainText("$ " + display_command_line(program, args))
        self.showUpdate(self.runner.start(program, args))

    def onOutput(self, data: bytes) -> None:
        self.showUpdate(self.runner.output(data))

    def onFinished(self, exitCode: int, crashed: bool) -> None:
        self.showUpdate(self.runner.finished(exitCode, crashed))

    def showUpdate(self, update: JobUpdate) -> None:
        for line in update.lines:
            self.ui.logTextEdit.appendPlainText(line)
        self.ui.progressLabel.setText(update.live_line)
        self.ui.statusLabel.setText(update.status)
        self.updateGUI()


class VoxelFMJobsLogic(VoxelFMModuleLogic):
    parameterNodeClass = VoxelFMJobsParameterNode  # no capability: the jobs run in their own processes

    def commandLine(self, parameterNode) -> tuple[str, list[str]]:
        """(program, arguments) of the job described by the parameter node."""
        from VoxelFMLib.jobs import cli_script, job_arguments, python_executable

        script = cli_script(os.path.dirname(os.path.abspath(__file__)))
        return python_executable(), job_arguments(script, parameterNode.command, parameterNode.arguments)


class VoxelFMJobsTest(VoxelFMModuleTest):
    def _run(self, command: str, arguments: str, timeout: float):
        import subprocess

        node = VoxelFMJobsLogic().getParameterNode()
        node.command = command
        node.arguments = arguments
        program, args = VoxelFMJobsLogic().commandLine(node)
        return subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout)

    def test_cli_help_runs_headless(self):
        """The launcher's command line for `models --help` runs and exits 0."""
        proc = self._run("models", "--help", 300)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.delayDisplay("Test passed")

    def test_features_job_on_sample_ct(self):
        """The launcher's `features` job on the sample CT writes a features file (bundled model, CPU)."""
        import shlex
        import tempfile
        from pathlib import Path

        if self.missing("torch"):
            return
        from VoxelFMLib.sample_data import prepare_files, sample_source

        image = prepare_files(sample_source()).image
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "features.npz"
            arguments = (
                f"{shlex.quote(str(image))} --out {shlex.quote(str(out))} --model voxelfm-tiny --device cpu"
            )
            proc = self._run("features", arguments, 1800)
            self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr[-2000:])
            self.assertTrue(out.is_file() and out.stat().st_size > 0)
        self.delayDisplay("Test passed")

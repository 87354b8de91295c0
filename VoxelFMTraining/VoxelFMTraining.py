"""VoxelFM Training: launch and watch VoxelFM jobs (pretraining, few-shot/probe fitting, batch features).

Each job runs ``voxelfm_cli.py COMMAND ARGS`` in a separate PythonSlicer process (a qt.QProcess whose
output is streamed into the log), so long runs neither freeze nor crash Slicer and can be stopped. The
same jobs run without any GUI:

    Slicer --no-splash --no-main-window --python-script <...>/voxelfm_cli.py COMMAND ARGS
    voxelfm COMMAND ARGS                                   (the console script, same parser)
"""

from __future__ import annotations

import os
from typing import Annotated

import qt
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# voxelfm sub-commands offered in the launcher (see `voxelfm --help`)
COMMANDS = ("pretrain", "segment", "features", "fit-probe", "apply-probe", "models", "sample-data")
STOP_GRACE_MS = 5000


class VoxelFMTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VoxelFM Training"
        self.parent.categories = ["VoxelFM"]
        self.parent.dependencies = []
        self.parent.contributors = ["VoxelFM Slicer extension contributors"]
        self.parent.helpText = (
            "Run VoxelFM jobs (pretraining, probe fitting, batch feature extraction) as separate processes "
            "and watch their output. The same commands work headless: "
            "Slicer --no-main-window --python-script voxelfm_cli.py COMMAND ARGS, or `voxelfm COMMAND ARGS`."
        )
        self.parent.acknowledgementText = (
            "VoxelFM backbone by its authors; see the model card for licence terms."
        )


@parameterNodeWrapper
class VoxelFMTrainingParameterNode:
    command: Annotated[str, Choice(list(COMMANDS))] = "pretrain"
    arguments: str = ""


class VoxelFMTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.process = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VoxelFMTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = VoxelFMTrainingLogic()
        self.ui.logTextEdit.setMaximumBlockCount(20000)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.launchButton.connect("clicked(bool)", self.onLaunch)
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.process is not None and self.process.state() != qt.QProcess.NotRunning:
            self.process.kill()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._update)
        self._update()

    def _running(self) -> bool:
        return self.process is not None and self.process.state() != qt.QProcess.NotRunning

    def _update(self, caller=None, event=None) -> None:
        running = self._running()
        self.ui.launchButton.enabled = not running and self._parameterNode is not None
        self.ui.stopButton.enabled = running
        if self._parameterNode is not None:
            try:
                program, args = self.logic.commandLine(self._parameterNode)
                from VoxelFMLib.jobs import display_command_line

                self.ui.commandLineLabel.setText(display_command_line(program, args))
            except Exception as exc:
                self.ui.commandLineLabel.setText(str(exc))

    def onLaunch(self) -> None:
        if self._running():
            return
        try:
            program, args = self.logic.commandLine(self._parameterNode)
        except Exception as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        env = qt.QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")  # stream progress lines as they come
        self.process.setProcessEnvironment(env)
        self.process.connect("readyReadStandardOutput()", self.onOutput)
        self.process.connect("finished(int,QProcess::ExitStatus)", self.onFinished)
        self.ui.logTextEdit.clear()
        self.ui.logTextEdit.appendPlainText("$ " + self.ui.commandLineLabel.text)
        self.process.start(program, args)
        if not self.process.waitForStarted(10000):
            self.ui.statusLabel.setText(f"Could not start {program}")
            self.process = None
        else:
            self.ui.statusLabel.setText(f"Running (pid {self.process.processId()})")
        self._update()

    def onOutput(self) -> None:
        data = self.process.readAllStandardOutput().data()
        text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
        # tqdm redraws with carriage returns: keep the last state of each line
        for line in text.replace("\r\n", "\n").split("\n"):
            line = line.rsplit("\r", 1)[-1]
            if line:
                self.ui.logTextEdit.appendPlainText(line)

    def onFinished(self, exitCode, exitStatus) -> None:
        crashed = exitStatus == qt.QProcess.CrashExit
        self.ui.statusLabel.setText("Stopped" if crashed else f"Finished with exit code {exitCode}")
        self._update()

    def onStop(self) -> None:
        if not self._running():
            return
        self.ui.statusLabel.setText("Stopping...")
        self.process.terminate()  # lets the job save a checkpoint; killed if it does not exit in time
        process = self.process
        qt.QTimer.singleShot(
            STOP_GRACE_MS, lambda: process.kill() if process.state() != qt.QProcess.NotRunning else None
        )


class VoxelFMTrainingLogic(ScriptedLoadableModuleLogic):
    def getParameterNode(self):
        return VoxelFMTrainingParameterNode(super().getParameterNode())

    def commandLine(self, parameterNode):
        """(program, arguments) of the job described by the parameter node."""
        from VoxelFMLib.jobs import cli_script, job_arguments, python_executable

        script = cli_script(os.path.dirname(os.path.abspath(__file__)))
        return python_executable(), job_arguments(script, parameterNode.command, parameterNode.arguments)


class VoxelFMTrainingTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_cli_help_runs_headless()

    def test_cli_help_runs_headless(self):
        """The launcher's command line for `models --help` runs and exits 0."""
        import subprocess

        node = VoxelFMTrainingLogic().getParameterNode()
        node.command = "models"
        node.arguments = "--help"
        program, args = VoxelFMTrainingLogic().commandLine(node)
        proc = subprocess.run([program, *args], capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.delayDisplay("Test passed")

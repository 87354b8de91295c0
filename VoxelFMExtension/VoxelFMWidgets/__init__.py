"""Qt widget layer shared by the VoxelFM modules: lifecycle base, model panel, busy state, dependencies.

The only VoxelFM package that may import qt, ctk, slicer.ScriptedLoadableModule and parameterNodeWrapper;
the behaviour worth testing lives in VoxelFMLib (Qt-free) and is only wired up here.
"""

from VoxelFMWidgets.busy import BusyState, runInWorker
from VoxelFMWidgets.dependencies import ensureDependencies
from VoxelFMWidgets.job_process import QtJobProcess
from VoxelFMWidgets.messages import userMessage
from VoxelFMWidgets.model_panel import ModelPanel, ModelParameters, modelSpec
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest
from VoxelFMWidgets.module_widget import VoxelFMModuleWidget, unsupportedVersionMessage
from VoxelFMWidgets.sample_data import loadSampleVolume, registerSampleData
from VoxelFMWidgets.segment_editor import openSegmentEditor, segmentEditorUndoSaver

__all__ = [
    "BusyState",
    "ModelPanel",
    "ModelParameters",
    "QtJobProcess",
    "VoxelFMModule",
    "VoxelFMModuleLogic",
    "VoxelFMModuleTest",
    "VoxelFMModuleWidget",
    "ensureDependencies",
    "loadSampleVolume",
    "modelSpec",
    "openSegmentEditor",
    "registerSampleData",
    "runInWorker",
    "segmentEditorUndoSaver",
    "unsupportedVersionMessage",
    "userMessage",
]

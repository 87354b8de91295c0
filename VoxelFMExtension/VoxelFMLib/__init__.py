"""Qt-free Slicer logic of the VoxelFM extension: MRML nodes <-> the ``voxelfm`` core.

Imports MRML classes from ``slicer`` and ``vtk`` only (never qt, ctk, ScriptedLoadableModule,
parameterNodeWrapper or slicer.modules), so the same code runs inside Slicer and in plain-Python tests
built on the slicer-core wheel. Functions take nodes and use ``node.GetScene()`` rather than the global
``slicer.mrmlScene`` where they can.
"""

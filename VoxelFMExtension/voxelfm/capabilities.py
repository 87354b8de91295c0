"""The one table of what VoxelFM offers: each capability's pipeline, CLI modules, job commands, Slicer logic and
module.

Registration is derived from it (``voxelfm.cli.main.COMMAND_MODULES``, ``VoxelFMLib.jobs.JOB_COMMANDS``) or
checked against it by the tests (module files, their .ui and icon, the logic exports, the CMake module list),
so a new capability means its pipeline, its logic, its module file and one entry here. Plain data: importing
it imports nothing else (the CLI's ``--help`` and the Slicer GUI read it at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capability:
    name: str
    # "package.module:Class" under voxelfm ("" for the tool entries that run no model pipeline)
    pipeline: str
    # modules of voxelfm.cli adding its sub-commands (their order here is the order in `voxelfm --help`)
    cli_modules: tuple[str, ...]
    # sub-commands the Jobs module offers to launch
    job_commands: tuple[str, ...] = ()
    # its VoxelFMLib logic class ("" when it has none)
    logic: str = ""
    # its Slicer module: NAME.py, Resources/UI/NAME.ui, Resources/Icons/NAME.png ("" when it has none)
    module: str = ""


CAPABILITIES: tuple[Capability, ...] = (
    Capability("models", "", ("models_cmd",), ("models", "sample-data")),
    Capability(
        "features",
        "features.service:FeaturePipeline",
        ("features_cmd",),
        ("features",),
        "FeaturesLogic",
        "VoxelFMFeatures",
    ),
    Capability(
        "segmentation",
        "segment.pipeline:SegmentationPipeline",
        ("segment_cmd",),
        ("segment",),
        "FewShotSegmentLogic",
        "VoxelFMSegment",
    ),
    Capability(
        "probes",
        "probes.pipeline:ProbePipeline",
        ("probe_cmd",),
        ("fit-probe", "apply-probe"),
        "",
        "VoxelFMJobs",
    ),
    Capability(
        "pretraining", "pretrain.trainer:run_pretraining", ("pretrain_cmd",), ("pretrain",), "", "VoxelFMJobs"
    ),
    Capability("demo", "", ("demo_cmd",), ("demo",)),
    Capability(
        "retrieval",
        "retrieval.pipeline:RetrievalPipeline",
        ("index_cmd", "query_cmd"),
        (),
        "RetrievalLogic",
        "VoxelFMRetrieve",
    ),
    Capability(
        "report",
        "report.pipeline:ReportPipeline",
        ("report_cmd", "report_train_cmd", "report_eval_cmd"),
        (),
        "ReportLogic",
        "VoxelFMReport",
    ),
    Capability(
        "localisation",
        "localize.pipeline:LocalisationPipeline",
        ("localize_cmd",),
        (),
        "LocalisationLogic",
        "VoxelFMLocalize",
    ),
    # the server runs the pipelines above for remote clients (voxelfm.server; `--server URL` on the commands)
    Capability("server", "", ("serve_cmd",)),
)


def command_modules() -> tuple[str, ...]:
    """Every voxelfm.cli module adding sub-commands, in `voxelfm --help` order."""
    return tuple(f"voxelfm.cli.{name}" for cap in CAPABILITIES for name in cap.cli_modules)


def job_commands() -> tuple[str, ...]:
    """The sub-commands the Jobs module offers."""
    return tuple(command for cap in CAPABILITIES for command in cap.job_commands)

"""VoxelFM's sample CT in Slicer's Sample Data module (Qt-free: what to register; the widget layer registers it).

The sample is the embedded pyradiomics lung1 chest CT (``voxelfm.samples.fetch``: the PyPI source archive,
fetched with pip and checked by sha256). Slicer's SampleData downloads each source file with
``urllib.request.urlretrieve(uri, <Slicer cache>/<fileName>)`` and verifies ``checksums`` ("SHA256:<hex>"), reusing
a cached file whose checksum matches. So the source's uri is the ``file://`` URI of the extracted member in
VoxelFM's own cache, and its checksum is that member's sha256: ``prepare_files`` (run by the custom downloader
behind the Sample Data button, and by the self-tests) extracts it first; SampleData then copies, verifies and
loads it like any other sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxelfm.progress import ProgressFn
from voxelfm.samples.fetch import DEFAULT_CASE, PYRADIOMICS_301, SampleArchive, SampleCase, fetch_sample_data

CATEGORY = "VoxelFM"
SAMPLE_NAME = "VoxelFMLung1"


@dataclass(frozen=True)
class SampleSource:
    """Arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for one sample CT."""

    sample_name: str
    case: str
    file_name: str
    node_name: str
    sha256: str
    folder: Path

    @property
    def uri(self) -> str:
        return (self.folder / self.file_name).resolve().as_uri()

    @property
    def checksum(self) -> str:
        return f"SHA256:{self.sha256}"

    def register_kwargs(self, thumbnail: str | Path | None = None) -> dict[str, Any]:
        return {
            "category": CATEGORY,
            "sampleName": self.sample_name,
            "uris": [self.uri],
            "fileNames": [self.file_name],
            "nodeNames": [self.node_name],
            "checksums": [self.checksum],
            "loadFileType": "VolumeFile",
            "thumbnailFileName": str(thumbnail) if thumbnail else None,
        }


def sample_source(
    folder: str | Path | None = None, case: str = DEFAULT_CASE, spec: SampleArchive | None = None
) -> SampleSource:
    """The CT of ``case`` as a Sample Data source; ``folder``: where ``prepare_files`` extracts it."""
    from voxelfm.samples.fetch import sample_data_dir

    spec = spec or PYRADIOMICS_301
    member = spec.cases[case].image
    return SampleSource(
        sample_name=SAMPLE_NAME if case == DEFAULT_CASE and spec is PYRADIOMICS_301 else f"VoxelFM{case}",
        case=case,
        file_name=member.filename,
        node_name=f"{case} chest CT",
        sha256=member.sha256,
        folder=Path(folder) if folder is not None else sample_data_dir(),
    )


def prepare_files(
    source: SampleSource, progress: ProgressFn | None = None, spec: SampleArchive | None = None, archive=None
) -> SampleCase:
    """Extract (and if needed download, with pip) the source's files into its folder, sha256-checked."""
    return fetch_sample_data(source.folder, case=source.case, archive=archive, progress=progress, spec=spec)

"""Register VoxelFM's sample chest CT with Slicer's Sample Data module (call on ``startupCompleted()``).

What is registered comes from ``VoxelFMLib.sample_data`` (tested): a ``file://`` URI into VoxelFM's sample cache
with the member's SHA256, so SampleData copies, verifies and loads it like its own samples. The button's custom
downloader first fetches the pyradiomics source archive with pip (sha256-checked) and extracts the CT.
"""

from __future__ import annotations

import logging
from pathlib import Path

import qt
import slicer

from VoxelFMWidgets.messages import userMessage

THUMBNAIL = Path(__file__).resolve().parent.parent / "Resources" / "Icons" / "VoxelFMLung1.png"


def registerSampleData() -> None:
    try:
        import SampleData

        from VoxelFMLib.sample_data import sample_source
    except ImportError as exc:  # no SampleData module (custom application) or an incomplete install
        logging.warning("VoxelFM sample data not registered: %s", exc)
        return
    source = sample_source()
    kwargs = source.register_kwargs(THUMBNAIL if THUMBNAIL.is_file() else None)
    kwargs["customDownloader"] = lambda sampleSource: downloadSample(sampleSource, source)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**kwargs)


def loadSampleVolume(source=None):
    """Fetch (if needed) and load the sample CT through SampleData; returns the volume node (self-tests)."""
    import SampleData

    from VoxelFMLib.sample_data import prepare_files, sample_source

    source = source or sample_source()
    prepare_files(source)
    return SampleData.SampleDataLogic().downloadSample(source.sample_name)


def downloadSample(sampleSource, source):
    """The Sample Data button: extract the CT (pip download of the archive the first time), then load it."""
    import SampleData

    from VoxelFMLib.sample_data import prepare_files

    qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        prepare_files(source, progress=lambda fraction, message="": slicer.util.showStatusMessage(message))
        return SampleData.SampleDataLogic().downloadFromSource(sampleSource)
    except Exception as exc:
        logging.exception("VoxelFM sample data")
        slicer.util.errorDisplay(f"Could not get the VoxelFM sample CT: {userMessage(exc)}")
        return []
    finally:
        qt.QApplication.restoreOverrideCursor()

"""What happens when a module loads: the supported-version check, and the Sample Data registration (Qt-free).

The registration is exercised the way Slicer's SampleData uses it: ``urllib.request.urlretrieve(uri, cache/name)``
then the "SHA256:<hex>" checksum, on a fake pyradiomics archive built in tmp (never the network).
"""

from __future__ import annotations

import hashlib
import urllib.request
from types import SimpleNamespace

import pytest
from test_sample_data import CONTENT, build_archive

from voxelfm.samples import fetch
from VoxelFMLib import sample_data
from VoxelFMLib.slicer_version import MIN_SLICER, app_version, parse_version, unsupported_reason

# ---------------------------------------------------------------- supported versions


@pytest.mark.parametrize(
    ("slicer_version", "python_version", "supported"),
    [
        ((5, 10, 0), (3, 12, 10), True),
        ((5, 13), (3, 12, 10), True),
        ((6, 0), (3, 13, 0), True),
        ((5, 8, 1), (3, 9, 10), False),
        ((5, 9), (3, 12, 0), False),
        ((5, 10), (3, 9, 18), False),
        ((), (3, 12, 0), True),  # version unknown: do not block
    ],
)
def test_unsupported_reason(slicer_version, python_version, supported):
    reason = unsupported_reason(slicer_version, python_version)
    assert (reason == "") == supported
    if not supported:
        assert "5.10 or newer" in reason and "download.slicer.org" in reason and "\n" not in reason


def test_version_of_a_running_app():
    assert app_version(SimpleNamespace(majorVersion=5, minorVersion=8)) == (5, 8)
    assert app_version(SimpleNamespace(applicationVersion="5.11.0-2026-03-01")) == (5, 11, 0)
    assert app_version(SimpleNamespace()) == ()
    assert parse_version("5.10.0-rc1") == (5, 10, 0) and parse_version("latest") == ()
    assert MIN_SLICER == (5, 10)


def test_version_check_runs_on_old_pythons():
    """The check itself must parse on the Python it rejects (Slicer 5.8 ships 3.9): no 3.10-only syntax."""
    import ast
    from pathlib import Path

    source = (Path(sample_data.__file__).parent / "slicer_version.py").read_text()
    tree = ast.parse(source, feature_version=(3, 9))  # grammar of 3.9 (no match statement, ...)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not [c for c in calls if any(k.arg == "strict" for k in c.keywords)]  # zip(strict=) is 3.10+
    runtime_unions = [  # X | Y evaluated at run time (isinstance): annotations are strings there
        n for n in ast.walk(tree) if isinstance(n, ast.Call) and any(isinstance(a, ast.BinOp) for a in n.args)
    ]
    assert not runtime_unions


# ---------------------------------------------------------------- Sample Data registration


def test_registered_sample_is_the_checked_lung1_ct(tmp_path):
    source = sample_data.sample_source(tmp_path)
    lung1 = fetch.PYRADIOMICS_301.cases["lung1"].image
    kwargs = source.register_kwargs("/thumb.png")
    assert kwargs["category"] == "VoxelFM" and kwargs["sampleName"] == "VoxelFMLung1"
    assert kwargs["checksums"] == [f"SHA256:{lung1.sha256}"] and kwargs["fileNames"] == ["lung1_image.nrrd"]
    assert kwargs["uris"] == [(tmp_path / "lung1_image.nrrd").resolve().as_uri()]
    assert kwargs["loadFileType"] == "VolumeFile" and kwargs["thumbnailFileName"] == "/thumb.png"
    lists = ("uris", "fileNames", "nodeNames", "checksums")
    assert len({len(kwargs[k]) for k in lists}) == 1  # SampleDataSource requires equal lengths


def test_sample_data_download_path_gets_the_verified_file(tmp_path):
    """prepare_files (custom downloader / self-tests) then SampleData's own download + checksum succeed."""
    spec = build_archive(tmp_path / "pyradiomics-3.0.1.tar.gz")
    source = sample_data.sample_source(tmp_path / "voxelfm", spec=spec)
    kwargs = source.register_kwargs()
    with pytest.raises(OSError):  # before prepare_files the file is not there: SampleData would fail
        urllib.request.urlretrieve(kwargs["uris"][0], tmp_path / "early")
    case = sample_data.prepare_files(source, spec=spec, archive=tmp_path / "pyradiomics-3.0.1.tar.gz")
    assert case.image == tmp_path / "voxelfm" / "lung1_image.nrrd"
    slicer_cache = tmp_path / "slicer-cache"
    slicer_cache.mkdir()
    target = slicer_cache / kwargs["fileNames"][0]
    urllib.request.urlretrieve(kwargs["uris"][0], target)  # what SampleDataLogic.downloadFile does
    algo, digest = kwargs["checksums"][0].split(":")
    assert algo == "SHA256" and hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert target.read_bytes() == CONTENT["lung1_image.nrrd"]


def test_a_tampered_extracted_file_is_replaced_before_sampledata_sees_it(tmp_path):
    spec = build_archive(tmp_path / "pyradiomics-3.0.1.tar.gz")
    source = sample_data.sample_source(tmp_path / "voxelfm", spec=spec)
    archive = tmp_path / "pyradiomics-3.0.1.tar.gz"
    sample_data.prepare_files(source, spec=spec, archive=archive)
    (tmp_path / "voxelfm" / "lung1_image.nrrd").write_bytes(b"tampered")
    sample_data.prepare_files(source, spec=spec, archive=archive)
    data = (tmp_path / "voxelfm" / "lung1_image.nrrd").read_bytes()
    assert hashlib.sha256(data).hexdigest() == source.sha256

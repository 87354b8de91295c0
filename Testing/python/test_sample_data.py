"""Sample CT fetching: extraction, verification and tamper detection on a fake archive built in tmp.

The real archive (34 MB from PyPI) is only used when already on this machine, or downloaded when
VOXELFM_TEST_NETWORK=1; nothing here reaches the network by default.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from voxelfm.cli.main import main
from voxelfm.errors import InputError, IntegrityError, ModelNotAvailableError
from voxelfm.samples import fetch as sd

PREFIX = "pyradiomics-3.0.1/data/"
CONTENT = {
    "lung1_image.nrrd": b"NRRD0004\nfake lung1 image\n" * 50,
    "lung1_label.nrrd": b"NRRD0004\nfake lung1 label\n" * 5,
    "lung2_image.nrrd": b"NRRD0004\nfake lung2 image\n" * 60,
    "lung2_label.nrrd": b"NRRD0004\nfake lung2 label\n" * 6,
}


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_archive(path: Path, content: dict[str, bytes] = CONTENT, extra=None) -> sd.SampleArchive:
    """A tar.gz with the real archive's layout, and a spec whose hashes match it."""
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "pyradiomics-3.0.1/setup.py", b"# not extracted\n")
        for name, data in content.items():
            _add(tar, PREFIX + name, data)
        if extra:
            extra(tar)
    blob = path.read_bytes()

    def m(name: str) -> sd.ArchiveMember:
        return sd.ArchiveMember(PREFIX + name, _sha(CONTENT[name]), len(CONTENT[name]))

    cases = {
        c: sd.SampleSpec(c, f"fake {c}", m(f"{c}_image.nrrd"), m(f"{c}_label.nrrd"))
        for c in ("lung1", "lung2")
    }
    return replace(sd.PYRADIOMICS_301, sha256=_sha(blob), size=len(blob), cases=cases)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXELFM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("VOXELFM_SAMPLE_ARCHIVE", raising=False)
    return tmp_path


def test_extracts_verifies_and_reuses(env):
    spec = build_archive(env / "a.tar.gz")
    case = sd.fetch_sample_data(env / "out", archive=env / "a.tar.gz", spec=spec)
    assert case.image.read_bytes() == CONTENT["lung1_image.nrrd"]
    assert case.label.read_bytes() == CONTENT["lung1_label.nrrd"]
    assert sorted(p.name for p in (env / "out").iterdir()) == sorted(CONTENT)  # no temp files, no setup.py
    (env / "a.tar.gz").unlink()  # offline, no archive: already-present verified files are enough
    assert (
        sd.fetch_sample_data(env / "out", case="lung2", spec=spec).image.read_bytes()
        == CONTENT["lung2_image.nrrd"]
    )


def test_default_destination_is_the_voxelfm_cache(env):
    spec = build_archive(env / "a.tar.gz")
    case = sd.fetch_sample_data(archive=env / "a.tar.gz", spec=spec)
    assert case.image.parent == env / "cache" / "sample_data"


def test_tampered_extracted_file_is_replaced(env):
    spec = build_archive(env / "a.tar.gz")
    case = sd.fetch_sample_data(env / "out", archive=env / "a.tar.gz", spec=spec)
    case.image.write_bytes(b"edited by someone")
    again = sd.fetch_sample_data(env / "out", archive=env / "a.tar.gz", spec=spec)
    assert again.image.read_bytes() == CONTENT["lung1_image.nrrd"]
    case.image.write_bytes(b"edited again")
    with pytest.raises(
        ModelNotAvailableError
    ):  # offline and no archive: refuse rather than return a bad file
        sd.fetch_sample_data(env / "out", spec=spec)


def test_tampered_archive_is_refused(env):
    spec = build_archive(env / "a.tar.gz")
    data = bytearray((env / "a.tar.gz").read_bytes())
    data[-20] ^= 0xFF
    (env / "a.tar.gz").write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="failed its sha256 check"):
        sd.fetch_sample_data(env / "out", archive=env / "a.tar.gz", spec=spec)
    assert not (env / "out" / "lung1_image.nrrd").exists()


def test_member_with_unexpected_content_is_not_kept(env):
    spec = build_archive(env / "a.tar.gz", content={**CONTENT, "lung2_image.nrrd": b"swapped"})
    with pytest.raises(IntegrityError, match="lung2_image.nrrd"):
        sd.fetch_sample_data(env / "out", archive=env / "a.tar.gz", spec=spec)
    assert not (env / "out" / "lung2_image.nrrd").exists()
    assert not [p for p in (env / "out").iterdir() if p.name.startswith(".")]  # no leftover temp files


def test_links_are_refused_and_traversal_members_ignored(env):
    def evil(tar):
        _add(tar, "../../escaped.txt", b"outside")

    spec = build_archive(env / "a.tar.gz", extra=evil)
    sd.fetch_sample_data(env / "d" / "out", archive=env / "a.tar.gz", spec=spec)
    assert not (env / "escaped.txt").exists() and not (env / "d" / "escaped.txt").exists()

    link_tar = env / "link.tar.gz"
    with tarfile.open(link_tar, "w:gz") as tar:
        info = tarfile.TarInfo(PREFIX + "lung1_image.nrrd")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    member = sd.ArchiveMember(PREFIX + "lung1_image.nrrd", "0" * 64, 1)
    with pytest.raises(IntegrityError, match="not a regular file"):
        sd.extract_members(link_tar, [member], env / "out2")
    assert not (env / "out2" / "lung1_image.nrrd").exists()


def test_offline_without_archive_says_how_to_get_it(env):
    with pytest.raises(ModelNotAvailableError) as ei:
        sd.fetch_sample_data(env / "out")
    msg = str(ei.value)
    assert "pip download --no-deps --no-binary :all: --no-build-isolation pyradiomics==3.0.1" in msg
    assert str(env / "cache" / "downloads" / "pyradiomics-3.0.1.tar.gz") in msg
    assert sd.PYRADIOMICS_301.sha256 in msg and "--archive" in msg


def test_network_failure_gives_the_clear_error(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    tried = []

    def no_pip(spec, out, timeout=600.0):
        tried.append("pip")
        raise OSError("pip exited with 1: no matching distribution")

    monkeypatch.setattr(sd, "_pip_download", no_pip)
    with pytest.raises(ModelNotAvailableError, match=r"(?s)downloading it failed.*no matching distribution"):
        sd.fetch_sample_data(env / "out")
    assert tried == ["pip"]
    assert not list((env / "cache" / "downloads").glob("*"))  # no partial file left


def test_download_is_verified_and_kept_for_next_time(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    spec = build_archive(env / "src.tar.gz")
    monkeypatch.setattr(sd, "PYRADIOMICS_301", spec)
    monkeypatch.setattr(
        sd,
        "_pip_download",
        lambda spec, out, timeout=600.0: out.write_bytes((env / "src.tar.gz").read_bytes()),
    )
    case = sd.fetch_sample_data(env / "out")
    assert case.label.read_bytes() == CONTENT["lung1_label.nrrd"]
    assert (env / "cache" / "downloads" / spec.filename).is_file()
    monkeypatch.setattr(
        sd, "_pip_download", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-downloaded"))
    )
    (env / "out" / "lung1_label.nrrd").unlink()
    assert sd.fetch_sample_data(env / "out").label.is_file()  # re-extracted from the kept archive


def test_corrupt_download_is_discarded(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(
        sd, "_pip_download", lambda spec, out, timeout=600.0: out.write_bytes(b"x" * spec.size)
    )
    with pytest.raises(IntegrityError, match="download was discarded"):
        sd.fetch_sample_data(env / "out")
    assert not list((env / "cache" / "downloads").glob("*"))


def test_unknown_case(env):
    with pytest.raises(InputError, match="lung1, lung2"):
        sd.fetch_sample_data(env / "out", case="liver")


def test_cli_sample_data(env, monkeypatch, capsys):
    spec = build_archive(env / "a.tar.gz")
    monkeypatch.setattr(sd, "PYRADIOMICS_301", spec)
    assert (
        main(
            [
                "sample-data",
                "--out",
                str(env / "o"),
                "--archive",
                str(env / "a.tar.gz"),
                "--case",
                "all",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["case"] for r in rows] == ["lung1", "lung2"] and Path(rows[1]["label"]).is_file()
    assert main(["sample-data", "--out", str(env / "o")]) == 0
    assert f"image: {env / 'o' / 'lung1_image.nrrd'}" in capsys.readouterr().out
    assert main(["sample-data", "--out", str(env / "empty")]) == 2
    assert "pip download" in capsys.readouterr().err


def _real_archive() -> Path | None:
    cands = [
        os.environ.get("VOXELFM_SAMPLE_ARCHIVE_REAL"),
        Path.home() / ".cache/voxelfm/downloads/pyradiomics-3.0.1.tar.gz",
    ]
    for c in cands:
        if c and Path(c).is_file():
            return Path(c)
    return None


@pytest.mark.skipif(_real_archive() is None, reason="real pyradiomics-3.0.1.tar.gz not on this machine")
def test_real_archive_hashes_and_geometry(env):
    import SimpleITK as sitk

    case = sd.fetch_sample_data(env / "real", archive=_real_archive())
    img, lab = sitk.ReadImage(str(case.image)), sitk.ReadImage(str(case.label))
    assert img.GetSize() == (512, 512, 48) and lab.GetSize() == (512, 512, 48)
    assert img.GetSpacing() == pytest.approx((0.5703125, 0.5703125, 5.0))
    assert int(sitk.GetArrayViewFromImage(lab).sum()) == 837  # the nodule label's voxel count


@pytest.mark.skipif(
    not os.environ.get("VOXELFM_TEST_NETWORK"), reason="downloads 34 MB from PyPI; set VOXELFM_TEST_NETWORK=1"
)
def test_real_download(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    case = sd.fetch_sample_data(env / "dl", case="lung2")
    assert case.image.stat().st_size == sd.PYRADIOMICS_301.cases["lung2"].image.size

"""The tour (`voxelfm demo`) as a person meets it: one page, index.html, with five parts whose pictures load.

- Synthetic two-case tour (any machine, no download): every part's files, numbers and page section; the page
  rendered in headless Chromium (Debian package `chromium`; Testing/run_all_tests.sh installs it) loads every
  picture.
- The real command on the sample CTs (when the pyradiomics archive is on this machine): the five parts, the
  model-choice line once, no faiss loader lines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from voxelfm.features.service import FeatureService, ModelSpec
from voxelfm.imaging.io import write_labelmap, write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.model import BackboneConfig, VoxelFMBackbone
from voxelfm.samples import demo as demo_mod
from voxelfm.samples.demo_page import PARTS, same_patient_sentence
from voxelfm.samples.fetch import PYRADIOMICS_301, SampleCase

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chest(folder: Path, name: str, shift: int, radius: int) -> SampleCase:
    """A 'chest' (body, two dark lungs, a bright spine) with a bright 'nodule' over several slices."""
    k, j, i = np.indices((16, 64, 64))
    ct = np.full((16, 64, 64), -1000.0, dtype=np.float32)
    ct[((j - 32) ** 2 + (i - 32) ** 2) < radius**2] = 20.0
    for c in (20, 44):
        ct[((j - 30) ** 2 + (i - c) ** 2) < 9**2] = -850.0
    ct[(np.abs(i - 32) < 3) & (np.abs(j - 52) < 3)] = 700.0
    nodule = ((k - 8) ** 2 * 4 + (j - 28) ** 2 + (i - 20 - shift) ** 2) < 16
    ct[nodule] = 40.0
    m = np.diag([-1.5, -1.5, 3.0, 1.0])
    m[:3, 3] = [30.0, 20.0, -100.0]
    write_volume(Volume(ct, m), folder / f"{name}.nrrd")
    write_labelmap(nodule.astype(np.uint8), m, folder / f"{name}_label.nrrd")
    return SampleCase(
        name, folder / f"{name}.nrrd", folder / f"{name}_label.nrrd", "synthetic chest", "test", "none"
    )


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """The whole tour once on two synthetic cases with a small random backbone (the real model's code path)."""
    tmp = tmp_path_factory.mktemp("tour")
    synthetic = {"lung1": _chest(tmp, "lung1", 0, 28), "lung2": _chest(tmp, "lung2", 20, 25)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOXELFM_CACHE_DIR", str(tmp / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr("voxelfm.samples.demo.fetch_sample_data", lambda *a, case="lung1", **k: synthetic[case])
        torch.manual_seed(0)
        model = VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=1, num_heads=1)).eval()
        service = FeatureService(loader=lambda *a, **k: model)
        res = demo_mod.run_demo(tmp / "demo_out", ModelSpec("test-model"), n_slices=1, service=service)
    return res, service


def test_tour_writes_every_part_with_its_numbers(tour):
    res, service = tour
    s = json.loads(res.files["summary"].read_text())
    for key in (
        "features",
        "segmentation",
        "seg_nrrd",
        "landmarks_found",
        "moved_copy",
        "report_json",
        "page",
    ):
        assert res.files[key].is_file(), key
    assert s["labelled_axial_slices"] == [8] and 0.0 <= s["dice_all_slices"] <= 1.0
    points = s["landmarks"]["points"]
    assert points[0]["name"] == "nodule" and "vertebra" in [p["name"] for p in points]
    assert all(np.isfinite(p["error_mm"]) for p in points)
    # the library holds the three cases; whole-volume scores are best first
    assert {c["case_id"] for c in s["retrieval"]["library"]} == {"lung2", "lung1_moved", "lung2_moved"}
    scores = [h["score"] for h in s["retrieval"]["whole_volume"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    # the draft: the segmentation's measurement and the other patient's report, each with its evidence
    kinds = {e["kind"] for x in s["report"]["sentences"] for e in x["evidence"]}
    assert kinds == {"measurement", "neighbour"}
    neighbours = {
        e["case_id"] for x in s["report"]["sentences"] for e in x["evidence"] if e["kind"] == "neighbour"
    }
    assert "lung1_moved" not in neighbours  # the same patient's copy is left out of the draft
    assert service.loads == 1  # one backbone for the five parts


def test_page_has_five_titled_parts_with_their_numbers(tour):
    res, _ = tour
    s = json.loads(res.files["summary"].read_text())
    page = res.files["page"].read_text(encoding="utf-8")
    for part in PARTS:
        section = re.search(rf'<section id="{part}"><h2>(.+?)</h2>(.*?)</section>', page, re.S)
        assert section, part
        assert 'class="meaning"' in section.group(2), f"{part}: no sentence on what it means"
    assert f"{s['dice_all_slices']:.2f}" in page and f"{s['landmarks']['median_error_mm']:.1f} mm" in page
    assert f"{s['retrieval']['whole_volume'][0]['score']:.3f}" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 4 and all((res.files["page"].parent / src).is_file() for src in sources)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (Testing/run_all_tests.sh installs Debian's chromium package)")
    return exe


def pictures_loaded(page: Path, profile: Path) -> str:
    """The page's own count of loaded pictures, read from the DOM after Chromium loaded it."""
    profile.mkdir()
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
    proc = subprocess.run(
        [*cmd, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120
    )
    found = re.search(r'data-pictures-loaded="([^"]*)"', proc.stdout)
    assert found, f"no picture count in the DOM (chromium exit {proc.returncode}): {proc.stderr[-500:]}"
    return found.group(1)


def test_every_picture_loads_in_headless_chromium(tour, tmp_path):
    res, _ = tour
    assert pictures_loaded(res.files["page"], tmp_path / "profile") == "4 of 4"
    # the check can fail: a missing picture is counted as not loaded
    copy = tmp_path / "copy"
    shutil.copytree(res.files["page"].parent, copy, ignore=shutil.ignore_patterns("case_library"))
    (copy / "3_landmarks.png").unlink()
    assert pictures_loaded(copy / "index.html", tmp_path / "profile2") == "3 of 4"


def _real_archive() -> Path | None:
    for cand in (
        os.environ.get("VOXELFM_SAMPLE_ARCHIVE_REAL"),
        Path.home() / ".cache/voxelfm/downloads" / PYRADIOMICS_301.filename,
    ):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


@pytest.mark.slow
@pytest.mark.skipif(_real_archive() is None, reason="real pyradiomics-3.0.1.tar.gz not on this machine")
def test_real_demo_command_five_parts_messages_once(tmp_path):
    """`voxelfm demo` as Quick start 1 runs it (offline: the bundled model), on the real sample CTs."""
    env = dict(os.environ, VOXELFM_SAMPLE_ARCHIVE=str(_real_archive()), VOXELFM_CACHE_DIR=str(tmp_path / "c"))
    env.update(
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "VoxelFMExtension"), env.get("PYTHONPATH", "")]),
    )
    out = tmp_path / "demo_out"
    proc = subprocess.run(
        [sys.executable, "-m", "voxelfm.cli", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("voxelfm-vitb") == 1, proc.stderr  # the model choice, said once
    assert "faiss" not in proc.stderr.lower() and "AVX" not in proc.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["model"]["id"] == "voxelfm-tiny"
    whole = s["retrieval"]["whole_volume"]
    assert [h["case_id"] for h in whole].count("lung1_moved") == 1 and len(whole) == 3
    scores = [h["score"] for h in whole]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= v <= 1.0 for v in scores)
    assert whole[0]["case_id"] == "lung1_moved"  # the same patient, moved and cropped (retrieval_quality.md)
    assert s["landmarks"]["median_error_mm"] < 10.0 and s["dice_all_slices"] > 0.3
    assert s["timings_s"] and sum(s["timings_s"].values()) < 180
    page = (out / "index.html").read_text(encoding="utf-8")
    assert all(f'<section id="{part}">' in page for part in PARTS)
    # the page says where the same patient's scan ranked, as it came out (first, or not first and why)
    assert same_patient_sentence(s["retrieval"]) in page.replace("\n", " ")


def test_the_page_says_where_the_same_patient_ranked_as_it_came_out():
    """Never "the same patient ranks first" when it did not: the sentence follows the ranking."""
    first = {"whole_volume": [{"case_id": "lung1_moved"}, {"case_id": "lung2"}, {"case_id": "lung2_moved"}]}
    second = {"whole_volume": [{"case_id": "lung2"}, {"case_id": "lung1_moved"}, {"case_id": "lung2_moved"}]}
    assert same_patient_sentence(first).endswith("ranks first.")
    said = same_patient_sentence(second)
    assert "ranks 2 of 3, not first" in said and "not reliable" in said

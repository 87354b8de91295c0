"""`voxelfm index add` killed mid-run (a subprocess, SIGKILL) resumes without duplicates; the lock holds meanwhile.

A second process (this one) sees the library locked while the first writes, reads it after the kill (the
"restart"), and the same command run again completes it: every input exactly once, the index files caught up,
no staged leftovers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from retrieval_helpers import tiny_backbone

from voxelfm.cli.main import main
from voxelfm.imaging.io import write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.retrieval.library import CaseLibrary
from voxelfm.retrieval.lock import LibraryLockedError
from voxelfm.retrieval.staging import staged_files

pytest.importorskip("faiss")
N_CASES = 30


def _archive(folder):
    """N small CT-like volumes (a body ellipse of random texture in air), one file each."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:24, :32, :32]
    body = ((yy - 16) / 13) ** 2 + ((xx - 16) / 11) ** 2 < 1
    for n in range(N_CASES):
        arr = np.where(body, rng.normal(40, 60, body.shape), -1000.0).astype(np.float32)
        m = np.diag([2.0, 2.0, 2.5, 1.0])
        write_volume(Volume(arr, m), folder / f"case{n:02d}.nii.gz")
    return folder


def _count(lib) -> int:
    try:
        with CaseLibrary.open(lib) as opened:
            return opened.count()
    except Exception:  # not created yet
        return 0


def test_killed_index_add_resumes_without_duplicates(tmp_path):
    archive = _archive(tmp_path / "archive")
    model = tiny_backbone(tmp_path / "model")
    lib = tmp_path / "cases"
    args = ["index", "add", str(lib), str(archive), "--model", str(model), "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxelfm.cli", *args, "--threads", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _count(lib) < 3:
            assert proc.poll() is None, (
                f"index add ended before it could be killed: {proc.stderr.read()[-2000:]}"
            )
            assert time.monotonic() < deadline, "index add made no progress"
            time.sleep(0.05)
        with pytest.raises(LibraryLockedError, match="locked"):  # a second writer while the first runs
            CaseLibrary.open(lib, writer=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = _count(lib)
    assert 3 <= partial < N_CASES, "the run was not interrupted part-way"

    assert main(args) == 0  # the same command again
    with CaseLibrary.open(lib) as opened:
        cases = opened.cases()
        assert len(cases) == N_CASES
        assert sorted(c.path for c in cases) == sorted(str(p) for p in archive.iterdir())
        assert len({c.source_key for c in cases}) == N_CASES and len({c.case_id for c in cases}) == N_CASES
        for kind in opened.indexes.kinds:
            state = opened.indexes.state(kind)
            assert state.generation == opened.generation
        assert opened.indexes.state("mean").ntotal == N_CASES
        assert opened.indexes.check() == []
    assert staged_files(lib) == []
    assert main(args) == 0  # and once more: nothing to do, nothing added
    assert _count(lib) == N_CASES

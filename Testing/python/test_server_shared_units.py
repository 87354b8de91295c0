"""Shared job records between JobManagers (as two server processes on one data folder) and the feature
cache's byte budget. In-process and fast; the real two-process test is test_server_shared.py."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from server_harness import wait_until

from voxelfm.errors import CancelledError
from voxelfm.features.cache import FeatureCache
from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.server.cache_budget import sweep_cache
from voxelfm.server.job_records import STALE_S, JobRecords
from voxelfm.server.jobs import JobManager, TooManyJobsError


def _runner(release: threading.Event):
    def run(job, device):
        while not release.is_set():
            if job.cancel.is_set():
                raise CancelledError("stopped")
            time.sleep(0.01)
        return f"result of {job.request}".encode()

    return run


def test_records_let_any_manager_answer_cancel_limit_abandon_and_expire(tmp_path):
    release = threading.Event()
    folder = tmp_path / "jobs"
    make = lambda: JobManager(  # noqa: E731
        ["cpu"],
        _runner(release),
        max_queued_per_key=2,
        abandon_after_s=2.0,  # margins wide enough for a loaded 2-core CI machine
        keep_results_s=6.0,
        records=JobRecords(folder),
    )
    a, b = make(), make()
    try:
        first = a.submit("alice", "features", "one")
        second = b.submit("alice", "features", "two")
        with pytest.raises(TooManyJobsError):  # counted across both managers
            a.submit("alice", "features", "three")
        with pytest.raises(KeyError):
            b.status("bob", first.id)  # another key's job is unknown to bob, wherever he asks
        assert wait_until(lambda: b.status("alice", first.id)["state"] == "running")
        b.cancel("alice", first.id)  # cancelled through B: A's worker stops it
        assert wait_until(lambda: first.state == "cancelled")
        # B sees it through A's record (written just after A's in-memory state changes)
        assert wait_until(lambda: b.status("alice", first.id)["error"] == "cancelled by the client")
        # polls through A keep B's job alive past abandon_after_s; a long poll through A returns at its end
        for _ in range(12):  # 3 s of polls, past abandon_after_s
            assert a.status("alice", second.id)["state"] == "running"
            time.sleep(0.25)
        release.set()
        t0 = time.monotonic()
        assert a.status("alice", second.id, wait=5.0)["state"] == "done"
        assert time.monotonic() - t0 < 4.0  # at the job's end, not at the 5 s wait
        assert a.result("alice", second.id) == b"result of two"  # B's result, read through A
        # nobody polls: abandoned, whichever manager holds it
        release.clear()
        lonely = b.submit("alice", "features", "lonely")
        assert wait_until(lambda: lonely.state == "cancelled", 10) and "abandoned" in lonely.error
        # finished records and results are removed after keep_results_s
        assert (folder / f"{second.id}.result").is_file()
        assert wait_until(lambda: not list(folder.glob(f"{second.id}.*")), 20)
        with pytest.raises(KeyError):
            a.status("alice", second.id)
    finally:
        release.set()
        a.shutdown()
        b.shutdown()


def test_a_record_left_by_a_dead_process_reads_as_failed_and_frees_the_key(tmp_path):
    records = JobRecords(tmp_path / "jobs")
    record = {
        "id": "deadbeef",
        "kind": "features",
        "owner": "alice",
        "state": "running",
        "progress": 0.5,
        "message": "running",
        "device": "cpu",
        "seconds": 1.0,
        "error": None,
        "error_kind": None,
        "started_wall": time.time(),
        "ended_wall": None,
    }
    records.write(record)
    assert records.read("deadbeef")["state"] == "running" and records.active_of("alice") == 1
    old = time.time() - STALE_S - 1
    os.utime(records.folder / "deadbeef.json", (old, old))
    gone = records.read("deadbeef")
    assert gone["state"] == "failed" and "stopped" in gone["error"] and records.active_of("alice") == 0
    assert records.sweep(keep_s=0.0) == 1 and not list(records.folder.glob("deadbeef*"))
    with pytest.raises(KeyError):
        records.read("../keys")  # an id is never a path
    assert json.loads(json.dumps(record))  # plain JSON


def _features(seed: int) -> VolumeFeatures:
    rng = np.random.default_rng(seed)
    return VolumeFeatures(
        cls=rng.standard_normal(8).astype(np.float32),
        registers=rng.standard_normal((2, 8)).astype(np.float32),
        patch=rng.standard_normal((4, 4, 4, 8)).astype(np.float32),
        grid_to_ras=np.eye(4),
        prepared_to_ras=np.eye(4),
        prepared_shape=(8, 8, 8),
        model={"id": "m"},
        preprocess={},
        extraction={},
    )


def test_feature_cache_budget_removes_least_recently_used_never_one_in_use(tmp_path):
    cache = FeatureCache(tmp_path / "features")
    keys = [f"{n:040x}" for n in range(4)]
    for n, key in enumerate(keys):
        cache.put(key, _features(n))
        t = time.time() - 100 + n * 10  # written in order: 0 oldest
        os.utime(cache.path(key), (t, t))
    size = cache.path(keys[0]).stat().st_size
    assert cache.get(keys[0]) is not None  # a hit is a use: 0 becomes the most recent
    running_since = time.time() - 85  # a job started after 1 was last used, before 2 and 3
    os.utime(cache.path(keys[2]), (running_since + 1, running_since + 1))
    assert sweep_cache(cache.folder, int(size * 1.5), running_since) == 1  # only 1 may go: 0, 2, 3 in use
    assert [cache.path(k).is_file() for k in keys] == [True, False, True, True]
    assert sweep_cache(cache.folder, int(size * 1.5), None) == 2  # no job running: LRU down to budget
    assert [cache.path(k).is_file() for k in keys] == [True, False, False, False]
    assert cache.get(keys[0]) is not None and cache.get(keys[3]) is None  # a removed entry is a miss

"""Load and faults over loopback: concurrent clients get their own results; a server killed mid-job leaves a
clear error and no output; a restarted server still holds its volumes. Bounded: every wait has a deadline."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from server_harness import KEY, SECOND_KEY, running_server, slow_features_request, wait_until

from voxelfm.cli.main import main
from voxelfm.client.capabilities import remote_segment_fit
from voxelfm.client.client import VoxelFMClient
from voxelfm.client.run import RemoteRun
from voxelfm.features.spec import FeatureOptions, ModelSpec
from voxelfm.imaging.io import read_volume
from voxelfm.imaging.volume import Volume
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.labels import select_slices
from voxelfm.segment.pipeline import SegmentationPipeline

SPEC = ModelSpec("voxelfm-tiny", device="cpu", precision="auto", max_tokens=4096)
CLIENTS = 8  # the load test: 8 users, each with their own key
CORNERS = [(0, 0), (6, 0), (0, 20), (6, 20), (3, 10), (2, 5), (5, 15), (1, 21)]  # (k0, j0) of each crop

pytestmark = pytest.mark.usefixtures("server_thread_count")  # local and server sum alike


def _crops(data_dir) -> list[tuple[Volume, list[Volume]]]:
    """Eight different small CTs (crops of one real CT), each with two label sets (a fit and a refit)."""
    folder = data_dir / "totalseg" / "abdomen_3mm"
    ct = read_volume(str(folder / "ct.nii.gz"))
    truth = read_volume(str(folder / "labels.nii.gz"), check_hu=False).array
    cases = []
    for n, (k0, j0) in enumerate(CORNERS):
        m = ct.ijk_to_ras.copy()
        m[:3, 3] = (ct.ijk_to_ras @ np.array([0, j0, k0, 1.0]))[:3]
        vol = Volume(np.ascontiguousarray(ct.array[k0 : k0 + 24, j0 : j0 + 80]), m, f"crop{n}")
        sub = truth[k0 : k0 + 24, j0 : j0 + 80]
        labels = [Volume(select_slices(sub, s, classes=[5, 1]), m) for s in ([4, 12, 20], [4, 12, 16, 20])]
        cases.append((vol, labels))
    return cases


def test_concurrent_clients_each_get_exactly_their_own_result(tmp_path, data_dir):
    cases = _crops(data_dir)
    config, options = SegmentationConfig(), FeatureOptions()
    expected = [
        [SegmentationPipeline(SPEC, config, options).fit(vol, lab, []).labelmap for lab in labels]
        for vol, labels in cases
    ]
    for n in range(1, CLIENTS):  # the cases differ, so a mix-up would show
        assert not np.array_equal(expected[0][0], expected[n][0]), n
    keys = [f"user-{n}-key-0123456789" for n in range(CLIENTS)]
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []
    with running_server(tmp_path / "server", "--abandon-after", "30", keys=keys) as server:

        def user(n: int) -> None:
            try:
                run = RemoteRun(VoxelFMClient(server.url, keys[n]), SPEC, options)
                vol, labels = cases[n]
                results[n] = [remote_segment_fit(run, vol, lab, [], config).labelmap for lab in labels]
            except BaseException as exc:  # reported below, with the thread's index
                errors.append(exc)

        threads = [threading.Thread(target=user, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert not any(t.is_alive() for t in threads), "a client did not finish in 240 s"
    assert not errors, errors
    for n in range(CLIENTS):
        for got, want in zip(results[n], expected[n], strict=True):
            assert np.array_equal(got, want), f"client {n}"


def test_jobs_of_a_client_that_went_away_are_cancelled(tmp_path, data_dir):
    torso = read_volume(str(data_dir / "totalseg" / "torso_3mm" / "ct.nii.gz"))
    # abandoned after 0.3 s without a poll (swept every 0.2 s): well before the queued jobs could end (a slow job
    # takes ~0.5 s on a quiet 2-core machine; with 1 s, a quiet machine finished the second job first)
    with running_server(tmp_path / "server", "--abandon-after", "0.3") as server:
        client = VoxelFMClient(server.url, KEY)
        jobs = [client.submit(slow_features_request(client.ensure_volume(torso))) for _ in range(3)]
        # the client now disappears: nobody polls (``/health`` does not count as a poll)
        assert wait_until(lambda: server.health()["jobs_active"] == 0, 60), (
            "abandoned jobs kept the device busy"
        )
        states = [client.status(j["id"]) for j in jobs]
    assert all(s["state"] in ("cancelled", "done") for s in states)
    queued = states[1:]  # never started: cancelled while waiting, the device freed for others
    assert all(s["state"] == "cancelled" and "abandoned" in s["error"] for s in queued), queued


def test_server_killed_mid_job_leaves_a_clear_error_and_no_output(tmp_path, data_dir, monkeypatch, capsys):
    ct_path = data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz"
    torso = read_volume(str(data_dir / "totalseg" / "torso_3mm" / "ct.nii.gz"))
    out = tmp_path / "out" / "features.npz"
    out.parent.mkdir()
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    with running_server(tmp_path / "server", "--abandon-after", "60") as server:
        # another user's slow jobs fill the device queue, so ours is still queued or running when the server dies
        other = VoxelFMClient(server.url, SECOND_KEY)
        sha = other.ensure_volume(torso)
        slow = slow_features_request(sha)
        for _ in range(4):
            other.submit(slow)
        rc: list[int] = []
        cli = threading.Thread(
            target=lambda: rc.append(
                main(
                    [
                        "features",
                        str(ct_path),
                        "--out",
                        str(out),
                        "--model",
                        "voxelfm-tiny",
                        "--server",
                        server.url,
                    ]
                )
            )
        )
        cli.start()
        assert wait_until(lambda: server.health()["jobs_active"] == 5, 60), "our job never reached the queue"
        server.kill()
        cli.join(60)
    assert rc == [2]
    err = capsys.readouterr().err
    assert "stopped answering" in err or "cannot be reached" in err
    assert not any(out.parent.iterdir())  # no partial output
    # a restarted server on the same data folder still holds the uploaded volumes
    with running_server(tmp_path / "server2", data=server.data) as again:
        assert VoxelFMClient(again.url, KEY).has_volume(sha)

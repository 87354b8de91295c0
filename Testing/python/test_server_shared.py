"""Several server processes sharing one data folder behind a load balancer without sticky sessions: any
process answers for any job (status, long poll, result, cancel), a key's job limit holds across them, and the
feature cache keeps to its byte budget. Real `voxelfm serve` processes on loopback; every wait is bounded."""

from __future__ import annotations

import http.server
import itertools
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from server_harness import KEY, SECOND_KEY, running_server, serving, slow_features_request, wait_until

from voxelfm.client.capabilities import remote_features, remote_segment_fit
from voxelfm.client.client import VoxelFMClient
from voxelfm.client.errors import ServerRequestError
from voxelfm.client.payloads import segmentation_from_frame, sparse_labels
from voxelfm.client.run import RemoteRun, model_request
from voxelfm.features.service import FeaturePipeline
from voxelfm.features.spec import FeatureOptions, ModelSpec
from voxelfm.imaging.io import read_volume
from voxelfm.imaging.volume import Volume
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.labels import select_slices
from voxelfm.segment.pipeline import SegmentationPipeline

SPEC = ModelSpec("voxelfm-tiny", device="cpu", precision="auto", max_tokens=4096)

pytestmark = pytest.mark.usefixtures("server_thread_count")  # local and server sum alike


@pytest.fixture(scope="module")
def case(data_dir) -> tuple[Volume, Volume]:
    """A small real CT crop and a few labelled slices of it."""
    folder = data_dir / "totalseg" / "abdomen_3mm"
    ct = read_volume(str(folder / "ct.nii.gz"))
    truth = read_volume(str(folder / "labels.nii.gz"), check_hu=False).array
    vol = Volume(np.ascontiguousarray(ct.array[:24, :80]), ct.ijk_to_ras.copy(), "crop")
    return vol, Volume(select_slices(truth[:24, :80], [4, 12, 20], classes=[5, 1]), vol.ijk_to_ras)


@contextmanager
def round_robin(*urls: str) -> Iterator[str]:
    """A load balancer without sticky sessions: each request goes to the next server in turn."""
    turn = itertools.cycle(urls)
    lock = threading.Lock()

    class Forward(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            with lock:
                target = next(turn)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            req = urllib.request.Request(target + self.path, body, headers, method=self.command)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    status, data, reply = r.status, r.read(), r.headers
            except urllib.error.HTTPError as exc:
                status, data, reply = exc.code, exc.read(), exc.headers
            self.send_response(status)
            for k, v in reply.items():
                if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, *args) -> None:  # quiet
            pass

    with serving(Forward) as url:
        yield url


def test_two_processes_answer_for_each_others_jobs(tmp_path, case, data_dir):
    vol, labels = case
    config, options = SegmentationConfig(), FeatureOptions()
    expected = SegmentationPipeline(SPEC, config, options).fit(vol, labels, []).labelmap
    torso = read_volume(str(data_dir / "totalseg" / "torso_3mm" / "ct.nii.gz"))
    shared = tmp_path / "data"
    limit = ("--max-jobs-per-key", "2", "--abandon-after", "30")
    with (
        running_server(tmp_path / "a", *limit, data=shared) as a,
        running_server(tmp_path / "b", *limit, data=shared) as b,
    ):
        ca, cb = VoxelFMClient(a.url, KEY), VoxelFMClient(b.url, KEY)
        sha = ca.ensure_volume(vol)
        assert cb.has_volume(sha)  # one store: B never needs the upload
        # a fit submitted on A, polled (long poll) and fetched on B
        job = ca.submit(
            {
                "kind": "segment-fit",
                "volume": sha,
                **model_request(SPEC, options),
                "fit": {"labels": sparse_labels(labels), "classes": [], "config": config.to_dict()},
            }
        )
        end = time.monotonic() + 120
        while (state := cb.status(job["id"], wait=5.0))["state"] in ("queued", "running"):
            assert time.monotonic() < end, state
        assert state["state"] == "done", state
        got = segmentation_from_frame(cb.result(job["id"])).labelmap
        assert np.array_equal(got, expected)
        # the key's limit (2) holds across both processes
        long_ct = Volume(np.concatenate([torso.array] * 4), torso.ijk_to_ras)  # a few seconds of work
        slow = slow_features_request(ca.ensure_volume(long_ct))
        first, second = ca.submit(slow), cb.submit(slow)
        with pytest.raises(ServerRequestError, match="429"):
            ca.submit(slow)
        with pytest.raises(ServerRequestError, match="429"):
            cb.submit(slow)
        other = VoxelFMClient(b.url, SECOND_KEY)  # another key has its own limit, and sees no one else's job
        with pytest.raises(ServerRequestError, match="404"):
            other.status(first["id"])
        # cancelled on B while it runs on A
        assert wait_until(lambda: cb.status(first["id"])["state"] == "running", 60)
        cb.cancel(first["id"])
        assert wait_until(lambda: cb.status(first["id"])["state"] != "running", 30)
        ended = ca.status(first["id"])
        assert ended["state"] == "cancelled" and "cancelled by the client" in ended["error"], ended
        assert wait_until(lambda: a.health()["jobs_active"] == 0, 30)  # A's device is free again
        cb.cancel(second["id"])
        assert wait_until(lambda: cb.status(second["id"])["state"] == "cancelled", 30)
        third = ca.submit(slow)  # the key is under its limit again, on either process
        ca.cancel(third["id"])

        # the real client through a round-robin balancer: every request may land on either process
        with round_robin(a.url, b.url) as balancer:
            via = RemoteRun(VoxelFMClient(balancer, KEY), SPEC, options)
            for _ in range(2):  # fit, then refit on the cached features
                result = remote_segment_fit(via, vol, labels, [], config)
                assert np.array_equal(result.labelmap, expected)


def test_feature_cache_keeps_to_its_byte_budget(tmp_path, case):
    vol, _ = case
    options = FeatureOptions()
    pipeline = FeaturePipeline(SPEC, options)
    local = pipeline.volume_features(vol, preprocess=pipeline.model_preprocess(pipeline.spec))
    with running_server(tmp_path / "s", "--cache-gb", "0.000001") as server:  # about 1 KB: no entry fits
        run = RemoteRun(VoxelFMClient(server.url, KEY), SPEC, options)
        for _ in range(2):  # computed, cached, removed over budget once no job uses it; computed again
            feats = remote_features(run, vol)
            assert np.array_equal(feats.patch, local.patch)
        folder = server.data / "features"
        assert wait_until(lambda: not list(folder.glob("*.npz")), 20), list(folder.iterdir())

"""`voxelfm serve` and `--server URL`: the same outputs as a local run, clear refusals, nothing written on error.

A real server process on 127.0.0.1 (server_harness) and the real CLI; a small real CT (abdomen_3mm) and the
bundled tiny model keep it fast.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from safetensors.numpy import load_file
from server_harness import KEY, SECOND_KEY, free_port, running_server

from voxelfm.cli.main import main
from voxelfm.client import ServerRequestError
from voxelfm.client.capabilities import remote_segment_fit
from voxelfm.client.client import VoxelFMClient
from voxelfm.client.connection import Connection
from voxelfm.client.errors import PayloadTooLargeError, ProtocolMismatchError
from voxelfm.client.payloads import sparse_labels
from voxelfm.client.run import RemoteRun
from voxelfm.client.wire import PROTOCOL_VERSION, Frame
from voxelfm.features.spec import FeatureOptions, ModelSpec
from voxelfm.imaging.io import read_volume, write_labelmap
from voxelfm.imaging.volume import Volume
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.labels import select_slices

MODEL = ["--model", "voxelfm-tiny", "--max-tokens", "4096"]
LIMITS = ["--max-upload-mb", "16", "--max-voxels", "400000", "--abandon-after", "20"]

pytestmark = pytest.mark.usefixtures("server_thread_count")  # local and server sum alike


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("server"), *LIMITS) as s:
        yield s


@pytest.fixture(scope="module")
def case(tmp_path_factory, data_dir):
    """The CT and a sparse label file: three fully labelled axial slices of liver (1) and spleen (2)."""
    folder = data_dir / "totalseg" / "abdomen_3mm"
    ct = read_volume(str(folder / "ct.nii.gz"))
    truth = read_volume(str(folder / "labels.nii.gz"), check_hu=False).array
    labels = select_slices(truth, [6, 15, 24], classes=[5, 1])
    path = write_labelmap(labels, ct.ijk_to_ras, tmp_path_factory.mktemp("case") / "labels.nii.gz")
    return folder / "ct.nii.gz", path


def _get(url: str, key: str | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, headers={**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, (json.loads(r.read()) if "json" in r.headers.get("Content-Type", "") else {})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_health_is_open_everything_else_needs_a_key(server):
    status, health = _get(server.url + "/health")
    assert (
        status == 200
        and health["version"]
        and health["protocol"] == PROTOCOL_VERSION
        and health["devices"] == ["cpu"]
    )
    assert _get(server.url + "/docs")[0] == 200 and _get(server.url + "/openapi.json")[0] == 200
    assert _get(server.url + "/jobs/abc")[0] == 401
    assert _get(server.url + "/jobs/abc", key="not-a-key")[0] == 401
    assert _get(server.url + "/jobs/abc", key=KEY)[0] == 404
    status, body = _get(server.url + "/jobs/abc", key=KEY, headers={"X-VoxelFM-Protocol": "99"})
    assert status == 426 and "upgrade this server" in body["detail"]


def test_features_through_the_server_equal_local(server, case, tmp_path, monkeypatch):
    ct, _ = case
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    local, remote = tmp_path / "local.npz", tmp_path / "remote.npz"
    assert main(["features", str(ct), "--out", str(local), *MODEL]) == 0
    assert main(["features", str(ct), "--out", str(remote), *MODEL, "--server", server.url]) == 0
    with np.load(local) as a, np.load(remote) as b:
        assert set(a.files) == set(b.files)
        for name in ("cls", "registers", "patch", "grid_to_ras", "prepared_to_ras"):
            assert np.array_equal(a[name], b[name]), name
        assert json.loads(str(a["meta"]))["model"] == json.loads(str(b["meta"]))["model"]


def test_segment_fit_refit_and_apply_through_the_server_are_voxel_identical(
    server, case, tmp_path, monkeypatch
):
    ct, labels = case
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    outs = {}
    for where, extra in (("local", []), ("server", ["--server", server.url])):
        out, probe = tmp_path / f"{where}.nii.gz", tmp_path / f"{where}_probe"
        args = ["segment", str(ct), "--labels", str(labels), "--out", str(out), "--save-probe", str(probe)]
        assert main([*args, "--class-names", "liver,spleen", *MODEL, *extra]) == 0
        outs[where] = read_volume(str(out), check_hu=False)
    local, remote = outs["local"], outs["server"]
    assert set(np.unique(local.array).astype(int)) == {0, 1, 2}  # a real segmentation, not an empty one
    assert np.array_equal(local.array, remote.array) and np.allclose(local.ijk_to_ras, remote.ijk_to_ras)
    meta_l, meta_r = (json.loads((tmp_path / f"{w}_probe.json").read_text()) for w in ("local", "server"))
    for field in ("classes", "feature_config", "backbone", "preprocessing"):
        assert meta_l[field] == meta_r[field], field
    w_l, w_r = (
        load_file(tmp_path / "local_probe.safetensors"),
        load_file(tmp_path / "server_probe.safetensors"),
    )
    assert w_l.keys() == w_r.keys() and all(np.array_equal(w_l[k], w_r[k]) for k in w_l)

    # apply the saved probe (its files travel, no server path) locally and through the server
    applied = {}
    for where, extra in (("local", []), ("server", ["--server", server.url])):
        out = tmp_path / f"applied_{where}.nii.gz"
        args = [
            "segment",
            str(ct),
            "--probe",
            str(tmp_path / "local_probe"),
            "--out",
            str(out),
            *MODEL,
            *extra,
        ]
        assert main(args) == 0
        applied[where] = read_volume(str(out), check_hu=False).array
    assert np.array_equal(applied["local"], applied["server"]) and applied["local"].any()

    # a probe recording a checkpoint *path* cannot make the server load a file of its own choosing
    files = {"json": (tmp_path / "local_probe.json").read_text()}
    meta = json.loads(files["json"])
    meta["backbone"]["id"] = "/srv/private/model.pth"
    files["json"] = json.dumps(meta)
    files["weights"] = base64.b64encode((tmp_path / "local_probe.safetensors").read_bytes()).decode()
    client = VoxelFMClient(server.url, KEY)
    sha = client.ensure_volume(read_volume(str(ct)))
    with pytest.raises(ServerRequestError, match="recorded backbone .* looks like a path"):
        client.run_job({"kind": "segment-apply", "volume": sha, "apply": {"probe": files}})


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_refused_key_exit_2_and_nothing_written(server, case, tmp_path, monkeypatch, capsys, key):
    ct, labels = case
    if key:
        monkeypatch.setenv("VOXELFM_API_KEY", key)
    else:
        monkeypatch.delenv("VOXELFM_API_KEY", raising=False)
    feats, seg = tmp_path / "f.npz", tmp_path / "s.nii.gz"
    assert main(["features", str(ct), "--out", str(feats), *MODEL, "--server", server.url]) == 2
    assert "refused the API key" in capsys.readouterr().err
    args = [
        "segment",
        str(ct),
        "--labels",
        str(labels),
        "--out",
        str(seg),
        "--save-probe",
        str(tmp_path / "p"),
    ]
    assert main([*args, *MODEL, "--server", server.url]) == 2
    assert "refused the API key" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unreachable_server_and_protocol_mismatch_are_one_clear_message(
    server, case, tmp_path, monkeypatch, capsys
):
    ct, _ = case
    monkeypatch.setenv("VOXELFM_API_KEY", KEY)
    nobody = f"http://127.0.0.1:{free_port()}"
    assert main(["features", str(ct), "--out", str(tmp_path / "f.npz"), *MODEL, "--server", nobody]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and err.count("\n") == 1 and not any(tmp_path.iterdir())
    monkeypatch.setattr("voxelfm.client.client.PROTOCOL_VERSION", 0)  # an older client
    with pytest.raises(ProtocolMismatchError, match="upgrade this client"):
        VoxelFMClient(server.url, KEY).check()


def test_a_volume_is_hashed_once_and_uploaded_once(server, case, monkeypatch):
    ct = read_volume(str(case[0]))
    volume = Volume(ct.array + np.int16(1), ct.ijk_to_ras)  # content no test uploaded before
    hashes = []
    original = Volume.content_hash
    monkeypatch.setattr(Volume, "content_hash", lambda self: hashes.append(1) or original(self))
    first = VoxelFMClient(server.url, KEY)
    sha = first.ensure_volume(volume)
    sent = first.connection.transfer.sent
    assert sent > 10_000 and first.ensure_volume(volume) == sha and len(hashes) == 1  # hashed once per volume
    assert first.connection.transfer.sent == sent  # the second call only asked (HEAD)
    other = VoxelFMClient(server.url, SECOND_KEY)  # another user, same CT: no upload either
    assert other.ensure_volume(volume) == sha and other.connection.transfer.sent == 0


def test_a_refit_is_one_request_and_a_lost_volume_is_sent_again(server, case, monkeypatch):
    """Refit with cached features: one POST whose reply is the result (no HEAD, no separate poll or fetch
    while the job ends within the long poll). A CT the server lost since is uploaded again, the job resubmitted."""
    ct, labels = read_volume(str(case[0])), read_volume(str(case[1]), check_hu=False)
    client = VoxelFMClient(server.url, KEY)
    spec, config, options = (
        ModelSpec("voxelfm-tiny", device="cpu", precision="fp32", max_tokens=4096),
        SegmentationConfig(),
        FeatureOptions(),
    )
    run = RemoteRun(client, spec, options)
    first = remote_segment_fit(run, ct, labels, None, config)
    calls, request = [], client.connection.request
    monkeypatch.setattr(
        client.connection, "request", lambda m, p, *a: calls.append((m, p.split("?")[0])) or request(m, p, *a)
    )
    again = remote_segment_fit(run, ct, labels, None, config)
    assert np.array_equal(again.labelmap, first.labelmap) and again.probe is not None
    result = ("GET", f"/jobs/{client.last_job['id']}/result")
    assert calls[0] == ("POST", "/jobs") and all(c == result for c in calls[1:]), calls
    if client.last_job["seconds"] < 0.5:  # ended within the submit's long poll (1 s): nothing else was sent
        assert len(calls) == 1, calls

    sha = client.volume_hash(ct)
    (server.data / "volumes" / sha[:2] / f"{sha}.vfm").unlink()  # evicted since this client saw it
    calls.clear()
    third = remote_segment_fit(run, ct, labels, None, config)
    assert np.array_equal(third.labelmap, first.labelmap)
    assert [m for m, _ in calls[:4]] == ["POST", "HEAD", "PUT", "POST"], calls
    assert (server.data / "volumes" / sha[:2] / f"{sha}.vfm").is_file()


def test_oversized_and_malformed_payloads_are_refused(server, case):
    client = VoxelFMClient(server.url, KEY)
    too_many = Volume(np.zeros((40, 101, 122), np.int16), np.diag([3.0, 3.0, 3.0, 1.0]))  # 492,880 > 400,000
    with pytest.raises(PayloadTooLargeError, match="over the limit of 400000"):
        client.ensure_volume(too_many)  # refused by the client, which knows the server's limits
    assert client.connection.transfer.sent == 0
    conn = Connection(server.url, KEY)
    sha = "ab" * 32
    too_many_body = Frame({"ijk_to_ras": too_many.ijk_to_ras.tolist()}, {"voxels": too_many.array}).encode()
    with pytest.raises(PayloadTooLargeError, match="over this server's limit"):
        conn.request("PUT", f"/volumes/{sha}", too_many_body, "application/octet-stream")  # and by the server
    # any body over --max-upload-mb (a volume, or a job request) is refused from its Content-Length, unread
    host, port = server.url.removeprefix("http://").split(":")
    for method, path in (("PUT", f"/volumes/{sha}"), ("POST", "/jobs")):
        conn2 = http.client.HTTPConnection(host, int(port), timeout=10)
        conn2.putrequest(method, path)
        for name, value in (("Authorization", f"Bearer {KEY}"), ("Content-Length", str(17 * 1024**2))):
            conn2.putheader(name, value)
        conn2.endheaders()
        reply = conn2.getresponse()
        assert reply.status == 413 and "limit" in json.loads(reply.read())["detail"], path
        conn2.close()
    with pytest.raises(ServerRequestError, match="magic"):
        conn.request("PUT", f"/volumes/{sha}", b"not a frame at all", "application/octet-stream")
    ct = read_volume(str(case[0]))
    body = Frame({"ijk_to_ras": ct.ijk_to_ras.tolist()}, {"voxels": ct.array}).encode()
    with pytest.raises(ServerRequestError, match="content hash"):
        conn.request("PUT", f"/volumes/{sha}", body, "application/octet-stream")
    with pytest.raises(ServerRequestError, match="kind"):
        conn.request("POST", "/jobs", json.dumps({"kind": "nope", "volume": sha}).encode())
    real = client.ensure_volume(ct)
    with pytest.raises(ServerRequestError, match="looks like a path"):
        client.run_job({"kind": "features", "volume": real, "model": {"model": "/etc/voxelfm/model.pth"}})
    labels = Volume(np.full(ct.array.shape, 255, np.uint8), ct.ijk_to_ras)
    labels.array[10, 40:50, 40:50] = 1  # a structure but no background
    fit = {"labels": sparse_labels(labels), "classes": [], "config": {}}
    with pytest.raises(ServerRequestError, match="background"):
        client.run_job(
            {"kind": "segment-fit", "volume": real, "model": {"model": "voxelfm-tiny"}, "fit": fit}
        )

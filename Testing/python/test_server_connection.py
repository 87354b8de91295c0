"""The model panel's "Test connection" and "Compute" choice (Qt-free: VoxelFMLib.server_compute) against a real
`voxelfm serve` on 127.0.0.1, and a client that dies mid-upload: the server keeps nothing of it.
"""

from __future__ import annotations

import http.server
import json
import socket
import time
from contextlib import contextmanager

import numpy as np
import pytest
from server_harness import KEY, free_port, running_server, serving

from voxelfm import __version__
from voxelfm.client.client import VoxelFMClient
from voxelfm.client.wire import PROTOCOL_VERSION, Frame
from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume
from VoxelFMLib.model_service import PerModel
from VoxelFMLib.server_compute import ServerChoice, check_connection, server_choice


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("connection")) as s:
        yield s


def test_connection_ok_names_the_server_version(server):
    result = check_connection(server.url + "/", KEY)
    assert result.ok
    assert f"version {__version__}" in result.text and "key accepted" in result.text
    assert "\n" not in result.text


@pytest.mark.parametrize(
    ("url", "key", "expected"),
    [
        (None, "wrong-key", "refused the API key"),
        (None, "", "refused the API key"),
        ("unreachable", KEY, "cannot be reached"),
        ("gpu-box:8000", KEY, "must start with http:// or https://"),
        ("", KEY, "must start with http:// or https://"),
    ],
)
def test_connection_failures_say_what_is_wrong(server, url, key, expected):
    if url is None:
        url = server.url
    elif url == "unreachable":
        url = f"http://127.0.0.1:{free_port()}"
    result = check_connection(url, key)
    assert not result.ok
    assert expected in result.text and "\n" not in result.text


@contextmanager
def fake_server(protocol: int):
    """An HTTP server on 127.0.0.1 whose /health announces another protocol version."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "version": "9.9.9", "protocol": protocol}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with serving(http.server.HTTPServer(("127.0.0.1", 0), Health)) as url:
        yield url


@pytest.mark.parametrize(("offset", "upgrade"), [(1, "upgrade this client"), (-1, "upgrade the server")])
def test_connection_to_another_protocol_says_which_side_to_upgrade(offset, upgrade):
    with fake_server(PROTOCOL_VERSION + offset) as url:
        result = check_connection(url, KEY)
    assert not result.ok
    assert upgrade in result.text and "9.9.9" in result.text


def test_compute_choice_from_the_settings():
    assert server_choice("local", "http://gpu:8000", KEY) is None
    assert server_choice("", "", "") is None
    choice = server_choice("server", " http://gpu:8000 ", f" {KEY} ")
    assert choice == ServerChoice("http://gpu:8000", KEY)
    assert KEY not in repr(choice)
    assert server_choice("server", "http://gpu:8000", "").key is None
    with pytest.raises(InputError, match="no server URL"):
        server_choice("server", "", KEY)
    with pytest.raises(InputError, match="must start with http"):
        server_choice("server", "gpu:8000", KEY)


def test_per_model_rebuilds_the_logic_when_the_compute_choice_changes(server):
    from voxelfm.features.spec import ModelSpec

    holder = PerModel.of("FeaturesLogic")
    spec = ModelSpec("voxelfm-tiny", "cpu", "fp32")
    local = holder.get(spec)
    assert local.server is None and holder.get(spec) is local
    remote = holder.get(spec, ServerChoice(server.url, KEY))
    assert remote is not local and remote.server.url == server.url
    assert remote.server.client.connection.key == KEY
    assert holder.get(spec, ServerChoice(server.url, KEY)) is remote
    assert holder.get(spec).server is None


def _volume_body(seed: int) -> tuple[str, bytes, Volume]:
    rng = np.random.default_rng(seed)
    volume = Volume(rng.normal(0, 100, (24, 40, 40)).astype(np.float32), np.diag([1.5, 1.5, 3.0, 1.0]))
    body = Frame({"ijk_to_ras": volume.ijk_to_ras.tolist()}, {"voxels": volume.array}).encode()
    return volume.content_hash(), body, volume


def _stored_files(server) -> list[str]:
    folder = server.data / "volumes"
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


@pytest.mark.parametrize("how", ["closed mid-body", "half-closed mid-body"])
def test_a_client_killed_mid_upload_leaves_nothing_on_the_server(server, how):
    """A PUT whose body stops halfway (the socket closed, or only its sending side): no volume, no temporary
    file, the server still answers, and the same volume uploads in full afterwards."""
    sha, body, volume = _volume_body(len(how))
    before = _stored_files(server)
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        f"PUT /volumes/{sha} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
        f"X-VoxelFM-Protocol: {PROTOCOL_VERSION}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)  # the server is now reading the body
        if how == "half-closed mid-body":
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            try:
                sock.recv(4096)  # whatever the server answers (or the close) ends it
            except OSError:
                pass
    client = VoxelFMClient(server.url, KEY)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _stored_files(server) != before:
        time.sleep(0.1)
    assert _stored_files(server) == before
    assert not client.has_volume(sha)
    assert server.health()["status"] == "ok"
    assert client.ensure_volume(volume) == sha and client.has_volume(sha)
    assert len(_stored_files(server)) == len(before) + 1

"""A real `voxelfm serve` process on 127.0.0.1 for tests: a free port, a keys file, its own data folder.

Started as a subprocess (the server shares nothing with the test process but the disk), waited for through
/health, and always stopped: bounded start, terminate then kill.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from voxelfm.client.run import model_request
from voxelfm.features.service import FeatureOptions, ModelSpec

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key-0123456789"
SECOND_KEY = "second-key-abcdef"
START_SECONDS = 90


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen
    data: Path
    log: Path
    library: Path | None = None  # the case library its --libraries file names (``library_server``)

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
            return json.loads(r.read())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "VoxelFMExtension"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@contextmanager
def running_server(
    folder: Path, *options: str, data: Path | None = None, keys: Sequence[str] = (KEY, SECOND_KEY)
) -> Iterator[ServerProcess]:
    """A server with ``keys`` accepted and ``options`` added to `voxelfm serve`; stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    keys_file = folder / "keys.txt"
    keys_file.write_text("# test keys\n" + "".join(f"{k}\n" for k in keys))
    data = data or folder / "data"
    port = free_port()
    log = folder / f"server-{port}.log"
    cmd = [sys.executable, "-m", "voxelfm.cli", "serve", "--keys", str(keys_file), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cmd, "--data", str(data), *options], env=server_env(), stdout=out, stderr=subprocess.STDOUT
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, data, log)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"voxelfm serve exited ({proc.returncode}):\n{log.read_text()}")
            try:
                server.health()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"voxelfm serve did not answer in {START_SECONDS} s:\n{log.read_text()}"
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextmanager
def library_server(folder: Path, library_id: str) -> Iterator[ServerProcess]:
    """A server whose --libraries file (``folder``/libraries.json) names one case library, ``library_id`` at
    ``folder``/lib (``server.library``; the first `index add` creates it)."""
    folder.mkdir(parents=True, exist_ok=True)
    libraries = folder / "libraries.json"
    libraries.write_text(json.dumps({library_id: str(folder / "lib")}))
    with running_server(folder, "--libraries", str(libraries)) as server:
        server.library = folder / "lib"
        yield server


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` answering on a free 127.0.0.1 port (a thread per request); yields its URL, stopped on exit."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_until(predicate, seconds: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``seconds`` pass (bounded: tests never hang on a server)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def slow_features_request(sha: str) -> dict:
    """A features job of many small tiles without the cache (~1 s here): something to queue behind or cancel."""
    options = FeatureOptions(cache=False, overlap=6)
    return {
        "kind": "features",
        "volume": sha,
        **model_request(ModelSpec("voxelfm-tiny", max_tokens=64), options),
    }

"""Compute on a VoxelFM server from the Slicer logic: one client per logic, and the panel's connection test.

A logic built with ``server=URL`` sends its predict step through ``voxelfm.client`` (the same client as the
CLI's ``--server``) instead of running the pipeline here. The API key is passed in by the module (read from
Slicer's settings) or taken from ``VOXELFM_API_KEY``; it lives only in this object, never in a scene node.
Torch is not imported here: the panel's connection test works before the PyTorch extension is installed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

from voxelfm.client.client import VoxelFMClient, require_server_url
from voxelfm.client.errors import ServerError
from voxelfm.client.run import RemoteRun
from voxelfm.errors import InputError, VoxelFMError
from voxelfm.features.spec import FeatureOptions, ModelSpec
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn

KEY_ENV = "VOXELFM_API_KEY"
HASHES_KEPT = 32  # node states whose content hash is remembered (a hash is 64 characters)


class ServerCompute:
    """The logic's link to one server: its client, and content hashes remembered per node state."""

    def __init__(self, url: str, key: str | None = None, timeout: float = 60.0) -> None:
        key = key if key is not None else os.environ.get(KEY_ENV)
        self.client = VoxelFMClient(require_server_url(url), key, timeout)
        self._hashes: OrderedDict[str, str] = OrderedDict()
        self.hashed = 0  # volumes hashed so far (a refit of an unchanged node adds none)

    @property
    def url(self) -> str:
        return self.client.url

    def known(self, volume: Volume, state: str) -> Volume:
        """``volume`` (a fresh copy of a node whose state is ``state``, e.g. ``volume_nodes.volume_key``), with
        its content hash computed once per state and handed to the client, so a refit never re-hashes it."""
        sha = self._hashes.get(state)
        if sha is None:
            sha = volume.content_hash()
            self.hashed += 1
            self._hashes[state] = sha
            while len(self._hashes) > HASHES_KEPT:
                self._hashes.popitem(last=False)
        self._hashes.move_to_end(state)
        self.client.remember_hash(volume, sha)
        return volume

    def remote(
        self, spec: ModelSpec, options: FeatureOptions, progress: ProgressFn | None, cancel: CancelFlag | None
    ) -> RemoteRun:
        """What a ``remote_*`` call takes: this server, the logic's model and feature options, and the step's
        progress and cancel."""
        return RemoteRun(self.client, spec, options, progress, cancel)


# Slicer's application settings (QSettings, per user) that hold the panel's choice; never a scene node.
SETTING_COMPUTE = "VoxelFM/Compute"  # "local" (this computer) | "server"
SETTING_URL = "VoxelFM/ServerURL"
SETTING_KEY = "VoxelFM/ServerKey"
COMPUTE_CHOICES = ("local", "server")


@dataclass(frozen=True)
class ServerChoice:
    url: str
    key: str | None = field(default=None, repr=False)  # never shown in logs or reprs


def server_choice(compute: str, url: str, key: str) -> ServerChoice | None:
    """The panel's "Compute" setting as what the logics take: None = this computer. A server choice without a
    URL is an error (the user asked for a server)."""
    if (compute or "local") == "local":
        return None
    if compute not in COMPUTE_CHOICES:
        raise InputError(f"Unknown compute choice {compute!r}; use one of {', '.join(COMPUTE_CHOICES)}.")
    url = (url or "").strip()
    if not url:
        raise InputError("Compute is set to 'server' but no server URL is set: enter it in the model panel.")
    return ServerChoice(require_server_url(url), (key or "").strip() or None)


@dataclass(frozen=True)
class ConnectionCheck:
    ok: bool
    text: str  # one line for the panel: the server's version, or what is wrong and what to do


def check_connection(url: str, key: str | None, timeout: float = 10.0) -> ConnectionCheck:
    """The model panel's "Test connection": reach the server, check its protocol, and check the key with a
    request that needs one (``/health`` is open to all)."""
    try:
        client = VoxelFMClient(require_server_url((url or "").strip()), key or None, timeout)
        info = client.check()
        libraries = client.connection.request("GET", "/libraries").json()
    except ServerError as exc:
        return ConnectionCheck(False, str(exc))
    except VoxelFMError as exc:  # a malformed URL
        return ConnectionCheck(False, str(exc))
    count = len(libraries or ())
    return ConnectionCheck(
        True,
        f"Connected to the VoxelFM server at {client.url} (version {info.get('version', '?')}, protocol "
        f"{info.get('protocol')}); key accepted; {count} case librar{'y' if count == 1 else 'ies'}.",
    )

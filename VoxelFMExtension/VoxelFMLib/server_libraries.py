"""The case libraries of a VoxelFM server, for the Retrieve and Report panels' library choice (Qt-free).

With "Compute: server" a panel's library is one of the server's, named by the id its ``--libraries`` file gives
(clients never name server paths); on this computer it is a folder. ``library_choices`` fills the panel's list,
``describe_server_library`` its status line, ``chosen_library`` says what the logic gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxelfm.client.analysis import remote_library_ids, remote_library_listing
from voxelfm.client.client import VoxelFMClient
from voxelfm.errors import InputError, VoxelFMError

from .server_compute import ServerChoice


@dataclass(frozen=True)
class LibraryChoices:
    ok: bool
    ids: list[str] = field(default_factory=list)  # the server's library ids, sorted
    text: str = ""  # one line for the panel: how many, or what is wrong and what to do


def library_choices(choice: ServerChoice, timeout: float = 10.0) -> LibraryChoices:
    """The library ids the server offers; never raises (an unreachable server or refused key is the text)."""
    try:
        ids = sorted(remote_library_ids(VoxelFMClient(choice.url, choice.key, timeout)))
    except VoxelFMError as exc:
        return LibraryChoices(False, [], str(exc))
    if not ids:
        return LibraryChoices(
            True, [], f"The VoxelFM server at {choice.url} offers no case library (its --libraries file)."
        )
    count = len(ids)
    return LibraryChoices(True, ids, f"{count} case librar{'y' if count == 1 else 'ies'} on {choice.url}.")


def describe_server_library(choice: ServerChoice, library_id: str, timeout: float = 10.0) -> str:
    """One line about a server library (cases, backbone), or what is wrong; never raises."""
    try:
        listing = remote_library_listing(VoxelFMClient(choice.url, choice.key, timeout), library_id)
    except VoxelFMError as exc:
        return str(exc)
    cases = len(listing.get("cases") or ())
    if not cases:
        return f"Server library {library_id}: empty (created on first add)."
    reports = sum(1 for c in listing["cases"] if c.get("has_report"))
    return (
        f"Server library {library_id}: {cases} case{'' if cases == 1 else 's'} ({reports} with a report), "
        f"backbone {listing.get('model') or '?'}."
    )


def chosen_library(folder: str, server_library: str, server: ServerChoice | None) -> str:
    """What the logic takes as ``library``: the server library's id with a server, else the folder."""
    if server is None:
        return folder.strip()
    if not server_library.strip():
        raise InputError(
            f"Choose one of the case libraries of the VoxelFM server at {server.url} (press Refresh to list them)."
        )
    return server_library.strip()

"""What `--server URL` runs (``remote.py`` holds the option): the client calls of each capability command,
imported by the command handlers (``*_run``) only, so the parser never loads the client or torch."""

from __future__ import annotations

import argparse
import json
import os

from ..client.analysis import (
    remote_index_add,
    remote_library_ids,
    remote_library_listing,
    remote_localize,
    remote_localize_probe,
    remote_query,
    remote_report,
)
from ..client.analysis_payloads import LIBRARY_ID_RE
from ..client.capabilities import remote_features, remote_segment_apply, remote_segment_fit
from ..client.client import VoxelFMClient, require_server_url
from ..client.run import RemoteRun
from ..errors import InputError
from ..files.documents import read_text_file
from ..imaging.io import read_volume
from ..report.segmentation_files import read_segmentation
from ..retrieval.records import image_stem
from ..retrieval.sources import expand_inputs
from .common import log, spec_and_options
from .remote import KEY_ENV


def server_client(args: argparse.Namespace) -> VoxelFMClient | None:
    """The client of ``--server``, or None to compute here."""
    url = getattr(args, "server", None)
    if not url:
        return None

    return VoxelFMClient(require_server_url(url), os.environ.get(KEY_ENV))


def on_server(client: VoxelFMClient, args: argparse.Namespace, progress=None) -> RemoteRun:
    """The command's model and feature options (as a local run would use them), computed by ``client``."""
    return RemoteRun(client, *spec_and_options(args), progress)


def features_on_server(client: VoxelFMClient, args: argparse.Namespace, volume, progress=None):
    return remote_features(on_server(client, args, progress), volume)


def fit_on_server(
    client: VoxelFMClient, args: argparse.Namespace, volume, labels, classes, config, progress=None
):
    return remote_segment_fit(on_server(client, args, progress), volume, labels, classes, config)


def apply_on_server(
    client: VoxelFMClient, args: argparse.Namespace, volume, probe, postprocess, progress=None
):
    return remote_segment_apply(on_server(client, args, progress), volume, probe, postprocess)


def local_only(args: argparse.Namespace, **options: object) -> None:
    """InputError when an option that needs this computer's files is combined with --server."""
    given = [name for name, value in options.items() if value]
    if given and getattr(args, "server", None):
        names = ", ".join("--" + n.replace("_", "-") for n in given)
        raise InputError(
            f"{names} cannot be used with --server (it works on this computer's files); drop one."
        )


def library_id(client: VoxelFMClient, text: str) -> str:
    """With --server, LIBRARY names one of the server's case libraries by id, never a folder."""
    if LIBRARY_ID_RE.match(text):
        return text

    offered = ", ".join(remote_library_ids(client)) or "none"
    raise InputError(
        f"With --server, LIBRARY is the id of one of the server's case libraries, not a folder ({text!r}); "
        f"the server at {client.url} offers: {offered}."
    )


def localize_on_server(
    client: VoxelFMClient, args: argparse.Namespace, target, refs, config, progress=None, keep_templates=False
):
    """(templates built when ``keep_templates``, result) from references / templates, computed on the server."""
    return remote_localize(on_server(client, args, progress), target, refs, config, keep_templates)


def localize_probe_on_server(client: VoxelFMClient, args: argparse.Namespace, target, probe, progress=None):
    return remote_localize_probe(on_server(client, args, progress), target, probe)


def query_on_server(client: VoxelFMClient, args: argparse.Namespace, volume, region=None, progress=None):
    return remote_query(
        on_server(client, args, progress),
        library_id(client, args.library),
        volume,
        args.k,
        args.embedding,
        args.with_reports,
        region=region,
        thumbnails=args.thumbnails,
    )


def index_add_on_server(client: VoxelFMClient, args: argparse.Namespace) -> int:
    """`voxelfm index add LIBRARY_ID IMAGE... --server URL`: each volume uploaded once, embedded there."""
    sources = expand_inputs(args.images)
    if len(sources) != 1 and any(v is not None for v in (args.report, args.findings, args.case_id)):
        raise InputError("--report, --findings and --case-id describe one image; give one image with them.")
    run = on_server(client, args)
    for source in sources:
        volume = read_volume(source.path)
        volume.name = image_stem(source.path)
        report = read_text_file(args.report, "--report") if args.report else source.report
        findings = args.findings if args.findings is not None else source.findings
        case_id = args.case_id or source.case_id
        added = remote_index_add(run, library_id(client, args.library), volume, case_id, report, findings)
        log.info("%s: added %s as %s", args.library, source.path, added.get("case_id"))
    return 0


def index_list_on_server(client: VoxelFMClient, args: argparse.Namespace) -> int:
    listing = remote_library_listing(client, library_id(client, args.library))
    cases = listing["cases"]
    if args.json:
        print(json.dumps(cases, indent=1))
        return 0
    print(
        f"{listing['library']} on {client.url}: {len(cases)} case(s); model {listing['model'] or '-'}; "
        f"{listing['dim'] or '-'}-d embeddings"
    )
    for c in cases:
        flags = "report" if c["has_report"] else ""
        print(f"{c['case_id']:<28} {c['added_at']:<20} {flags:<7} {c['path'] or '(uploaded volume)'}")
    return 0


def report_on_server(
    client: VoxelFMClient, args: argparse.Namespace, library: str | None, image: str, progress=None
):
    """`voxelfm report [LIBRARY_ID] IMAGE --server URL`: the segmentation file is read here and its label
    layers uploaded like volumes; the template and the findings probes travel as their contents."""
    segmentation = read_segmentation(args.segmentation) if args.segmentation else None
    consensus = {
        "neighbours": args.neighbours,
        "temperature": args.temperature,
        "min_support": args.min_support,
    }
    return remote_report(
        on_server(client, args, progress),
        library_id(client, library) if library else None,
        read_volume(str(image)),
        segmentation,
        args.template,
        consensus,
        args.probe,
    )

"""What `models_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..files import file_kinds as kinds
from ..hub.download import cache_state, hf_cache_dir, hub_offline
from ..hub.registry import bundled_dir, default_model_id, load_registry
from ..progress import TqdmProgress
from ..samples import fetch
from ..samples.fetch import PYRADIOMICS_301, sample_data_dir
from .outputs import output_plan


def _model_rows(verify: bool) -> tuple[list[dict[str, Any]], dict[str, str]]:
    reg = load_registry()
    rows = []
    for entry in reg.models.values():
        state = cache_state(entry, reg, verify=verify)
        where = str(bundled_dir(entry, reg)) if entry.source == "bundled" else entry.hub_repo
        rows.append(
            {
                "id": entry.id,
                "name": entry.name,
                "source": entry.source,
                "format": entry.format,
                "location": where,
                "revision": entry.revision,
                "revision_pinned": entry.revision_pinned,
                "hashes_known": entry.verified,
                "status": state.status,
                "present": state.present,
                "available": state.available,
                "licence": entry.licence,
                "files": {
                    role: {
                        "path": f.path,
                        "sha256": f.sha256,
                        "size": f.size,
                        "local": str(state.files[role]) if state.files.get(role) else None,
                    }
                    for role, f in entry.files.items()
                },
            }
        )
    mid, reason = default_model_id(reg)
    info = {"id": mid, "reason": reason, "registry": str(reg.path), "hf_cache": str(hf_cache_dir())}
    info["offline"] = "yes" if hub_offline() else "no"
    return rows, info


def run_models(args: argparse.Namespace) -> int:
    rows, default = _model_rows(args.verify)
    if args.json:
        print(json.dumps({"models": rows, "default": default}, indent=2))
        return 0
    headers = ("id", "source", "format", "revision", "status", "location")
    table = [
        (
            r["id"],
            r["source"],
            r["format"],
            (r["revision"] or "-") + ("" if r["revision_pinned"] or r["source"] != "hub" else " (unpinned)"),
            r["status"],
            r["location"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *table, strict=False)]
    for line in (headers, *table):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    print()
    print(f"default model: {default['id']} ({default['reason']})")
    print(f"registry: {default['registry']}")
    print(f"Hugging Face cache: {default['hf_cache']} (offline: {default['offline']})")
    return 0


def run_sample_data(args: argparse.Namespace) -> int:
    cases = list(PYRADIOMICS_301.cases) if args.case == "all" else [args.case]
    plan = _sample_outputs(args)
    bar = None if args.json else TqdmProgress("sample data")
    try:
        fetched = [
            fetch.fetch_sample_data(args.out, case=c, archive=args.archive, progress=bar) for c in cases
        ]
    finally:
        if bar is not None:
            bar.close()
    plan.done()
    if args.json:
        out = [
            {
                "case": c.name,
                "image": str(c.image),
                "label": str(c.label),
                "description": c.description,
                "source": c.source,
                "licence": c.licence,
            }
            for c in fetched
        ]
        print(json.dumps(out, indent=2))
        return 0
    for c in fetched:
        print(f"{c.name}: {c.description}")
        print(f"  image: {c.image}")
        print(f"  label: {c.label}")
    print(f"source: {fetched[0].source}, licence: {fetched[0].licence}")
    return 0


def _sample_outputs(args: argparse.Namespace):
    """The files extraction writes into --out: a file already holding the right bytes is left as it is; any
    other file of the same name is the user's and is not replaced (without --overwrite)."""
    dest = Path(args.out).expanduser() if args.out else sample_data_dir()
    plan = output_plan(args).input(args.archive)
    for case in PYRADIOMICS_301.cases.values():
        for member in (case.image, case.label):
            plan.output(dest / member.filename, "--out", same_sha256=member.sha256, kind=kinds.MODEL_FILE)
    return plan.check()

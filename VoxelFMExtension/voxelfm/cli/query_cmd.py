"""`voxelfm query LIBRARY IMAGE [--roi REGION] -k K [--json]`: the cases of a library most similar to a CT.

Whole volume by default (cosine of mean-pooled patch tokens; --embedding cls for the cls token). With --roi
the query is a region and every hit carries the RAS location (mm) of the matching place in that case:
    --roi box:R,A,S,SIZE_R,SIZE_A,SIZE_S     RAS-aligned box: centre and size (mm), like Slicer's ROI
    --roi point:R,A,S,RADIUS                 a ball around a point
    --roi mask:FILE[:LABEL]                  a label image (any grid aligned in physical space)
    --roi ROI.mrk.json                       a Slicer markups ROI file
With --json, stdout is a JSON list of {"case_id", "path", "score"} (+ "ras" for region hits), best first;
"path" is the path the case was added from. Messages go to stderr.
"""

from __future__ import annotations

import argparse

from ..retrieval.region_specs import parse_region_spec
from . import options
from .common import add_model_and_feature_args, add_series_arg, command, deferred
from .outputs import add_overwrite_arg
from .remote import add_server_arg


@options.validator
def region_spec(text: str):
    """--roi, parsed at parse time (the geometry module loads only when the option is given)."""
    return parse_region_spec(text)


@command("query", deferred("query_run", "run"))
def arguments(p: argparse.ArgumentParser) -> None:
    """find the most similar cases of a library (whole volume or a region)"""
    p.add_argument("library", help="case library folder (see `voxelfm index add`)")
    p.add_argument("image", help="query CT: NIfTI / NRRD / MHA file or DICOM series folder")
    p.add_argument("--roi", type=region_spec, default=None, help="query a region (see above)")
    p.add_argument("-k", type=options.positive_int, default=10, help="number of cases (default 10)")
    p.add_argument("--json", action="store_true", help="print the hits as JSON on stdout")
    p.add_argument(
        "--embedding", choices=("mean", "cls"), default="mean", help="whole-volume embedding (default mean)"
    )
    p.add_argument("--with-reports", action="store_true", help="only cases that carry a report")
    p.add_argument("--thumbnails", default=None, help="folder for PNGs: the query region beside each hit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_series_arg(p)
    add_overwrite_arg(p)
    add_model_and_feature_args(p)
    add_server_arg(p)

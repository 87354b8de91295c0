"""Localisation, retrieval and report drafting through a VoxelFM server vs locally: latency and bytes.

Each capability runs ``--repeats`` times locally (the core pipelines) and through a real `voxelfm serve` on
127.0.0.1 (the client API the CLI uses); features are cached after the first run on either side, so the
medians compare the steady state a user sees on the second and later calls. Real CT: totalseg abdomen_3mm
as the reference / library case and a shifted 20-slice crop of it as the target; a 3-case library
(abdomen_3mm, torso_3mm, pulmonary_1p5mm) with reports; the bundled voxelfm-tiny model on CPU. The
results must be identical (checked); the table gives medians, the server's overhead and bytes on the wire.

    .venv/bin/python Testing/Benchmarks/bench_server_analysis.py [--data ../shared/data] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(
    0, str(REPO / "Testing" / "python")
)  # the test suite's server harness (free port, start, stop)

from server_harness import KEY, running_server  # noqa: E402

from voxelfm.client.analysis import remote_localize, remote_query, remote_report  # noqa: E402
from voxelfm.client.client import VoxelFMClient  # noqa: E402
from voxelfm.client.run import RemoteRun  # noqa: E402
from voxelfm.features.spec import FeatureOptions, ModelSpec  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.localize.config import TransferConfig  # noqa: E402
from voxelfm.localize.pipeline import LocalisationPipeline, Reference  # noqa: E402
from voxelfm.localize.points import PointList  # noqa: E402
from voxelfm.report.library_source import library_neighbours  # noqa: E402
from voxelfm.report.pipeline import ReportPipeline  # noqa: E402
from voxelfm.report.segmentation_files import SegmentationData, SegmentRef  # noqa: E402
from voxelfm.retrieval.pipeline import RetrievalPipeline  # noqa: E402

SPEC = ModelSpec("voxelfm-tiny", device="cpu", precision="fp32", max_tokens=4096)
OPTIONS = FeatureOptions()
CASES = {
    "abdomen": ("totalseg/abdomen_3mm/ct.nii.gz", "Liver: The liver is delineated, of normal size."),
    "torso": ("totalseg/torso_3mm/ct.nii.gz", "Kidneys: Both kidneys are delineated."),
    "pulmonary": ("totalseg/pulmonary_1p5mm/ct.nii.gz", "Heart: The pulmonary artery is delineated."),
}
POINTS_IJK = [(40, 50, 6), (80, 45, 12), (61, 70, 15), (30, 40, 18), (60, 50, 28)]
SHIFT_MM = np.array([9.0, -6.0, 3.0])


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("VOXELFM_SHARED", str(REPO.parent / "shared")) + "/data")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    data = Path(args.data)
    ref = read_volume(str(data / CASES["abdomen"][0]))
    ijk = np.array(POINTS_IJK, np.float64)
    points = PointList(["a", "b", "c", "d", "top"], ijk @ ref.ijk_to_ras[:3, :3].T + ref.ijk_to_ras[:3, 3])
    m = ref.ijk_to_ras.copy()
    m[:3, 3] += SHIFT_MM
    target = Volume(ref.array[:20].copy(), m, "target")
    truth = read_volume(str(data / "totalseg/abdomen_3mm/labels.nii.gz"), check_hu=False)
    seg_layer = Volume(np.isin(truth.array[:20], [1, 5]) * truth.array[:20].astype(np.int32), m, "seg.nii.gz")
    seg = SegmentationData(
        [seg_layer], [SegmentRef("spleen", "1", 0, 1), SegmentRef("liver", "5", 0, 5)], "seg"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        retrieval = RetrievalPipeline(SPEC, options=OPTIONS)
        for case_id, (path, report) in CASES.items():
            retrieval.add_volume(lib, read_volume(str(data / path)), case_id, report)
        (Path(tmp) / "libraries.json").write_text(json.dumps({"lib": str(lib)}))
        config = TransferConfig()

        def local_localize():
            pipeline = LocalisationPipeline(SPEC, config, OPTIONS)
            return pipeline.transfer(target, pipeline.templates([Reference(ref, points)]))

        def local_query():
            return retrieval.query(lib, target, 3)

        def local_report():
            pipeline = ReportPipeline(SPEC, None, None, OPTIONS)
            neighbours = library_neighbours(str(lib), pipeline.spec, pipeline.service, pipeline.options)
            return pipeline.draft(target, (), seg, neighbours)

        local = {
            "localize (1 reference, 5 points)": timed(local_localize, args.repeats),
            "query (3-case library, k=3)": timed(local_query, args.repeats),
            "report (library + segmentation)": timed(local_report, args.repeats),
        }
        server_dir = Path(tmp) / "server"
        with running_server(server_dir, "--libraries", str(Path(tmp) / "libraries.json")) as server:
            client = VoxelFMClient(server.url, KEY)
            run = RemoteRun(client, SPEC, OPTIONS)
            consensus = {"neighbours": 5, "temperature": 0.05, "min_support": 0.5}
            calls = {
                "localize (1 reference, 5 points)": lambda: remote_localize(
                    run, target, [Reference(ref, points)], config
                )[1],
                "query (3-case library, k=3)": lambda: remote_query(run, "lib", target, 3, "mean", False),
                "report (library + segmentation)": lambda: remote_report(
                    run, "lib", target, seg, None, consensus
                ),
            }
            for name, call in calls.items():
                before = (client.connection.transfer.sent, client.connection.transfer.received)
                first_t0 = time.perf_counter()
                call()  # first call: uploads and the server's features
                first = time.perf_counter() - first_t0
                first_sent = client.connection.transfer.sent - before[0]
                before = (client.connection.transfer.sent, client.connection.transfer.received)
                times, out = timed(call, args.repeats)
                sent = (client.connection.transfer.sent - before[0]) / args.repeats
                received = (client.connection.transfer.received - before[1]) / args.repeats
                local_times, local_out = local[name]
                same = _same(local_out, out)
                rows.append(
                    (
                        name,
                        statistics.median(local_times),
                        statistics.median(times),
                        first,
                        first_sent,
                        sent,
                        received,
                        same,
                    )
                )
    print(f"voxelfm-tiny, CPU fp32, {args.repeats} repeats after a first call; loopback, one CPU job queue\n")
    print(
        "| capability | local median s | server median s | server - local | first server call s (upload) | sent per call | received per call | identical |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, lt, st, first, first_sent, sent, received, same in rows:
        print(
            f"| {name} | {lt:.3f} | {st:.3f} | {1000 * (st - lt):+.0f} ms | {first:.2f} ({first_sent / 1e3:.0f} kB) "
            f"| {sent / 1e3:.1f} kB | {received / 1e3:.1f} kB | {'yes' if same else 'NO'} |"
        )
    return 0 if all(r[-1] for r in rows) else 1


def _same(a, b) -> bool:
    if hasattr(a, "points"):
        return (
            a.points.names == b.points.names
            and np.array_equal(a.points.ras, b.points.ras)
            and np.array_equal(a.confidence, b.confidence)
            and np.array_equal(a.points.missing, b.points.missing)
        )
    if hasattr(a, "hits"):
        return a.to_json() == b.to_json()
    return a.to_dict() == b.to_dict()


if __name__ == "__main__":
    raise SystemExit(main())

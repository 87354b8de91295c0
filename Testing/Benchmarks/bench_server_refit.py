"""Refit through a VoxelFM server vs locally: latency, bytes on the wire, throughput with 1/4/8 clients.

A refit = fit on three painted axial slices + the labelmap on the full grid, with the features already
cached (the server's per-volume pipeline cache, the local pipeline's own). The server is a real
`voxelfm serve` process on 127.0.0.1 (one CPU job queue); the model is the bundled voxelfm-tiny (refit cost
hardly depends on the backbone once features are cached; the labelmap and the fit dominate). The painted
labels are real anatomy of the CT itself: lung (HU < -400 inside the body) vs everything else, on three
slices that move by one slice per refit, so every refit is a new fit.

    .venv/bin/python Testing/Benchmarks/bench_server_refit.py [--ct ../shared/data/public_ct/lidc_idri_0314_chest.nii.gz]
        [--slices 300] [--refits 7] [--clients 1 4 8] [--per-client 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(
    0, str(REPO / "Testing" / "python")
)  # the test suite's server harness (free port, start, stop)

from server_harness import KEY, running_server  # noqa: E402

from voxelfm.client.capabilities import remote_segment_fit  # noqa: E402
from voxelfm.client.client import VoxelFMClient  # noqa: E402
from voxelfm.client.run import RemoteRun  # noqa: E402
from voxelfm.features.spec import FeatureOptions, ModelSpec  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.segment.config import SegmentationConfig  # noqa: E402
from voxelfm.segment.labels import painted_slices_to_labels  # noqa: E402
from voxelfm.segment.pipeline import SegmentationPipeline  # noqa: E402

SPEC = ModelSpec("voxelfm-tiny", device="cpu", precision="fp32", max_tokens=8192)


def painted(ct: Volume, first: int) -> Volume:
    """Lung (1) vs background (0) on three axial slices; every other slice unlabelled (255)."""
    depth = ct.array.shape[0]
    slices = [first % depth, (first + depth // 3) % depth, (first + 2 * depth // 3) % depth]
    lung = (ct.array < -400) & (ct.array > -1000)
    return Volume(painted_slices_to_labels(lung.astype(np.uint8), axis=0, slices=slices), ct.ijk_to_ras)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def throughput(url: str, ct: Volume, count: int, per_client: int) -> tuple[list[float], list[str], float]:
    """``count`` users (own key, own client) refitting ``per_client`` times at once: latencies, errors, wall s."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def user(index: int) -> None:
        mine = RemoteRun(VoxelFMClient(url, f"bench-user-{index}"), SPEC, FeatureOptions())
        for r in range(per_client):
            labels = painted(ct, 40 + 3 * index + r)
            t = time.perf_counter()
            try:
                remote_segment_fit(mine, ct, labels, [], SegmentationConfig())
            except Exception as exc:  # counted and shown: the goal is none
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(count)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", default=str(REPO.parent / "shared/data/public_ct/lidc_idri_0314_chest.nii.gz"))
    ap.add_argument("--slices", type=int, default=300, help="use at most this many axial slices")
    ap.add_argument("--refits", type=int, default=7)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--per-client", type=int, default=2, help="refits per client in the throughput runs")
    args = ap.parse_args()

    ct = read_volume(args.ct)
    ct = Volume(np.ascontiguousarray(ct.array[: args.slices]), ct.ijk_to_ras, "ct")
    print(
        f"CT {Path(args.ct).name}: {ct.array.shape[::-1]} voxels (i,j,k), {ct.array.dtype}, "
        f"{ct.array.nbytes / 1e6:.0f} MB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    config, options = SegmentationConfig(), FeatureOptions()

    # ---- first fits (features + per-volume context), then refits alternating local / server so that the
    # load of a shared machine falls on both alike
    # the Slicer logic's refit: the volume's key is known, so a refit does not re-hash the voxels (the CLI,
    # one fit per process, hashes once)
    local = SegmentationPipeline(SPEC, config, options)
    t0 = time.perf_counter()
    key = ct.content_hash()
    local.fit(ct, painted(ct, 10), [], volume_key=key)
    print(f"local first fit (features + context): {time.perf_counter() - t0:.1f} s")
    keys = [KEY] + [f"bench-user-{n}" for n in range(max(args.clients))]  # one key per simulated user
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp), "--abandon-after", "600", keys=keys) as server,
    ):
        client = VoxelFMClient(server.url, KEY)
        run = RemoteRun(client, SPEC, options)
        t0 = time.perf_counter()
        sha = client.ensure_volume(ct)
        upload_s, upload_bytes = time.perf_counter() - t0, client.connection.transfer.sent
        t0 = time.perf_counter()
        remote_segment_fit(run, ct, painted(ct, 10), [], config)
        print(
            f"upload {upload_bytes / 1e6:.1f} MB in {upload_s:.1f} s (hash + compress + send + verify); "
            f"server first fit (features + context): {time.perf_counter() - t0:.1f} s; volume {sha[:12]}"
        )
        local_times, server_times, compute, sent, received, same = [], [], [], [], [], True
        for n in range(args.refits):
            labels = painted(ct, 11 + n)
            t0 = time.perf_counter()
            mine = local.fit(ct, labels, [], volume_key=key).labelmap
            local_times.append(time.perf_counter() - t0)
            before = (client.connection.transfer.sent, client.connection.transfer.received)
            t0 = time.perf_counter()
            result = remote_segment_fit(run, ct, labels, [], config)
            server_times.append(time.perf_counter() - t0)
            compute.append(float(client.last_job["seconds"]))
            sent.append(client.connection.transfer.sent - before[0])
            received.append(client.connection.transfer.received - before[1])
            same = same and np.array_equal(result.labelmap, mine)
        print()
        print("| refit (3 painted slices) | median s | p95 s | sent per refit | received per refit |")
        print("|---|---|---|---|---|")
        print(f"| local | {statistics.median(local_times):.3f} | {pct(local_times, 95):.3f} | - | - |")
        print(
            f"| server (loopback) | {statistics.median(server_times):.3f} | {pct(server_times, 95):.3f} | "
            f"{statistics.median(sent) / 1e3:.1f} kB | {statistics.median(received) / 1e3:.1f} kB |"
        )
        overhead = statistics.median(server_times) - statistics.median(local_times)
        beside = statistics.median([a - b for a, b in zip(server_times, compute, strict=True)])
        print(
            f"\nserver job time per refit (fit + labelmap + its label decoding and result encoding, median): "
            f"{statistics.median(compute):.3f} s; time beside it "
            f"(client label encoding + labelmap decoding, HTTP round trips, queue handoff) median {beside * 1000:.0f} ms"
        )
        paired = statistics.median([a - b for a, b in zip(server_times, local_times, strict=True)])
        job_over = statistics.median([a - b for a, b in zip(compute, local_times, strict=True)])
        print(
            f"server overhead per refit (difference of medians): {overhead * 1000:.0f} ms; median of the paired "
            f"differences {paired * 1000:.0f} ms, of which inside the server job {job_over * 1000:.0f} ms; "
            f"every server refit's labelmap identical to the local one: {same}; "
            f"load average now {os.getloadavg()[0]:.1f}"
        )

        print("\n| clients | refits | wall s | refits/s | median latency s | p95 latency s | errors |")
        print("|---|---|---|---|---|---|---|")
        for count in args.clients:
            latencies, errors, wall = throughput(server.url, ct, count, args.per_client)
            done = len(latencies)
            print(
                f"| {count} | {done} | {wall:.1f} | {done / wall:.2f} | {statistics.median(latencies):.2f} | "
                f"{pct(latencies, 95):.2f} | {len(errors)} |"
            )
            for e in sorted(set(errors))[:3]:
                print(f"  error: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

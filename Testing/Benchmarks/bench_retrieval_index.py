"""Which FAISS index for the case library? Exact vs compressed indexes on synthetic clustered embeddings.

Data: N unit vectors of dimension 864 (the official VoxelFM width) around 100 cluster centres, each cluster a
32-d Gaussian manifold plus isotropic noise (``Generator``), generated in chunks from a fixed seed, so memory
stays at the exact index (N x 864 float32; 3.5 GB at 1M) plus the candidate being measured. Queries: fresh points of the same distribution (not in the index).

Per index: build time (training + adding), bytes on disk (faiss.write_index), single-query latency (nq=1,
mean and p95 over --latency-queries queries, the interactive case), batched time per query, and Recall@10
against exact search (fraction of the exact top-10 found in the approximate top-10, over --recall-queries).
Goal from the issue: top-10 over 1M in < 5 ms per query, Recall@10 >= 0.95, index < 1 GB.

    python Testing/Benchmarks/bench_retrieval_index.py --sizes 100000 1000000 \
        --out Testing/Benchmarks/results/retrieval_index.md
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 864
K = 10


@dataclass
class Generator:
    """Deterministic clustered unit vectors, produced chunk by chunk.

    Each of ``clusters`` clusters is a centre plus a ``manifold``-dimensional Gaussian spread (total norm
    ``spread``) plus isotropic noise (norm ``noise``): neighbours lie along a low-dimensional structure, as
    embeddings of similar scans do, so a query's top-10 spans several IVF lists and nprobe matters.
    """

    dim: int = DIM
    clusters: int = 100
    manifold: int = 32
    spread: float = 1.0
    noise: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng((self.seed, 0))
        centres = rng.standard_normal((self.clusters, self.dim)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        self.axes = rng.standard_normal((self.clusters, self.dim, self.manifold)).astype(np.float32)
        self.axes /= np.sqrt(self.dim * self.manifold)

    def chunk(self, index: int, size: int, stream: int = 1) -> np.ndarray:
        rng = np.random.default_rng((self.seed, stream, index))
        which = rng.integers(0, self.clusters, size)
        u = rng.standard_normal((size, self.manifold), dtype=np.float32)
        x = self.centres[which] + self.noise * rng.standard_normal(
            (size, self.dim), dtype=np.float32
        ) / np.sqrt(self.dim)
        for c in np.unique(which):
            rows = which == c
            x[rows] += self.spread * (u[rows] @ self.axes[c].T)
        return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)

    def chunks(self, n: int, size: int = 50_000):
        for i, start in enumerate(range(0, n, size)):
            yield start, self.chunk(i, min(size, n - start))

    def describe(self) -> str:
        return (
            f"{self.clusters} clusters, each a {self.manifold}-d Gaussian spread (norm {self.spread}) + "
            f"isotropic noise (norm {self.noise}) around a unit centre"
        )


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def file_bytes(faiss, index) -> int:
    fd, path = tempfile.mkstemp(suffix=".faiss")
    os.close(fd)
    try:
        faiss.write_index(index, path)
        return os.path.getsize(path)
    finally:
        os.unlink(path)


def latency_ms(index, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None], K)
        times.append(1000 * (time.perf_counter() - t))
    return float(np.mean(times)), float(np.percentile(times, 95))


def batch_ms(index, queries: np.ndarray) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    _, ids = index.search(queries, K)
    return 1000 * (time.perf_counter() - t) / len(queries), ids


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def candidates(n: int, small_max: int) -> list[tuple[str, str, list[tuple[str, int]]]]:
    """(name, factory string, [(search parameter, value)]) for n vectors; nlist as the library's policy.

    PQ and HNSW only up to ``small_max`` vectors: PQ training is slow here (about a minute per 10k training
    vectors for PQ108 on one core) and HNSW32 already exceeds the 1 GB budget at 1M (>= 1.1 GB: 864 B of
    codes + 256 B of links per vector) and cannot remove vectors.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "VoxelFMExtension"))
    from voxelfm.retrieval.vector_index import IndexPolicy

    nlist = IndexPolicy().nlist_for(n)
    probes = [("nprobe", p) for p in (8, 16, 32, 64)]
    out = [
        (f"IVF{nlist},SQ8", f"IVF{nlist},SQ8", probes),
        (f"IVF{nlist},SQ4", f"IVF{nlist},SQ4", probes[2:]),
    ]
    if n <= small_max:
        out.append((f"IVF{nlist},PQ108", f"IVF{nlist},PQ108", probes[2:]))
        out.append(("HNSW32,SQ8", "HNSW32,SQ8", [("efSearch", e) for e in (32, 64, 128)]))
    return out


def build(faiss, factory: str, data: np.ndarray, train_n: int) -> tuple[object, float]:
    t = time.perf_counter()
    index = faiss.index_factory(data.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and hasattr(ivf, "pq"):
            ivf.pq.cp.max_points_per_centroid = 64  # PQ codebooks from 16k vectors (training time)
        rng = np.random.default_rng(1)
        sample = data[np.sort(rng.choice(len(data), min(train_n, len(data)), replace=False))]
        index.train(sample)
        del sample
    for start in range(0, len(data), 100_000):
        index.add(data[start : start + 100_000])
    return index, time.perf_counter() - t


def set_param(faiss, index, name: str, value: int) -> None:
    if name == "nprobe":
        faiss.extract_index_ivf(index).nprobe = value
    else:
        index.hnsw.efSearch = value


def flat_index(faiss, gen: Generator, n: int) -> tuple[object, float]:
    """The exact index over the first n vectors, and its build time in seconds."""
    t = time.perf_counter()
    flat = faiss.IndexFlatIP(gen.dim)
    for _, chunk in gen.chunks(n):
        flat.add(chunk)
    return flat, time.perf_counter() - t


def timed_row(
    searched, latency_queries: np.ndarray, batch_queries: np.ndarray, truth: np.ndarray | None, **fields
) -> tuple[dict, np.ndarray]:
    """One table row for the index ``searched`` (``fields`` + single-query latency, batch time per query,
    Recall@10 against ``truth``; 1.0 for the exact index itself: truth None), printed as soon as measured,
    and the batch's top-10 ids."""
    lat, p95 = latency_ms(searched, latency_queries)
    per_q, found = batch_ms(searched, batch_queries)
    recall = 1.0 if truth is None else recall_at_k(found, truth)
    row = dict(**fields, lat=lat, p95=p95, batch=per_q, recall=recall)
    print(_row(row), flush=True)
    return row, found


def measure(n: int, gen: Generator, args) -> list[dict]:
    import faiss

    flat, build_s = flat_index(faiss, gen, n)
    data = faiss.rev_swig_ptr(flat.get_xb(), n * gen.dim).reshape(n, gen.dim)  # a view, no copy
    queries = gen.chunk(0, max(args.recall_queries, args.latency_queries), stream=2)
    lat_q, batch_q = queries[: args.latency_queries], queries[: args.recall_queries]
    fields = dict(n=n, index="Flat (exact)", param="", build_s=build_s, bytes=file_bytes(faiss, flat))
    row, truth = timed_row(flat, lat_q, batch_q, None, **fields)
    rows = [row]
    for name, factory, params in candidates(n, args.small_max):
        from voxelfm.retrieval.vector_index import IndexPolicy

        policy = IndexPolicy()
        train_n = policy.nlist_for(n) * policy.train_per_list
        index, build_s = build(faiss, factory, data, train_n)
        size = file_bytes(faiss, index)
        for pname, value in params:
            set_param(faiss, index, pname, value)
            fields = dict(n=n, index=name, param=f"{pname}={value}", build_s=build_s, bytes=size)
            rows.append(timed_row(index, lat_q, batch_q, truth, **fields)[0])
        del index
    del flat, data
    return rows


def exact_latency(sizes: list[int], gen: Generator, queries: int) -> list[dict]:
    """Single-query latency of exact search at small sizes (where the library's exact/IVF threshold lies)."""
    import faiss

    rows = []
    q = gen.chunk(0, queries, stream=2)
    for n in sizes:
        flat, _ = flat_index(faiss, gen, n)
        fields = dict(n=n, index="Flat (exact)", param="", build_s=0.0, bytes=file_bytes(faiss, flat))
        rows.append(timed_row(flat, q, q, None, **fields)[0])
    return rows


HEADER = (
    "| N | index | search | build s | index MB | ms/query (nq=1) | p95 ms | ms/query (batch) "
    "| Recall@10 vs exact |\n|---:|---|---|---:|---:|---:|---:|---:|---:|"
)


def _row(r: dict) -> str:
    return (
        f"| {r['n']:,} | {r['index']} | {r['param']} | {r['build_s']:.1f} | {r['bytes'] / 1e6:.0f} | "
        f"{r['lat']:.2f} | {r['p95']:.2f} | {r['batch']:.3f} | {r['recall']:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--recall-queries", type=int, default=1000)
    p.add_argument(
        "--exact-sizes",
        type=int,
        nargs="*",
        default=[5_000, 20_000, 50_000],
        help="also time exact search alone at these sizes (the exact/compressed threshold)",
    )
    p.add_argument("--small-max", type=int, default=100_000, help="measure PQ and HNSW only up to this size")
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0: faiss default = all cores)")
    p.add_argument("--out", default=None, help="write the table (markdown) here")
    args = p.parse_args(argv)
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    gen = Generator()
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {DIM}", flush=True)
    print(HEADER, flush=True)
    t0 = time.perf_counter()
    rows = exact_latency(args.exact_sizes, gen, args.latency_queries)
    rows += [r for n in args.sizes for r in measure(n, gen, args)]
    note = (
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, {os.cpu_count()} CPUs; "
        f"dim {DIM}; {gen.describe()}; {args.latency_queries} single "
        f"queries for latency, {args.recall_queries} for recall and batch time; peak RSS {rss_gb():.1f} GB; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    print(note)
    if args.out:
        cmd = "python Testing/Benchmarks/bench_retrieval_index.py " + " ".join(argv or sys.argv[1:])
        table = "\n".join([HEADER, *(_row(r) for r in rows)])
        Path(args.out).write_text(
            f"Case-library index on synthetic clustered embeddings\n\n{table}\n\n({note}; command: {cmd})\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

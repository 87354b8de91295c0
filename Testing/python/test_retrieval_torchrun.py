"""`voxelfm index add` data-parallel under torchrun (2 gloo processes on CPU): each rank embeds its shard, rank 0
merges once; the library equals a single-process build case by case (same embeddings, every input once).
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from retrieval_helpers import tiny_backbone
from test_pretrain_distributed import _free_port
from test_pretrain_fsdp import _torchrun
from test_retrieval_resume import _archive

from voxelfm.cli.main import main
from voxelfm.features.service import ModelSpec
from voxelfm.imaging.io import write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.pretrain.distributed import DistInfo
from voxelfm.retrieval import indexing, store
from voxelfm.retrieval.library import CaseLibrary
from voxelfm.retrieval.pipeline import RetrievalPipeline
from voxelfm.retrieval.staging import staged_files

pytest.importorskip("faiss")


def _embeddings(lib) -> dict[str, np.ndarray]:
    with CaseLibrary.open(lib) as opened:
        rows, mat = store.global_matrix(opened.con, "mean", None, opened.dim)
        records = opened.records(list(rows))
        return {records[int(r)].path: v for r, v in zip(rows, mat, strict=True)}


@pytest.mark.slow  # two fresh interpreters + gloo rendezvous
def test_two_ranks_build_the_same_library_as_one_process(tmp_path):
    archive = _archive(tmp_path / "archive")
    model = tiny_backbone(tmp_path / "model")
    common = [str(archive), "--model", str(model), "--device", "cpu", "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOXELFM_CACHE_DIR": str(tmp_path / "cache_ddp")}
    cmd = [_torchrun(), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "voxelfm.cli"]
    proc = subprocess.run(
        [*cmd, "index", "add", str(tmp_path / "ddp"), *common],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["index", "add", str(tmp_path / "single"), *common]) == 0

    ddp, single = _embeddings(tmp_path / "ddp"), _embeddings(tmp_path / "single")
    assert sorted(ddp) == sorted(single) and len(ddp) == len(list(archive.iterdir()))
    for path, vector in single.items():
        np.testing.assert_allclose(ddp[path], vector, atol=1e-5)
    assert staged_files(tmp_path / "ddp") == []
    with CaseLibrary.open(tmp_path / "ddp") as opened:
        assert opened.indexes.state("mean").ntotal == len(ddp) and opened.indexes.check() == []


def test_every_rank_shards_rank_0s_list_of_what_is_left(tmp_path, monkeypatch):
    """A slow rank that looks at the folder after rank 0 staged a case must not shift its shard (a case would be
    computed by no rank): every rank takes rank 0's list, read before anything is computed."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for n in range(2):
        arr = np.full((16, 20, 20), -1000.0, np.float32)
        arr[4:12, 5:15, 5:15] = 40.0 + n
        write_volume(Volume(arr, np.diag([2.0, 2.0, 2.5, 1.0])), archive / f"case{n}.nii.gz")
    model = tiny_backbone(tmp_path / "model")
    lib = tmp_path / "lib"
    common = ["--model", str(model), "--device", "cpu", "--no-progress", "--threads", "1"]
    assert main(["index", "add", str(lib), str(archive / "case0.nii.gz"), *common]) == 0

    rank0_view = (set(), {})  # rank 0 looked before case0 was committed
    seen = []

    def gather(dist, obj):
        seen.append(obj)
        return [rank0_view if isinstance(obj, tuple) else obj, obj]

    monkeypatch.setattr(indexing, "gather_objects", gather)
    pipeline = RetrievalPipeline(ModelSpec(str(model), "cpu"))
    plan = indexing._plan(pipeline, lib, None, DistInfo(rank=1, world_size=2))
    assert plan.done == set() and plan.staged == {}, "rank 1 sharded its own view of the folder"
    own_views = [obj for obj in seen if isinstance(obj, tuple)]
    assert len(own_views[0][0]) == 1  # (its own view did see case0 done)

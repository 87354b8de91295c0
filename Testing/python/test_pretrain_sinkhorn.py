"""Sinkhorn-Knopp teacher targets: equipartition, no uniform collapse, same result split over 2 ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from voxelfm.pretrain.losses import CenteredTeacher, sinkhorn_knopp


def test_rows_are_distributions_and_prototypes_are_equally_used():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(256, 16, generator=g) * 0.2 + torch.linspace(0, 0.6, 16)  # biased to late ones
    q = sinkhorn_knopp(logits, temp=0.1, n_iters=3)
    assert torch.allclose(q.sum(dim=1), torch.ones(256), atol=1e-5)
    col = q.mean(dim=0)
    assert torch.allclose(col, torch.full((16,), 1 / 16), atol=0.01), col
    soft = (logits / 0.1).softmax(dim=1).mean(dim=0)
    assert soft[-1] > 2.5 / 16  # the plain softmax follows the bias; equipartition removes it


def test_shared_preference_does_not_collapse_to_one_prototype_or_uniform():
    """Every sample prefers prototype 0 (a collapsing teacher); the small per-sample differences survive."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 32, generator=g) * 0.1
    logits[:, 0] += 5.0
    center = CenteredTeacher(32, momentum=0.9)  # fresh centre: no history to remove the shared bias
    soft = center.softmax(logits, temp=0.04)
    assert (soft.argmax(dim=1) == 0).all()
    q = sinkhorn_knopp(logits, temp=0.04)
    assert q.argmax(dim=1).unique().numel() > 16  # samples spread over the prototypes
    assert float(q.max(dim=1).values.mean()) > 2.0 / 32  # and are not uniform


def test_shift_invariant_and_empty_input():
    logits = torch.randn(10, 8)
    assert torch.allclose(sinkhorn_knopp(logits, 0.07), sinkhorn_knopp(logits + 10.0, 0.07), atol=1e-5)
    assert sinkhorn_knopp(torch.zeros(0, 8), 0.07).shape == (0, 8)


def _rank_main(rank: int, init_file: str, logits: torch.Tensor, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        part = logits[:7] if rank == 0 else logits[7:]
        out[rank] = sinkhorn_knopp(part, temp=0.05)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    logits = torch.randn(20, 12, generator=torch.Generator().manual_seed(2)) * 3
    expected = sinkhorn_knopp(logits, temp=0.05)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_main, args=(str(tmp_path / "rdv"), logits, out), nprocs=2, join=True)
        got = torch.cat([out[0], out[1]])
    assert torch.allclose(got, expected, atol=1e-6)

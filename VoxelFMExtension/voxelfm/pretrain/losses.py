"""Self-distillation losses: DINO (image-level, centred teacher), iBOT (masked patches), KoLeo.

Centring (subtracting an EMA of the teacher's mean logits) together with a sharp teacher temperature is
what prevents collapse: centring alone pushes to uniform, sharpening alone to one prototype.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _all_reduce(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A reduced copy of ``x`` over all ranks (``op``: "sum" or "max"); ``x`` itself when not distributed."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return x


class CenteredTeacher(nn.Module):
    """Holds the EMA centre of teacher logits; ``softmax`` centres and sharpens teacher outputs."""

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def softmax(self, teacher_logits: torch.Tensor, temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean over the global batch (all ranks; every rank must call)."""
        flat = teacher_logits.float().reshape(-1, self.center.shape[-1])
        stats = torch.cat([flat.sum(dim=0), flat.new_tensor([flat.shape[0]])])
        stats = _all_reduce(stats)
        count = float(stats[-1])
        if count > 0:  # e.g. no masked tokens anywhere in this batch: keep the centre
            self.center.mul_(self.momentum).add_(stats[None, :-1] / count, alpha=1 - self.momentum)


def _global_logsumexp_rows(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over dim 0 of the row-concatenation of ``x`` over all ranks -> [1, K]."""
    peak = x.max(dim=0, keepdim=True).values if x.shape[0] else x.new_full((1, x.shape[1]), -torch.inf)
    peak = _all_reduce(peak, "max")
    safe = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = _all_reduce(torch.exp(x - safe).sum(dim=0, keepdim=True))
    return torch.log(total.clamp_min(1e-38)) + safe


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temp: float, n_iters: int = 3) -> torch.Tensor:
    """Teacher targets [N, K] whose prototype marginals are equal over the global batch (all ranks).

    Alternately gives every prototype (column) the same total mass and every sample (row) mass 1, starting
    from softmax(logits / temp), in log space (sharp temperatures underflow exp in float32). Why: with few
    samples per step the EMA centre lags and the targets drift to uniform; equipartition makes a uniform
    (or one-prototype) target impossible. Every rank must call this (collectives), also with N = 0.
    """
    log_q = teacher_logits.float() / temp
    n_local, k = log_q.shape
    n_total = float(_all_reduce(log_q.new_tensor([n_local]))[0])
    if n_total == 0:
        return log_q.softmax(dim=-1)
    log_share = torch.log(log_q.new_tensor(n_total / k))  # column mass: n_total / K
    for _ in range(n_iters):
        log_q = log_q - _global_logsumexp_rows(log_q) + log_share
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
    return log_q.exp()


def dino_loss(
    student_logits: list[torch.Tensor],
    teacher_probs: list[torch.Tensor],
    student_temp: float,
    skip_same_index: bool = True,
) -> torch.Tensor:
    """Mean over (teacher crop t, student crop s) pairs of batch-mean CE(teacher_t, softmax(student_s / T)).

    Students 0..len(teacher)-1 are the same global crops as the teachers; pairs (i, i) are skipped.
    """
    total = student_logits[0].new_zeros(())
    n_terms = 0
    for ti, t in enumerate(teacher_probs):
        for si, s in enumerate(student_logits):
            if skip_same_index and si == ti:
                continue
            total = total + torch.sum(-t * F.log_softmax(s.float() / student_temp, dim=-1), dim=-1).mean()
            n_terms += 1
    return total / max(n_terms, 1)


def ibot_patch_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    sample_index: torch.Tensor,
    n_samples: int,
    student_temp: float,
) -> torch.Tensor:
    """Masked-token CE, averaged within each masked crop, then over the masked crops.

    student_logits/teacher_probs: [M, K] for the M masked tokens; sample_index [M]: crop of each token.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    ce = torch.sum(-teacher_probs * F.log_softmax(student_logits.float() / student_temp, dim=-1), dim=-1)
    counts = torch.bincount(sample_index, minlength=n_samples).clamp(min=1).to(ce.dtype)
    per_crop = (
        torch.zeros(n_samples, dtype=ce.dtype, device=ce.device).index_add_(0, sample_index, ce) / counts
    )
    n_masked = int((torch.bincount(sample_index, minlength=n_samples) > 0).sum())
    return per_crop.sum() / n_masked


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate: -mean log(distance to nearest neighbour) of L2-normalised x.

    Spreads features over the sphere; needs >= 2 samples (returns 0 otherwise).
    """
    if x.shape[0] < 2:
        return x.sum() * 0.0
    x = F.normalize(x.float(), dim=-1, p=2, eps=eps)
    with torch.no_grad():
        sim = x @ x.t()
        sim.fill_diagonal_(-2.0)
        nn_idx = sim.argmax(dim=1)
    dist_nn = F.pairwise_distance(x, x[nn_idx], p=2, eps=eps)
    return -torch.log(dist_nn + eps).mean()

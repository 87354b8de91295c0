"""Training losses of the probes (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cox_partial_likelihood(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox log partial likelihood (Breslow ties), averaged over events.

    loss = -1/n_events * sum_{i: event} [ r_i - log sum_{j: t_j >= t_i} exp(r_j) ].
    Breslow: every case with t_j >= t_i (tied event times included) is in the risk set of t_i.
    Returns 0 (with a gradient path) when the batch has no events.
    """
    risk = risk.reshape(-1)
    time = time.reshape(-1).to(risk.dtype)
    event = event.reshape(-1).to(risk.dtype)
    order = torch.argsort(time)
    t_sorted = time[order]
    r_sorted = risk[order]
    # log sum_{p >= q} exp(r_p) for every position q of the ascending order (reverse cumulative logsumexp)
    rev_lse = torch.logcumsumexp(r_sorted.flip(0), dim=0).flip(0)
    first = torch.searchsorted(
        t_sorted.contiguous(), time.contiguous(), right=False
    )  # first index with t >= t_i
    log_risk_set = rev_lse[first]
    n_events = event.sum()
    total = ((risk - log_risk_set) * event).sum()
    return -total / n_events.clamp(min=1.0)


def binary_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None
) -> torch.Tensor:
    """Per-label BCE with optional positive-class weights (multi-label: one weight per label)."""
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None
) -> torch.Tensor:
    return F.cross_entropy(logits, target.long(), weight=class_weight)

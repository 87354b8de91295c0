"""Fit one probe head on a set of cases: AdamW, early stopping on an inner validation split.

Inputs are pooled features: an array [N, D] (vector heads) or a list of [T_i, C] token matrices
(attentive head; padded per batch with a mask). Training is deterministic for a given seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..progress import CancelFlag, check_cancel
from .config import ProbeConfig
from .heads import build_head, set_standardization
from .losses import binary_cross_entropy, cox_partial_likelihood, cross_entropy
from .targets import EncodedTargets

Inputs = np.ndarray | Sequence[np.ndarray]


@dataclass
class TrainedHead:
    head: nn.Module
    spec: dict[str, Any]
    target_mean: np.ndarray | None = None  # regression: outputs are standardised targets
    target_std: np.ndarray | None = None
    history: dict[str, Any] = field(default_factory=dict)


def input_dim(inputs: Inputs) -> int:
    return int(inputs.shape[1]) if isinstance(inputs, np.ndarray) else int(inputs[0].shape[-1])


def make_batch(
    inputs: Inputs, idx: np.ndarray, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, mask): x [B, D] for vectors; x [B, T_max, C] zero-padded + mask [B, T_max] for tokens."""
    if isinstance(inputs, np.ndarray):
        return torch.from_numpy(inputs[idx]).to(device), None
    mats = [inputs[i] for i in idx]
    t_max = max(m.shape[0] for m in mats)
    x = torch.zeros(len(mats), t_max, mats[0].shape[1])
    mask = torch.zeros(len(mats), t_max, dtype=torch.bool)
    for b, m in enumerate(mats):
        x[b, : m.shape[0]] = torch.from_numpy(m)
        mask[b, : m.shape[0]] = True
    return x.to(device), mask.to(device)


def channel_stats(inputs: Inputs, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std over the training cases (over all their tokens for token inputs)."""
    if isinstance(inputs, np.ndarray):
        x = inputs[idx].astype(np.float64)
        return torch.from_numpy(x.mean(0)).float(), torch.from_numpy(x.std(0)).float()
    s = s2 = 0.0
    count = 0
    for i in idx:
        m = inputs[i].astype(np.float64)
        s = s + m.sum(0)
        s2 = s2 + (m * m).sum(0)
        count += m.shape[0]
    mean = s / count
    var = np.maximum(s2 / count - mean * mean, 0.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.sqrt(var)).float()


def _loss_fn(targets: EncodedTargets, train_idx: np.ndarray, config: ProbeConfig):
    kind = targets.kind
    if kind in ("binary", "multilabel"):
        pos_weight = None
        if config.class_weights == "balanced":
            y = targets.y[train_idx]
            pos = y.sum(0)
            pos_weight = torch.from_numpy(((len(y) - pos) / np.maximum(pos, 1.0)).astype(np.float32))
        return lambda out, y: binary_cross_entropy(out, y, pos_weight)
    if kind == "multiclass":
        weight = None
        if config.class_weights == "balanced":
            k = len(targets.class_names or [])
            counts = np.bincount(targets.y[train_idx], minlength=k).astype(np.float32)
            weight = torch.from_numpy(len(train_idx) / (k * np.maximum(counts, 1.0)))
        return lambda out, y: cross_entropy(out, y, weight)
    if kind == "regression":
        return lambda out, y: torch.mean((out - y) ** 2)
    return lambda out, y: cox_partial_likelihood(out[:, 0], y[:, 0], y[:, 1])


def _target_tensor(targets: EncodedTargets, idx: np.ndarray, mean, std) -> torch.Tensor:
    y = targets.y[idx]
    if targets.kind == "multiclass":
        return torch.from_numpy(y.astype(np.int64))
    if targets.kind == "regression":
        y = (y - mean) / std
    return torch.from_numpy(np.asarray(y, dtype=np.float32))


def head_spec(config: ProbeConfig, in_dim: int, out_dim: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": config.head, "in_dim": in_dim, "out_dim": out_dim}
    if config.head == "mlp":
        spec.update(hidden_dim=config.hidden_dim, dropout=config.dropout)
    if config.head == "attentive":
        spec.update(num_heads=config.num_heads)
    return spec


def _new_head(
    inputs: Inputs, targets: EncodedTargets, idx: np.ndarray, config: ProbeConfig, seed: int
) -> nn.Module:
    spec = head_spec(config, input_dim(inputs), targets.out_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_head(spec)
    set_standardization(head, *channel_stats(inputs, idx))
    return head


def _penalty(head: nn.Module) -> torch.Tensor:
    """Sum of squared weight-matrix entries (biases, norms and attention queries are not penalised)."""
    return sum((p * p).sum() for name, p in head.named_parameters() if p.ndim >= 2 and name != "query")


class _Problem:
    """Targets, loss and scaling of one training run (train/val indices fixed)."""

    def __init__(self, inputs: Inputs, targets: EncodedTargets, train_idx: np.ndarray, config: ProbeConfig):
        self.t_mean = self.t_std = None
        if targets.kind == "regression":
            self.t_mean = targets.y[train_idx].mean(0)
            self.t_std = np.maximum(targets.y[train_idx].std(0), 1e-8)
        self.loss_fn = _loss_fn(targets, train_idx, config)
        self.inputs, self.targets, self.device = inputs, targets, config.device

    def data(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        x, mask = make_batch(self.inputs, idx, self.device)
        return x, mask, _target_tensor(self.targets, idx, self.t_mean, self.t_std).to(self.device)

    @torch.no_grad()
    def loss(self, head: nn.Module, idx: np.ndarray) -> float:
        head.eval()
        x, mask, y = self.data(idx)
        return float(self.loss_fn(head(x, mask), y))


def minimize_lbfgs(
    params: Iterable[torch.Tensor],
    objective: Callable[[], torch.Tensor],
    max_iter: int,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-10,
) -> int:
    """Minimise ``objective()`` over ``params``, full batch, with one strong-Wolfe LBFGS step of up to
    ``max_iter`` iterations; returns how many times the objective was evaluated.

    WHY one place: the convex heads (linear probes here, the segmentation head) are fitted to convergence this
    way, deterministically, with no learning-rate schedule or early stopping to tune."""
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=tolerance_grad,
        tolerance_change=tolerance_change,
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        opt.zero_grad(set_to_none=True)
        loss = objective()
        loss.backward()
        evaluations += 1
        return loss

    opt.step(closure)
    return evaluations


def _fit_lbfgs(head: nn.Module, prob: _Problem, idx: np.ndarray, l2: float, max_iter: int) -> None:
    """Minimise mean loss + l2/2 * ||W||^2 to convergence (convex for linear heads: no early stopping needed)."""
    x, mask, y = prob.data(idx)
    head.train()
    minimize_lbfgs(
        head.parameters(), lambda: prob.loss_fn(head(x, mask), y) + 0.5 * l2 * _penalty(head), max_iter
    )
    head.eval()


def _train_lbfgs(inputs, targets, train_idx, val_idx, config, seed, cancel) -> TrainedHead:
    """Linear probe: choose the L2 penalty on the validation cases, then refit on train + validation."""
    grid = config.l2_grid if val_idx.size else (float(np.median(config.l2_grid)),)
    scores = {}
    for l2 in grid:
        check_cancel(cancel)
        if len(grid) == 1:
            break
        prob = _Problem(inputs, targets, train_idx, config)
        head = _new_head(inputs, targets, train_idx, config, seed)
        _fit_lbfgs(head, prob, train_idx, l2, config.max_epochs)
        scores[l2] = prob.loss(head, val_idx)
    best_l2 = min(scores, key=scores.get) if scores else grid[0]
    all_idx = np.sort(np.concatenate([train_idx, val_idx]))
    prob = _Problem(inputs, targets, all_idx, config)
    head = _new_head(inputs, targets, all_idx, config, seed)
    _fit_lbfgs(head, prob, all_idx, best_l2, config.max_epochs)
    history = {"solver": "lbfgs", "l2": best_l2, "val_loss_by_l2": {str(k): v for k, v in scores.items()}}
    return TrainedHead(
        head.cpu(), head_spec(config, input_dim(inputs), targets.out_dim), prob.t_mean, prob.t_std, history
    )


def train_head(
    inputs: Inputs,
    targets: EncodedTargets,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: ProbeConfig,
    seed: int,
    cancel: CancelFlag | None = None,
) -> TrainedHead:
    """Train on ``train_idx``, using ``val_idx`` for model selection.

    Linear heads (solver lbfgs): penalty chosen on the validation cases, exact convex fit. MLP / attentive
    heads (AdamW): stop when the validation loss stops improving, keep the best weights.
    """
    if config.use_lbfgs:
        return _train_lbfgs(inputs, targets, train_idx, val_idx, config, seed, cancel)
    device = config.device
    head = _new_head(inputs, targets, train_idx, config, seed).to(device)
    prob = _Problem(inputs, targets, train_idx, config)
    opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    bs = config.effective_batch_size or len(train_idx)
    full = bs >= len(train_idx)
    batch_full = prob.data(train_idx) if full else None
    # without validation cases there is nothing to stop on: train a fixed, shorter schedule
    max_epochs = config.max_epochs if val_idx.size else min(config.max_epochs, 100)

    best_state, best_loss, best_epoch, bad = None, float("inf"), 0, 0
    val_curve: list[float] = []
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    for epoch in range(max_epochs):
        check_cancel(cancel)
        head.train()
        order = np.arange(len(train_idx)) if full else rng.permutation(len(train_idx))
        for start in range(0, len(order), bs):
            x, mask, y = batch_full if full else prob.data(train_idx[order[start : start + bs]])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))  # dropout
                loss = prob.loss_fn(head(x, mask), y)
                if config.l2 > 0:
                    loss = loss + 0.5 * config.l2 * _penalty(head)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not val_idx.size:
            continue
        v = prob.loss(head, val_idx)
        val_curve.append(v)
        if v < best_loss - 1e-6:
            best_loss, best_epoch, bad = v, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            bad += 1
            if bad >= config.patience:
                break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    history = {
        "solver": "adamw",
        "epochs": epoch + 1,
        "best_epoch": best_epoch + 1,
        "best_val_loss": best_loss if np.isfinite(best_loss) else None,
        "val_loss": val_curve,
    }
    spec = head_spec(config, input_dim(inputs), targets.out_dim)
    return TrainedHead(head.cpu(), spec, prob.t_mean, prob.t_std, history)


@torch.no_grad()
def predict_head(
    trained: TrainedHead, inputs: Inputs, idx: np.ndarray | None = None, kind: str = ""
) -> np.ndarray:
    """Task outputs: probabilities (classification), values (regression) or risk scores (survival)."""
    idx = np.arange(len(inputs)) if idx is None else idx
    head = trained.head.eval()
    outs = []
    for start in range(0, len(idx), 256):
        x, mask = make_batch(inputs, idx[start : start + 256])
        outs.append(head(x, mask).float().numpy())
    raw = np.concatenate(outs) if outs else np.zeros((0, trained.spec["out_dim"]), np.float32)
    return outputs_from_raw(raw, kind, trained.target_mean, trained.target_std)


def outputs_from_raw(raw: np.ndarray, kind: str, t_mean=None, t_std=None) -> np.ndarray:
    raw = raw.astype(np.float64)
    if kind in ("binary", "multilabel"):
        p = 1.0 / (1.0 + np.exp(-raw))
        return p[:, 0] if kind == "binary" else p
    if kind == "multiclass":
        z = raw - raw.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    if kind == "regression":
        return raw * np.asarray(t_std) + np.asarray(t_mean)
    return raw[:, 0]  # survival risk (log hazard ratio)

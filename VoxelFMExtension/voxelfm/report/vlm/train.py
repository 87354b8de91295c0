"""Two-stage training of the report model (the reference's recipe).

Stage 1: the LM is frozen; the resampler and projector learn to produce visual tokens the LM can read.
Stage 2: LoRA adapters (r 16, alpha 32 by default) on the LM's attention and MLP projections are trained
together with the head. Batches are drawn by a seeded permutation, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .config import LLAMA_PROJECTIONS, TrainConfig
from .deps import require_vlm
from .inputs import VisualTokens
from .model import ReportModel


def lora_targets(lm: torch.nn.Module, config: TrainConfig) -> list[str] | str:
    """The configured module names, else the Llama/Qwen projections the LM has, else every linear layer."""
    if config.lora_targets:
        return list(config.lora_targets)
    names = {name.rsplit(".", 1)[-1] for name, m in lm.named_modules() if isinstance(m, torch.nn.Linear)}
    found = [n for n in LLAMA_PROJECTIONS if n in names]
    return found or "all-linear"


def add_lora(model: ReportModel, config: TrainConfig) -> None:
    """Wrap the LM with LoRA adapters (peft); only the adapters are trainable in it."""
    _, peft = require_vlm()
    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=lora_targets(model.lm, config),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model.lm = peft.get_peft_model(model.lm, lora)


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    while True:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def _stage(
    model: ReportModel,
    data: tuple[Sequence[VisualTokens], Sequence[str]],
    steps: int,
    lr: float,
    config: TrainConfig,
    batches,
    report: Any,
) -> list[float]:
    params = [p for p in (*model.head.parameters(), *model.lm.parameters()) if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    visual, reports = data
    losses = []
    model.head.train()
    model.lm.train()
    for step in range(steps):
        idx = next(batches)
        loss = model.loss([visual[i] for i in idx], [reports[i] for i in idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimiser.step()
        losses.append(float(loss.detach()))
        report(step, losses[-1])
    return losses


def train_report_model(
    model: ReportModel,
    visual: Sequence[VisualTokens],
    reports: Sequence[str],
    config: TrainConfig,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> dict[str, list[float]]:
    """Train in place (stage 1, then LoRA stage 2); returns the loss of every step per stage."""
    progress = progress or no_progress
    if len(visual) != len(reports) or not reports:
        raise InputError(f"{len(visual)} images but {len(reports)} reports; give one report per image.")
    if not all(r.strip() for r in reports):
        raise InputError("Some reports are empty; every training image needs its report text.")
    torch.manual_seed(config.seed)
    batches = _batches(len(reports), config.batch_size, np.random.default_rng(config.seed))
    total = config.stage1_steps + config.stage2_steps
    history: dict[str, list[float]] = {}

    def reporter(offset: int, stage: str):
        def report(step: int, loss: float) -> None:
            check_cancel(cancel)
            progress((offset + step + 1) / total, f"{stage} step {step + 1}: loss {loss:.4f}")

        return report

    model.lm.requires_grad_(False)
    model.head.requires_grad_(True)
    if config.stage1_steps:
        history["stage1"] = _stage(
            model,
            (visual, reports),
            config.stage1_steps,
            config.lr_stage1,
            config,
            batches,
            reporter(0, "stage 1"),
        )
    if config.stage2_steps:
        add_lora(model, config)
        history["stage2"] = _stage(
            model,
            (visual, reports),
            config.stage2_steps,
            config.lr_stage2,
            config,
            batches,
            reporter(config.stage1_steps, "stage 2 (LoRA)"),
        )
    model.head.eval()
    model.lm.eval()
    return history

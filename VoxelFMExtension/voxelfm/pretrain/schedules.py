"""Per-iteration schedules: linear warmup start -> peak, then cosine peak -> end (reference semantics).

Values are a pure function of the iteration, so resuming needs only the step number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import PretrainConfig, ScheduleConfig


@dataclass(frozen=True)
class WarmupCosine:
    start: float
    peak: float
    end: float
    warmup_iters: int
    total_iters: int

    def __call__(self, it: int) -> float:
        if it < self.warmup_iters:
            return self.start + (self.peak - self.start) * it / self.warmup_iters
        span = max(self.total_iters - self.warmup_iters, 1)
        t = min(max(it - self.warmup_iters, 0), span) / span
        return self.end + 0.5 * (self.peak - self.end) * (1 + math.cos(math.pi * t))

    @classmethod
    def from_config(cls, s: ScheduleConfig, epoch_length: int, total_iters: int) -> WarmupCosine:
        warm = min(int(round(s.warmup_epochs * epoch_length)), total_iters)
        return cls(s.start, s.peak, s.end, warm, total_iters)


class Schedules:
    """lr, weight decay, EMA momentum, teacher temperature and the last-layer freeze, by iteration."""

    def __init__(self, cfg: PretrainConfig) -> None:
        n, total = cfg.train.official_epoch_length, cfg.total_iterations
        sc = cfg.schedules
        self.lr = WarmupCosine.from_config(sc.lr, n, total)
        self.weight_decay = WarmupCosine.from_config(sc.weight_decay, n, total)
        self.momentum = WarmupCosine.from_config(sc.momentum, n, total)
        self.teacher_temp = WarmupCosine.from_config(sc.teacher_temp, n, total)
        self.freeze_last_layer_iters = int(round(sc.lr.freeze_last_layer_epochs * n))

    def at(self, it: int) -> dict[str, float]:
        return {
            "lr": self.lr(it),
            "wd": self.weight_decay(it),
            "momentum": self.momentum(it),
            "teacher_temp": self.teacher_temp(it),
            "last_layer_lr_factor": 0.0 if it < self.freeze_last_layer_iters else 1.0,
        }

"""Where each finished step is reported: metrics.jsonl, the tqdm bar and the progress callback (rank 0 only).

Other ranks get a log that records nothing, so the training loop reads the same on every rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..progress import ProgressFn
from .metrics import MetricsLog

# Of the progress range, data preparation reports in [0, DATA_SHARE), the steps up to DATA_SHARE + STEP_SHARE.
DATA_SHARE, STEP_SHARE = 0.05, 0.9


class StepLog:
    def __init__(
        self,
        out: Path,
        start: int,
        stop: int,
        samples_per_step: int,
        progress: ProgressFn,
        enabled: bool,
        show_bar: bool,
    ) -> None:
        self.start, self.stop, self.samples_per_step = start, stop, samples_per_step
        self.progress = progress
        self.metrics = MetricsLog(out / "metrics.jsonl", start) if enabled else None
        self.bar = None
        if enabled and show_bar:
            self.bar = tqdm(total=stop, initial=start, desc="pretrain", dynamic_ncols=True)

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.metrics.records if self.metrics is not None else []

    def step(self, done: int, parts: dict[str, float], s: dict[str, float], dt: float) -> None:
        """Report step ``done`` (1-based): its loss parts, the schedule values ``s`` and its duration."""
        if self.metrics is None:
            return
        rate = self.samples_per_step / dt
        self.metrics.append(
            {
                "step": done,
                **{k: round(v, 6) for k, v in parts.items()},
                "lr": s["lr"],
                "wd": s["wd"],
                "momentum": s["momentum"],
                "teacher_temp": s["teacher_temp"],
                "step_time_s": round(dt, 4),
                "samples_per_s": round(rate, 3),
            }
        )
        loss = parts["loss"]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{s['lr']:.2e}", vol_s=f"{rate:.2f}")
            self.bar.update(1)
        fraction = (done - self.start) / max(self.stop - self.start, 1)
        self.progress(DATA_SHARE + STEP_SHARE * fraction, f"step {done}/{self.stop} loss {loss:.4f}")

    def close(self) -> None:
        """Close the bar (safe to call more than once)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

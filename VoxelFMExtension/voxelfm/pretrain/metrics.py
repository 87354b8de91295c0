"""Metrics JSONL (one record per step) and the loss-curve PNG, both rewritten atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files.atomic import atomic_write, atomic_write_text


class MetricsLog:
    def __init__(self, path: Path, resume_step: int) -> None:
        """Open ``path``; records after ``resume_step`` (from a run killed after its last checkpoint) are dropped."""
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path.is_file() and resume_step > 0:
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
        self._rewrite()

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def plot_loss(records: list[dict[str, Any]], path: Path) -> None:
    """Total loss and its parts against step (log y when all positive)."""
    if not records:
        return
    from matplotlib.figure import Figure  # no pyplot: never touches the GUI backend (Slicer)

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    steps = [r["step"] for r in records]
    for key in ("loss", "dino", "ibot", "koleo"):
        vals = [r.get(key) for r in records]
        if all(v is not None for v in vals):
            ax.plot(steps, vals, label=key, lw=1.5 if key == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("VoxelFM pretraining")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".png")

"""A fitted probe: head weights + everything needed to apply it to new volumes correctly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .pooling import is_token_pooling, pool, pool_all
from .train import TrainedHead, predict_head


@dataclass
class Probe:
    task: str  # classification | regression | survival
    kind: str  # binary | multiclass | multilabel | regression | survival
    target_names: list[str]
    pooling: str
    trained: TrainedHead
    class_names: list[str] | None = None
    backbone: dict[str, Any] = field(default_factory=dict)  # id, revision, sha256 of the feature model
    preprocess: dict[str, Any] = field(default_factory=dict)  # preprocessing used for the features
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def head(self) -> nn.Module:
        return self.trained.head

    def predict_inputs(self, inputs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Outputs for already-pooled inputs (see ``pooling.pool_all``)."""
        return predict_head(self.trained, inputs, kind=self.kind)

    def predict(self, features: Sequence[Any]) -> np.ndarray:
        """Outputs for VolumeFeatures(-like) objects: probabilities, values or risk scores."""
        inputs = pool_all(list(features), self.pooling)
        return self.predict_inputs(inputs)

    def predict_one(self, features: Any) -> np.ndarray:
        x = pool(features, self.pooling)
        inputs = [x] if is_token_pooling(self.pooling) else x[None]
        return self.predict_inputs(inputs)[0]

    def output_columns(self) -> list[str]:
        if self.kind == "binary":
            return [f"{self.target_names[0]}_prob", self.target_names[0]]
        if self.kind == "multiclass":
            return [f"{self.target_names[0]}_prob[{c}]" for c in self.class_names or []] + [
                self.target_names[0]
            ]
        if self.kind == "multilabel":
            return [f"{n}_prob" for n in self.target_names]
        if self.kind == "regression":
            return list(self.target_names)
        return ["risk", "risk_group"]

    def table_rows(self, outputs: np.ndarray) -> list[list[Any]]:
        """Rows matching ``output_columns`` (predicted label / risk group added where meaningful)."""
        rows: list[list[Any]] = []
        for out in outputs:
            o = np.atleast_1d(out)
            if self.kind == "binary":
                rows.append([float(o[0]), (self.class_names or ["0", "1"])[int(o[0] >= 0.5)]])
            elif self.kind == "multiclass":
                rows.append([float(v) for v in o] + [(self.class_names or [])[int(o.argmax())]])
            elif self.kind == "survival":
                cut = self.training.get("risk_median")
                group = "" if cut is None else ("high" if o[0] > cut else "low")
                rows.append([float(o[0]), group])
            else:
                rows.append([float(v) for v in o])
        return rows

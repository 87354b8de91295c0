"""Hyper-parameters of probe fitting (one dataclass, stored in the probe JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InputError
from .heads import HEAD_TYPES
from .pooling import check_pooling, is_token_pooling


@dataclass
class ProbeConfig:
    head: str = "linear"  # linear | mlp | attentive
    pooling: str | None = None  # None: "cls+mean" for linear/mlp, "tokens" for attentive
    hidden_dim: int = 256  # mlp
    dropout: float = 0.1  # mlp
    num_heads: int = 4  # attentive
    lr: float | None = None  # AdamW; None: 1e-3 (mlp), 3e-3 (attentive)
    weight_decay: float = 1e-4  # AdamW decoupled decay
    l2: float | None = None  # AdamW: L2 penalty on weight matrices; None: 0.1 (mlp), 0 (attentive)
    solver: str = "auto"  # auto (lbfgs for linear heads, else adamw) | lbfgs | adamw
    # lbfgs: L2 penalty (on the mean loss, standardised inputs) chosen on the inner validation split;
    # 1e-3 .. 1e2 spans "almost unpenalised" to "predict the mean" for typical probe data sizes.
    l2_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
    max_epochs: int = 300
    patience: int = 30  # early stopping: epochs without validation improvement
    batch_size: int | None = None  # None = full batch (vector heads); attentive defaults to 32
    val_fraction: float = 0.2  # inner validation split for early stopping
    class_weights: str = "balanced"  # balanced | none
    folds: int = 5  # k-fold cross-validation when no split/fold column is given
    seed: int = 0
    n_bootstrap: int = 1000  # resamples for 95% confidence intervals (0 = no intervals)
    knn_k: int = 10  # kNN baseline neighbours (0 = skip the baseline)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise InputError(f"Unknown probe head {self.head!r}; choose one of {', '.join(HEAD_TYPES)}.")
        if self.pooling is None:
            self.pooling = "tokens" if self.head == "attentive" else "cls+mean"
        check_pooling(self.pooling)
        if (self.head == "attentive") != is_token_pooling(self.pooling):
            raise InputError(
                f"Head {self.head!r} does not work with pooling {self.pooling!r}: the attentive head needs a "
                "token pooling ('tokens', 'tokens+cls'), linear/MLP heads a vector pooling."
            )
        if self.solver not in ("auto", "lbfgs", "adamw"):
            raise InputError("solver must be 'auto', 'lbfgs' or 'adamw'.")
        if self.solver == "lbfgs" and self.head != "linear":
            raise InputError(
                "The lbfgs solver is for linear heads only (convex); use adamw for MLP/attentive heads."
            )
        if self.lr is None:
            self.lr = 3e-3 if self.head == "attentive" else 1e-3
        if self.l2 is None:
            # a penalty on the key/value maps keeps attention from sharpening onto the few informative tokens
            self.l2 = 0.0 if self.head == "attentive" else 0.1
        self.l2_grid = tuple(float(v) for v in self.l2_grid)
        if self.class_weights not in ("balanced", "none"):
            raise InputError("class_weights must be 'balanced' or 'none'.")
        if self.folds < 2:
            raise InputError("folds must be at least 2.")
        if not 0.0 <= self.val_fraction < 0.9:
            raise InputError("val_fraction must be in [0, 0.9).")

    @property
    def effective_batch_size(self) -> int | None:
        if self.batch_size is None and self.head == "attentive":
            return 32
        return self.batch_size

    @property
    def use_lbfgs(self) -> bool:
        return self.solver == "lbfgs" or (self.solver == "auto" and self.head == "linear")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

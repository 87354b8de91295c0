"""Sizes and schedules of the report model (stored in the run's run.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from ...errors import InputError

# Llama / Qwen / Mistral names of the attention and MLP projections LoRA adapts.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


R = TypeVar("R", bound="_RunSection")


class _RunSection:
    """A section of run.json: ``to_dict`` writes it; ``from_dict`` reads it back (JSON lists as tuples, keys
    this version does not know ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any] | None) -> R:
        known = {f.name for f in fields(cls)}
        return cls(
            **{k: (tuple(v) if isinstance(v, list) else v) for k, v in (d or {}).items() if k in known}
        )


@dataclass(frozen=True)
class HeadConfig(_RunSection):
    """The perceiver resampler + projector (reference: 128 queries, latent 2048, 8 heads, one layer)."""

    num_queries: int = 128
    latent_dim: int = 2048
    num_heads: int = 8
    ff_mult: int = 4  # feed-forward width after the cross-attention, x latent_dim
    projector_hidden: int = 0  # 0: the LM's hidden size
    position_frequencies: int = 8  # Fourier features of patch positions added to the keys (0: none)
    prompt: str = "Findings:"  # text between the visual tokens and the report
    max_report_tokens: int = 256

    def __post_init__(self) -> None:
        if min(self.num_queries, self.latent_dim, self.num_heads, self.ff_mult) < 1:
            raise InputError("queries, latent size, heads and ff_mult must all be >= 1.")
        if self.latent_dim % self.num_heads:
            raise InputError(
                f"latent size {self.latent_dim} must be a multiple of the heads ({self.num_heads})."
            )


@dataclass(frozen=True)
class TrainConfig(_RunSection):
    """Two stages: 1 = resampler + projector (LM frozen); 2 = + LoRA on the LM's projections."""

    stage1_steps: int = 1000
    stage2_steps: int = 1000
    batch_size: int = 4
    lr_stage1: float = 1e-4
    lr_stage2: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ()  # () = the Llama/Qwen projections present, else every linear layer
    seed: int = 0

    def __post_init__(self) -> None:
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.stage1_steps + self.stage2_steps == 0:
            raise InputError("Give at least one training step (stage 1 and/or stage 2).")
        if self.batch_size < 1 or self.lora_r < 1:
            raise InputError("batch size and LoRA rank must be >= 1.")


@dataclass(frozen=True)
class GenerationConfig:
    strategy: str = "greedy"  # greedy | nucleus
    max_new_tokens: int = 256
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0  # nucleus sampling is reproducible for a seed

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "nucleus"):
            raise InputError(f"Generation strategy must be 'greedy' or 'nucleus', got {self.strategy!r}.")
        if not 0.0 < self.top_p <= 1.0 or self.temperature <= 0 or self.max_new_tokens < 1:
            raise InputError("Need 0 < top_p <= 1, temperature > 0 and max_new_tokens >= 1.")

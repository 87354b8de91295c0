"""The report model: ReportHead (resampler + projector) -> visual token embeddings -> a causal LM.

Input sequence: [visual tokens (num_queries)] [prompt tokens] [report tokens] [eos]; the loss is the LM's
next-token loss on the report and eos only. Generation feeds the visual tokens and the prompt, then decodes
greedily or by nucleus sampling (seeded), with the LM's key/value cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

from ...errors import InputError
from .config import GenerationConfig, HeadConfig
from .inputs import VisualTokens, collate
from .resampler import ReportHead

IGNORE = -100


def _cache_name(lm: Any) -> str:
    """The LM's key/value-cache argument: 'cache' (transformers >= 5.2x) or 'past_key_values' (earlier)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    return output.get("cache", None) or output.get("past_key_values", None)


class ReportModel:
    def __init__(self, head: ReportHead, lm: Any, tokenizer: Any, config: HeadConfig) -> None:
        self.head, self.lm, self.tokenizer, self.config = head, lm, tokenizer, config
        if tokenizer.eos_token_id is None:
            raise InputError(
                "The tokenizer has no end-of-sequence token; set one (eos_token) and save it again."
            )
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @property
    def device(self) -> torch.device:
        return next(self.head.parameters()).device

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(ids)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prefix(self, visual: Sequence[VisualTokens]) -> torch.Tensor:
        """[B, queries + prompt, H]: visual embeddings then the prompt's token embeddings."""
        tokens, mask, positions = collate(visual, self.device)
        embeds = self._embed(torch.zeros(1, 1, dtype=torch.long, device=self.device))
        vis = self.head(tokens, mask, positions).to(embeds.dtype)
        prompt = self._ids(self.config.prompt) if self.config.prompt else []
        if not prompt:
            return vis
        p = self._embed(torch.tensor([prompt], device=self.device)).expand(len(visual), -1, -1)
        return torch.cat([vis, p], dim=1)

    def loss(self, visual: Sequence[VisualTokens], reports: Sequence[str]) -> torch.Tensor:
        """Mean next-token loss on the report tokens (+ eos) of a batch."""
        eos = self.tokenizer.eos_token_id
        ids = [self._ids(r)[: self.config.max_report_tokens] + [eos] for r in reports]
        t_max = max(len(i) for i in ids)
        text = torch.full((len(ids), t_max), self.pad_id, dtype=torch.long, device=self.device)
        labels = torch.full((len(ids), t_max), IGNORE, dtype=torch.long, device=self.device)
        for b, row in enumerate(ids):
            text[b, : len(row)] = torch.tensor(row)
            labels[b, : len(row)] = torch.tensor(row)
        prefix = self.prefix(visual)
        inputs = torch.cat([prefix, self._embed(text)], dim=1)
        attention = torch.cat(
            [torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device), (labels != IGNORE).long()], 1
        )
        full_labels = torch.cat(
            [torch.full(prefix.shape[:2], IGNORE, dtype=torch.long, device=self.device), labels], 1
        )
        return self.lm(inputs_embeds=inputs, attention_mask=attention, labels=full_labels).loss

    @torch.no_grad()
    def generate(self, visual: VisualTokens, config: GenerationConfig | None = None) -> str:
        """Report text for one volume (greedy, or nucleus sampling with ``config.seed``)."""
        config = config or GenerationConfig()
        was_training = self.head.training
        self.head.eval()
        self.lm.eval()
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        cache_arg = _cache_name(self.lm)
        inputs = self.prefix([visual])
        length, cache, out_ids = inputs.shape[1], None, []
        for _ in range(config.max_new_tokens):
            attention = torch.ones(1, length, dtype=torch.long, device=self.device)
            output = self.lm(
                inputs_embeds=inputs, attention_mask=attention, use_cache=True, **{cache_arg: cache}
            )
            cache = _cache_of(output)
            token = _next_token(output.logits[0, -1].float().cpu(), config, generator)
            if token == self.tokenizer.eos_token_id:
                break
            out_ids.append(token)
            inputs = self._embed(torch.tensor([[token]], device=self.device))
            length += 1
        self.head.train(was_training)
        return self.tokenizer.decode(out_ids, skip_special_tokens=True).strip()


def _next_token(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator) -> int:
    if config.strategy == "greedy":
        return int(logits.argmax())
    probs = torch.softmax(logits / config.temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    keep = sorted_p.cumsum(0) - sorted_p < config.top_p  # the smallest set whose mass reaches top_p
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    pick = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
    return int(order[pick])

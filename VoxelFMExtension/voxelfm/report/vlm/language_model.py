"""Load any causal LM and its tokenizer from `transformers` (a local folder or a cached hub id)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ...errors import InputError
from .deps import require_vlm


def _reference(source: str | os.PathLike) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source)


def load_language_model(
    source: str | os.PathLike,
    tokenizer: str | os.PathLike | None = None,
    device: str = "cpu",
    dtype: Any = None,
) -> tuple[Any, Any, str]:
    """(LM, tokenizer, resolved reference). The tokenizer defaults to the LM's own folder / id."""
    transformers, _ = require_vlm()
    reference = _reference(source)
    tok_reference = _reference(tokenizer) if tokenizer else reference
    try:
        tok = transformers.AutoTokenizer.from_pretrained(tok_reference)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Cannot load a tokenizer from {tok_reference!r} ({str(exc).splitlines()[0]}); give a folder saved "
            "with save_pretrained (tokenizer.json) or a cached hub id, or pass --tokenizer."
        ) from exc
    try:
        kwargs = {"dtype": dtype} if dtype is not None else {}
        lm = transformers.AutoModelForCausalLM.from_pretrained(reference, **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"Cannot load a causal language model from {reference!r} ({str(exc).splitlines()[0]}); give a "
            "folder saved with save_pretrained or a hub id that is cached (there is no download here)."
        ) from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return lm.to(device), tok, reference


def hidden_size(lm: Any) -> int:
    return int(lm.get_input_embeddings().weight.shape[1])

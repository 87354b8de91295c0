"""`voxelfm report-train MANIFEST --lm LM --out RUN`: train the report model (resampler + projector + LoRA).

MANIFEST (CSV/TSV/JSONL): column 'image' (path relative to the manifest) and the report text in 'report' (or
a text file in 'report_file'); reports are best rewritten as short abnormal-findings sections ("Lungs: ...").
LM: any causal LM `transformers` loads (a local folder or a cached hub id); it stays frozen in stage 1 and
gets LoRA adapters in stage 2. Needs the optional extra: pip install voxelfm[vlm].
"""

from __future__ import annotations

import argparse

from . import options
from .common import add_model_and_feature_args, command, deferred
from .outputs import add_overwrite_arg


@command("report-train", deferred("report_train_run", "run"))
def arguments(p: argparse.ArgumentParser) -> None:
    """train the report model (perceiver resampler + projector + LoRA) from images and reports"""
    p.add_argument("manifest", help="CSV / TSV / JSONL with 'image' and 'report' (or 'report_file')")
    p.add_argument("--lm", required=True, help="causal LM: a save_pretrained folder or a cached hub id")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder / id (default: the LM's)")
    p.add_argument(
        "--out", required=True, help="new run folder (run.json, head.safetensors, adapter/, tokenizer/)"
    )
    p.add_argument(
        "--stage1-steps", type=options.non_negative_int, default=1000, help="resampler+projector steps"
    )
    p.add_argument(
        "--stage2-steps", type=options.non_negative_int, default=1000, help="+ LoRA steps (0 = none)"
    )
    p.add_argument("--batch-size", type=options.positive_int, default=4)
    p.add_argument("--lr-stage1", type=options.positive_float, default=1e-4)
    p.add_argument("--lr-stage2", type=options.positive_float, default=5e-5)
    p.add_argument(
        "--queries", type=options.positive_int, default=128, help="resampler queries (visual tokens)"
    )
    p.add_argument("--latent", type=options.positive_int, default=2048, help="resampler latent size")
    p.add_argument("--heads", type=options.positive_int, default=8, help="cross-attention heads")
    p.add_argument("--lora-r", type=options.positive_int, default=16)
    p.add_argument("--lora-alpha", type=options.positive_int, default=32)
    p.add_argument("--max-report-tokens", type=options.positive_int, default=256)
    p.add_argument("--prompt", default="Findings:", help="text between the visual tokens and the report")
    p.add_argument("--seed", type=options.non_negative_int, default=0)
    add_model_and_feature_args(p)
    add_overwrite_arg(p)

"""A trained report model on disk: a run folder (``files.run_folder``: marker first, a user's folder refused).

    RUN/run.json            format, head + training configs, LM reference, backbone identity, preprocessing,
                            feature size, loss history (written last: a run without it is incomplete)
    RUN/head.safetensors    resampler + projector weights
    RUN/adapter/            LoRA adapters (peft), when stage 2 ran
    RUN/tokenizer/          the tokenizer (save_pretrained)

The base LM is referenced (folder or hub id), not copied: a 4B LM would dwarf the run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch

from ...errors import CheckpointError, InputError
from ...files.atomic import atomic_write, atomic_write_text
from ...files.documents import read_mapping
from ...files.run_folder import claim_run_folder, foreign_entries
from .config import HeadConfig
from .deps import require_vlm
from .language_model import hidden_size, load_language_model
from .model import ReportModel
from .resampler import ReportHead

RUN_FORMAT = "voxelfm-report-vlm"
RUN_FORMAT_VERSION = 1
RUN_JSON, HEAD_FILE, ADAPTER_DIR, TOKENIZER_DIR = "run.json", "head.safetensors", "adapter", "tokenizer"


RUN_KIND = "report-vlm"
RUN_ENTRIES = (RUN_JSON, HEAD_FILE, ADAPTER_DIR, TOKENIZER_DIR)


def _replace_dir(writer, target: Path) -> None:
    """``writer(tmp_folder)`` then rename it to ``target`` (an earlier one of ours is replaced whole)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        writer(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_run(model: ReportModel, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write a run into ``path``: a new or empty folder, or a report-model run folder (its marker first, run.json
    last, each entry atomically); a folder holding anything else is refused."""
    path = Path(path)
    if path.exists() and (
        not path.is_dir() or (any(path.iterdir()) and foreign_entries(path, RUN_KIND, RUN_ENTRIES))
    ):
        raise InputError(f"{path} is not a new, empty or report-model run folder; choose a new --out folder.")
    claim_run_folder(path, RUN_KIND)
    state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    atomic_write(path / HEAD_FILE, lambda tmp: safetensors.torch.save_file(state, str(tmp)), ".safetensors")
    _replace_dir(model.tokenizer.save_pretrained, path / TOKENIZER_DIR)
    lora = hasattr(model.lm, "peft_config")
    if lora:
        _replace_dir(model.lm.save_pretrained, path / ADAPTER_DIR)
    record = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, **meta, "lora": lora}
    atomic_write_text(path / RUN_JSON, json.dumps(record, indent=2) + "\n")
    return path


def read_run_meta(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    js = path / RUN_JSON
    if not js.is_file():
        raise InputError(
            f"{path} is not a report-model run (no {RUN_JSON}); train one with `voxelfm report-train`."
        )
    meta = read_mapping(
        js, CheckpointError, "report-model run file", "train the run again (`voxelfm report-train`)"
    )
    if meta.get("format") != RUN_FORMAT or meta.get("format_version", 0) > RUN_FORMAT_VERSION:
        raise CheckpointError(f"{js}: not a {RUN_FORMAT} run of a version this voxelfm reads.")
    for key in ("head", "lm", "feature_dim"):
        if key not in meta:
            raise CheckpointError(f"{js}: field {key!r} is missing; the run is incomplete.")
    return meta


def load_run(path: str | os.PathLike, device: str = "cpu") -> tuple[ReportModel, dict[str, Any]]:
    """The trained model of a run (base LM from its reference + adapters + head), in eval mode."""
    _, peft = require_vlm()
    path = Path(path)
    meta = read_run_meta(path)
    lm, tok, _ = load_language_model(meta["lm"]["source"], path / TOKENIZER_DIR, device)
    if meta.get("lora"):
        lm = peft.PeftModel.from_pretrained(lm, str(path / ADAPTER_DIR))
    config = HeadConfig.from_dict(meta["head"])
    head = ReportHead(int(meta["feature_dim"]), hidden_size(lm), config)
    try:
        head.load_state_dict(safetensors.torch.load_file(str(path / HEAD_FILE)), strict=True)
    except (RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path / HEAD_FILE} does not fit the head in {RUN_JSON}: {exc}") from exc
    model = ReportModel(head.to(device).eval(), lm.eval(), tok, config)
    return model, meta

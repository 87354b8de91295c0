"""The report model (perceiver resampler + projector + LoRA on a causal LM) with a tiny random LM.

The LM is a 2-layer Qwen2 built from a config and the tokenizer is trained here on the test reports with the
`tokenizers` library (no hub). Proves: two-stage training runs and the loss falls on a repeated batch, the
model generates text, a saved run reloads and generates the same text, and without the extra the error
names `pip install voxelfm[vlm]`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelfm.errors import InputError

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

from voxelfm.report.vlm.config import GenerationConfig, HeadConfig, TrainConfig  # noqa: E402
from voxelfm.report.vlm.inputs import VisualTokens, visual_tokens  # noqa: E402

torch.set_num_threads(1)

REPORTS = [
    "Lungs: Lung nodule in the right upper lobe. Heart: No cardiomegaly.",
    "Lungs: No lung nodule. Pleural effusion on the left. Heart: Cardiomegaly.",
]
SMALL_HEAD = HeadConfig(num_queries=4, latent_dim=32, num_heads=2, ff_mult=2, max_report_tokens=64)


def build_tiny_lm(folder, texts=REPORTS):
    """A 2-layer Qwen2 causal LM (random weights) + a byte-level BPE tokenizer trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts) * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        initializer_range=0.3,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


def fake_visual(seed: int, c: int = 24) -> VisualTokens:
    rng = np.random.default_rng(seed)
    feats = {"patch": rng.normal(size=(2, 3, 2, c)).astype(np.float32)}
    return visual_tokens(feats)


def _model(tiny_lm):
    from voxelfm.report.vlm.language_model import hidden_size, load_language_model
    from voxelfm.report.vlm.model import ReportModel
    from voxelfm.report.vlm.resampler import ReportHead

    lm, tok, _ = load_language_model(tiny_lm)
    torch.manual_seed(0)
    return ReportModel(ReportHead(24, hidden_size(lm), SMALL_HEAD), lm, tok, SMALL_HEAD)


def test_visual_tokens_carry_grid_positions():
    v = fake_visual(0)
    assert v.tokens.shape == (12, 24) and v.positions.shape == (12, 3)
    assert v.positions.min() == 0.0 and v.positions.max() == 1.0
    with pytest.raises(InputError, match="patch-feature grid"):
        visual_tokens({"patch": np.zeros((0, 2, 2, 4), np.float32)})


def test_two_stage_training_lowers_the_loss_and_the_run_reloads_identically(tiny_lm, tmp_path):
    from voxelfm.report.vlm.run_files import load_run, save_run
    from voxelfm.report.vlm.train import train_report_model

    model = _model(tiny_lm)
    visual = [fake_visual(1), fake_visual(2)]
    config = TrainConfig(
        stage1_steps=10, stage2_steps=20, batch_size=2, lr_stage1=1e-2, lr_stage2=1e-2, lora_dropout=0.0
    )
    history = train_report_model(model, visual, REPORTS, config)
    s1, s2 = history["stage1"], history["stage2"]
    print(f"stage 1 loss {s1[0]:.3f} -> {s1[-1]:.3f}; stage 2 (LoRA) loss {s2[0]:.3f} -> {s2[-1]:.3f}")
    assert s1[-1] < 0.9 * s1[0] and s2[-1] < 0.5 * s1[0]  # the same two cases every step: the loss falls
    assert hasattr(model.lm, "peft_config")  # stage 2 wrapped the LM with LoRA adapters
    lora = {n for n, p in model.lm.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)  # only adapters train in the LM

    text = model.generate(visual[0], GenerationConfig(max_new_tokens=40))
    assert text.startswith("Lungs:")  # it learned the reports' form
    sampled = model.generate(
        visual[0], GenerationConfig(strategy="nucleus", top_p=0.9, seed=3, max_new_tokens=20)
    )
    assert sampled == model.generate(
        visual[0], GenerationConfig(strategy="nucleus", top_p=0.9, seed=3, max_new_tokens=20)
    )

    run = save_run(
        model,
        tmp_path / "run",
        {"head": SMALL_HEAD.to_dict(), "lm": {"source": str(tiny_lm)}, "feature_dim": 24},
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    with pytest.raises(InputError, match="not a new, empty or report-model run folder"):
        save_run(model, tmp_path / "mine", {"head": {}, "lm": {}, "feature_dim": 24})
    again, meta = load_run(run)
    assert meta["lora"] is True
    assert again.generate(visual[0], GenerationConfig(max_new_tokens=40)) == text


def test_nucleus_keeps_only_the_top_mass():
    from voxelfm.report.vlm.model import _next_token

    logits = torch.tensor([5.0, 4.9, -20.0, -20.0])
    g = torch.Generator().manual_seed(0)
    picks = {_next_token(logits, GenerationConfig(strategy="nucleus", top_p=0.9), g) for _ in range(50)}
    assert picks == {0, 1}
    assert _next_token(logits, GenerationConfig(), g) == 0


def test_missing_extra_names_the_pip_command(monkeypatch):
    import importlib.util

    from voxelfm.report.vlm import deps

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    with pytest.raises(deps.MissingExtraError, match=r"pip install voxelfm\[vlm\]"):
        deps.require_vlm()
    assert not deps.vlm_available()


def test_report_train_and_report_with_the_run(tiny_lm, tmp_path, capsys):
    """`voxelfm report-train` writes a run; `voxelfm report IMAGE --vlm RUN --json` drafts with it."""
    import json

    from report_cases import planted_ct, tiny_backbone

    from voxelfm.cli.main import main
    from voxelfm.imaging.io import write_volume

    backbone, other = tiny_backbone(tmp_path / "tiny"), tiny_backbone(tmp_path / "other", seed=1)
    rows = ["image,report"]
    for n, text in enumerate(REPORTS):
        write_volume(planted_ct(n == 0, n == 1, seed=n), tmp_path / f"ct{n}.nii.gz")
        rows.append(f'ct{n}.nii.gz,"{text}"')
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    model = ["--model", str(backbone), "--device", "cpu"]
    csv, run = str(tmp_path / "train.csv"), str(tmp_path / "run")
    report_train = ["report-train", csv, "--lm", str(tiny_lm), "--out", run]
    train = [*report_train, "--stage1-steps", "5", "--stage2-steps", "10", "--batch-size", "2"]
    train += ["--queries", "4", "--latent", "32", "--heads", "2"]
    train += ["--lr-stage1", "1e-2", "--lr-stage2", "1e-2", *model]
    assert main(train) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["lora"] and meta["head"]["num_queries"] == 4 and len(meta["history"]["stage2"]) == 10
    capsys.readouterr()
    image = str(tmp_path / "ct0.nii.gz")
    assert main(["report", image, "--vlm", run, "--json", "--max-new-tokens", "30", *model]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sentences"] and all(s["evidence"][0]["kind"] == "vlm" for s in data["sentences"])
    assert main(["report", image, "--vlm", run, "--model", str(other), "--device", "cpu"]) == 2
    assert "fitted on" in capsys.readouterr().err
    assert main([*report_train, "--latent", "30", "--heads", "4"]) == 2

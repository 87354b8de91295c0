"""The model panel's Qt-free state (VoxelFMLib.model_panel_state), the token-budget estimate and the Hub probe.

Hub models come from a Hugging Face cache built by hand in tmp (hub_fixtures); downloads are a fake
``hf_hub_download`` that drives huggingface_hub's ``tqdm_class`` hook like the real one; the reachability
probe is tried only against a closed loopback port. Nothing here reaches the network.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hub_fixtures import COMMIT, bundled_entry, hub_entry, isolated_registry, make_hub_cache

from voxelfm.errors import CancelledError, IntegrityError
from voxelfm.hub import download as hub
from voxelfm.hub.registry import load_registry
from VoxelFMLib import token_budget
from VoxelFMLib.model_panel_state import ModelPanelState, effective_device

REPO = "testowner/fake-voxelfm"
CKPT, CFG = "vitb_3d/checkpoints/99999.pth", "vitb_3d/config.yaml"
CKPT_BYTES, CFG_BYTES = b"fake checkpoint " * 5000, b"student:\n  arch: vit_base\n"
TINY_CONFIG = b'{"architecture": {"embed_dim": 216, "depth": 6}, "preprocess": {"min_spacing": 1.5}}'


@pytest.fixture
def registry(tmp_path, monkeypatch):
    entries = [
        hub_entry("big", REPO, {"checkpoint": (CKPT, CKPT_BYTES), "config": (CFG, CFG_BYTES)}),
        bundled_entry(
            "small",
            "models/small",
            {"weights": ("model.safetensors", b"w" * 64), "config": ("config.json", TINY_CONFIG)},
        ),
    ]
    path = isolated_registry(tmp_path, monkeypatch, entries, preference=["big", "small"])
    folder = tmp_path / "Resources" / "models" / "small"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 64)
    (folder / "config.json").write_bytes(TINY_CONFIG)
    return load_registry(path)


def _online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")


def fake_hub_download(content, seen_progress=None, chunks=4):
    """Like hf_hub_download: streams through ``tqdm_class`` (if given), then stores the file in the cache."""

    def download(
        repo_id, filename, revision=None, cache_dir=None, local_files_only=False, tqdm_class=None, **kw
    ):
        data = content[filename]
        if tqdm_class is not None:
            bar = tqdm_class(total=len(data), unit="B")
            for _ in range(chunks):
                bar.update(len(data) // chunks)
            bar.close()
        repo = make_hub_cache(Path(cache_dir), repo_id, {filename: data})
        return str(repo / "snapshots" / COMMIT / filename)

    return download


# ---------------------------------------------------------------- states the panel shows


def test_choices_and_states_of_registry_and_local_models(registry, tmp_path, monkeypatch):
    state = ModelPanelState(registry, unreachable=lambda: "")
    assert [r for r, _ in state.choices()] == ["", "big", "small"]
    small = state.status("small")
    assert small.ready and not small.needs_download and "bundled" in small.text and "verified" in small.text
    offline = state.status("big")  # HF_HUB_OFFLINE=1 (the test default)
    assert not offline.ready and not offline.needs_download
    assert "HF_HUB_OFFLINE=1" in offline.text and "\n" not in offline.text  # one line ...
    assert f"hf download {REPO}" in offline.instructions  # ... then how to install by hand
    _online(monkeypatch)
    online = state.status("big")
    assert online.needs_download and not online.ready and "asks first" in online.text
    local = tmp_path / "mine"
    local.mkdir()
    (local / "model.safetensors").write_bytes(b"x")
    assert state.status(str(local)).ready and "safetensors" in state.status(str(local)).text
    missing = state.status(str(tmp_path / "nothing.pth"))
    assert not missing.ready and "does not exist" in missing.text


def test_default_policy_says_which_model_it_will_use(registry, monkeypatch):
    _online(monkeypatch)
    reachable = ModelPanelState(registry, unreachable=lambda: "").status("")
    assert reachable.model_id == "big" and reachable.needs_download
    down = ModelPanelState(registry, unreachable=lambda: "the Hugging Face Hub x is unreachable (refused)")
    fallback = down.status("")
    assert fallback.model_id == "small" and fallback.ready
    assert "big is not available" in fallback.text and "unreachable" in fallback.text


def test_unreachable_hub_is_one_line_and_the_instructions(registry, monkeypatch):
    _online(monkeypatch)
    state = ModelPanelState(
        registry, unreachable=lambda: "the Hugging Face Hub http://127.0.0.1:9 is unreachable"
    )
    status = state.status("big")
    assert not status.needs_download and "unreachable" in status.text and "\n" not in status.text
    assert "hf download" in status.instructions and str(hub.repo_cache_folder(REPO)) in status.instructions


# ---------------------------------------------------------------- download: consent, progress, cancel, sha256


def test_download_after_consent_reports_progress_and_is_verified(registry, monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download", fake_hub_download({CKPT: CKPT_BYTES, CFG: CFG_BYTES})
    )
    state = ModelPanelState(registry, unreachable=lambda: "")
    status = state.status("big")
    consent = state.consent_text(status)
    assert (
        REPO in consent
        and CKPT in consent
        and f"{(len(CKPT_BYTES) + len(CFG_BYTES)) / 1e6:.0f} MB" in consent
    )
    fractions: list[float] = []
    resolved = state.download(status, progress=lambda f, m="": fractions.append(f))
    assert resolved.verified and resolved.source == "hub-download"
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 4  # byte progress
    assert state.status("big").ready  # cached now


def test_cancel_stops_the_download(registry, monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download", fake_hub_download({CKPT: CKPT_BYTES, CFG: CFG_BYTES})
    )
    state = ModelPanelState(registry, unreachable=lambda: "")
    cancel = threading.Event()

    def progress(fraction, message=""):
        if fraction > 0.1:
            cancel.set()  # the user pressed Cancel while bytes arrive

    with pytest.raises(CancelledError):
        state.download(state.status("big"), progress=progress, cancel=cancel)
    assert not state.status("big").ready


def test_a_download_with_wrong_content_is_refused(registry, monkeypatch):
    _online(monkeypatch)
    tampered = {CKPT: b"X" + CKPT_BYTES[1:], CFG: CFG_BYTES}
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hub_download(tampered))
    state = ModelPanelState(registry, unreachable=lambda: "")
    with pytest.raises(IntegrityError, match="sha256"):
        state.download(state.status("big"))


# ---------------------------------------------------------------- the Hub probe: fast and one line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def test_unreachable_hub_fails_fast_with_one_line(registry, monkeypatch, caplog):
    monkeypatch.setattr(hub, "probe", hub.connect_probe)  # the real TCP probe (conftest disables it)
    monkeypatch.setattr(hub, "_probe_memo", {})
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    _online(monkeypatch)
    calls = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: calls.append(1))
    start = time.monotonic()
    with pytest.raises(hub.ModelNotAvailableError) as info:
        hub.resolve_model_files("big")
    assert time.monotonic() - start < hub.PROBE_TIMEOUT_S + 1  # no retries with backoff
    assert calls == []  # huggingface_hub was never asked (its retries print a warning each)
    first = str(info.value).splitlines()[0]
    assert "127.0.0.1" in first and "unreachable" in first and "refused" in first
    resolved, reason = hub.resolve_default_model()
    assert resolved.id == "small" and "unreachable" in reason and "\n" not in reason
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) <= 1


def test_probe_goes_through_a_configured_proxy(monkeypatch):
    seen = []
    monkeypatch.setattr(hub, "probe", lambda host, port, timeout: seen.append((host, port)) or "refused")
    monkeypatch.setattr(hub, "_probe_memo", {})
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    reason = hub.hub_unreachable_reason("https://hub.invalid")
    assert seen == [("127.0.0.1", 3128)] and "through the proxy 127.0.0.1:3128" in reason
    assert hub.hub_unreachable_reason("https://hub.invalid") == reason and len(seen) == 1  # memoised


# ---------------------------------------------------------------- token budget: tokens, time, memory


def test_prepared_grid_follows_the_preprocessing_rule():
    assert token_budget.prepared_grid((48, 512, 512), (5.0, 0.57, 0.57), 0.75) == (22, 27, 27)
    assert token_budget.prepared_grid((28, 28, 28), (1.0, 1.0, 1.0), 1.5) == (2, 2, 2)  # isotropic: kept
    torch = pytest.importorskip("torch")  # the core rule (imports torch) must agree with the copy
    from voxelfm.imaging.preprocess import isotropic_shape

    torch.set_num_threads(1)
    for shape, spacing, floor in [
        ((48, 512, 512), (5.0, 0.57, 0.57), 0.75),
        ((30, 101, 122), (3, 2, 2), 1.5),
    ]:
        new, _ = isotropic_shape(shape, spacing, floor)
        assert token_budget.prepared_grid(shape, spacing, floor) == tuple(n // 14 for n in new)


def test_estimate_scales_with_budget_and_model():
    shape, spacing = (48, 512, 512), (5.0, 0.57, 0.57)
    one = token_budget.estimate(shape, spacing, 65536)
    tiled = token_budget.estimate(shape, spacing, 4096)
    assert one.tiles == 1 and one.tokens_per_tile == one.tokens == 22 * 27 * 27
    assert tiled.tiles > 1 and tiled.tokens_per_tile <= 4096 and tiled.peak_mb < one.peak_mb
    assert tiled.seconds < one.seconds  # attention grows faster than linearly in the tile size
    tiny = token_budget.Architecture(216, 6, 3_400_000, 1.5)
    small = token_budget.estimate(shape, spacing, 8192, tiny)
    assert small.tokens < one.tokens and small.seconds < one.seconds / 10 and small.peak_mb < 600
    assert token_budget.estimate(shape, spacing, 8192, device="cuda").seconds is None  # not measured
    assert "not measured for cuda" in token_budget.estimate(shape, spacing, 8192, device="cuda").summary()
    assert "peak memory about" in one.summary() and "min" in one.summary()


def test_costs_are_the_speed_table_and_overhead_measurements():
    """The constants reproduce Testing/Benchmarks/results/speed_table.md and features_overhead.md."""
    # forward: the quieter run's two rows, exactly, and the FLOP rates the table reports (66 / 51 GFLOP/s)
    assert token_budget.forward_seconds(3971) == pytest.approx(23.0)
    assert token_budget.forward_seconds(8064) == pytest.approx(87.2)
    assert token_budget.forward_rate(3971) / 1e9 == pytest.approx(66.5, abs=0.1)
    assert token_budget.forward_rate(8064) / 1e9 == pytest.approx(51.3, abs=0.1)
    assert token_budget.VIT_B.forward_flops(25920) / 1e12 == pytest.approx(33.6, abs=0.1)  # "33.6 TFLOP"
    # 25.9k tokens at the quieter rate: the table's own reading, "5-11 minutes"
    assert 5 * 60 <= token_budget.forward_seconds(25920) <= 11 * 60
    # time outside the forward that Slicer still pays: features_overhead.md stages scaled to the quieter run
    assert token_budget.OVERHEAD_SECONDS == pytest.approx(10.17 * 87.2 / 447.71)
    # peak memory: runtime + weights + the POPI CT's copies + activations give every SDPA fp32 row within 10 %
    fixed = token_budget.RUNTIME_MB + 4 * token_budget.VIT_B.parameters / 2**20
    ct_mb = token_budget.CT_BYTES_PER_VOXEL * token_budget.MEASURED_CT_VOXELS / 2**20
    for tokens, measured_mb in token_budget.MEASURED_PEAK_MB:
        predicted = fixed + ct_mb + token_budget.ACTIVATION_MB * 864 * tokens
        assert predicted == pytest.approx(measured_mb, rel=0.1), tokens
    assert 6e-5 < token_budget.ACTIVATION_MB < 6.5e-5 and 10 < token_budget.CT_BYTES_PER_VOXEL < 14
    # the POPI CT itself (512x512x141, 0.98 x 0.98 x 2 mm: 25,920 tokens) in one pass: its 2488 MB row
    popi = token_budget.estimate((141, 512, 512), (2.0, 0.98, 0.98), 32768)
    assert popi.tokens == 25920 and popi.tiles == 1
    assert popi.peak_mb == pytest.approx(2488, rel=0.05)


def test_auto_budget_is_the_machines_budget():
    from voxelfm.features.tiling import default_max_tokens

    eight_gb = 8 * 2**30
    assert token_budget.resolve_max_tokens(0) == default_max_tokens()
    assert token_budget.resolve_max_tokens(0, eight_gb) == default_max_tokens(eight_gb) == 22528
    assert token_budget.resolve_max_tokens(4096, eight_gb) == 4096  # an explicit budget is kept
    assert token_budget.resolve_max_tokens(10) == token_budget.MIN_TOKENS
    assert token_budget.budget_text(0, eight_gb) == "auto (22528 tokens: this machine's budget)"
    assert token_budget.budget_text(8192) == "8192 tokens"
    shape, spacing = (141, 512, 512), (2.0, 0.98, 0.98)  # the POPI CT: 25,920 tokens
    auto = token_budget.estimate(shape, spacing, 0, memory_bytes=eight_gb)
    assert auto.auto and auto.max_tokens == 22528 and auto.tiles > 1  # 25.9k > 22.5k: tiles on 8 GB
    assert "auto budget 22528 tokens (this machine's)" in auto.summary()
    big = token_budget.estimate(shape, spacing, 0, memory_bytes=64 * 2**30)
    assert big.max_tokens == 32768 and big.tiles == 1 and big.tokens == 25920  # one pass on 64 GB
    explicit = token_budget.estimate(shape, spacing, 8192)
    assert not explicit.auto and "auto" not in explicit.summary()


def test_panel_default_budget_is_auto():
    """The model panel's parameter pack defaults to AUTO and accepts it (static: the pack needs Slicer)."""
    import ast

    panel = Path(__file__).resolve().parents[2] / "VoxelFMExtension" / "VoxelFMWidgets" / "model_panel.py"
    pack = next(
        n
        for n in ast.parse(panel.read_text()).body
        if isinstance(n, ast.ClassDef) and n.name == "ModelParameters"
    )
    field = next(s for s in pack.body if isinstance(s, ast.AnnAssign) and s.target.id == "maxTokens")
    assert ast.literal_eval(field.value) == token_budget.AUTO
    within = next(a for a in field.annotation.slice.elts[1:] if a.func.id == "WithinRange")
    assert [ast.literal_eval(a) for a in within.args] == [token_budget.AUTO, token_budget.MAX_TOKENS]


def test_status_of_a_fallback_model(registry, monkeypatch):
    """What a capability loads when the panel names none (a case library's own model) is checked instead."""
    _online(monkeypatch)
    state = ModelPanelState(registry, unreachable=lambda: "")
    assert state.status("").model_id == "big" and state.status("").needs_download  # the default policy
    fallback = state.status("", fallback="small")
    assert fallback.model_id == "small" and fallback.ready and not fallback.needs_download
    assert state.status("big", fallback="small").model_id == "big"  # the panel's choice wins
    monkeypatch.setenv("VOXELFM_MODEL", "big")
    assert state.status("", fallback="small").model_id == "small"  # as RetrievalPipeline.spec_for


def test_panel_budget_uses_the_chosen_models_architecture(registry):
    state = ModelPanelState(registry, unreachable=lambda: "")
    assert state.architecture("small").embed_dim == 216 and state.architecture("small").min_spacing == 1.5
    assert state.architecture("big") == token_budget.VIT_B  # no config in the registry: ViT-B assumed
    a = state.budget((48, 512, 512), (5.0, 0.57, 0.57), 8192, "small", "cpu")
    b = state.budget((48, 512, 512), (5.0, 0.57, 0.57), 8192, "big", "cpu")
    assert a.tokens < b.tokens and a.seconds < b.seconds
    assert effective_device("cpu") == "cpu" and effective_device("auto") in ("cpu", "cuda")
    assert np.isfinite(a.peak_mb)

"""Registry parsing/validation, the default-model policy, hash pinning and the `voxelfm models` command."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hub_fixtures import (
    bundled_entry,
    hub_entry,
    isolated_registry,
    make_hub_cache,
    sha256_bytes,
)

from voxelfm.cli.main import main
from voxelfm.errors import InputError, IntegrityError, ModelNotAvailableError
from voxelfm.hub import download as hub
from voxelfm.hub import registry

REPO_ROOT = Path(__file__).resolve().parents[2]
CKPT, CFG = "run/checkpoints/99.pth", "run/config.yaml"
CKPT_BYTES, CFG_BYTES = b"ckpt" * 500, b"cfg: 1\n"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    entries = [
        hub_entry("big", "owner/big", {"checkpoint": (CKPT, CKPT_BYTES), "config": (CFG, CFG_BYTES)}),
        bundled_entry(
            "small", "models/small", {"weights": ("model.safetensors", None), "config": ("config.json", None)}
        ),
    ]
    isolated_registry(tmp_path, monkeypatch, entries, preference=["big", "small"])
    return tmp_path


def _make_small(env: Path) -> Path:
    folder = env / "Resources" / "models" / "small"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"tiny weights")
    (folder / "config.json").write_text("{}")
    return folder


def test_shipped_registry_is_valid_and_describes_both_models():
    reg = registry.load_registry(REPO_ROOT / "Resources" / "models.json")
    vitb, tiny = reg.get("voxelfm-vitb"), reg.get("voxelfm-tiny")
    assert reg.default_preference == ("voxelfm-vitb", "voxelfm-tiny")
    assert vitb.source == "hub" and vitb.hub_repo == "rmaguado/voxelFM" and vitb.format == "official-pth"
    assert vitb.files["checkpoint"].path == "vitb_3d/checkpoints/99999.pth"
    assert vitb.files["config"].path == "vitb_3d/config.yaml"
    arch = vitb.architecture
    assert (
        arch["embed_dim"],
        arch["depth"],
        arch["num_heads"],
        arch["patch_size"],
        arch["num_register_tokens"],
    ) == (
        864,
        12,
        12,
        14,
        4,
    )
    assert not vitb.revision_pinned and not vitb.verified  # honest: unknown until the Hub can be reached
    assert (
        tiny.source == "bundled" and tiny.format == "voxelfm-safetensors" and tiny.weights_role == "weights"
    )
    assert set(tiny.files) == {"weights", "config", "model_card"}


BASE = {"models": [hub_entry("m", "o/r", {"checkpoint": ("a.pth", b"x")})]}


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d["models"][0]["files"]["checkpoint"].update(sha256="abc"), "not 64 hex"),
        (lambda d: d["models"][0]["files"]["checkpoint"].update(size=-1), "non-negative"),
        (lambda d: d["models"][0]["files"]["checkpoint"].update(path="../escape.pth"), "inside the repo"),
        (lambda d: d["models"][0]["files"]["checkpoint"].update(path="/abs.pth"), "must be relative"),
        (lambda d: d["models"][0].update(files={"config": "c.yaml"}), "one of the roles"),
        (lambda d: d["models"][0].update(source="ftp"), "source 'ftp'"),
        (lambda d: d["models"][0].update(format="onnx"), "format 'onnx'"),
        (lambda d: d["models"][0].update(hub_repo="noslash"), "owner/name"),
        (lambda d: d["models"].append(copy.deepcopy(d["models"][0])), "duplicate id"),
        (lambda d: d.update(default_preference=["nope"]), "unknown ids"),
    ],
)
def test_invalid_registry_is_rejected_with_the_entry_named(mutate, needle):
    data = copy.deepcopy(BASE)
    registry.parse_registry(copy.deepcopy(data))  # the base is valid
    mutate(data)
    with pytest.raises(InputError, match=needle):
        registry.parse_registry(data)


def test_unknown_id_lists_known_ids(env):
    with pytest.raises(InputError, match=r"Unknown model 'x'.*big, small"):
        registry.load_registry().get("x")


def test_revision_pinned_only_for_a_commit():
    e = registry.parse_registry(
        {"models": [hub_entry("m", "o/r", {"checkpoint": ("a", b"x")}, revision="a" * 40)]}
    )
    assert e.get("m").revision_pinned
    assert not registry.parse_registry(BASE).get("m").revision_pinned


def test_default_prefers_cached_official_weights(env):
    make_hub_cache(env / "hf" / "hub", "owner/big", {CKPT: CKPT_BYTES, CFG: CFG_BYTES})
    mid, reason = registry.default_model_id()
    assert mid == "big" and "from the Hugging Face cache" in reason


def test_default_offline_not_cached_falls_back_to_bundled(env):
    _make_small(env)
    mid, reason = registry.default_model_id()
    assert mid == "small"
    assert (
        reason == "official weights (big) not cached and HF_HUB_OFFLINE=1: using bundled offline model small"
    )


def test_default_online_not_cached_means_download(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    mid, reason = registry.default_model_id()
    assert mid == "big" and "downloaded from owner/big" in reason


def test_voxelfm_model_env_wins(env, monkeypatch):
    monkeypatch.setenv("VOXELFM_MODEL", "/some/model/folder")
    assert registry.default_model_id() == ("/some/model/folder", "set by VOXELFM_MODEL=/some/model/folder")


def test_resolve_default_falls_back_when_the_hub_is_unreachable(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    _make_small(env)

    def unreachable(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", unreachable)
    resolved, reason = hub.resolve_default_model()
    assert resolved.id == "small" and resolved.source == "bundled"
    assert "not available" in reason and "using small" in reason


def test_resolve_default_never_hides_an_integrity_error(env):
    make_hub_cache(env / "hf" / "hub", "owner/big", {CKPT: b"evil" * 500, CFG: CFG_BYTES})
    _make_small(env)
    with pytest.raises(IntegrityError):
        hub.resolve_default_model()


def test_pin_bundled_hashes_then_tampering_is_detected(env):
    folder = _make_small(env)
    assert not registry.load_registry().get("small").verified
    pinned = registry.pin_bundled_hashes("small")
    assert pinned["weights"] == {
        "path": "model.safetensors",
        "sha256": sha256_bytes(b"tiny weights"),
        "size": 12,
    }
    entry = registry.load_registry().get("small")
    assert entry.verified and registry.load_registry().get("big").files["checkpoint"].size == len(CKPT_BYTES)
    assert hub.resolve_model_files("small").verified
    (folder / "model.safetensors").write_bytes(b"tiny weightz")
    with pytest.raises(IntegrityError):
        hub.resolve_model_files("small")


def test_models_cli_table_and_json(env, capsys):
    make_hub_cache(env / "hf" / "hub", "owner/big", {CKPT: CKPT_BYTES, CFG: CFG_BYTES})
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "big" in out and "cached & verified" in out and "bundled, missing" in out
    assert "default model: big (using official VoxelFM weights (big) from the Hugging Face cache)" in out
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["id"]: r for r in data["models"]}
    assert rows["big"]["present"] and rows["big"]["files"]["checkpoint"]["local"].endswith(CKPT)
    assert rows["small"]["status"] == "bundled, missing" and not rows["small"]["available"]
    assert data["default"]["id"] == "big" and data["default"]["offline"] == "yes"


def test_models_cli_reports_hash_unknown_and_failed_checks(env, capsys):
    _make_small(env)
    make_hub_cache(env / "hf" / "hub", "owner/big", {CKPT: b"bad!" * 500, CFG: CFG_BYTES})
    assert main(["models", "--json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["small"]["status"] == "bundled, hash unknown"
    assert rows["big"]["status"] == "cached, FAILED integrity check"


def test_models_cli_broken_registry_exits_2(env, monkeypatch, capsys):
    bad = env / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv("VOXELFM_MODELS_JSON", str(bad))
    assert main(["models"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_nothing_available_gives_every_instruction(env):
    with pytest.raises(ModelNotAvailableError) as ei:
        hub.resolve_default_model()
    msg = str(ei.value)
    assert "Bundled model 'small' is incomplete" in msg and "owner/big" in msg and "hf download" in msg

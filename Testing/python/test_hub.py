"""hub.resolve_model_files against a Hugging Face cache built by hand in tmp: never the network."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from hub_fixtures import (
    COMMIT,
    bundled_entry,
    hub_entry,
    isolated_registry,
    make_hub_cache,
    sha256_bytes,
    write_registry,
)

from voxelfm.errors import IntegrityError, ModelNotAvailableError
from voxelfm.files import integrity
from voxelfm.hub import download as hub

REPO = "testowner/fake-voxelfm"
CKPT = "vitb_3d/checkpoints/99999.pth"
CFG = "vitb_3d/config.yaml"
CKPT_BYTES = b"fake checkpoint payload " * 4000
CFG_BYTES = b"student:\n  arch: vit_base\n"


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Private HF cache, voxelfm cache and registry for one test; offline by default."""
    entries = [
        hub_entry("fake-hub", REPO, {"checkpoint": (CKPT, CKPT_BYTES), "config": (CFG, CFG_BYTES)}),
        hub_entry("fake-unverified", REPO, {"checkpoint": (CKPT, None), "config": (CFG, None)}),
        bundled_entry(
            "fake-bundled",
            "models/fake-bundled",
            {"weights": ("model.safetensors", b"w" * 100), "config": ("config.json", b"{}")},
        ),
    ]
    isolated_registry(tmp_path, monkeypatch, entries)
    return tmp_path


def _no_network(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("hf_hub_download must not be called")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fail)


def test_cached_model_resolves_without_network(env, monkeypatch):
    make_hub_cache(env / "hf" / "hub", REPO, {CKPT: CKPT_BYTES, CFG: CFG_BYTES})
    _no_network(monkeypatch)
    r = hub.resolve_model_files("fake-hub")
    assert r.source == "hub-cache" and r.format == "official-pth" and r.verified
    assert r.revision == COMMIT  # the commit actually in use, not the branch name
    assert r.files["checkpoint"].read_bytes() == CKPT_BYTES
    assert r.files["config"].read_bytes() == CFG_BYTES
    assert r.sha256s["checkpoint"] == sha256_bytes(CKPT_BYTES)
    assert r.model_info() == {
        "id": "fake-hub",
        "revision": COMMIT,
        "sha256": sha256_bytes(CKPT_BYTES),
        "source": "hub-cache",
    }
    assert hub.cache_state(hub.load_registry().get("fake-hub"), verify=True).status == "cached & verified"


def test_offline_and_not_cached_names_repo_files_and_fallback(env, monkeypatch):
    _no_network(monkeypatch)
    with pytest.raises(ModelNotAvailableError) as ei:
        hub.resolve_model_files("fake-hub")
    msg = str(ei.value)
    for needle in (
        REPO,
        CKPT,
        CFG,
        "HF_HUB_OFFLINE=1",
        "revision main",
        "hf download",
        "--model /path/to/folder",
        "voxelfm-tiny",
        str(env / "hf" / "hub" / "models--testowner--fake-voxelfm"),
    ):
        assert needle in msg, needle


@pytest.mark.parametrize(
    "exc", [ConnectionError("Name or service not known"), OSError("network is unreachable")]
)
def test_unreachable_hub_gives_the_same_clear_error(env, monkeypatch, exc):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def boom(*a, **k):
        calls.append((a, k))
        raise exc

    monkeypatch.setattr("huggingface_hub.hf_hub_download", boom)
    with pytest.raises(ModelNotAvailableError) as ei:
        hub.resolve_model_files("fake-hub")
    msg = str(ei.value)
    assert REPO in msg and CKPT in msg and "voxelfm-tiny" in msg and type(exc).__name__ in msg
    assert calls and calls[0][1]["revision"] == "main" and calls[0][1]["local_files_only"] is False
    assert Path(calls[0][1]["cache_dir"]) == env / "hf" / "hub"  # HF_HOME honoured at call time


def test_download_goes_into_the_cache_and_is_verified(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    content = {CKPT: CKPT_BYTES, CFG: CFG_BYTES}

    def fake_download(repo_id, filename, revision=None, cache_dir=None, local_files_only=False, **kw):
        repo = make_hub_cache(Path(cache_dir), repo_id, {filename: content[filename]})
        return str(repo / "snapshots" / COMMIT / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    r = hub.resolve_model_files("fake-hub")
    assert r.source == "hub-download" and r.revision == COMMIT and r.verified
    _no_network(monkeypatch)  # second time: from the cache
    assert hub.resolve_model_files("fake-hub").source == "hub-cache"


def test_download_with_wrong_content_is_refused(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def fake_download(repo_id, filename, revision=None, cache_dir=None, **kw):
        data = b"tampered" + CKPT_BYTES[8:] if filename == CKPT else CFG_BYTES
        repo = make_hub_cache(Path(cache_dir), repo_id, {filename: data})
        return str(repo / "snapshots" / COMMIT / filename)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    with pytest.raises(IntegrityError, match="sha256"):
        hub.resolve_model_files("fake-hub")


def test_hash_mismatch_raises_and_the_model_is_never_loaded(env, monkeypatch):
    bad = b"X" + CKPT_BYTES[1:]  # same size, different content
    make_hub_cache(env / "hf" / "hub", REPO, {CKPT: bad, CFG: CFG_BYTES})
    _no_network(monkeypatch)
    with pytest.raises(IntegrityError) as ei:
        hub.resolve_model_files("fake-hub")
    msg = str(ei.value)
    assert CKPT in msg and sha256_bytes(CKPT_BYTES) in msg and sha256_bytes(bad) in msg
    assert "Delete" in msg and "download it afresh" in msg

    import voxelfm.model.loading as loading

    def must_not_load(*a, **k):
        raise AssertionError("a file that failed verification reached the loader")

    monkeypatch.setattr(loading, "load_backbone_file", must_not_load)
    with pytest.raises(IntegrityError):
        loading.load_backbone("fake-hub")


def test_truncated_file_is_refused(env, monkeypatch):
    make_hub_cache(env / "hf" / "hub", REPO, {CKPT: CKPT_BYTES[:1000], CFG: CFG_BYTES})
    _no_network(monkeypatch)
    with pytest.raises(IntegrityError, match=rf"1000 bytes but {len(CKPT_BYTES)} were expected"):
        hub.resolve_model_files("fake-hub")


def test_unverified_model_loads_with_a_logged_warning(env, monkeypatch, caplog):
    make_hub_cache(env / "hf" / "hub", REPO, {CKPT: b"anything goes", CFG: CFG_BYTES})
    _no_network(monkeypatch)
    hub._warned.clear()
    with caplog.at_level(logging.WARNING, logger="voxelfm.hub.download"):
        r = hub.resolve_model_files("fake-unverified")
    assert not r.verified and r.sha256s["checkpoint"] == sha256_bytes(b"anything goes")
    text = caplog.text
    assert (
        "UNVERIFIED" in text
        and CKPT in text
        and "not pinned" in text
        and sha256_bytes(b"anything goes") in text
    )
    assert len(r.warnings) == 2


def test_local_folder_in_repo_layout(env, tmp_path):
    folder = tmp_path / "download"
    (folder / "vitb_3d" / "checkpoints").mkdir(parents=True)
    (folder / "vitb_3d" / "config.yaml").write_bytes(CFG_BYTES)
    for it in ("5000", "99999", "12345"):
        (folder / "vitb_3d" / "checkpoints" / f"{it}.pth").write_bytes(it.encode())
    r = hub.resolve_model_files(folder)
    assert r.source == "local-path" and r.format == "official-pth"
    assert r.files["checkpoint"].name == "99999.pth"  # the last iteration, numerically
    assert r.files["config"] == folder / "vitb_3d" / "config.yaml"
    assert r.sha256s["checkpoint"] == sha256_bytes(b"99999")
    # a single .pth file finds config.yaml in the run folder above checkpoints/
    r2 = hub.resolve_model_files(folder / "vitb_3d" / "checkpoints" / "5000.pth")
    assert r2.files["config"] == folder / "vitb_3d" / "config.yaml"


def test_local_safetensors_folder_and_bad_paths(env, tmp_path):
    folder = tmp_path / "ours"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    r = hub.resolve_model_files(str(folder))
    assert r.format == "voxelfm-safetensors" and set(r.files) == {"weights", "config"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(hub.InputError, match="no model found"):
        hub.resolve_model_files(tmp_path / "empty")
    with pytest.raises(hub.InputError, match="Unknown model 'no-such-model'"):
        hub.resolve_model_files("no-such-model")


def test_bundled_model_present_missing_and_tampered(env):
    folder = env / "Resources" / "models" / "fake-bundled"
    with pytest.raises(ModelNotAvailableError, match="model.safetensors, config.json missing"):
        hub.resolve_model_files("fake-bundled")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / "config.json").write_bytes(b"{}")
    r = hub.resolve_model_files("fake-bundled")
    assert r.source == "bundled" and r.verified and r.weights == folder / "model.safetensors"
    time.sleep(0.01)
    (folder / "model.safetensors").write_bytes(b"v" * 100)
    with pytest.raises(IntegrityError, match="reinstall the extension"):
        hub.resolve_model_files("fake-bundled")


def test_hash_memo_avoids_rehash_but_not_after_a_change(env, tmp_path, monkeypatch):
    f = tmp_path / "big.bin"
    f.write_bytes(b"a" * 10000)
    first = integrity.sha256_of(f)
    calls = []
    real = integrity.hashlib.sha256
    monkeypatch.setattr(integrity.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert integrity.sha256_of(f) == first and not calls  # memoised
    f.write_bytes(b"b" * 10000)  # same size, new content and mtime
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert integrity.sha256_of(f) == sha256_bytes(b"b" * 10000) and calls


def test_load_backbone_from_hub_cache_records_provenance(env, parity_dir, monkeypatch):
    ckpt = (parity_dir / "tiny_checkpoint.pth").read_bytes()
    cfg = (parity_dir / "tiny_config.yaml").read_bytes()
    entries = [hub_entry("tiny-hub", REPO, {"checkpoint": (CKPT, ckpt), "config": (CFG, cfg)})]
    monkeypatch.setenv("VOXELFM_MODELS_JSON", str(write_registry(env / "Res2", entries)))
    make_hub_cache(env / "hf" / "hub", REPO, {CKPT: ckpt, CFG: cfg})
    _no_network(monkeypatch)
    from voxelfm import load_backbone

    model = load_backbone("tiny-hub")
    assert model.model_info == {
        "id": "tiny-hub",
        "revision": COMMIT,
        "sha256": sha256_bytes(ckpt),
        "source": "hub-cache",
    }
    assert model.cfg.embed_dim == 96 and model.cfg.depth == 2

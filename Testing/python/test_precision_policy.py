"""Precision policy (voxelfm.device): auto per machine, forced fp32/bf16, the flag on every backbone command,
and the feature-cache key (fp32 and bf16 features never share an entry; auto keys by what it resolved to)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from voxelfm import device
from voxelfm.cli.main import build_parser, main
from voxelfm.errors import InputError
from voxelfm.features.cache import FeatureCache
from voxelfm.features.extract import extract_features
from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.imaging.io import write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.model import BackboneConfig, VoxelFMBackbone
from voxelfm.model.checkpoint import save_backbone

BACKBONE_COMMANDS = ("features", "segment", "fit-probe", "apply-probe", "demo")


@pytest.fixture()
def cpu(monkeypatch):
    """Mock CPU detection: ``cpu(flags, x86=True, speedup=None)``; the policy's caches are cleared around it."""
    measured = []

    def set_cpu(flags: set[str], x86: bool = True, speedup: float | None = None) -> list[float]:
        monkeypatch.setattr(device, "_cpu_flags", lambda: set(flags))
        monkeypatch.setattr(device, "_torch_cpu_flags", lambda: set())
        monkeypatch.setattr(device, "_is_x86", lambda: x86)

        def bench() -> float:
            if speedup is None:
                raise AssertionError("the micro-benchmark must not run when the CPU flags decide")
            measured.append(speedup)
            return speedup

        monkeypatch.setattr(device, "measure_bf16_speedup", bench)
        device.cpu_bf16_support.cache_clear()
        return measured

    device.cpu_bf16_support.cache_clear()
    yield set_cpu
    device.cpu_bf16_support.cache_clear()


@pytest.mark.parametrize(
    ("flags", "x86", "native"),
    [
        ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, True, True),  # Sapphire Rapids
        ({"avx2", "avx512f", "avx512_bf16"}, True, True),  # Zen 4, Cooper Lake
        ({"avx2", "fma"}, True, False),  # AVX2-only (this project's CI machine)
        (set(), True, False),
    ],
)
def test_auto_follows_cpu_flags_without_benchmark(cpu, flags, x86, native):
    cpu(flags, x86)
    assert device.cpu_bf16_support().native is native
    assert device.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert device.resolve_precision("fp32", "cpu") == "fp32"


@pytest.mark.parametrize(("speedup", "expected"), [(4.0, "bf16"), (0.3, "fp32")])
def test_undecided_cpu_is_benchmarked_once_and_cached(cpu, speedup, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("VOXELFM_CACHE_DIR", str(tmp_path))
    measured = cpu({"fp", "asimd", "bf16"}, x86=False, speedup=speedup)  # an ARM CPU: flags cannot tell
    assert device.resolve_precision("auto", "cpu") == expected
    device.cpu_bf16_support.cache_clear()  # a new process on the same machine: served from the cache file
    assert device.resolve_precision("auto", "cpu") == expected and measured == [speedup]
    entry = json.loads((tmp_path / "device" / "cpu_bf16.json").read_text())[device._machine_key()]
    assert entry["speedup"] == speedup and entry["torch"] == torch.__version__
    monkeypatch.setattr(torch, "__version__", "0.0-other")  # another torch version measures again
    device.cpu_bf16_support.cache_clear()
    device.resolve_precision("auto", "cpu")
    assert measured == [speedup, speedup]


def test_forced_bf16_runs_but_warns_on_emulating_cpu(cpu, caplog):
    cpu({"avx2"})
    device._warn_slow_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="voxelfm.device"):
        assert device.resolve_precision("bf16", "cpu") == "bf16"
    assert "slow" in caplog.text
    cpu({"avx512_bf16"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="voxelfm.device"):
        assert device.resolve_precision("bf16", "cpu") == "bf16"
    assert "slow" not in caplog.text


def test_gpu_auto_uses_bf16_only_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.resolve_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.resolve_precision("auto", torch.device("cuda")) == "fp32"
    assert device.resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert device.resolve_precision("auto", torch.device("mps")) == "fp32"


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(InputError, match="fp16"):
        device.resolve_precision("fp16", "cpu")


def test_autocast_only_when_resolved_to_bf16(cpu):
    cpu({"avx2"})
    with device.autocast_for(torch.device("cpu"), "auto"):
        assert not torch.is_autocast_enabled("cpu")
    with device.autocast_for(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_backbone_command_has_the_precision_flag():
    """Every command that takes --model (runs a backbone) takes --precision auto|fp32|bf16 (pretrain has its own
    compute_precision in its config and no --model)."""
    with_model = {
        n: s for n, s in _subcommands().items() if any("--model" in a.option_strings for a in s._actions)
    }
    assert set(BACKBONE_COMMANDS) <= set(with_model)
    for name, sub in with_model.items():
        opt = next((a for a in sub._actions if "--precision" in a.option_strings), None)
        assert opt is not None, f"voxelfm {name} has --model but no --precision"
        assert tuple(opt.choices) == device.PRECISIONS and opt.default == "auto", name


def test_bad_precision_flag_exits_2_before_any_model_loads(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(
            ["features", str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "f.npz"), "--precision", "fp8"]
        )
    assert exc.value.code == 2 and "--precision" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists()


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return VoxelFMBackbone(BackboneConfig(embed_dim=48, depth=2, num_heads=1)).eval()


def _ct() -> Volume:
    rng = np.random.default_rng(0)
    arr = (rng.normal(0, 200, (28, 42, 42)) - 300).astype(np.float32)
    return Volume(arr, np.diag([1.5, 1.5, 1.5, 1.0]), name="synthetic")


def test_cache_entries_are_per_resolved_precision(cpu, small_model, tmp_path):
    cpu({"avx2"})  # auto -> fp32 on this mocked machine
    cache = FeatureCache(tmp_path)
    f32 = extract_features(_ct(), small_model, cache=cache, precision="fp32")
    b16 = extract_features(_ct(), small_model, cache=cache, precision="bf16")
    assert len(list(tmp_path.glob("*.npz"))) == 2  # two requests, two entries
    assert f32.extraction["precision"] == "fp32" and b16.extraction["precision"] == "bf16"
    assert not np.array_equal(f32.patch, b16.patch)  # really computed in bf16, not served from fp32
    auto = extract_features(_ct(), small_model, cache=cache, precision="auto")
    assert len(list(tmp_path.glob("*.npz"))) == 2 and np.array_equal(auto.patch, f32.patch)
    cpu({"amx_bf16"})  # the same request on a native-bf16 machine is the bf16 entry
    auto = extract_features(_ct(), small_model, cache=cache, precision="auto")
    assert len(list(tmp_path.glob("*.npz"))) == 2 and np.array_equal(auto.patch, b16.patch)


def test_features_command_records_the_resolved_precision(cpu, small_model, tmp_path):
    cpu({"avx2"})
    ckpt = save_backbone(small_model, tmp_path / "model")
    ct = write_volume(_ct(), tmp_path / "ct.nii.gz")
    for flag, want in (("auto", "fp32"), ("bf16", "bf16")):
        out = tmp_path / f"{flag}.npz"
        args = ["features", str(ct), "--out", str(out), "--model", str(ckpt), "--precision", flag]
        assert main([*args, "--device", "cpu", "--no-cache"]) == 0
        assert VolumeFeatures.load(out).extraction["precision"] == want

"""The one probe file format: round trips, format-1 files of both former types, tampering, bad edited JSON.

The format-1 writers below reproduce what VoxelFM wrote before format 2 (voxelfm/probes/probe_file.py and
voxelfm/segment/probe_file.py at format 1), byte layout and JSON fields alike, so old probes stay loadable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from voxelfm.errors import CheckpointError, IntegrityError
from voxelfm.files import probe_file as pf
from voxelfm.probes.heads import build_head
from voxelfm.probes.probe import Probe
from voxelfm.probes.probe_file import load_probe, probe_metadata, read_probe_json, save_probe
from voxelfm.probes.train import TrainedHead

SPEC = {"type": "linear", "in_dim": 4, "out_dim": 1}


def _probe(kind: str = "regression") -> Probe:
    torch.manual_seed(0)
    head = build_head(SPEC).eval()
    mean = np.array([2.5]) if kind == "regression" else None
    std = np.array([0.5]) if kind == "regression" else None
    return Probe(
        task="regression" if kind == "regression" else "classification",
        kind=kind,
        target_names=["age"] if kind == "regression" else ["tumour"],
        pooling="cls",
        trained=TrainedHead(head, dict(SPEC), mean, std),
        class_names=None if kind == "regression" else ["no", "yes"],
        backbone={"id": "voxelfm-vitb", "revision": "r1", "sha256": "0" * 64},
        preprocess={"clip_hu": [-1000, 1000]},
        metrics={"r2": 0.5, "auc": float("nan")},
        training={"folds": 3},
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_v1_probe(probe: Probe, name: Path) -> None:
    """What format-1 ``save_probe`` wrote (type "voxelfm-probe")."""
    from safetensors.torch import save_file

    st, js = name.with_name(name.name + ".safetensors"), name.with_name(name.name + ".json")
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in probe.trained.head.state_dict().items()}
    if probe.trained.target_mean is not None:
        tensors["target.mean"] = torch.from_numpy(np.asarray(probe.trained.target_mean, np.float64))
        tensors["target.std"] = torch.from_numpy(np.asarray(probe.trained.target_std, np.float64))
    save_file(tensors, str(st), metadata={"type": "voxelfm-probe", "format_version": "1"})
    meta = {
        "type": "voxelfm-probe",
        "format_version": 1,
        "created": "2024-05-01T10:00:00+00:00",
        "voxelfm_version": "0.3.0",
        "task": probe.task,
        # format 1 had the same probe fields as format 2, in the same order; only NaN metrics became null
        **probe_metadata(probe),
        "metrics": {"r2": 0.5, "auc": None},
        "weights": {"file": st.name, "sha256": _sha(st)},
    }
    js.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")


SEG_ARRAYS = {
    "patch_weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "feat_mean": np.ones(4, np.float32),
    "feat_std": np.full(4, 2.0, np.float32),
    "bias": np.array([0.1, -0.2, 0.3], np.float32),
}


def _write_v1_segmentation(name: Path) -> None:
    """What format-1 ``save_segmentation_probe`` wrote (type "voxelfm-segmentation-probe")."""
    from safetensors.numpy import save_file

    st, js = name.with_name(name.name + ".safetensors"), name.with_name(name.name + ".json")
    save_file(SEG_ARRAYS, str(st), metadata={"type": "voxelfm-segmentation-probe"})
    meta = {
        "type": "voxelfm-segmentation-probe",
        "format_version": 1,
        "task": "segmentation",
        "created": "2024-05-01T10:00:00+00:00",
        "classes": [{"value": 1, "name": "liver", "color": [0.8, 0.4, 0.3]}],
        "backbone": {"id": "voxelfm-vitb"},
        "preprocess": {"clip_hu": [-1000, 1000]},
        "feature_config": {"feature_spacing_mm": 1.5},
        "metrics": {"dice": 0.9},
        "weights_file": st.name,
        "weights_sha256": _sha(st),
    }
    js.write_text(json.dumps(meta, indent=1, default=str))


def _edit_json(name: Path, change) -> None:
    js = name.with_name(name.name + ".json")
    meta = json.loads(js.read_text())
    change(meta)
    js.write_text(json.dumps(meta))


# --- round trips -----------------------------------------------------------------------------------------


def test_generic_round_trip_keeps_tensors_and_header(tmp_path):
    tensors = {
        "a": np.arange(6, dtype=np.float64).reshape(2, 3),
        "b": torch.tensor([1, 2], dtype=torch.int64),
    }
    meta = {"classes": [{"value": 1, "name": "liver"}], "metrics": {"dice": np.float32(0.75)}}
    st, js = pf.write_probe_files(tmp_path / "p", "segmentation", tensors, meta)
    assert (st.name, js.name) == ("p.safetensors", "p.json")
    header = json.loads(js.read_text())
    assert list(header)[:5] == ["type", "format_version", "task", "created", "voxelfm_version"]
    assert header["type"] == "voxelfm-probe" and header["format_version"] == 2
    assert header["weights"] == {"file": "p.safetensors", "sha256": _sha(st)}
    got_meta, got = pf.read_probe_files(tmp_path / "p.json", ("segmentation",))
    assert got_meta["task"] == "segmentation" and got_meta["classes"] == meta["classes"]
    assert (
        got_meta["preprocessing"] == {} and got_meta["backbone"] == {} and got_meta["metrics"]["dice"] == 0.75
    )
    assert got["a"].dtype == torch.float64 and torch.equal(got["a"], torch.from_numpy(tensors["a"]))
    assert torch.equal(got["b"], tensors["b"])
    _, as_np = pf.read_probe_files(tmp_path / "p.safetensors", ("segmentation",), as_numpy=True)
    assert isinstance(as_np["a"], np.ndarray) and np.array_equal(as_np["a"], tensors["a"])


def test_save_and_load_probe_round_trip(tmp_path):
    probe = _probe()
    save_probe(probe, tmp_path / "age")
    back = load_probe(tmp_path / "age")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    assert np.allclose(back.predict_inputs(x), probe.predict_inputs(x))
    assert back.trained.target_mean.tolist() == [2.5] and back.backbone == probe.backbone
    assert back.preprocess == probe.preprocess and back.metrics == {"r2": 0.5, "auc": None}
    assert read_probe_json(tmp_path / "age")["outputs"] == ["age"]


def test_a_kill_while_writing_the_header_leaves_no_probe(tmp_path, monkeypatch):
    """A kill while the JSON is written (the atomic write itself not mocked) leaves no probe file at all:
    neither a probe that looks complete nor new weights beside no header (test_atomic_outputs: beside an
    old one)."""
    real = Path.write_text

    def killed(self, data, *args, **kwargs):
        if self.name.endswith(".tmp") and ".p.json." in self.name:
            real(self, data[:20], *args, **kwargs)
            raise KeyboardInterrupt("killed")
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        save_probe(_probe(), tmp_path / "p")
    assert sorted(tmp_path.iterdir()) == []  # no header, no weights, no temporary file
    with pytest.raises(CheckpointError, match="not found"):
        load_probe(tmp_path / "p")


def test_writer_refuses_unknown_task_and_header_fields(tmp_path):
    with pytest.raises(ValueError, match="astrology"):
        pf.write_probe_files(tmp_path / "p", "astrology", {}, {})
    with pytest.raises(ValueError, match="weights"):
        pf.write_probe_files(tmp_path / "p", "regression", {}, {"weights": {}})


# --- format 1 --------------------------------------------------------------------------------------------


def test_format_1_probe_loads(tmp_path):
    probe = _probe("binary")
    _write_v1_probe(probe, tmp_path / "old")
    back = load_probe(tmp_path / "old")
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    assert np.allclose(back.predict_inputs(x), probe.predict_inputs(x))
    assert (back.task, back.kind, back.class_names) == ("classification", "binary", ["no", "yes"])
    meta, _ = pf.read_probe_files(tmp_path / "old", ("classification",))
    assert meta["format_version"] == 1 and meta["voxelfm_version"] == "0.3.0"


def test_format_1_segmentation_probe_loads(tmp_path):
    _write_v1_segmentation(tmp_path / "liver")
    meta, arrays = pf.read_probe_files(tmp_path / "liver", ("segmentation",), as_numpy=True)
    assert meta["type"] == "voxelfm-probe" and meta["task"] == "segmentation" and meta["format_version"] == 1
    assert meta["preprocessing"] == {"clip_hu": [-1000, 1000]} and "preprocess" not in meta
    assert meta["weights"]["file"] == "liver.safetensors" and meta["classes"][0]["name"] == "liver"
    assert meta["feature_config"] == {"feature_spacing_mm": 1.5} and meta["voxelfm_version"] == "unknown"
    assert set(arrays) == set(SEG_ARRAYS)
    assert all(np.array_equal(arrays[k], v) and arrays[k].dtype == v.dtype for k, v in SEG_ARRAYS.items())


def test_probe_of_another_task_is_refused(tmp_path):
    _write_v1_segmentation(tmp_path / "liver")
    with pytest.raises(CheckpointError, match="field 'task' is 'segmentation', but only classification"):
        load_probe(tmp_path / "liver")


# --- damaged or edited files -----------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["current", "format_1", "format_1_segmentation"])
def test_tampered_weights_are_refused(tmp_path, writer):
    name = tmp_path / "p"
    if writer == "current":
        save_probe(_probe(), name)
    elif writer == "format_1":
        _write_v1_probe(_probe(), name)
    else:
        _write_v1_segmentation(name)
    st = tmp_path / "p.safetensors"
    data = bytearray(st.read_bytes())
    data[-1] ^= 0x01
    st.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="do not match the sha256"):
        pf.read_probe_files(name, pf.TASKS)


def test_missing_weights_file(tmp_path):
    save_probe(_probe(), tmp_path / "p")
    (tmp_path / "p.safetensors").unlink()
    with pytest.raises(CheckpointError, match="are missing"):
        load_probe(tmp_path / "p")


def _set(key: str, value: Any):
    def change(meta: dict[str, Any]) -> None:
        if value is _DELETE:
            del meta[key]
        else:
            meta[key] = value

    return change


_DELETE = object()

BAD_FIELDS = [
    (_set("type", "voxelfm-model"), r"field 'type' is 'voxelfm-model'; expected 'voxelfm-probe'"),
    (_set("type", 3), r"field 'type' is 3 \(an integer\); expected a string"),
    (_set("task", "astrology"), r"field 'task' is 'astrology'; expected one of classification, regression"),
    (_set("task", _DELETE), r"field 'task' is missing"),
    (_set("format_version", 3), r"field 'format_version' is 3, newer than this VoxelFM reads \(2\)"),
    (_set("format_version", "2"), r"field 'format_version' is '2' \(a string\); expected an integer"),
    (_set("format_version", True), r"field 'format_version' is true; expected an integer"),
    (_set("format_version", 0), r"field 'format_version' is 0; expected 1 to 2"),
    (_set("type", "voxelfm-segmentation-probe"), r"field 'type' is 'voxelfm-segmentation-probe', a format-1"),
    (_set("created", _DELETE), r"field 'created' is missing"),
    (_set("voxelfm_version", None), r"field 'voxelfm_version' is null; expected a string"),
    (_set("metrics", [0.5]), r"field 'metrics' is \[0.5\] \(a list\); expected an object"),
    (_set("backbone", "vitb"), r"field 'backbone' is 'vitb' \(a string\); expected an object"),
    (_set("preprocessing", _DELETE), r"field 'preprocessing' is missing"),
    (_set("weights", _DELETE), r"field 'weights' is missing"),
    (lambda m: m["weights"].pop("sha256"), r"field 'weights.sha256' is missing"),
    (lambda m: m["weights"].update(sha256="abc"), r"field 'weights.sha256' is 'abc'; expected 64"),
    (_set("head", _DELETE), r"field 'head' is missing"),
    (_set("targets", "age"), r"field 'targets' is 'age' \(a string\); expected a list"),
    (
        _set("head", {"type": "transformer", "in_dim": 4, "out_dim": 1}),
        r"field 'head.type' is 'transformer' \(a string\); expected one of linear",
    ),
]


@pytest.mark.parametrize("change, message", BAD_FIELDS)
def test_bad_edited_json_names_the_field(tmp_path, change, message):
    save_probe(_probe(), tmp_path / "p")
    _edit_json(tmp_path / "p", change)
    with pytest.raises(CheckpointError, match=message) as info:
        load_probe(tmp_path / "p")
    assert str(info.value).startswith(str(tmp_path / "p.json"))


def test_format_1_segmentation_bad_field_is_named(tmp_path):
    _write_v1_segmentation(tmp_path / "liver")
    _edit_json(tmp_path / "liver", _set("weights_sha256", _DELETE))
    with pytest.raises(CheckpointError, match=r"field 'weights_sha256' is missing"):
        pf.read_probe_files(tmp_path / "liver", ("segmentation",))


@pytest.mark.parametrize(
    "text, message", [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")]
)
def test_unreadable_json(tmp_path, text, message):
    save_probe(_probe(), tmp_path / "p")
    (tmp_path / "p.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        read_probe_json(tmp_path / "p")

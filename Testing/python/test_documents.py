"""read_mapping: every JSON/YAML file a person names fails with the caller's error, the file and the fix."""

from __future__ import annotations

import pytest

from voxelfm.errors import CheckpointError, InputError
from voxelfm.files.documents import describe, read_mapping
from voxelfm.localize.markups_json import read_point_list
from voxelfm.model.checkpoint import load_ours
from voxelfm.model.config import BackboneConfig


def test_reads_json_and_yaml_objects(tmp_path):
    (tmp_path / "a.json").write_text('{"k": 1}', encoding="utf-8")
    (tmp_path / "a.yaml").write_text("k: 1\n", encoding="utf-8")
    assert read_mapping(tmp_path / "a.json", InputError, "thing", "fix it") == {"k": 1}
    assert read_mapping(tmp_path / "a.yaml", InputError, "thing", "fix it", syntax="YAML") == {"k": 1}
    (tmp_path / "empty.yaml").write_text("# nothing set\n", encoding="utf-8")
    assert read_mapping(tmp_path / "empty.yaml", InputError, "thing", "fix it", syntax="YAML") == {}


@pytest.mark.parametrize(
    "name, content, syntax, message",
    [
        ("a.json", None, "JSON", r"^Settings file .*a\.json not found; make one\.$"),
        ("a.json", "{nope", "JSON", r"readable settings file: not valid JSON \(.*\); fix it\.$"),
        ("a.json", "[1, 2]", "JSON", r"expected a JSON object, found \[1, 2\] \(a list\); fix it\.$"),
        ("a.yaml", "k: [1", "YAML", r"not valid YAML"),
        ("a.yaml", "- 1\n", "YAML", r"expected a YAML mapping, found \[1\] \(a list\); fix it\.$"),
    ],
)
def test_errors_name_the_file_problem_and_fix(tmp_path, name, content, syntax, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=message):
        read_mapping(path, CheckpointError, "settings file", "fix it", missing="make one", syntax=syntax)


def test_text_that_is_not_utf8_is_an_error(tmp_path):
    (tmp_path / "a.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="cannot read it as text"):
        read_mapping(tmp_path / "a.json", InputError, "thing", "fix it")


def test_describe_shortens_long_values():
    assert describe("x" * 100).endswith("... (a string)") and describe(None) == "null"


def test_each_reader_keeps_its_error_class(tmp_path):
    (tmp_path / "bad.mrk.json").write_text("[]", encoding="utf-8")
    with pytest.raises(InputError, match="markups JSON file: expected a JSON object"):
        read_point_list(tmp_path / "bad.mrk.json")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text("[]", encoding="utf-8")
    with pytest.raises(CheckpointError, match="model config: expected a JSON object"):
        load_ours(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="needs it beside model.safetensors"):
        load_ours(tmp_path)
    with pytest.raises(CheckpointError, match="Training config .* not found"):
        BackboneConfig.from_official_yaml(tmp_path / "missing.yaml")

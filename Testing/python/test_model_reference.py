"""One model-path rule for every front end: the CLI's service and the Slicer model panel agree on which model
references are files (they must exist) and which are registry ids."""

from __future__ import annotations

import pytest

from voxelfm.errors import InputError
from voxelfm.features.service import resolve_reference
from VoxelFMLib.model_service import validate_model_reference


@pytest.mark.parametrize(
    "reference", ["mine.pt", "mine.pth", "mine.safetensors", "runs/model", "runs\\model"]
)
def test_a_missing_checkpoint_path_is_refused_by_the_panel_and_resolved_as_a_path_by_the_service(
    tmp_path, monkeypatch, reference
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        validate_model_reference(reference)
    resolved, _ = resolve_reference(reference)
    assert resolved == str((tmp_path / reference).resolve())


def test_a_registry_id_is_not_a_path_on_either_side(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert validate_model_reference(" voxelfm-tiny ") == "voxelfm-tiny"
    assert resolve_reference("voxelfm-tiny")[0] == "voxelfm-tiny"


def test_an_existing_pt_checkpoint_is_kept_as_its_path(tmp_path):
    checkpoint = tmp_path / "step_00000100.pt"
    checkpoint.write_bytes(b"")
    assert validate_model_reference(str(checkpoint)) == str(checkpoint)
    assert resolve_reference(str(checkpoint))[0] == str(checkpoint.resolve())

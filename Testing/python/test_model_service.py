"""The module logics' holder: one capability logic per model choice, rebuilt only when the choice changes."""

from __future__ import annotations

import pytest

from voxelfm.features.spec import ModelSpec

pytest.importorskip("slicer")

from VoxelFMLib.model_service import PerModel  # noqa: E402


def test_per_model_keeps_one_logic_per_choice_and_builds_from_spec(tmp_path):
    holder = PerModel.of("FewShotSegmentLogic")
    assert holder.current is None
    cpu = ModelSpec("voxelfm-tiny", device="cpu", max_tokens=512)
    first = holder.get(cpu)
    assert holder.get(ModelSpec("voxelfm-tiny", device="cpu", max_tokens=512)) is first  # same choice: kept
    assert first.spec == cpu and first.pipeline.spec == cpu
    other = holder.get(ModelSpec("voxelfm-tiny", device="cpu", precision="fp32", max_tokens=512))
    assert other is not first and holder.current is other and other.spec.precision == "fp32"


def test_per_model_passes_options_and_checks_paths(tmp_path):
    from voxelfm.errors import InputError

    template = tmp_path / "missing.yaml"
    holder = PerModel.of("LocalisationLogic")
    assert holder.get(ModelSpec(device="cpu")).spec.model == ""  # "" = the default-model policy
    with pytest.raises(InputError, match="does not exist"):
        PerModel.of("FewShotSegmentLogic").get(ModelSpec(str(template.with_suffix(".pth"))))

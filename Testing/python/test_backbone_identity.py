"""The one backbone identity and compatibility rule (features.identity), as every record uses it."""

from __future__ import annotations

import pytest

from voxelfm.errors import InputError
from voxelfm.features.identity import (
    BackboneMismatchError,
    backbone_record,
    check_backbone,
    recorded_backbone,
)
from voxelfm.features.spec import ModelSpec

A = {
    "id": "voxelfm-a",
    "revision": "r1",
    "sha256": "a" * 64,
    "source": "hub-cache",
    "config": {"embed_dim": 8},
}


def test_a_record_holds_id_revision_sha256_and_config():
    assert backbone_record(A) == {
        "id": "voxelfm-a",
        "revision": "r1",
        "sha256": "a" * 64,
        "config": {"embed_dim": 8},
    }
    assert backbone_record(None) == {"id": None, "revision": None, "sha256": None}


def test_the_recorded_backbone_is_read_under_either_name():
    assert recorded_backbone({"backbone": A})["id"] == "voxelfm-a"
    assert recorded_backbone({"model": A})["id"] == "voxelfm-a"  # files written before the one record
    assert recorded_backbone(type("P", (), {"backbone": {}, "model": A})())["id"] == "voxelfm-a"
    assert recorded_backbone({}) == {}


def test_same_weights_under_another_name_pass_and_other_weights_are_refused():
    check_backbone(A, {"id": "/models/a.safetensors", "sha256": "a" * 64}, "This probe was fitted on", "x")
    check_backbone({}, A, "This probe was fitted on", "x")  # nothing recorded: nothing to check
    with pytest.raises(
        BackboneMismatchError, match="fitted on 'voxelfm-a'.*model in use is 'b'.*refit it"
    ) as info:
        check_backbone(A, {"id": "b", "sha256": "b" * 64}, "This probe was fitted on", "refit it.")
    assert isinstance(info.value, InputError)  # the CLI's one-line message, exit 2
    with pytest.raises(BackboneMismatchError):  # ids only (no sha256 recorded): the ids must agree
        check_backbone({"id": "voxelfm-a"}, {"id": "voxelfm-b"}, "w", "t")


def test_the_recorded_model_is_used_unless_the_user_names_one():
    assert ModelSpec().for_record({"backbone": A}).model == "voxelfm-a"
    assert ModelSpec(model="mine").for_record({"backbone": A}).model == "mine"
    assert ModelSpec(device="cpu").for_record({}).model == ""  # neither: the default-model policy

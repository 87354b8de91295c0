"""Request types of the pipelines (segmentation fit/apply, features): label preparation in one place,
settings to and from plain data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxelfm.errors import InputError
from voxelfm.features.request import FeaturesRequest
from voxelfm.imaging.volume import Volume
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.postprocess import PostprocessConfig
from voxelfm.segment.request import SegmentationApplyRequest, SegmentationFitRequest


def _volumes(labels: np.ndarray) -> tuple[Volume, Volume]:
    geometry = np.diag([0.8, 0.8, 2.0, 1.0])
    return Volume(np.zeros(labels.shape, np.int16), geometry), Volume(labels, geometry, "paint")


def test_painted_slices_become_whole_labelled_slices_and_the_paint_is_kept():
    paint = np.zeros((4, 6, 6), np.uint8)
    paint[1, 2:4, 2:4] = 1
    paint[3, 0, 0] = 2
    volume, labels = _volumes(paint)
    request = SegmentationFitRequest(volume, labels, class_names="liver, spleen", painted_slices=True)
    prepared = request.prepared_labels()
    assert (prepared.array[[0, 2]] == 255).all()  # slices without paint: unlabelled
    assert (prepared.array[1] == paint[1]).all() and (prepared.array[3] == paint[3]).all()
    assert (labels.array == paint).all() and prepared.array is not labels.array  # the user's paint untouched
    assert [(c.value, c.name) for c in request.classes(prepared)] == [(1, "liver"), (2, "spleen")]


def test_bad_labels_are_one_clear_error():
    paint = np.full((2, 4, 4), 255, np.uint8)
    paint[0, 0, 0] = 1
    volume, labels = _volumes(paint)
    with pytest.raises(InputError, match="expect 0 for unpainted voxels"):
        SegmentationFitRequest(volume, labels, painted_slices=True).prepared_labels()
    with pytest.raises(InputError, match="gives 2 names but the labels hold 1 structures"):
        SegmentationFitRequest(volume, labels, class_names="a,b").classes(labels)


def test_settings_travel_as_plain_data():
    volume, labels = _volumes(np.zeros((2, 4, 4), np.uint8))
    config = SegmentationConfig(feature_spacing_mm=1.5, postprocess=PostprocessConfig(fill_holes=True))
    fit = SegmentationFitRequest(volume, labels, config, "liver", True)
    again = SegmentationFitRequest.from_settings(volume, labels, json.loads(json.dumps(fit.settings())))
    assert again.settings() == fit.settings() and again.config == config
    probe = object()  # a loaded probe travels as itself, not as plain data
    apply = SegmentationApplyRequest(volume, probe, PostprocessConfig(largest_component=True))
    back = SegmentationApplyRequest.from_settings(volume, probe, json.loads(json.dumps(apply.settings())))
    assert back.postprocess == apply.postprocess and back.probe is probe
    assert SegmentationApplyRequest.from_settings(volume, probe, {}).postprocess is None


def test_segment_classes_travel_and_win_over_class_names():
    """The server's form: the Slicer segments' classes (colour, terminology) as they are, and the volume's hash."""
    from voxelfm.segment.classes import SegmentClass

    labels_array = np.full((2, 4, 4), 255, np.uint8)
    labels_array[0] = 0
    labels_array[0, :2, :2] = 3
    volume, labels = _volumes(labels_array)
    liver = SegmentClass(3, "liver", (0.8, 0.2, 0.2))
    fit = SegmentationFitRequest(
        volume, labels, class_names="spleen", segment_classes=[liver], volume_key="ab" * 32
    )
    plain = json.loads(json.dumps(fit.settings()))
    again = SegmentationFitRequest.from_settings(volume, labels, plain, "ab" * 32)
    assert again.classes(labels) == [liver] and again.volume_key == "ab" * 32
    assert "volume_key" not in plain  # the volume's address travels with the volume, not in the settings
    assert SegmentationFitRequest.from_settings(volume, labels, {}).classes(labels) == []  # generic names


def test_a_features_request_travels_as_plain_data():
    volume, _ = _volumes(np.zeros((2, 4, 4), np.uint8))
    request = FeaturesRequest(volume, {"min_spacing": 2.0, "orientation": "canonical"}, cache=False)
    back = FeaturesRequest.from_settings(volume, json.loads(json.dumps(request.settings())))
    assert back.settings() == request.settings() and back.volume is volume
    assert FeaturesRequest.from_settings(volume, {}) == FeaturesRequest(volume)


def test_a_segmentation_result_travels_as_labelmap_geometry_and_plain_data():
    from voxelfm.segment.classes import SegmentClass
    from voxelfm.segment.result import SegmentationResult

    labelmap = np.zeros((2, 4, 4), np.uint8)
    labelmap[0, :2, :2] = 3
    geometry = np.diag([0.5, 0.5, 2.0, 1.0])
    result = SegmentationResult(
        labelmap, geometry, [SegmentClass(3, "liver", (0.8, 0.2, 0.2))], warnings=["w"]
    )
    summary = json.loads(json.dumps(result.summary()))
    assert summary["statistics"] == [{"name": "liver", "value": 3, "voxels": 4, "volume_ml": 0.002}]
    back = SegmentationResult.from_summary(labelmap, geometry, summary)
    assert back.summary() == summary and back.classes == result.classes

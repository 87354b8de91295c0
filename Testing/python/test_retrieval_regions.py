"""Query regions: --roi forms (parse-time errors), Slicer markups ROI files (LPS and RAS), the region -> block
used for pooling, and the "outside the volume" error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxelfm.errors import InputError
from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.imaging.io import write_labelmap
from voxelfm.imaging.volume import Volume
from voxelfm.retrieval.config import RetrievalConfig
from voxelfm.retrieval.embeddings import block_embeddings, embed_features, region_query
from voxelfm.retrieval.region_specs import parse_region_spec
from voxelfm.retrieval.regions import BoxRegion, MaskRegion, SphereRegion, points_in_volume


@pytest.mark.parametrize(
    "text, message",
    [
        ("box:1,2,3", "needs 6"),
        ("box:1,2,3,4,5,-1", "positive"),
        ("point:1,2,nan,4", "finite"),
        ("point:0,0,0,0", "radius must be positive"),
        ("mask:/no/such/file.nii.gz", "not found"),
        ("circle:1,2", "is not a region"),
    ],
)
def test_bad_roi_values_name_the_problem(text, message):
    with pytest.raises(InputError, match=message):
        parse_region_spec(text)


def test_roi_forms_become_regions(tmp_path):
    box = parse_region_spec("box:10,-20,30,40,50,60").region()
    assert isinstance(box, BoxRegion) and np.allclose(box.center, [10, -20, 30]) and box.size == (40, 50, 60)
    np.testing.assert_allclose(box.half_extent, [20, 25, 30])
    ball = parse_region_spec("point:1,2,3,7.5").region()
    assert isinstance(ball, SphereRegion) and ball.radius == 7.5
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[2:4, 3:5, 4:6] = 3
    labels[0, 0, 0] = 1
    write_labelmap(labels, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "lab.nii.gz")
    mask = parse_region_spec(f"mask:{tmp_path / 'lab.nii.gz'}:3").region()
    assert isinstance(mask, MaskRegion) and int(mask.mask.sum()) == 8
    np.testing.assert_allclose(mask.center, [9.0, 7.0, 5.0])
    with pytest.raises(InputError, match="no voxel with label 9"):
        parse_region_spec(f"mask:{tmp_path / 'lab.nii.gz'}:9").region()


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_markups_roi_file_in_lps_or_ras(tmp_path, system):
    """The ROI Slicer writes (centre, size, orientation row-major with the axes as columns): an oriented box."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # RAS axes as columns
    centre = np.array([10.0, 20.0, 30.0])
    flip = np.diag([-1.0, -1.0, 1.0]) if system == "LPS" else np.eye(3)
    roi = {
        "type": "ROI",
        "coordinateSystem": system,
        "center": list(flip @ centre),
        "size": [10.0, 20.0, 40.0],
        "orientation": list((flip @ rot).ravel()),
    }
    path = tmp_path / "roi.mrk.json"
    path.write_text(json.dumps({"markups": [roi]}))
    region = parse_region_spec(str(path)).region()
    np.testing.assert_allclose(region.center, centre, atol=1e-9)
    np.testing.assert_allclose(region.to_ras[:3, :3], rot, atol=1e-9)
    corner = region.to_ras @ np.array([5.0, 10.0, 20.0, 1.0])
    np.testing.assert_allclose(corner[:3], centre + rot @ [5.0, 10.0, 20.0], atol=1e-9)


def _features(shape=(4, 5, 6), dim=8, seed=0):
    rng = np.random.default_rng(seed)
    g2r = np.diag([10.0, 10.0, 10.0, 1.0])
    return VolumeFeatures(
        cls=rng.normal(size=dim),
        registers=np.zeros((4, dim)),
        patch=rng.normal(size=(*shape, dim)).astype(np.float32),
        grid_to_ras=g2r,
    )


def test_a_region_query_is_the_matching_block_of_the_library():
    """The pooled block around the region equals the case's own block there (so a near-duplicate scores 1)."""
    feats = _features()
    volume = Volume(np.zeros((40, 50, 60), np.float32), np.eye(4))
    cfg = RetrievalConfig(block_mm=(10.0, 20.0, 40.0))
    emb = embed_features(feats, cfg)
    centre = np.array([30.0, 20.0, 10.0])  # cell (i, j, k) = (3, 2, 1)
    vector, scale = region_query(feats, SphereRegion(tuple(centre), 5.0), volume, cfg)
    assert scale == 0  # a ball of 10 mm: the 10 mm blocks
    best = int(np.argmax(emb.blocks[0] @ vector))
    assert emb.blocks[0][best] @ vector == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(emb.centres[0][best], centre)
    vector, scale = region_query(feats, BoxRegion.centred(centre + 5, (20, 20, 20)), volume, cfg)
    assert scale == 1 and max(emb.blocks[1] @ vector) == pytest.approx(1.0, abs=1e-5)
    blocks, centres = block_embeddings(feats.patch, feats.grid_to_ras, 2, 1)
    assert len(blocks) == 3 * 4 * 5 and np.allclose(centres.min(0), [5, 5, 5])


def test_a_region_outside_the_volume_is_refused():
    volume = Volume(np.zeros((10, 10, 10), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "ct")
    with pytest.raises(InputError, match="lies outside the volume 'ct'"):
        points_in_volume(BoxRegion.centred((500, 500, 500), (10, 10, 10)), volume, 2.0)
    partly = points_in_volume(SphereRegion((0.0, 0.0, 0.0), 6.0), volume, 2.0)
    assert len(partly) and np.all(partly >= -1.0)

"""Whole-volume similarity that means content: the same CT stored differently is the same case.

Library: four real CTs of different patients (torso_3mm, pulmonary_1p5mm, elastix, chest_dicom) embedded with
the bundled voxelfm-tiny by RetrievalPipeline (defaults: canonical orientation, 2 mm features, mean + std of
the body tokens, library-centred cosine). A copy stored with i reversed and a copy resampled onto a 20-degree
oblique grid must retrieve their source at rank 1 with a clear margin; small libraries (1 and 2 cases) give
plain cosines and say so; a library from before these settings is refused with the advice to rebuild it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from retrieval_helpers import LIBRARY_CTS, altered

from voxelfm.errors import InputError
from voxelfm.features.spec import ModelSpec
from voxelfm.imaging.io import read_volume
from voxelfm.retrieval import store
from voxelfm.retrieval.config import RetrievalConfig
from voxelfm.retrieval.library import CaseLibrary
from voxelfm.retrieval.pipeline import RetrievalPipeline

pytest.importorskip("faiss")
MODEL = Path(__file__).resolve().parents[2] / "Resources" / "models" / "voxelfm-tiny"
NAMES = ("torso", "pulmonary", "elastix", "chest")


@pytest.fixture(scope="module")
def cts(data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {n: read_volume(str(data_dir / LIBRARY_CTS[n])) for n in NAMES}


@pytest.fixture(scope="module")
def pipeline():
    return RetrievalPipeline(ModelSpec(str(MODEL), "cpu"))


@pytest.fixture(scope="module")
def library(cts, pipeline, tmp_path_factory):
    lib = tmp_path_factory.mktemp("embeddings") / "cases"
    for n in NAMES:
        pipeline.add_volume(lib, cts[n], case_id=n)
    return lib


def _scores(result) -> dict[str, float]:
    return {h.case_id: h.score for h in result.hits}


@pytest.mark.parametrize("kind", ["flip_i", "oblique"])
def test_a_copy_stored_differently_retrieves_its_source_with_a_margin(library, pipeline, cts, kind):
    for source in ("torso", "elastix"):  # the small CTs (the 512x512 chest is only a library case)
        result = pipeline.query(library, altered(cts[source], kind), k=len(NAMES))
        scores = _scores(result)
        assert result.hits[0].case_id == source, (kind, source, scores)
        margin = scores[source] - max(s for c, s in scores.items() if c != source)
        print(kind, source, {c: round(s, 3) for c, s in scores.items()}, f"margin {margin:.3f}")
        assert margin > 0.1, (kind, source, scores)  # plain mean-token cosines differ by ~0.002 here
        assert all(-1.0 <= s <= 1.0 for s in scores.values())
        assert json.loads(json.dumps(result.to_json()))[0].keys() == {"case_id", "path", "score"}


def test_the_library_records_its_pooling_and_refuses_another(library, pipeline, cts):
    with CaseLibrary.open(library) as lib:
        assert lib.config.pooling == "body_mean_std" and lib.config.centring == "library"
        assert lib.preprocess["orientation"] == "canonical"
        assert lib.dim == 2 * 216  # mean + std: twice voxelfm-tiny's token width
    plain = RetrievalPipeline(pipeline.spec, RetrievalConfig(pooling="mean", centring="none"))
    with pytest.raises(InputError, match="embedding settings|built with"):
        plain.add_volume(library, altered(cts["torso"], "noise"))
    with CaseLibrary.open(library) as lib:
        assert lib.count() == len(NAMES)


def test_one_and_two_case_libraries_score_plain_cosines_and_say_so(cts, pipeline, tmp_path):
    one = tmp_path / "one"
    pipeline.add_volume(one, cts["torso"], case_id="torso")
    result = pipeline.query(one, altered(cts["torso"], "flip_j"), k=3)
    assert [h.case_id for h in result.hits] == ["torso"]
    assert 0.99 <= result.hits[0].score <= 1.0  # the same voxels: plain cosine ~1
    assert any("plain cosines" in w for w in result.warnings)
    assert any("only 1 matching case" in w for w in result.warnings)

    pipeline.add_volume(one, cts["chest"], case_id="chest")
    for source in ("torso", "chest"):
        result = pipeline.query(one, altered(cts[source], "flip_i"), k=2)
        assert [h.case_id for h in result.hits][0] == source
        assert all(-1.0 <= h.score <= 1.0 for h in result.hits)
        assert any("plain cosines" in w for w in result.warnings)


def test_a_centred_score_is_a_cosine_and_an_identical_case_scores_one(library, pipeline, cts):
    result = pipeline.query(library, cts["elastix"], k=len(NAMES))
    scores = _scores(result)
    assert result.hits[0].case_id == "elastix" and scores["elastix"] == pytest.approx(1.0, abs=1e-4)
    others = [s for c, s in scores.items() if c != "elastix"]
    assert max(others) < 0.9 and min(others) >= -1.0  # centred: other patients are far from 1
    assert not any("plain cosines" in w for w in result.warnings)


def test_a_library_from_before_canonical_orientation_is_refused_with_the_advice(
    library, pipeline, cts, tmp_path
):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(library, old)
    with CaseLibrary.open(old, writer=True) as lib, store.transaction(lib.con):
        pre = dict(lib.preprocess)
        pre.pop("orientation")
        store.set_meta(lib.con, "preprocess", pre)
        cfg = lib.config.to_dict()
        for key in ("pooling", "centring"):
            cfg.pop(key)
        store.set_meta(lib.con, "config", cfg)
    with CaseLibrary.open(old) as lib:
        assert (lib.config.pooling, lib.config.centring) == ("mean", "none")  # what it was made with
    before = sorted(p.name for p in old.iterdir())
    with pytest.raises(InputError, match="earlier version.*new library"):
        pipeline.query(old, cts["torso"], k=2)
    assert sorted(p.name for p in old.iterdir()) == before
    with CaseLibrary.open(old) as lib:
        assert lib.count() == len(NAMES)

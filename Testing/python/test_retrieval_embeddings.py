"""Whole-volume similarity that means content: the same CT stored or framed differently is the same case.

Library: four real CTs of different patients (torso_3mm, pulmonary_1p5mm, elastix, chest_dicom) embedded with
the bundled voxelfm-tiny by RetrievalPipeline (defaults: canonical orientation, 2 mm features, body tokens
standardised with the library's token statistics, retrieval/standardise.py). A copy stored with i reversed, a copy
resampled onto a 20-degree oblique grid and the tour's moved + cropped copy must retrieve their source at rank 1
with a clear margin; 1- and 2-case libraries behave as documented; removing a case recomputes the statistics
exactly; libraries made with the earlier settings still answer as they did, and one from before canonical
orientation is refused with the advice to rebuild it.
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
from voxelfm.retrieval.search import centred_cosines
from voxelfm.samples.demo_cases import Motion, moved_copy

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


def test_the_tours_moved_and_cropped_copy_retrieves_its_source(library, pipeline, cts):
    for source in ("torso", "elastix"):
        moved = moved_copy(cts[source], Motion(), f"{source}_moved")[0]  # 8 degrees, shifted, half the volume
        scores = _scores(pipeline.query(library, moved, k=len(NAMES)))
        margin = scores[source] - max(s for c, s in scores.items() if c != source)
        print("moved", source, {c: round(s, 3) for c, s in scores.items()}, f"margin {margin:.3f}")
        assert max(scores, key=scores.get) == source and margin > 0.1, (source, scores)


def test_the_library_records_its_pooling_and_refuses_another(library, pipeline, cts):
    with CaseLibrary.open(library) as lib:
        assert lib.config.pooling == "body_standardised" and lib.config.centring == "none"
        assert lib.preprocess["orientation"] == "canonical"
        assert lib.dim == 2 * 216  # token moments (mean, std): twice voxelfm-tiny's token width
        assert all(rec.info["tokens"] > 100 for rec in lib.cases())  # body tokens: weights of the statistics
    for other in (RetrievalConfig(pooling="mean", centring="none"), RetrievalConfig(pooling="body_mean_std")):
        with pytest.raises(InputError, match="embedding settings|built with"):
            RetrievalPipeline(pipeline.spec, other).add_volume(library, altered(cts["torso"], "noise"))
    with CaseLibrary.open(library) as lib:
        assert lib.count() == len(NAMES)


def test_one_and_two_case_libraries_rank_sensibly_and_say_so(cts, pipeline, tmp_path):
    one = tmp_path / "one"
    pipeline.add_volume(one, cts["torso"], case_id="torso")
    result = pipeline.query(one, altered(cts["torso"], "flip_j"), k=3)
    assert [h.case_id for h in result.hits] == ["torso"]
    assert 0.99 <= result.hits[0].score <= 1.0  # the same voxels: ~1 (its statistics scaled, nothing removed)
    assert any("scaled, not standardised" in w for w in result.warnings)
    assert any("only 1 matching case" in w for w in result.warnings)
    other = pipeline.query(one, cts["chest"], k=1)  # another patient: below the copy, still a cosine
    assert -1.0 <= other.hits[0].score < result.hits[0].score

    pipeline.add_volume(one, cts["chest"], case_id="chest")
    for source in ("torso", "chest"):
        result = pipeline.query(one, altered(cts[source], "flip_i"), k=2)
        scores = _scores(result)
        assert result.hits[0].case_id == source and scores[source] > 0.5, scores
        # two cases: the library's token mean lies between them, so their embeddings are opposite
        assert scores["torso"] == pytest.approx(-scores["chest"], abs=1e-5)
        assert not any("not standardised" in w for w in result.warnings)


def test_a_standardised_score_is_a_cosine_and_an_identical_case_scores_one(library, pipeline, cts):
    result = pipeline.query(library, cts["elastix"], k=len(NAMES))
    scores = _scores(result)
    assert result.hits[0].case_id == "elastix" and scores["elastix"] == pytest.approx(1.0, abs=1e-4)
    others = [s for c, s in scores.items() if c != "elastix"]
    assert max(others) < 0.9 and min(others) >= -1.0  # standardised: other patients are far from 1
    assert not result.warnings


def test_removing_a_case_recomputes_the_statistics_exactly(library, pipeline, cts, tmp_path):
    import shutil

    removed = tmp_path / "removed"
    shutil.copytree(library, removed)
    query = altered(cts["torso"], "oblique")
    before = _scores(pipeline.query(removed, query, k=len(NAMES)))
    with CaseLibrary.open(removed, writer=True) as lib:
        lib.remove_case("chest")
    after = _scores(pipeline.query(removed, query, k=len(NAMES)))
    fresh = tmp_path / "fresh"
    for n in ("torso", "pulmonary", "elastix"):
        pipeline.add_volume(fresh, cts[n], case_id=n)
    expected = _scores(pipeline.query(fresh, query, k=len(NAMES)))
    assert set(after) == set(expected) == {"torso", "pulmonary", "elastix"}
    assert all(after[c] == pytest.approx(expected[c], abs=1e-5) for c in expected)
    assert any(abs(after[c] - before[c]) > 1e-3 for c in after)  # the statistics did change
    with CaseLibrary.open(removed, writer=True) as lib:
        lib.indexes.rebuild()
    rebuilt = _scores(pipeline.query(removed, query, k=len(NAMES)))
    assert all(rebuilt[c] == pytest.approx(expected[c], abs=1e-5) for c in expected)


def test_a_library_made_with_mean_and_std_still_answers_as_before(cts, pipeline, tmp_path):
    earlier = RetrievalPipeline(pipeline.spec, RetrievalConfig(pooling="body_mean_std", centring="library"))
    folder = tmp_path / "mean_std"
    for n in ("torso", "elastix", "chest"):
        earlier.add_volume(folder, cts[n], case_id=n)
    query = altered(cts["elastix"], "flip_i")
    result = pipeline.query(folder, query, k=3)  # the default pipeline takes the library's own settings
    with CaseLibrary.open(folder) as lib:
        assert (lib.config.pooling, lib.config.centring) == ("body_mean_std", "library")
        ids, mat = store.global_matrix(lib.con, "mean", None, lib.dim)
    vector = earlier.embed(query, earlier.spec, earlier.config)[0].mean
    names = {r.row: r.case_id for r in _cases(folder)}
    scores = centred_cosines(
        mat, vector, mat.mean(axis=0)
    )  # cosine after removing the library mean, as before
    centred = {names[int(i)]: float(s) for i, s in zip(ids, scores, strict=True)}
    assert result.hits[0].case_id == "elastix"
    assert all(h.score == pytest.approx(centred[h.case_id], abs=1e-5) for h in result.hits)


def _cases(folder: Path):
    with CaseLibrary.open(folder) as lib:
        return lib.cases()


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


def _sample_archive() -> Path | None:
    archive = Path.home() / ".cache/voxelfm/downloads/pyradiomics-3.0.1.tar.gz"
    return archive if archive.is_file() else None


@pytest.mark.skipif(
    _sample_archive() is None, reason="the tour's sample CTs (pyradiomics archive) are not here"
)
def test_the_tours_library_ranks_the_same_patients_moved_copy_first(pipeline, tmp_path, monkeypatch):
    """`voxelfm demo`'s retrieval step: {lung2, lung1 moved, lung2 moved} queried with lung1."""
    from voxelfm.samples.demo import _read_case

    monkeypatch.setenv("VOXELFM_SAMPLE_ARCHIVE", str(_sample_archive()))
    monkeypatch.setenv("VOXELFM_CACHE_DIR", str(tmp_path / "cache"))
    lung1, lung2 = _read_case("lung1")[0], _read_case("lung2")[0]
    folder = tmp_path / "tour"
    pipeline.add_volume(folder, lung2, case_id="lung2")
    pipeline.add_volume(folder, moved_copy(lung1, Motion(), "lung1_moved")[0], case_id="lung1_moved")
    pipeline.add_volume(folder, moved_copy(lung2, Motion(), "lung2_moved")[0], case_id="lung2_moved")
    scores = _scores(pipeline.query(folder, lung1, k=3))
    print("tour", {c: round(s, 3) for c, s in scores.items()})
    assert max(scores, key=scores.get) == "lung1_moved" and scores["lung1_moved"] - scores["lung2"] > 0.1

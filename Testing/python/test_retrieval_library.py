"""The case library without a model: SQLite + FAISS files, the writer lock, refusals, corruption, stale indexes.

Embeddings are random unit vectors (``synthetic_embeddings``); every test checks the library is unchanged
after a refused change, and that search answers come from the committed cases only.
"""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import IDENTITY, synthetic_embeddings

from voxelfm.errors import InputError
from voxelfm.retrieval.config import RetrievalConfig
from voxelfm.retrieval.index_set import IndexDamagedError, IndexFileMissingError, IndexSet
from voxelfm.retrieval.library import CaseLibrary, NoLibraryError
from voxelfm.retrieval.lock import LibraryLockedError
from voxelfm.retrieval.records import CaseSource
from voxelfm.retrieval.search import search_global, search_region
from voxelfm.retrieval.vector_index import IndexPolicy

pytest.importorskip("faiss")
DIM = 16


def _source(n: int, **kw) -> CaseSource:
    return CaseSource(path=f"/archive/p{n:03d}/ct.nii.gz", case_id=f"case{n:03d}", **kw)


def _build(folder, n: int = 6, seed: int = 0, update: bool = True):
    """A library of ``n`` synthetic cases; returns their embeddings in order."""
    rng = np.random.default_rng(seed)
    embs = [synthetic_embeddings(rng, DIM) for _ in range(n)]
    with CaseLibrary.open(folder, create=True, writer=True) as lib:
        for i, e in enumerate(embs):
            lib.add_case(
                _source(i), e, IDENTITY, "test-backbone", {"clip_hu": [-1000, 1900]}, RetrievalConfig()
            )
        if update:
            lib.indexes.update()
    return embs


def _snapshot(folder) -> tuple:
    with CaseLibrary.open(folder) as lib:
        return lib.generation, [(c.case_id, c.path) for c in lib.cases()]


def test_cases_survive_a_restart_and_search_finds_each_case(tmp_path):
    embs = _build(tmp_path / "lib")
    with CaseLibrary.open(tmp_path / "lib") as lib:  # a new connection: what a new process sees
        assert [c.case_id for c in lib.cases()] == [f"case{i:03d}" for i in range(6)]
        assert lib.identity == IDENTITY and lib.dim == DIM
        for i, e in enumerate(embs):
            hits = search_global(lib, e.mean, "mean", 3)
            assert hits[0].case_id == f"case{i:03d}" and hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            hit = search_region(lib, e.blocks[2][4], 2, 1)[0]  # a block of scale 2 finds its case and centre
            assert hit.case_id == f"case{i:03d}"
            np.testing.assert_allclose(hit.ras, e.centres[2][4], atol=1e-3)
            assert hit.block_mm == pytest.approx(120.0)


def test_second_writer_gets_a_clear_locked_error(tmp_path):
    _build(tmp_path / "lib", n=1)
    with CaseLibrary.open(tmp_path / "lib", writer=True):
        with pytest.raises(LibraryLockedError, match="is locked: another process is writing"):
            CaseLibrary.open(tmp_path / "lib", writer=True)
        with CaseLibrary.open(tmp_path / "lib") as reader:  # readers need no lock
            assert reader.count() == 1
    CaseLibrary.open(tmp_path / "lib", writer=True).close()  # released


@pytest.mark.parametrize("what", ["backbone", "dimension", "scales", "preprocess", "config"])
def test_other_embeddings_are_refused_and_the_library_is_unchanged(tmp_path, what):
    _build(tmp_path / "lib", n=2)
    before = _snapshot(tmp_path / "lib")
    rng = np.random.default_rng(5)
    emb, identity, pre, cfg = (
        synthetic_embeddings(rng, DIM),
        dict(IDENTITY),
        {"clip_hu": [-1000, 1900]},
        RetrievalConfig(),
    )
    if what == "backbone":
        identity["sha256"] = "b" * 64
    elif what == "dimension":
        emb = synthetic_embeddings(rng, DIM + 1)
    elif what == "scales":
        emb = synthetic_embeddings(rng, DIM, scales=2)
    elif what == "preprocess":
        pre = {"clip_hu": [-1000, 1000]}
    else:
        cfg = RetrievalConfig(block_mm=(20.0, 40.0, 80.0))
    message = {"backbone": "holds embeddings of backbone", "dimension": "dimension|16-d", "scales": "scales"}
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        with pytest.raises(InputError, match=message.get(what, "other")):
            lib.add_case(_source(9), emb, identity, "x", pre, cfg)
    assert _snapshot(tmp_path / "lib") == before


def test_unknown_case_and_empty_library_are_clear_errors(tmp_path):
    _build(tmp_path / "lib", n=2)
    before = _snapshot(tmp_path / "lib")
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        with pytest.raises(InputError, match="No case 'nope'.*case000"):
            lib.remove_case("nope")
    assert _snapshot(tmp_path / "lib") == before
    with pytest.raises(InputError, match="No case library at"):
        CaseLibrary.open(tmp_path / "missing")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="other files"):
        CaseLibrary.open(tmp_path / "user", create=True, writer=True)
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["notes.txt"]


def test_remove_drops_the_case_from_every_index(tmp_path):
    embs = _build(tmp_path / "lib", n=4)
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        removed = lib.remove_case("case001")
        assert removed.path == "/archive/p001/ct.nii.gz"
        lib.indexes.update()
        assert {lib.indexes.state(k).ntotal for k in ("mean", "cls")} == {3}
        assert lib.indexes.state("region0").ntotal == 3 * 6
        assert search_global(lib, embs[1].mean, "mean", 4)[0].case_id != "case001"
        assert all(h.case_id != "case001" for h in search_region(lib, embs[1].blocks[0][0], 0, 4))
        assert lib.count() == 3


def test_an_old_index_file_that_cannot_be_deleted_does_not_fail_the_change(tmp_path, monkeypatch, caplog):
    """`index remove` on a library whose old FAISS files cannot be deleted (read-only or immutable) used to
    remove the case and then exit 2; the removal stands, every index catches up, the old files are left with
    a warning and deleted by a later update."""
    import os

    from voxelfm.cli.main import main

    _build(tmp_path / "lib", n=4)
    real_unlink = os.unlink

    def immutable(path, *a, **kw):
        if str(path).endswith(".faiss"):
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", immutable)
    assert main(["index", "remove", str(tmp_path / "lib"), "case001"]) == 0
    assert caplog.text.count("Could not delete the old index file") == 1
    with CaseLibrary.open(tmp_path / "lib") as lib:
        assert lib.count() == 3 and lib.indexes.check() == []
        assert {lib.indexes.state(k).ntotal for k in ("mean", "cls")} == {3}
    monkeypatch.setattr(os, "unlink", real_unlink)
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        lib.indexes.update()  # nothing to do but the housekeeping left behind
        named = {lib.indexes.state(k).file for k in lib.indexes.kinds}
    assert {p.name for p in (tmp_path / "lib").glob("*.faiss")} == named


def test_an_index_behind_the_database_still_answers_exactly(tmp_path):
    """A writer killed after committing cases but before writing the index files: queries see the new cases
    (searched exactly) and not the removed ones; the next writer catches the files up."""
    embs = _build(tmp_path / "lib", n=3)
    rng = np.random.default_rng(7)
    late = synthetic_embeddings(rng, DIM)
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        lib.add_case(
            _source(7), late, IDENTITY, "test-backbone", {"clip_hu": [-1000, 1900]}, RetrievalConfig()
        )
        lib.remove_case("case000")  # no lib.indexes.update(): the files lag two generations behind
    with CaseLibrary.open(tmp_path / "lib") as lib:
        assert lib.indexes.state("mean").generation < lib.generation
        assert search_global(lib, late.mean, "mean", 1)[0].case_id == "case007"
        assert all(h.case_id != "case000" for h in search_global(lib, embs[0].mean, "mean", 3))
        assert search_region(lib, late.blocks[1][2], 1, 1)[0].case_id == "case007"
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        lib.indexes.update()
        assert lib.indexes.state("mean").generation == lib.generation
        assert lib.indexes.state("mean").ntotal == 3
        assert lib.con.execute("SELECT COUNT(*) FROM removed").fetchone()[0] == 0


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_corrupted_index_file_gives_a_clear_error_and_rebuild_restores_it(tmp_path, damage):
    embs = _build(tmp_path / "lib", n=5)
    with CaseLibrary.open(tmp_path / "lib") as lib:
        expected = [(h.case_id, round(h.score, 5)) for h in search_global(lib, embs[2].mean, "mean", 5)]
        path = tmp_path / "lib" / lib.indexes.state("mean").file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a faiss index" * 50)
    else:
        path.unlink()
    with CaseLibrary.open(tmp_path / "lib") as lib:
        with pytest.raises(IndexDamagedError, match=r"mean index .* is damaged.*voxelfm index rebuild"):
            search_global(lib, embs[2].mean, "mean", 5)
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        extra = synthetic_embeddings(np.random.default_rng(8), DIM)
        lib.add_case(
            _source(8), extra, IDENTITY, "test-backbone", {"clip_hu": [-1000, 1900]}, RetrievalConfig()
        )
        with pytest.raises(IndexDamagedError):  # a writer does not build on a damaged file either
            lib.indexes.update()
        lib.indexes.rebuild()
    with CaseLibrary.open(tmp_path / "lib") as lib:
        assert lib.indexes.check() == []
        got = [(h.case_id, round(h.score, 5)) for h in search_global(lib, embs[2].mean, "mean", 6)]
        assert [g for g in got if g[0] != "case008"] == expected
        assert search_global(lib, extra.mean, "mean", 1)[0].case_id == "case008"
        assert lib.count() == 6


def test_the_compressed_index_is_used_above_the_threshold(tmp_path):
    embs = _build(tmp_path / "lib", n=40)
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        lib.set_policy(IndexPolicy(exact_max=20, points_per_list=4, train_per_list=4, nprobe=16))
        lib.indexes.rebuild()
        assert lib.indexes.state("mean").kind == "ivf-sq8"
        assert lib.indexes.state("region0").kind == "ivf-sq8"  # 240 blocks
        lib.remove_case("case003")
        lib.indexes.update()  # incremental removal from the IVF index
        assert lib.indexes.state("mean").ntotal == 39
    with CaseLibrary.open(tmp_path / "lib") as lib:
        found = [search_global(lib, e.mean, "mean", 1)[0].case_id for e in embs]
        assert found == [f"case{i:03d}" if i != 3 else found[3] for i in range(40)]
        assert found[3] != "case003"


def test_reports_and_findings_are_kept_and_filter_queries(tmp_path):
    embs = _build(tmp_path / "lib", n=4)
    with CaseLibrary.open(tmp_path / "lib", writer=True) as lib:
        lib.set_report("case002", "No focal lesion.", {"nodule": False})
        with pytest.raises(InputError, match="JSON"):
            lib.set_report("case001", "x", {"bad": object()})
    with CaseLibrary.open(tmp_path / "lib") as lib:
        assert lib.report("case002") == "No focal lesion." and lib.findings("case002") == {"nodule": False}
        assert lib.report("case001") is None
        hits = search_global(lib, embs[0].mean, "mean", 3, where=lambda r: r.has_report)
        assert [h.case_id for h in hits] == ["case002"]


def test_a_search_retries_once_only_when_the_index_file_is_missing(tmp_path, monkeypatch):
    """A writer replacing an index file between the reader's row and file read: the reader retries once on a
    fresh snapshot. Any other damage is reported at once, whatever its message says (typed, not by text)."""
    embs = _build(tmp_path / "lib", n=4)
    real_load = IndexSet.load
    raised = []

    def load_failing_once(error):
        def load(self, kind, state=None):
            if not raised:
                raised.append(kind)
                raise error(f"the {kind} index file is missing")
            return real_load(self, kind, state)

        return load

    with CaseLibrary.open(tmp_path / "lib") as lib:
        expected = search_global(lib, embs[1].mean, "mean", 2)
        monkeypatch.setattr(IndexSet, "load", load_failing_once(IndexFileMissingError))
        assert search_global(lib, embs[1].mean, "mean", 2) == expected and raised == ["mean"]
        raised.clear()
        monkeypatch.setattr(IndexSet, "load", load_failing_once(IndexDamagedError))
        with pytest.raises(IndexDamagedError, match="is missing"):
            search_global(lib, embs[1].mean, "mean", 2)


def test_no_library_is_its_own_error_type(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoLibraryError, match="No case library at"):
        CaseLibrary.open(tmp_path / "empty")

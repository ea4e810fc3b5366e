"""Merging segments (qa.index.segments.merge): the policy that picks them, and merges of real
indexes that rank as before, drop tombstones, keep translations across segments and survive a
crash. Real model and real FAISS on the seed corpus; a stand-in embedder for the build loop."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from qa.config import Settings
from qa.index.build import build_index
from qa.index.format import current_version
from qa.index.load import open_index
from qa.index.segments import MAX_SEGMENTS, SegmentedIndex
from qa.index.segments.merge import MERGE_FACTOR, merge_index, merge_range
from qa.language_stats import LanguageStats
from qa.retrieval import retrieve
from tests.conftest import ROOT


def _merged(sizes: list[int], span: tuple[int, int]) -> list[int]:
    first, end = span
    return sizes[:first] + [sum(sizes[first:end])] + sizes[end:]


def test_segments_of_one_tier_merge_and_smaller_runs_wait():
    assert merge_range([100_000]) is None and merge_range([100_000, 10]) is None
    assert merge_range([100_000] + [5_000] * (MERGE_FACTOR - 1)) is None  # a run one short
    assert merge_range([100_000] + [5_000] * MERGE_FACTOR) == (1, 1 + MERGE_FACTOR)
    # The run of the lowest tier merges first; a bigger segment between runs is left.
    sizes = [10**6] + [20_000] * MERGE_FACTOR + [300_000] + [2_000] * MERGE_FACTOR
    assert merge_range(sizes) == (MERGE_FACTOR + 2, 2 * MERGE_FACTOR + 2)
    # Four small segments of one tier, however many tombstones made them small, never the first.
    assert merge_range([10, 10, 10, 10, 10]) == (1, 5)


def test_past_the_segment_limit_the_smallest_neighbours_merge():
    sizes = [10**6, 900_000, 50_000, 200_000, 1_500, 30_000, 120_000, 60_000, 700_000]  # 9: one too many
    assert len(sizes) == MAX_SEGMENTS + 1
    first, end = merge_range(sizes)
    assert end - first == 2 and first >= 1
    merged = _merged(sizes, (first, end))
    assert len(merged) == MAX_SEGMENTS
    windows = [sum(sizes[i : i + 2]) for i in range(1, len(sizes) - 1)]
    assert sum(sizes[first:end]) == min(windows)  # 1,500 + 30,000


@pytest.mark.parametrize("added", [100, 1_000, 10_000])
def test_adds_to_a_large_index_stay_few_segments_and_write_a_few_times_what_they_add(added):
    """1,000 adds to a 10M-passage index, each merged as `qa index` merges: at most `MAX_SEGMENTS`
    segments at any time, the first never rewritten, and the passages written (adds and merges)
    a bounded multiple of those added (a passage is rewritten about once per tier it climbs)."""
    sizes, written, most = [10_000_000], 0, 1
    for _ in range(1_000):
        sizes.append(added)
        written += added
        while (span := merge_range(sizes)) is not None:
            assert span[0] >= 1 and span[1] - span[0] >= 2
            written += sum(sizes[span[0] : span[1]])
            sizes = _merged(sizes, span)
        most = max(most, len(sizes))
        assert sizes[0] == 10_000_000
    assert most <= MAX_SEGMENTS
    assert written <= 14 * added * 1_000  # measured 10.4x (10k), 12.6x (1k), 12.0x (100)


def _age(corpus) -> None:
    # Files written just before a build are racily clean (read again whatever their record says,
    # as in git's index): set back an hour, as in a corpus written well before it is indexed.
    old = time.time_ns() - 3600 * 10**9
    for path in corpus.iterdir():
        os.utime(path, ns=(old, old))


def test_an_add_merges_segments_once_enough_pile_up(tmp_path):
    """`qa index` after small changes: segments accumulate, then merge into one right after the
    add that completes a tier (the index answers from the merged version), a re-run writes
    nothing and reads no corpus file again, and `merge_index(everything=True)` leaves one version
    with the same articles."""
    from tests.fakes import FakeEmbedder
    from tests.test_store import write_article

    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", chunk_tokens=64)
    settings.corpus_dir.mkdir()
    embedder = FakeEmbedder()
    for n in range(40):
        write_article(settings.corpus_dir, n)
    _age(settings.corpus_dir)
    build_index(settings=settings, embedder=embedder)
    reports = []
    for n in range(40, 40 + MERGE_FACTOR):
        write_article(settings.corpus_dir, n)
        _age(settings.corpus_dir)
        reports.append(build_index(settings=settings, embedder=embedder))
    assert [r.merged for r in reports] == [0] * (MERGE_FACTOR - 1) + [MERGE_FACTOR]
    assert [r.segments for r in reports] == [2, 3, MERGE_FACTOR][: MERGE_FACTOR - 1] + [2]
    index = open_index(settings.index_dir)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 2
    assert index.store.n_articles == 40 + MERGE_FACTOR == reports[-1].articles
    again = build_index(settings=settings, embedder=embedder)
    assert again.up_to_date and again.files_read == 0  # the build key and the files' record carried over

    (settings.corpus_dir / "article-41.txt").unlink()  # a tombstone in the merged segment
    build_index(settings=settings, embedder=embedder)
    before = open_index(settings.index_dir)
    assert (~before.alive).sum() > 0
    report = merge_index(settings, everything=True)
    index = open_index(settings.index_dir)
    assert not isinstance(index, SegmentedIndex) and report.segments_after == 1
    assert report.tombstones_dropped == (~before.alive).sum() and len(index) == before.alive.sum()
    assert "article-41" not in " ".join(index.article(d).source for d in index.articles)
    assert merge_index(settings, everything=True) is None  # one version: nothing to merge
    assert build_index(settings=settings, embedder=embedder).up_to_date


def test_segments_whose_every_passage_is_deleted_merge_away(tmp_path):
    from tests.fakes import FakeEmbedder
    from tests.test_store import write_article

    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", chunk_tokens=64)
    settings.corpus_dir.mkdir()
    embedder = FakeEmbedder()
    for n in range(40):
        write_article(settings.corpus_dir, n)
    first = build_index(settings=settings, embedder=embedder)
    first_ids = sorted(open_index(settings.index_dir).articles)
    for n in range(40, 40 + MERGE_FACTOR):
        write_article(settings.corpus_dir, n)
        build_index(settings=settings, embedder=embedder, merge=False)
    for n in range(40, 40 + MERGE_FACTOR):
        (settings.corpus_dir / f"article-{n}.txt").unlink()
    report = build_index(settings=settings, embedder=embedder)  # a delete only: then the empty run merges
    index = open_index(settings.index_dir)
    assert report.merged == MERGE_FACTOR and isinstance(index, SegmentedIndex) and len(index.segments) == 1
    assert len(index) == first.passages and index.alive is None
    assert sorted(index.articles) == first_ids


# Two translations first; the third (Japanese) and the two French-only articles added one by one,
# then an edit: four segments after the first, the run that merges. The Japanese passages'
# translations are links across segments, which the merge must carry.
FIRST = ["de-nadella-koenigsmacher.txt", "fr-nadella-faiseur-de-rois.txt"]
ADDS = ["ja-nadella-kingmaker.txt", "fr-employes-openai-vers-microsoft.txt", "fr-pourquoi-microsoft-a-besoin-de-sam-altman.txt"]
EDITED = "fr-employes-openai-vers-microsoft.txt"
NEW_FACT = "Le nouveau responsable de la cantine du siège s'appelle Gaston Lagaffe depuis lundi."


def _questions() -> list[tuple[str, list[str]]]:
    facts = json.loads((ROOT / "tests" / "data" / "seed_questions.json").read_text(encoding="utf-8"))
    return [(q, fact["evidence"]) for fact in facts for q in fact["questions"].values()]


def _rankings(settings: Settings) -> list[list[tuple[str, str, float, int]]]:
    return [
        [(p.doc_id, p.text, p.score, len(p.translations)) for p in retrieve(q, k=10, settings=settings)]
        for q, _ in _questions()
    ]


def _hits(rankings, k: int = 5) -> int:
    return sum(any(e in text for _, text, _, _ in ranking[:k] for e in evidence)
               for ranking, (_, evidence) in zip(rankings, _questions()))


@pytest.fixture(scope="module")
def piled_up(tmp_path_factory) -> tuple[Settings, list, str]:
    """The seed corpus added a segment at a time (merges off), then the edit. Returns the
    settings, the rankings of every seed question before any merge and the edited article's
    old doc_id."""
    root = tmp_path_factory.mktemp("merge")
    settings = Settings(corpus_dir=root / "corpus", index_dir=root / "index")
    settings.corpus_dir.mkdir()
    for name in FIRST:
        shutil.copy(ROOT / "corpus" / name, settings.corpus_dir / name)
    build_index(settings=settings)
    for name in ADDS:
        shutil.copy(ROOT / "corpus" / name, settings.corpus_dir / name)
        build_index(settings=settings, segments="segment", merge=False)
    old_ids = set(open_index(settings.index_dir).articles)
    edited = settings.corpus_dir / EDITED
    edited.write_text(edited.read_text(encoding="utf-8").rstrip() + "\n\n" + NEW_FACT + "\n", encoding="utf-8")
    build_index(settings=settings, segments="segment", merge=False)
    index = open_index(settings.index_dir)
    assert len(index.segments) == 1 + MERGE_FACTOR and (~index.alive).sum() > 0
    gone = next(d for d in old_ids if d not in index.articles)
    return settings, _rankings(settings), gone


def _working_copy(settings: Settings, folder) -> Settings:
    """`settings` with a copy of its index in `folder` (each test merges its own)."""
    shutil.copytree(settings.index_dir, folder)
    return settings.model_copy(update={"index_dir": folder})


@pytest.mark.slow
def test_a_merge_ranks_as_the_segments_did(piled_up):
    settings, before, gone = piled_up
    work = settings.index_dir.parent / "merged"
    settings = _working_copy(settings, work)
    report = merge_index(settings)  # the policy: the four segments after the first, one tier
    assert report.merged_segments == MERGE_FACTOR and report.segments_after == 2 and report.tombstones_dropped > 0
    index = open_index(work)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 2 and index.alive is None
    after = _rankings(settings)
    # The same passages found: BM25's statistics no longer count the dropped tombstones, so a
    # score may move a little, the evidence found does not.
    assert _hits(after) == _hits(before) and _hits(after, 1) == _hits(before, 1)
    same_top = sum([r[:2] for r in a[:5]] == [r[:2] for r in b[:5]] for a, b in zip(after, before))
    assert same_top >= 0.9 * len(before)
    assert all(doc != gone for ranking in after for doc, *_ in ranking)
    top = retrieve("Comment s'appelle le nouveau responsable de la cantine du siège ?", k=3, settings=settings)
    assert "Gaston Lagaffe" in top[0].text
    # The Japanese article's translations (links from the first segment into a merged one) are kept.
    nadella = retrieve("Satya Nadella", k=5, settings=settings)
    assert any("ja" in {t.lang for t in p.translations} for p in nadella if p.lang != "ja")
    # The statistics are those of the live vectors, as before the merge.
    live = np.arange(len(index))
    fitted = LanguageStats.fit(index.passage_vectors_at(live), index.langs[live])
    np.testing.assert_allclose(index.lang_stats.means, fitted.means, atol=1e-3)
    np.testing.assert_allclose(index.lang_stats.covariances, fitted.covariances, atol=1e-4)


@pytest.mark.slow
def test_merging_everything_gives_one_version_that_ranks_the_same(piled_up):
    settings, before, _ = piled_up
    work = settings.index_dir.parent / "everything"
    settings = _working_copy(settings, work)
    merge_index(settings, everything=True)
    index = open_index(work)
    assert not isinstance(index, SegmentedIndex)
    after = _rankings(settings)
    assert _hits(after) == _hits(before)
    # Translation groups whole again inside one version: as many translations shown as before.
    shown = sum(n for ranking in after for *_, n in ranking[:5])
    assert shown == sum(n for ranking in before for *_, n in ranking[:5])


@pytest.mark.slow
def test_a_crash_mid_merge_leaves_the_previous_version_live(piled_up, tmp_path, monkeypatch):
    from qa.index.segments import add

    settings = _working_copy(piled_up[0], tmp_path / "index")
    live = current_version(settings.index_dir)

    def interrupted(path, data):
        raise KeyboardInterrupt  # Ctrl-C once the merged segment is written

    monkeypatch.setattr(add, "write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_index(settings)
    assert current_version(settings.index_dir) == live and not list(settings.index_dir.glob(".record-*"))
    assert retrieve("What percentage of OpenAI does Microsoft own?", settings=settings)
    monkeypatch.undo()
    report = merge_index(settings)
    assert current_version(settings.index_dir) == report.version != live
    assert not list(settings.index_dir.glob(".building-*")) and not list(settings.index_dir.glob(".record-*"))
    assert (settings.index_dir / report.version / "corpus_files.npz").is_file()  # carried to the merged version


@pytest.mark.slow
def test_qa_index_merge_makes_one_version(piled_up, tmp_path):
    from tests.test_cli_first_run import run_qa

    settings, _, _ = piled_up
    shutil.copytree(settings.index_dir, tmp_path / "index")
    out = run_qa("index", "--merge", index_dir=tmp_path / "index", extra_env={"QA_CORPUS_DIR": str(settings.corpus_dir)})
    assert out.returncode == 0, out.stderr
    assert "Index is up to date" in out.stdout and "Merged 5 segments into one" in out.stdout
    assert not isinstance(open_index(tmp_path / "index"), SegmentedIndex)
    again = run_qa("index", "--merge", index_dir=tmp_path / "index", extra_env={"QA_CORPUS_DIR": str(settings.corpus_dir)})
    assert "Index is up to date" in again.stdout and "Nothing to merge" in again.stdout

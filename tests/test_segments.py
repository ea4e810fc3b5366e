"""Segmented index versions (qa.index.segments): a small change to a live index is written as a
new segment, removed articles as tombstones, the statistics from sums; the reader serves every
segment as one index. Real model and real FAISS, on the seed corpus split in two."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.errors import InvalidQuestionError
from qa.index.build import build_index
from qa.index.format import STAMPS, current_version
from qa.index.load import open_index
from qa.index.segments import SEGMENT_DIR, SegmentedIndex
from qa.language_stats import LanguageStats
from qa.retrieval import retrieve
from tests.conftest import ROOT

# The three translations of one article first (translation groups are found within a segment),
# the two other articles added as a segment.
FIRST = ["de-nadella-koenigsmacher.txt", "fr-nadella-faiseur-de-rois.txt", "ja-nadella-kingmaker.txt"]
ADDED = ["fr-employes-openai-vers-microsoft.txt", "fr-pourquoi-microsoft-a-besoin-de-sam-altman.txt"]


def _copy(names: list[str], corpus: Path) -> None:
    corpus.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(ROOT / "corpus" / name, corpus / name)


def _questions(seed_facts: list[dict]) -> list[tuple[str, list[str]]]:
    return [(q, fact["evidence"]) for fact in seed_facts for q in fact["questions"].values()]


@pytest.fixture(scope="module")
def two_step(tmp_path_factory) -> tuple[Settings, str]:
    """The seed corpus indexed in two steps: 3 articles, then 2 added as a segment. Returns the
    settings and the first version's name."""
    root = tmp_path_factory.mktemp("segments")
    settings = Settings(corpus_dir=root / "corpus", index_dir=root / "index")
    _copy(FIRST, settings.corpus_dir)
    first = build_index(settings=settings).version
    _copy(ADDED, settings.corpus_dir)
    build_index(settings=settings, segments="segment")
    return settings, first


def _top_texts(question: str, settings: Settings) -> list[str]:
    return [p.text for p in retrieve(question, k=5, settings=settings)]


def _hits_and_lists(settings: Settings, seed_facts: list[dict]) -> tuple[int, list[list[str]]]:
    hits, lists = 0, []
    for question, evidence in _questions(seed_facts):
        texts = _top_texts(question, settings)
        hits += any(e in text for text in texts for e in evidence)  # hit@5, as `qa eval --hits` counts it
        lists.append(texts)
    return hits, lists


@pytest.mark.slow
def test_an_added_segment_answers_as_one_index_of_everything(two_step, seed_settings, seed_facts):
    settings, _ = two_step
    index = open_index(settings.index_dir)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 2
    assert len(index) == len(open_index(seed_settings.index_dir))
    # The dense and sentence stages alone (the next test adds BM25).
    dense = {"lexical_weight": 0.0}
    hits, lists = _hits_and_lists(settings.model_copy(update=dense), seed_facts)
    whole_hits, whole_lists = _hits_and_lists(seed_settings.model_copy(update=dense), seed_facts)
    assert hits == whole_hits
    # The scores agree to ~0.01 (the question means come from another sample); what differs is the
    # translation groups, found within each segment with the statistics it was written with, so
    # a few lists fold or show translations differently (measured: 37 of 46 lists identical).
    same = sum(a == b for a, b in zip(lists, whole_lists))
    assert same >= 0.75 * len(lists)


@pytest.mark.slow
def test_the_full_ranking_of_segments_has_the_hits_of_one_index(two_step, seed_settings, seed_facts):
    assert _hits_and_lists(two_step[0], seed_facts)[0] == _hits_and_lists(seed_settings, seed_facts)[0]


@pytest.mark.slow
def test_an_answer_cites_passages_of_both_segments(two_step):
    from qa.answer import ask

    settings, _ = two_step
    answer = ask("What percentage of OpenAI does Microsoft own?", settings=settings, generate=False)
    assert answer.found and any("49" in c.evidence for c in answer.citations)
    added = {open_index(settings.index_dir).segments[1].store.article_at(n).doc_id for n in range(2)}
    answer = ask("Pourquoi Microsoft a-t-il besoin de Sam Altman ?", settings=settings, generate=False)
    assert answer.found and any(c.passage.doc_id in added for c in answer.citations)


@pytest.mark.slow
def test_an_add_writes_only_the_new_segment(two_step):
    settings, first = two_step
    version = current_version(settings.index_dir)
    new_dir, old_dir = settings.index_dir / version, settings.index_dir / first
    linked = new_dir / SEGMENT_DIR / first
    old_files = [p for p in old_dir.rglob("*") if p.is_file() and p.name != STAMPS]
    assert old_files and all(
        os.stat(linked / p.relative_to(old_dir)).st_ino == os.stat(p).st_ino for p in old_files
    )  # the previous version's files, hard-linked: no byte of them written again
    written = [p for p in new_dir.rglob("*") if p.is_file() and os.stat(p).st_nlink == 1]
    new_segment = next(p for p in (new_dir / SEGMENT_DIR).iterdir() if p.is_dir() and p.name != first)
    assert all(p.parent == new_dir or new_segment in p.parents or p.name == STAMPS for p in written)
    # The previous version still loads on its own, as it was.
    assert len(open_index(settings.index_dir, first)) == len(open_index(settings.index_dir).segments[0])


DELETED = "ja-nadella-kingmaker.txt"
EDITED = "fr-employes-openai-vers-microsoft.txt"
NEW_FACT = "Le nouveau responsable de la cantine du siège s'appelle Gaston Lagaffe depuis lundi."


@pytest.fixture(scope="module")
def changed(two_step, tmp_path_factory) -> tuple[Settings, set[str], str]:
    """`two_step` copied, then one article of the first segment deleted and one of the second
    edited, added as a third segment. Returns the settings, the doc_ids gone and the new one's."""
    settings, _ = two_step
    root = tmp_path_factory.mktemp("changed")
    shutil.copytree(settings.corpus_dir, root / "corpus")
    shutil.copytree(settings.index_dir, root / "index")
    settings = settings.model_copy(update={"corpus_dir": root / "corpus", "index_dir": root / "index"})
    before = open_index(settings.index_dir)
    old_ids = set(before.articles)
    (settings.corpus_dir / DELETED).unlink()
    edited = settings.corpus_dir / EDITED
    edited.write_text(edited.read_text(encoding="utf-8").rstrip() + "\n\n" + NEW_FACT + "\n", encoding="utf-8")
    build_index(settings=settings, segments="segment")
    after = open_index(settings.index_dir)
    # (iterating a segmented index's articles lists every article number, tombstoned ones too:
    # `in` tells the live ones)
    gone = {doc_id for doc_id in old_ids if doc_id not in after.articles}
    added = {doc_id for doc_id in after.articles if doc_id not in old_ids}
    return settings, gone, added.pop()


@pytest.mark.slow
def test_deleted_and_edited_articles_are_never_returned(changed, seed_facts):
    settings, gone, new_id = changed
    index = open_index(settings.index_dir)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 3 and len(gone) == 2
    assert index.alive is not None and (~index.alive).sum() > 0
    for doc_id in gone:
        assert doc_id not in index.articles
    live = np.flatnonzero(index.alive)
    assert {index.passage(r).doc_id for r in live.tolist()}.isdisjoint(gone)
    for question, _ in _questions(seed_facts):
        for passage in retrieve(question, k=10, settings=settings):
            assert passage.doc_id not in gone
            assert all(t.doc_id not in gone for t in passage.translations)
    top = retrieve("Comment s'appelle le nouveau responsable de la cantine du siège ?", k=3, settings=settings)
    assert top[0].doc_id == new_id and "Gaston Lagaffe" in top[0].text
    # Filters read the articles of every segment; tombstones stay out under them too.
    french = retrieve("Qui dirige OpenAI ?", k=10, settings=settings, langs="fr")
    assert french and all(p.lang == "fr" and p.doc_id not in gone for p in french)
    with pytest.raises(InvalidQuestionError, match="no passage is in 'ja'"):  # the one Japanese article: deleted
        retrieve("Qui dirige OpenAI ?", k=10, settings=settings, langs="ja")


@pytest.mark.slow
def test_statistics_from_sums_equal_those_fitted_on_the_surviving_vectors(changed):
    settings, _, _ = changed
    index = open_index(settings.index_dir)
    live = np.flatnonzero(index.alive)
    fitted = LanguageStats.fit(index.passage_vectors_at(live), index.langs[live])
    assert index.lang_stats.langs == fitted.langs
    # Within 1e-3: the sums were taken of the float32 vectors, the fit here of the stored int8
    # codes (index format 6: a dot product moves by up to ~1e-3, a mean coordinate measured 2e-4).
    np.testing.assert_allclose(index.lang_stats.means, fitted.means, atol=1e-3)
    np.testing.assert_allclose(index.lang_stats.covariances, fitted.covariances, atol=1e-4)
    # Sentences: those of the live passages' articles (stored as int8 codes, hence the tolerance).
    sentences = np.unique(np.asarray(index.sentence_member[index.sentence_links(live)], np.int64))
    sentence_langs = [index.article(index.sentence_span(s)[0]).lang for s in sentences.tolist()]
    fitted = LanguageStats.fit(index.sentence_vectors_at(sentences), sentence_langs)
    np.testing.assert_allclose(index.sentence_stats.means, fitted.means, atol=1e-3)


@pytest.mark.slow
def test_a_crash_mid_add_leaves_the_previous_version_live(two_step, tmp_path, monkeypatch):
    from qa.index.segments import add as segments

    settings, _ = two_step
    shutil.copytree(settings.corpus_dir, tmp_path / "corpus")
    shutil.copytree(settings.index_dir, tmp_path / "index")
    settings = settings.model_copy(update={"corpus_dir": tmp_path / "corpus", "index_dir": tmp_path / "index"})
    live = current_version(settings.index_dir)
    (settings.corpus_dir / DELETED).unlink()

    def interrupted(path, data):
        raise KeyboardInterrupt  # Ctrl-C once the new segment and the tombstones are written

    monkeypatch.setattr(segments, "write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_index(settings=settings, segments="segment")
    assert current_version(settings.index_dir) == live
    assert retrieve("What percentage of OpenAI does Microsoft own?", settings=settings)
    monkeypatch.undo()
    report = build_index(settings=settings, segments="segment")
    assert current_version(settings.index_dir) == report.version != live
    assert not list(settings.index_dir.glob(".building-*"))
    assert len(open_index(settings.index_dir, live)) == len(open_index(settings.index_dir))


def _fake_corpus(folder: Path, articles: range) -> None:
    from tests.test_store import write_article

    folder.mkdir(exist_ok=True)
    for n in articles:
        write_article(folder, n)


def test_a_small_change_is_a_segment_and_a_large_one_a_full_build(tmp_path, monkeypatch):
    from qa.index import verify
    from tests.fakes import FakeEmbedder

    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", chunk_tokens=64)
    embedder = FakeEmbedder()
    _fake_corpus(settings.corpus_dir, range(20))
    first = build_index(settings=settings, embedder=embedder)
    assert not isinstance(open_index(settings.index_dir), SegmentedIndex)
    assert build_index(settings=settings, embedder=embedder).up_to_date  # nothing changed: nothing written

    _fake_corpus(settings.corpus_dir, range(20, 21))  # 1 article of 20: 5 %
    added = build_index(settings=settings, embedder=embedder)
    index = open_index(settings.index_dir)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 2
    assert added.articles == 21 and added.passages == len(index) == first.passages + len(index.segments[1])
    assert added.embedded == len(index.segments[1])  # only the new article's passages
    assert build_index(settings=settings, embedder=embedder).up_to_date

    _fake_corpus(settings.corpus_dir, range(21, 24))  # 3 of 21: 14 %, over SEGMENT_SHARE
    merged = build_index(settings=settings, embedder=embedder)
    index = open_index(settings.index_dir)
    assert not isinstance(index, SegmentedIndex) and index.manifest.index.type == "per_language"
    assert merged.articles == 24 and merged.reused == len(index) - merged.embedded

    import qa.index.segments as package

    monkeypatch.setattr(package, "MAX_SEGMENTS", 3)
    _fake_corpus(settings.corpus_dir, range(24, 25))
    build_index(settings=settings, embedder=embedder)
    _fake_corpus(settings.corpus_dir, range(26, 27))
    build_index(settings=settings, embedder=embedder)  # the oldest version removed: its files had other links
    # The linked files keep their verified stamps through the links and the older version's
    # removal (both move their change time): loading the new version hashes none of them again.
    hashed = []
    monkeypatch.setattr(verify, "_checksum_fd", lambda fd: hashed.append(fd) or "crc32:00000000")
    index = open_index(settings.index_dir)
    assert len(index.segments) == 3 and hashed == []
    monkeypatch.undo()
    monkeypatch.setattr(package, "MAX_SEGMENTS", 3)
    first = index.segments[0].path.name
    _fake_corpus(settings.corpus_dir, range(27, 28))  # a fourth segment would pass MAX_SEGMENTS: two merge
    report = build_index(settings=settings, embedder=embedder)
    index = open_index(settings.index_dir)
    assert report.merged == 2 and report.segments == len(index.segments) == 3
    assert index.segments[0].path.name == first  # the first segment is never rewritten by an add
    assert index.store.n_articles == report.articles == 27

    _fake_corpus(settings.corpus_dir, range(25, 26))
    build_index(settings=settings, embedder=embedder, segments="rebuild")  # `qa index --rebuild`
    assert not isinstance(open_index(settings.index_dir), SegmentedIndex)
    (settings.corpus_dir / "article-25.txt").unlink()
    build_index(settings=settings, embedder=embedder, segments="segment")  # `qa index --segment`: a delete only
    index = open_index(settings.index_dir)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 1 and (~index.alive).sum() > 0
    assert "article-25" not in " ".join(index.article(d).source for d in index.articles if d in index.articles)
    # A second delete adds its rows' sums to the first's: the statistics stay those of the live rows.
    dead = int((~index.alive).sum())
    (settings.corpus_dir / "article-7.txt").unlink()
    build_index(settings=settings, embedder=embedder, segments="segment")
    index = open_index(settings.index_dir)
    live = np.flatnonzero(index.alive)
    assert len(index.segments) == 1 and len(index) - len(live) > dead
    fitted = LanguageStats.fit(index.passage_vectors_at(live), index.langs[live])
    np.testing.assert_allclose(index.lang_stats.means, fitted.means, atol=1e-3)
    np.testing.assert_allclose(index.lang_stats.covariances, fitted.covariances, atol=1e-3)

"""An add never leaves stale metadata live: an article read again with the same title and text
(the same doc_id) but another date, URL or file is written again in the new segment, its old
rows tombstoned and its passages' and sentences' vectors reused
(`qa.index.segments.changed_articles`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.index.build import build_index
from qa.index.corpus_files import CORPUS_FILES
from qa.index.format import current_version
from qa.index.load import open_index
from qa.index.segments import SegmentedIndex, merge_index
from tests.fakes import FakeEmbedder


def write_article(folder: Path, n: int, date: str = "2024-01-01", url: str | None = None, name: str = "") -> Path:
    body = " ".join(f"Sentence {i} of article {n} is about harbour number {n}." for i in range(12))
    record = {"title": f"Harbour {n}", "text": body, "date": date, "url": url or f"https://example.org/{n}"}
    path = folder / (name or f"article-{n}.jsonl")
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path


def live_article(settings: Settings, n: int):
    """The live article titled 'Harbour n' (a doc_id names the live one: a segmented index's
    articles list its tombstoned copy too)."""
    index = open_index(settings.index_dir)
    (doc_id,) = {d for d in index.articles if index.article(d).title == f"Harbour {n}"}
    return index, index.article(doc_id)


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Settings, FakeEmbedder]:
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index", chunk_tokens=64)
    settings.corpus_dir.mkdir()
    for n in range(30):
        write_article(settings.corpus_dir, n)
    embedder = FakeEmbedder()
    build_index(settings=settings, embedder=embedder)
    return settings, embedder


def test_a_new_date_that_comes_with_an_add_is_live_and_its_vectors_reused(indexed):
    settings, embedder = indexed
    _, before = live_article(settings, 3)
    write_article(settings.corpus_dir, 3, date="2024-02-29")  # a corrected date, same title and text
    write_article(settings.corpus_dir, 30)  # a new article: 2 changes of 30, a segment
    embedder.embedded.clear()
    report = build_index(settings=settings, embedder=embedder)

    index, after = live_article(settings, 3)
    assert isinstance(index, SegmentedIndex) and len(index.segments) == 2
    assert after.doc_id == before.doc_id and after.date == "2024-02-29"
    assert report.articles == index.manifest.corpus.articles == 31 and report.removed_articles == 0
    assert report.languages == {"en": 31}  # the tombstoned copy is not counted
    assert report.updated_articles == 1 and report.sentences_embedded == 12  # the new article's only
    whole = build_index(settings=settings.model_copy(update={"index_dir": settings.index_dir.parent / "whole"}),
                        embedder=embedder)
    assert report.sentences == whole.sentences  # the live ones, as one index of the same corpus has
    # The changed article is in the new segment, its first copy tombstoned, its passages' vectors
    # reused: only the new article's passages were embedded.
    segment = index.segments[1]
    assert {segment.store.article_at(i).title for i in range(2)} == {"Harbour 3", "Harbour 30"}
    new_passages = [segment.passage(row).text for row in range(len(segment))]
    assert report.embedded == sum("harbour number 30." in text for text in new_passages) > 0
    assert not any("harbour number 3." in text for text in embedder.embedded[: report.embedded])
    rows = [r for r in range(len(index)) if index.passage(r).doc_id == after.doc_id]
    alive = [r for r in rows if index.alive[r]]
    assert len(rows) == 2 * len(alive) > 0  # the first copy's rows are tombstoned
    assert build_index(settings=settings, embedder=embedder).up_to_date


def test_a_metadata_change_alone_is_a_segment_not_a_full_build(indexed, capsys):
    settings, embedder = indexed
    write_article(settings.corpus_dir, 5, url="https://example.org/moved/5")
    embedder.embedded.clear()
    report = build_index(settings=settings, embedder=embedder, progress=True)
    assert "Embedding" not in capsys.readouterr().err  # nothing embedded: no bar, not even an empty one
    index, after = live_article(settings, 5)
    assert isinstance(index, SegmentedIndex) and index.segments[1].store.n_articles == 1
    assert after.url == "https://example.org/moved/5" and report.articles == 30
    # The text did not change: no passage or sentence embedded again, the very vectors reused.
    assert report.embedded == report.sentences_embedded == 0 and embedder.embedded == []
    rows = [r for r in range(len(index)) if index.passage(r).doc_id == after.doc_id]
    old, new = [np.concatenate([index.sentences_of(r) for r in rows if index.alive[r] == live]) for live in (0, 1)]
    assert len(old) == len(new) > 0
    assert np.array_equal(index.sentence_vectors_at(old), index.sentence_vectors_at(new))
    assert np.array_equal(index.passage_vectors_at(np.array(rows[: len(rows) // 2])),
                          index.passage_vectors_at(np.array(rows[len(rows) // 2 :])))


def test_a_moved_file_gives_its_new_source(indexed):
    settings, embedder = indexed
    (settings.corpus_dir / "article-7.jsonl").rename(settings.corpus_dir / "renamed.jsonl")
    write_article(settings.corpus_dir, 30)
    build_index(settings=settings, embedder=embedder)
    index, after = live_article(settings, 7)
    assert isinstance(index, SegmentedIndex) and after.source == "renamed.jsonl#1"


def test_without_the_corpus_record_the_stored_article_is_compared(indexed):
    settings, embedder = indexed
    (settings.index_dir / current_version(settings.index_dir) / CORPUS_FILES).unlink()
    write_article(settings.corpus_dir, 9, date="2023-12-31")
    report = build_index(settings=settings, embedder=embedder)
    index, after = live_article(settings, 9)
    assert after.date == "2023-12-31" and index.segments[1].store.n_articles == 1
    assert report.embedded == 0
    # Every other article was read again and found equal to its stored record: none rewritten.
    assert report.articles == 30


def test_a_merge_keeps_the_new_metadata(indexed):
    settings, embedder = indexed
    write_article(settings.corpus_dir, 11, date="2025-05-05")
    write_article(settings.corpus_dir, 30)
    build_index(settings=settings, embedder=embedder)
    merge_index(settings, everything=True)  # `qa index --merge`: the tombstoned copy is dropped
    index, after = live_article(settings, 11)
    assert not isinstance(index, SegmentedIndex) and after.date == "2025-05-05"
    assert index.manifest.corpus.articles == len(list(index.store.doc_ids())) == 31


@pytest.mark.slow
def test_a_corrected_date_is_what_the_answer_cites(tmp_path: Path):
    """The demo corpus as JSON lines with dates, the real model: a corrected date of one article,
    indexed as an add (`qa index --segment`), is the date the answer's citation shows."""
    from qa.answer import ask
    from tests.conftest import ROOT

    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    settings.corpus_dir.mkdir()

    def write_corpus(dates: dict[str, str]) -> None:
        for path in sorted((ROOT / "corpus").glob("*.txt")):
            title, _, text = path.read_text(encoding="utf-8").strip().partition("\n")
            record = {"title": title, "text": text.strip(), "date": dates.get(path.stem, "2023-11-20")}
            (settings.corpus_dir / f"{path.stem}.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")

    write_corpus({})
    build_index(settings=settings)
    question, evidence = "What did Ilya Sutskever say he regretted?", "Ilya Sutskever, a exprimé ses regrets"
    assert [c.date for c in ask(question, settings=settings).citations if evidence in c.evidence] == ["2023-11-20"]

    write_corpus({"fr-employes-openai-vers-microsoft": "2023-11-21"})
    write_article(settings.corpus_dir, 1)  # and an article added with it
    report = build_index(settings=settings, segments="segment")
    assert report.articles == 6 and report.segments == 2
    segment = open_index(settings.index_dir).segments[1]  # the new article and the dated one, whose
    texts = [segment.passage(row).text for row in range(len(segment))]  # passages' vectors are reused
    assert report.embedded == sum("harbour number 1." in text for text in texts) < len(texts)
    cited = [c for c in ask(question, settings=settings).citations if evidence in c.evidence]
    assert [c.date for c in cited] == ["2023-11-21"]


def test_a_line_inserted_at_the_top_of_a_file_moves_every_later_source(indexed):
    """A feed or JSON-lines file that gains an entry at its top: each later entry's source
    (`#N`) moves. Those articles are updated, not kept with a source naming another entry."""
    settings, embedder = indexed
    feed = settings.corpus_dir / "feed.jsonl"
    lines = [json.dumps({"title": f"Quay {n}", "text": f"Quay {n} opened in spring after a long delay."}) for n in range(3)]
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    build_index(settings=settings, embedder=embedder)
    newest = json.dumps({"title": "Quay 9", "text": "Quay 9 closed for the winter storms."})
    feed.write_text(newest + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    embedder.embedded.clear()
    report = build_index(settings=settings, embedder=embedder)  # 4 changes of 33: a full build
    index = open_index(settings.index_dir)
    sources = {index.article(d).title: index.article(d).source for d in set(index.articles)}
    assert {t: s for t, s in sources.items() if t.startswith("Quay")} == {
        "Quay 9": "feed.jsonl#1", "Quay 0": "feed.jsonl#2", "Quay 1": "feed.jsonl#3", "Quay 2": "feed.jsonl#4"
    }
    assert report.updated_articles == 3 and report.embedded == 1  # only the new entry embedded


def test_a_gone_file_whose_article_another_file_gives_too_is_cited_from_that_one(indexed):
    settings, embedder = indexed
    write_article(settings.corpus_dir, 12, date="2024-06-06", name="copy-of-12.jsonl")  # the same story, later
    build_index(settings=settings, embedder=embedder)
    _, live = live_article(settings, 12)
    assert live.source == "article-12.jsonl#1"  # the first by name; the copy is skipped as a duplicate
    (settings.corpus_dir / "article-12.jsonl").unlink()
    write_article(settings.corpus_dir, 30)  # with an article added: a segment
    report = build_index(settings=settings, embedder=embedder)
    index, live = live_article(settings, 12)
    assert isinstance(index, SegmentedIndex) and (live.source, live.date) == ("copy-of-12.jsonl#1", "2024-06-06")
    assert report.articles == 31 and report.removed_articles == 0 and report.updated_articles == 1

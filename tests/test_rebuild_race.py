"""A rebuild between the steps of one question: the answer comes whole from the version searched.

`ask` searches, then reads the cited passages' sentences and articles. A build that swaps in a
new version in between (here: one without the cited article) must neither fail (it was a
KeyError, a 500 from the REST API) nor mix versions: the reply quotes the old version's text.
Real model, real index, real rebuild; the rebuild is triggered from inside the search step.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qa import ask
from qa.config import Settings
from qa.index.build import build_index
from qa.index.format import current_version
from qa.index.load import open_index
from qa.retrieval import Engine, SearchResults, get_engine
from tests.small_corpus import LIBRARY, WIND

pytestmark = pytest.mark.slow

QUESTION = "How many homes can the turbines supply?"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "wind.txt").write_text(WIND, encoding="utf-8")
    (corpus / "library.txt").write_text(LIBRARY, encoding="utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index")
    build_index(settings=settings)
    return settings


def test_rebuild_between_search_and_answer_replies_from_the_version_searched(settings: Settings, monkeypatch):
    engine = get_engine(settings)
    old = engine.index()
    real_search = Engine.search
    rebuilt = []

    def search_then_rebuild(self, *args, **kwargs):
        results = real_search(self, *args, **kwargs)
        (settings.corpus_dir / "wind.txt").unlink()  # the article about to be cited
        build_index(settings=settings)
        rebuilt.append(current_version(settings.index_dir))
        return results

    monkeypatch.setattr(Engine, "search", search_then_rebuild)
    answer = ask(QUESTION, settings=settings)

    assert rebuilt and rebuilt[0] != old.version  # the live index changed mid-question...
    assert engine.index().version == rebuilt[0]
    assert {a.source for a in open_index(settings.index_dir).articles.values()} == {"library.txt"}
    assert answer.found  # ...and the answer still came, whole, from the version searched
    first = answer.citations[0]
    assert first.passage.source == "wind.txt" and "forty thousand homes" in first.evidence
    for citation in answer.citations:
        text = old.articles[citation.passage.doc_id].text
        assert text[citation.evidence_start : citation.evidence_end] == citation.evidence
        assert text[citation.passage.start : citation.passage.end] == citation.passage.text


def test_search_results_carry_the_version_they_read(settings: Settings):
    engine = get_engine(settings)
    results = engine.search(QUESTION, 2)
    assert isinstance(results, SearchResults) and results.loaded_index is engine.index()
    old = results.loaded_index
    (settings.corpus_dir / "library.txt").unlink()
    build_index(settings=settings)
    # An explicit version is searched even after a rebuild replaced it.
    again = engine.search("How many books does the library hold?", 2, index=old)
    assert again.loaded_index is old and again[0].source == "library.txt"
    assert engine.search(QUESTION, 2).loaded_index is not old

"""Which sentence a reply quotes first, with the real model over a real index: the demo corpus
plus a short article whose topical first sentence outscores, on the dense score alone, the
sentence that answers."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RETURN = (
    "Sam Altman kehrt zurück. Die Investoren Thrive Capital und Khosla wollten ihn zurückholen. "
    "Der Verwaltungsrat von OpenAI lenkte nach fünf Tagen ein.\n"
)
ANSWER = "Die Investoren Thrive Capital und Khosla wollten ihn zurückholen."
QUESTION = "Welche Investoren wollten Sam Altman zurückholen?"


@pytest.fixture(scope="module")
def return_settings(tmp_path_factory):
    """The demo corpus and the one-line German article, indexed with the real model."""
    from qa.config import Settings
    from qa.index.build import build_index

    folder = tmp_path_factory.mktemp("return")
    corpus = folder / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    (corpus / "de-altman-rueckkehr.txt").write_text(RETURN, encoding="utf-8")
    settings = Settings(corpus_dir=corpus, index_dir=folder / "index")
    build_index(settings=settings)
    return settings


@pytest.mark.slow
def test_the_sentence_that_answers_is_quoted_before_its_passages_topical_one(return_settings):
    from qa import ask

    answer = ask(QUESTION, settings=return_settings)
    assert answer.found and answer.lang == "de"
    first = answer.citations[0]
    assert first.passage.source == "de-altman-rueckkehr.txt" and first.evidence == ANSWER, first.evidence


@pytest.mark.slow
def test_without_the_lexical_cue_within_the_passage_the_topical_sentence_leads(return_settings):
    """What the cue changes: the same candidates, ranked with its weight at 0."""
    from qa.answer import ANSWER_CANDIDATES, index_candidates, lexical_idf
    from qa.quotes import QuoteWeights, select_quotes
    from qa.retrieval import get_engine

    engine = get_engine(return_settings)
    passages = engine.search(QUESTION, ANSWER_CANDIDATES, lang="de")
    index = passages.loaded_index
    candidates = index_candidates(passages, engine.embedder.encode_query(QUESTION), "de", index, return_settings)
    idf = lexical_idf(index)
    off = replace(QuoteWeights(), lexical_in_passage=0.0)
    assert candidates[select_quotes(QUESTION, candidates, 1, idf=idf, weights=off)[0]].text == "Sam Altman kehrt zurück."
    assert candidates[select_quotes(QUESTION, candidates, 1, idf=idf)[0]].text == ANSWER

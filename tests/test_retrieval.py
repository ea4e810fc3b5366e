"""Retrieval with the real model over the real seed corpus (French, German, Japanese articles)."""

from __future__ import annotations

import time

import pytest

from qa import InvalidQuestionError, retrieve
from qa.retrieval import clean_question

# (question language, fact id): questions of tests/data/seed_questions.json whose evidence must
# come back in the top 3. The articles are French, German and Japanese; none is English,
# Spanish or Chinese, so most of these cross languages.
TOP3 = [
    ("en", "sutskever"), ("en", "cloudflare"), ("en", "mission"), ("en", "investment"), ("en", "chips"),
    ("es", "stake"), ("es", "shear"), ("es", "employees"), ("es", "sutskever"), ("es", "cloudflare"),
    ("es", "mission"), ("es", "investment"),
    # The corpus has no Spanish: the question is centred on the corpus languages' shared question
    # mean (`qa.rank.ABSENT_LANGUAGE_CENTERING`); uncentred, "Thrive Capital" ranked 5th.
    ("es", "investors"),
    ("ja", "employees"), ("ja", "sutskever"), ("ja", "cloudflare"), ("ja", "chips"), ("ja", "mission"),
    ("zh", "employees"), ("zh", "sutskever"), ("zh", "cloudflare"), ("zh", "mission"),
    ("zh", "investment"),
]  # fmt: skip


# In the top 5 only. "zh stake" was 3rd until questions in a language the corpus lacks were
# centred on the shared question mean (now 4th; over the seed questions hit@3 0.826 -> 0.848,
# "es investors" 5th -> 2nd); "es anthropic" was 6th.
TOP5 = [("zh", "stake"), ("es", "anthropic")]


def _texts(passage) -> list[str]:
    return [passage.text] + [t.text for t in passage.translations]


@pytest.mark.slow
@pytest.mark.parametrize("lang,fact_id", TOP3)
def test_question_finds_the_evidence_in_the_top_3(seed_settings, seed_facts, lang, fact_id):
    fact = next(f for f in seed_facts if f["id"] == fact_id)
    passages = retrieve(fact["questions"][lang], k=3, settings=seed_settings)
    assert any(e in t for p in passages for t in _texts(p) for e in fact["evidence"]), [p.text[:80] for p in passages]


@pytest.mark.slow
@pytest.mark.parametrize("lang,fact_id", TOP5)
def test_question_finds_the_evidence_in_the_top_5(seed_settings, seed_facts, lang, fact_id):
    fact = next(f for f in seed_facts if f["id"] == fact_id)
    passages = retrieve(fact["questions"][lang], k=5, settings=seed_settings)
    assert any(e in t for p in passages for t in _texts(p) for e in fact["evidence"]), [p.text[:80] for p in passages]


@pytest.mark.slow
def test_pipeline_beats_the_bare_model_on_the_seed_questions(seed_settings):
    from qa.evaluate import evaluate_corpus_questions
    from tests.conftest import SEED_QUESTIONS

    result = evaluate_corpus_questions(SEED_QUESTIONS, seed_settings)
    assert result["pipeline"]["hit@5"] >= result["bare model"]["hit@5"]
    assert result["pipeline"]["hit@5"] >= 0.7


@pytest.mark.slow
def test_passages_carry_offsets_into_their_article(seed_settings):
    from qa.retrieval import get_engine

    index = get_engine(seed_settings).index()
    for passage in retrieve("Satya Nadella, roi de l'IA", k=5, settings=seed_settings):
        article = index.articles[passage.doc_id]
        assert article.text[passage.start : passage.end] == passage.text
        assert passage.lang == article.lang and passage.title == article.title
        for other in passage.translations:
            assert index.articles[other.doc_id].text[other.start : other.end] == other.text
            assert other.lang != passage.lang


@pytest.mark.slow
def test_translations_fold_into_one_hit_led_by_the_askers_language(seed_settings):
    # The German and Japanese articles translate the first French one: their opening
    # paragraphs are one story, shown once, in the asker's language.
    passages = retrieve("Was sagte der alte Vorstand über die Zerstörung des Unternehmens?", k=5, settings=seed_settings)
    hit = next(p for p in passages[:3] if "mit dem Auftrag vereinbar" in p.text)
    assert hit.lang == "de"
    assert {t.lang for t in hit.translations} == {"fr", "ja"}
    assert "cohérent avec la mission" in next(t.text for t in hit.translations if t.lang == "fr")
    keys = [(p.doc_id, p.start) for p in passages]
    assert len(keys) == len(set(keys))


@pytest.mark.slow
def test_model_and_index_load_once(seed_settings):
    retrieve("Microsoft", settings=seed_settings)
    started = time.perf_counter()
    for _ in range(5):
        retrieve("Who is Satya Nadella?", settings=seed_settings)
    # Not a benchmark: a reload of the model (seconds) on every call would show here.
    assert time.perf_counter() - started < 5


def test_warm_up_loads_everything_and_reads_the_mapped_vectors_in_unless_turned_off(seed_settings):
    from qa.lang import model as lang_model
    from qa.retrieval import Engine

    lang_model._classifier = None
    engine = Engine(seed_settings)
    engine.warm_up()
    assert engine._mapping is not None and not engine._mapping.is_alive()  # done before it answers
    assert lang_model._classifier is not None  # the language identifier is loaded too
    assert engine.search("Who is Satya Nadella?", 1)
    off = Engine(seed_settings.model_copy(update={"map_in": False}))
    off.warm_up()
    assert off._mapping is None and off.search("Who is Satya Nadella?", 1)


@pytest.mark.parametrize("question", ["", "   ", "\n\t", "\x00\x00"])
def test_empty_questions_are_refused(question):
    with pytest.raises(InvalidQuestionError, match="empty"):
        clean_question(question, 100)


def test_over_long_question_names_the_length_and_the_limit():
    with pytest.raises(InvalidQuestionError, match="5000 characters.*limit is 2000"):
        clean_question("x" * 5000, 2000)


def test_question_is_cleaned_of_control_characters():
    assert clean_question("  Who\x00 is\n\tAltman?\x1b ", 100) == "Who is Altman?"


def test_bad_k_is_refused():
    with pytest.raises(InvalidQuestionError, match="k must be"):
        retrieve("Microsoft", k=0)

"""Which sentences a reply quotes (`qa.quotes`): pure logic, no model."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from qa.quotes import (
    BY_PASSAGE,
    RANKED,
    QuoteWeights,
    SentenceCandidate,
    answer_type,
    new_names,
    select_quotes,
    sentence_features,
)


def _c(passage: int, start: int, text: str, z: float, cosine: float | None = None, finished: bool = True):
    return SentenceCandidate(passage, ("doc", start), text, "en", z if cosine is None else cosine, z, finished)


def _w(**cues: float) -> QuoteWeights:
    """Weights with every cue off but `cues`."""
    return QuoteWeights(**{**{f.name: 0.0 for f in fields(QuoteWeights)}, **cues})


NO_CUES = _w()


def test_the_best_sentence_of_a_lower_passage_is_quoted_first():
    candidates = [_c(0, 0, "Topic sentence.", 2.0), _c(0, 20, "Other.", 0.5), _c(1, 40, "The answer.", 3.0)]
    assert select_quotes("q", candidates, 3, method=RANKED, weights=NO_CUES) == [2, 0, 1]
    # The previous choice: passage by passage, each passage's best sentence.
    assert select_quotes("q", candidates, 3, method=BY_PASSAGE) == [0, 2]


def test_headings_are_quoted_only_when_nothing_else_is_left_and_each_sentence_once():
    heading = _c(0, 0, "Timeline", 5.0, finished=False)
    shared = _c(0, 10, "Shared sentence.", 2.0)
    again = _c(1, 10, "Shared sentence.", 2.0)  # overlapping passages hold the same sentence
    assert select_quotes("q", [heading, shared, again], 3, weights=NO_CUES) == [1]
    assert select_quotes("q", [heading], 3, weights=NO_CUES) == [0]


def test_passage_rank_breaks_near_ties():
    candidates = [_c(0, 0, "First passage.", 2.0), _c(3, 50, "Fourth passage.", 2.1)]
    assert select_quotes("q", candidates, 1, weights=_w(rank=0.25)) == [0]
    assert select_quotes("q", candidates, 1, weights=NO_CUES) == [1]


def test_rare_question_words_pull_their_sentence_up():
    def idf(tokens):
        return np.array([5.0 if t == "thrive" else 0.1 for t in tokens])

    candidates = [_c(0, 0, "Investors wanted him back.", 2.0), _c(1, 30, "Thrive Capital led them.", 1.5)]
    question = "Did Thrive want him back?"
    assert select_quotes(question, candidates, 1, idf=idf, weights=NO_CUES)[0] == 0
    assert select_quotes(question, candidates, 1, idf=idf, weights=_w(lexical=2.0))[0] == 1


@pytest.mark.parametrize(
    "question,kind",
    [("What percentage of OpenAI does Microsoft own?", "percent"), ("マイクロソフトはOpenAIの株式を何パーセント保有していますか？", "percent"),
     ("How many employees threatened to quit?", "number"), ("OpenAI 직원 중 몇 명이 회사를 그만두겠다고 위협했습니까?", "number"),
     ("Сколько сотрудников?", "number"), ("마이크로소프트는 OpenAI에 얼마를 투자했습니까?", "money"),
     ("How much did Microsoft invest in OpenAI?", "money"), ("When did the Panthers win?", "date"), ("¿Cuándo ganó?", "date"),
     ("OpenAI董事会周日任命谁为首席执行官？", "person"), ("Who founded it?", "person"),
     ("Which investors were trying to bring Sam Altman back?", "person"), ("Why did it happen?", None)],
)  # fmt: skip
def test_answer_type_of_questions_in_several_languages(question, kind):
    assert answer_type(question) == kind


def test_the_kind_of_thing_asked_for_wins_a_near_tie():
    question = "What percentage of OpenAI does Microsoft own?"
    candidates = [_c(0, 0, "Microsoft is OpenAI's largest backer.", 2.0), _c(1, 50, "It holds 49 pour cent of it.", 1.8)]
    assert select_quotes(question, candidates, 1, weights=NO_CUES) == [0]
    assert select_quotes(question, candidates, 1, weights=_w(answer_type=0.5)) == [1]
    who = "Who was named chief executive?"
    named = [_c(0, 0, "The board named a new chief executive.", 2.0), _c(0, 60, "It chose Emmett Shear.", 1.8)]
    assert select_quotes(who, named, 1, weights=_w(answer_type=0.5)) == [1]


def test_a_percentage_sum_or_date_counts_for_more_than_a_bare_number_or_name():
    question = "¿Qué porcentaje de OpenAI posee Microsoft?"
    topical = _c(0, 0, "Offre de Microsoft aux employés d'OpenAI, 700 sur 770.", 2.2)
    answer = _c(1, 80, "Avec une participation de 49 pour cent, Microsoft avait espéré.", 1.8)
    # "700" is a number too: the bare answer-type cue cannot tell them apart...
    assert select_quotes(question, [topical, answer], 1, weights=_w(answer_type=0.25)) == [0]
    # ...a percentage can.
    assert select_quotes(question, [topical, answer], 1, weights=_w(answer_type=0.25, specific_type=0.5)) == [1]
    # Only for the kinds that need a unit or a date: a "how many" question gains nothing.
    many = "¿Cuántos empleados amenazaron con renunciar?"
    assert select_quotes(many, [topical, answer], 1, weights=_w(answer_type=0.25, specific_type=0.5)) == [0]


def test_names_only_one_candidate_holds_count_for_who_questions():
    question = "Whose dominance would the AI chip venture challenge?"
    texts = ["The chips of Microsoft and OpenAI are new.", "Servers from OpenAI and Microsoft’s cloud run them.",
             "It challenges the dominance of Nvidia, says Microsoft.", "The chips are fast."]  # fmt: skip
    # Microsoft is in three sentences (a possessive counts as the name), OpenAI in two, Nvidia in one.
    assert new_names(question, texts).tolist() == [0.5, 0.5, 1.0, 0.0]
    # Overlapping passages hold the same sentence: counted once, by its key.
    assert new_names(question, [texts[2], texts[2]], ["k", "k"]).tolist() == [1.0, 1.0]
    # A name the question itself states is no answer.
    assert new_names("Did Nvidia lose?", ["Nvidia lost."]).tolist() == [0.0]
    candidates = [_c(0, i * 100, t, z) for i, (t, z) in enumerate(zip(texts, [2.0, 1.9, 1.7, 1.0]))]
    assert select_quotes(question, candidates, 1, weights=NO_CUES) == [0]
    assert select_quotes(question, candidates, 1, weights=_w(new_name=1.0)) == [2]
    # Not for other questions: "why" asks for no name.
    assert select_quotes("Why would the venture matter?", candidates, 1, weights=_w(new_name=1.0)) == [0]


def test_a_script_without_capitals_is_not_pushed_down_by_the_name_cue():
    question = "Who leads the chip venture?"
    latin = [SentenceCandidate(0, ("de", i), t, "de", 2.0, 2.0, True)
             for i, t in enumerate(["Satya Nadella leitet es.", "Microsoft baut Chips."])]  # fmt: skip
    chinese = [SentenceCandidate(1, ("zh", 0), "该项目由微软首席执行官领导。", "zh", 2.1, 2.1, True)]
    features = sentence_features(question, latin + chinese, None)
    # Centred per language: the Chinese sentence (no capitals to count) scores 0, and the German
    # ones only relative to each other.
    assert features[2, 8] == 0.0 and features[:2, 8].sum() == pytest.approx(0.0)
    assert select_quotes(question, latin + chinese, 1, weights=_w(new_name=1.0)) == [2]


def test_a_section_heading_that_matches_the_question_lifts_the_sentences_under_it():
    question = "Whose dominance would the chip venture challenge?"
    heading = _c(0, 0, "The chip venture", 3.0, finished=False)
    first = _c(0, 20, "Microsoft may work with Altman on chips.", 1.2)
    answer = _c(0, 70, "The initiative challenges the dominance of Nvidia.", 1.5)
    elsewhere = _c(1, 0, "Microsoft's strategy is bold.", 1.7)
    candidates = [heading, first, answer, elsewhere]
    features = sentence_features(question, candidates, None)
    # Every sentence under the heading gets its z-score, not only the one right after it; the
    # heading itself has none above it, and a new passage starts without one.
    assert features[:, 10].tolist() == [0.0, 3.0, 3.0, 0.0]
    assert select_quotes(question, candidates, 1, weights=NO_CUES) == [3]
    assert select_quotes(question, candidates, 1, weights=_w(heading=0.1)) == [2]
    # The heading is quoted only when nothing else is left.
    assert 0 not in select_quotes(question, candidates, 3, weights=_w(heading=0.1))


def test_the_passage_score_cue_compares_passages_of_one_language():
    candidates = [SentenceCandidate(0, ("a", 0), "One.", "en", 0.8, 1.0, True, passage_score=5.0),
                  SentenceCandidate(1, ("b", 0), "Two.", "en", 0.8, 1.0, True, passage_score=3.5),
                  SentenceCandidate(2, ("c", 0), "Drei.", "de", 0.8, 1.0, True, passage_score=2.0)]  # fmt: skip
    # Relative to the best passage of the sentence's own language: the only German one is its best.
    assert sentence_features("q", candidates, None)[:, 11].tolist() == [0.0, -1.5, 0.0]


def test_the_lexical_cue_within_a_passage_reorders_its_sentences_and_leaves_other_passages():
    def idf(tokens):
        return np.array([3.0 if t in ("investoren", "zurückholen") else 1.0 for t in tokens])

    question = "Welche Investoren wollten Sam Altman zurückholen?"
    heading = SentenceCandidate(0, ("de", 0), "Investoren", "de", 1.0, 1.0, False)
    topical = SentenceCandidate(0, ("de", 20), "Sam Altman kehrt zurück.", "de", 3.0, 3.0, True)
    answer = SentenceCandidate(0, ("de", 45), "Die Investoren Thrive und Khosla wollten ihn zurückholen.", "de", 2.2, 2.2, True)
    other = SentenceCandidate(1, ("fr", 0), "Les actionnaires voulaient le retour du patron.", "fr", 2.0, 2.0, True)
    candidates = [heading, topical, answer, other]
    features = sentence_features(question, candidates, idf)
    # The passage's best finished sentence scores 0 and the rest below it: the heading shares
    # as many words but is never quoted, so it sets no bar. A passage sharing no word: all 0.
    assert features[2, 12] == 0.0 and features[1, 12] < 0.0 and features[3, 12] == 0.0
    assert features[1, 12] == pytest.approx(features[1, 1] - features[2, 1])
    assert (features[:, 12] <= 0.0).all()
    assert select_quotes(question, candidates, 1, idf=idf, weights=NO_CUES) == [1]
    assert select_quotes(question, candidates, 1, idf=idf, weights=_w(lexical_in_passage=2.0)) == [2]


def test_unknown_selection_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="ranked"):
        select_quotes("q", [_c(0, 0, "A.", 1.0)], 1, method="best")


def _t(passage: int, start: int, lang: str, vector: list[float], z: float = 1.0):
    unit = np.asarray(vector, np.float32) / np.linalg.norm(vector)
    return SentenceCandidate(passage, (lang, start), f"Sentence {lang} {start}.", lang, z, z, True, unit)


def test_a_sentence_and_its_translation_are_one_quote_shown_in_the_askers_language():
    from qa.quotes import translations

    candidates = [
        _t(0, 0, "fr", [1.0, 0.1, 0.0]),  # the French sentence...
        _t(1, 0, "de", [1.0, 0.0, 0.1]),  # ...and its German translation (another article)
        _t(1, 50, "de", [0.0, 1.0, 0.0]),  # another German sentence
    ]
    # Asked in German: the German sentence is the quote, the French one its translation.
    assert translations(candidates, [0, 1, 2], "de") == [(1, 0), (2, None)]
    # Asked in English: the better ranked one is quoted, the other beside it.
    assert translations(candidates, [0, 1, 2], "en") == [(0, 1), (2, None)]


def test_sentences_in_one_language_or_far_apart_are_not_translations():
    from qa.quotes import translations

    same = [_t(0, 0, "de", [1.0, 0.0]), _t(1, 0, "de", [1.0, 0.01])]
    assert translations(same, [0, 1], "de") == [(0, None), (1, None)]
    far = [_t(0, 0, "fr", [1.0, 0.0]), _t(1, 0, "de", [0.3, 1.0])]  # centred cosine 0.29
    assert translations(far, [0, 1], "de") == [(0, None), (1, None)]
    # Close, but the German sentence has a closer French match: not each other's best.
    rival = [_t(0, 0, "fr", [1.0, 0.6]), _t(1, 0, "de", [1.0, 0.0]), _t(2, 9, "fr", [1.0, 0.05])]
    assert translations(rival, [0, 1], "de") == [(0, None), (1, None)]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Whom did the board name on Sunday?", {"wd6"}),
        ("Le conseil a nommé dimanche Emmett Shear.", {"wd6"}),
        ("OpenAI董事会周日任命谁为首席执行官？", {"wd6"}),
        ("日曜日に誰を任命しましたか？", {"wd6"}),
        ("700 der 770 Mitarbeiter", {"#700", "#770"}),
        ("770人の従業員のうち700人", {"#700", "#770"}),
        ("１，０００ドル、1.000 Euro, 百分之四十九", {"#1000", "#49"}),
        ("in November 2023", {"#2023", "m11"}),
        ("11月20日", {"#11", "#20", "m11"}),
        ("It may rain.", set()),  # the modal verb is not the month
    ],
)
def test_numbers_weekdays_and_months_match_across_languages_and_scripts(text, expected):
    from qa.quotes import anchors

    assert anchors(text) == expected

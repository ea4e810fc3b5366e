"""The language-neutral scoring: pure numpy logic, checked against direct computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qa.language_stats import recode_langs
from qa.lexical import LexicalIndex, tokenize
from qa.rank import (
    NOT_SHORTLISTED,
    FusionWeights,
    LanguageStats,
    LanguageSums,
    fuse,
    lexical_by_language,
    lexical_by_language_sparse,
    merge_sums,
    shortlist,
    subtract_sums,
    translation_groups,
)


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_standardized_scores_match_direct_computation():
    rng = np.random.default_rng(0)
    vectors = _unit(rng.standard_normal((400, 8)))
    langs = np.array(["fr"] * 200 + ["ja"] * 200)
    vectors[langs == "ja"] += 0.5  # a language offset, as the model has
    stats = LanguageStats.fit(vectors, langs)
    queries = _unit(rng.standard_normal((3, 8)))
    ids = stats.lang_ids(langs)
    z = stats.standardize(queries, queries @ vectors.T, ids)
    # Within a language the scores of each query have mean 0 and, shrinkage aside, spread ~1.
    for li in range(2):
        assert np.allclose(z[:, ids == li].mean(axis=1), 0, atol=1e-5)
        assert np.all((z[:, ids == li].std(axis=1) > 0.8) & (z[:, ids == li].std(axis=1) < 1.2))


def test_moments_equal_the_scores_own_mean_and_spread_for_one_question_or_many():
    rng = np.random.default_rng(5)
    langs = np.repeat(["ar", "de", "fr", "ja"], 300)
    vectors = _unit(rng.standard_normal((1200, 16)) + rng.standard_normal((4, 16)).repeat(300, axis=0))
    stats = LanguageStats.fit(vectors, langs)
    stats.covariances = np.stack([np.cov(vectors[langs == x].T).astype(np.float32) for x in stats.langs])  # unshrunk
    many = _unit(rng.standard_normal((10, 16))).astype(np.float32)
    for queries in (many[:1], many[:3], many):  # the few-questions path and the batched one
        mean, std = stats.moments(queries)
        for li, lang in enumerate(stats.langs):
            scores = queries @ vectors[langs == lang].T
            assert np.allclose(mean[:, li], scores.mean(axis=1), atol=1e-5)
            assert np.allclose(std[:, li], scores.std(axis=1, ddof=1), rtol=1e-4)
        # Only some languages, in the order asked: the same columns.
        part_mean, part_std = stats.moments(queries, np.array([3, 1]))
        assert np.allclose(part_mean, mean[:, [3, 1]]) and np.allclose(part_std, std[:, [3, 1]], rtol=1e-5)


@pytest.mark.parametrize("dim", [384, 48, 10])  # 16 blocks of 24, of 3, and one block (10 does not divide)
def test_question_variances_from_the_covariances_upper_blocks_equal_the_full_product(dim):
    rng = np.random.default_rng(dim)
    langs = np.repeat(["de", "en", "ja"], 200)
    vectors = _unit(rng.standard_normal((600, dim)) + rng.standard_normal((3, dim)).repeat(200, axis=0))
    stats = LanguageStats.fit(vectors, langs)
    queries = _unit(rng.standard_normal((2, dim))).astype(np.float32)
    full = np.einsum("qd,lde,qe->ql", queries.astype(np.float64), stats.covariances.astype(np.float64), queries)
    assert np.allclose(stats.moments(queries)[1] ** 2, full, rtol=1e-5)
    assert np.allclose(stats.moments(queries, np.array([2, 0]))[1] ** 2, full[:, [2, 0]], rtol=1e-5)


def test_a_question_standardized_again_reuses_its_block_products_and_never_another_questions():
    from qa import language_stats

    rng = np.random.default_rng(8)
    langs = np.repeat(["de", "en", "ja"], 200)
    vectors = _unit(rng.standard_normal((600, 48)) + rng.standard_normal((3, 48)).repeat(200, axis=0))
    passages, sentences = LanguageStats.fit(vectors, langs), LanguageStats.fit(vectors[::-1], langs)
    a, b = _unit(rng.standard_normal((2, 48))).astype(np.float32)[:, None, :]

    def fresh(stats, query):  # with nothing kept from an earlier call
        language_stats._last_products = None
        return stats.moments(query)[1]

    expected = {(id(stats), i): fresh(stats, q) for stats in (passages, sentences) for i, q in enumerate((a, b))}
    language_stats._last_products = None
    # One question's passages then its sentences (the engine's order), then the next question's.
    for i, q in ((0, a), (0, a), (1, b), (1, b), (0, a)):
        for stats in (passages, sentences):
            assert np.array_equal(stats.moments(q)[1], expected[(id(stats), i)])
    assert not language_stats._last_products[1].flags.writeable  # what is handed out again stays as made
    assert np.array_equal(passages.moments(a * 2)[1], fresh(passages, a * 2))  # other bytes: computed anew


def test_standardize_reads_only_the_languages_present_and_agrees_with_all():
    rng = np.random.default_rng(6)
    langs = np.repeat(["de", "en", "fr"], 100)
    vectors = _unit(rng.standard_normal((300, 8)))
    stats = LanguageStats.fit(vectors, langs)
    query = _unit(rng.standard_normal((1, 8))).astype(np.float32)
    ids = stats.lang_ids(langs)
    full = stats.standardize(query, query @ vectors.T, ids)
    only_fr = ids == stats.langs.index("fr")
    part = stats.standardize(query, query @ vectors[only_fr].T, ids[only_fr])
    assert np.allclose(part, full[:, only_fr], rtol=1e-5)


def test_standardization_keeps_the_order_within_a_language():
    rng = np.random.default_rng(1)
    vectors = _unit(rng.standard_normal((50, 8)))
    stats = LanguageStats.fit(vectors, ["de"] * 50)
    q = _unit(rng.standard_normal((1, 8)))
    raw = q @ vectors.T
    z = stats.standardize(q, raw, stats.lang_ids(["de"] * 50))
    assert (np.argsort(-raw[0]) == np.argsort(-z[0])).all()


def test_stats_survive_a_save_and_load_roundtrip():
    rng = np.random.default_rng(2)
    stats = LanguageStats.fit(_unit(rng.standard_normal((20, 4))), ["en"] * 10 + ["fr"] * 10)
    stats.query_means = {"en": np.ones(4, np.float32)}
    again = LanguageStats.from_arrays(stats.to_arrays())
    assert again.langs == ["en", "fr"] and np.allclose(again.covariances, stats.covariances)
    assert np.allclose(again.center_query(np.ones((1, 4)), "en", 0.5), 0.5)
    assert np.allclose(again.center_query(np.ones((1, 4)), "en", 0), 1.0)


def _skewed_vectors(n: int, dim: int = 24, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors clustered by language, with a language of 5 passages (the pooled statistics)."""
    rng = np.random.default_rng(seed)
    langs = rng.choice(["de", "en", "fr"], n, p=[0.3, 0.5, 0.2])
    langs[rng.choice(n, 5, replace=False)] = "sw"
    centers = {lang: 2 * rng.standard_normal(dim) for lang in ["de", "en", "fr", "sw"]}
    vectors = _unit(rng.standard_normal((n, dim)) + np.array([centers[x] for x in langs]))
    return vectors.astype(np.float32), langs


def test_statistics_of_two_halves_sums_merged_equal_the_fit_of_the_whole():
    vectors, langs = _skewed_vectors(3000)
    rng = np.random.default_rng(5)
    sample = {"de": rng.standard_normal((6, 24)).astype(np.float32), "en": rng.standard_normal((9, 24)).astype(np.float32)}
    whole = LanguageStats.fit(vectors, langs)
    cut = 1700  # "sw"'s five passages are split between the halves: fewer than 8 in each
    first = LanguageSums.of(vectors[:cut], langs[:cut], {"de": sample["de"][:2], "en": sample["en"]})
    second = LanguageSums.of(vectors[cut:], langs[cut:], {"de": sample["de"][2:]})
    assert 0 < (langs[:cut] == "sw").sum() < 5
    merged = LanguageStats.from_sums(merge_sums(first, second))
    assert merged.langs == whole.langs == ["de", "en", "fr", "sw"]
    assert np.allclose(merged.means, whole.means, rtol=0, atol=1e-6)
    assert np.allclose(merged.covariances, whole.covariances, rtol=0, atol=1e-6)
    # the language of 5 passages has the pooled statistics, of every passage of both halves
    assert np.allclose(merged.covariances[3], LanguageStats.fit(vectors, ["x"] * len(vectors)).covariances[0], atol=1e-6)
    assert np.allclose(merged.query_means["de"], sample["de"].mean(axis=0), atol=1e-6)
    assert np.allclose(merged.query_means["en"], sample["en"].mean(axis=0), atol=1e-6)
    # the sums of one index give its statistics; a round trip through arrays loses nothing
    again = LanguageSums.from_arrays(dict(np.load(_saved(merge_sums(first, second)))))
    assert np.array_equal(again.outers, merge_sums(first, second).outers) and again.query_langs == ["de", "en"]
    alone = LanguageStats.from_sums(LanguageSums.of(vectors, langs))
    assert np.array_equal(alone.means, whole.means) and np.allclose(alone.covariances, whole.covariances, atol=1e-7)


def test_merging_with_empty_sums_changes_nothing():
    vectors, langs = _skewed_vectors(400)
    sums = LanguageSums.of(vectors, langs)
    empty = LanguageSums.of(vectors[:0], langs[:0])
    assert empty.langs == [] and empty.totals.shape == (0, 24)
    merged = merge_sums(empty, sums)
    assert merged.langs == sums.langs and np.array_equal(merged.outers, sums.outers)
    assert np.array_equal(merged.counts, sums.counts)


def test_removing_a_part_subtracts_its_sums_and_gives_the_statistics_of_the_rest():
    vectors, langs = _skewed_vectors(2000)
    whole = LanguageSums.of(vectors, langs)
    gone = np.zeros(len(vectors), bool)
    gone[:600] = True
    gone[langs == "fr"] = True  # a language removed entirely is dropped
    rest = subtract_sums(whole, LanguageSums.of(vectors[gone], langs[gone]))
    fitted = LanguageStats.fit(vectors[~gone], langs[~gone])
    assert rest.langs == fitted.langs and "fr" not in rest.langs
    assert np.array_equal(rest.counts, LanguageSums.of(vectors[~gone], langs[~gone]).counts)
    stats = LanguageStats.from_sums(rest)
    assert np.allclose(stats.means, fitted.means, rtol=0, atol=1e-6)
    assert np.allclose(stats.covariances, fitted.covariances, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="'de'"):
        subtract_sums(LanguageSums.of(vectors[:10], langs[:10]), LanguageSums.of(vectors[langs == "de"], langs[langs == "de"]))


def _saved(sums: LanguageSums):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **sums.to_arrays())
    buffer.seek(0)
    return buffer


def test_a_question_in_a_language_without_a_mean_is_centred_on_the_shared_question_mean():
    from qa.rank import ABSENT_LANGUAGE_CENTERING

    stats = LanguageStats(["de", "fr"], np.zeros((2, 4), np.float32), np.stack([np.eye(4, dtype=np.float32)] * 2))
    q = np.ones((1, 4))
    assert np.allclose(stats.center_query(q, "nl", 0.5), 1.0)  # no question means at all: unchanged
    stats.query_means = {"de": np.array([1, 0, 0, 0], np.float32), "fr": np.array([0, 1, 0, 0], np.float32)}
    assert np.allclose(stats.center_query(q, "de", 0.5), [[0.5, 1, 1, 1]])  # its own mean
    share = 0.5 * ABSENT_LANGUAGE_CENTERING
    assert np.allclose(stats.center_query(q, "nl", 0.5), [[1 - share / 2, 1 - share / 2, 1, 1]])
    assert np.allclose(stats.center_query(q, "nl", 0.5, absent_share=1.0), [[0.75, 0.75, 1, 1]])
    assert np.allclose(stats.center_query(q, "nl", 0), 1.0)
    # Replaced by as many languages' (the old dict freed: a new one may take its id): it follows.
    stats.query_means = {"de": np.array([0, 0, 2, 0], np.float32), "fr": np.array([0, 0, 2, 0], np.float32)}
    assert np.allclose(stats.center_query(q, "nl", 0.5), [[1, 1, 1 - 2 * share, 1]])


def test_store_language_codes_are_recoded_to_the_statistics_positions():
    def stats_of(langs):
        return LanguageStats(langs, np.zeros((len(langs), 4), np.float32), np.zeros((len(langs), 4, 4), np.float32))

    codes = np.array([0, 1, 2, 1, 0], np.int8)  # positions in the store's ["de", "en", "fr"]
    same = recode_langs(codes, ["de", "en", "fr"], stats_of(["de", "en", "fr", "ja"]))
    assert same is codes  # orders agree: the codes themselves, no copy
    moved = recode_langs(codes, ["de", "en", "fr"], stats_of(["en", "fr", "ja"]))
    # "de" has no statistics (none of its passages is read): position 0, whatever it is.
    assert moved.tolist() == [0, 0, 1, 0, 0] and moved.dtype == np.int8
    assert recode_langs(codes, ["fr", "en", "de"], stats_of(["de", "en", "fr"])).tolist() == [2, 1, 0, 1, 2]


def test_translation_groups_link_mutual_neighbours_across_languages_only():
    a, b, c = np.eye(4)[:3]
    vectors = np.array([a, b, a * 0.99 + c * 0.14, b, c])
    langs = ["fr", "fr", "de", "de", "de"]
    groups = translation_groups(_unit(vectors), langs, threshold=0.9)
    assert groups[0] == groups[2]  # the fr/de pair that say the same
    assert groups[1] == groups[3]
    assert groups[4] not in {groups[0], groups[1]}
    # Passages of the same language are never grouped, however similar.
    same = translation_groups(_unit(np.array([a, a])), ["fr", "fr"], threshold=0.5)
    assert same[0] != same[1]


def test_lexical_scores_are_scaled_per_language():
    scores = np.array([[4.0, 2.0, 1.0, 0.5]])
    ids = np.array([0, 0, 1, 1])
    assert lexical_by_language(scores, ids, 2).tolist() == [[1.0, 0.5, 1.0, 0.5]]


def test_tokenize_splits_scripts_without_spaces_into_bigrams():
    assert tokenize("Microsoftは49%を保有") == ["microsoft", "は", "49", "を保", "保有"]
    tokens = tokenize("マイクロソフトの株式")
    assert "マイ" in tokens and "株式" in tokens and "マイクロソフトの株式" not in tokens
    assert tokenize("Emmett Shear, 49 pour cent") == ["emmett", "shear", "49", "pour", "cent"]
    assert tokenize("微软") == ["微软"] and tokenize("軟") == ["軟"]


def test_tokenize_writes_cyrillic_words_in_latin_letters():
    assert tokenize("Илья Суцкевер и Тесла") == ["ilya", "sutskever", "i", "tesla"]
    assert tokenize("Щукин, Юлия, Жуков") == ["shchukin", "yuliya", "zhukov"]
    # Latin, CJK and digits are untouched; the analyzer of an older index keeps Cyrillic as is
    assert tokenize("Ilya Sutskever OpenAIの従業員 2023") == ["ilya", "sutskever", "openai", "の従", "従業", "業員", "2023"]
    assert tokenize("Илья Суцкевер", analyzer=1) == ["илья", "суцкевер"]


def test_bm25_matches_a_russian_question_to_a_name_in_latin_letters():
    index = LexicalIndex.build(["Emmett Shear devient PDG.", "Ilya Sutskever regrette.", "Rien à voir."])
    assert int(np.argmax(index.scores("О чём сожалеет Илья Суцкевер?"))) == 1


def test_questions_are_tokenized_with_their_indexs_analyzer():
    # An index built before transliteration holds Cyrillic postings: its questions must keep them.
    old = LexicalIndex.build(["Другое.", "Илья Суцкевер сожалеет."], analyzer=1)
    assert old.analyzer == 1 and int(np.argmax(old.scores("Илья Суцкевер"))) == 1
    row, _ = old.sparse_scores("Илья Суцкевер", 1000)
    assert row.tolist() == [1]


def test_bm25_finds_names_and_japanese_words():
    index = LexicalIndex.build(["Emmett Shear devient PDG.", "マイクロソフトの株式は49%。", "", "Rien à voir."])
    assert int(np.argmax(index.scores("Who is Emmett Shear?"))) == 0
    assert int(np.argmax(index.scores("株式を保有"))) == 1
    assert not index.scores("zzz unknown").any()


def test_fold_groups_keeps_one_hit_per_group_in_the_askers_language():
    from qa.rank import fold_groups, group_members

    groups = np.array([0, 0, 1, 2, 1])
    langs = np.array(["fr", "ja", "fr", "de", "de"])
    members = group_members(groups)
    assert members == {0: [0, 1], 1: [2, 4]}  # a passage alone in its group is left out
    ranked = np.array([4, 0, 2, 3, 1])
    # Group 1 first (shown by its French member), then group 0 (French), then group 2 (German only).
    assert fold_groups(ranked, groups, members, langs, "fr", k=5) == [(0, 2), (1, 0), (3, 3)]
    assert fold_groups(ranked, groups, members, langs, "ja", k=2) == [(0, 4), (1, 1)]


def _seed_paragraphs() -> tuple[list[str], np.ndarray]:
    """The seed corpus's paragraphs (French, German, Japanese) and their language ids."""
    corpus = Path(__file__).resolve().parents[1] / "corpus"
    texts, langs = [], []
    for number, path in enumerate(sorted(corpus.glob("*"))):
        for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
            if paragraph.strip():
                texts.append(paragraph)
                langs.append(number % 3)  # three "languages": enough to exercise the grouping
    return texts, np.array(langs)


def test_sparse_bm25_equals_the_dense_scores_on_the_seed_corpus(seed_facts):
    texts, lang_ids = _seed_paragraphs()
    index = LexicalIndex.build(texts)
    questions = [q for fact in seed_facts for q in fact["questions"].values()]
    for question in questions:
        dense = index.scores(question)
        rows, scores = index.sparse_scores(question, budget=10**9)
        assert rows.tolist() == np.flatnonzero(dense).tolist(), question
        np.testing.assert_allclose(scores, dense[rows], rtol=1e-5)
        # Scaling per language and the per-language candidates agree with the dense versions.
        scaled, picked = lexical_by_language_sparse(rows, scores, lang_ids, k=3)
        np.testing.assert_allclose(scaled, lexical_by_language(dense, lang_ids, 3)[0, rows], rtol=1e-5)
        for lang in range(3):
            mine = dense * (lang_ids == lang)
            expected = np.sort(mine[mine > 0])[::-1][:3]
            assert sorted(dense[picked[lang_ids[picked] == lang]].tolist(), reverse=True) == pytest.approx(expected.tolist())


def test_sparse_bm25_skips_the_commonest_words_past_the_budget():
    texts = [f"the report number {i} says the market moved" for i in range(200)] + ["the zebra escaped"]
    index = LexicalIndex.build(texts)
    rows, _ = index.sparse_scores("the zebra", budget=10)
    assert rows.tolist() == [200]  # "the" (in every passage) was skipped, the rare word kept
    full_rows, _ = index.sparse_scores("the zebra", budget=10**6)
    assert len(full_rows) == 201
    assert int(full_rows[np.argmax(index.scores("the zebra")[full_rows])]) == 200


def test_sparse_bm25_merges_the_postings_of_several_rare_words_exactly():
    # Three words each in a few percent of 2,000 passages, often together: the merge of their
    # sorted posting lists must sum them per passage (a word twice in the question counts twice).
    texts = [f"item {i} alpha{i % 17} beta{i % 19} gamma{i % 23} filler text" for i in range(2000)]
    index = LexicalIndex.build(texts)
    dense = index.scores("alpha3 beta5 gamma2 gamma2")
    rows, scores = index.sparse_scores("alpha3 beta5 gamma2 gamma2", budget=10**6)
    assert 0 < len(rows) * 4 < len(texts)
    assert rows.tolist() == np.flatnonzero(dense).tolist()
    np.testing.assert_allclose(scores, dense[rows], rtol=1e-5)
    assert scores.max() > 1.5 * np.median(scores)  # passages with two of the words score higher


def test_shortlist_keeps_the_n_best_in_position_order():
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.5])
    assert shortlist(scores, 2).tolist() == [1, 3]
    assert shortlist(scores, 3).tolist() == [1, 3, 4]
    assert shortlist(scores, 0).tolist() == shortlist(scores, 9).tolist() == [0, 1, 2, 3, 4]


def _fuse_reference(dense, lexical, sentences, weights):
    """`fuse` as written before, the plain way: each question's shortlist, np.where."""
    scores = dense if lexical is None or not weights.lexical else dense + weights.lexical * lexical
    mask = np.ones(scores.shape, dtype=bool)
    if sentences is None or not weights.sentence:
        return scores, mask
    if weights.sentence_candidates and weights.sentence_candidates < scores.shape[1]:
        mask[:] = False
        for row, first in zip(mask, scores):
            row[shortlist(first, weights.sentence_candidates)] = True
    return np.where(mask, scores + weights.sentence * sentences(mask), scores - NOT_SHORTLISTED), mask


@pytest.mark.parametrize("seed", range(40))
def test_fuse_gives_the_reference_scores_and_mask_bit_for_bit(seed):
    """Random sizes, types and weights, with ties (scores drawn from a few values) in half the cases."""
    rng = np.random.default_rng(seed)
    n_q, n = int(rng.integers(1, 4)), int(rng.integers(1, 400))
    dense = rng.standard_normal((n_q, n)).astype(rng.choice([np.float32, np.float64]))
    if seed % 2:
        dense = np.round(dense * 2) / 2  # ties, also at the shortlist's boundary
    lexical = np.where(rng.random((n_q, n)) < 0.4, rng.random((n_q, n)), 0.0).astype(np.float32)
    lexical = None if seed % 5 == 0 else lexical
    best = rng.standard_normal((n_q, n)).astype(rng.choice([np.float32, np.float64]))
    weights = FusionWeights(
        float(rng.choice([0.0, 1.25])), float(rng.choice([0.0, 1.0, 0.7])), int(rng.choice([0, 1, 10, 100, 500]))
    )
    read = []

    def sentences(mask):
        read.append(mask.copy())
        return np.where(mask, best, 0.0)

    want, want_mask = _fuse_reference(dense, lexical, sentences, weights)
    got, got_mask = fuse(dense, lexical, sentences, weights)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want) and np.array_equal(got_mask, want_mask)
    if len(read) == 2:
        assert np.array_equal(read[0], read[1])  # the sentences were asked for the same passages
    if weights.sentence and weights.sentence_candidates and weights.sentence_candidates < n:
        assert (got_mask.sum(axis=1) == weights.sentence_candidates).all()


def test_sparse_lexical_by_language_of_no_match_is_empty():
    scaled, picked = lexical_by_language_sparse(np.zeros(0, np.int64), np.zeros(0, np.float32), np.array([0, 1]), 3)
    assert len(scaled) == len(picked) == 0


def test_bm25_finds_the_paragraph_of_real_chinese_questions(xquad_dir):
    """XQuAD's Chinese questions against its Chinese and English paragraphs (two articles): BM25
    alone ranks the paragraph that answers them first for nearly all (0.97 measured)."""
    from qa.xquad import load_xquad

    data = load_xquad(xquad_dir, ["zh", "en"], max_articles=2)
    index = LexicalIndex.build(data.paragraphs["zh"] + data.paragraphs["en"])
    top = np.array([int(np.argmax(index.scores(q))) for q in data.questions["zh"]])
    assert (top == data.answer_paragraph).mean() >= 0.9


def test_bm25_finds_the_japanese_paragraph_of_japanese_questions():
    from qa.xquad import load_squad

    data = load_squad(Path(__file__).parent / "data" / "squad_mini")
    where = [(lang, i) for lang in data.langs for i, t in enumerate(data.paragraphs[lang]) if t is not None]
    index = LexicalIndex.build([data.paragraphs[lang][i] for lang, i in where])
    asked = [(q, int(data.answer_paragraph[n])) for n, q in enumerate(data.questions["ja"]) if q is not None]
    assert len(asked) == 6
    for question, gold in asked:
        assert where[int(np.argmax(index.scores(question)))] == ("ja", gold), question


@pytest.mark.slow
def test_an_index_records_and_is_asked_with_its_analyzer(seed_settings):
    import json

    from qa.index.format import current_version
    from qa.lexical import ANALYZER
    from qa.retrieval import get_engine

    version = current_version(seed_settings.index_dir)
    manifest = json.loads((seed_settings.index_dir / version / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["versions"]["lexical_analyzer"] == str(ANALYZER)
    assert get_engine(seed_settings).index().lexical.analyzer == ANALYZER

"""BM25 over several segments (`SegmentedLexical`): statistics summed at question time give the
rows and scores of one index of every passage, bit for bit; deleted passages never come back.

Bit for bit, not a tolerance: the global idf, mean length and length-normalization table are the
same floats as one index's (integer sums, then the one float computation), every segment reads
the same tokens in the same order (chosen from the global document frequencies), and each
passage's postings all lie in one segment, so its sum is the same additions in the same order
(past 16 token lists the merge goes through a heap, whose order between lists at one passage
could differ; its sum is in float64 of float32 weights, exact unless they differ by 2^29).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from qa.lexical import ANALYZER, LEXICAL_ARRAYS, LexicalIndex, SegmentedLexical, tokenize

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
BUDGETS = (10**9, 40, 5)  # everything read; cuts that leave out the common tokens; only the rarest


def _seed_texts() -> tuple[list[str], list[int]]:
    """The demo corpus's paragraphs (German, French, Japanese) and each one's language number
    (from the file name), plus Cyrillic, a repeated word and an empty passage."""
    texts, langs = [], []
    for path in sorted(CORPUS.glob("*.txt")):
        paragraphs = [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        texts += paragraphs
        langs += [("de", "fr", "ja").index(path.name[:2])] * len(paragraphs)
    extra = ["Илья Суцкевер сожалеет.", "Emmett Shear Shear devient PDG.", "", "マイクロソフトの株式は49%。"]
    return texts + extra, langs + [3, 1, 1, 2]


def _questions(seed_facts) -> list[str]:
    """Every seed question (5+ languages), a long one (more than 16 distinct tokens: the merge's
    heap path), a repeated word, Cyrillic, and questions with no known token."""
    asked = [q for fact in seed_facts for q in fact["questions"].values()]
    long = " ".join(fact["questions"]["en"] for fact in seed_facts[:4] if "en" in fact["questions"])
    assert len(set(tokenize(long))) > 16
    return asked + [long, "Shear Shear PDG", "О чём сожалеет Илья Суцкевер?", "株式を保有", "zzz unknown", ""]


def _split(texts: list[str], cuts: list[int]) -> list[LexicalIndex]:
    bounds = [0, *cuts, len(texts)]
    return [LexicalIndex.build(texts[a:b]) for a, b in pairwise(bounds)]


def _saved_and_mapped(index: LexicalIndex, folder: Path) -> LexicalIndex:
    """`index` as the reader meets a segment: saved, then loaded memory-mapped."""
    index.save(folder)
    arrays = {key: np.load(folder / name, mmap_mode="r") for key, name in LEXICAL_ARRAYS.items()}
    return LexicalIndex.load(folder, arrays=arrays)


def _assert_same(got: tuple, want: tuple, question: str) -> None:
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32, question
    assert np.array_equal(got[0], want[0]), question
    assert np.array_equal(got[1], want[1]), question  # bit for bit (see the module)


@pytest.mark.parametrize("cuts", [[70], [30, 111]], ids=["2 segments", "3 segments"])
def test_segments_give_the_rows_and_scores_of_one_index(tmp_path: Path, seed_facts, cuts):
    texts, _ = _seed_texts()
    whole = LexicalIndex.build(texts)
    parts = [_saved_and_mapped(part, tmp_path / f"seg{i}") for i, part in enumerate(_split(texts, cuts))]
    segmented = SegmentedLexical(parts)
    assert (segmented.passages, segmented.rows, segmented.total_length) == (whole.passages,) * 2 + (whole.total_length,)
    assert segmented.avgdl == whole.avgdl and np.array_equal(segmented.norms, whole.norms)
    questions = _questions(seed_facts)
    cut, matched = 0, 0
    for question in questions:
        tokens = tokenize(question)
        assert np.array_equal(segmented.idf(tokens), whole.idf(tokens)), question
        assert np.array_equal(segmented.scores(question), whole.scores(question)), question
        for budget in BUDGETS:
            got = segmented.sparse_scores(question, budget)
            _assert_same(got, whole.sparse_scores(question, budget), question)
            everything = whole.sparse_scores(question, 10**9)
            cut += budget < 10**9 and len(got[0]) < len(everything[0])
        matched += len(everything[0]) > 0
    assert matched >= 0.8 * len(questions)  # real questions that share words with the passages
    assert cut >= 10  # the budgets really left tokens out, so the global choice of tokens is tested
    # The split matters without summing: one segment's own statistics score its passages otherwise.
    own = parts[0].sparse_scores(questions[0], 10**9)
    assert not np.array_equal(own[1], whole.sparse_scores(questions[0], 10**9)[1][: len(own[1])])


def test_segments_score_by_language_as_one_index(seed_facts):
    """With each passage's language's idf (`set_languages`, off by default in retrieval), the
    per-language document frequencies are summed over the segments too."""
    texts, langs = _seed_texts()
    whole = LexicalIndex.build(texts).set_languages(np.array(langs))
    segmented = SegmentedLexical(_split(texts, [50, 120])).set_languages(np.array(langs))
    assert np.array_equal(segmented.lang_passages, whole.lang_passages)
    for question in _questions(seed_facts):
        assert np.array_equal(segmented.scores(question), whole.scores(question)), question
        for budget in BUDGETS:
            _assert_same(segmented.sparse_scores(question, budget), whole.sparse_scores(question, budget), question)
    with pytest.raises(ValueError, match="language ids"):
        segmented.set_languages(np.zeros(3, np.uint8))


def test_deleted_rows_never_come_back_and_still_count_in_the_statistics(seed_facts):
    """Tombstones: the deleted passages are left out of the results; the others keep the scores
    of one index of every passage, deleted ones included (their statistics count until a merge)."""
    texts, _ = _seed_texts()
    whole = LexicalIndex.build(texts)
    parts = _split(texts, [60, 100])
    rng = np.random.default_rng(0)
    masks = [rng.random(p.passages) < 0.3 for p in parts]
    masks[1] = None  # a segment without deletions
    segmented = SegmentedLexical(parts, deleted=masks)
    gone = np.concatenate([m if m is not None else np.zeros(p.passages, bool) for m, p in zip(masks, parts)])
    assert gone.sum() > 20
    removed = 0
    for question in _questions(seed_facts):
        want_dense = whole.scores(question)
        removed += int(want_dense[gone].astype(bool).sum())
        want_dense[gone] = 0
        assert np.array_equal(segmented.scores(question), want_dense), question
        for budget in BUDGETS:
            rows, scores = whole.sparse_scores(question, budget)
            kept = ~gone[rows]
            got = segmented.sparse_scores(question, budget)
            assert not gone[got[0]].any(), question
            _assert_same(got, (rows[kept], scores[kept]), question)
    assert removed > 20  # deleted passages would have been found


def test_a_token_of_one_segment_an_empty_segment_and_no_known_token(tmp_path: Path):
    texts, _ = _seed_texts()
    whole = LexicalIndex.build(texts)
    only_last = [t for t in tokenize(texts[-1]) if t not in {w for x in texts[:-1] for w in tokenize(x)}]
    assert only_last  # a token that only the last segment knows
    empty = _saved_and_mapped(LexicalIndex.build([]), tmp_path / "empty")
    parts = [LexicalIndex.build(texts[:80]), empty, LexicalIndex.build(texts[80:])]
    segmented = SegmentedLexical(parts, offsets=[0, 80, 80])
    question = only_last[0] + " Nadella Microsoft"
    assert only_last[0] not in parts[0].vocab and only_last[0] in parts[2].vocab
    for budget in BUDGETS:
        _assert_same(segmented.sparse_scores(question, budget), whole.sparse_scores(question, budget), question)
    rows, _ = segmented.sparse_scores(only_last[0], 10**9)
    assert rows.tolist() == [len(texts) - 1]
    for nothing in ("zzzqqq xyzzy", "", "!!!"):
        rows, scores = segmented.sparse_scores(nothing, 10**9)
        assert rows.dtype == np.int64 and scores.dtype == np.float32 and len(rows) == len(scores) == 0
        assert not segmented.scores(nothing).any() and len(segmented.scores(nothing)) == len(texts)
    alone = SegmentedLexical([empty])  # nothing indexed yet
    assert alone.rows == 0 and len(alone.sparse_scores("Nadella", 10**9)[0]) == 0


def test_segments_that_cannot_be_scored_together_are_refused_by_name():
    texts, _ = _seed_texts()
    first, second = LexicalIndex.build(texts[:10]), LexicalIndex.build(texts[10:20])
    with pytest.raises(ValueError, match="starts at row 5"):
        SegmentedLexical([first, second], offsets=[0, 5])
    with pytest.raises(ValueError, match="analyzer"):
        SegmentedLexical([first, LexicalIndex.build(texts[10:20], analyzer=ANALYZER - 1)])
    with pytest.raises(ValueError, match="mask"):
        SegmentedLexical([first, second], deleted=[np.zeros(3, bool), None])
    with pytest.raises(ValueError, match="at least one"):
        SegmentedLexical([])
    gap = SegmentedLexical([first, second], offsets=[0, 100])  # rows 10..99: nothing
    rows, _ = gap.sparse_scores("Nadella Microsoft OpenAI", 10**9)
    assert gap.rows == 110 and not ((rows >= 10) & (rows < 100)).any() and (rows >= 100).any()

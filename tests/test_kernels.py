"""The compiled lexical loops agree with plain numpy on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.kernels import (
    ONE_BY_ONE_MAX_LISTS,
    merge_counted_postings,
    merge_postings,
    postings_by_language,
    row_dots,
    top_by_language,
)
from qa.lexical import UNPACKED, bm25_weights, length_codes, pack_postings


def _postings(draw_lists: list[list[int]], seed: int) -> tuple[np.ndarray, ...]:
    """Posting lists as bm25s stores them: one array of passages, each list sorted, with scores."""
    rng = np.random.default_rng(seed)
    lists = [np.unique(np.asarray(passages, np.int32)) for passages in draw_lists]
    indices = np.concatenate([np.zeros(0, np.int32), *lists])
    data = rng.uniform(0.1, 5.0, len(indices)).astype(np.float32)
    lengths = np.array([len(one) for one in lists], np.int64)
    ends = np.cumsum(lengths, dtype=np.int64)
    return indices, data, ends - lengths, ends


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 300), max_size=60), max_size=2 * ONE_BY_ONE_MAX_LISTS),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_counted_postings_merge_to_the_merged_bm25_weights(draw_lists, seed, by_language):
    """`merge_counted_postings` (each posting scored as the merge reads it) gives bit for bit the
    merge of `bm25_weights` over numpy's gathered counts, length norms and each posting's idf;
    with languages, each posting takes its passage's language's idf (one by one and heap)."""
    rng = np.random.default_rng(seed)
    indices, _, starts, ends = _postings(draw_lists, seed)
    counts = rng.integers(1, 256, len(indices)).astype(np.uint8)
    lengths = rng.integers(1, 400, 301).astype(np.uint16)
    lengths[:10] = rng.integers(1, 7, 10)  # some short enough to pack in 3 bits, whatever the seed
    norms = rng.uniform(0.3, 4.0, 400).astype(np.float32)
    langs = rng.integers(0, 3, 301).astype(np.uint8) if by_language else np.zeros(0, np.uint8)
    idf = rng.uniform(0.0, 9.0, (len(starts), 3 if by_language else 1)).astype(np.float32)
    weights = rng.integers(1, 4, len(starts)).astype(np.float32)
    rows, scores = merge_counted_postings(indices, UNPACKED, counts, lengths, norms, idf, langs, starts, ends, weights)
    # The same postings packed with their passages' lengths (9 bits for 301 passages: lengths of
    # 1-400 either packed or, from 2**23 - 1 up, read from `lengths`; here all packed), and with a
    # code width that sends every length above 6 to `lengths`: the same rows and floats.
    for row_bits, width in ((9, None), (29, 3)):
        codes = length_codes(lengths, row_bits)
        if width:
            assert (codes == 0).any() and (codes != 0).any()
        packed = pack_postings(indices, codes, row_bits)
        again = merge_counted_postings(packed, row_bits, counts, lengths, norms, idf, langs, starts, ends, weights)
        assert np.array_equal(again[0], rows) and np.array_equal(again[1], scores)
    lists = np.repeat(np.arange(len(starts)), ends - starts)
    want_rows = indices[np.concatenate([np.zeros(0, np.int64)] + [np.arange(a, b) for a, b in zip(starts, ends)])]
    want_idf = idf[lists, langs[want_rows]] if by_language else idf[lists, 0]
    tf = np.concatenate([np.zeros(0, np.uint8)] + [counts[a:b] for a, b in zip(starts, ends)])
    data = np.zeros(len(indices), np.float32)
    data[np.concatenate([np.zeros(0, np.int64)] + [np.arange(a, b) for a, b in zip(starts, ends)])] = bm25_weights(
        tf, norms[lengths[want_rows]], want_idf
    )
    want = merge_postings(indices, data, starts, ends, weights)
    assert np.array_equal(rows, want[0]) and scores.dtype == np.float32 and np.array_equal(scores, want[1])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(0, 300), max_size=60), max_size=8), st.integers(0, 2**16))
def test_postings_by_language_counts_each_lists_passages_per_language(draw_lists, seed):
    indices, _, starts, ends = _postings(draw_lists, seed)
    langs = np.random.default_rng(seed).integers(0, 4, 301).astype(np.uint8)
    df = postings_by_language(indices, UNPACKED, starts, ends, langs, 4)
    want = [np.bincount(langs[indices[a:b]], minlength=4) for a, b in zip(starts, ends)]
    assert df.shape == (len(starts), 4) and np.array_equal(df, np.array(want).reshape(-1, 4))
    packed = pack_postings(indices, length_codes(np.full(301, 7), 9), 9)
    assert np.array_equal(postings_by_language(packed, 9, starts, ends, langs, 4), df)


@settings(max_examples=300, deadline=None)
@given(
    # Up to 16 lists are merged one by one, more through a heap: both ways are drawn.
    st.lists(st.lists(st.integers(0, 300), max_size=60), max_size=2 * ONE_BY_ONE_MAX_LISTS),
    st.integers(0, 2**16),
)
def test_merged_postings_are_the_summed_scores_per_passage(draw_lists, seed):
    indices, data, starts, ends = _postings(draw_lists, seed)
    weights = np.random.default_rng(seed + 1).integers(1, 4, len(starts)).astype(np.float32)
    rows, scores = merge_postings(indices, data, starts, ends, weights)

    expected = np.zeros(301, np.float64)
    for start, end, weight in zip(starts, ends, weights):
        np.add.at(expected, indices[start:end], (data[start:end] * weight).astype(np.float64))
    touched = np.unique(indices)
    assert rows.tolist() == touched.tolist()  # ascending, each passage once
    np.testing.assert_allclose(scores, expected[touched], rtol=1e-6)
    assert rows.dtype == np.int64 and scores.dtype == np.float32


def test_a_long_question_s_many_posting_lists_are_merged_through_the_heap():
    # 2,000 lists of 25 postings over the same 2,000 passages (a pasted paragraph of CJK
    # bigrams): one by one, that would be ~2,000 x 25,000 steps; the heap reads each posting once.
    rng = np.random.default_rng(3)
    lists = [np.sort(rng.choice(2_000, 25, replace=False)).astype(np.int32) for _ in range(2_000)]
    indices, ends = np.concatenate(lists), np.arange(1, 2_001, dtype=np.int64) * 25
    data = np.ones(len(indices), np.float32)
    rows, scores = merge_postings(indices, data, ends - 25, ends, np.ones(2_000, np.float32))
    assert rows.tolist() == np.unique(indices).tolist()
    assert scores.tolist() == np.bincount(indices)[rows].astype(np.float32).tolist()


def test_merged_postings_read_only_the_lists_given():
    indices = np.array([1, 5, 9, 2, 5, 7, 5], np.int32)
    data = np.array([1, 1, 1, 2, 2, 2, 4], np.float32)
    # Lists [1, 5, 9] and [5] of the three: passages 2 and 7 (the middle list) are not read.
    rows, scores = merge_postings(indices, data, np.array([0, 6]), np.array([3, 7]), np.array([1.0, 0.5], np.float32))
    assert rows.tolist() == [1, 5, 9] and scores.tolist() == [1.0, 3.0, 1.0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 6)), max_size=120),
    st.integers(0, 5),
)
def test_each_language_s_best_are_picked_and_scores_scaled_by_its_best(matches, k):
    # Few distinct scores: many ties, as duplicate passages give in a real corpus.
    rows = np.arange(len(matches), dtype=np.int64) * 3  # sorted, sparse rows of a larger corpus
    lang_ids = np.zeros(3 * len(matches) + 1, np.int8)
    lang_ids[rows] = [lang for lang, _ in matches]
    scores = np.array([score for _, score in matches], np.float32) / 2

    scaled, picked = top_by_language(rows, scores, lang_ids, k)

    langs = lang_ids[rows]
    for lang in range(4):
        mine = scores[langs == lang]
        if len(mine):
            np.testing.assert_allclose(scaled[langs == lang], mine / mine.max(), rtol=1e-6)
        chosen = picked[lang_ids[picked] == lang]
        best = np.sort(mine)[::-1][:k]
        assert sorted(scores[chosen // 3].tolist(), reverse=True) == best.tolist()
    assert len(set(picked.tolist())) == len(picked)


def test_top_by_language_reads_each_row_s_language_from_the_whole_corpus():
    lang_ids = np.array([0, 1, 1, 0, 2, 2, 1], np.int16)
    rows = np.array([1, 3, 4, 6], np.int64)
    scores = np.array([2.0, 4.0, 1.0, 3.0], np.float32)
    scaled, picked = top_by_language(rows, scores, lang_ids, 1)
    assert scaled.tolist() == pytest.approx([2 / 3, 1.0, 1.0, 1.0])
    assert sorted(picked.tolist()) == [3, 4, 6]  # the best of languages 0, 2 and 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stored", [np.float32, np.int8])
def test_row_dots_equal_the_matrix_product_of_the_rows(dtype, stored):
    rng = np.random.default_rng(0)
    vectors = (rng.standard_normal((1000, 384)) * (30 if stored == np.int8 else 1)).astype(stored)
    rows = np.array([999, 0, 17, 17, 500], np.int64)
    query = rng.standard_normal(384).astype(dtype)
    dots = row_dots(vectors, rows, query)
    assert dots.dtype == np.float32
    np.testing.assert_allclose(dots, vectors[rows].astype(np.float64) @ query, rtol=1e-5, atol=1e-3)
    assert len(row_dots(vectors, np.zeros(0, np.int64), query)) == 0


def test_the_loops_run_without_scipy_linalg_and_numba_keeps_its_blas():
    """Loading the loops leaves scipy.linalg unimported (numba's check for BLAS is deferred), and
    numba's functions that use BLAS still compile and agree with numpy in that process."""
    import subprocess
    import sys

    code = """
import sys
import numpy as np
from qa.kernels import merge_postings, row_dots
rows, scores = merge_postings(np.array([1, 3, 3, 5], np.int32), np.ones(4, np.float32),
                              np.array([0, 2], np.int64), np.array([2, 4], np.int64), np.ones(2, np.float32))
assert rows.tolist() == [1, 3, 5] and scores.tolist() == [1, 2, 1]
assert row_dots(np.eye(3, dtype=np.float32), np.array([2], np.int64), np.ones(3, np.float32)).tolist() == [1]
print("scipy.linalg" in sys.modules)
from numba import njit
import numba.np.arraymath
a, b = np.arange(6.0).reshape(2, 3), np.arange(3.0)
assert np.array_equal(njit(lambda x, y: np.dot(x, y))(a, b), a @ b)
assert np.array_equal(njit(lambda x, y: np.convolve(x, y))(b, b), np.convolve(b, b))
print(numba.np.arraymath._HAVE_BLAS, "scipy.linalg" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "True", "True"]

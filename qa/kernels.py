"""Compiled loops of a question's candidate stage (numba), where numpy needs a sort or a copy.

Measured at 1M passages (40 real questions, CPU cache flushed between them):

- A question's words match ~25,000 passages. Summing their postings per passage and keeping
  each language's best took ~20 numpy calls and two sorts, 1.25-1.4 ms; these loops make one
  pass each, 0.7 ms with the token look-ups.
- Its ~1,400 candidates' vectors were copied out of the index to be multiplied, 1.0 ms; read
  in place, 0.5 ms. The shortlist's sentences likewise.

A whole question: 5.04 ms instead of 6.20 (old and new code alternating in one process).
Each loop keeps the result of the numpy code it replaces (`tests/test_kernels.py`).

The price: compiled on first use and cached next to this file (or in numba's user cache when
that is not writable), so a fresh install's first question pays a few seconds once; a later
process pays ~0.3 s of CPU to import numba and load them (~0.5 s while numba imported
scipy.linalg with them: see `_load_target_without_blas`). When they came, `qa serve` was ready
in 1.38x the bare model's load time instead of 1.20x; its resident memory grew by 8 MB. Imported when a question
needs it, never with `qa` (`Engine.warm_up` loads them before a server says ready).
"""

from __future__ import annotations

import importlib.util

import numpy as np
from numba import njit

from qa.lexical import bm25_weight

__all__ = [
    "int8_row_dots", "merge_counted_postings", "merge_postings", "postings_by_language", "row_dots",
    "top_by_language",
]  # fmt: skip


def _load_target_without_blas() -> None:
    """Load numba's CPU target (its implementations, loaded before any compiled function first
    runs) without importing scipy.linalg.

    numba imports scipy.linalg then only to note whether BLAS is there (`_HAVE_BLAS`, which
    np.convolve and np.correlate read); none of these loops use BLAS, and the import cost ~0.2 s
    of CPU (scipy's array layer imports numpy.f2py), an eighth of a cold `qa ask`. So the check
    fails while the target loads, and the flag is set after to what it would have found:
    whatever needs BLAS (np.dot...) imports scipy.linalg itself when compiled (`ensure_blas`).
    Only numba's own name is swapped, not the import: other threads import scipy as usual.
    """
    import sys

    if "numba.np.arraymath" in sys.modules or "scipy.linalg" in sys.modules:
        return  # loaded already, or scipy.linalg paid for: nothing to save
    try:
        from numba.core.registry import cpu_target
        from numba.np import linalg
    except ImportError:  # another numba layout: load as numba does
        return
    ensure_blas = linalg.ensure_blas

    def no_blas_yet() -> None:
        raise ImportError("scipy.linalg is imported when a function needs BLAS")

    linalg.ensure_blas = no_blas_yet
    try:
        cpu_target.target_context.refresh()
    finally:
        linalg.ensure_blas = ensure_blas
        arraymath = sys.modules.get("numba.np.arraymath")
        if arraymath is not None and getattr(arraymath, "ensure_blas", None) is no_blas_yet:
            arraymath.ensure_blas = ensure_blas
            arraymath._HAVE_BLAS = importlib.util.find_spec("scipy.linalg") is not None


_load_target_without_blas()


# Merging list by list reads the running result again for each list: with 16 lists of equal
# length (the worst order), 8.5 steps a posting. Beyond, a heap (log2 of the lists a posting).
ONE_BY_ONE_MAX_LISTS = 16


@njit(cache=True, nogil=True)
def merge_postings(
    indices: np.ndarray, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(passage rows, summed scores), rows ascending, of the posting lists
    `indices[starts[j]:ends[j]]` (each sorted by passage, scores `data`, weighted by `weights[j]`).

    Lists are best given rarest first: up to `ONE_BY_ONE_MAX_LISTS` of them are merged into the
    running result one at a time, so the long lists come last and are read once, and each step
    is a two-way merge that rarely mispredicts (0.31 ms for a question's ~30,000 postings in 6
    lists at 1M passages, against 0.42 ms through a heap). More lists (a long question) go
    through a heap, whose cost grows with the log of their number, not the number.
    Sums in float64, as the numpy version's running sum did.
    """
    total = 0  # postings in all: the most passages the result can hold
    for j in range(len(starts)):
        total += ends[j] - starts[j]
    if len(starts) > ONE_BY_ONE_MAX_LISTS:
        return _merge_by_heap(indices, data, starts, ends, weights, total)
    return _merge_one_by_one(indices, data, starts, ends, weights, total)


@njit(cache=True, nogil=True)
def merge_counted_postings(
    indices: np.ndarray, row_bits: int, counts: np.ndarray, lengths: np.ndarray, norms: np.ndarray,
    idf: np.ndarray, lang_ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`merge_postings` of postings stored as term counts: each read posting is scored with
    `qa.lexical.bm25_weight` of its count, its passage's length normalization
    (`norms[lengths[row]]`) and the idf `idf[j, lang_ids[row]]` of its passage's language (`idf`
    of one column and `lang_ids` empty: the pool's idf), into one contiguous list, which is then
    merged. The same floats as scoring the postings with numpy (`qa.lexical.bm25_weights`) and
    merging those. Scoring inside the merge loop instead (one pass) was ~10x slower: 0.6-0.7 ms
    against ~0.09 ms for a question's 23,000 postings (benchmarks/README.md, "Where the extra
    time goes"), as the merge's inner loop no longer compiled to a plain two-way merge.

    `indices` hold each posting's passage in their low `row_bits` bits and its length's code above
    (`qa.lexical.pack_postings`: length + 1, or 0 = read `lengths[row]`): the length comes with
    the posting instead of from a read spread over the whole `lengths` array."""
    mask = (np.int64(1) << row_bits) - 1
    total = 0
    for j in range(len(starts)):
        total += ends[j] - starts[j]
    rows, scores = np.empty(total, np.int64), np.empty(total, np.float32)
    first, last = np.empty(len(starts), np.int64), np.empty(len(starts), np.int64)
    q = 0
    by_language = len(lang_ids) > 0
    for j in range(len(starts)):
        first[j] = q
        for p in range(starts[j], ends[j]):
            packed = np.int64(indices[p])
            row = packed & mask
            code = packed >> row_bits
            weight = idf[j, lang_ids[row]] if by_language else idf[j, 0]
            rows[q] = row
            norm = norms[lengths[row]] if code == 0 else norms[code - 1]
            scores[q] = _bm25_weight(np.float32(counts[p]), norm, weight)
            q += 1
        last[j] = q
    return merge_postings(rows, scores, first, last, weights)


# BM25's one expression (`qa.lexical.bm25_weight`), compiled into the merge. numba's cache of
# `merge_counted_postings` is keyed on this file: it is not recompiled when only qa/lexical.py changes,
# so a change there must touch this file too (tests/test_kernels.py compares the two).
_bm25_weight = njit(nogil=True, inline="always")(bm25_weight)


@njit(cache=True, nogil=True)
def postings_by_language(
    indices: np.ndarray, row_bits: int, starts: np.ndarray, ends: np.ndarray, lang_ids: np.ndarray, n_langs: int
) -> np.ndarray:
    """How many of the postings `[starts[j], ends[j])` are in passages of each language
    (`lang_ids[row]`): (lists, n_langs) int64, each token's document frequency per language.
    The passage is the low `row_bits` bits of a posting (`qa.lexical.pack_postings`)."""
    mask = (np.int64(1) << row_bits) - 1
    df = np.zeros((len(starts), n_langs), np.int64)
    for j in range(len(starts)):
        for p in range(starts[j], ends[j]):
            df[j, lang_ids[np.int64(indices[p]) & mask]] += 1
    return df


@njit(cache=True, nogil=True)
def _merge_one_by_one(
    indices: np.ndarray, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, total: int
) -> tuple[np.ndarray, np.ndarray]:
    rows, sums = np.empty(total, np.int64), np.empty(total, np.float64)
    rows_next, sums_next = np.empty(total, np.int64), np.empty(total, np.float64)
    n = 0
    for j in range(len(starts)):
        p, end, weight = starts[j], ends[j], weights[j]
        i = m = 0
        while i < n and p < end:
            here, there = rows[i], indices[p]
            if here <= there:
                rows_next[m], sums_next[m] = here, sums[i]
                i += 1
                if here == there:
                    sums_next[m] += np.float64(data[p] * weight)
                    p += 1
            else:
                rows_next[m], sums_next[m] = there, np.float64(data[p] * weight)
                p += 1
            m += 1
        while i < n:
            rows_next[m], sums_next[m] = rows[i], sums[i]
            i += 1
            m += 1
        while p < end:
            there = indices[p]
            rows_next[m], sums_next[m] = there, np.float64(data[p] * weight)
            p += 1
            m += 1
        rows, rows_next = rows_next, rows
        sums, sums_next = sums_next, sums
        n = m
    return rows[:n].copy(), sums[:n].astype(np.float32)


@njit(cache=True, nogil=True)
def _merge_by_heap(
    indices: np.ndarray, data: np.ndarray, starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, total: int
) -> tuple[np.ndarray, np.ndarray]:
    rows, scores = np.empty(total, np.int64), np.empty(total, np.float32)
    position = starts.copy()
    heap_row = np.empty(len(starts), np.int64)  # min-heap of each list's current passage
    heap_list = np.empty(len(starts), np.int64)
    size = 0
    for j in range(len(starts)):
        if position[j] < ends[j]:
            heap_row[size], heap_list[size] = indices[position[j]], j
            size += 1
            _sift_up(heap_row, heap_list, size - 1)
    found, current, summed = 0, -1, 0.0
    while size > 0:
        row, j = heap_row[0], heap_list[0]
        if row != current:
            if current >= 0:
                rows[found], scores[found] = current, summed
                found += 1
            current, summed = row, 0.0
        summed += np.float64(data[position[j]] * weights[j])
        position[j] += 1
        if position[j] < ends[j]:
            heap_row[0] = indices[position[j]]
        else:
            size -= 1
            heap_row[0], heap_list[0] = heap_row[size], heap_list[size]
        _sift_down(heap_row, heap_list, size, 0)
    if current >= 0:
        rows[found], scores[found] = current, summed
        found += 1
    return rows[:found].copy(), scores[:found].copy()


@njit(cache=True, nogil=True)
def top_by_language(rows: np.ndarray, scores: np.ndarray, lang_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For the passages `rows` (with positive `scores`): each score divided by the best of its
    language (`lang_ids[row]`), and the rows of the (at most) k best of each language, language
    by language (which of equal scores at the k-th place is kept is unspecified, as with
    `np.argpartition`).

    One pass for the best scores, one through a k-slot min-heap per language: no sort.
    """
    langs = np.empty(len(rows), np.int64)
    n_langs = 0
    for i in range(len(rows)):
        langs[i] = lang_ids[rows[i]]
        n_langs = max(n_langs, langs[i] + 1)
    best = np.zeros(n_langs, np.float32)
    for i in range(len(rows)):
        best[langs[i]] = max(best[langs[i]], scores[i])
    scaled = np.empty(len(rows), np.float32)
    heap_score = np.empty((n_langs, max(k, 1)), np.float32)
    heap_row = np.empty((n_langs, max(k, 1)), np.int64)
    size = np.zeros(n_langs, np.int64)
    for i in range(len(rows)):
        lang = langs[i]
        scaled[i] = scores[i] / max(best[lang], np.float32(1e-6))
        if size[lang] < k:
            heap_score[lang, size[lang]], heap_row[lang, size[lang]] = scores[i], rows[i]
            size[lang] += 1
            _sift_up(heap_score[lang], heap_row[lang], size[lang] - 1)
        elif k > 0 and scores[i] > heap_score[lang, 0]:
            heap_score[lang, 0], heap_row[lang, 0] = scores[i], rows[i]
            _sift_down(heap_score[lang], heap_row[lang], k, 0)
    picked = np.empty(size.sum(), np.int64)
    out = 0
    for lang in range(n_langs):
        picked[out : out + size[lang]] = heap_row[lang, : size[lang]]
        out += size[lang]
    return scaled, picked


@njit(cache=True, nogil=True, fastmath=True)
def row_dots(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`vectors[rows] @ query` (float32), reading each row in place instead of copying them out.

    (fastmath lets the sum run in SIMD lanes: the last bits differ from BLAS's order, ~1e-6.)
    """
    out = np.empty(len(rows), np.float32)
    for i in range(len(rows)):
        row = vectors[rows[i]]
        total = np.float32(0.0)
        for j in range(len(query)):
            total += row[j] * query[j]
        out[i] = total
    return out


@njit(cache=True, nogil=True, fastmath=True)
def int8_row_dots(codes: np.ndarray, scales: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """`row_dots` of vectors stored as int8 codes and a scale per row (`qa.index.ann.Int8Rows`):
    each element decoded as `Int8Rows` decodes it (code times scale, in float32) and multiplied
    as `row_dots` multiplies, so the same floats as `row_dots` of the decoded rows (what another
    backend holding the decoded vectors computes). A row is 384 bytes to read at 384
    dimensions, half of float16's, and int8 widens to float32 directly (numba has no float16)."""
    out = np.empty(len(rows), np.float32)
    for i in range(len(rows)):
        row = codes[rows[i]]
        scale = np.float32(scales[rows[i]])
        total = np.float32(0.0)
        for j in range(len(query)):
            total += (np.float32(row[j]) * scale) * query[j]
        out[i] = total
    return out


@njit(cache=True, nogil=True, inline="always")
def _sift_up(keys: np.ndarray, values: np.ndarray, at: int) -> None:
    """Restore the min-heap `keys[:at + 1]` (with `values` alongside) after setting `keys[at]`."""
    while at > 0:
        parent = (at - 1) // 2
        if keys[parent] <= keys[at]:
            return
        keys[parent], keys[at] = keys[at], keys[parent]
        values[parent], values[at] = values[at], values[parent]
        at = parent


@njit(cache=True, nogil=True, inline="always")
def _sift_down(keys: np.ndarray, values: np.ndarray, size: int, at: int) -> None:
    """Restore the min-heap `keys[:size]` (with `values` alongside) after raising `keys[at]`."""
    while True:
        child = 2 * at + 1
        if child >= size:
            return
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[at] <= keys[child]:
            return
        keys[at], keys[child] = keys[child], keys[at]
        values[at], values[child] = values[child], values[at]
        at = child

"""Scoring that ignores the language a passage is written in: pure numpy, shared by `retrieve`
and `qa eval`.

The multilingual model scores a question higher against *any* passage in the question's own
language than against passages in other languages, so in a mixed corpus the right passage in
another language is buried under same-language near misses. We correct this per language,
with statistics of the corpus itself (no parallel text): for the passages of language L, with
mean vector m_L and covariance C_L, the scores of a question q have mean q·m_L and variance
qᵀC_L q, exactly. Ranking by the standardized score (q·p − q·m_L) / sqrt(qᵀC_L q) asks
"how unusually well does this passage match, for a passage of its language?", which is
comparable across languages. Within one language it is a monotone transform, so a
single-language corpus ranks exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from qa.language_stats import (
    ABSENT_LANGUAGE_CENTERING,
    MIN_PASSAGES_FOR_STATS,
    LanguageStats,
    LanguageSums,
    merge_sums,
    subtract_sums,
)

__all__ = [
    "ABSENT_LANGUAGE_CENTERING",
    "MIN_PASSAGES_FOR_STATS",
    "FusionWeights",
    "LanguageStats",
    "LanguageSums",
    "best_sentence_scores",
    "fold_groups",
    "fuse",
    "group_members",
    "lexical_by_language",
    "lexical_by_language_sparse",
    "merge_sums",
    "shortlist",
    "subtract_sums",
    "translation_groups",
]


def lexical_by_language(scores: np.ndarray, lang_ids: np.ndarray, n_langs: int) -> np.ndarray:
    """BM25 scores divided by the best score in the same language, per question (last axis).

    A question shares words mostly with passages in its own language; scaling each language
    by its own best match keeps the lexical signal (names, numbers) from turning into a
    language preference again.
    """
    scores = np.atleast_2d(scores)
    best = np.zeros((scores.shape[0], n_langs), np.float32)
    for li in range(n_langs):
        cols = lang_ids == li
        if cols.any():
            best[:, li] = scores[:, cols].max(axis=1)
    return scores / np.maximum(best[:, lang_ids], 1e-6)


def lexical_by_language_sparse(
    rows: np.ndarray, scores: np.ndarray, lang_ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For a sparse BM25 result (`LexicalIndex.sparse_scores`: only the passages `rows` that share
    a word with the question): `lexical_by_language` of their scores, and the (at most) k best
    of them in each language (the lexical candidates).

    Costs the number of matches, not the corpus size, and linearly: one compiled pass for each
    language's best score, one through a k-slot heap per language (`qa.kernels`). Measured at 1M
    passages with its ~25,000 matches a question: 0.5 ms for a radix sort by language and a
    partial selection per language in numpy; a full sort by score cost 4 ms.
    """
    from qa.kernels import top_by_language

    if not len(rows):
        return scores.astype(np.float32), rows
    return top_by_language(rows, np.asarray(scores, np.float32), lang_ids, k)


def translation_groups(
    vectors: np.ndarray,
    langs: list[str] | np.ndarray,
    threshold: float,
    *,
    rows_of: Callable[[np.ndarray], np.ndarray] | None = None,
    block: int = 65536,
) -> np.ndarray:
    """Group passages that are translations of each other; returns a group id per passage.

    Two passages in different languages are linked when each is the other's nearest neighbour
    in its language and their cosine is at least `threshold`; groups are the connected
    components of those links. Passages with no translation are groups of one.

    `rows_of(rows)`: the vectors compared for those row numbers (default `vectors[rows]`), read
    `block` rows at a time, e.g. centred on the fly from a memory-mapped array: then a block of
    each of two languages is held, never a copy of the vectors. The groups do not depend on the
    block size.
    """
    import faiss

    langs = np.asarray(langs)
    n = len(vectors)
    parent = np.arange(n)
    rows_of = rows_of or (lambda rows: vectors[rows])

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    names = sorted(set(langs.tolist()))
    rows = {name: np.flatnonzero(langs == name) for name in names}
    parts = {name: _blocks(len(rows[name]), block) for name in names}

    # Nearest neighbours through FAISS (blocked BLAS), a block of each language against a block
    # of the other, the best kept as FAISS keeps it (the first of equal scores): memory is a few
    # blocks, where a full similarity matrix per pair of languages would be quadratic.
    def block_of(name: str, a: int, b: int) -> np.ndarray:
        return np.ascontiguousarray(rows_of(rows[name][a:b]), dtype=np.float32)

    def nearest(base: str, queries: str) -> tuple[np.ndarray, np.ndarray]:
        best = np.full(len(rows[queries]), -np.inf, np.float32)
        best_at = np.full(len(rows[queries]), -1, np.int64)
        for qa, qb in parts[queries]:
            xq = block_of(queries, qa, qb)
            for ba, bb in parts[base]:
                sims, at = faiss.knn(xq, block_of(base, ba, bb), 1, metric=faiss.METRIC_INNER_PRODUCT)
                better = sims[:, 0] > best[qa:qb]
                best[qa:qb][better] = sims[better, 0]
                best_at[qa:qb][better] = at[better, 0] + ba
        return best, best_at

    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            ra, rb = rows[a], rows[b]
            sims, best_b = nearest(b, a)
            _, best_a = nearest(a, b)
            mutual = (best_a[best_b] == np.arange(len(ra))) & (sims >= threshold)
            for i in np.flatnonzero(mutual).tolist():
                parent[find(int(ra[i]))] = find(int(rb[best_b[i]]))
    roots = np.array([find(i) for i in range(n)])
    _, group_ids = np.unique(roots, return_inverse=True)
    return group_ids.astype(np.int64)


def _blocks(n: int, block: int) -> list[tuple[int, int]]:
    """[start, end) ranges of at most `block` rows covering n rows (block rounded up to FAISS's
    query block of 4096), a short last one merged into the one before: FAISS computes a search
    of fewer than 20 queries without BLAS, with other rounding, so no block is searched with
    fewer than the whole search would have been."""
    block = max(4096, -(-block // 4096) * 4096)
    starts = list(range(0, n, block))
    if len(starts) > 1 and n - starts[-1] < 20:
        starts.pop()
    return [(start, ends) for start, ends in zip(starts, starts[1:] + [n])]


def shortlist(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the `n` best of `scores` (1-d), in ascending position order; all when n is 0
    or at least their number. The passages whose sentences are scored (the second stage)."""
    if not n or n >= len(scores):
        return np.arange(len(scores))
    return np.sort(np.argpartition(-scores, n - 1)[:n])


def best_sentence_scores(
    queries: np.ndarray,
    sentence_scores: np.ndarray,
    owner: np.ndarray,
    n_passages: int,
    stats: LanguageStats,
    lang_ids: np.ndarray,
) -> np.ndarray:
    """(n_q, n_passages): each passage's best standardized sentence score (0 if it has none).

    `sentence_scores` (n_q, m): the questions' inner products with m sentences; `owner[i]` is
    the passage (0..n_passages-1) of sentence i, `lang_ids[i]` its language in `stats`. A
    question usually asks about one sentence; a passage that holds it should not lose to one
    that only talks around the topic.
    """
    z = stats.standardize(queries, sentence_scores, lang_ids)
    best = np.zeros((len(queries), n_passages))
    if len(owner):
        # One maximum per run of the same owner (reduceat), instead of a slow ufunc.at scatter.
        order = np.argsort(owner, kind="stable")
        owners = owner[order]
        starts = np.flatnonzero(np.concatenate(([True], owners[1:] != owners[:-1])))  # (np.r_: 2x the cost)
        best[:, owners[starts]] = np.maximum.reduceat(z[:, order], starts, axis=1)
    return best


def group_members(groups: np.ndarray) -> dict[int, list[int]]:
    """Translation group id -> rows of its passages, in row order, for groups of two or more.

    A passage missing from the mapping is alone in its group: most are, and a million one-item
    lists would cost ~100 MB.
    """
    groups = np.asarray(groups)
    order = np.argsort(groups, kind="stable")
    ids, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    shared = np.flatnonzero(counts > 1)
    return {int(ids[i]): order[starts[i] : starts[i] + counts[i]].tolist() for i in shared}


def fold_groups(
    ranked: np.ndarray,
    groups: np.ndarray,
    members: dict[int, list[int]],
    langs: np.ndarray,
    lang: str,
    k: int,
    allowed: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """One hit per translation group, best first: (position in `ranked`, row shown).

    The row shown is the group's member in `lang` when it has one (the asker reads their own
    language first), else the best-ranked member; with `allowed` (a filter's passage mask), only
    a member it lets through.
    """
    hits: list[tuple[int, int]] = []
    seen: set[int] = set()
    for position, row in enumerate(ranked.tolist()):
        group = int(groups[row])
        if group in seen:
            continue
        seen.add(group)
        shown = members.get(group, [row])
        if allowed is not None:
            shown = [m for m in shown if allowed[m]]
        hits.append((position, next((m for m in shown if langs[m] == lang), row)))
        if len(hits) == k:
            break
    return hits


@dataclass(frozen=True)
class FusionWeights:
    """The weights of `fuse`, from the settings (`QA_LEXICAL_WEIGHT`, `QA_SENTENCE_WEIGHT`,
    `QA_SENTENCE_CANDIDATES`)."""

    lexical: float
    sentence: float
    sentence_candidates: int

    @classmethod
    def from_settings(cls, settings) -> FusionWeights:
        return cls(settings.lexical_weight, settings.sentence_weight, settings.sentence_candidates)


# Added to the passages left out of the sentence stage, so that they rank after every shortlisted
# passage, in their first-stage order.
NOT_SHORTLISTED = 1e6


def fuse(
    dense: np.ndarray,
    lexical: np.ndarray | None,
    sentences: Callable[[np.ndarray], np.ndarray] | None,
    weights: FusionWeights,
) -> tuple[np.ndarray, np.ndarray]:
    """The final scores of candidate passages: the one ranking of serving and of `qa eval`.

    `dense` (n_q, n): each question's standardized dense score of n candidate passages
    (`LanguageStats.standardize`); `lexical` (n_q, n): their BM25 scores scaled per language
    (`lexical_by_language`, 0 where a passage shares no word), or None. The first stage is
    dense + lexical weight x lexical; the `sentence_candidates` best of each question then add
    the sentence weight x their best sentence's standardized score: `sentences(mask)` returns
    those scores (n_q, n), read only where `mask` is True (a caller may compute only those).
    Returns (scores, mask): the others score their first stage minus `NOT_SHORTLISTED`, after
    every shortlisted passage. `qa.retrieval.Engine.score` calls this for one question over its
    candidates, `qa.evaluate.Pipeline` for all questions over every passage.
    """
    scores = dense
    if lexical is not None and weights.lexical:
        scores = scores + weights.lexical * lexical
    if sentences is None or not weights.sentence:
        return scores, np.ones(scores.shape, dtype=bool)
    n = weights.sentence_candidates
    if n and n < scores.shape[1]:
        mask = np.zeros(scores.shape, dtype=bool)
        for q in range(len(scores)):  # (indexing: a zip over the arrays' rows costs ~1.5 µs more)
            _mark_best(scores[q], n, mask[q])
    else:
        mask = np.ones(scores.shape, dtype=bool)
    lifted = weights.sentence * sentences(mask)
    # np.where(mask, scores + lifted, scores - NOT_SHORTLISTED), without a full sum nobody reads:
    # the same floats (the shortlisted summed as there, in the same type; the others cast as there).
    fused = np.asarray(scores - NOT_SHORTLISTED, dtype=np.result_type(scores, lifted))
    np.add(scores, lifted, out=fused, where=mask)
    return fused, mask


def _mark_best(scores: np.ndarray, n: int, row: np.ndarray) -> None:
    """Set `row` True at the `n` best of `scores` (1-d), the positions `shortlist` returns.

    The n-th best score is a threshold (a partition of the values: cheaper than `shortlist`'s of
    the negated scores' positions, then its sort); only when others tie with it (a duplicate
    passage, say) would the threshold keep more than n, and `shortlist` picks which.
    """
    cut = np.partition(scores, len(scores) - n)[len(scores) - n]
    np.greater_equal(scores, cut, out=row)
    if np.count_nonzero(row) != n:
        row[:] = False
        row[shortlist(scores, n)] = True

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

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LanguageStats", "reciprocal_rank_fusion"]

MIN_PASSAGES_FOR_STATS = 8  # fewer than this and a language's covariance is noise
SHRINKAGE = 0.1  # covariance shrunk towards a scalar: a few hundred passages in 384 dimensions are a noisy estimate


@dataclass
class LanguageStats:
    """Per-language mean vector and covariance of the passage embeddings.

    `query_means` are, per language, the mean of corpus sentences embedded as *questions*:
    questions share a direction with other questions of their language, and removing part of
    it (`center_query`) weakens the pull towards passages in the asker's language. Estimated
    from the corpus itself, no parallel text needed.
    """

    langs: list[str]
    means: np.ndarray  # (n_langs, d)
    covariances: np.ndarray  # (n_langs, d, d)
    query_means: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(cls, vectors: np.ndarray, langs: list[str] | np.ndarray) -> LanguageStats:
        """Statistics of each language that has enough passages; the rest share the pooled ones."""
        langs = np.asarray(langs)
        names = sorted(set(langs.tolist()))
        pooled_mean, pooled_cov = _moments(vectors)
        means, covs = [], []
        for name in names:
            rows = vectors[langs == name]
            if len(rows) >= MIN_PASSAGES_FOR_STATS:
                mean, cov = _moments(rows)
            else:
                mean, cov = pooled_mean, pooled_cov
            means.append(mean)
            covs.append(cov)
        return cls(names, np.asarray(means, np.float32), np.asarray(covs, np.float32))

    def lang_ids(self, langs: list[str] | np.ndarray) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(self.langs)}
        return np.array([lookup[lang] for lang in langs], dtype=np.int64)

    def moments(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each query and language: mean and standard deviation of its passage scores."""
        mean = queries @ self.means.T  # (n_q, n_langs)
        # qᵀ C q for every language at once.
        var = np.einsum("qd,lde,qe->ql", queries, self.covariances, queries)
        return mean, np.sqrt(np.maximum(var, 1e-12))

    def standardize(self, queries: np.ndarray, scores: np.ndarray, lang_ids: np.ndarray) -> np.ndarray:
        """Standardized scores for a (n_q, n_passages) score matrix of passages in `lang_ids`."""
        mean, std = self.moments(queries)
        return (scores - mean[:, lang_ids]) / std[:, lang_ids]

    def center_query(self, queries: np.ndarray, lang: str, strength: float) -> np.ndarray:
        """Questions in `lang` with `strength` × their language's question mean removed."""
        mean = self.query_means.get(lang)
        if mean is None or not strength:
            return queries
        return queries - strength * mean

    def centered(self, vectors: np.ndarray, lang_ids: np.ndarray) -> np.ndarray:
        """Passage vectors minus their language's mean, re-normalized: cosine without the language."""
        out = vectors - self.means[lang_ids]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def to_arrays(self) -> dict[str, np.ndarray]:
        d = self.means.shape[1]
        q_langs = sorted(self.query_means)
        return {
            "langs": np.array(self.langs),
            "means": self.means,
            "covariances": self.covariances,
            "query_langs": np.array(q_langs, dtype=str),
            "query_means": np.array([self.query_means[x] for x in q_langs], np.float32).reshape(-1, d),
        }

    @classmethod
    def from_arrays(cls, arrays) -> LanguageStats:
        query_means = dict(zip([str(x) for x in arrays["query_langs"]], arrays["query_means"]))
        return cls([str(x) for x in arrays["langs"]], arrays["means"], arrays["covariances"], query_means)


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


def _moments(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = vectors.astype(np.float64)
    mean = vectors.mean(axis=0)
    d = vectors.shape[1]
    if len(vectors) < 2:
        return mean, np.eye(d) / d
    cov = np.cov(vectors, rowvar=False)
    scale = np.trace(cov) / d
    return mean, (1 - SHRINKAGE) * cov + SHRINKAGE * scale * np.eye(d)


def reciprocal_rank_fusion(rankings: list[np.ndarray], weights: list[float] | None = None, k: int = 60) -> dict[int, float]:
    """Fuse ranked lists of ids: score(id) = Σ w / (k + rank). Higher is better."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, item in enumerate(ranking):
            fused[int(item)] = fused.get(int(item), 0.0) + weight / (k + rank + 1)
    return fused


def translation_groups(vectors: np.ndarray, langs: list[str] | np.ndarray, threshold: float) -> np.ndarray:
    """Group passages that are translations of each other; returns a group id per passage.

    Two passages in different languages are linked when each is the other's nearest neighbour
    in its language and their cosine is at least `threshold`; groups are the connected
    components of those links. Passages with no translation are groups of one.
    """
    langs = np.asarray(langs)
    n = len(vectors)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    names = sorted(set(langs.tolist()))
    rows = {name: np.flatnonzero(langs == name) for name in names}
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            ra, rb = rows[a], rows[b]
            sims = vectors[ra] @ vectors[rb].T
            best_b = sims.argmax(axis=1)
            best_a = sims.argmax(axis=0)
            for i, j in enumerate(best_b):
                if best_a[j] == i and sims[i, j] >= threshold:
                    parent[find(int(ra[i]))] = find(int(rb[j]))
    roots = np.array([find(i) for i in range(n)])
    _, group_ids = np.unique(roots, return_inverse=True)
    return group_ids.astype(np.int64)


def best_sentence_scores(
    queries: np.ndarray,
    sentence_vectors: np.ndarray,
    owner: np.ndarray,
    n_passages: int,
    stats: LanguageStats,
    lang_ids: np.ndarray,
) -> np.ndarray:
    """(n_q, n_passages): each passage's best standardized sentence score (0 if it has none).

    `owner[i]` is the passage (0..n_passages-1) of sentence i, `lang_ids[i]` its language in
    `stats`. A question usually asks about one sentence; a passage that holds it should not lose
    to one that only talks around the topic.
    """
    z = stats.standardize(queries, queries @ sentence_vectors.T, lang_ids)
    best = np.full((len(queries), n_passages), -np.inf)
    for q in range(len(queries)):
        np.maximum.at(best[q], owner, z[q])
    return np.where(np.isfinite(best), best, 0.0)


def group_members(groups: np.ndarray) -> dict[int, list[int]]:
    """Translation group id -> rows of its passages, in row order."""
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(row)
    return members


def fold_groups(
    ranked: np.ndarray, groups: np.ndarray, members: dict[int, list[int]], langs: np.ndarray, lang: str, k: int
) -> list[tuple[int, int]]:
    """One hit per translation group, best first: (position in `ranked`, row shown).

    The row shown is the group's member in `lang` when it has one (the asker reads their own
    language first), else the best-ranked member.
    """
    hits: list[tuple[int, int]] = []
    seen: set[int] = set()
    for position, row in enumerate(ranked.tolist()):
        group = int(groups[row])
        if group in seen:
            continue
        seen.add(group)
        hits.append((position, next((m for m in members[group] if langs[m] == lang), row)))
        if len(hits) == k:
            break
    return hits

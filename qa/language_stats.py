"""Per-language statistics of the embeddings: each language's mean vector and (shrunk) covariance,
and the question means, by which `qa.rank` puts the scores of every language on one scale (the
reasoning is in `qa.rank`); and the sums they are computed from, which add across indexes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ABSENT_LANGUAGE_CENTERING",
    "COVARIANCE_BLOCKS",
    "FEW_QUERIES",
    "MIN_PASSAGES_FOR_STATS",
    "SHRINKAGE",
    "LanguageStats",
    "LanguageSums",
    "merge_sums",
    "moment_sums",
    "recode_langs",
    "subtract_sums",
]

MIN_PASSAGES_FOR_STATS = 8  # fewer than this and a language's covariance is noise
FEW_QUERIES = 4  # up to this many questions, variances as in `LanguageStats._few_variances`
SHRINKAGE = 0.1  # covariance shrunk towards a scalar: a few hundred passages in 384 dimensions are a noisy estimate
COVARIANCE_BLOCKS = 16  # the covariances' upper triangle is kept as 16·17/2 blocks (see `_packed_covariances`)
# A question in a language the corpus has no question mean for is centred on the mean of the
# corpus languages' question means, with this share of the centring strength. Chosen on XQuAD's
# tune half with each question language's own mean withheld (the corpus then lacks the asker's
# language): 0.5 (of the shipped 0.5) is the best of 0, 0.5, 1 and 1.5 there (cross-language R@1
# 0.7913 -> 0.7932); on the test half 0.8081 -> 0.8162, 23 of 30 language pairs up, 4 down.
ABSENT_LANGUAGE_CENTERING = 0.5


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

    def __post_init__(self) -> None:
        self._triangle()  # built with the statistics, not on the first question

    def _triangle(self) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """`_packed_covariances` of the covariances, rebuilt if they have been replaced."""
        if getattr(self, "_packed_of", None) is not self.covariances:
            self._packed = _packed_covariances(self.covariances)
            self._packed_of = self.covariances
        return self._packed

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

    @classmethod
    def from_sums(cls, sums: LanguageSums) -> LanguageStats:
        """The statistics `fit` gives, from the sums of the passages' vectors (`LanguageSums`):
        of one index, or merged over several (`merge_sums`), equal to fitting all their vectors
        at once up to float64 rounding. A language with too few passages gets the pooled
        statistics, the sums of every language."""
        pooled = _moments_from_sums(int(sums.counts.sum()), sums.totals.sum(axis=0), sums.outers.sum(axis=0))
        means, covs = [], []
        for i in range(len(sums.langs)):
            n = int(sums.counts[i])
            mean, cov = _moments_from_sums(n, sums.totals[i], sums.outers[i]) if n >= MIN_PASSAGES_FOR_STATS else pooled
            means.append(mean)
            covs.append(cov)
        query_means = {
            lang: (sums.query_totals[i] / sums.query_counts[i]).astype(np.float32)
            for i, lang in enumerate(sums.query_langs)
            if sums.query_counts[i]
        }
        d = sums.totals.shape[1]
        return cls(
            list(sums.langs), np.asarray(means, np.float32).reshape(-1, d),
            np.asarray(covs, np.float32).reshape(-1, d, d), query_means,
        )

    def lang_ids(self, langs: list[str] | np.ndarray) -> np.ndarray:
        """Position in `self.langs` of each language (KeyError for one it has no statistics of).

        In the smallest integer type that holds them: a question gathers the ids of tens of
        thousands of scattered passages, and at a million passages one byte each stays in the
        CPU cache where eight did not (measured: 0.27 ms less per question).
        """
        lookup = {name: i for i, name in enumerate(self.langs)}
        names, inverse = np.unique(np.asarray(langs, dtype=str), return_inverse=True)
        dtype = np.int8 if len(self.langs) <= np.iinfo(np.int8).max else np.int16
        return np.array([lookup[str(name)] for name in names], dtype=dtype)[inverse.reshape(-1)]

    def moments(self, queries: np.ndarray, langs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each query and language: mean and standard deviation of its passage scores.

        `langs`: positions in `self.langs` of the languages wanted (default: all), in the
        columns' order.
        """
        langs = np.arange(len(self.langs)) if langs is None else np.asarray(langs)
        mean = queries @ self.means[langs].T  # (n_q, n_langs)
        if len(queries) <= FEW_QUERIES:
            var = self._few_variances(queries, langs)
        else:
            # qᵀ C q for every language at once: the covariances stacked as one (languages·d, d)
            # matrix times the questions is a single BLAS call, half the time of a batched
            # product (an einsum over the three operands is ~10x slower).
            n_langs, d, _ = self.covariances.shape
            stacked = self.covariances.reshape(n_langs * d, d) @ queries.T.astype(self.covariances.dtype)
            var = np.einsum("ldq,qd->ql", stacked.reshape(n_langs, d, -1), queries)[:, langs]
        return mean, np.sqrt(np.maximum(var, 1e-12))

    def _few_variances(self, queries: np.ndarray, langs: np.ndarray) -> np.ndarray:
        """qᵀ C q for a few questions (the engine's one), for the languages wanted only: each
        language's covariance, upper triangle only (`_packed_covariances`), read as one flat
        row against the matching products of q.

        Paid on every question, and memory-bound: the full covariance is 590 kB a language,
        the triangle 53% of it (measured at 14 languages, CPU cache flushed: 0.27 vs 0.42 ms).
        The sentences of a question's best passages are in ~5 of the languages, not all.
        """
        packed, n_blocks, block_rows, block_cols = self._triangle()
        products = _block_products(queries, n_blocks, block_rows, block_cols, packed.dtype)
        if len(langs) == len(self.langs) and np.array_equal(langs, np.arange(len(self.langs))):
            return products @ packed.T
        var = np.empty((len(queries), len(langs)), products.dtype)
        for column, lang in enumerate(langs.tolist()):
            var[:, column] = products @ packed[lang]
        return var

    def standardize(self, queries: np.ndarray, scores: np.ndarray, lang_ids: np.ndarray) -> np.ndarray:
        """Standardized scores for a (n_q, n_passages) score matrix of passages in `lang_ids`."""
        present = np.flatnonzero(np.bincount(lang_ids, minlength=len(self.langs)))
        column = np.zeros(len(self.langs), np.intp)
        column[present] = np.arange(len(present))  # language -> its column in the moments
        mean, std = self.moments(queries, present)
        return (scores - mean[:, column[lang_ids]]) / std[:, column[lang_ids]]

    def center_query(
        self, queries: np.ndarray, lang: str, strength: float, absent_share: float = ABSENT_LANGUAGE_CENTERING
    ) -> np.ndarray:
        """Questions in `lang` with `strength` × their language's question mean removed.

        A language the corpus has no question mean for (no passages in it: a Dutch question to
        a French corpus) gets the mean of the corpus languages' question means, with
        `absent_share` × `strength`: questions share a direction whatever their language, and
        removing it helps there as the language's own mean does where there is one (measured
        with the asker's own mean withheld: `qa.evaluate.absent_language_centering`).
        """
        if not strength:
            return queries
        mean = self.query_means.get(lang)
        if mean is None:
            mean = self._shared_query_mean()
            if mean is None:
                return queries
            strength *= absent_share
        return queries - strength * mean

    def _shared_query_mean(self) -> np.ndarray | None:
        """The mean of the question means of every language (None without any). Computed on each
        call (a few microseconds for a dozen languages): `query_means` may be replaced or
        changed in place, and a cache keyed on it would outlive it."""
        if not self.query_means:
            return None
        return np.mean(np.stack(list(self.query_means.values())), axis=0).astype(np.float32)

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


# The last question's block products (`_block_products`): (key, products), replaced whole.
_last_products: tuple[tuple, np.ndarray] | None = None


def _block_products(
    queries: np.ndarray, n_blocks: int, rows: np.ndarray, cols: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """The products q_I q_Jᵀ of the blocks (I, J) of `_packed_covariances`, one flat row a query.

    A question is standardized twice with the same query (its passages, then their sentences,
    against other statistics): the last one's products are kept and handed out again for the
    same bytes, read-only. Forming them is half of `_few_variances` (~45 of ~90 us at d = 384).
    One tuple replaced at once, so threads that race see a whole entry, whichever.
    """
    global _last_products
    key = (queries.shape, queries.dtype.str, n_blocks, np.dtype(dtype).str, queries.tobytes())
    last = _last_products
    if last is not None and last[0] == key:
        return last[1]
    n_q, d = queries.shape
    blocks = queries.reshape(n_q, n_blocks, d // n_blocks)
    products = (blocks[:, rows, :, None] * blocks[:, cols, None, :]).reshape(n_q, -1)
    products = products.astype(dtype, copy=False)
    products.flags.writeable = False
    _last_products = (key, products)
    return products


def _packed_covariances(covariances: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """The covariances' upper triangle by blocks: (n_langs, pairs·b·b), the number of blocks a
    side, and each pair's block row and column.

    The dimensions are cut into `COVARIANCE_BLOCKS` blocks of b; block (I, J), I ≤ J, is stored
    whole, doubled off the diagonal (C is symmetric: qᵀCq counts C_IJ and C_JI alike). Then
    qᵀCq is one dot product with the products q_I q_Jᵀ of the same blocks, which a question
    forms without a gather: 53% of the full matrix's bytes at 16 blocks (a packed triangle's
    50% needs a 74,000-element gather per question, which cost what it saved). A dimension
    that does not divide into 16 blocks keeps one block, the full matrix.
    """
    n_langs, d, _ = covariances.shape
    n_blocks = COVARIANCE_BLOCKS if d % COVARIANCE_BLOCKS == 0 else 1
    b = d // n_blocks
    rows, cols = np.triu_indices(n_blocks)
    by_block = covariances.reshape(n_langs, n_blocks, b, n_blocks, b).transpose(0, 1, 3, 2, 4)
    packed = by_block[:, rows, cols] * np.where(rows == cols, 1, 2).astype(covariances.dtype)[:, None, None]
    return np.ascontiguousarray(packed.reshape(n_langs, -1)), n_blocks, rows, cols


def _moments(vectors: np.ndarray, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Mean and shrunk covariance of the rows of `vectors` (see `moment_sums`)."""
    return _moments_from_sums(*moment_sums(vectors, block))


def moment_sums(vectors: np.ndarray, block: int = 65536) -> tuple[int, np.ndarray, np.ndarray]:
    """The rows' count, float64 sum and float64 sum of outer products: what their moments are
    computed from, and what the moments of several sets of rows are computed from, summed."""
    # Accumulated a block at a time in float64: millions of sentence vectors would otherwise
    # need a float64 copy of them all (14 GB for 4.7M x 384). Float64 because the sums of
    # millions of rows are subtracted from each other (the covariance): float32 would lose it.
    n, d = vectors.shape
    total, outer = np.zeros(d), np.zeros((d, d))
    for start in range(0, n, block):
        part = np.asarray(vectors[start : start + block], dtype=np.float64)
        total += part.sum(axis=0)
        outer += part.T @ part
    return n, total, outer


def _moments_from_sums(n: int, total: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance, shrunk towards a scalar (`SHRINKAGE`), of n rows from their sums."""
    d = len(total)
    mean = total / max(n, 1)
    if n < 2:
        return mean, np.eye(d) / d
    cov = (outer - n * np.outer(mean, mean)) / (n - 1)
    scale = np.trace(cov) / d
    return mean, (1 - SHRINKAGE) * cov + SHRINKAGE * scale * np.eye(d)


@dataclass
class LanguageSums:
    """Per language, the sums `LanguageStats` is computed from: the number of vectors, their
    float64 sum and float64 sum of outer products (`moment_sums`); per language of the
    question sample, its count and float64 sum. Sums add: the statistics of several indexes
    over different passages are those of their merged sums (`merge_sums`), and removing
    passages subtracts their rows' sums. Stored (`to_arrays`) in 0.6 MB a language at d = 384."""

    langs: list[str]
    counts: np.ndarray  # (n_langs,) int64
    totals: np.ndarray  # (n_langs, d) float64
    outers: np.ndarray  # (n_langs, d, d) float64
    query_langs: list[str] = field(default_factory=list)
    query_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    query_totals: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (n_query_langs, d)

    @classmethod
    def of(
        cls, vectors: np.ndarray, langs: list[str] | np.ndarray, queries: dict[str, np.ndarray] | None = None
    ) -> LanguageSums:
        """The sums of `vectors` by language (`langs`, one a row), and of the question sample
        `queries` (per language, its vectors) if given."""
        langs = np.asarray(langs)
        names = sorted(set(langs.tolist()))
        parts = [moment_sums(vectors[langs == name]) for name in names]
        return cls.from_parts(names, parts, queries, dim=vectors.shape[1])

    @classmethod
    def from_parts(
        cls, names: list[str], parts: list[tuple[int, np.ndarray, np.ndarray]],
        queries: dict[str, np.ndarray] | None, *, dim: int,
    ) -> LanguageSums:
        """From each language's `moment_sums`, in `names`' order (vectors of `dim` dimensions)."""
        q_langs = sorted(queries or {})
        return cls(
            list(names),
            np.array([n for n, _, _ in parts], np.int64),
            np.array([t for _, t, _ in parts], np.float64).reshape(-1, dim),
            np.array([o for _, _, o in parts], np.float64).reshape(-1, dim, dim),
            q_langs,
            np.array([len(queries[x]) for x in q_langs], np.int64),
            np.array([np.asarray(queries[x], np.float64).sum(axis=0) for x in q_langs]).reshape(len(q_langs), dim),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The sums as arrays to save; the sums of outer products (symmetric) as their upper
        triangle only: 8·d·(d + 3)/2 bytes a language, 0.6 MB at d = 384."""
        upper = np.triu_indices(self.totals.shape[1])
        return {
            "langs": np.array(self.langs, dtype=str), "counts": self.counts, "totals": self.totals,
            "outers_upper": self.outers[:, upper[0], upper[1]], "query_langs": np.array(self.query_langs, dtype=str),
            "query_counts": self.query_counts, "query_totals": self.query_totals,
        }

    @classmethod
    def from_arrays(cls, arrays) -> LanguageSums:
        """`to_arrays`, read back (the outer products made whole again from their triangle)."""
        totals = np.asarray(arrays["totals"], np.float64)
        d = totals.shape[1]
        upper = np.triu_indices(d)
        outers = np.zeros((len(totals), d, d))
        outers[:, upper[0], upper[1]] = arrays["outers_upper"]
        outers[:, upper[1], upper[0]] = arrays["outers_upper"]
        return cls(
            [str(x) for x in arrays["langs"]], np.asarray(arrays["counts"], np.int64), totals, outers,
            [str(x) for x in arrays["query_langs"]], np.asarray(arrays["query_counts"], np.int64),
            np.asarray(arrays["query_totals"], np.float64),
        )


def recode_langs(codes: np.ndarray, langs: list[str], stats: LanguageStats) -> np.ndarray:
    """Language codes of a passage store (positions in `langs`) as positions in `stats.langs`:
    the same array, not a copy, when the two orders agree (they do for an index written by qa).

    A language of the store without statistics has no passage read (an article without
    passages, or a segment whose passages of that language are all deleted), so its code never
    occurs among the rows looked up: it gets position 0."""
    if list(stats.langs[: len(langs)]) == list(langs):
        return codes
    table = stats.lang_ids([lang if lang in stats.langs else stats.langs[0] for lang in langs])
    return table[np.asarray(codes, np.int64)] if len(table) else np.zeros(len(codes), np.int8)


def merge_sums(a: LanguageSums, b: LanguageSums) -> LanguageSums:
    """The sums of the vectors of both `a` and `b` (over different passages), by language."""
    d = a.totals.shape[1]
    if b.totals.shape[1] != d:
        raise ValueError(f"sums of {d}-dimensional and {b.totals.shape[1]}-dimensional vectors cannot be merged")
    langs, counts, totals, outers = _add_by_name(
        [(a.langs, a.counts, a.totals, a.outers), (b.langs, b.counts, b.totals, b.outers)], (d,), (d, d)
    )
    q_langs, q_counts, q_totals = _add_by_name(
        [(a.query_langs, a.query_counts, a.query_totals), (b.query_langs, b.query_counts, b.query_totals)], (d,)
    )
    return LanguageSums(langs, counts, totals, outers, q_langs, q_counts, q_totals)


def subtract_sums(whole: LanguageSums, removed: LanguageSums) -> LanguageSums:
    """The sums of `whole` without the vectors `removed` holds (a delete: those vectors must be
    among `whole`'s). A language left with no vectors is dropped. Raises ValueError, naming the
    language, where `removed` holds more vectors of a language than `whole` does."""
    negated = LanguageSums(removed.langs, -removed.counts, -removed.totals, -removed.outers,
                           removed.query_langs, -removed.query_counts, -removed.query_totals)
    rest = merge_sums(whole, negated)
    short = [name for name, n in zip(rest.langs, rest.counts) if n < 0]
    short += [name for name, n in zip(rest.query_langs, rest.query_counts) if n < 0]
    if short:
        raise ValueError(f"cannot remove more vectors than the sums hold (language {short[0]!r}): "
                         "the removed vectors must be among those summed")
    kept = rest.counts > 0
    q_kept = rest.query_counts > 0
    return LanguageSums(
        [name for name, keep in zip(rest.langs, kept) if keep], rest.counts[kept], rest.totals[kept],
        rest.outers[kept], [name for name, keep in zip(rest.query_langs, q_kept) if keep],
        rest.query_counts[q_kept], rest.query_totals[q_kept],
    )


def _add_by_name(sides: list[tuple], *shapes: tuple[int, ...]) -> tuple:
    """Sorted names of every side, and per name each array summed over the sides that have it."""
    names = sorted({name for side in sides for name in side[0]})
    position = {name: i for i, name in enumerate(names)}
    out = [np.zeros(len(names), np.int64)] + [np.zeros((len(names), *shape)) for shape in shapes]
    for side in sides:
        rows = [position[name] for name in side[0]]
        for total, array in zip(out, side[1:]):
            if rows:
                total[rows] += array
    return (names, *out)

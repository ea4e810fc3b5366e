"""A language's search at question time: `ByteExact` (a small language, exact over 8-bit codes),
`ProbedIVF` (a large one, the IVF lists each question needs) and `LanguageSearch` (every language
of one question in two FAISS calls, with or without a filter)."""

from __future__ import annotations

from typing import Any

import numpy as np

from qa.index.ann.rows import Int8Rows

__all__ = ["EXACT_MATCHES", "MIN_PROBES", "ByteExact", "LanguageSearch", "ProbedIVF"]

MIN_PROBES = 4  # lists a question always visits, however far ahead its best list is
# A filtered IVF language with at most this many passages let through scores them exactly
# (`LanguageSearch.search_filtered`): see benchmarks/bench_filters.py.
EXACT_MATCHES = 4096


class ByteExact:
    """Exhaustive inner-product search over 8-bit vectors: the search of a small language.

    Each dimension is shifted and scaled onto the integers -127..127 (over its range in
    `vectors`); a question is scaled onto the same grid and the products are summed in integers
    (FAISS's `QT_8bit_direct_signed`). A quarter of float32's memory, half of half precision's,
    and twice as fast once the vectors outgrow the CPU cache (87,000 passages: 1.4 ms instead of
    2.7 ms a question); while they fit, ~10 µs slower (7,000 passages: 54 µs against 42 µs).
    Scores are approximate (~1e-3 on a cosine), which only decides which passages become
    candidates: the engine re-scores every candidate with its float32 vector.
    """

    def __init__(self, vectors: np.ndarray, block: int = 65536):
        import faiss

        vectors = np.asarray(vectors, dtype=np.float32)
        lo, hi = vectors.min(axis=0), vectors.max(axis=0)
        self.mid = ((lo + hi) / 2).astype(np.float32)
        self.step = (np.maximum(hi - lo, 1e-12) / 254).astype(np.float32)
        self.index = faiss.IndexScalarQuantizer(
            vectors.shape[1], faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT
        )
        for start in range(0, len(vectors), block):
            self.index.add(np.rint((vectors[start : start + block] - self.mid) / self.step))

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def nbytes(self) -> int:
        return self.index.ntotal * self.index.code_size

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(approximate scores, ids) of the k best vectors for each query, like a FAISS index;
        `params`: FAISS search parameters (an id selector: `LanguageSearch.search_filtered`)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        grid = queries * self.step  # q·x = q·mid + (q ⊙ step)·code
        scale = 127 / np.maximum(np.abs(grid).max(axis=1), 1e-30)  # the question's own 8-bit grid
        scores, ids = self.index.search(np.rint(grid * scale[:, None]), k, params=params)
        return scores / scale[:, None] + (queries @ self.mid)[:, None], ids


class ProbedIVF:
    """An IVF index that visits, for each question, the lists it needs rather than a fixed number.

    The lists visited are those whose centroid scores within `gap` of the question's best
    centroid (at least `MIN_PROBES`, at most `nprobe`): a question that falls clearly inside
    one region of the space reads a few lists, one between regions reads more. With `gap` None,
    always `nprobe` lists (indexes written before the gap existed). Measured at 1M passages (12
    languages of 81,000, real questions not used for tuning): at the same recall target, 115
    lists and 16,000 codes a question instead of 272 and 35,000, recall@10 0.975 instead of 0.977,
    the dense stage 1.37 ms instead of 2.18 at the median (2.69 instead of 2.45 ms at p95: the
    questions between regions read up to twice the fixed number of lists).
    """

    def __init__(self, index: Any, nprobe: int, gap: float | None = None):
        self.index = index
        self.index.nprobe = nprobe
        self.gap = gap

    @property
    def nprobe(self) -> int:
        return self.index.nprobe

    @property
    def nlist(self) -> int:
        return self.index.nlist

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def lists(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(centroid scores, list numbers) that each query visits, best first; -1 for a list skipped."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        scores, lists = self.index.quantizer.search(queries, self.index.nprobe)
        if self.gap is not None:
            far = scores < scores[:, :1] - self.gap
            far[:, :MIN_PROBES] = False
            lists[far] = -1  # FAISS skips a list numbered -1
        return scores, lists

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(approximate scores, ids) of the k best vectors for each query, like a FAISS index."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.gap is None:
            return self.index.search(queries, k)
        scores, lists = self.lists(queries)
        return self.index.search_preassigned(queries, k, lists, scores)


class LanguageSearch:
    """Every language's search for one question in two FAISS calls instead of two per language.

    Retrieval asks each language for its best passages (see `qa.rank`); at 1M passages in 14
    languages that was 26 small FAISS searches, each paying its call, heap and Python
    overhead. Here the IVF languages' lists are searched as one:

    - their centroids (half precision, as stored) are the lists of one small IVF index, one
      list a language, so a single `search_preassigned` with the question repeated once per
      language returns each language's best centroids;
    - their inverted lists are stacked without a copy (`faiss.VStackInvertedLists`) under one
      IVF-SQ8 index whose 8-bit decoder is the identity (code + 0.5). Each language's decoder
      (`vmin + (code + 0.5)·vdiff/255`) moves into the question instead: its row is
      q·vdiff/255, and q·vmin (plus the centroid's score, the codes being residuals) is added
      per list. The same codes, the same lists visited, the same scores up to float rounding.

    Small languages keep their exact search (`ByteExact`). Measured at 1M passages (40 real
    questions, CPU cache flushed between them, old and new alternating): the dense stage 0.2 ms
    less at the median (2.01 instead of 2.21 ms), a whole question 0.12 ms less; the same
    passages found. Most of what is left is reading the centroids and codes from memory.
    """

    def __init__(self, searches: dict[str, tuple[Any, np.ndarray]]):
        """`searches`: language -> (its `ProbedIVF` or exact index, the passage row of each id)."""
        import faiss

        self.order = list(searches)
        self.searches = searches  # each language's own search, for filtered questions
        mergeable = {lang: sub for lang, (sub, _) in searches.items() if _stackable(sub)}
        self.others = {lang: searches[lang] for lang in self.order if lang not in mergeable}
        self.ivf_langs = list(mergeable)
        if not self.ivf_langs:
            return
        first = mergeable[self.ivf_langs[0]].index
        d, n = first.d, len(self.ivf_langs)
        self.coarse = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(d), d, n, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        self.coarse.by_residual = False
        self.stacked = faiss.InvertedListsPtrVector()
        caps, gaps, vmins, scales, rows = [], [], [], [], []
        for position, lang in enumerate(self.ivf_langs):
            probed = mergeable[lang]
            index, centroids = probed.index, faiss.downcast_index(probed.index.quantizer)
            # (Both arrays named: a swig pointer does not keep a temporary array alive.)
            codes, numbers = faiss.vector_to_array(centroids.codes), np.arange(centroids.ntotal, dtype=np.int64)
            self.coarse.invlists.add_entries(position, centroids.ntotal, faiss.swig_ptr(numbers), faiss.swig_ptr(codes))
            trained = faiss.vector_to_array(index.sq.trained)
            vmins.append(trained[:d])
            scales.append(trained[d:] / 255)
            caps.append(probed.nprobe)
            gaps.append(np.inf if probed.gap is None else probed.gap)
            rows.append(searches[lang][1])
            self.stacked.push_back(index.invlists)
        nlists = np.array([mergeable[lang].nlist for lang in self.ivf_langs])
        self.coarse.ntotal = int(nlists.sum())
        self.coarse.is_trained = True
        self.lists = faiss.VStackInvertedLists(self.stacked.size(), self.stacked.data())
        self.scan = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(d), d, self.lists.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        faiss.copy_array_to_vector(np.r_[np.zeros(d), np.full(d, 255.0)].astype(np.float32), self.scan.sq.trained)
        self.scan.replace_invlists(self.lists, False)  # the languages' indexes own the lists
        self.scan.by_residual = True  # adds the score passed per list, as each language's index did
        self.scan.is_trained = True
        self.cap = max(caps)
        self.scan.nprobe = self.cap
        self.by_residual = np.array([mergeable[lang].index.by_residual for lang in self.ivf_langs])
        self.gaps = np.array(gaps, np.float32)[:, None]
        self.beyond = np.arange(self.cap)[None, :] >= np.array(caps)[:, None]  # past a language's own cap
        self.vmins, self.scales = np.array(vmins, np.float32), np.array(scales, np.float32)
        # Where each language's lists and passage rows start in the stacked ones.
        self.list_offsets = (np.cumsum(nlists) - nlists)[:, None]
        sizes = np.array([len(r) for r in rows])
        self.row_offsets = (np.cumsum(sizes) - sizes)[:, None]
        self.rows = np.concatenate(rows)
        self.own_list = np.arange(n, dtype=np.int64)[:, None]
        self.no_score = np.zeros((n, 1), np.float32)

    def search(self, query: np.ndarray, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The k best passages of each language for one question (d,): {lang: (scores, rows)},
        best first, in the order the searches were given."""
        query = np.asarray(query, dtype=np.float32)
        found = {}
        if self.ivf_langs:
            found.update(self._search_ivf(query, k))
        query = np.ascontiguousarray(query[None, :], dtype=np.float32)
        for lang, (sub, rows) in self.others.items():
            scores, ids = sub.search(query, min(k, len(rows)))
            found[lang] = _real(scores[0], ids[0], rows)
        return {lang: found[lang] for lang in self.order}

    def search_filtered(
        self, query: np.ndarray, k: int, mask: np.ndarray, vectors: np.ndarray
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`search` restricted to the passage rows where `mask` is True (a filter: `qa.filters`),
        inside each language's search rather than after it, so that a language with k passages
        let through returns k. A language with none is skipped; one let through whole is
        searched as without a filter (the IVF ones together, as `search` does). Otherwise:

        - an exact language (`ByteExact`) scans its codes with a FAISS id selector (a bitmap);
        - an IVF language with at most `EXACT_MATCHES` passages let through scores those exactly
          (`vectors`: the float32 passage vectors), cheaper than visiting lists that hold few of
          them; with more, its lists are scanned with the id selector, visiting 1/share times
          as many (the filtered nearest neighbours lie farther out), and if that finds fewer
          than k the passages let through are scored exactly.
        """
        import faiss

        local = {lang: mask[rows] for lang, (_, rows) in self.searches.items()}
        matches = {lang: int(np.count_nonzero(allowed)) for lang, allowed in local.items()}
        whole = {lang for lang, count in matches.items() if count == len(self.searches[lang][1])}
        if len(whole) == len(self.order):  # the filter lets everything through
            return self.search(query, k)
        found = {}
        stacked = np.array([lang in whole for lang in self.ivf_langs], bool)
        if stacked.any():  # languages let through whole: searched together, the others' lists skipped
            found.update(self._search_ivf(np.asarray(query, dtype=np.float32), k, stacked))
        query = np.ascontiguousarray(np.asarray(query, dtype=np.float32)[None, :])
        for lang in self.order:
            sub, rows = self.searches[lang]
            if not matches[lang] or lang in found:
                continue
            want = min(k, matches[lang])
            if lang in whole:
                scores, ids = sub.search(query, want)
                found[lang] = _real(scores[0], ids[0], rows)
                continue
            local_lang, count = local[lang], matches[lang]
            if isinstance(sub, ProbedIVF) and count <= EXACT_MATCHES:
                found[lang] = _exact_top(vectors, rows[local_lang], query[0], want)
                continue
            bits = np.packbits(local_lang, bitorder="little")  # (named: the selector only points to it)
            selector = faiss.IDSelectorBitmap(len(rows), faiss.swig_ptr(bits))
            if isinstance(sub, ProbedIVF):
                probes = min(sub.nlist, int(np.ceil(sub.nprobe * len(rows) / count)))
                params = faiss.SearchParametersIVF(sel=selector, nprobe=probes)
                scores, ids = sub.index.search(query, want, params=params)
            else:  # an exact search (`ByteExact`)
                scores, ids = sub.search(query, want, params=faiss.SearchParameters(sel=selector))
            found[lang] = _real(scores[0], ids[0], rows)
            if len(found[lang][1]) < want:  # the lists visited held too few: score them all
                found[lang] = _exact_top(vectors, rows[local_lang], query[0], want)
        return {lang: found[lang] for lang in self.order if lang in found}

    def _search_ivf(
        self, query: np.ndarray, k: int, keep: np.ndarray | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The IVF languages' searches in one FAISS call; with `keep` (a flag per language of
        `ivf_langs`), only those flagged: the others' lists are skipped (numbered -1)."""
        n = len(self.ivf_langs)
        repeated = np.ascontiguousarray(np.broadcast_to(query, (n, len(query))), dtype=np.float32)
        centroid_scores, centroids = self.coarse.search_preassigned(repeated, self.cap, self.own_list, self.no_score)
        # The lists `ProbedIVF.lists` visits: within the gap of the best, at least MIN_PROBES.
        far = centroid_scores < centroid_scores[:, :1] - self.gaps
        far[:, :MIN_PROBES] = False
        lists = np.where(far | self.beyond | (centroids < 0), -1, centroids + self.list_offsets)
        if keep is not None:
            lists[~keep] = -1
        per_list = (self.vmins @ query)[:, None] + np.where(self.by_residual[:, None], centroid_scores, 0)
        scores, ids = self.scan.search_preassigned(
            query[None, :] * self.scales, k, lists, per_list.astype(np.float32)
        )
        rows = self.rows[np.maximum(ids, 0) + self.row_offsets]
        return {
            lang: _real(scores[i], ids[i], rows[i], mapped=True)
            for i, lang in enumerate(self.ivf_langs)
            if keep is None or keep[i]
        }


def _exact_top(vectors: np.ndarray, rows: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the k best of passage `rows` by exact inner product, best first."""
    from qa.kernels import row_dots

    stored = isinstance(vectors, Int8Rows)  # read in place, not as a float32 array
    scores = vectors.dots(rows, query) if stored else row_dots(vectors, rows, query)
    top = np.argpartition(-scores, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
    top = top[np.argsort(-scores[top], kind="stable")]
    return scores[top], rows[top]


def _stackable(sub: Any) -> bool:
    """Whether `LanguageSearch` can search `sub` with the others: a `ProbedIVF` over 8-bit codes
    with half-precision centroids, as `train_ivf` makes them."""
    import faiss

    if not isinstance(sub, ProbedIVF):
        return False
    quantizer = faiss.downcast_index(sub.index.quantizer)
    return (
        isinstance(sub.index, faiss.IndexIVFScalarQuantizer)
        and sub.index.sq.qtype == faiss.ScalarQuantizer.QT_8bit
        and isinstance(quantizer, faiss.IndexScalarQuantizer)
        and quantizer.sq.qtype == faiss.ScalarQuantizer.QT_fp16
        and sub.index.metric_type == faiss.METRIC_INNER_PRODUCT
    )


def _real(scores: np.ndarray, ids: np.ndarray, rows: np.ndarray, mapped: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores, passage rows) of a FAISS result row, without its -1 padding (which comes last).
    `mapped`: `rows` are the result's passage rows already, else the rows of each id."""
    found = len(ids) if len(ids) == 0 or ids[-1] >= 0 else int(np.count_nonzero(ids >= 0))
    return scores[:found], rows[:found] if mapped else rows[ids[:found]]

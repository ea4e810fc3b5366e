"""Each language's vector search: exact for small languages, approximate and compressed for large.

Retrieval searches every language separately (see `qa.rank`), so the size that matters is the
number of passages of one language. Below `Settings.ann_min_passages` a language is searched
exhaustively (`ByteExact`: 8-bit vectors, 384 bytes a passage, built in memory at load time).
At or above it, the language gets an IVF index with 8-bit scalar quantization
(`IVF{nlist},SQ8`, 392 bytes a passage: 384 one-byte codes and an 8-byte id), trained at build
time and stored in the index folder. Which lists a question visits is tuned at build time on a
sample until recall@10 against exact search reaches `Settings.ann_target_recall`: every list
whose centroid scores within a gap of the question's best one, up to a most (`ProbedIVF`); the
recall is printed and recorded in the manifest.

Why IVF-SQ8 rather than HNSW or PQ (measured on 83,000 synthetic passages of one language built
from real embeddings, 300 real questions centred as the engine centres them, 1 thread):
IVF1024,SQ8 reaches recall@10 0.97 at nprobe 32 in 0.14 ms a question; HNSW16,SQ8 (512 bytes a
passage) only 0.88 at efSearch 256 in 0.27 ms (inner-product graphs search badly from centred
questions); IVF-PQ fast-scan re-ranked with SQ8 stayed under 0.65. At 80,000 passages, cold
CPU cache: IVF512,PQ192x4fs needs 200 candidates re-scored for recall 0.985 and is then no
faster (0.31 ms); a PCA to 192 or 256 dimensions before IVF-SQ8 loses half the recall; scanning
a question's lists on two OpenMP threads made `retrieve` slower overall. Also measured on one
language of 87,000 such passages (40 real questions, cold CPU cache) and not kept: RaBitQ codes
(1 bit: recall 0.70 among 50 candidates; 4 bits: 0.975 at nprobe 16 but 0.40 ms against 0.25 ms),
4- and 6-bit codes (no faster), 8-bit codes multiplied in integers (`ByteExact`'s trick: twice as
fast over one long run of codes, no faster over short lists); and, at 1M passages, one set of
lists for every language over language-centred vectors, so that a single coarse search serves
them all (recall 0.81 at nprobe 16, 0.90 at 64, French and Japanese under 0.4: the languages do
not share clusters).

nprobe is tuned on question-like vectors (the corpus's own sentences embedded as questions):
tuned on passage-like sentence vectors, which lie farther from the data, it came out 4-8 times
larger for the same recall on real questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "EXACT_MATCHES",
    "AnnReport",
    "ByteExact",
    "HalfRows",
    "Int8Rows",
    "LanguageSearch",
    "ProbedIVF",
    "RowsView",
    "choose_kind",
    "exact_index",
    "exact_neighbours",
    "fill",
    "half_rows",
    "n_lists",
    "nprobe_steps",
    "quantize_rows",
    "recall_at",
    "train_ivf",
    "tune_nprobe",
    "tune_probes",
]

MIN_POINTS_PER_LIST = 39  # FAISS's k-means warns (and centroids are noise) below this
TRAIN_POINTS_PER_LIST = 64  # enough for stable centroids; training on more only costs time
MAX_NPROBE_SHARE = 4  # never visit more than 1/4 of the lists: past that, exact search is as cheap
RECALL_K = 10
MIN_PROBES = 4  # lists a question always visits, however far ahead its best list is
# Probe gaps tried at build (see `ProbedIVF`), smallest first, in units of a centroid's inner
# product with the question: steps of a tenth over two decades, as the right gap depends on how
# spread the vectors are (real questions on real passages settle between 0.015 and 0.02, where
# steps of a quarter overshot by 0.002-0.004 and read 15% more lists than needed).
# A filtered IVF language with at most this many passages let through scores them exactly
# (`LanguageSearch.search_filtered`): see benchmarks/bench_filters.py.
EXACT_MATCHES = 4096
GAP_STEPS = tuple(round(0.004 * 1.1**i, 4) for i in range(50))  # 0.004 ... 0.43


@dataclass
class AnnReport:
    """How one language is searched, as recorded in the manifest and printed after a build."""

    type: str  # "flat" or "ivf_sq8"
    passages: int
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0  # passages of this language when the lists were trained
    recall_at_10: float | None = None
    recall_queries: int = 0
    target_recall: float | None = None
    file: str | None = None
    probe_gap: float | None = None  # see ProbedIVF; None: always nprobe lists

    def describe(self, lang: str) -> str:
        if self.type == "flat":
            line = f"{lang}: exact search over {self.passages:,} passages"
            if self.recall_at_10 is not None:  # an IVF index was tried and missed the target
                line += (
                    f" (IVF{self.nlist},SQ8 reached recall@10 {self.recall_at_10:.3f} at nprobe {self.nprobe}, "
                    f"below the {self.target_recall} target)"
                )
            return line
        probes = f"nprobe {self.nprobe}"
        if self.probe_gap is not None:
            probes = f"lists within {self.probe_gap} of the best ({MIN_PROBES} to {self.nprobe})"
        line = (
            f"{lang}: IVF{self.nlist},SQ8 over {self.passages:,} passages, {probes}, "
            f"recall@10 {self.recall_at_10:.3f} vs exact (candidates re-scored) on {self.recall_queries} sample questions"
        )
        if self.target_recall and self.recall_at_10 < self.target_recall:
            # nprobe is capped (past a quarter of the lists exact search is as cheap): say so.
            line += f" (below the {self.target_recall} target: consider QA_INDEX_TYPE=flat)"
        return line


def choose_kind(n: int, index_type: str, min_passages: int) -> str:
    """'flat' or 'ivf_sq8' for a language of `n` passages under the configured index type."""
    if index_type == "flat":
        return "flat"
    big_enough = n >= MIN_POINTS_PER_LIST * 16  # the smallest IVF worth training: 16 lists
    if index_type == "ivf":
        return "ivf_sq8" if big_enough else "flat"
    return "ivf_sq8" if big_enough and n >= min_passages else "flat"


def n_lists(n: int) -> int:
    """About 2·√n lists, a power of two, with enough training points per list.

    Fewer lists mean fewer centroids to read and longer lists to scan for the same recall; at
    80,000 passages of one language 512 lists reached recall 0.97 in 0.16 ms a question, 1024
    in 0.21 ms and 256 in 0.20 ms (real questions, cold CPU cache).
    """
    target = 2 * np.sqrt(n)
    nlist = 1 << int(np.round(np.log2(max(target, 16))))
    while nlist > 16 and n < MIN_POINTS_PER_LIST * nlist:
        nlist //= 2
    return nlist


def exact_index(vectors: np.ndarray) -> Any:
    """An exact inner-product FAISS index over `vectors`, stored in half precision (the IVF lists'
    centroids, see `train_ivf`). Error ~1e-4 on a cosine."""
    import faiss

    index = faiss.IndexScalarQuantizer(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    return fill(index, vectors)


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

    scores = vectors.dots(rows, query) if isinstance(vectors, HalfRows) else row_dots(vectors, rows, query)
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


def train_ivf(vectors: np.ndarray, nlist: int, seed: int = 0) -> Any:
    """An empty, trained IVF-SQ8 inner-product index for vectors like these.

    The lists' centroids are found by k-means (L2, as FAISS trains an inner-product IVF) and
    kept in half precision (`exact_index`): choosing the lists reads every centroid on every
    question, and 1.5 MB a language of float32 centroids cost more than the saved precision.
    """
    import faiss

    d = vectors.shape[1]
    rng = np.random.default_rng(seed)
    n_train = min(len(vectors), TRAIN_POINTS_PER_LIST * nlist)
    sample = np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))], dtype=np.float32)
    kmeans = faiss.Kmeans(d, nlist, niter=faiss.ClusteringParameters().niter, seed=seed, verbose=False)
    kmeans.train(sample)
    quantizer = exact_index(kmeans.centroids)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.own_fields = True
    quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
    index.train(sample)  # the quantizer holds its nlist centroids already: trains the 8-bit codes only
    return index


def fill(index: Any, vectors: np.ndarray, block: int = 65536) -> Any:
    """Add `vectors` (ids 0..n-1) to a trained, empty index, a block at a time."""
    for start in range(0, len(vectors), block):
        index.add(np.ascontiguousarray(vectors[start : start + block], dtype=np.float32))
    return index


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int = RECALL_K, block: int = 65536) -> np.ndarray:
    """Row numbers of the exact top-k of each query (inner product over `vectors`).

    A block of rows at a time, the best k kept across blocks: a flat index of all the rows
    would copy them (a large language's float32 vectors, ~1 GB at a million passages).
    """
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vectors))
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), block):
        exact = faiss.IndexFlatIP(vectors.shape[1])
        fill(exact, vectors[start : start + block])
        scores, rows = exact.search(queries, min(k, exact.ntotal))
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_rows = np.concatenate([best_rows, rows + start], axis=1)
        keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, keep, axis=1)
        best_rows = np.take_along_axis(best_rows, keep, axis=1)
    return best_rows


class RowsView:
    """Rows `rows` of `vectors`, gathered only when indexed (`view[a:b]`, `view[ids]`): one
    language's vectors for training, filling and tuning its index, a block at a time, where
    `vectors[rows]` would copy them all."""

    def __init__(self, vectors: np.ndarray, rows: np.ndarray):
        self.vectors, self.rows = vectors, np.asarray(rows, np.int64)
        self.shape = (len(self.rows), *vectors.shape[1:])
        self.dtype = vectors.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, which) -> np.ndarray:
        return np.asarray(self.vectors[self.rows[which]])


def recall_at(index: Any, truth: np.ndarray, queries: np.ndarray, candidates: int | None = None) -> float:
    """Share of the exact neighbours `truth` (k per query) that `index` finds.

    With `candidates`, the index returns that many per query and they are re-scored exactly, as
    the engine re-scores every candidate with its float32 vector: what counts is whether the
    exact top k are among them. Without, its own top k are compared (no re-scoring).
    """
    k = truth.shape[1]
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), max(k, candidates or k))
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / max(truth.size, 1)


def nprobe_steps(nlist: int) -> list[int]:
    """nprobe values to try, smallest first: 1, 2, 3, 4, 6, 8, 12, 16, 24 ... up to a quarter of
    the lists (past that, exact search is as cheap). Half steps between the powers of two: the
    search time grows with nprobe, so stopping at 24 instead of 32 is a quarter saved."""
    steps, power = [], 1
    while power * MAX_NPROBE_SHARE <= nlist:
        steps.extend(p for p in (power, power * 3 // 2) if p * MAX_NPROBE_SHARE <= nlist and p not in steps)
        power *= 2
    return steps or [1]


def tune_nprobe(
    index: Any, vectors: np.ndarray, queries: np.ndarray, target: float, candidates: int | None = None,
    truth: np.ndarray | None = None,
) -> tuple[int, float]:
    """The smallest nprobe of `nprobe_steps` whose recall@10 (see `recall_at`) reaches `target`
    (or the largest step), and that recall. `truth`: the exact neighbours, when known."""
    truth = exact_neighbours(vectors, queries) if truth is None else truth
    for nprobe in nprobe_steps(index.nlist):
        index.nprobe = nprobe
        recall = recall_at(index, truth, queries, candidates)
        if recall >= target:
            break
    return nprobe, recall


def tune_probes(
    index: Any, vectors: np.ndarray, queries: np.ndarray, target: float, candidates: int | None = None
) -> tuple[int, float | None, float]:
    """(nprobe, gap, recall) for `ProbedIVF`: the smallest gap of `GAP_STEPS` that reaches
    `target`, with at most twice the fixed nprobe that reaches it (`tune_nprobe`) as the most
    lists a question may visit. Kept only if the questions visit fewer lists on average than
    the fixed nprobe; else (nprobe, None, recall) of the fixed search. Leaves `index.nprobe` set.
    """
    truth = exact_neighbours(vectors, queries)
    nprobe, recall = tune_nprobe(index, vectors, queries, target, candidates, truth)
    if recall < target:
        return nprobe, None, recall
    cap = min(2 * nprobe, max(nprobe_steps(index.nlist)))
    for gap in GAP_STEPS:
        probed = ProbedIVF(index, cap, gap)
        gap_recall = recall_at(probed, truth, queries, candidates)
        if gap_recall >= target:
            if (probed.lists(queries)[1] >= 0).sum(axis=1).mean() < nprobe:
                return cap, gap, gap_recall
            break
    index.nprobe = nprobe
    return nprobe, None, recall


class Int8Rows:
    """Vectors stored as int8 codes with one float32 scale per row (symmetric, row max = 127).

    Used for the sentence vectors, which outnumber passages about 5 to 1: a quarter of float32
    on disk, memory-mapped, and a cosine error around 1e-4. Indexing returns float32 rows.
    """

    def __init__(self, codes: np.ndarray, scales: np.ndarray):
        self.codes = codes
        self.scales = scales
        self.shape = codes.shape
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> np.ndarray:
        return self.codes[rows].astype(np.float32) * self.scales[rows, None]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:].astype(dtype or np.float32)


class HalfRows:
    """Vectors stored in half precision (float16), read as float32: the passage vectors.

    Half of float32's disk and page cache; a cosine moves by ~1e-4 at most, which only changes
    the order of passages whose scores tie within that (benchmarks/README.md, section 16).
    Indexing and `np.asarray` give float32 rows; `dots` scores rows in place, without copying
    them out (`qa.kernels.half_row_dots`).
    """

    def __init__(self, codes: np.ndarray):
        self.codes = codes  # (n, d) float16, usually memory-mapped
        self.shape = codes.shape
        self.dtype = np.dtype(np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes stored (not those of the float32 rows it reads as)."""
        return self.codes.nbytes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> np.ndarray:
        return self.codes[rows].astype(np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.codes.astype(dtype or np.float32)

    def dots(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """`self[rows] @ query` (float32), reading each row in place."""
        from qa.kernels import HALF_TO_FLOAT, half_row_dots

        bits = self.codes.view(np.uint16)
        return half_row_dots(bits, np.asarray(rows, np.int64), np.asarray(query, np.float32), HALF_TO_FLOAT)


def half_rows(vectors: np.ndarray, out: np.ndarray, block: int = 65536) -> None:
    """Write `vectors` into `out` (float16, e.g. a memory-mapped file) a block at a time."""
    for start in range(0, len(vectors), block):
        out[start : start + block] = np.asarray(vectors[start : start + block], np.float32)


def quantize_rows(
    vectors: np.ndarray, block: int = 65536, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float32 scales) of `vectors`, a block at a time (millions of rows fit); the
    codes into `out` when given (e.g. a memory-mapped file)."""
    codes = np.empty(vectors.shape, np.int8) if out is None else out
    scales = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), block):
        part = np.asarray(vectors[start : start + block], np.float32)
        scale = np.maximum(np.abs(part).max(axis=1), 1e-12) / 127
        codes[start : start + block] = np.rint(part / scale[:, None])
        scales[start : start + block] = scale
    return codes, scales

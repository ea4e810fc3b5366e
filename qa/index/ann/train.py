"""A large language's IVF-SQ8 index made at build time: which kind of search a language gets
(`choose_kind`, `AnnReport`), its lists trained and filled (`train_ivf`, `fill`) and the lists a
question visits tuned on a sample until recall@10 against exact search reaches the target
(`tune_nprobe`, `tune_probes`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qa.index.ann.search import MIN_PROBES, ProbedIVF

__all__ = [
    "GAP_STEPS",
    "AnnReport",
    "RowsView",
    "choose_kind",
    "exact_index",
    "exact_neighbours",
    "fill",
    "n_lists",
    "nprobe_steps",
    "recall_at",
    "train_ivf",
    "tune_nprobe",
    "tune_probes",
]

MIN_POINTS_PER_LIST = 39  # FAISS's k-means warns (and centroids are noise) below this
TRAIN_POINTS_PER_LIST = 64  # enough for stable centroids; training on more only costs time
MAX_NPROBE_SHARE = 4  # never visit more than 1/4 of the lists: past that, exact search is as cheap
RECALL_K = 10
# Probe gaps tried at build (see `ProbedIVF`), smallest first, in units of a centroid's inner
# product with the question: steps of a tenth over two decades, as the right gap depends on how
# spread the vectors are (real questions on real passages settle between 0.015 and 0.02, where
# steps of a quarter overshot by 0.002-0.004 and read 15% more lists than needed).
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

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

The package: `search` (the searches a question runs), `train` (an IVF index trained, filled and
tuned at build time) and `rows` (vectors stored compressed: int8 rows with a scale each).
"""

from __future__ import annotations

from qa.index.ann.rows import Int8Rows, quantize_rows
from qa.index.ann.search import EXACT_MATCHES, MIN_PROBES, ByteExact, LanguageSearch, ProbedIVF
from qa.index.ann.train import (
    AnnReport,
    RowsView,
    choose_kind,
    exact_index,
    exact_neighbours,
    fill,
    n_lists,
    nprobe_steps,
    recall_at,
    train_ivf,
    tune_nprobe,
    tune_probes,
)

__all__ = [
    "EXACT_MATCHES",
    "MIN_PROBES",
    "AnnReport",
    "ByteExact",
    "Int8Rows",
    "LanguageSearch",
    "ProbedIVF",
    "RowsView",
    "choose_kind",
    "exact_index",
    "exact_neighbours",
    "fill",
    "n_lists",
    "nprobe_steps",
    "quantize_rows",
    "recall_at",
    "train_ivf",
    "tune_nprobe",
    "tune_probes",
]

"""BM25 over passages, with tokenization that works for every script.

Dense retrieval misses exact names and numbers that a lexical index catches. Scripts written
without spaces (Chinese, Japanese, Thai...) become overlapping character bigrams: one token per
sentence would match nothing, and a bigram index beats a morphological analyser's recall on
short questions without a dictionary to install.

Names cross scripts: Cyrillic words are indexed (and asked) in a Latin transliteration, so that
"Суцкевер" and "Sutskever", "Тесла" and "Tesla" share a token between a Russian question and an
English, French or German passage (and the reverse). Katakana, hangul and hanzi names have no
such rule-based spelling in Latin letters ("アルトマン" reads "arutoman"), so they are left as
they are. `ANALYZER` names the tokenization an index was built with: a question is tokenized
with its index's (`LexicalIndex.analyzer`), so an index built before a change keeps matching.
"""

from __future__ import annotations

import json
import re
import shutil
import unicodedata
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from qa.lang import NO_SPACE_CHARS

__all__ = [
    "ANALYZER",
    "EMPTY_TOKEN",
    "LEXICAL_ARRAYS",
    "PARAMS",
    "UNPACKED",
    "LexicalIndex",
    "LexicalWriter",
    "SegmentedLexical",
    "bm25_idf",
    "bm25_norms",
    "bm25_weight",
    "bm25_weights",
    "length_codes",
    "mean_length",
    "pack_postings",
    "postings_to_read",
    "row_bits_for",
    "smallest_uint",
    "tokenize",
    "transliterate",
    "unpack_rows",
]

# Runs of letters/digits; the scripts in NO_SPACE_SCRIPT are then cut into bigrams.
_WORD = re.compile(r"\w+", re.UNICODE)
_NO_SPACE = re.compile("[" + NO_SPACE_CHARS + "]+")  # scripts without spaces: see qa.lang
# The postings files `LexicalIndex.save` writes: what `LexicalIndex.load` can take as arrays
# memory-mapped by the caller, so that the postings stay on disk.
LEXICAL_ARRAYS = {"counts": "counts.npy", "indices": "indices.npy", "indptr": "indptr.npy", "lengths": "lengths.npy"}


# 1: lower-cased words, character bigrams for scripts without spaces. 2: and Cyrillic words
# transliterated to Latin letters (measured on the held-out half of XQuAD: needle R@1 0.6301 ->
# 0.6324, en -> ru 0.706 -> 0.728; same-language R@1 unchanged but es 1 question lower).
ANALYZER = 2
# Cyrillic (Russian, Ukrainian, Belarusian, Bulgarian, Serbian letters) -> Latin, close to the
# common English romanization of names (BGN/PCGN without diacritics): "Илья" -> "ilya".
_CYRILLIC = str.maketrans({
    **dict(zip("абвгдезийклмнопрстуфыэ", "abvgdeziyklmnoprstufye")),
    "ё": "e", "ж": "zh", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ь": "",
    "ю": "yu", "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "w", "ђ": "dj", "ј": "j",
    "љ": "lj", "њ": "nj", "ћ": "c", "џ": "dz", "ѓ": "g", "ќ": "k", "ѕ": "dz",
})  # fmt: skip
_HAS_CYRILLIC = re.compile("[\u0400-\u04ff]")


def transliterate(word: str) -> str:
    """A lower-cased word with its Cyrillic letters in Latin ones (other letters unchanged)."""
    return word.translate(_CYRILLIC) if _HAS_CYRILLIC.search(word) else word


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def tokenize(text: str, analyzer: int = ANALYZER) -> list[str]:
    """Lower-cased word tokens; character bigrams for scripts written without spaces; Cyrillic
    words in Latin letters (from `analyzer` 2 on, see `ANALYZER`)."""
    text = unicodedata.normalize("NFKC", text).lower()
    if analyzer >= 2 and _HAS_CYRILLIC.search(text):  # (one scan: most texts have no Cyrillic)
        text = text.translate(_CYRILLIC)
    tokens: list[str] = []
    for word in _WORD.findall(text):
        pos = 0
        for match in _NO_SPACE.finditer(word):
            if match.start() > pos:
                tokens.append(word[pos : match.start()])
            tokens.extend(_bigrams(match.group()))
            pos = match.end()
        if pos < len(word):
            tokens.append(word[pos:])
    return tokens


def _json_loads(text: bytes):
    """`json.loads`, through orjson when installed (a million passages' vocabulary: ~3x faster;
    bm25s reads it the same way)."""
    try:
        import orjson
    except ImportError:
        return json.loads(text)
    return orjson.loads(text)


# The BM25 arithmetic every store shares (the embedded index above, `qa.postgres` over the same
# postings in the database): plain values in, plain values out, so two stores cannot drift apart.


def bm25_idf(df: np.ndarray, passages: int) -> np.ndarray:
    """BM25's inverse document frequency (bm25s's Lucene variant) of tokens found in `df` of
    `passages` passages, float64 (a token seen nowhere, df 0, gets the largest idf)."""
    df = np.asarray(df, np.float64)
    return np.log(1 + (passages - df + 0.5) / (df + 0.5))


def postings_to_read(tokens: list, df: dict, budget: int) -> tuple[list, np.ndarray]:
    """Which tokens' postings a question reads, rarest first, and each one's weight (float32).

    `tokens`: the question's tokens in question order (any hashable key: a vocabulary id, the
    token itself), `df`: the postings count of each known token (tokens not in it are skipped).
    A token repeated in the question counts each time, as in bm25s's own scoring. Tokens are
    added rarest first until the next one would take the postings read past `budget` (the first
    is always read): what is left out occurs in a large share of the passages and weighs almost
    nothing (idf near 0). Ties keep question order.
    """
    counts = Counter(t for t in tokens if t in df)
    chosen, weights, read = [], [], 0
    for token in sorted(counts, key=lambda t: df[t]):
        if chosen and read + df[token] > budget:
            break
        chosen.append(token)
        weights.append(counts[token])
        read += df[token]
    return chosen, np.array(weights, np.float32)


K1, B = 1.5, 0.75  # bm25s's default Lucene variant
EMPTY_TOKEN = "\u2205"  # the placeholder token of an empty document (see `LexicalIndex.build`)
RUN_POSTINGS = 4_000_000  # postings held before a run is spilled to disk: ~50 MB, ~150 MB while merged
# What the postings folder holds (format of `LexicalIndex.save`): term counts, not scores, so that
# a score is computed at question time from the statistics of the passages searched (see
# `bm25_weights`); indexes that stored bm25s's precomputed scores are refused (`LexicalIndex.load`).
LEXICAL_FORMAT = "bm25-counts"
# 2: each posting's passage packed with its passage's length (`pack_postings`); 1 (read still):
# the passage alone, its length read from `lengths`.
LEXICAL_FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
UNPACKED = 32  # `row_bits` of postings that hold the passage alone (format 1)
PARAMS = "params.json"
VOCABULARY = "vocab.json"


def bm25_norms(lengths: np.ndarray, avgdl, k1: float = K1, b: float = B) -> np.ndarray:
    """BM25's length normalization k1 * ((1 - b) + b * length / avgdl), float32, of passages of
    `lengths` tokens in passages of mean length `avgdl`: the part of a score that depends on the
    passage, not the token. Float32 operations in the order of bm25s's precomputed scores.

    It depends on the length alone, so a question looks it up in a table of every length
    (`LexicalIndex.norms`) instead of computing it per posting: the same floats.
    """
    norms = np.asarray(lengths).astype(np.float32)  # a copy: the operations below are in place
    norms *= b
    norms /= np.float32(avgdl)
    norms += 1 - b
    norms *= k1
    return norms


def bm25_weight(tf, norm, idf):
    """BM25 weight idf * tf / (norm + tf) of a posting with term count `tf` in a passage of length
    normalization `norm` (`bm25_norms`), for a token of inverse document frequency `idf`.

    The one expression of a BM25 score: evaluated on float32 arrays by `bm25_weights` and,
    compiled, per posting by `qa.kernels.merge_counted_postings` (float32 scalars): the same operations,
    so the same floats.
    """
    return idf * tf / (norm + tf)


def bm25_weights(tf: np.ndarray, norms: np.ndarray, idf) -> np.ndarray:
    """BM25 weight (float32) of postings with term counts `tf` in passages of length
    normalization `norms` (`bm25_norms`), for tokens of inverse document frequency `idf` (a
    scalar or one a posting): `bm25_weight` over float32 arrays.

    With `bm25_norms`, the score function of BM25 here: the question-time scoring of the
    embedded index and the weights the PostgreSQL store copies (`LexicalIndex.weights`). The
    scores are bit for bit those bm25s precomputed from the same mean length (tested to float32
    tolerance against bm25s indexing the same tokens).
    """
    return bm25_weight(np.asarray(tf, np.float32), np.asarray(norms, np.float32), np.asarray(idf, np.float32))


def mean_length(total: int, passages: int) -> np.float32:
    """BM25's mean passage length from the summed lengths (exact integers: indexes written apart
    give, summed, the mean of one index over all their passages)."""
    return np.float32(total / passages) if passages else np.float32(1)


def row_bits_for(passages: int) -> int:
    """How many of a posting's 32 bits hold its passage in an index of `passages` passages (the
    rest hold the passage's length, `pack_postings`): 20 at a million, 24 at ten million;
    `UNPACKED` (32) when fewer than 4 bits would be left."""
    bits = max(1, int(passages - 1).bit_length())
    return bits if bits <= 28 else UNPACKED


def length_codes(lengths: np.ndarray, row_bits: int) -> np.ndarray:
    """What `pack_postings` stores of each passage's length above its `row_bits` bits (uint32):
    the length + 1, or 0 where that does not fit (the length is then read from `lengths`)."""
    if row_bits >= UNPACKED:
        return np.zeros(len(lengths), np.uint32)
    codes = np.asarray(lengths, np.uint32) + np.uint32(1)
    codes[codes >= np.uint32(1 << (UNPACKED - row_bits))] = 0
    return codes


def pack_postings(rows: np.ndarray, codes: np.ndarray, row_bits: int) -> np.ndarray:
    """Postings of passages `rows` as uint32: the passage in the low `row_bits` bits, its length's
    code (`length_codes`, one a passage: `codes`) in the others.

    Why: a question scores each posting with its passage's length (BM25's length normalization),
    and reading `lengths[row]` for tens of thousands of postings spread over the whole array cost
    more than the rest of the scoring (benchmarks/README.md, "The bound at 1M, met");
    read beside the passage, it costs nothing more on disk: at a million passages 20 bits name the
    passage and 12 hold any length up to 4,094.
    """
    rows = np.asarray(rows)
    if row_bits >= UNPACKED:
        return rows.astype(np.uint32)
    return rows.astype(np.uint32) | (codes[rows] << np.uint32(row_bits))


def unpack_rows(postings: np.ndarray, row_bits: int) -> np.ndarray:
    """The passages (int64) of postings packed by `pack_postings` with `row_bits`."""
    postings = np.asarray(postings)
    if row_bits >= UNPACKED:
        return postings.astype(np.int64)
    return (postings & np.uint32((1 << row_bits) - 1)).astype(np.int64)


def smallest_uint(largest: int) -> np.dtype:
    """The narrowest unsigned dtype holding 0..`largest`: term counts are stored in uint8 unless a
    token occurs more than 255 times in one passage (then uint16, or uint32), lossless."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class LexicalIndex:
    """A BM25 index over passage texts, in passage order: per token its postings (passage, term
    count), and per passage its length; scores are computed from them at question time."""

    def __init__(
        self,
        vocab: dict[str, int],
        arrays: dict[str, np.ndarray],
        total_length: int,
        analyzer: int = ANALYZER,
        k1: float = K1,
        b: float = B,
        row_bits: int = UNPACKED,
    ):
        self.vocab = vocab  # token -> its number (a row of `indptr`)
        # Plain arrays over the same memory (memory-mapped ones stay mapped): numpy's memmap
        # class costs microseconds per indexing, and a question indexes `indptr` per token.
        arrays = {key: np.asarray(array) for key, array in arrays.items()}
        self.counts = arrays["counts"]  # term count of each posting, token-major
        # Each posting's passage, ascending per token: packed with the passage's length (uint32,
        # `pack_postings`) in the low `row_bits` bits, or alone (int32, `UNPACKED`); `rows_at`.
        self.indices = arrays["indices"]
        self.row_bits = row_bits
        self.indptr = arrays["indptr"]  # token t's postings: [indptr[t], indptr[t + 1])
        self.lengths = arrays["lengths"]  # tokens of each passage
        self.passages = len(self.lengths)
        self.total_length = int(total_length)  # sum of `lengths`: BM25's mean length, exactly
        self.avgdl = mean_length(self.total_length, self.passages)
        self.k1, self.b = k1, b
        self._norms: np.ndarray | None = None
        self.analyzer = analyzer  # the `tokenize` of its passages, and so of its questions
        # Each passage's language (`set_languages`): None scores every passage with the pool's idf.
        self.lang_ids: np.ndarray | None = None
        self.lang_passages: np.ndarray | None = None

    def set_languages(self, lang_ids: np.ndarray) -> LexicalIndex:
        """Score each passage with its own language's idf: a token's document frequency counted
        among the passages of that language, out of that language's passages (`lang_ids`: each
        passage's language as a small integer). A German "die" is in every German passage, but
        counted over a pool of six languages it looks rare and outweighs the rare words.

        Nothing is stored for it: a question counts the languages of the postings it reads
        anyway (`qa.kernels.postings_by_language`). `idf` stays the pool's (quotes weigh words
        by it). Returns the index.
        """
        lang_ids = np.asarray(lang_ids)
        if lang_ids.shape != (self.passages,):
            raise ValueError(f"{lang_ids.shape[0] if lang_ids.ndim else 0} language ids for {self.passages} passages")
        self.lang_ids = lang_ids.astype(np.uint8, copy=False) if lang_ids.max(initial=0) < 256 else lang_ids
        self.lang_passages = np.bincount(self.lang_ids, minlength=1)
        return self

    @classmethod
    def build(cls, texts: list[str], block: int = 20_000, analyzer: int = ANALYZER) -> LexicalIndex:
        """BM25 (bm25s's default Lucene variant, k1 = 1.5, b = 0.75) over `texts`, in memory
        (`LexicalWriter` writes the same index with bounded memory)."""
        vocab: dict[str, int] = {}
        docs, tokens, counts, lengths = [], [], [], []
        for start in range(0, len(texts), block):
            part_docs, part_tokens, part_counts = [], [], []
            for doc, text in enumerate(texts[start : start + block], start):
                # An empty document would get no postings at all: keep a placeholder token.
                words = tokenize(text, analyzer) or [EMPTY_TOKEN]
                ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int32, len(words))
                unique, tf = np.unique(ids, return_counts=True)
                part_docs.append(np.full(len(unique), doc, np.int32))
                part_tokens.append(unique)
                part_counts.append(tf)
                lengths.append(len(words))
            docs.append(np.concatenate(part_docs))
            tokens.append(np.concatenate(part_tokens))
            counts.append(np.concatenate(part_counts))
        docs, tokens, tf = (np.concatenate(a) if a else np.zeros(0, np.int32) for a in (docs, tokens, counts))
        order = np.argsort(tokens, kind="stable")  # column by column, documents ascending
        df = np.bincount(tokens, minlength=len(vocab))
        row_bits = row_bits_for(len(lengths))
        arrays = {
            "counts": tf[order].astype(smallest_uint(int(tf.max(initial=0)))),
            "indices": pack_postings(docs[order], length_codes(lengths, row_bits), row_bits),
            "indptr": np.concatenate([[0], np.cumsum(df)]).astype(np.int64),
            "lengths": np.asarray(lengths, smallest_uint(max(lengths, default=0))),
        }
        return cls(vocab, arrays, sum(lengths), analyzer, row_bits=row_bits)

    def rows_at(self, start: int, end: int) -> np.ndarray:
        """The passages (int64) of postings `start:end`."""
        return unpack_rows(self.indices[start:end], self.row_bits)

    def weights(self) -> np.ndarray:
        """BM25 weights (float32) of every posting, token-major, each with its passage's
        language's idf when the index has languages (`set_languages`): what a store that keeps
        scores (`qa.postgres`) copies."""
        tokens = np.repeat(np.arange(len(self.vocab)), np.diff(np.asarray(self.indptr)))
        rows = self.rows_at(0, len(self.indices))
        if self.lang_ids is None:
            idf = self._idf32(np.arange(len(self.vocab)))[tokens]
        else:
            langs = self.lang_ids[rows].astype(np.int64)
            width = len(self.lang_passages)
            df = np.bincount(tokens * width + langs, minlength=len(self.vocab) * width).reshape(-1, width)
            idf = bm25_idf(df, self.lang_passages).astype(np.float32)[tokens, langs]
        return self._weights(self.counts, rows, idf)

    def _idf32(self, token_ids) -> np.ndarray:
        ids = np.asarray(token_ids, np.int64)
        return bm25_idf(self.indptr[ids + 1] - self.indptr[ids], self.passages).astype(np.float32)

    def _idf_table(self, starts: np.ndarray, ends: np.ndarray, read) -> tuple[np.ndarray, np.ndarray]:
        """(idf of each read token in each language, (tokens, languages) float32, and the
        passages' language ids): one column and no ids when the index has no languages."""
        if self.lang_ids is None:
            return self._idf32(read)[:, None], np.zeros(0, np.uint8)
        from qa.kernels import postings_by_language

        df = postings_by_language(self.indices, self.row_bits, starts, ends, self.lang_ids, len(self.lang_passages))
        return bm25_idf(df, self.lang_passages).astype(np.float32), self.lang_ids

    @property
    def norms(self) -> np.ndarray:
        """`bm25_norms` of every length 0..the longest passage's (a few hundred floats): computed
        once, so that a question's postings cost a table look-up, not the arithmetic."""
        if self._norms is None:
            longest = int(np.max(self.lengths, initial=0))
            self._norms = bm25_norms(np.arange(longest + 1), self.avgdl, self.k1, self.b)
        return self._norms

    def _weights(self, counts: np.ndarray, rows: np.ndarray, idf) -> np.ndarray:
        return bm25_weights(counts, self.norms[self.lengths[rows]], idf)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for `query` (zeros when no token is known).

        bm25s's own scoring (`BM25.get_scores`, numpy backend): each known token's weights
        added in question order (a repeated token each time) into float32 zeros.
        """
        out = np.zeros(self.passages, np.float32)
        for token in tokenize(query, self.analyzer):
            if token in self.vocab:
                t = self.vocab[token]
                start, end = int(self.indptr[t]), int(self.indptr[t + 1])
                rows = self.rows_at(start, end)
                if self.lang_ids is None:
                    idf = self._idf32([t])[0]
                else:  # each passage's language's idf (`set_languages`)
                    langs = self.lang_ids[rows]
                    df = np.bincount(langs, minlength=len(self.lang_passages))
                    idf = bm25_idf(df, self.lang_passages).astype(np.float32)[langs]
                np.add.at(out, rows, self._weights(self.counts[start:end], rows, idf))
        return out

    def idf(self, tokens: list[str]) -> np.ndarray:
        """BM25's inverse document frequency of each token over the indexed passages (that of a
        token seen nowhere for a token the index does not know)."""
        indptr = self.indptr
        df = [indptr[self.vocab[t] + 1] - indptr[self.vocab[t]] if t in self.vocab else 0 for t in tokens]
        return bm25_idf(np.array(df, np.float64), self.passages)

    def sparse_scores(self, query: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """(passage rows, BM25 scores) of the passages sharing a token with `query`, rows sorted.

        Reads the postings of each query token, rarest token first, and stops adding tokens once
        `budget` postings are read: the words skipped then occur in a large share of the passages
        and weigh almost nothing (idf near 0), so on a million passages a question costs its rare
        words, not its "the"s and "de"s. Within the budget the result equals `scores` on its
        non-zero rows. Each read posting is scored as the merge reads it
        (`qa.kernels.merge_counted_postings`, the compiled `bm25_weight`).
        """
        from qa.kernels import merge_counted_postings

        indptr = self.indptr
        ids = [self.vocab[t] for t in tokenize(query, self.analyzer) if t in self.vocab]
        read, weights = postings_to_read(ids, {i: int(indptr[i + 1] - indptr[i]) for i in ids}, budget)
        starts = np.array([indptr[i] for i in read], np.int64)
        ends = np.array([indptr[i + 1] for i in read], np.int64)
        idf, langs = self._idf_table(starts, ends, read)
        # Each token's postings are sorted by passage: merging them sums each passage's scores
        # in one pass (numpy's stable sort and running sum of the concatenated postings took
        # 0.75 ms for the ~30,000 postings of a question at 1M passages; the merge 0.31 ms).
        return merge_counted_postings(
            self.indices, self.row_bits, self.counts, self.lengths, self.norms, idf, langs, starts, ends, weights
        )

    def postings(self) -> list[np.ndarray]:
        """The arrays of the index (`LEXICAL_ARRAYS`), memory-mapped when loaded with them."""
        return [self.counts, self.indices, self.indptr, self.lengths]

    def save(self, folder: Path) -> None:
        """Write the index into `folder` (the files `LexicalWriter.close` writes)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for key, name in LEXICAL_ARRAYS.items():
            np.save(folder / name, np.asarray(getattr(self, key)))
        _write_params(folder, self.vocab, self.passages, self.total_length, self.analyzer, self.row_bits)

    @classmethod
    def load(cls, folder: Path, arrays: dict[str, np.ndarray] | None = None, analyzer: int = ANALYZER) -> LexicalIndex:
        """The index saved in `folder`. With `arrays` (the `LEXICAL_ARRAYS` files, by their key
        there, already memory-mapped), the postings are read in place instead of loaded;
        `analyzer`: the `tokenize` it was built with (its manifest's "lexical_analyzer").
        A folder of another layout (bm25s's precomputed scores) is refused by name.
        """
        folder = Path(folder)
        if not (folder / PARAMS).exists():
            raise ValueError(
                f"{folder} holds no BM25 counts ({PARAMS} missing: an index written before BM25 stored "
                "term counts); rebuild the index with `qa index`"
            )
        params = json.loads((folder / PARAMS).read_text(encoding="utf-8"))
        found = (params.get("format"), params.get("version"))
        if found[0] != LEXICAL_FORMAT or found[1] not in READABLE_VERSIONS:
            raise ValueError(
                f"{folder / PARAMS} is of BM25 format {found[0]} {found[1]}, this qa reads "
                f"{LEXICAL_FORMAT} {' and '.join(map(str, READABLE_VERSIONS))}; rebuild the index with `qa index`"
            )
        vocab = _json_loads((folder / VOCABULARY).read_bytes())
        if arrays is None:
            arrays = {key: np.load(folder / name) for key, name in LEXICAL_ARRAYS.items()}
        index = cls(
            vocab, arrays, params["total_length"], analyzer, params["k1"], params["b"], params.get("row_bits", UNPACKED)
        )
        if index.passages != params["passages"] or len(index.indptr) != len(vocab) + 1:
            raise ValueError(f"{folder} has {index.passages} lengths for {params['passages']} passages")
        return index


class SegmentedLexical:
    """BM25 over several indexes written apart (segments), scored as one index of all their
    passages: each question's statistics are summed over the segments when it is asked.

    Lucene's way: a token's document frequency is the sum of its postings counts in the segments
    that know it, the passages and the summed lengths (hence the mean length and the length
    normalization table, `norms`) are the segments' sums, and each segment's postings are scored
    with these global values by the one scoring merge (`qa.kernels.merge_counted_postings`).
    So the scores are those of one `LexicalIndex` built over all the passages (tested bit for
    bit, `tests/test_lexical_segments.py`), whatever the split.

    `segments`: the indexes (`LexicalIndex.load`, memory-mapped as usual), of one analyzer, k1
    and b. `offsets`: the global row of each segment's first passage, ascending, the segments
    not overlapping (default: one after another from 0). `deleted`: per segment None or a
    boolean mask of its passages (tombstones): a deleted passage is never returned, but, as in
    Lucene until a merge rewrites the segment, it still counts in the document frequencies,
    the passages and the lengths the scores use, so deleting changes no other passage's score.
    """

    def __init__(
        self,
        segments: Sequence[LexicalIndex],
        offsets: Sequence[int] | None = None,
        deleted: Sequence[np.ndarray | None] | None = None,
    ):
        self.segments = list(segments)
        if not self.segments:
            raise ValueError("no BM25 segments given: give at least one LexicalIndex (it may be empty)")
        first = self.segments[0]
        for i, segment in enumerate(self.segments):
            if (segment.analyzer, segment.k1, segment.b) != (first.analyzer, first.k1, first.b):
                raise ValueError(
                    f"BM25 segment {i} has analyzer {segment.analyzer}, k1 {segment.k1}, b {segment.b}; segment "
                    f"0 has {first.analyzer}, {first.k1}, {first.b}: rebuild the older segments with `qa index`"
                )
        sizes = np.array([s.passages for s in self.segments], np.int64)
        self.offsets = _segment_offsets(sizes, offsets)
        self.deleted = _deleted_masks(sizes, deleted)
        self.rows = int(self.offsets[-1] + sizes[-1])  # global rows span 0..rows (a gap's rows: none)
        self.passages = int(sizes.sum())  # BM25's N: deleted passages included (see the class)
        self.total_length = sum(s.total_length for s in self.segments)
        self.avgdl = mean_length(self.total_length, self.passages)
        self.analyzer, self.k1, self.b = first.analyzer, first.k1, first.b
        self._norms: np.ndarray | None = None
        self.lang_ids: np.ndarray | None = None  # global, `set_languages`; None: the pool's idf
        self.lang_passages: np.ndarray | None = None

    def set_languages(self, lang_ids: np.ndarray) -> SegmentedLexical:
        """`LexicalIndex.set_languages` over the global rows (`lang_ids`: one a global row, the
        deleted passages' too, since they count in the statistics). Returns the index."""
        lang_ids = np.asarray(lang_ids)
        if lang_ids.shape != (self.rows,):
            raise ValueError(f"{lang_ids.shape[0] if lang_ids.ndim else 0} language ids for {self.rows} rows")
        self.lang_ids = lang_ids.astype(np.uint8, copy=False) if lang_ids.max(initial=0) < 256 else lang_ids
        counted = np.concatenate([self._segment_langs(i) for i in range(len(self.segments))])
        self.lang_passages = np.bincount(counted, minlength=int(self.lang_ids.max(initial=0)) + 1)
        return self

    def _segment_langs(self, i: int) -> np.ndarray:
        """Segment `i`'s passages' language ids (a view of the global ones), or none."""
        if self.lang_ids is None:
            return np.zeros(0, np.uint8)
        start = int(self.offsets[i])
        return self.lang_ids[start : start + self.segments[i].passages]

    @property
    def norms(self) -> np.ndarray:
        """`LexicalIndex.norms` from the global mean length, up to the longest passage of any
        segment: every segment's postings are looked up in this one table."""
        if self._norms is None:
            longest = max(int(np.max(s.lengths, initial=0)) for s in self.segments)
            self._norms = bm25_norms(np.arange(longest + 1), self.avgdl, self.k1, self.b)
        return self._norms

    def _postings_of(self, tokens: Iterable[str]) -> dict[str, list[tuple[int, int, int]]]:
        """Each token known to some segment: its postings there, (segment, start, end) a segment
        that knows it. Its global document frequency is the sum of the ends minus starts."""
        found: dict[str, list[tuple[int, int, int]]] = {}
        for token in dict.fromkeys(tokens):  # each token once, in question order
            for i, segment in enumerate(self.segments):
                t = segment.vocab.get(token)
                if t is not None:
                    found.setdefault(token, []).append((i, int(segment.indptr[t]), int(segment.indptr[t + 1])))
        return found

    def idf(self, tokens: list[str]) -> np.ndarray:
        """`LexicalIndex.idf` from the document frequencies summed over the segments."""
        found = self._postings_of(tokens)
        df = [sum(end - start for _, start, end in found.get(t, ())) for t in tokens]
        return bm25_idf(np.array(df, np.float64), self.passages)

    def sparse_scores(self, query: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """`LexicalIndex.sparse_scores` over the segments: (global rows ascending, float32 scores)
        of the passages sharing a token with `query`, deleted passages left out.

        The tokens read are chosen from their global document frequencies (`postings_to_read`,
        rarest first within `budget` postings, deleted postings counted), so every segment reads
        the same tokens, in the same order, as one index would: each passage's sum is then the
        same floats. Each segment is merged apart (its rows are its own), then offset.
        """
        from qa.kernels import merge_counted_postings

        tokens = tokenize(query, self.analyzer)
        found = self._postings_of(tokens)
        df = {token: sum(end - start for _, start, end in places) for token, places in found.items()}
        read, weights = postings_to_read(tokens, df, budget)  # a repeated token weighs each time
        if not read:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # Where each read token's postings are in each segment: (segments, tokens), an empty
        # range where the segment lacks it (kept, so that the lists stay the question's lists).
        starts = np.zeros((len(self.segments), len(read)), np.int64)
        ends = np.zeros((len(self.segments), len(read)), np.int64)
        for j, token in enumerate(read):
            for i, start, end in found[token]:
                starts[i, j], ends[i, j] = start, end
        idf = self._idf_table(starts, ends, np.array([df[t] for t in read], np.int64))
        all_rows, all_scores = [], []
        for i, segment in enumerate(self.segments):
            if not (ends[i] > starts[i]).any():
                continue  # none of the question's tokens here
            rows, scores = merge_counted_postings(
                segment.indices, segment.row_bits, segment.counts, segment.lengths, self.norms, idf,
                self._segment_langs(i),
                starts[i], ends[i], weights,
            )  # fmt: skip
            if self.deleted[i] is not None:
                kept = ~self.deleted[i][rows]
                rows, scores = rows[kept], scores[kept]
            all_rows.append(rows + self.offsets[i])
            all_scores.append(scores)
        if not all_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(all_rows), np.concatenate(all_scores)

    def _idf_table(self, starts: np.ndarray, ends: np.ndarray, df: np.ndarray) -> np.ndarray:
        """`LexicalIndex._idf_table` from global statistics: (tokens, languages) float32, one
        column of the pool's idf when there are no languages, else each language's document
        frequencies summed over the segments (`qa.kernels.postings_by_language`)."""
        if self.lang_ids is None:
            return bm25_idf(df, self.passages).astype(np.float32)[:, None]
        from qa.kernels import postings_by_language

        width = len(self.lang_passages)
        by_lang = np.zeros((starts.shape[1], width), np.int64)
        for i, segment in enumerate(self.segments):
            by_lang += postings_by_language(
                segment.indices, segment.row_bits, starts[i], ends[i], self._segment_langs(i), width
            )
        return bm25_idf(by_lang, self.lang_passages).astype(np.float32)

    def scores(self, query: str) -> np.ndarray:
        """`LexicalIndex.scores` over the global rows (deleted passages score 0): each known
        token's postings of every segment, in global row order, weighted and added in question
        order into float32 zeros, as one index adds them."""
        out = np.zeros(self.rows, np.float32)
        tokens = tokenize(query, self.analyzer)
        found = self._postings_of(tokens)
        for token in tokens:
            if token not in found:
                continue
            parts = [(self.segments[i], self.offsets[i], start, end) for i, start, end in found[token]]
            local = [s.rows_at(a, b) for s, _, a, b in parts]  # each segment's own rows
            rows = np.concatenate([r + offset for r, (_, offset, _, _) in zip(local, parts)])
            counts = np.concatenate([s.counts[a:b].astype(np.uint32) for s, _, a, b in parts])
            lengths = np.concatenate([s.lengths[r].astype(np.int64) for r, (s, _, _, _) in zip(local, parts)])
            if self.lang_ids is None:
                idf = bm25_idf(np.array([len(rows)]), self.passages).astype(np.float32)[0]
            else:
                langs = self.lang_ids[rows]
                df = np.bincount(langs, minlength=len(self.lang_passages))
                idf = bm25_idf(df, self.lang_passages).astype(np.float32)[langs]
            np.add.at(out, rows, bm25_weights(counts, self.norms[lengths], idf))
        for i, mask in enumerate(self.deleted):
            if mask is not None:
                out[self.offsets[i] + np.flatnonzero(mask)] = 0
        return out

    def postings(self) -> list[np.ndarray]:
        """Every segment's arrays (`LexicalIndex.postings`), segment after segment."""
        return [array for segment in self.segments for array in segment.postings()]


def _segment_offsets(sizes: np.ndarray, offsets: Sequence[int] | None) -> np.ndarray:
    """The global row of each segment's first passage: `offsets` checked (ascending, segments
    not overlapping), or the segments one after another from 0."""
    if offsets is None:
        return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    offsets = np.asarray(offsets, np.int64)
    if offsets.shape != sizes.shape:
        raise ValueError(f"{len(offsets)} row offsets for {len(sizes)} BM25 segments: give one a segment")
    overlap = np.flatnonzero((offsets[1:] < offsets[:-1] + sizes[:-1]) | (offsets[1:] < offsets[:-1]))
    if offsets[0] < 0 or len(overlap):
        bad = int(overlap[0]) + 1 if len(overlap) else 0
        raise ValueError(
            f"BM25 segment {bad} starts at row {int(offsets[bad])}, inside the rows before it (offsets "
            f"{offsets.tolist()}, passages {sizes.tolist()}): give ascending offsets, each at least the previous "
            "one plus its passages"
        )
    return offsets


def _deleted_masks(sizes: np.ndarray, deleted: Sequence[np.ndarray | None] | None) -> list[np.ndarray | None]:
    """Per segment its tombstones as a boolean mask of its passages, or None when it has none."""
    if deleted is None:
        return [None] * len(sizes)
    if len(deleted) != len(sizes):
        raise ValueError(f"{len(deleted)} deleted-row masks for {len(sizes)} BM25 segments: give one a segment")
    masks: list[np.ndarray | None] = []
    for i, (mask, size) in enumerate(zip(deleted, sizes)):
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != (size,):
                raise ValueError(f"BM25 segment {i}'s deleted-row mask has shape {mask.shape}, not ({size},)")
            mask = mask if mask.any() else None  # nothing deleted: nothing to filter
        masks.append(mask)
    return masks


class LexicalWriter:
    """Writes the BM25 index of `LexicalIndex.build` with bounded memory: passages are added one
    at a time, their (token, passage, count) postings spilled to disk in runs of at most
    `run_postings`, and `close` merges the runs into the final memory-mapped files.

    `LexicalIndex.build` holds every posting three times over (ids, passages, counts, then the
    sort order): ~2 GB at a million passages. Here memory holds the vocabulary, one length per
    passage and one run. The merge is a counting sort: once every run is written, each token's
    document frequency, hence where its postings start in the final file (`indptr`), is known,
    and each run, read back in passage order, writes its postings of each token at that token's
    cursor. The files are byte for byte those of `LexicalIndex.build(texts).save(folder)`.
    """

    def __init__(self, scratch: Path, run_postings: int = RUN_POSTINGS):
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.run_postings = run_postings
        self.vocab: dict[str, int] = {}
        self.lengths = array("I")  # uint32, one a passage
        self.max_count = 0  # the largest term count: the counts' dtype (`smallest_uint`)
        self.df = np.zeros(0, np.int64)
        self.runs: list[tuple[Path, int]] = []  # (file stem, postings)
        self._docs: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._held = 0

    def add(self, text: str) -> None:
        """Index the next passage (passages are numbered in the order they are added)."""
        vocab = self.vocab
        words = tokenize(text) or [EMPTY_TOKEN]
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int32, len(words))
        unique, tf = np.unique(ids, return_counts=True)
        self._docs.append(np.full(len(unique), len(self.lengths), np.int32))
        self._tokens.append(unique)
        self._counts.append(tf.astype(np.uint32))
        self.max_count = max(self.max_count, int(tf.max()))
        self.lengths.append(len(words))
        self._held += len(unique)
        if self._held >= self.run_postings:
            self._spill()

    def add_all(self, texts: Iterable[str]) -> None:
        """`add` each of `texts`, in order."""
        for text in texts:
            self.add(text)

    def _spill(self) -> None:
        if not self._held:
            return
        tokens = np.concatenate(self._tokens)
        self.df = _grown(self.df, len(self.vocab))
        self.df += np.bincount(tokens, minlength=len(self.df))
        stem = self.scratch / f"run-{len(self.runs):05d}"
        np.save(f"{stem}.tokens.npy", tokens)
        np.save(f"{stem}.docs.npy", np.concatenate(self._docs))
        np.save(f"{stem}.counts.npy", np.concatenate(self._counts))
        self.runs.append((stem, len(tokens)))
        self._docs, self._tokens, self._counts, self._held = [], [], [], 0

    def close(self, folder: Path) -> None:
        """Merge the runs and write the index into `folder` (as `LexicalIndex.save`); the
        scratch folder is removed."""
        self._spill()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n_vocab = len(self.vocab)
        df = _grown(self.df, n_vocab)
        indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
        nnz = int(indptr[-1])
        dtype = smallest_uint(self.max_count)
        counts = np.lib.format.open_memmap(folder / LEXICAL_ARRAYS["counts"], mode="w+", dtype=dtype, shape=(nnz,))
        indices = np.lib.format.open_memmap(folder / LEXICAL_ARRAYS["indices"], mode="w+", dtype=np.uint32, shape=(nnz,))
        lengths = np.frombuffer(self.lengths, np.uint32)
        row_bits = row_bits_for(len(lengths))
        codes = length_codes(lengths, row_bits)
        cursor = indptr[:-1].copy()
        for stem, _ in self.runs:
            tokens = np.load(f"{stem}.tokens.npy")
            order = np.argsort(tokens, kind="stable")  # by token, passages ascending within each
            tokens = tokens[order]
            # Where each posting goes: its token's cursor plus its rank among the run's postings
            # of that token.
            per_token = np.bincount(tokens, minlength=n_vocab)
            first = np.concatenate([[0], np.cumsum(per_token)[:-1]])
            at = cursor[tokens] + (np.arange(len(tokens)) - first[tokens])
            cursor += per_token
            del per_token, first, tokens
            indices[at] = pack_postings(np.load(f"{stem}.docs.npy")[order], codes, row_bits)
            counts[at] = np.load(f"{stem}.counts.npy")[order]
            del order, at
        counts.flush()
        indices.flush()
        del counts, indices
        np.save(folder / LEXICAL_ARRAYS["indptr"], indptr)
        np.save(folder / LEXICAL_ARRAYS["lengths"], lengths.astype(smallest_uint(int(lengths.max(initial=0)))))
        _write_params(folder, self.vocab, len(lengths), int(lengths.sum(dtype=np.int64)), ANALYZER, row_bits)
        shutil.rmtree(self.scratch, ignore_errors=True)


def _write_params(
    folder: Path, vocab: dict[str, int], passages: int, total_length: int, analyzer: int, row_bits: int
) -> None:
    """The vocabulary and the statistics BM25 scores with (besides the postings' counts):
    passages and summed lengths, so that indexes written apart combine exactly."""
    (folder / VOCABULARY).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    params = {
        "format": LEXICAL_FORMAT, "version": LEXICAL_FORMAT_VERSION, "k1": K1, "b": B, "method": "lucene",
        "passages": passages, "total_length": total_length, "analyzer": analyzer, "row_bits": row_bits,
    }  # fmt: skip
    (folder / PARAMS).write_text(json.dumps(params, indent=2), encoding="utf-8")


def _grown(counts: np.ndarray, size: int) -> np.ndarray:
    """`counts` padded with zeros to `size`."""
    return counts if len(counts) >= size else np.concatenate([counts, np.zeros(size - len(counts), counts.dtype)])

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
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from qa.lang import NO_SPACE_CHARS

__all__ = [
    "ANALYZER",
    "LEXICAL_ARRAYS",
    "LexicalIndex",
    "LexicalWriter",
    "bm25_idf",
    "postings_to_read",
    "tokenize",
    "transliterate",
]

# Runs of letters/digits; the scripts in NO_SPACE_SCRIPT are then cut into bigrams.
_WORD = re.compile(r"\w+", re.UNICODE)
_NO_SPACE = re.compile("[" + NO_SPACE_CHARS + "]+")  # scripts without spaces: see qa.lang
# The postings files bm25s saves (`LexicalIndex.save`): what `LexicalIndex.load` can take as
# arrays memory-mapped by the caller, so that the postings stay on disk.
LEXICAL_ARRAYS = {"data": "data.csc.index.npy", "indices": "indices.csc.index.npy", "indptr": "indptr.csc.index.npy"}


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


class _Postings:
    """A saved index as a question reads it: the two attributes of bm25s's `BM25` that
    `LexicalIndex` uses (`vocab_dict`, and `scores`: the score matrix's arrays and `num_docs`),
    read from bm25s's files without importing bm25s (see `LexicalIndex.load`)."""

    def __init__(self, vocab_dict: dict[str, int], scores: dict):
        self.vocab_dict = vocab_dict
        self.scores = scores


class LexicalIndex:
    """A BM25 index (bm25s's format and scores) over passage texts, in passage order."""

    def __init__(self, retriever, analyzer: int = ANALYZER):
        self._retriever = retriever  # a bm25s `BM25` (built) or `_Postings` (loaded)
        self.analyzer = analyzer  # the `tokenize` of its passages, and so of its questions

    @classmethod
    def build(cls, texts: list[str], block: int = 20_000, analyzer: int = ANALYZER) -> LexicalIndex:
        """BM25 (bm25s's default Lucene variant, k1 = 1.5, b = 0.75) over `texts`.

        The score matrix is computed here with numpy, a block of texts at a time, and handed to
        bm25s for saving and querying: bm25s's own indexer keeps every document's tokens as
        Python lists (about 5 GB for a million passages), this keeps only the sparse matrix.
        """
        import bm25s

        k1, b = 1.5, 0.75
        vocab: dict[str, int] = {}
        docs, tokens, counts, lengths = [], [], [], []
        for start in range(0, len(texts), block):
            part_docs, part_tokens, part_counts = [], [], []
            for doc, text in enumerate(texts[start : start + block], start):
                # An empty document would get no column entries at all: keep a placeholder token.
                words = tokenize(text, analyzer) or ["\u2205"]
                ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), np.int32, len(words))
                unique, tf = np.unique(ids, return_counts=True)
                part_docs.append(np.full(len(unique), doc, np.int32))
                part_tokens.append(unique)
                part_counts.append(tf)
                lengths.append(len(words))
            docs.append(np.concatenate(part_docs))
            tokens.append(np.concatenate(part_tokens))
            counts.append(np.concatenate(part_counts).astype(np.float32))
        docs, tokens, tf = np.concatenate(docs), np.concatenate(tokens), np.concatenate(counts)
        del counts
        lengths = np.asarray(lengths, np.float32)
        n_docs, n_vocab = len(texts), len(vocab) + 1  # + bm25s's empty token, added below
        df = np.bincount(tokens, minlength=n_vocab)
        idf = bm25_idf(df, n_docs).astype(np.float32)
        # Postings put in column order first, each temporary freed as soon as it is used: at a
        # million passages (~100M postings) every array here is 0.4-0.8 GB.
        order = np.argsort(tokens, kind="stable")  # column by column, documents ascending
        docs = docs[order]
        tf = tf[order]
        tokens = tokens[order]
        del order
        # In place, in the order of operations of idf * tf / (k1 * ((1 - b) + b * length / mean)
        # + tf), so that the scores are the same floats as computed in one expression.
        scores = lengths[docs]
        scores *= b
        scores /= lengths.mean()
        scores += 1 - b
        scores *= k1
        scores += tf
        numerator = idf[tokens]
        del tokens
        numerator *= tf
        del tf
        np.divide(numerator, scores, out=scores)
        del numerator
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
        retriever.scores = {
            "data": scores,
            "indices": docs,
            "indptr": np.concatenate([[0], np.cumsum(df)]).astype(np.int64),
            "num_docs": n_docs,
        }
        vocab[""] = len(vocab)
        retriever.vocab_dict = vocab
        retriever.unique_token_ids_set = set(vocab.values())
        retriever.nonoccurrence_array = None
        return cls(retriever, analyzer)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for `query` (zeros when no token is known).

        bm25s's own scoring (`BM25.get_scores`, numpy backend), float for float: each known
        token's precomputed scores added in question order (a repeated token each time) into
        float32 zeros.
        """
        vocab = self._retriever.vocab_dict
        matrix = self._retriever.scores
        indptr, indices, data = matrix["indptr"], matrix["indices"], matrix["data"]
        out = np.zeros(matrix["num_docs"], np.float32)
        for token in tokenize(query, self.analyzer):
            if token in vocab:
                start, end = indptr[vocab[token]], indptr[vocab[token] + 1]
                np.add.at(out, indices[start:end], data[start:end])
        return out

    def idf(self, tokens: list[str]) -> np.ndarray:
        """BM25's inverse document frequency of each token over the indexed passages (that of a
        token seen nowhere for a token the index does not know)."""
        matrix = self._retriever.scores
        vocab = self._retriever.vocab_dict
        indptr = np.asarray(matrix["indptr"])
        n = matrix["num_docs"]
        df = np.array([indptr[vocab[t] + 1] - indptr[vocab[t]] if t in vocab else 0 for t in tokens], np.float64)
        return bm25_idf(df, n)

    def sparse_scores(self, query: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """(passage rows, BM25 scores) of the passages sharing a token with `query`, rows sorted.

        Reads the precomputed per-passage scores of each query token (bm25s stores them per
        token), rarest token first, and stops adding tokens once `budget` postings are read:
        the words skipped then occur in a large share of the passages and weigh almost nothing
        (idf near 0), so on a million passages a question costs its rare words, not its
        "the"s and "de"s. Within the budget the result equals `scores` on its non-zero rows.
        """
        from qa.kernels import merge_postings

        matrix = self._retriever.scores
        vocab = self._retriever.vocab_dict
        indptr = matrix["indptr"]
        ids = [vocab[t] for t in tokenize(query, self.analyzer) if t in vocab]
        read, weights = postings_to_read(ids, {i: int(indptr[i + 1] - indptr[i]) for i in ids}, budget)
        starts = [indptr[i] for i in read]
        ends = [indptr[i + 1] for i in read]
        # Each token's postings are sorted by passage: merging them sums each passage's scores
        # in one pass (numpy's stable sort and running sum of the concatenated postings took
        # 0.75 ms for the ~30,000 postings of a question at 1M passages; the merge 0.31 ms).
        return merge_postings(
            np.asarray(matrix["indices"]),
            np.asarray(matrix["data"]),
            np.array(starts, np.int64),
            np.array(ends, np.int64),
            weights,
        )

    def postings(self) -> list[np.ndarray]:
        """The arrays of the score matrix (`LEXICAL_ARRAYS`), memory-mapped when loaded with them."""
        return [self._retriever.scores[key] for key in LEXICAL_ARRAYS]

    def save(self, folder: Path) -> None:
        """Write the index into `folder` in bm25s's format (an index made by `build`; a loaded one
        is already in its folder)."""
        if isinstance(self._retriever, _Postings):
            raise TypeError("a loaded lexical index is saved already: copy its folder instead")
        self._retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path, arrays: dict[str, np.ndarray] | None = None, analyzer: int = ANALYZER) -> LexicalIndex:
        """The index saved in `folder`. With `arrays` (the `LEXICAL_ARRAYS` files, by their key
        there, already memory-mapped), the postings are read in place instead of loaded;
        `analyzer`: the `tokenize` it was built with (its manifest's "lexical_analyzer").

        Reads bm25s's files itself (its vocabulary, parameters and three arrays): importing
        bm25s imports numba and scipy.sparse, ~0.4 s of CPU that a question does not need.
        """
        folder = Path(folder)
        params = json.loads((folder / "params.index.json").read_text(encoding="utf-8"))
        if params.get("method", "lucene") != "lucene":  # the only variant `build` writes
            raise ValueError(f"is a BM25 index of method {params['method']!r}; rebuild the index with `qa index`")
        vocab = _json_loads((folder / "vocab.index.json").read_bytes())
        if arrays is None:
            arrays = {key: np.load(folder / name) for key, name in LEXICAL_ARRAYS.items()}
        scores = {key: arrays[key] for key in LEXICAL_ARRAYS}
        scores["num_docs"] = params["num_docs"]
        return cls(_Postings(vocab, scores), analyzer)


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


K1, B = 1.5, 0.75  # bm25s's default Lucene variant, as `LexicalIndex.build`
EMPTY_TOKEN = "\u2205"  # the placeholder token of an empty document (see `LexicalIndex.build`)
RUN_POSTINGS = 4_000_000  # postings held before a run is spilled to disk: ~50 MB, ~150 MB while merged


class LexicalWriter:
    """Writes the BM25 index of `LexicalIndex.build` with bounded memory: passages are added one
    at a time, their (token, passage, count) postings spilled to disk in runs of at most
    `run_postings`, and `close` merges the runs into the final memory-mapped files.

    `LexicalIndex.build` holds every posting three times over (ids, passages, counts, then the
    sort order and the scores): ~4 GB at a million passages. Here memory holds the vocabulary,
    one float per passage (its length: BM25 needs the mean length before any score) and one
    run. The merge is a counting sort: once every run is written, each token's document
    frequency, hence where its postings start in the final file (`indptr`), is known, and each
    run, read back in passage order, writes its postings of each token at that token's cursor.
    The files are byte for byte those of `LexicalIndex.build(texts).save(folder)`: the same
    postings in the same order (token, then passage), scored by the same float32 operations.
    """

    def __init__(self, scratch: Path, run_postings: int = RUN_POSTINGS):
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.run_postings = run_postings
        self.vocab: dict[str, int] = {}
        self.lengths = array("f")  # float32, one a passage
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
        self._counts.append(tf.astype(np.float32))
        self.lengths.append(len(words))
        self._held += len(unique)
        if self._held >= self.run_postings:
            self._spill()

    def add_all(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.add(text)

    def _spill(self) -> None:
        if not self._held:
            return
        tokens = np.concatenate(self._tokens)
        self.df = _grown(self.df, len(self.vocab) + 1)
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
        import bm25s
        from bm25s.utils import json_functions

        self._spill()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n_docs, n_vocab = len(self.lengths), len(self.vocab) + 1  # + bm25s's empty token
        df = _grown(self.df, n_vocab)
        idf = bm25_idf(df, n_docs).astype(np.float32)
        indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
        lengths = np.frombuffer(self.lengths, np.float32)
        mean = lengths.mean()
        nnz = int(indptr[-1])
        data = np.lib.format.open_memmap(folder / LEXICAL_ARRAYS["data"], mode="w+", dtype=np.float32, shape=(nnz,))
        indices = np.lib.format.open_memmap(folder / LEXICAL_ARRAYS["indices"], mode="w+", dtype=np.int32, shape=(nnz,))
        cursor = indptr[:-1].copy()
        for stem, _ in self.runs:
            tokens = np.load(f"{stem}.tokens.npy")
            order = np.argsort(tokens, kind="stable")  # by token, passages ascending within each
            tokens = tokens[order]
            docs = np.load(f"{stem}.docs.npy")[order]
            tf = np.load(f"{stem}.counts.npy")[order]
            del order
            # Where each posting goes: its token's cursor plus its rank among the run's postings
            # of that token.
            counts = np.bincount(tokens, minlength=n_vocab)
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            at = cursor[tokens] + (np.arange(len(tokens)) - first[tokens])
            cursor += counts
            del counts, first
            # The operations of `LexicalIndex.build`, in its order: the same float32 scores.
            scores = lengths[docs]
            scores *= B
            scores /= mean
            scores += 1 - B
            scores *= K1
            scores += tf
            numerator = idf[tokens]
            numerator *= tf
            np.divide(numerator, scores, out=scores)
            data[at] = scores
            indices[at] = docs
            del tokens, docs, tf, scores, numerator, at
        data.flush()
        indices.flush()
        del data, indices
        np.save(folder / LEXICAL_ARRAYS["indptr"], indptr)
        self.vocab[""] = len(self.vocab)
        params = bm25s.BM25(k1=K1, b=B, method="lucene")
        with open(folder / "vocab.index.json", "wt", encoding="utf-8") as handle:
            handle.write(json_functions.dumps(self.vocab, ensure_ascii=False))
        with open(folder / "params.index.json", "w") as handle:
            json.dump({
                "k1": params.k1, "b": params.b, "delta": params.delta, "method": params.method,
                "idf_method": params.idf_method, "dtype": params.dtype, "int_dtype": params.int_dtype,
                "num_docs": n_docs, "version": bm25s.__version__, "backend": params.backend,
            }, handle, indent=4)  # the keys and layout of bm25s's `BM25.save`
        shutil.rmtree(self.scratch, ignore_errors=True)


def _grown(counts: np.ndarray, size: int) -> np.ndarray:
    """`counts` padded with zeros to `size`."""
    return counts if len(counts) >= size else np.concatenate([counts, np.zeros(size - len(counts), counts.dtype)])

"""The index on disk: FAISS vectors, the passages, the articles and a manifest.

Layout of the index directory::

    index/
      CURRENT              name of the live version (replaced atomically)
      v-20261122T101500-3f2a/
        manifest.json      model, dimension, chunking, corpus fingerprint, versions, file sizes
        articles.jsonl     one Article per line (passage offsets point into their text)
        passages.jsonl     one Chunk (without text) per line, in vector order
        vectors.npy        the L2-normalized passage vectors, float32 (memory-mapped when loaded)
        ann/NNN.faiss      approximate search of each large language (IVF-SQ8, see qa.ann)
        lang_stats.npz     per-language mean and covariance of the vectors (see qa.rank)
        groups.npy         translation group of each passage
        bm25/              the lexical index (bm25s) over the passages
        sentences.npy      every sentence of the passages: (article number, start, end)
        sentence_vectors.npy, sentence_scales.npy   their embeddings as int8 codes and a scale
                           per sentence (see qa.ann.Int8Rows)
        sentence_stats.npz per-language statistics of the sentence vectors
      .building-*/         a build in progress; left behind only by a crash, removed next time

A build writes a complete new version beside the live one and then swaps `CURRENT`, so a crash
or Ctrl-C at any point leaves the previous index loadable, and a running server can switch to
the new version between two questions.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from qa.ann import (
    AnnReport,
    ByteExact,
    Int8Rows,
    LanguageSearch,
    ProbedIVF,
    choose_kind,
    fill,
    n_lists,
    quantize_rows,
    train_ivf,
    tune_probes,
)
from qa.config import Settings
from qa.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError, QAError
from qa.lexical import LexicalIndex
from qa.memory import map_in
from qa.models import Article, Chunk, SkippedFile
from qa.rank import LanguageStats, group_members, translation_groups

__all__ = [
    "FORMAT_VERSION",
    "BuildReport",
    "LoadedIndex",
    "Manifest",
    "build_index",
    "current_version",
    "file_stamp",
    "open_index",
    "pointer_file",
    "pointer_stamp",
    "write_index",
]

FORMAT_VERSION = 2
POINTER = "CURRENT"
MANIFEST = "manifest.json"
ARTICLES = "articles.jsonl"
PASSAGES = "passages.jsonl"
VECTORS = "vectors.npy"
ANN_DIR = "ann"
LANG_STATS = "lang_stats.npz"
GROUPS = "groups.npy"
LEXICAL = "bm25"
SENTENCES = "sentences.npy"
SENTENCE_VECTORS = "sentence_vectors.npy"
SENTENCE_SCALES = "sentence_scales.npy"
# Sentence vectors up to this size (as float32) are decoded into memory at load: per question
# they are then read for free. Larger ones stay memory-mapped int8 codes, decoded per question.
SENTENCES_IN_MEMORY = 256 << 20
SENTENCE_STATS = "sentence_stats.npz"
RECALL_QUERIES = 200  # sample questions on which a build tunes and measures each approximate index's recall
QUERY_SAMPLE = 64  # sentences per language embedded as questions (see LanguageStats.query_means)
EMBED_SLICE = 64  # passages per progress-bar step; also how often Ctrl-C is noticed
KEEP_VERSIONS = 2  # the live one and the one before, so a reader mid-switch never loses files


class Manifest(BaseModel):
    """What an index was built from, so that loading it with anything else fails loudly."""

    format_version: int
    model: dict[str, Any]
    chunking: dict[str, Any]
    corpus: dict[str, Any]
    index: dict[str, Any]
    files: dict[str, int]
    versions: dict[str, str]
    created_at: str


class BuildReport(BaseModel):
    """The summary `qa index` prints."""

    index_dir: str
    version: str
    articles: int
    passages: int
    embedded: int
    reused: int
    sentences: int
    sentences_embedded: int
    removed_articles: int
    languages: dict[str, int]
    search: list[str] = []  # how each large language is searched (approximate index, recall)
    kinds: dict[str, int] = {}  # articles per kind of input: html, warc, feed, pdf, text, ...
    encodings: dict[str, int] = {}  # articles per encoding their file was read in
    skipped: list[SkippedFile]
    seconds: float


@dataclass
class LoadedIndex:
    """A loaded index version: passages, their articles, vectors and search structures."""

    path: Path
    manifest: Manifest
    articles: dict[str, Article]
    chunks: list[Chunk]
    passage_vectors: np.ndarray  # (n, d) float32, usually memory-mapped
    ann: dict[str, Any]  # language -> approximate FAISS index over its passages (large languages)
    lang_stats: LanguageStats
    groups: np.ndarray  # (n,) translation group id of each passage
    lexical: LexicalIndex
    sentences: np.ndarray  # (m, 3) article number, start, end of each sentence
    sentence_vectors: np.ndarray | Int8Rows  # (m, d); indexing gives float32 rows
    sentence_stats: LanguageStats
    langs: np.ndarray = field(init=False)  # (n,) language of each passage
    _by_lang: LanguageSearch | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.langs = np.array([self.articles[c.doc_id].lang for c in self.chunks])
        self.lang_ids = self.lang_stats.lang_ids(self.langs)
        self.rows_by_language = {
            lang: np.flatnonzero(self.langs == lang) for lang in sorted(set(self.langs.tolist()))
        }
        self.members = group_members(self.groups)
        self._by_lang_lock = threading.Lock()
        self._link_sentences()

    def _link_sentences(self) -> None:
        """Which sentences each passage holds (passages overlap, so a sentence may be in two).

        Sentences are sorted by (article, start); a passage's sentences are those of its article
        starting inside it (two binary searches) that also end inside it. Vectorized: a million
        passages link in seconds.
        """
        doc_number = {doc_id: i for i, doc_id in enumerate(self.articles)}
        doc = np.array([doc_number[c.doc_id] for c in self.chunks], dtype=np.int64)
        start = np.array([c.start for c in self.chunks], dtype=np.int64)
        end = np.array([c.end for c in self.chunks], dtype=np.int64)
        sentences = np.asarray(self.sentences, dtype=np.int64).reshape(-1, 3)
        keys = (sentences[:, 0] << 32) + sentences[:, 1]
        order = np.argsort(keys, kind="stable")  # already sorted when written by build_index
        lo = np.searchsorted(keys[order], (doc << 32) + start, "left")
        hi = np.searchsorted(keys[order], (doc << 32) + end, "left")
        lengths = np.maximum(hi - lo, 0)
        owners = np.repeat(np.arange(len(self.chunks), dtype=np.int64), lengths)
        members = order[_ranges(lo, lengths)]
        inside = sentences[members, 2] <= end[owners]
        self.sentence_owner = owners[inside]  # passage row of each link, ascending
        self.sentence_member = members[inside]  # sentence row of each link
        # Passage p's links are [link_start[p], link_start[p + 1]): two lookups per passage,
        # where binary searches in the (millions long) owner array cost 0.2 ms a question.
        self.link_start = np.concatenate(
            [[0], np.cumsum(np.bincount(self.sentence_owner, minlength=len(self.chunks)))]
        ).astype(np.int64)
        self.sentence_lang_ids = self.sentence_stats.lang_ids(self.langs[self.sentence_owner])
        self.row_of = {(c.doc_id, c.start): row for row, c in enumerate(self.chunks)}

    def sentence_links(self, rows: np.ndarray) -> np.ndarray:
        """Positions (into sentence_owner / sentence_member) of the sentences of passages `rows`."""
        return self.sentence_runs(rows)[0]

    def sentence_runs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`sentence_links(rows)` and, for each link, the position in `rows` of its passage.

        Links are stored in passage order, so each passage's sentences are one contiguous run
        and its position repeats over the run (no look-up in the millions-long owner array).
        """
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.link_start[rows]
        lengths = self.link_start[rows + 1] - starts
        return _ranges(starts, lengths), np.repeat(np.arange(len(rows)), lengths)

    def map_in(self) -> int:
        """Read the memory-mapped passage and sentence vectors into memory now (`qa.memory`), so
        that no question pays for the first read of their pages; returns the bytes mapped in."""
        sentences = self.sentence_vectors
        codes = sentences.codes if isinstance(sentences, Int8Rows) else sentences
        return map_in(self.passage_vectors) + map_in(codes)

    def sentences_of(self, row: int) -> np.ndarray:
        """Sentence rows of passage `row`, in text order."""
        return self.sentence_member[self.sentence_links(np.array([row]))]

    @property
    def version(self) -> str:
        return self.path.name

    def group_members(self, row: int) -> list[int]:
        """Rows of every passage in the translation group of passage `row` (itself included)."""
        return self.members.get(int(self.groups[row]), [int(row)])

    def search_by_language(self, query: np.ndarray, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The k best passages of each language: {lang: (scores, rows)}."""
        with self._by_lang_lock:
            if self._by_lang is None:
                # One search per language, so that every language contributes candidates however
                # far the model's language bias pushes it down in a single ranking: the stored
                # approximate one for large languages, an exact one built now for the others.
                self._by_lang = LanguageSearch(
                    {
                        lang: (self.ann.get(lang) or ByteExact(self.passage_vectors[rows]), rows)
                        for lang, rows in self.rows_by_language.items()
                    }
                )
        # (Measured at 1M passages and not kept: spreading the languages over two threads, or
        # running this search on a second thread beside the lexical scoring, was no faster: the
        # 8-bit scan is compute-bound (~30 ns a code) and the two cores slow each other down.)
        return self._by_lang.search(query, k)

    def __len__(self) -> int:
        return len(self.chunks)

    def vectors(self) -> np.ndarray:
        """All passage vectors, in passage order (an in-memory copy)."""
        return np.array(self.passage_vectors, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product search over every passage, whatever its language (the bare
        model's ranking, for comparisons); returns (scores, passage rows), best first."""
        k = min(k, len(self.chunks))
        scores = np.atleast_2d(np.asarray(queries, np.float32)) @ np.asarray(self.passage_vectors).T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, top, axis=1), top


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The integers of the ranges [start, start + length), concatenated, without a Python loop."""
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(int(lengths.sum()), dtype=np.int64)


# --------------------------------------------------------------------------- loading


def pointer_stamp(index_dir: Path) -> tuple[int, ...] | None:
    """Identity of the `CURRENT` pointer file (inode, size, modification time), None when absent.

    A build replaces the pointer by renaming a new file over it, so the stamp changes exactly
    when the live version may have: one stat per question instead of reading the file.
    """
    return file_stamp(pointer_file(index_dir))


def pointer_file(index_dir: Path) -> str:
    """Path of the `CURRENT` pointer file, as a string (see `file_stamp`)."""
    return os.fspath(index_dir / POINTER)


def file_stamp(path: str) -> tuple[int, ...] | None:
    """`pointer_stamp` of the pointer file at `path`.

    Checked on every question: a path string kept by the caller spares the 0.05 ms that
    joining a `Path` costs with the CPU cache cold (0.02 ms left, the stat itself).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def current_version(index_dir: Path) -> str | None:
    """Name of the live version directory, or None when no index has been built."""
    try:
        name = (index_dir / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def _read_manifest(version_dir: Path) -> Manifest:
    path = version_dir / MANIFEST
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing. Rebuild the index with `qa index`.") from None
    except ValidationError as exc:
        raise IndexCorruptError(
            f"{path} is not a valid manifest ({exc.error_count()} problems, first: "
            f"{exc.errors()[0]['msg']}). Rebuild the index with `qa index`."
        ) from None


def _read_jsonl(path: Path, model: type[BaseModel]) -> list:
    items = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                items.append(model.model_validate_json(line))
            except ValidationError:
                raise IndexCorruptError(
                    f"{path} line {number} is not a valid record. Rebuild the index with `qa index`."
                ) from None
    return items


def _check_files(version_dir: Path, manifest: Manifest) -> None:
    for name, size in manifest.files.items():
        path = version_dir / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing. Rebuild the index with `qa index`.")
        actual = path.stat().st_size
        if actual != size:
            raise IndexCorruptError(
                f"{path} has {actual} bytes but the manifest says {size}: the file is truncated or "
                "was changed. Rebuild the index with `qa index`."
            )


def check_model(manifest: Manifest, model: dict[str, Any], index_dir: Path) -> None:
    """Refuse an index whose vectors came from another model than the configured one."""
    built = manifest.model
    if built.get("fingerprint") != model["fingerprint"] or built.get("dim") != model["dim"]:
        raise IndexMismatchError(
            f"The index in {index_dir} was built with model {built.get('name')!r} "
            f"(fingerprint {built.get('fingerprint')}, dimension {built.get('dim')}), but the "
            f"configured model is {model['name']!r} (fingerprint {model['fingerprint']}, dimension "
            f"{model['dim']}). Vectors of different models cannot be compared: rebuild the index "
            f"with `qa index`, or set QA_MODEL={built.get('name')!r} to use the model it was built with."
        )


def open_index(index_dir: Path, version: str | None = None) -> LoadedIndex:
    """Load the live (or the named) index version, checking it against its manifest."""
    import faiss

    index_dir = Path(index_dir)
    version = version or current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(
            f"No index in {index_dir}. Build one with `qa index` (it reads corpus/ by default)."
        )
    version_dir = index_dir / version
    if not version_dir.is_dir():
        raise IndexCorruptError(
            f"{index_dir / POINTER} names {version!r}, but {version_dir} does not exist. "
            "Rebuild the index with `qa index`."
        )
    manifest = _read_manifest(version_dir)
    if manifest.format_version != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{version_dir} has index format {manifest.format_version}; this version of qa reads "
            f"format {FORMAT_VERSION}. Rebuild the index with `qa index`."
        )
    _check_files(version_dir, manifest)
    articles = {a.doc_id: a for a in _read_jsonl(version_dir / ARTICLES, Article)}
    chunks = _read_jsonl(version_dir / PASSAGES, _StoredChunk)
    reading = VECTORS  # the file being read, named in the error
    try:
        # Memory-mapped: a question reads only its candidates' rows, so a million passages
        # do not have to fit in memory as float32.
        # (A plain ndarray view of the map: numpy's memmap subclass costs ~0.1 ms per indexing.)
        vectors = np.asarray(np.load(version_dir / VECTORS, mmap_mode="r"))
        if vectors.dtype != np.float32 or vectors.shape != (len(chunks), manifest.model.get("dim")):
            raise ValueError(
                f"holds {vectors.dtype} vectors of shape {vectors.shape}, but {PASSAGES} lists "
                f"{len(chunks)} passages and the manifest says dimension {manifest.model.get('dim')}"
            )
        ann = {}
        for lang, spec in manifest.index.get("languages", {}).items():
            if spec.get("file"):
                reading = spec["file"]
                ann[lang] = ProbedIVF(faiss.read_index(str(version_dir / spec["file"])), int(spec["nprobe"]), spec.get("probe_gap"))
                if ann[lang].ntotal != spec["passages"]:
                    raise ValueError(f"holds {ann[lang].ntotal} vectors, the manifest says {spec['passages']}")
        reading = LANG_STATS
        with np.load(version_dir / LANG_STATS) as arrays:
            lang_stats = LanguageStats.from_arrays(arrays)
        reading = GROUPS
        groups = np.load(version_dir / GROUPS)
        reading = LEXICAL + "/"
        lexical = LexicalIndex.load(version_dir / LEXICAL)
        reading = SENTENCES
        sentences = np.load(version_dir / SENTENCES)
        reading = SENTENCE_VECTORS
        codes = np.asarray(np.load(version_dir / SENTENCE_VECTORS, mmap_mode="r"))
        if codes.dtype != np.int8 or codes.shape != (len(sentences), manifest.model.get("dim")):
            raise ValueError(f"holds {codes.dtype} vectors of shape {codes.shape} for {len(sentences)} sentences")
        reading = SENTENCE_SCALES
        scales = np.load(version_dir / SENTENCE_SCALES)
        if scales.shape != (len(sentences),):
            raise ValueError(f"holds {scales.shape} scales for {len(sentences)} sentences")
        sentence_vectors = Int8Rows(codes, scales)
        if codes.size * 4 <= SENTENCES_IN_MEMORY:
            sentence_vectors = sentence_vectors[:]
        reading = SENTENCE_STATS
        with np.load(version_dir / SENTENCE_STATS) as arrays:
            sentence_stats = LanguageStats.from_arrays(arrays)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        problem = " ".join(str(exc).split())[:200]
        raise IndexCorruptError(
            f"{version_dir / reading} cannot be read ({problem}). Rebuild the index with `qa index`."
        ) from None
    if len(groups) != len(chunks):
        raise IndexCorruptError(
            f"{version_dir / GROUPS} has {len(groups)} entries for {len(chunks)} passages. "
            "Rebuild the index with `qa index`."
        )
    missing = {c.doc_id for c in chunks} - articles.keys()
    if missing:
        raise IndexCorruptError(
            f"{version_dir / PASSAGES} refers to {len(missing)} article(s) missing from "
            f"{ARTICLES}. Rebuild the index with `qa index`."
        )
    return LoadedIndex(
        path=version_dir,
        manifest=manifest,
        articles=articles,
        chunks=[c.to_chunk(articles[c.doc_id]) for c in chunks],
        passage_vectors=vectors,
        ann=ann,
        lang_stats=lang_stats,
        groups=groups,
        lexical=lexical,
        sentences=sentences,
        sentence_vectors=sentence_vectors,
        sentence_stats=sentence_stats,
    )


class _StoredChunk(BaseModel):
    """A chunk as stored on disk: offsets only, the text lives once, in its article."""

    doc_id: str
    chunk_id: int
    start: int
    end: int
    n_tokens: int

    def to_chunk(self, article: Article) -> Chunk:
        return Chunk(
            doc_id=self.doc_id,
            chunk_id=self.chunk_id,
            text=article.text[self.start : self.end],
            start=self.start,
            end=self.end,
            n_tokens=self.n_tokens,
        )


# --------------------------------------------------------------------------- building


@contextlib.contextmanager
def _build_lock(index_dir: Path) -> Iterator[None]:
    # One build at a time per index directory; a second one fails at once instead of racing.
    handle = (index_dir / ".lock").open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QAError(
                f"Another `qa index` is already building {index_dir}. Wait for it to finish."
            ) from None
        yield
    finally:
        handle.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes | np.ndarray) -> None:
    """Write bytes, or an array as .npy, and make it durable before the version goes live."""
    with path.open("wb") as handle:
        if isinstance(data, np.ndarray):
            np.save(handle, data)
        else:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _write_errors(building: Path) -> Iterator[None]:
    # A full disk or a read-only folder: say so in one line, and drop the half-written version
    # (the live one is untouched until the final swap of CURRENT).
    try:
        yield
    except OSError as exc:
        shutil.rmtree(building, ignore_errors=True)
        raise QAError(
            f"Writing the new index failed at {exc.filename or building}: {exc.strerror or exc}. "
            "Free some disk space (or fix the folder's permissions) and run `qa index` again; "
            "the previous index is unchanged."
        ) from None


def _write_jsonl(path: Path, items: list[BaseModel]) -> None:
    _write_file(path, b"".join(item.model_dump_json().encode() + b"\n" for item in items))


def _versions() -> dict[str, str]:
    import faiss
    import sentence_transformers
    import torch

    import qa

    return {
        "qa": qa.__version__,
        "faiss": faiss.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def corpus_fingerprint(articles: list[Article]) -> str:
    """A hash of the set of articles (their content ids), independent of file order."""
    digest = hashlib.sha256()
    for doc_id in sorted(a.doc_id for a in articles):
        digest.update(doc_id.encode())
    return digest.hexdigest()[:20]


def _reusable(index_dir: Path, model: dict[str, Any], chunking: dict[str, Any]) -> LoadedIndex | None:
    """The previous index, if its passages and vectors can be reused for an incremental build."""
    try:
        previous = open_index(index_dir)
    except IndexNotFoundError:
        return None
    except QAError as exc:
        print(f"Previous index not reusable, rebuilding everything: {exc}", file=sys.stderr)
        return None
    if previous.manifest.model.get("fingerprint") != model["fingerprint"]:
        print("The model changed since the last build: embedding everything again.", file=sys.stderr)
        return None
    if previous.manifest.chunking != chunking:
        print("Chunking settings changed since the last build: embedding everything again.", file=sys.stderr)
        return None
    return previous


def _embed_with_progress(embedder, texts: list[str], progress: bool, what: str = "Passages") -> np.ndarray:
    from tqdm import tqdm

    # Slices of similar lengths: a batch costs its longest text times its size, and sentences in
    # corpus order wasted 60% of the work on padding (ordered by length, about 2x faster).
    order = np.argsort([len(t) for t in texts], kind="stable")
    texts = [texts[i] for i in order]
    parts = []
    with tqdm(total=len(texts), desc=f"Embedding {what.lower()}", unit="text", disable=not progress, file=sys.stderr) as bar:
        step = getattr(embedder, "slice_size", EMBED_SLICE)  # a Ray embedder wants work for every worker
        for start in range(0, len(texts), step):
            batch = texts[start : start + step]
            parts.append(embedder.encode_documents(batch))
            bar.update(len(batch))
    if not parts:
        return np.zeros((0, embedder.dim), np.float32)
    stacked = np.concatenate(parts)
    vectors = np.empty_like(stacked)
    vectors[order] = stacked  # back in the order of `texts`
    return vectors


def _sentences(articles, chunks, previous, embedder, progress):
    """Every sentence of every passage, with its vector: reused from `previous` when its
    article is unchanged, embedded otherwise. Returns (table, vectors, number embedded)."""
    from qa.chunk import split_sentences

    number = {a.doc_id: i for i, a in enumerate(articles)}
    spans: dict[int, set[tuple[int, int]]] = {}
    for chunk in chunks:
        found = spans.setdefault(number[chunk.doc_id], set())
        found.update((chunk.start + a, chunk.start + b) for a, b in split_sentences(chunk.text))
    table = np.array(
        [(doc, a, b) for doc in sorted(spans) for a, b in sorted(spans[doc])], dtype=np.int64
    ).reshape(-1, 3)
    old: dict[tuple[str, int, int], int] = {}
    if previous is not None:
        old_ids = list(previous.articles)
        for row, (doc, a, b) in enumerate(previous.sentences.tolist()):
            old[(old_ids[doc], a, b)] = row
    dim = embedder.describe()["dim"]
    vectors = np.zeros((len(table), dim), np.float32)
    hits = [old.get((articles[doc].doc_id, a, b), -1) for doc, a, b in table.tolist()]
    missing = [row for row, hit in enumerate(hits) if hit < 0]
    found = [row for row, hit in enumerate(hits) if hit >= 0]
    if found:
        vectors[found] = previous.sentence_vectors[[hits[row] for row in found]]
    texts = [articles[doc].text[a:b] for doc, a, b in table[missing].tolist()]
    if missing:
        vectors[missing] = _embed_with_progress(embedder, texts, progress, "Sentences")
    return table, vectors, len(missing)


def question_sample(embedder, texts: list[str], langs: list[str]) -> dict[str, np.ndarray]:
    """Per language, a sample of its passages' sentences embedded as questions (the corpus's
    own stand-in for the questions it will be asked; no real questions are needed)."""
    from qa.chunk import split_sentences

    by_lang: dict[str, list[str]] = {}
    for text, lang in zip(texts, langs):
        by_lang.setdefault(lang, []).extend(text[a:b] for a, b in split_sentences(text) if b - a >= 20)
    sample = {}
    for lang, sentences in sorted(by_lang.items()):
        if len(sentences) < 8:
            continue  # too few to estimate a direction; questions in this language stay as they are
        # Evenly spaced, so the sample is deterministic and spans the whole corpus.
        picks = np.linspace(0, len(sentences) - 1, min(QUERY_SAMPLE, len(sentences))).astype(int)
        sample[lang] = embedder.encode_queries([sentences[i] for i in picks])
    return sample


def sample_means(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per language, the mean of its question sample (see LanguageStats.query_means)."""
    return {lang: vectors.mean(axis=0) for lang, vectors in sample.items()}


def query_means(embedder, texts: list[str], langs: list[str]) -> dict[str, np.ndarray]:
    """Per language, the mean of `question_sample` (see LanguageStats.query_means)."""
    return sample_means(question_sample(embedder, texts, langs))


def tuning_queries(sample: dict[str, np.ndarray], means: dict[str, np.ndarray], centering: float) -> np.ndarray:
    """Question-like vectors of every language, centred as the engine centres questions (`means`
    from `sample_means`): what an approximate index's nprobe is tuned on (it should be tuned for
    the questions it will serve; passage-like vectors are farther from the data and ask for
    several times more lists)."""
    if not sample:
        return np.zeros((0, 0), np.float32)
    return _sample_rows(np.concatenate([vectors - centering * means[lang] for lang, vectors in sample.items()]))


def _sample_rows(vectors: np.ndarray, n: int = RECALL_QUERIES) -> np.ndarray:
    """At most n rows of `vectors`, drawn at random (seeded: builds are reproducible), in order, as float32."""
    picks = np.random.default_rng(0).choice(len(vectors), min(n, len(vectors)), replace=False)
    return np.ascontiguousarray(vectors[np.sort(picks)], dtype=np.float32)


def _new_version_name() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"v-{stamp}-{uuid.uuid4().hex[:6]}"


def _remove_stale(index_dir: Path, keep: set[str]) -> None:
    # Leftovers of crashed builds, and versions older than the last KEEP_VERSIONS.
    for path in index_dir.glob(".building-*"):
        shutil.rmtree(path, ignore_errors=True)
    versions = sorted(p for p in index_dir.glob("v-*") if p.is_dir())
    for path in versions[:-KEEP_VERSIONS]:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _swap_pointer(index_dir: Path, version: str) -> None:
    tmp = index_dir / f".{POINTER}.{uuid.uuid4().hex[:6]}"
    _write_file(tmp, version.encode() + b"\n")
    os.replace(tmp, index_dir / POINTER)
    _fsync_dir(index_dir)


def build_index(
    corpus_dir: Path | str | None = None,
    *,
    settings: Settings | None = None,
    progress: bool = False,
    embedder=None,
) -> BuildReport:
    """Build or update the index from `corpus_dir`, embedding only new or changed articles.

    `embedder` defaults to the configured model (`qa.embed.get_embedder`).
    """
    from qa.chunk import chunk_article, chunking_params
    from qa.embed import get_embedder
    from qa.ingest import load_corpus
    from qa.readers import input_kind

    settings = settings or Settings()
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else settings.corpus_dir
    index_dir = settings.index_dir
    started = time.perf_counter()
    if not corpus_dir.is_dir():
        raise QAError(f"Corpus folder {corpus_dir} does not exist. Pass the folder of your articles.")
    index_dir.mkdir(parents=True, exist_ok=True)

    with _build_lock(index_dir):
        _remove_stale(index_dir, keep={current_version(index_dir) or ""})
        articles, skipped = load_corpus(corpus_dir)
        if not articles:
            raise QAError(
                f"No readable articles in {corpus_dir} ({len(skipped)} file(s) skipped). Add .txt, "
                ".md, .html or .jsonl files; the existing index was left as it was."
            )
        embedder = embedder or get_embedder(settings)
        model = embedder.describe()
        budget = min(settings.chunk_tokens, embedder.max_tokens)
        chunking = chunking_params(budget, settings.chunk_overlap)
        previous = _reusable(index_dir, model, chunking)
        # Everything new goes into a fresh folder; the live version is not touched until the swap.
        building = _start_version(index_dir)

        old_rows: dict[str, list[int]] = {}
        if previous is not None:
            for row, chunk in enumerate(previous.chunks):
                old_rows.setdefault(chunk.doc_id, []).append(row)

        chunks: list[Chunk] = []
        reuse_rows: list[int] = []  # per new chunk: row in the old index, or -1 to embed
        for article in articles:
            rows = old_rows.get(article.doc_id)
            if rows:
                chunks.extend(previous.chunks[r] for r in rows)
                reuse_rows.extend(rows)
            else:
                new = chunk_article(article, embedder.count_tokens, budget, settings.chunk_overlap)
                chunks.extend(new)
                reuse_rows.extend([-1] * len(new))

        to_embed = [i for i, row in enumerate(reuse_rows) if row < 0]
        fresh = _embed_with_progress(embedder, [chunks[i].text for i in to_embed], progress)
        vectors = np.zeros((len(chunks), model["dim"]), np.float32)
        if to_embed:
            vectors[to_embed] = fresh
        reused = [i for i, row in enumerate(reuse_rows) if row >= 0]
        if reused:
            vectors[reused] = previous.passage_vectors[[reuse_rows[i] for i in reused]]

        sentences, sentence_vectors, sentences_embedded = _sentences(
            articles, chunks, previous, embedder, progress
        )
        lang_of = {a.doc_id: a.lang for a in articles}
        passage_langs = [lang_of[c.doc_id] for c in chunks]
        sample = question_sample(embedder, [c.text for c in chunks], passage_langs)
        means = sample_means(sample)
        version, search = _write_version(
            building, articles, chunks, vectors, sentences, sentence_vectors,
            settings=settings, model=model, chunking=chunking, query_means=means, previous=previous,
            recall_queries=tuning_queries(sample, means, settings.query_centering),
        )

    removed = len(set(old_rows) - {a.doc_id for a in articles})
    languages = Counter(a.lang for a in articles)
    return BuildReport(
        index_dir=str(index_dir),
        version=version,
        articles=len(articles),
        passages=len(chunks),
        embedded=len(to_embed),
        reused=len(reused),
        sentences=len(sentences),
        sentences_embedded=sentences_embedded,
        removed_articles=removed,
        languages=dict(sorted(languages.items())),
        search=[r.describe(lang) for lang, r in search.items() if r.recall_at_10 is not None],
        kinds=dict(Counter(input_kind(a.source) for a in articles).most_common()),
        encodings=dict(Counter(a.encoding or "n/a" for a in articles).most_common()),  # n/a: PDF
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 2),
    )


def write_index(
    index_dir: Path,
    articles: list[Article],
    chunks: list[Chunk],
    vectors: np.ndarray,
    sentences: np.ndarray,
    sentence_vectors: np.ndarray,
    *,
    settings: Settings,
    model: dict[str, Any],
    chunking: dict[str, Any],
    query_means: dict[str, np.ndarray],
    groups: np.ndarray | None = None,
    recall_queries: np.ndarray | None = None,
) -> tuple[str, dict[str, AnnReport]]:
    """Write already-embedded passages as a new live index version (for vectors computed
    elsewhere: a benchmark's synthetic corpus, another embedding pipeline). `groups` defaults
    to the translation groups found from the vectors; `recall_queries` (question vectors,
    centred as the engine centres them) to a sample of the sentence vectors. Returns the version
    and how each language is searched."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(index_dir):
        _remove_stale(index_dir, keep={current_version(index_dir) or ""})
        return _write_version(
            _start_version(index_dir), articles, chunks, vectors, sentences, sentence_vectors, settings=settings,
            model=model, chunking=chunking, query_means=query_means, previous=None, groups=groups,
            recall_queries=recall_queries,
        )


def _vector_search(
    vectors: np.ndarray, passage_langs: np.ndarray, queries: np.ndarray,
    settings: Settings, previous: LoadedIndex | None,
) -> dict[str, tuple[AnnReport, Any]]:
    """Per language: how it is searched and, for large languages, its filled IVF index.

    An incremental build reuses the previous IVF lists of a language (emptied and refilled:
    only the assignment of vectors to lists is redone) unless the language has more than
    doubled or halved since they were trained, in which case they are retrained and the build
    says so. nprobe and the probe gap (see `qa.ann.ProbedIVF`) are re-tuned every build.
    """
    # `queries` are of every language: a question in one language searches every language's
    # index (the cross-language case is the hard one).
    out: dict[str, tuple[AnnReport, Any]] = {}
    for position, lang in enumerate(sorted(set(passage_langs.tolist()))):
        rows = np.flatnonzero(passage_langs == lang)
        kind = choose_kind(len(rows), settings.index_type, settings.ann_min_passages)
        if kind == "flat" or not len(queries):
            out[lang] = (AnnReport("flat", len(rows)), None)
            continue
        old_spec = previous.manifest.index.get("languages", {}).get(lang, {}) if previous else {}
        old_index = previous.ann[lang].index if previous and lang in previous.ann else None
        trained_on = int(old_spec.get("trained_on") or 0)
        if old_index is not None and 0.5 <= len(rows) / max(trained_on, 1) <= 2:
            import faiss

            index = faiss.clone_index(old_index)
            index.reset()
        else:
            if old_index is not None:
                print(
                    f"{lang}: {len(rows):,} passages, the IVF lists were trained on {trained_on:,}: "
                    "retraining them.",
                    file=sys.stderr,
                )
            trained_on = len(rows)
            index = train_ivf(vectors[rows], n_lists(len(rows)))
        fill(index, vectors[rows])
        nprobe, gap, recall = tune_probes(index, vectors[rows], queries, settings.ann_target_recall, settings.candidates)
        if recall < settings.ann_target_recall and settings.index_type == "auto":
            # Even a quarter of the lists misses the target (small or structureless languages):
            # exact search, about as fast there, is the better index.
            out[lang] = (AnnReport("flat", len(rows), nlist=int(index.nlist), nprobe=nprobe, recall_at_10=round(recall, 4),
                                   recall_queries=len(queries), target_recall=settings.ann_target_recall), None)
            continue
        report = AnnReport(
            "ivf_sq8", len(rows), nlist=int(index.nlist), nprobe=nprobe, trained_on=trained_on,
            recall_at_10=round(recall, 4), recall_queries=len(queries), target_recall=settings.ann_target_recall,
            file=f"{ANN_DIR}/{position:03d}.faiss", probe_gap=gap,
        )
        out[lang] = (report, index)
    return out


def _start_version(index_dir: Path) -> Path:
    """A new, empty `.building-<version>` folder (renamed to `<version>` when complete)."""
    building = index_dir / f".building-{_new_version_name()}"
    building.mkdir()
    return building


def _write_version(
    building: Path,
    articles: list[Article],
    chunks: list[Chunk],
    vectors: np.ndarray,
    sentences: np.ndarray,
    sentence_vectors: np.ndarray,
    *,
    settings: Settings,
    model: dict[str, Any],
    chunking: dict[str, Any],
    query_means: dict[str, np.ndarray],
    previous: LoadedIndex | None,
    groups: np.ndarray | None = None,
    recall_queries: np.ndarray | None = None,
) -> tuple[str, dict[str, AnnReport]]:
    """Write a complete new version into `building`, then make it live (the caller holds the
    build lock). An approximate index's recall is tuned on `recall_queries` (see
    `tuning_queries`), else on a sample of the sentence vectors."""
    import faiss

    index_dir = building.parent
    version = building.name.removeprefix(".building-")
    lang_of = {a.doc_id: a.lang for a in articles}
    passage_langs = np.array([lang_of[c.doc_id] for c in chunks])
    sentence_langs = np.array([articles[doc].lang for doc in sentences[:, 0].tolist()]) if len(sentences) else np.zeros(0, str)
    with _write_errors(building):
        _write_jsonl(building / ARTICLES, articles)
        _write_jsonl(building / PASSAGES, [_StoredChunk(**c.model_dump(exclude={"text"})) for c in chunks])
        _write_file(building / VECTORS, np.ascontiguousarray(vectors, dtype=np.float32))
        if recall_queries is None or not len(recall_queries):
            recall_queries = _sample_rows(sentence_vectors)
        search = _vector_search(vectors, passage_langs, recall_queries, settings, previous)
        for report, index in search.values():
            if index is not None:
                (building / ANN_DIR).mkdir(exist_ok=True)
                _write_file(building / report.file, faiss.serialize_index(index).tobytes())
        stats = LanguageStats.fit(vectors, passage_langs)
        stats.query_means = query_means
        with (building / LANG_STATS).open("wb") as handle:
            np.savez(handle, **stats.to_arrays())
        if groups is None:
            centered = stats.centered(vectors, stats.lang_ids(passage_langs))
            groups = translation_groups(centered, passage_langs, settings.group_threshold)
        _write_file(building / GROUPS, np.asarray(groups, np.int64))
        LexicalIndex.build([c.text for c in chunks]).save(building / LEXICAL)
        _write_file(building / SENTENCES, np.asarray(sentences, np.int64))
        codes, scales = quantize_rows(sentence_vectors)
        _write_file(building / SENTENCE_VECTORS, codes)
        _write_file(building / SENTENCE_SCALES, scales)
        del codes
        with (building / SENTENCE_STATS).open("wb") as handle:
            np.savez(handle, **LanguageStats.fit(sentence_vectors, sentence_langs).to_arrays())
        languages = Counter(a.lang for a in articles)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            model=model,
            chunking=chunking,
            corpus={
                "fingerprint": corpus_fingerprint(articles),
                "articles": len(articles),
                "passages": len(chunks),
                "languages": dict(sorted(languages.items())),
            },
            index={
                "type": "per_language",
                "metric": "inner_product",
                "index_type": settings.index_type,
                "ann_min_passages": settings.ann_min_passages,
                "ntotal": len(chunks),
                "languages": {lang: asdict(report) for lang, (report, _) in search.items()},
            },
            files={
                path.relative_to(building).as_posix(): path.stat().st_size
                for path in sorted(building.rglob("*"))
                if path.is_file()
            },
            versions=_versions(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        _write_file(building / MANIFEST, manifest.model_dump_json(indent=2).encode())
        for sub in [building / ANN_DIR, building / LEXICAL]:
            if sub.is_dir():
                _fsync_dir(sub)
        _fsync_dir(building)
        os.rename(building, index_dir / version)
        _swap_pointer(index_dir, version)
        _remove_stale(index_dir, keep={version})
    return version, {lang: report for lang, (report, _) in search.items()}

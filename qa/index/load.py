"""A loaded index version: what serving and answering read, behind a few verbs.

`open_index` checks a version against its manifest (`qa.index.verify`) and returns an `Index`:
search per language (`search_by_language`, `search_language`), fetch by row (`passage`,
`article`, `sentences_of`, `group_members`), and the statistics the ranking standardizes with
(`lang_stats`, `sentence_stats`). `IndexBackend` is that contract written down, for another
store (on-disk segments, PostgreSQL) to satisfy under the same ranking (`qa.rank.fuse`).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from qa.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError
from qa.index.ann import ByteExact, Int8Rows, LanguageSearch, ProbedIVF
from qa.index.format import (
    GROUPS,
    LANG_STATS,
    LEXICAL,
    POINTER,
    SENTENCE_SCALES,
    SENTENCE_STATS,
    SENTENCE_VECTORS,
    SENTENCES,
    VECTOR_SCALES,
    VECTORS,
    VERSION_NAME,
    Manifest,
    current_version,
    read_manifest,
)
from qa.index.memory import map_in
from qa.index.store import (
    ARTICLE_RECORDS,
    GROUP_IDS,
    GROUP_ROWS,
    GROUP_STARTS,
    LINK_STARTS,
    SENTENCE_LANGS,
    SENTENCE_MEMBERS,
    STORE_DIR,
    STORE_FILES,
    ArticleView,
    ChunkView,
    GroupMembers,
    LangColumn,
    PassageStore,
    RowLookup,
    ranges,
    store_mismatch,
)
from qa.index.verify import OpenFile, check_files, close_files, map_npy
from qa.index.watch import FileWatch, watch_files
from qa.language_stats import recode_langs
from qa.lexical import LEXICAL_ARRAYS, LexicalIndex
from qa.models import Article, Chunk
from qa.rank import LanguageStats

__all__ = ["MAPPED_FILES", "Index", "IndexBackend", "check_model", "load_version", "open_index"]

# Sentence vectors up to this size (as float32) are decoded into memory at load: per question
# they are then read for free. Larger ones stay memory-mapped int8 codes, decoded per question.
SENTENCES_IN_MEMORY = 256 << 20
# The files read in place (memory-mapped, or read with pread) rather than loaded: kept open from
# their verification on, and watched before every question (`Index.damage`).
MAPPED_FILES = frozenset(
    {VECTORS, VECTOR_SCALES, SENTENCE_VECTORS, SENTENCE_SCALES, SENTENCES, GROUPS, *STORE_FILES}
    | {f"{LEXICAL}/{file}" for file in LEXICAL_ARRAYS.values()}
)


class IndexBackend(Protocol):
    """What the ranking (`qa.rank.fuse`, `qa.retrieval.Engine`) asks of a store of passages.

    The embedded `Index` satisfies it; a store of on-disk segments or a PostgreSQL table with
    pgvector would answer the same few plain questions, so that the ranking never forks per
    backend. Rows are dense integers in `[0, len(index))`, stable for one loaded version.
    """

    lang_stats: LanguageStats  # per-language statistics of the passage vectors
    sentence_stats: LanguageStats  # and of the sentence vectors
    # The arrays the engine's vectorized scoring reads (`qa.retrieval.Engine.score`, `search`):
    lang_ids: np.ndarray  # (n,) each passage's language, as an index into lang_stats
    langs: Any  # (n,) each passage's language code (an array, or reads like one)
    groups: np.ndarray  # (n,) translation group of each passage
    members: Any  # translation group -> its rows, for groups of two or more (`.get(group, default)`)
    sentence_member: np.ndarray  # sentence row of each link (see `sentence_runs`)
    sentence_lang_ids: np.ndarray  # each link's passage language, as an index into sentence_stats
    lexical: Any  # BM25: `sparse_scores(question, budget)` -> (rows sorted, scores); `idf(tokens)`
    # True: `search_by_language` applies `filters` itself (a database's WHERE clauses); False:
    # the engine passes only `mask` (the same filters as a passage mask, `qa.filters.passage_mask`).
    searches_filters: bool

    @property
    def languages(self) -> list[str]: ...

    def search_by_language(
        self, query: np.ndarray, k: int, mask: np.ndarray | None = None, filters: Any = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]: ...

    def search_language(self, lang: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def sentence_runs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def sentence_vectors_at(self, rows: np.ndarray) -> np.ndarray: ...

    def passage(self, row: int) -> Chunk: ...

    def article(self, doc_id: str) -> Article: ...

    def passage_vectors_at(self, rows: np.ndarray) -> np.ndarray: ...

    def sentences_of(self, row: int) -> np.ndarray: ...

    def sentence_span(self, sentence: int) -> tuple[str, int, int]: ...

    def group_members(self, row: int) -> list[int]: ...

    def __len__(self) -> int: ...


@dataclass
class Index:
    """A loaded index version: passages, their articles, vectors and search structures.

    Read it through its verbs (`IndexBackend`). The arrays behind them stay public for the
    vectorized scoring of `qa.retrieval.Engine` (`lang_ids`, `sentence_runs`, `sentence_member`,
    `sentence_vectors`, `sentence_lang_ids`, `lexical`) and for `qa.answer`'s evidence (`row_of`,
    `sentences`, `sentence_vectors`, `articles`), until those are written against the verbs.

    Nothing here is per passage on the heap: the passages and articles are read from the
    version's store (`qa.index.store`) for the rows asked for, and the per-passage arrays
    (languages as one-byte codes, groups, sentence links, BM25 postings) are memory-mapped.
    `articles`, `chunks`, `row_of`, `langs` and `members` read like the dicts, lists and
    arrays they replace.
    """

    path: Path
    manifest: Manifest
    store: PassageStore
    passage_vectors: Int8Rows  # (n, d) int8 codes and scales, memory-mapped; indexing gives float32 rows
    ann: dict[str, Any]  # language -> approximate FAISS index over its passages (large languages)
    lang_stats: LanguageStats
    groups: np.ndarray  # (n,) translation group id of each passage
    lexical: LexicalIndex
    sentences: np.ndarray  # (m, 3) article number, start, end of each sentence
    sentence_vectors: np.ndarray | Int8Rows  # (m, d); indexing gives float32 rows
    sentence_stats: LanguageStats
    members: GroupMembers  # translation group -> its rows, for groups of two or more
    sentence_member: np.ndarray  # sentence row of each link (see `sentence_runs`)
    link_start: np.ndarray  # (n + 1,) passage p's links are [link_start[p], link_start[p + 1])
    sentence_langs: np.ndarray  # (links,) language code of each link's passage
    # The memory-mapped files (by manifest name), kept open as verified at load: see `damage`.
    mapped: dict[str, OpenFile] = field(default_factory=dict)
    _by_lang: LanguageSearch | None = field(init=False, default=None)
    _watch: FileWatch | None = field(init=False, default=None)  # see `damage`
    searches_filters = False  # (IndexBackend) filters reach `search_by_language` as a mask only

    def __post_init__(self) -> None:
        store = self.store
        self.articles = ArticleView(store)
        self.chunks = ChunkView(store)
        self.row_of = RowLookup(store)
        self.langs = LangColumn(store.lang_codes, store.langs)
        self.lang_ids = recode_langs(store.lang_codes, store.langs, self.lang_stats)
        self.sentence_lang_ids = recode_langs(self.sentence_langs, store.langs, self.sentence_stats)
        codes = np.asarray(store.lang_codes)
        self.rows_by_language = {
            lang: np.flatnonzero(codes == code) for code, lang in enumerate(store.langs) if (codes == code).any()
        }
        self._by_lang_lock = threading.Lock()
        fds = [opened.fd for opened in self.mapped.values()]
        self._watch = watch_files(fds)
        if self._watch is not None:
            fds.append(self._watch.fd)
        weakref.finalize(self, close_files, fds)

    @property
    def sentence_owner(self) -> np.ndarray:
        """The passage row of each link, ascending (computed when asked: evaluation, tests)."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.link_start))

    def damage(self) -> str | None:
        """None while every memory-mapped file is still the file verified at load, else what changed.

        A question reads the passage vectors (and, in a large index, the sentence vectors) from
        memory-mapped files. Reading a page past the end of a mapped file that was truncated
        underneath kills the process with SIGBUS, and a file rewritten in place shows its new
        bytes through the mapping. Both change the size or the modification time of the open
        file, so an `fstat` of each kept descriptor (~1 us; see benchmarks/bench_integrity.py)
        before a question catches them before anything is read. Where the kernel reports writes
        (inotify, `qa.index.watch`), the descriptors are compared only after a write to one of
        them was reported: one read a question instead of ~23 `fstat`s. A file deleted or replaced by
        renaming another one over it is not a change here: the mapping still holds the verified
        inode, which stays readable until it is unmapped, so questions go on answering from it.

        What this cannot close: a truncation landing between this check and the reads that
        follow it (a question's few milliseconds, or `map_in` reading a just-loaded index in on
        its thread) still faults; and a same-size rewrite within one tick of the file's previous
        write (the kernel's timestamp granularity, a few ms) keeps its modification time. An
        index is meant to be replaced by `qa index`, which writes a new version beside the live
        one and never touches the files of a live version; this check is for the mistakes
        (copying an index over the live folder) and for damage.
        """
        watch = self._watch
        if watch is None:
            return self._changed_file()
        # One read of the watch's events instead of an fstat of each file (`qa.index.watch`):
        # the files are compared only after something was written to one of them.
        with watch.lock:
            if watch.quiet and not watch.pending():
                return None
            watch.quiet = False
            watch.drain()
            problem = self._changed_file()
            watch.quiet = problem is None
            return problem

    def _changed_file(self) -> str | None:
        for opened in self.mapped.values():
            info = os.fstat(opened.fd)
            if info.st_size != opened.size or info.st_mtime_ns != opened.mtime_ns:
                return (
                    f"{opened.path} was changed on disk while in use ({opened.size:,} bytes when loaded, "
                    f"{info.st_size:,} now). Rebuild the index with `qa index`, or put the index's "
                    "original files back."
                )
        return None

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
        return ranges(starts, lengths), np.repeat(np.arange(len(rows)), lengths)

    def map_in(self) -> int:
        """Read the memory-mapped arrays a question reads into memory now (`qa.index.memory`), so
        that no question pays for the first read of their pages; returns the bytes mapped in.

        The passage and sentence vectors, and the per-passage columns the ranking reads in place
        (languages, sentence links, BM25's postings): page cache, shared and reclaimable, not
        heap. The article records are read with `pread` per question and left to the page cache.
        """
        sentences = self.sentence_vectors
        codes = sentences.codes if isinstance(sentences, Int8Rows) else sentences
        arrays = [self.passage_vectors.codes, self.passage_vectors.scales, codes, self.store.lang_codes,
                  self.sentence_member, self.link_start, self.sentence_langs, self.groups]  # fmt: skip
        arrays += self.lexical.postings()
        return sum(map_in(np.asarray(array)) for array in arrays)

    def sentences_of(self, row: int) -> np.ndarray:
        """Sentence rows of passage `row`, in text order."""
        return self.sentence_member[self.sentence_links(np.array([row]))]

    @property
    def version(self) -> str:
        return self.path.name

    def group_members(self, row: int) -> list[int]:
        """Rows of every passage in the translation group of passage `row` (itself included)."""
        return self.members.get(int(self.groups[row]), [int(row)])

    def search_by_language(
        self, query: np.ndarray, k: int, mask: np.ndarray | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The k best passages of each language: {lang: (scores, rows)}. With `mask` (a filter:
        `qa.filters.passage_mask`), the k best of the passages it lets through, searched inside
        each language's search; languages with none are left out."""
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
        if mask is not None:
            return self._by_lang.search_filtered(query, k, mask, self.passage_vectors)
        return self._by_lang.search(query, k)

    def language_searches(self) -> dict[str, tuple[Any, np.ndarray]]:
        """Each language's own search, as `search_by_language` runs it (the stored approximate
        index of a large language, an exact one of a small one), and the passage row of each of its
        ids: {lang: (search, rows)}. Its `search(queries, k)` takes many queries at once."""
        if self._by_lang is None:
            self.search_by_language(np.zeros(self.passage_vectors.shape[1], np.float32), 1)
        return self._by_lang.searches

    def search_language(self, lang: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best passages of one language by inner product: (scores, rows), best first."""
        return self.search_by_language(query, k).get(lang, (np.zeros(0, np.float32), np.zeros(0, np.int64)))

    @property
    def languages(self) -> list[str]:
        """The languages of the passages, sorted."""
        return list(self.rows_by_language)

    def passage(self, row: int) -> Chunk:
        """Passage `row` (its text and its offsets in its article)."""
        return self.store.passage(int(row))

    def article(self, doc_id: str) -> Article:
        """The article `doc_id` (the passages' offsets point into its text)."""
        return self.articles[doc_id]

    def passage_and_article(self, row: int) -> tuple[Chunk, Article]:
        """Passage `row` and its article, read by the article's number: `passage` then `article`
        without the look-up by doc_id (~4 us of the ~10 of a result's reads)."""
        return self.store.passage_and_article(int(row))

    def passage_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of passages `rows`, as float32 (stored as int8 codes and scales)."""
        return self.passage_vectors[np.asarray(rows, dtype=np.int64)]

    def sentence_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of sentences `rows`, as float32 (stored as int8 codes and scales, or float)."""
        return np.asarray(self.sentence_vectors[np.asarray(rows, dtype=np.int64)], np.float32)

    def sentence_span(self, sentence: int) -> tuple[str, int, int]:
        """(doc_id, start, end) of sentence row `sentence` in its article."""
        doc, start, end = self.sentences[sentence].tolist()
        return self.store.article_at(doc).doc_id, start, end

    def __len__(self) -> int:
        return len(self.store)

    def vectors(self) -> np.ndarray:
        """All passage vectors, in passage order (an in-memory float32 copy)."""
        return np.asarray(self.passage_vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner-product search over every passage, whatever its language (the bare
        model's ranking, for comparisons); returns (scores, passage rows), best first."""
        k = min(k, len(self))
        scores = np.atleast_2d(np.asarray(queries, np.float32)) @ self.vectors().T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, top, axis=1), top


def check_model(manifest: Manifest, model: dict[str, Any], index_dir: Path) -> None:
    """Refuse an index whose vectors came from another model than the configured one."""
    built = manifest.model
    if built.fingerprint != model["fingerprint"] or built.dim != model["dim"]:
        raise IndexMismatchError(
            f"The index in {index_dir} was built with model {built.name!r} "
            f"(fingerprint {built.fingerprint}, dimension {built.dim}), but the "
            f"configured model is {model['name']!r} (fingerprint {model['fingerprint']}, dimension "
            f"{model['dim']}). Vectors of different models cannot be compared: rebuild the index "
            f"with `qa index`, or set QA_MODEL={built.name!r} to use the model it was built with."
        )


def open_index(index_dir: Path, version: str | None = None) -> Index:
    """Load the live (or the named) index version, checking it against its manifest: every file
    present, of its recorded size and content checksum (`check_files`)."""
    index_dir = Path(index_dir)
    version = version or current_version(index_dir)
    if version is None:
        raise IndexNotFoundError(
            f"No index in {index_dir}. Build one with `qa index` (it reads corpus/ by default)."
        )
    if not VERSION_NAME.fullmatch(version):
        raise IndexCorruptError(
            f"{index_dir / POINTER} names {version[:60]!r}, which is not an index version. "
            "Rebuild the index with `qa index`."
        )
    version_dir = index_dir / version
    if not version_dir.is_dir():
        raise IndexCorruptError(
            f"{index_dir / POINTER} names {version!r}, but {version_dir} does not exist. "
            "Rebuild the index with `qa index`."
        )
    manifest = read_manifest(version_dir)
    if manifest.index.type == "segmented":  # segments, each an ordinary version (`qa.index.segments`)
        from qa.index.segments import open_segmented

        check_files(version_dir, manifest)  # its own files: the segment list and the tombstones
        return open_segmented(version_dir, manifest)
    mapped = check_files(version_dir, manifest, keep_open=MAPPED_FILES)
    try:
        index = load_version(version_dir, manifest, mapped)
    except BaseException:
        close_files([opened.fd for opened in mapped.values()])
        raise
    problem = index.damage()  # changed between its verification and its mapping
    if problem:
        raise IndexCorruptError(problem)
    return index


def load_version(version_dir: Path, manifest: Manifest, mapped: dict[str, OpenFile]) -> Index:
    """The body of `open_index`, once the files are verified: the version in `version_dir`
    (described by `manifest`) loaded as an `Index`, its files in `mapped` (open, verified) mapped.
    Returns the `Index`; raises `IndexCorruptError` when a file cannot be read."""
    import faiss

    n = manifest.corpus.passages
    reading = STORE_DIR + "/"  # the file being read, named in the error
    try:
        arrays = {}
        for name in STORE_FILES:
            if name != ARTICLE_RECORDS:
                reading = name
                arrays[name] = map_npy(mapped[name])
        mismatch = store_mismatch(arrays, n, manifest.corpus.articles)
        if mismatch is not None:
            reading = mismatch[0]
            raise ValueError(mismatch[1])
        reading = ARTICLE_RECORDS
        store = PassageStore(
            arrays, mapped[ARTICLE_RECORDS].fd, version_dir / ARTICLE_RECORDS, sorted(manifest.corpus.languages)
        )
        reading = VECTORS
        # Memory-mapped: a question reads only its candidates' rows, so a million passages
        # do not have to fit in memory as float32.
        vectors = map_npy(mapped[VECTORS])
        if vectors.dtype != np.int8 or vectors.shape != (n, manifest.model.dim):
            raise ValueError(
                f"holds {vectors.dtype} vectors of shape {vectors.shape}, but the store lists "
                f"{n} passages and the manifest says dimension {manifest.model.dim}"
            )
        reading = VECTOR_SCALES
        vector_scales = map_npy(mapped[VECTOR_SCALES])
        if vector_scales.dtype != np.float32 or vector_scales.shape != (n,):
            raise ValueError(f"holds {vector_scales.dtype} scales of shape {vector_scales.shape} for {n} passages")
        vectors = Int8Rows(vectors, vector_scales)
        ann = {}
        for lang, spec in manifest.index.languages.items():
            if spec.file:
                reading = spec.file
                ann[lang] = ProbedIVF(faiss.read_index(str(version_dir / spec.file)), spec.nprobe, spec.probe_gap)
                if ann[lang].ntotal != spec.passages:
                    raise ValueError(f"holds {ann[lang].ntotal} vectors, the manifest says {spec.passages}")
        reading = LANG_STATS
        with np.load(version_dir / LANG_STATS) as stats_arrays:
            lang_stats = LanguageStats.from_arrays(stats_arrays)
        reading = GROUPS
        groups = map_npy(mapped[GROUPS])
        if groups.shape != (n,):
            raise ValueError(f"has {len(groups)} entries for {n} passages")
        reading = LEXICAL + "/"
        lexical = LexicalIndex.load(
            version_dir / LEXICAL, arrays={key: map_npy(mapped[f"{LEXICAL}/{file}"]) for key, file in LEXICAL_ARRAYS.items()},
            # questions are tokenized as its passages were (indexes from before the entry: 1)
            analyzer=int(manifest.versions.get("lexical_analyzer", 1)),
        )
        reading = SENTENCES
        sentences = map_npy(mapped[SENTENCES])
        reading = SENTENCE_VECTORS
        codes = map_npy(mapped[SENTENCE_VECTORS])
        if codes.dtype != np.int8 or codes.shape != (len(sentences), manifest.model.dim):
            raise ValueError(f"holds {codes.dtype} vectors of shape {codes.shape} for {len(sentences)} sentences")
        reading = SENTENCE_SCALES
        scales = map_npy(mapped[SENTENCE_SCALES])
        if scales.shape != (len(sentences),):
            raise ValueError(f"holds {scales.shape} scales for {len(sentences)} sentences")
        sentence_vectors = Int8Rows(codes, scales)
        if codes.size * 4 <= SENTENCES_IN_MEMORY:
            sentence_vectors = sentence_vectors[:]
            del codes, scales  # decoded into memory: the files are not read again, nor watched
            close_files([mapped.pop(SENTENCE_VECTORS).fd, mapped.pop(SENTENCE_SCALES).fd])
        reading = SENTENCE_STATS
        with np.load(version_dir / SENTENCE_STATS) as stats_arrays:
            sentence_stats = LanguageStats.from_arrays(stats_arrays)
        members = GroupMembers(arrays[GROUP_IDS], arrays[GROUP_STARTS], arrays[GROUP_ROWS])
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError) as exc:
        problem = " ".join(str(exc).split())[:200]
        raise IndexCorruptError(
            f"{version_dir / reading} cannot be read ({problem}). Rebuild the index with `qa index`."
        ) from None
    return Index(
        path=version_dir,
        manifest=manifest,
        store=store,
        passage_vectors=vectors,
        ann=ann,
        lang_stats=lang_stats,
        groups=groups,
        lexical=lexical,
        sentences=sentences,
        sentence_vectors=sentence_vectors,
        sentence_stats=sentence_stats,
        members=members,
        sentence_member=arrays[SENTENCE_MEMBERS],
        link_start=arrays[LINK_STARTS],
        sentence_langs=arrays[SENTENCE_LANGS],
        mapped=mapped,
    )

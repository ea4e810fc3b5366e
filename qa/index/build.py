"""Building an index version: corpus -> passages -> vectors -> a new version beside the live one.

A build writes a complete new version (the files of `qa.index.format`) into a `.building-*`
folder, renames it, and then swaps `CURRENT`, so a crash or Ctrl-C at any point leaves the
previous index loadable, and a running server can switch to the new version between two
questions. An incremental build reuses the vectors of unchanged articles; an article that fails
at any stage is left out and named in the report, the others are indexed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from qa.config import Settings
from qa.errors import IndexNotFoundError, QAError, unexpected_reason
from qa.index.ann import (
    AnnReport,
    RowsView,
    choose_kind,
    fill,
    half_rows,
    n_lists,
    quantize_rows,
    train_ivf,
    tune_probes,
)
from qa.index.format import (
    ANN_DIR,
    FORMAT_VERSION,
    GROUPS,
    KEEP_VERSIONS,
    LANG_STATS,
    LANG_SUMS,
    LEXICAL,
    MANIFEST,
    SENTENCE_SCALES,
    SENTENCE_STATS,
    SENTENCE_SUMS,
    SENTENCE_VECTORS,
    SENTENCES,
    VECTORS,
    Manifest,
    atomic_write,
    build_lock,
    current_version,
    fsync_dir,
    swap_pointer,
    write_file,
)
from qa.index.load import Index, open_index
from qa.index.store import STORE_DIR, StoreWriter, narrow_int, write_groups, write_sentence_links
from qa.index.verify import file_checksum, write_stamps
from qa.lexical import ANALYZER, LexicalWriter
from qa.models import Article, Chunk, SkippedFile
from qa.rank import LanguageStats, LanguageSums, translation_groups

__all__ = ["BuildReport", "build_index", "corpus_fingerprint", "query_means", "read_sums", "write_index"]

log = logging.getLogger(__name__)

BUILD_KEY = "BUILT"  # beside CURRENT: the live version and the key of what it was built from
RECALL_QUERIES = 200  # sample questions on which a build tunes and measures each approximate index's recall
QUERY_SAMPLE = 64  # sentences per language embedded as questions (see LanguageStats.query_means)
EMBED_SLICE = 64  # passages per progress-bar step; also how often Ctrl-C is noticed
PASSAGE_BATCH = 4096  # passages looked up in the store and indexed together
EMBED_BLOCK = 65536  # texts handed to the embedder together (sorted by length within them), read from disk
CHECKPOINT = ".checkpoint-"  # + the build key: the vectors being embedded, memory-mapped (see `_checkpoint`)


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
    up_to_date: bool = False  # nothing changed since the live version: nothing was written
    store: dict | None = None  # `qa index --ray --database`: the store write (qa.postgres.write.StoreReport)


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
    except BaseException:
        # Anything else (articles read from a generator that fails, Ctrl-C): the half-written
        # version goes too, and the live one stays.
        shutil.rmtree(building, ignore_errors=True)
        raise



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
        "lexical_analyzer": str(ANALYZER),  # how the BM25 postings were tokenized (qa.lexical)
    }


def corpus_fingerprint(articles: list[Article]) -> str:
    """A hash of the set of articles (their content ids), independent of file order."""
    digest = hashlib.sha256()
    for doc_id in sorted(a.doc_id for a in articles):
        digest.update(doc_id.encode())
    return digest.hexdigest()[:20]


class _DocIds:
    """The doc_ids of the articles written, as compact byte strings (not Python objects), for
    `corpus_fingerprint` without holding the articles."""

    def __init__(self, block: int = 65536):
        self._blocks: list[np.ndarray] = []
        self._pending: list[bytes] = []
        self._block = block

    def add(self, doc_id: str) -> None:
        self._pending.append(doc_id.encode())
        if len(self._pending) >= self._block:
            self._blocks.append(np.array(self._pending, dtype=bytes))
            self._pending = []

    def fingerprint(self) -> str:
        """`corpus_fingerprint` of the articles added: UTF-8 bytes sort in code point order, as
        the doc_ids themselves (doc_ids hold no NUL, which fixed-width byte strings would drop)."""
        blocks = self._blocks + ([np.array(self._pending, dtype=bytes)] if self._pending else [])
        ids = np.sort(np.concatenate(blocks)) if blocks else []
        return hashlib.sha256(b"".join(ids)).hexdigest()[:20]


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of at most `size`."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    yield batch


def _reusable(index_dir: Path, model: dict[str, Any], chunking: dict[str, Any]) -> Index | None:
    """The previous index, if its passages and vectors can be reused for an incremental build."""
    try:
        previous = open_index(index_dir)
    except IndexNotFoundError:
        return None
    except QAError as exc:
        log.warning("Previous index not reusable, rebuilding everything: %s", exc)
        return None
    if previous.manifest.model.fingerprint != model["fingerprint"]:
        log.warning("The model changed since the last build: embedding everything again.")
        return None
    if previous.manifest.chunking.model_dump() != chunking:
        log.warning("Chunking settings changed since the last build: embedding everything again.")
        return None
    return previous


def _embed_with_progress(
    embedder,
    texts: list[str],
    progress: bool,
    what: str = "Passages",
    *,
    owners: list[str] | None = None,
    failed: dict[str, str] | None = None,
    out: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    done: np.ndarray | None = None,
    bar=None,
) -> np.ndarray:
    """Embed `texts` in slices of similar lengths, with a progress bar.

    With `owners` (the article of each text), a slice that fails is embedded again article by
    article: an article that still fails is added to `failed` (doc_id -> reason) and its rows
    are left at zero, so that one bad article costs only itself.

    Each slice's vectors go straight into `out` (at `rows[i]` for text i; a new array by
    default), so that with `out` memory-mapped the vectors of a large corpus never sit in memory
    whole, let alone twice. `done` (a boolean per row of `out`, memory-mapped beside it): rows
    already embedded by an earlier, interrupted build are skipped, and each slice's rows are
    marked once their vectors are written (not those of an article that failed), so that a
    killed build resumes where it stopped (see `_checkpoint`). `bar`: a progress bar (`_progress`)
    shared by several calls, each a block of a large corpus's texts; by default, one of its own.
    """

    if out is None:
        out = np.zeros((len(texts), embedder.dim), np.float32)
    rows = np.arange(len(texts)) if rows is None else np.asarray(rows, np.int64)
    if done is not None and len(rows):
        todo = np.flatnonzero(~done[rows])
        if len(todo) < len(rows):
            log.info("%s: %d of %d already embedded by an interrupted build, reused.", what, len(rows) - len(todo), len(rows))
        texts, rows = [texts[i] for i in todo], rows[todo]
        owners = None if owners is None else [owners[i] for i in todo]
    # Slices of similar lengths: a batch costs its longest text times its size, and sentences in
    # corpus order wasted 60% of the work on padding (ordered by length, about 2x faster).
    order = np.argsort([len(t) for t in texts], kind="stable")
    texts = [texts[i] for i in order]
    shown = _progress(progress, len(texts), what.lower()) if bar is None else contextlib.nullcontext(bar)
    with shown as bar:  # noqa: PLR1704 -- the bar given, or one of its own
        step = getattr(embedder, "slice_size", EMBED_SLICE)  # a Ray embedder wants work for every worker
        for start in range(0, len(texts), step):
            batch = texts[start : start + step]
            if owners is None:
                vectors = embedder.encode_documents(batch)
            else:
                batch_owners = [owners[i] for i in order[start : start + step]]
                vectors = _embed_isolated(embedder, batch, batch_owners, failed, what)
            at = rows[order[start : start + step]]
            out[at] = vectors  # back in the order of `texts`
            if done is not None:
                ok = at if owners is None else at[[owners[i] not in failed for i in order[start : start + step]]]
                done[ok] = True
            bar.update(len(batch))
    return out


def _progress(progress: bool, total: int, what: str):
    """The progress bar of embedding `total` texts (`what`: "passages", "sentences")."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"Embedding {what}", unit="text", disable=not progress, file=sys.stderr)


def _embed_isolated(embedder, batch: list[str], owners: list[str], failed: dict[str, str], what: str) -> np.ndarray:
    """`embedder.encode_documents(batch)`; when that fails, each owner's texts on their own (see
    `_embed_with_progress`). When every owner of the batch fails alone too, the embedder itself
    is broken and the batch's error is raised."""
    try:
        return embedder.encode_documents(batch)
    except Exception:  # find the article(s) at fault, below
        rows_of: dict[str, list[int]] = {}
        for row, owner in enumerate(owners):
            rows_of.setdefault(owner, []).append(row)
        vectors = np.zeros((len(batch), embedder.dim), np.float32)
        errors: dict[str, Exception] = {}
        for owner, rows in rows_of.items():
            try:
                vectors[rows] = embedder.encode_documents([batch[row] for row in rows])
            except Exception as exc:  # noqa: BLE001 -- reported in the summary
                errors[owner] = exc
        if len(rows_of) > 1 and len(errors) == len(rows_of):
            raise  # the batch's error
        for owner, exc in errors.items():
            failed.setdefault(owner, _failure(f"embedding its {what.lower()}", owner, exc))
        return vectors


def _failure(stage: str, source: str, exc: Exception) -> str:
    """Why an article was left out of the build, in one line (the traceback goes to the debug log)."""
    log.debug("%s failed for %s", stage, source, exc_info=exc)
    return f"{stage} failed ({unexpected_reason(exc)})"


def _skipped_article(article: Article, reason: str) -> SkippedFile:
    title = article.title if len(article.title) <= 80 else article.title[:79] + "…"
    return SkippedFile(
        source=article.source,
        reason=f"article {title!r} left out: {reason}; fix or remove it and run `qa index` again "
        "(QA_DEBUG=1 shows the details)",
    )


class _Passages:
    """A build's passages, spooled to an unnamed file beside the index as they are made: their
    text stays on disk, and what is held is three numbers a passage (where it is in the spool,
    its article's number in corpus order, its row in the previous version or -1 to embed)."""

    def __init__(self, folder: Path):
        # unnamed: gone with the process, whatever happens (closed by `close`)
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115
        self._ends = array("q")
        self._owner = array("q")
        self._reuse = array("q")

    def add(self, chunk: Chunk, owner: int, reuse_row: int) -> None:
        data = chunk.model_dump_json().encode()
        self._file.write(data)
        self._ends.append((self._ends[-1] if self._ends else 0) + len(data))
        self._owner.append(owner)
        self._reuse.append(reuse_row)

    def finish(self) -> None:
        """Done adding: the spool is readable."""
        self._file.flush()

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, row: int) -> Chunk:
        start = self._ends[row - 1] if row else 0
        return Chunk.model_validate_json(os.pread(self._file.fileno(), self._ends[row] - start, start))

    @property
    def owner(self) -> np.ndarray:
        """Each passage's article number (corpus order)."""
        return np.frombuffer(self._owner, np.int64)

    @property
    def reuse(self) -> np.ndarray:
        """Each passage's row in the previous version, or -1: embedded now."""
        return np.frombuffer(self._reuse, np.int64)

    def close(self) -> None:
        """Drop the spool."""
        self._file.close()


def _row_blocks(rows: np.ndarray, size: int | None = None) -> Iterator[np.ndarray]:
    """`rows` in consecutive slices of at most `size` (default EMBED_BLOCK)."""
    size = size or EMBED_BLOCK
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _each(rows: np.ndarray) -> Iterator[int]:
    """The numbers of `rows` as ints, converted a block at a time (not a list of them all)."""
    for block in _row_blocks(rows):
        yield from block.tolist()


def _take_rows(vectors: np.ndarray, rows: np.ndarray, path: Path | None) -> np.ndarray:
    """`vectors[rows]`, written a block at a time into a memory-mapped file at `path` (in memory
    without one): the vectors of a large corpus are never copied into the heap."""
    if path is None:
        return vectors[rows]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=vectors.dtype, shape=(len(rows), vectors.shape[1]))
    for block in _row_blocks(np.arange(len(rows))):
        out[block] = vectors[rows[block]]
    return out


def _drop_sentences(
    failed: dict[str, str], doc_ids: list[str], table: np.ndarray, vectors: np.ndarray, embedded: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sentence table (article number, start, end), vectors and `embedded` mask without the
    sentences of the `failed` articles, articles renumbered as in `doc_ids` without them."""
    kept = np.array([doc_id not in failed for doc_id in doc_ids], dtype=bool)
    renumber = np.cumsum(kept) - 1
    rows = kept[table[:, 0]]
    table = table[rows]
    table[:, 0] = renumber[table[:, 0]]
    return table, vectors[rows], embedded[rows]


def _sentence_table(passages: _Passages, rows: np.ndarray, number: np.ndarray) -> np.ndarray:
    """(article, start, end) of every sentence of the passages `rows` (grouped by article, in
    corpus order), each once, sorted; `number[owner]`: the article's number among those kept."""
    from qa.chunk import split_sentences

    flat = array("q")
    owners = passages.owner

    def flush(doc: int, spans: set[tuple[int, int]]) -> None:
        for a, b in sorted(spans):
            flat.extend((doc, a, b))

    doc, spans = -1, set()
    for row in _each(rows):
        owner = int(number[owners[row]])
        if owner != doc:
            if spans:
                flush(doc, spans)
            doc, spans = owner, set()
        chunk = passages[row]
        spans.update((chunk.start + a, chunk.start + b) for a, b in split_sentences(chunk.text))
    if spans:
        flush(doc, spans)
    return np.frombuffer(flat, np.int64).reshape(-1, 3).copy()


def _sentences(articles: Iterable[Article], doc_ids: list[str], passages: _Passages, rows: np.ndarray,
               number: np.ndarray, previous, embedder, progress, failed: dict[str, str], scratch: Path | None = None):
    """Every sentence of the passages `rows`, with its vector: reused from `previous` when its
    article is unchanged, embedded otherwise, a block of texts at a time (read from `articles`,
    the kept articles in order, `doc_ids` theirs). Returns (table, vectors, a mask of the rows
    embedded now). An article whose sentences cannot be embedded is added to `failed`. The
    vectors are a memory-mapped checkpoint in `scratch` when given (see `_checkpoint`)."""
    table = _sentence_table(passages, rows, number)
    old: dict[tuple[str, int, int], int] = {}
    if previous is not None:
        old_ids = list(previous.articles)
        for row, (doc, a, b) in enumerate(previous.sentences.tolist()):
            old[(old_ids[doc], a, b)] = row
    dim = embedder.describe()["dim"]
    vectors, done = _checkpoint(scratch, "sentence_vectors", (len(table), dim))
    hits = np.full(len(table), -1, np.int64)
    if old:
        hits[:] = [old.get((doc_ids[doc], a, b), -1) for doc, a, b in table.tolist()]
    missing = np.flatnonzero(hits < 0)
    for block in _row_blocks(np.flatnonzero(hits >= 0)):
        vectors[block] = previous.sentence_vectors[hits[block].tolist()]
    # The texts to embed, a block at a time, cut from the articles as they stream by (the
    # missing rows are in article order, as the articles).
    texts: list[str] = []
    at = 0
    stream = iter(articles)
    article, doc = None, -1
    for row in _each(missing):
        want = int(table[row, 0])
        while doc < want:
            article, doc = next(stream), doc + 1
        texts.append(article.text[table[row, 1] : table[row, 2]])
        if len(texts) == EMBED_BLOCK:
            _embed_sentence_block(embedder, texts, table, missing[at : at + len(texts)], doc_ids, progress, failed,
                                  vectors, done)
            at, texts = at + len(texts), []
    if texts:
        _embed_sentence_block(embedder, texts, table, missing[at:], doc_ids, progress, failed, vectors, done)
    embedded = np.zeros(len(table), dtype=bool)
    embedded[missing] = True
    return table, vectors, embedded


def _embed_sentence_block(embedder, texts, table, rows, doc_ids, progress, failed, vectors, done) -> None:
    owners = [doc_ids[doc] for doc in table[rows, 0].tolist()]
    _embed_with_progress(
        embedder, texts, progress, "Sentences", owners=owners, failed=failed, out=vectors, rows=rows, done=done,
    )


def _checkpoint(folder: Path | None, name: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """(vectors, done): a float32 array of `shape` and a boolean per row saying which rows hold
    their vector already, both memory-mapped files in `folder` (the build's checkpoint folder,
    removed once the version is live); in memory, with no `done`, without a folder.

    At a million passages the sentence vectors alone are 7 GB of float32: on disk they are page
    cache, written out and dropped by the kernel as needed, not heap. And a build killed after
    hours of embedding finds them again: the files are named by their shape, inside a folder
    named by the build's key (same articles, model and settings: the same passages in the same
    order), and the rows marked done are not embedded again.
    """
    if folder is None:
        return np.zeros(shape, np.float32), None
    folder.mkdir(exist_ok=True)
    stem = f"{name}-{shape[0]}x{shape[1]}"
    vectors_path, done_path = folder / f"{stem}.npy", folder / f"{stem}.done.npy"
    try:
        vectors = np.lib.format.open_memmap(vectors_path, mode="r+")
        done = np.lib.format.open_memmap(done_path, mode="r+")
        if vectors.shape == shape and vectors.dtype == np.float32 and done.shape == (shape[0],) and done.dtype == bool:
            return vectors, done
    except (OSError, ValueError):
        pass  # none yet, or cut short while being created: start afresh
    done = np.lib.format.open_memmap(done_path, mode="w+", dtype=bool, shape=(shape[0],))
    return np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float32, shape=shape), done


def question_sample(embedder, texts: list[str], langs: list[str]) -> dict[str, np.ndarray]:
    """Per language, a sample of its passages' sentences embedded as questions (the corpus's
    own stand-in for the questions it will be asked; no real questions are needed)."""
    return _question_sample(embedder, lambda: zip(texts, langs))


def _question_sample(embedder, passages: Callable[[], Iterable[tuple[str, str]]]) -> dict[str, np.ndarray]:
    """`question_sample` of the (text, language) pairs that `passages()` gives, read twice (the
    sentences are counted, then the sample's picked), so that they need not be held."""
    from qa.chunk import split_sentences

    def sentences() -> Iterator[tuple[str, str]]:
        for text, lang in passages():
            for a, b in split_sentences(text):
                if b - a >= 20:
                    yield lang, text[a:b]

    counts = Counter(lang for lang, _ in sentences())
    # Evenly spaced, so the sample is deterministic and spans the whole corpus.
    picks = {
        lang: np.linspace(0, count - 1, min(QUERY_SAMPLE, count)).astype(int).tolist()
        for lang, count in counts.items() if count >= 8  # fewer: too few to estimate a direction
    }
    wanted = {lang: set(p) for lang, p in picks.items()}
    seen: Counter[str] = Counter()
    found: dict[str, dict[int, str]] = {lang: {} for lang in picks}
    for lang, text in sentences():
        if lang in wanted and seen[lang] in wanted[lang]:
            found[lang][seen[lang]] = text
        seen[lang] += 1
    return {lang: _encode_sample(embedder, [found[lang][i] for i in picks[lang]]) for lang in sorted(picks)}


def _encode_sample(embedder, texts: list[str]) -> np.ndarray:
    """`embedder.encode_queries(texts)`; if that fails, without the texts that fail on their own
    (a sample only estimates a direction), unless every one of them does."""
    try:
        return embedder.encode_queries(texts)
    except Exception:  # one odd sentence must not stop the build
        kept = []
        for text in texts:
            try:
                kept.append(embedder.encode_queries([text]))
            except Exception as exc:  # noqa: BLE001 -- left out of the sample
                log.debug("sample sentence %r left out: %s", text[:80], unexpected_reason(exc))
        if not kept:
            raise  # the batch's error
        return np.concatenate(kept)


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


def build_key(articles: list[Article], settings: Settings, model_fingerprint: str) -> str:
    """A hash of everything a build's output depends on: every article (text and metadata), the
    model, the settings a build reads, and the format. Equal keys mean an identical index."""
    ordered = sorted(articles, key=lambda a: (a.doc_id, a.source))
    return _build_key((article.model_dump_json().encode() for article in ordered), settings, model_fingerprint)


def _build_key(article_json: Iterable[bytes], settings: Settings, model_fingerprint: str) -> str:
    """`build_key` of the articles' JSON, given sorted by (doc_id, source) (`CorpusScan.json_by_id`)."""
    import qa

    digest = hashlib.sha256()
    for data in article_json:
        digest.update(data)
    used = {
        name: str(getattr(settings, name))
        for name in (
            "model", "chunk_tokens", "chunk_overlap", "group_threshold", "index_type", "ann_min_passages",
            "ann_target_recall", "candidates", "query_centering",
        )
    }
    # (ANALYZER: a change of BM25's tokenization rebuilds an otherwise unchanged index)
    digest.update(repr((sorted(used.items()), model_fingerprint, FORMAT_VERSION, qa.__version__, ANALYZER)).encode())
    return digest.hexdigest()


def _model_fingerprint(embedder) -> str:
    # Without loading the model: the configured one's fingerprint is a hash of its files.
    fingerprint = getattr(embedder, "fingerprint", None)
    return fingerprint if isinstance(fingerprint, str) else embedder.describe()["fingerprint"]


def _up_to_date(index_dir: Path, key: str) -> tuple[str, Manifest] | None:
    """The live version and its manifest when it was built from exactly `key` and its files
    are all there at their recorded sizes (a damaged index is rebuilt, not kept)."""
    from qa.index.format import read_manifest

    version = current_version(index_dir)
    try:
        recorded = json.loads((index_dir / BUILD_KEY).read_text(encoding="utf-8"))
        if not version or recorded != {"version": version, "key": key}:
            return None
        manifest = read_manifest(index_dir / version)
        for name, size in manifest.files.items():
            if (index_dir / version / name).stat().st_size != size:
                return None
    except (OSError, ValueError, QAError):
        return None
    return version, manifest


def _record_build_key(index_dir: Path, version: str, key: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps({"version": version, "key": key}), encoding="utf-8")

    atomic_write(index_dir / BUILD_KEY, write)


def _remove_stale(index_dir: Path, keep: set[str], checkpoints: bool = True) -> None:
    # Leftovers of crashed builds, and versions older than the last KEEP_VERSIONS.
    for path in index_dir.glob(".building-*"):
        shutil.rmtree(path, ignore_errors=True)
    for path in index_dir.glob(f"{CHECKPOINT}*") if checkpoints else []:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
    versions = sorted(p for p in index_dir.glob("v-*") if p.is_dir())
    for path in versions[:-KEEP_VERSIONS]:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


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
    from qa.ingest.corpus import scan_corpus
    from qa.readers import input_kind

    settings = settings or Settings()
    corpus_dir = Path(corpus_dir) if corpus_dir is not None else settings.corpus_dir
    index_dir = settings.index_dir
    started = time.perf_counter()
    if not corpus_dir.is_dir():
        raise QAError(f"Corpus folder {corpus_dir} does not exist. Pass the folder of your articles.")
    index_dir.mkdir(parents=True, exist_ok=True)

    with build_lock(index_dir), contextlib.ExitStack() as spools:
        # (A checkpoint of an interrupted build is kept until the corpus is read: see below.)
        _remove_stale(index_dir, keep={current_version(index_dir) or ""}, checkpoints=False)
        # The corpus is read (and each file parsed) once, into a spool beside the index; from
        # here on articles and passages come one at a time from disk, and what is held is a few
        # numbers per article and per passage, never their text.
        scan = spools.enter_context(scan_corpus(corpus_dir, spool_dir=index_dir))
        skipped = scan.skipped
        if not len(scan):
            raise QAError(
                f"No readable articles in {corpus_dir} ({len(skipped)} file(s) skipped). Add .txt, "
                ".md, .html or .jsonl files; the existing index was left as it was."
            )
        embedder = embedder or get_embedder(settings)
        # Nothing changed: say so without loading the model or writing a version (a no-op re-run
        # took 11-21 s and wrote a copy of the live version).
        key = _build_key(scan.json_by_id(), settings, _model_fingerprint(embedder))
        if (live := _up_to_date(index_dir, key)) is not None:
            return _unchanged_report(index_dir, *live, skipped, time.perf_counter() - started)
        # An interrupted build of exactly these articles left vectors to resume from; any other
        # checkpoint is of a corpus or settings that are gone.
        _remove_stale(index_dir, keep={current_version(index_dir) or "", f"{CHECKPOINT}{key[:20]}"})
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

        # An article that fails at any stage (an unforeseen text, a bug) is left out of this build
        # and named in the summary with the reason; the others are indexed. doc_id -> reason.
        failed: dict[str, str] = {}
        passages = _Passages(index_dir)
        spools.callback(passages.close)
        doc_ids, langs, kinds, encodings = scan.doc_ids, [], [], []
        for position, article in enumerate(scan):
            # (interned: a few distinct strings, not one object an article)
            langs.append(sys.intern(article.lang))
            kinds.append(sys.intern(input_kind(article.source)))
            encodings.append(sys.intern(article.encoding or "n/a"))  # n/a: PDF
            rows = old_rows.get(article.doc_id)
            if rows:
                for row in rows:
                    passages.add(previous.chunks[row], position, row)
                continue
            try:
                new = chunk_article(article, embedder.count_tokens, budget, settings.chunk_overlap)
            except Exception as exc:  # noqa: BLE001 -- reported in the summary, see `failed`
                failed[article.doc_id] = _failure("splitting it into passages", article.source, exc)
                continue
            for chunk in new:
                passages.add(chunk, position, -1)
        passages.finish()
        reuse, owner = passages.reuse, passages.owner

        scratch = index_dir / f"{CHECKPOINT}{key[:20]}"
        vectors, done = _checkpoint(scratch, "vectors", (len(passages), model["dim"]))
        bar = _progress(progress, int((reuse < 0).sum()), "passages")
        for block in _row_blocks(np.flatnonzero(reuse < 0)):
            _embed_with_progress(
                embedder, [passages[row].text for row in block.tolist()], progress,
                owners=[doc_ids[o] for o in owner[block].tolist()], failed=failed, out=vectors, rows=block,
                done=done, bar=bar,
            )
        bar.close()
        for block in _row_blocks(np.flatnonzero(reuse >= 0)):
            vectors[block] = previous.passage_vectors[reuse[block].tolist()]

        def kept() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # (articles kept, their new number by old number, passages kept), without `failed`
            keep = np.array([doc_id not in failed for doc_id in doc_ids], dtype=bool)
            return keep, np.cumsum(keep) - 1, np.flatnonzero(keep[owner])

        keep, number, rows = kept()
        kept_ids = [doc_id for doc_id, k in zip(doc_ids, keep.tolist()) if k]
        failed_before, left_out = len(failed), set(failed)
        sentences, sentence_vectors, sentences_new = _sentences(
            (a for a in scan if a.doc_id not in left_out), kept_ids, passages, rows, number, previous, embedder,
            progress, failed, scratch,
        )
        if len(failed) > failed_before:  # some articles failed at embedding their sentences
            sentences, sentence_vectors, sentences_new = _drop_sentences(
                failed, kept_ids, sentences, sentence_vectors, sentences_new
            )
            keep, number, rows = kept()
        if not keep.any():
            shutil.rmtree(building, ignore_errors=True)
            first = next(a for a in scan if a.doc_id in failed)
            raise QAError(
                f"Every article of {corpus_dir} failed ({len(failed)}); the first, {first.source} "
                f"({first.title[:80]!r}): {failed[first.doc_id]}. Fix the articles (QA_DEBUG=1 shows the "
                "details) and run `qa index` again; the existing index was left as it was."
            )
        if failed:
            skipped = skipped + [_skipped_article(a, failed[a.doc_id]) for a in scan if a.doc_id in failed]
            vectors = _take_rows(vectors, rows, scratch / "kept_vectors.npy")
        sample = _question_sample(embedder, lambda: ((passages[row].text, langs[owner[row]]) for row in _each(rows)))
        means = sample_means(sample)
        version, search = _write_version(
            building, (a for a in scan if a.doc_id not in failed), (passages[row] for row in _each(rows)),
            vectors, sentences, sentence_vectors,
            settings=settings, model=model, chunking=chunking, query_means=means, previous=previous,
            recall_queries=tuning_queries(sample, means, settings.query_centering), query_sample=sample,
        )

        if not failed:  # with articles left out, a re-run must retry them
            _record_build_key(index_dir, version, key)

    removed = len(set(old_rows) - {doc_id for doc_id, k in zip(doc_ids, keep.tolist()) if k})
    kept_list = keep.tolist()
    return BuildReport(
        index_dir=str(index_dir),
        version=version,
        articles=int(keep.sum()),
        passages=len(rows),
        embedded=int((reuse[rows] < 0).sum()),
        reused=int((reuse[rows] >= 0).sum()),
        sentences=len(sentences),
        sentences_embedded=int(sentences_new.sum()),
        removed_articles=removed,
        languages=dict(sorted(Counter(x for x, k in zip(langs, kept_list) if k).items())),
        search=[r.describe(lang) for lang, r in search.items() if r.recall_at_10 is not None],
        kinds=dict(Counter(x for x, k in zip(kinds, kept_list) if k).most_common()),
        encodings=dict(Counter(x for x, k in zip(encodings, kept_list) if k).most_common()),
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 2),
    )


def _unchanged_report(
    index_dir: Path, version: str, manifest: Manifest, skipped: list[SkippedFile], seconds: float
) -> BuildReport:
    corpus = manifest.corpus
    return BuildReport(
        index_dir=str(index_dir), version=version, articles=corpus.articles, passages=corpus.passages,
        embedded=0, reused=corpus.passages, sentences=_sentence_count(index_dir / version),
        sentences_embedded=0, removed_articles=0, languages=dict(sorted(corpus.languages.items())),
        skipped=skipped, seconds=round(seconds, 2), up_to_date=True,
    )


def _sentence_count(version_dir: Path) -> int:
    # The sentence table is (article, start, end) integer rows: its row count without reading it.
    table = np.load(version_dir / SENTENCES, mmap_mode="r")
    return int(table.shape[0])


def write_index(
    index_dir: Path,
    articles: Iterable[Article],
    chunks: Iterable[Chunk],
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
    and how each language is searched.

    `articles` and `chunks` may be any iterables, e.g. generators reading them from disk: they
    are read once, in that order (every article before the first passage), and written as they
    come, so the writer's memory does not grow with the corpus (a few numbers a passage, the
    BM25 vocabulary, and one language's IVF index at a time). `chunks` are in the order of
    `vectors`' rows; `vectors` and `sentence_vectors` are best memory-mapped."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    with build_lock(index_dir):
        _remove_stale(index_dir, keep={current_version(index_dir) or ""})
        return _write_version(
            _start_version(index_dir), articles, chunks, vectors, sentences, sentence_vectors, settings=settings,
            model=model, chunking=chunking, query_means=query_means, previous=None, groups=groups,
            recall_queries=recall_queries,
        )


def _vector_search(
    vectors: np.ndarray, lang_codes: np.ndarray, langs: list[str], queries: np.ndarray,
    settings: Settings, previous: Index | None, folder: Path | None = None,
) -> dict[str, tuple[AnnReport, Any]]:
    """Per language: how it is searched and, for large languages, its filled IVF index.

    `lang_codes`: each passage's language, a position in `langs` (sorted). With `folder`,
    each IVF index is written there as soon as it is built and dropped (None in the result):
    one language's index in memory at a time. A language's vectors are read a block of rows at
    a time (`RowsView`), never copied out whole.

    An incremental build reuses the previous IVF lists of a language (emptied and refilled:
    only the assignment of vectors to lists is redone) unless the language has more than
    doubled or halved since they were trained, in which case they are retrained and the build
    says so. nprobe and the probe gap (see `qa.index.ann.ProbedIVF`) are re-tuned every build.
    """
    import faiss

    # `queries` are of every language: a question in one language searches every language's
    # index (the cross-language case is the hard one).
    out: dict[str, tuple[AnnReport, Any]] = {}
    counts = np.bincount(lang_codes, minlength=len(langs))
    for position, lang in enumerate(langs):
        if not counts[position]:
            continue
        rows = RowsView(vectors, np.flatnonzero(lang_codes == position))
        kind = choose_kind(len(rows), settings.index_type, settings.ann_min_passages)
        if kind == "flat" or not len(queries):
            out[lang] = (AnnReport("flat", len(rows)), None)
            continue
        old_spec = previous.manifest.index.languages.get(lang) if previous else None
        old_index = previous.ann[lang].index if previous and lang in previous.ann else None
        trained_on = old_spec.trained_on if old_spec else 0
        if old_index is not None and 0.5 <= len(rows) / max(trained_on, 1) <= 2:
            index = faiss.clone_index(old_index)
            index.reset()
        else:
            if old_index is not None:
                log.warning(
                    "%s: %s passages, the IVF lists were trained on %s: retraining them.",
                    lang, f"{len(rows):,}", f"{trained_on:,}",
                )
            trained_on = len(rows)
            index = train_ivf(rows, n_lists(len(rows)))
        fill(index, rows)
        nprobe, gap, recall = tune_probes(index, rows, queries, settings.ann_target_recall, settings.candidates)
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
        if folder is not None:
            (folder / ANN_DIR).mkdir(exist_ok=True)
            write_file(folder / report.file, faiss.serialize_index(index).tobytes())
            index = None
        out[lang] = (report, index)
    return out


def _fit_stats(vectors: np.ndarray, lang_codes: np.ndarray, langs: list[str]) -> LanguageStats:
    """`LanguageStats.fit(vectors, langs[lang_codes])`, from `_fit_sums`."""
    return LanguageStats.from_sums(_fit_sums(vectors, lang_codes, langs))


def _fit_sums(
    vectors: np.ndarray, lang_codes: np.ndarray, langs: list[str], queries: dict[str, np.ndarray] | None = None
) -> LanguageSums:
    """`LanguageSums.of(vectors, langs[lang_codes], queries)`, the same numbers, without copying
    any language's vectors: its sums are taken over blocks of its rows (`RowsView`) in the order
    and blocks `_moments` takes them, so a language's statistics are the floats `LanguageStats.fit`
    gives. For millions of sentence vectors, a copy of the largest language alone was gigabytes."""
    from qa.rank import _moment_sums

    present = np.flatnonzero(np.bincount(lang_codes, minlength=len(langs)))
    parts = [_moment_sums(RowsView(vectors, np.flatnonzero(lang_codes == code))) for code in present.tolist()]
    return LanguageSums.from_parts([langs[c] for c in present.tolist()], parts, queries, dim=vectors.shape[1])


def read_sums(version_dir: Path) -> tuple[LanguageSums | None, LanguageSums | None]:
    """The passages' and the sentences' `LanguageSums` of an index version: None for a version
    written before they were stored (its statistics must then be fitted again from its vectors
    before they can be updated)."""
    found = []
    for name in (LANG_SUMS, SENTENCE_SUMS):
        path = Path(version_dir) / name
        if not path.exists():
            found.append(None)
            continue
        with np.load(path) as arrays:
            found.append(LanguageSums.from_arrays(arrays))
    return found[0], found[1]


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _start_version(index_dir: Path) -> Path:
    """A new, empty `.building-<version>` folder (renamed to `<version>` when complete)."""
    building = index_dir / f".building-{_new_version_name()}"
    building.mkdir()
    return building


def _write_version(
    building: Path,
    articles: Iterable[Article],
    chunks: Iterable[Chunk],
    vectors: np.ndarray,
    sentences: np.ndarray,
    sentence_vectors: np.ndarray,
    *,
    settings: Settings,
    model: dict[str, Any],
    chunking: dict[str, Any],
    query_means: dict[str, np.ndarray],
    previous: Index | None,
    groups: np.ndarray | None = None,
    recall_queries: np.ndarray | None = None,
    query_sample: dict[str, np.ndarray] | None = None,
) -> tuple[str, dict[str, AnnReport]]:
    """Write a complete new version into `building`, then make it live (the caller holds the
    build lock). An approximate index's recall is tuned on `recall_queries` (see
    `tuning_queries`), else on a sample of the sentence vectors. `query_sample`: the question
    sample `query_means` are the means of, summed into the stored sums (without it, each mean
    is stored as a sample of one)."""
    index_dir = building.parent
    version = building.name.removeprefix(".building-")
    with _write_errors(building):
        # Articles and passages go to disk as they come (the store's records, BM25's runs):
        # what stays in memory is a few numbers per passage and the vocabulary.
        store = StoreWriter(building)
        doc_ids = _DocIds()
        for article in articles:
            store.add_article(article)
            doc_ids.add(article.doc_id)
        lexical = LexicalWriter(building / ".bm25-runs")
        n_passages = 0
        for batch in _batches(chunks, PASSAGE_BATCH):
            store.add_passages(batch)
            for chunk in batch:
                lexical.add(chunk.text)
            n_passages += len(batch)
        del batch
        if n_passages != len(vectors):
            raise ValueError(f"{n_passages} passages but {len(vectors)} vectors")
        langs, languages, n_articles = store.languages(), store.lang_counts(), store.n_articles
        article_codes = store.article_lang_codes()
        columns, passage_codes = store.close()
        write_sentence_links(building, columns, passage_codes, sentences)
        del columns
        sentence_codes = article_codes[np.asarray(sentences[:, 0], np.int64)] if len(sentences) else np.zeros(0, np.int8)
        # Half precision, written a block at a time into the file: only re-scoring and the exact
        # search of small languages read them, and float16 moves a cosine by ~1e-4 (section 16 of
        # benchmarks/README.md). The search structures below are built from the float32 vectors.
        stored = np.lib.format.open_memmap(building / VECTORS, mode="w+", dtype=np.float16, shape=vectors.shape)
        half_rows(vectors, out=stored)
        stored.flush()
        del stored
        _fsync(building / VECTORS)
        if recall_queries is None or not len(recall_queries):
            recall_queries = _sample_rows(sentence_vectors)
        search = _vector_search(vectors, passage_codes, langs, recall_queries, settings, previous, folder=building)
        # Statistics from sums, and the sums kept beside them (float64: 1.2 MB a language at
        # 384 dimensions): added to the sums of other passages they give the statistics of all.
        sums = _fit_sums(vectors, passage_codes, langs, query_sample or {k: v[None] for k, v in query_means.items()})
        stats = LanguageStats.from_sums(sums)
        stats.query_means = query_means  # the sample's float32 means, as `question_sample` gave them
        with (building / LANG_STATS).open("wb") as handle:
            np.savez(handle, **stats.to_arrays())
        with (building / LANG_SUMS).open("wb") as handle:
            np.savez(handle, **sums.to_arrays())
        del sums
        if groups is None:
            # Centred a block of rows at a time, as they are compared (not a centred copy of
            # every vector): the same floats, row by row, as `stats.centered` of all of them.
            passage_langs = np.array(langs)[passage_codes]
            ids = stats.lang_ids(passage_langs)
            groups = translation_groups(
                vectors, passage_langs, settings.group_threshold,
                rows_of=lambda rows: stats.centered(vectors[rows], ids[rows]),
            )
            del passage_langs, ids
        write_file(building / GROUPS, narrow_int(np.asarray(groups, np.int64)))
        write_groups(building, groups)
        lexical.close(building / LEXICAL)
        write_file(building / SENTENCES, narrow_int(np.asarray(sentences)))
        # The int8 codes are written straight into their file (page cache, not heap: 1.8 GB
        # for the 4.7M sentences of a million passages).
        codes = np.lib.format.open_memmap(
            building / SENTENCE_VECTORS, mode="w+", dtype=np.int8, shape=sentence_vectors.shape
        )
        scales = quantize_rows(sentence_vectors, out=codes)[1]
        codes.flush()
        del codes
        _fsync(building / SENTENCE_VECTORS)
        write_file(building / SENTENCE_SCALES, scales)
        sums = _fit_sums(sentence_vectors, sentence_codes, langs)
        with (building / SENTENCE_STATS).open("wb") as handle:
            np.savez(handle, **LanguageStats.from_sums(sums).to_arrays())
        with (building / SENTENCE_SUMS).open("wb") as handle:
            np.savez(handle, **sums.to_arrays())
        written = {
            path.relative_to(building).as_posix(): path for path in sorted(building.rglob("*")) if path.is_file()
        }
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            model=model,
            chunking=chunking,
            corpus={
                "fingerprint": doc_ids.fingerprint(),
                "articles": n_articles,
                "passages": n_passages,
                "languages": languages,
            },
            index={
                "type": "per_language",
                "metric": "inner_product",
                "index_type": settings.index_type,
                "ann_min_passages": settings.ann_min_passages,
                "ntotal": n_passages,
                "languages": {lang: asdict(report) for lang, (report, _) in search.items()},
            },
            files={name: path.stat().st_size for name, path in written.items()},
            # Read back from the page cache: 3.8 s at a million passages (5.7 GB), of a 6-minute write.
            checksums={name: file_checksum(path) for name, path in written.items()},
            versions=_versions(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        write_file(building / MANIFEST, manifest.model_dump_json(indent=2).encode())
        write_stamps(building, list(written))  # hashed just now: a load needs not hash them again
        for sub in [building / ANN_DIR, building / LEXICAL, building / STORE_DIR]:
            if sub.is_dir():
                fsync_dir(sub)
        fsync_dir(building)
        building.rename(index_dir / version)
        swap_pointer(index_dir, version)
        _remove_stale(index_dir, keep={version})
    return version, {lang: report for lang, (report, _) in search.items()}
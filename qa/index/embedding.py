"""Embedding a build's texts: the passages spooled to disk as they are made, passages and
sentences embedded a block at a time with a progress bar, an article that fails left out alone
(not the whole build), and memory-mapped checkpoints that an interrupted build resumes from."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from qa.errors import unexpected_reason
from qa.models import Article, Chunk, SkippedFile

__all__ = [
    "EMBED_BLOCK",
    "EMBED_SLICE",
    "PassageSpool",
    "checkpoint_arrays",
    "drop_sentences",
    "each_row",
    "embed_sentences",
    "embed_with_progress",
    "failure_reason",
    "progress_bar",
    "row_blocks",
    "sentence_rows_of",
    "skipped_article",
    "take_rows",
]

log = logging.getLogger(__name__)

EMBED_SLICE = 64  # passages per progress-bar step; also how often Ctrl-C is noticed
EMBED_BLOCK = 65536  # texts handed to the embedder together (sorted by length within them), read from disk

def embed_with_progress(
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
    killed build resumes where it stopped (see `checkpoint_arrays`). `bar`: a progress bar (`progress_bar`)
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
    shown = progress_bar(progress, len(texts), what.lower()) if bar is None else contextlib.nullcontext(bar)
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


def progress_bar(progress: bool, total: int, what: str):
    """The progress bar of embedding `total` texts (`what`: "passages", "sentences"); none for
    none (an add that only reuses vectors would show an empty bar)."""
    from tqdm import tqdm

    shown = progress and total > 0
    return tqdm(total=total, desc=f"Embedding {what}", unit="text", disable=not shown, file=sys.stderr)


def _embed_isolated(embedder, batch: list[str], owners: list[str], failed: dict[str, str], what: str) -> np.ndarray:
    """`embedder.encode_documents(batch)`; when that fails, each owner's texts on their own (see
    `embed_with_progress`). When every owner of the batch fails alone too, the embedder itself
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
            failed.setdefault(owner, failure_reason(f"embedding its {what.lower()}", owner, exc))
        return vectors


def failure_reason(stage: str, source: str, exc: Exception) -> str:
    """Why an article was left out of the build, in one line (the traceback goes to the debug log)."""
    log.debug("%s failed for %s", stage, source, exc_info=exc)
    return f"{stage} failed ({unexpected_reason(exc)})"


def skipped_article(article: Article, reason: str) -> SkippedFile:
    """The `SkippedFile` that reports `article` left out of the build for `reason` (its title cut
    to 80 characters), with the fix."""
    title = article.title if len(article.title) <= 80 else article.title[:79] + "…"
    return SkippedFile(
        source=article.source,
        reason=f"article {title!r} left out: {reason}; fix or remove it and run `qa index` again "
        "(QA_DEBUG=1 shows the details)",
    )


class PassageSpool:
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


def row_blocks(rows: np.ndarray, size: int | None = None) -> Iterator[np.ndarray]:
    """`rows` in consecutive slices of at most `size` (default EMBED_BLOCK)."""
    size = size or EMBED_BLOCK
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def each_row(rows: np.ndarray) -> Iterator[int]:
    """The numbers of `rows` as ints, converted a block at a time (not a list of them all)."""
    for block in row_blocks(rows):
        yield from block.tolist()


def take_rows(vectors: np.ndarray, rows: np.ndarray, path: Path | None) -> np.ndarray:
    """`vectors[rows]`, written a block at a time into a memory-mapped file at `path` (in memory
    without one): the vectors of a large corpus are never copied into the heap."""
    if path is None:
        return vectors[rows]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=vectors.dtype, shape=(len(rows), vectors.shape[1]))
    for block in row_blocks(np.arange(len(rows))):
        out[block] = vectors[rows[block]]
    return out


def drop_sentences(
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


def _sentence_table(passages: PassageSpool, rows: np.ndarray, number: np.ndarray) -> np.ndarray:
    """(article, start, end) of every sentence of the passages `rows` (grouped by article, in
    corpus order), each once, sorted; `number[owner]`: the article's number among those kept."""
    from qa.chunk import split_sentences

    flat = array("q")
    owners = passages.owner

    def flush(doc: int, spans: set[tuple[int, int]]) -> None:
        for a, b in sorted(spans):
            flat.extend((doc, a, b))

    doc, spans = -1, set()
    for row in each_row(rows):
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


def embed_sentences(articles: Iterable[Article], doc_ids: list[str], passages: PassageSpool, rows: np.ndarray,
                    number: np.ndarray, previous, embedder, progress, failed: dict[str, str],
                    scratch: Path | None = None, reuse: dict[tuple[str, int, int], int] | None = None):
    """Every sentence of the passages `rows`, with its vector: reused from `previous` when its
    article is unchanged, embedded otherwise, a block of texts at a time (read from `articles`,
    the kept articles in order, `doc_ids` theirs). Returns (table, vectors, a mask of the rows
    embedded now). An article whose sentences cannot be embedded is added to `failed`. The
    vectors are a memory-mapped checkpoint in `scratch` when given (see `checkpoint_arrays`).
    `reuse`: the sentences of `previous` that may be reused (`sentence_rows_of`); by default all."""
    table = _sentence_table(passages, rows, number)
    old: dict[tuple[str, int, int], int] = {} if reuse is None else reuse
    if previous is not None and reuse is None:
        old_ids = list(previous.articles)
        for row, (doc, a, b) in enumerate(previous.sentences.tolist()):
            old[(old_ids[doc], a, b)] = row
    dim = embedder.describe()["dim"]
    vectors, done = checkpoint_arrays(scratch, "sentence_vectors", (len(table), dim))
    hits = np.full(len(table), -1, np.int64)
    if old:
        hits[:] = [old.get((doc_ids[doc], a, b), -1) for doc, a, b in table.tolist()]
    missing = np.flatnonzero(hits < 0)
    for block in row_blocks(np.flatnonzero(hits >= 0)):
        vectors[block] = previous.sentence_vectors[hits[block].tolist()]
    # The texts to embed, a block at a time, cut from the articles as they stream by (the
    # missing rows are in article order, as the articles).
    texts: list[str] = []
    at = 0
    stream = iter(articles)
    article, doc = None, -1
    for row in each_row(missing):
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


def sentence_rows_of(previous, passage_rows: dict[str, list[int]]) -> dict[tuple[str, int, int], int]:
    """(doc_id, start, end) -> row in `previous` of each sentence of the passages `passage_rows`
    (doc_id -> that article's rows): what an add may reuse for the articles it writes again with
    new metadata, found through their passages, not by listing every sentence of the index."""
    old: dict[tuple[str, int, int], int] = {}
    for doc_id, rows in passage_rows.items():
        for row in rows:
            for sentence in np.asarray(previous.sentences_of(row), np.int64).tolist():
                _, start, end = previous.sentences[sentence].tolist()
                old[(doc_id, start, end)] = sentence
    return old


def _embed_sentence_block(embedder, texts, table, rows, doc_ids, progress, failed, vectors, done) -> None:
    owners = [doc_ids[doc] for doc in table[rows, 0].tolist()]
    embed_with_progress(
        embedder, texts, progress, "Sentences", owners=owners, failed=failed, out=vectors, rows=rows, done=done,
    )


def checkpoint_arrays(folder: Path | None, name: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
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

"""The index on disk: its layout, the manifest, the `CURRENT` pointer, the build lock and the
one atomic-write helper. Knows nothing of FAISS, the model or the ranking.

Layout of the index directory::

    index/
      CURRENT              name of the live version (replaced atomically)
      v-20261122T101500-3f2a/
        manifest.json      model, dimension, chunking, corpus fingerprint, versions, file sizes
                           and a CRC-32 of each file's content (checked at every load)
        store/             the articles (text and metadata) and the passages' columns, read
                           only for the rows a question returns (see qa.index.store)
        vectors.npy, vector_scales.npy   the L2-normalized passage vectors as int8 codes and
                           a scale per passage (memory-mapped when loaded; read as float32:
                           see qa.index.ann.Int8Rows)
        ann/NNN.faiss      approximate search of each large language (IVF-SQ8, see qa.index.ann)
        lang_stats.npz     per-language mean and covariance of the vectors (see qa.rank)
        lang_sums.npz      the sums they are computed from (qa.rank.LanguageSums), so that
                           statistics can be updated from sums; absent in older indexes
        groups.npy         translation group of each passage
        bm25/              the lexical index over the passages: term counts and passage lengths,
                           scored at question time (see qa.lexical)
        sentences.npy      every sentence of the passages: (article number, start, end), int32
        sentence_vectors.npy, sentence_scales.npy   their embeddings as int8 codes and a scale
                           per sentence (see qa.index.ann.Int8Rows)
        sentence_stats.npz per-language statistics of the sentence vectors
        sentence_sums.npz  the sums they are computed from
        verified.json      inode, size and times of each file when its checksum last matched
                           (not in the manifest: see qa.index.verify.check_files)
      .building-*/         a build in progress; left behind only by a crash, removed next time

A build writes a complete new version beside the live one and then swaps `CURRENT`, so a crash
or Ctrl-C at any point leaves the previous index loadable, and a running server can switch to
the new version between two questions.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from qa.errors import IndexCorruptError, IndexMismatchError, QAError
from qa.locks import file_lock
from qa.models import Article, Chunk

__all__ = [
    "ANN_DIR",
    "ARTICLES",
    "CHECKSUM",
    "FORMAT_VERSION",
    "GROUPS",
    "KEEP_VERSIONS",
    "LANG_STATS",
    "LANG_SUMS",
    "LEXICAL",
    "MANIFEST",
    "PASSAGES",
    "POINTER",
    "READ_BLOCK",
    "SENTENCES",
    "SENTENCE_SCALES",
    "SENTENCE_STATS",
    "SENTENCE_SUMS",
    "SENTENCE_VECTORS",
    "STAMPS",
    "VECTORS",
    "VECTOR_SCALES",
    "VERSION_NAME",
    "ChunkingSpec",
    "CorpusSpec",
    "IndexSpec",
    "LanguageSpec",
    "Manifest",
    "ModelSpec",
    "StoredChunk",
    "atomic_write",
    "build_lock",
    "current_version",
    "file_stamp",
    "fsync_dir",
    "jsonl_bytes",
    "pointer_file",
    "pointer_stamp",
    "read_jsonl",
    "read_manifest",
    "swap_pointer",
    "write_file",
]

# 3: passages and articles in store/ (qa.index.store), not JSON lines; 4: vectors.npy in float16;
# 5: BM25 stores term counts and passage lengths, not scores (qa.lexical); sentences.npy int32;
# 6: vectors.npy as int8 codes with a scale per passage (vector_scales.npy), not float16; the
# article records of store/articles.bin as JSON arrays of the fields' values, not named objects
FORMAT_VERSION = 6
POINTER = "CURRENT"
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a folder beside CURRENT, nothing else
MANIFEST = "manifest.json"
ARTICLES = "articles.jsonl"
PASSAGES = "passages.jsonl"
VECTORS = "vectors.npy"
VECTOR_SCALES = "vector_scales.npy"
ANN_DIR = "ann"
LANG_STATS = "lang_stats.npz"
# The sums the statistics are computed from (`qa.rank.LanguageSums`), so that statistics can be
# updated from sums; a version without them (written before them) is fitted again on update.
LANG_SUMS = "lang_sums.npz"
GROUPS = "groups.npy"
LEXICAL = "bm25"
SENTENCES = "sentences.npy"
SENTENCE_VECTORS = "sentence_vectors.npy"
SENTENCE_SCALES = "sentence_scales.npy"
SENTENCE_STATS = "sentence_stats.npz"
SENTENCE_SUMS = "sentence_sums.npz"
STAMPS = "verified.json"
KEEP_VERSIONS = 2  # the live one and the one before, so a reader mid-switch never loses files
CHECKSUM = "crc32"  # of every file, in the manifest: see `file_checksum` for the choice
READ_BLOCK = 8 << 20  # bytes read (and hashed) at a time when verifying a file


class ModelSpec(BaseModel):
    """The model whose vectors an index holds (`Embedder.describe()`): a load refuses another."""

    model_config = ConfigDict(extra="allow")  # e.g. "backend", informative only

    name: str
    fingerprint: str
    dim: int


class ChunkingSpec(BaseModel):
    """How articles were cut into passages (`qa.chunk.chunking_params`): a change means re-embedding."""

    name: str
    version: int | str
    max_tokens: int
    overlap: int


class CorpusSpec(BaseModel):
    """What the index was built from."""

    fingerprint: str  # see `qa.index.build.corpus_fingerprint`
    articles: int
    passages: int
    languages: dict[str, int]


class LanguageSpec(BaseModel):
    """How one language is searched (`qa.index.ann.AnnReport`, as recorded)."""

    type: str  # "flat" or "ivf_sq8"
    passages: int
    nlist: int = 0
    nprobe: int = 0
    trained_on: int = 0
    recall_at_10: float | None = None
    recall_queries: int = 0
    target_recall: float | None = None
    file: str | None = None  # the approximate index, relative to the version folder
    probe_gap: float | None = None


class IndexSpec(BaseModel):
    """The vector search of the version: exact or approximate per language."""

    type: str  # "per_language"
    metric: str  # "inner_product"
    index_type: str
    ann_min_passages: int
    ntotal: int
    languages: dict[str, LanguageSpec]


class Manifest(BaseModel):
    """What an index was built from, so that loading it with anything else fails loudly."""

    format_version: int
    model: ModelSpec
    chunking: ChunkingSpec
    corpus: CorpusSpec
    index: IndexSpec
    files: dict[str, int]
    # "crc32:<8 hex digits>" of each file's content (`file_checksum`). Empty in indexes written
    # before checksums existed: those load with the size checks only (see `_check_files`).
    checksums: dict[str, str] = {}
    versions: dict[str, str]
    created_at: str


class StoredChunk(BaseModel):
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



# --------------------------------------------------------------------------- the pointer


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
        # (Damaged bytes come back as U+FFFD, a name `open_index` refuses, naming the pointer.)
        name = (index_dir / POINTER).read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    return name or None

def read_manifest(version_dir: Path) -> Manifest:
    """The manifest of a version; an index of another format version is refused by name, before
    its fields are read (they may differ)."""
    path = version_dir / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IndexCorruptError(f"{path} is missing. Rebuild the index with `qa index`.") from None
    try:
        found = json.loads(raw).get("format_version", FORMAT_VERSION)
    except (ValueError, AttributeError):
        found = FORMAT_VERSION  # not a JSON object: the validation below names the problem
    if found != FORMAT_VERSION:
        raise IndexMismatchError(
            f"{version_dir} has index format {found}; this version of qa reads "
            f"format {FORMAT_VERSION}. Rebuild the index with `qa index`."
        )
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise IndexCorruptError(
            f"{path} is not a valid manifest ({exc.error_count()} problems, first: "
            f"{exc.errors()[0]['msg']}). Rebuild the index with `qa index`."
        ) from None


def read_jsonl(path: Path, model: type[BaseModel]) -> list:
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


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def build_lock(index_dir: Path) -> Iterator[None]:
    """Hold the build lock of `index_dir`: one build at a time, a second one fails at once."""
    # One build at a time per index directory; a second one fails at once instead of racing.
    def busy(_lock: Path) -> QAError:
        return QAError(f"Another `qa index` is already building {index_dir}. Wait for it to finish.")

    with file_lock(index_dir / ".lock", wait_s=0, busy=busy):
        yield


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes | np.ndarray) -> None:
    """Write bytes, or an array as .npy, and make it durable before the version goes live."""
    with path.open("wb") as handle:
        if isinstance(data, np.ndarray):
            np.save(handle, data)
        else:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def jsonl_bytes(items: list[BaseModel]) -> bytes:
    """One pydantic record per line (write it with `write_file`; read it with `read_jsonl`)."""
    return b"".join(item.model_dump_json().encode() + b"\n" for item in items)


def atomic_write(dest: Path, write: Callable[[Path], None], *, durable: bool = True) -> bool:
    """Create `dest` (a file or a folder) all at once: `write(tmp)` fills a temporary sibling,
    which is then renamed over `dest`. Returns False, leaving `dest` as it is, when another
    writer's complete folder already stands there (a concurrent conversion won: use its copy).

    Readers never see a half-written `dest`, and a crash leaves only a `.tmp-*` sibling behind.
    The temporary name holds the process id and a random tag, so concurrent writers (threads,
    processes, hosts sharing a cache folder) never write into each other's. With `durable`, the
    content and the rename are fsynced (a power cut leaves the old or the new `dest`, whole).
    The one place this idiom is written: the index pointer, the evaluation's embedding cache, the
    converted model folders.
    """
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        if durable:
            if tmp.is_dir():
                fsync_dir(tmp)
            else:
                with tmp.open("rb+") as handle:
                    os.fsync(handle.fileno())
        try:
            os.replace(tmp, dest)  # a file replaces a file; a folder replaces only an empty folder
        except OSError:
            if not (tmp.is_dir() and dest.is_dir() and any(dest.iterdir())):
                raise
            return False
        if durable:
            fsync_dir(dest.parent)
        return True
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def swap_pointer(index_dir: Path, version: str) -> None:
    """Make `version` the live one: `CURRENT` is replaced at once (see `atomic_write`)."""
    atomic_write(index_dir / POINTER, lambda tmp: tmp.write_bytes(version.encode() + b"\n"))

"""The corpus folder -> articles: walking it, dispatching each file to its format, dropping duplicates.

Every file that cannot be used is reported as a `SkippedFile` with the reason, and the rest of
the corpus still loads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

from qa.errors import IngestError
from qa.ingest.files import DEFAULT_MAX_BYTES, decode, read_bytes, unexpected_failure
from qa.ingest.formats import FILE_READERS, SUPPORTED_EXTENSIONS, TEXT_READERS
from qa.models import Article, SkippedFile
from qa.readers.base import Skip

__all__ = ["CorpusFile", "CorpusScan", "article_digest", "load_corpus", "read_file", "scan_corpus"]

# A file whose modification time is this close to the scan's start (or later) is "racily clean",
# as git calls it: rewritten within the file system's timestamp granularity (up to 2 s on FAT,
# 1 s on some others, plus the kernel's coarse clock) it could keep its size and time. Its
# record is marked, and the next scan reads it again whatever its size and time.
RACY_NS = 3_000_000_000


class CorpusFile(NamedTuple):
    """One corpus file as a scan found it: its size, modification time (ns) and inode when it was
    read, and what it gave: (source, doc_id, digest of the article's JSON) per article and the
    lines skipped. A later scan takes a file whose size, time and inode are these (and that is
    not `racy`) as unchanged, without reading it (`scan_corpus`'s `known`)."""

    source: str
    size: int
    mtime_ns: int
    ino: int
    racy: bool
    articles: list[tuple[str, str, bytes]]
    skipped: list[SkippedFile]


def load_corpus(
    corpus_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[Article], list[SkippedFile]]:
    """Read every supported file under `corpus_dir` (recursively) into articles.

    Returns (articles, skipped), both sorted by source (file path, then .jsonl line number).
    Hidden files and folders are ignored; every other file that cannot be used is in
    `skipped` with the reason. An article identical to an earlier one is skipped as a duplicate.
    Raises IngestError when `corpus_dir` is not a folder.
    """
    root = _corpus_root(corpus_dir)
    articles: list[Article] = []
    skipped: list[SkippedFile] = []
    for found, bad in _read_all(root, max_bytes):
        articles.extend(found)
        skipped.extend(bad)
    unique, duplicates = _drop_duplicates(sorted(articles, key=lambda article: _source_key(article.source)))
    skipped = sorted(skipped + duplicates, key=lambda skip: _source_key(skip.source))
    return unique, skipped


class CorpusScan:
    """The articles of a corpus folder, read once and kept on disk, not in memory: each article's
    JSON is appended to a spool file as its file is read, and only its source, id and place in
    the spool are held. Iterating gives the articles one at a time, in `load_corpus`'s order
    (sorted by source, duplicates left out); `skipped` is `load_corpus`'s list. Close it (or use
    it as a context manager) to drop the spool."""

    def __init__(
        self, spool, entries: list[tuple[str, str, int, int, bytes]], skipped: list[SkippedFile],
        files: list[CorpusFile] | None = None, read: int = 0, spans: dict[str, list] | None = None,
    ):
        self._spool = spool
        # source -> the entries of each file this scan read (`earlier` of a later scan)
        self._spans = spans or {}
        self._records: dict[str, CorpusFile] | None = None  # `files` by source, made when first needed
        # (source, doc_id, offset, length, digest), in corpus order; offset -1: the article of a
        # file not read (unchanged since `known`), whose text is not in the spool
        self._entries = entries
        self.skipped = skipped
        self.files = files or []  # each file read or known, in walk order
        self.read = read  # how many files were read (the others were known unchanged)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Article]:
        """The articles read (those of unchanged files not read are left out: see `in_order`)."""
        for _, _, offset, length, _ in self._entries:
            if offset >= 0:
                yield Article.model_validate_json(self._read(offset, length))

    def in_order(self) -> Iterator[tuple[int, Article | None]]:
        """(position in `doc_ids`, article) of every article; None for one of a file not read."""
        for position, (_, _, offset, length, _) in enumerate(self._entries):
            yield position, (Article.model_validate_json(self._read(offset, length)) if offset >= 0 else None)

    @property
    def not_read(self) -> set[str]:
        """The doc_ids of the articles of the files not read."""
        return {doc_id for _, doc_id, offset, _, _ in self._entries if offset < 0}

    @property
    def doc_ids(self) -> list[str]:
        """The articles' ids, in corpus order."""
        return [entry[1] for entry in self._entries]

    def json_by_id(self) -> Iterator[bytes]:
        """Each article's `model_dump_json()` (of the articles read), sorted by (doc_id, source)."""
        for _, _, offset, length, _ in sorted(self._entries, key=lambda entry: (entry[1], entry[0])):
            if offset >= 0:
                yield self._read(offset, length)

    def digests_by_id(self) -> Iterator[bytes]:
        """`article_digest` of every article (read or not), sorted by (doc_id, source): what a build
        key hashes."""
        for entry in sorted(self._entries, key=lambda entry: (entry[1], entry[0])):
            yield entry[4]

    def read_files(self) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
        """(source, [(doc_id, `article_digest`) of each of its articles]) of each corpus file this
        scan read (itself or through an `earlier` scan), not of the files known unchanged."""
        for source, entries in self._spans.items():
            yield source, [(doc_id, digest) for _, doc_id, _, _, digest in entries]

    def _read(self, offset: int, length: int) -> bytes:
        return os.pread(self._spool.fileno(), length, offset)

    def _kept(self, source: str, info: os.stat_result) -> tuple[CorpusFile, list] | None:
        """(record, spooled entries) of the file `source` as this scan read it, when its size,
        modification time and inode are still those it was read with; else None."""
        if source not in self._spans:
            return None
        if self._records is None:
            self._records = {f.source: f for f in self.files}
        record = self._records.get(source)
        if record is None or (record.size, record.mtime_ns, record.ino) != (info.st_size, info.st_mtime_ns, info.st_ino):
            return None
        return record, self._spans[source]

    def close(self) -> None:
        """Drop the spool."""
        self._spool.close()

    def __enter__(self) -> CorpusScan:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scan_corpus(
    corpus_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, spool_dir: Path | None = None,
    known: Mapping[str, CorpusFile] | None = None, earlier: CorpusScan | None = None,
) -> CorpusScan:
    """`load_corpus` without holding the articles: they are spooled to an unnamed file in
    `spool_dir` (default: the system's temporary folder; on a large corpus choose a disk, not a
    memory-backed /tmp) and read back one at a time from the returned `CorpusScan`. Each file is
    read and parsed once. `known`: an earlier scan's files by source (`CorpusScan.files`); a file
    whose size, modification time (ns) and inode are still those recorded, and that was not racy,
    is not read: its articles are listed from the record (as git's index and rsync decide what
    changed). `earlier`: a scan of the same folder by this build, still open: the files it read
    and that kept their size, time and inode are taken from its spool, not read and parsed again
    (a full build found needed after a scan that read only the changed files). Raises
    IngestError when `corpus_dir` is not a folder."""
    root = _corpus_root(corpus_dir)
    started = time.time_ns()
    # unnamed: gone with the process, whatever happens (closed by `CorpusScan.close`)
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
    try:
        entries: list[tuple[str, str, int, int, bytes]] = []
        skipped: list[SkippedFile] = []
        files: list[CorpusFile] = []
        spans: dict[str, list] = {}
        offset = read = 0
        for path, problem in _walk(root, root):
            source = _source_name(path, root)
            info = _stat(path) if not problem else None
            record = (known or {}).get(source)
            if record is not None and info is not None and _unchanged(record, info):
                entries.extend((name, doc_id, -1, 0, digest) for name, doc_id, digest in record.articles)
                skipped.extend(record.skipped)
                files.append(record)
                continue
            read += 1
            kept = earlier._kept(source, info) if earlier is not None and info is not None else None
            if kept is not None:  # read by `earlier` moments ago: its articles copied, not parsed again
                record, spans[source] = kept[0], []
                for name, doc_id, at, length, digest in kept[1]:
                    spool.write(earlier._read(at, length))
                    spans[source].append((name, doc_id, offset, length, digest))
                    offset += length
                entries.extend(spans[source])
                skipped.extend(record.skipped)
                files.append(record)  # (with the time it was read at: racy or not, as then)
                continue
            found, bad, whole = _read_one(path, source, problem, max_bytes)
            listed, spans[source] = [], []
            for article in found:
                data = article.model_dump_json().encode()
                spool.write(data)
                digest = article_digest(data)
                spans[source].append((article.source, article.doc_id, offset, len(data), digest))
                listed.append((article.source, article.doc_id, digest))
                offset += len(data)
            entries.extend(spans[source])
            skipped.extend(bad)
            if info is not None and whole:  # (a file skipped whole is read again: a fix moves no time)
                racy = info.st_mtime_ns >= started - RACY_NS
                files.append(CorpusFile(source, info.st_size, info.st_mtime_ns, info.st_ino, racy, listed, bad))
        spool.flush()
        entries.sort(key=lambda entry: _source_key(entry[0]))
        unique, duplicates = _first_of_each(entries)
    except BaseException:
        spool.close()
        raise
    skipped = sorted(skipped + duplicates, key=lambda skip: _source_key(skip.source))
    return CorpusScan(spool, unique, skipped, files, read, spans)


def article_digest(data: bytes) -> bytes:
    """16 bytes of the SHA-256 of an article's `model_dump_json()`: what a build key hashes."""
    return hashlib.sha256(data).digest()[:16]


def _stat(path: Path) -> os.stat_result | None:
    # Taken before the file is read: a change while it is read moves its time past this record.
    try:
        return os.stat(path)
    except OSError:
        return None


def _unchanged(record: CorpusFile, info: os.stat_result) -> bool:
    return not record.racy and (record.size, record.mtime_ns, record.ino) == (
        info.st_size, info.st_mtime_ns, info.st_ino
    )


def _corpus_root(corpus_dir: Path) -> Path:
    root = Path(corpus_dir)
    if not root.is_dir():
        raise IngestError(f"corpus folder {str(root)!r} does not exist or is not a folder; set QA_CORPUS_DIR")
    return root


def _read_all(root: Path, max_bytes: int) -> Iterator[tuple[list[Article], list[SkippedFile]]]:
    """(articles, skipped) of each file under `root`, in walk order: one file at a time."""
    for path, problem in _walk(root, root):
        found, bad, _ = _read_one(path, _source_name(path, root), problem, max_bytes)
        yield found, bad


def _read_one(
    path: Path, source: str, problem: str | None, max_bytes: int
) -> tuple[list[Article], list[SkippedFile], bool]:
    """(articles, skipped, whether the file was read: False when it is skipped whole)."""
    try:
        if problem:
            raise Skip(problem)
        found, bad_lines = _read_source(path, source, max_bytes)
    except Skip as skip:
        return [], [SkippedFile(source=source, reason=skip.reason)], False
    except Exception as exc:  # noqa: BLE001 -- a reader bug on one file must not stop the build
        return [], [SkippedFile(source=source, reason=unexpected_failure(source, exc))], False
    return found, bad_lines, True


def read_file(path: Path, corpus_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Article]:
    """Read one corpus file: one article, or one per valid line of a .jsonl file.

    Raises IngestError, naming the file and what is wrong, when the file cannot be used
    (or, for .jsonl, when no line can). Bad lines among good ones are left out; use
    `load_corpus` to get them listed.
    """
    path, root = Path(path), Path(corpus_dir)
    source = _source_name(path, root)
    try:
        problem = _symlink_problem(path, root) if path.is_symlink() else None
        if problem:
            raise Skip(problem)
        articles, bad_lines = _read_source(path, source, max_bytes)
    except Skip as skip:
        raise IngestError(f"{source}: {skip.reason}") from None
    if not articles:
        raise IngestError(f"{source}: no usable line: " + "; ".join(bad.reason for bad in bad_lines[:3]))
    return articles


def _walk(root: Path, folder: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, problem or None) for each non-hidden file under `folder`, symlinks checked, not followed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        yield folder, f"cannot list the folder: {error.strerror or error}"
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            problem = _symlink_problem(path, root)
            if problem is None and path.is_dir():
                problem = "symlinked folder: not followed"
            yield path, problem
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk(root, path)
        else:
            yield path, None


def _symlink_problem(path: Path, root: Path) -> str | None:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink (its target does not exist or loops)"
    if not target.is_relative_to(root.resolve()):
        return f"symlink to {target}, outside the corpus folder"
    return None


def _read_source(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    if any(0xD800 <= ord(char) <= 0xDFFF for char in source):
        raise Skip("the file name is not valid UTF-8; rename the file")
    name = path.name.lower()
    for ending, binary_reader in FILE_READERS.items():  # kinds read from the file, not from decoded text
        if name.endswith(ending):
            return binary_reader(path, source, max_bytes)
    extension = path.suffix.lower()
    reader = TEXT_READERS.get(extension)
    if reader is None:
        kind = f"'{extension}'" if extension else "(no extension)"
        raise Skip(f"unsupported file type {kind}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    text, encoding = decode(read_bytes(path, max_bytes), markup=extension in (".html", ".htm"))
    articles, skipped = reader(text, source)
    return [article.model_copy(update={"encoding": encoding}) for article in articles], skipped


def _source_name(path: Path, root: Path) -> str:
    """Corpus-relative path with forward slashes."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        try:
            relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
        except ValueError:
            raise IngestError(f"{path}: not inside the corpus folder {root}") from None
    return relative.as_posix()


def _source_key(source: str) -> tuple[str, int]:
    # "a.jsonl#10" after "a.jsonl#9": line numbers sort as numbers.
    name, _, line = source.rpartition("#")
    if line.isdigit():  # a .jsonl line, a web archive's record offset
        return name, int(line)
    return source, 0


def _drop_duplicates(articles: list[Article]) -> tuple[list[Article], list[SkippedFile]]:
    first_source: dict[str, str] = {}
    unique, duplicates = [], []
    for article in articles:
        if article.doc_id in first_source:
            reason = f"duplicate: same title and text as {first_source[article.doc_id]}"
            duplicates.append(SkippedFile(source=article.source, reason=reason))
        else:
            first_source[article.doc_id] = article.source
            unique.append(article)
    return unique, duplicates


def _first_of_each(entries: list[tuple[str, str, int, int, bytes]]) -> tuple[list, list[SkippedFile]]:
    """`_drop_duplicates` of the (source, doc_id, ...) entries of `CorpusScan`, sorted by source."""
    first_source: dict[str, str] = {}
    unique, duplicates = [], []
    for entry in entries:
        source, doc_id = entry[0], entry[1]
        if doc_id in first_source:
            reason = f"duplicate: same title and text as {first_source[doc_id]}"
            duplicates.append(SkippedFile(source=source, reason=reason))
        else:
            first_source[doc_id] = source
            unique.append(entry)
    return unique, duplicates

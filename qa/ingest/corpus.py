"""The corpus folder -> articles: walking it, dispatching each file to its format, dropping duplicates.

Every file that cannot be used is reported as a `SkippedFile` with the reason, and the rest of
the corpus still loads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from qa.errors import IngestError
from qa.ingest.files import DEFAULT_MAX_BYTES, decode, read_bytes, unexpected_failure
from qa.ingest.formats import FILE_READERS, SUPPORTED_EXTENSIONS, TEXT_READERS
from qa.models import Article, SkippedFile
from qa.readers.base import Skip

__all__ = ["CorpusScan", "load_corpus", "read_file", "scan_corpus"]


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

    def __init__(self, spool, entries: list[tuple[str, str, int, int]], skipped: list[SkippedFile]):
        self._spool = spool
        self._entries = entries  # (source, doc_id, offset, length), in corpus order
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Article]:
        for _, _, offset, length in self._entries:
            yield Article.model_validate_json(self._read(offset, length))

    @property
    def doc_ids(self) -> list[str]:
        """The articles' ids, in corpus order."""
        return [doc_id for _, doc_id, _, _ in self._entries]

    def json_by_id(self) -> Iterator[bytes]:
        """Each article's `model_dump_json()`, sorted by (doc_id, source): what a build key hashes."""
        for _, _, offset, length in sorted(self._entries, key=lambda entry: (entry[1], entry[0])):
            yield self._read(offset, length)

    def _read(self, offset: int, length: int) -> bytes:
        return os.pread(self._spool.fileno(), length, offset)

    def close(self) -> None:
        """Drop the spool."""
        self._spool.close()

    def __enter__(self) -> CorpusScan:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scan_corpus(
    corpus_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, spool_dir: Path | None = None
) -> CorpusScan:
    """`load_corpus` without holding the articles: they are spooled to an unnamed file in
    `spool_dir` (default: the system's temporary folder; on a large corpus choose a disk, not a
    memory-backed /tmp) and read back one at a time from the returned `CorpusScan`. Each file is
    read and parsed once. Raises IngestError when `corpus_dir` is not a folder."""
    root = _corpus_root(corpus_dir)
    # unnamed: gone with the process, whatever happens (closed by `CorpusScan.close`)
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
    try:
        entries: list[tuple[str, str, int, int]] = []
        skipped: list[SkippedFile] = []
        offset = 0
        for found, bad in _read_all(root, max_bytes):
            for article in found:
                data = article.model_dump_json().encode()
                spool.write(data)
                entries.append((article.source, article.doc_id, offset, len(data)))
                offset += len(data)
            skipped.extend(bad)
        spool.flush()
        entries.sort(key=lambda entry: _source_key(entry[0]))
        unique, duplicates = _first_of_each(entries)
    except BaseException:
        spool.close()
        raise
    skipped = sorted(skipped + duplicates, key=lambda skip: _source_key(skip.source))
    return CorpusScan(spool, unique, skipped)


def _corpus_root(corpus_dir: Path) -> Path:
    root = Path(corpus_dir)
    if not root.is_dir():
        raise IngestError(f"corpus folder {str(root)!r} does not exist or is not a folder; set QA_CORPUS_DIR")
    return root


def _read_all(root: Path, max_bytes: int) -> Iterator[tuple[list[Article], list[SkippedFile]]]:
    """(articles, skipped) of each file under `root`, in walk order: one file at a time."""
    for path, problem in _walk(root, root):
        source = _source_name(path, root)
        try:
            if problem:
                raise Skip(problem)
            found, bad_lines = _read_source(path, source, max_bytes)
        except Skip as skip:
            yield [], [SkippedFile(source=source, reason=skip.reason)]
            continue
        except Exception as exc:  # noqa: BLE001 -- a reader bug on one file must not stop the build
            yield [], [SkippedFile(source=source, reason=unexpected_failure(source, exc))]
            continue
        yield found, bad_lines


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


def _first_of_each(entries: list[tuple[str, str, int, int]]) -> tuple[list, list[SkippedFile]]:
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

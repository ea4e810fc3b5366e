"""What the live version was built from, file by file: so that an add reads only what changed.

Beside a version's files, `corpus_files.npz` lists each corpus file the build read or knew
unchanged: its source, size, modification time (ns), inode, whether it was racily clean (see
`qa.ingest.corpus.RACY_NS`), and the (source, doc_id, digest) of each article it gave, plus the
lines it had skipped. The next `qa index` takes a file whose size, time and inode are still these
as unchanged without reading it (as git's index and rsync do), and reads the files that changed,
appeared or are racy. It is not part of the manifest (not checksummed at load): missing or
unreadable, the next build reads every file. Written after the version is live.

Bytes: per file its source (UTF-8) + 34; per article 20 (doc_id) + 16 (digest) + the source's
suffix after the file's (`#N` of a JSON line, else 1).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from qa.ingest.corpus import CorpusFile
from qa.models import SkippedFile

__all__ = ["CORPUS_FILES", "read_corpus_files", "recorded_digests", "write_corpus_files"]

log = logging.getLogger(__name__)

CORPUS_FILES = "corpus_files.npz"
_FORMAT = 1


def _meta(corpus_dir: Path) -> dict:
    import qa

    # A new version of the readers could read the same bytes into other articles: a record
    # written by another version (or of another corpus folder) is not used.
    return {"format": _FORMAT, "qa": qa.__version__, "corpus": str(Path(corpus_dir).resolve())}


def write_corpus_files(version_dir: Path, corpus_dir: Path, files: list[CorpusFile], left_out: set[str]) -> None:
    """Record `files` (a scan's, `CorpusScan.files`) in the live version `version_dir`, except
    the files with an article in `left_out` (failed: not in the index, so to be read again)."""
    from qa.index.format import atomic_write

    files = [
        f for f in files
        if not any(doc_id in left_out or not name.startswith(f.source) for name, doc_id, _ in f.articles)
    ]
    articles = [a for f in files for a in f.articles]
    arrays = {
        "meta": _bytes(json.dumps(_meta(corpus_dir)).encode()),
        "sources": _bytes("\0".join(f.source for f in files).encode()),
        "stats": np.array([(f.size, f.mtime_ns, len(f.articles)) for f in files], np.int64).reshape(-1, 3),
        "inodes": np.array([f.ino for f in files], np.uint64),
        "racy": np.array([f.racy for f in files], bool),
        "skipped": _bytes(json.dumps({
            str(i): [[s.source, s.reason] for s in f.skipped] for i, f in enumerate(files) if f.skipped
        }).encode()),
        "doc_ids": np.array([doc_id.encode() for _, doc_id, _ in articles] or [b""], bytes)[: len(articles)],
        "digests": np.frombuffer(b"".join(digest for _, _, digest in articles), np.uint8).reshape(-1, 16),
        "suffixes": np.array(
            [name[len(f.source):].encode() or b"=" for f in files for name, _, _ in f.articles] or [b""], bytes
        )[: len(articles)],
    }

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:
            np.savez(handle, **arrays)

    try:
        atomic_write(Path(version_dir) / CORPUS_FILES, write, durable=False)
    except OSError as exc:  # the next build reads every file: slower, not wrong
        log.warning("Could not record the corpus files in %s: %s", version_dir, exc)


def _bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)


def read_corpus_files(version_dir: Path, corpus_dir: Path) -> dict[str, CorpusFile]:
    """The files recorded in `version_dir` by source ({} when there is no usable record)."""
    path = Path(version_dir) / CORPUS_FILES
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        if json.loads(arrays["meta"].tobytes()) != _meta(corpus_dir):
            return {}
        return _records(arrays)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("Ignoring %s (%s): every corpus file is read.", path, exc)
        return {}


def recorded_digests(record: CorpusFile | None) -> dict[str, bytes | None]:
    """The digest of each article (by doc_id) the file `record` gave when the live version was
    built (a value of `read_corpus_files`; None: not recorded, {}). None for a doc_id it gave
    twice (the same article twice in one file: which one is live, the store says)."""
    digests: dict[str, bytes | None] = {}
    for _, doc_id, digest in record.articles if record is not None else ():
        digests[doc_id] = None if doc_id in digests else digest
    return digests


def _records(arrays: dict[str, np.ndarray]) -> dict[str, CorpusFile]:
    sources = arrays["sources"].tobytes().decode().split("\0") if len(arrays["stats"]) else []
    stats, inodes, racy = arrays["stats"].tolist(), arrays["inodes"].tolist(), arrays["racy"].tolist()
    skipped = json.loads(arrays["skipped"].tobytes())
    doc_ids = [d.decode() for d in arrays["doc_ids"].tolist()]
    digests = arrays["digests"]
    suffixes = [s.decode() for s in arrays["suffixes"].tolist()]
    if not (len(sources) == len(stats) == len(inodes) == len(racy)) or sum(s[2] for s in stats) != len(doc_ids):
        raise ValueError("inconsistent lengths")
    out, first = {}, 0
    for i, (source, (size, mtime, n), ino, is_racy) in enumerate(zip(sources, stats, inodes, racy)):
        articles = [
            (source if suffixes[j] == "=" else source + suffixes[j], doc_ids[j], digests[j].tobytes())
            for j in range(first, first + n)
        ]
        first += n
        bad = [SkippedFile(source=s, reason=r) for s, r in skipped.get(str(i), [])]
        out[source] = CorpusFile(source, size, mtime, ino, is_racy, articles, bad)
    return out

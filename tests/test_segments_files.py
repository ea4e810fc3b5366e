"""An add reads only the corpus files that changed (`qa.index.corpus_files`): a file whose size,
modification time (ns) and inode are those the live version recorded is not read again, unless
it was racily clean (modified within `RACY_NS` of the scan that recorded it). Real model and
real FAISS; each file read is counted where the corpus reads a file (`_read_source`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import qa.ingest.corpus
from qa.config import Settings
from qa.index.build import build_index, corpus_fingerprint
from qa.index.corpus_files import CORPUS_FILES, read_corpus_files
from qa.index.format import current_version
from qa.index.load import open_index
from qa.ingest import load_corpus
from qa.ingest.corpus import scan_corpus
from qa.retrieval import retrieve

TEXTS = {
    "port.txt": "Harbour crane collapse\n\nThe harbour crane in Rotterdam collapsed on Monday morning. "
                "Engineers inspected the damage to the quay. The port will reopen next week.\n",
    "vin.txt": "Vendanges précoces\n\nLes vendanges ont commencé en août dans le Bordelais à cause de la "
               "chaleur. Les vignerons craignent une récolte plus petite que prévu.\n",
    "bahn.txt": "Neue Bahnstrecke\n\nDie neue Bahnstrecke zwischen Berlin und Dresden wird im Herbst eröffnet. "
                "Die Fahrzeit sinkt auf eine Stunde und zehn Minuten.\n",
}
ADDED = {"cantine.txt": "Cantine du siège\n\nLe nouveau responsable de la cantine du siège s'appelle Gaston "
                        "Lagaffe depuis lundi. Il a promis des frites tous les jours.\n"}
HOUR_AGO = time.time_ns() - 3600 * 10**9  # written "long ago": not racily clean


def _write(corpus: Path, texts: dict[str, str], mtime_ns: int | None = HOUR_AGO) -> None:
    corpus.mkdir(exist_ok=True)
    for name, text in texts.items():
        (corpus / name).write_text(text, encoding="utf-8")
        if mtime_ns is not None:
            os.utime(corpus / name, ns=(mtime_ns, mtime_ns))


def _same_size_edit(path: Path, old: str, new: str) -> None:
    """Replace `old` by `new` (same length) and put the file's modification time back."""
    assert len(old.encode()) == len(new.encode())
    info = os.stat(path)
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (info.st_size, info.st_mtime_ns, info.st_ino)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The sources of the corpus files read, in order (the real reader is called)."""
    read: list[str] = []
    real = qa.ingest.corpus._read_source

    def counted(path, source, max_bytes):
        read.append(source)
        return real(path, source, max_bytes)

    monkeypatch.setattr(qa.ingest.corpus, "_read_source", counted)
    return read


def _top(question: str, settings: Settings) -> list[str]:
    return [p.text for p in retrieve(question, k=3, settings=settings)]


@pytest.mark.slow
def test_an_add_reads_only_the_changed_files(tmp_path: Path, reads: list[str]):
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    _write(settings.corpus_dir, TEXTS)
    first = build_index(settings=settings)
    assert sorted(reads) == sorted(TEXTS) and first.files_read is None  # a first build reads everything
    assert set(read_corpus_files(settings.index_dir / first.version, settings.corpus_dir)) == set(TEXTS)

    reads.clear()
    _write(settings.corpus_dir, ADDED)
    added = build_index(settings=settings, segments="segment")
    assert reads == ["cantine.txt"] and added.files_read == 1 and added.segments == 2
    assert added.articles == 4 and added.embedded > 0
    assert "Gaston Lagaffe" in _top("Qui dirige la cantine du siège ?", settings)[0]
    # The manifest's corpus fingerprint is that of every live article, the unread ones included.
    manifest = open_index(settings.index_dir).manifest
    assert manifest.corpus.fingerprint == corpus_fingerprint(load_corpus(settings.corpus_dir)[0])

    # A file touched (new time, same bytes) is read again, and nothing else; nothing changed.
    reads.clear()
    os.utime(settings.corpus_dir / "vin.txt", ns=(HOUR_AGO + 10**9, HOUR_AGO + 10**9))
    touched = build_index(settings=settings)
    assert reads == ["vin.txt"] and touched.up_to_date
    # A file removed: the others are not read, its article is tombstoned.
    reads.clear()
    (settings.corpus_dir / "bahn.txt").unlink()
    removed = build_index(settings=settings, segments="segment")
    assert reads == [] and removed.removed_articles == 1 and removed.articles == 3
    assert not any("Bahnstrecke" in text for text in _top("Wann wird die Bahnstrecke eröffnet?", settings))


@pytest.mark.slow
def test_a_same_size_same_time_edit_is_found_only_when_racily_clean(tmp_path: Path, reads: list[str]):
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    _write(settings.corpus_dir, TEXTS)
    _write(settings.corpus_dir, ADDED, mtime_ns=None)  # written now: within RACY_NS of the build
    version = build_index(settings=settings).version
    recorded = read_corpus_files(settings.index_dir / version, settings.corpus_dir)
    assert recorded["cantine.txt"].racy and not recorded["port.txt"].racy

    # The racily clean file rewritten with the same size and time: read again, the edit indexed.
    _same_size_edit(settings.corpus_dir / "cantine.txt", "Gaston Lagaffe", "Prunelle Duval")
    reads.clear()
    report = build_index(settings=settings, segments="segment")
    assert reads == ["cantine.txt"] and not report.up_to_date
    assert "Prunelle Duval" in _top("Qui dirige la cantine du siège ?", settings)[0]

    # The limit (git's and rsync's too): a file last modified long before the index was written,
    # rewritten with the same size and the same modification time, is taken as unchanged ...
    _same_size_edit(settings.corpus_dir / "port.txt", "Monday", "Friday")
    reads.clear()
    assert build_index(settings=settings).up_to_date and "port.txt" not in reads
    assert "Monday" in _top("When did the harbour crane collapse?", settings)[0]
    # ... until `qa index --rebuild`, which reads every file.
    reads.clear()
    rebuilt = build_index(settings=settings, segments="rebuild")
    assert sorted(reads) == sorted([*TEXTS, *ADDED]) and rebuilt.files_read is None
    assert "Friday" in _top("When did the harbour crane collapse?", settings)[0]
    assert (settings.index_dir / current_version(settings.index_dir) / CORPUS_FILES).is_file()


@pytest.mark.slow
def test_a_damaged_record_or_a_full_build_reads_every_file(tmp_path: Path, reads: list[str]):
    settings = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    _write(settings.corpus_dir, TEXTS)
    version = build_index(settings=settings).version
    (settings.index_dir / version / CORPUS_FILES).write_bytes(b"not a record")  # damaged: ignored
    _write(settings.corpus_dir, ADDED)
    reads.clear()
    added = build_index(settings=settings, segments="segment")
    assert sorted(reads) == sorted([*TEXTS, *ADDED]) and added.segments == 2 and added.articles == 4
    # A change of 10 % or more is a full build: every file is read, even with a good record.
    _write(settings.corpus_dir, {"extra.txt": TEXTS["port.txt"].replace("Monday", "Sunday")})
    reads.clear()
    full = build_index(settings=settings)
    # (the new file is read by the first pass, which finds the change too large, and kept for the full read)
    assert sorted(reads) == sorted({*TEXTS, *ADDED, "extra.txt"})
    assert full.segments == 0 and full.articles == 5 and full.files_read is None
    assert "Gaston Lagaffe" in _top("Qui dirige la cantine du siège ?", settings)[0]


def test_a_full_read_after_a_partial_one_keeps_the_files_already_read(tmp_path: Path, reads: list[str]):
    """The full read a build falls back to (`scan_corpus(earlier=...)`) does not read again the
    files its first pass read, unless they changed since: the same scan as a fresh one."""
    corpus = tmp_path / "corpus"
    _write(corpus, TEXTS)
    with scan_corpus(corpus, spool_dir=tmp_path) as recorded:
        known = {f.source: f for f in recorded.files}
    _write(corpus, ADDED)
    reads.clear()
    with scan_corpus(corpus, spool_dir=tmp_path, known=known) as first:
        assert reads == ["cantine.txt"]
        reads.clear()
        with scan_corpus(corpus, spool_dir=tmp_path, earlier=first) as again:
            assert sorted(reads) == sorted(TEXTS) and again.read == 4
            articles, skipped = load_corpus(corpus)
            assert list(again) == articles and again.skipped == skipped and not again.not_read
            with scan_corpus(corpus, spool_dir=tmp_path) as fresh:
                assert again.files == fresh.files and list(again.digests_by_id()) == list(fresh.digests_by_id())
        reads.clear()
        _write(corpus, {"cantine.txt": ADDED["cantine.txt"].replace("lundi", "mardi matin")})  # changed since
        with scan_corpus(corpus, spool_dir=tmp_path, earlier=first) as again:
            assert "cantine.txt" in reads and any("mardi matin" in a.text for a in again)

"""`qa.index.watch`: a write to a watched open file is reported, and a loaded index with nothing
reported compares no file before a question (tests/test_index_damage.py damages every file of
a loaded index through this path)."""

from __future__ import annotations

import os
import sys

import pytest

from qa.config import Settings
from qa.index.build import build_index
from qa.index.load import open_index
from qa.index.watch import watch_files
from tests.fakes import FakeEmbedder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")


@pytest.fixture
def opened(tmp_path):
    path = tmp_path / "vectors.npy"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDONLY)
    yield path, fd
    os.close(fd)


def test_a_write_a_truncation_or_new_times_are_reported_once(opened):
    path, fd = opened
    watch = watch_files([fd])
    assert watch is not None
    try:
        assert not watch.pending()
        with open(path, "r+b") as f:  # same size, new bytes
            f.write(b"y")
        assert watch.pending()
        assert not watch.pending()  # read once
        os.truncate(path, 100)
        assert watch.pending()
        os.utime(path, ns=(1, 1))
        watch.drain()
        assert not watch.pending()
    finally:
        watch.close()


def test_the_watched_file_is_the_open_one_not_its_path(opened, tmp_path):
    """Renaming another file over the path leaves the mapped inode as it was: writes to the new
    file are not the index's concern (`Index.damage`), writes to the open one still are."""
    path, fd = opened
    watch = watch_files([fd])
    assert watch is not None
    try:
        other = tmp_path / "other"
        other.write_bytes(b"z" * 10)
        os.replace(other, path)
        watch.drain()  # (the rename itself may be reported as an attribute change)
        path.write_bytes(b"new file")
        assert not watch.pending()
        same = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)  # the open file, whose path is gone
        try:
            os.write(same, b"!")
        finally:
            os.close(same)
        assert watch.pending()
    finally:
        watch.close()


def test_a_loaded_index_compares_no_file_until_one_is_written(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in range(3):
        (corpus / f"r{n}.txt").write_text(f"Report {n}\n\n" + f"Item {n} is about topic {n}. " * 30, encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=32)
    build_index(corpus, settings=settings, embedder=FakeEmbedder(dim=32))
    index = open_index(settings.index_dir)
    assert index._watch is not None and index.damage() is None

    calls = []
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: calls.append(fd) or real_fstat(fd))
    assert index.damage() is None
    assert calls == []  # quiet: one read of the watch, no fstat

    victim = next(iter(index.mapped.values()))
    os.truncate(victim.path, victim.size // 2)
    problem = index.damage()
    assert problem is not None and str(victim.path) in problem
    assert calls  # reported, so compared
    assert index.damage() is not None  # still damaged: never quiet again until it is not


def test_a_process_forked_after_the_watch_compares_the_files_itself(opened):
    """Parent and child share one event queue: a child never trusts it (the parent could have
    read the event the child needed)."""
    _, fd = opened
    watch = watch_files([fd])
    assert watch is not None
    try:
        assert not watch.pending()
        child = os.fork()
        if child == 0:  # pragma: no cover (the child's exit status is the assertion)
            ok = watch.pending() is True
            watch.drain()  # returns at once (no endless read of a queue that is not its own)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not watch.pending()
    finally:
        watch.close()

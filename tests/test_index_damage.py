"""Index files damaged underneath a loaded engine: truncated, zero-filled, deleted or replaced in turn.

Each file of a live index folder is damaged in place while an engine has the index loaded
(the mistake of copying an index over the live folder, or a disk going bad). A question then
either gets the same passages as before or an IndexCorruptError naming the file and the fix,
never other passages and never a crash (a truncated memory-mapped file would kill the process
with SIGBUS if it were read). Loading the damaged folder afresh is refused, naming the file;
once a good copy is put back the engine answers again. The fake embedder is enough here: this
is about files (the server test with the real model is in test_reliability_faults.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import qa.index.load
import qa.index.verify
import qa.retrieval
from qa.config import Settings
from qa.errors import IndexCorruptError, IndexNotFoundError, QAError
from qa.index.build import build_index
from qa.index.format import STAMPS, current_version
from qa.index.load import open_index
from qa.index.verify import file_checksum
from tests.fakes import FakeEmbedder

QUESTION = "What is item 7 of report 4 about?"


def _write_reports(folder: Path, count: int) -> None:
    folder.mkdir()
    for n in range(count):
        body = " ".join(f"Item {i} of report {n} is about topic {n * 31 + i}." for i in range(40))
        (folder / f"report-{n}.txt").write_text(f"Report {n}\n\n{body}\n", encoding="utf-8")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """An index of ~700 passages with an approximate (IVF) file, so that every kind of file exists."""
    root = tmp_path_factory.mktemp("pristine")
    _write_reports(root / "corpus", 20)
    settings = Settings(index_dir=root / "index", chunk_tokens=32, index_type="ivf")
    build_index(root / "corpus", settings=settings, embedder=FakeEmbedder(dim=32))
    return settings.index_dir


def index_files(index_dir: Path) -> list[str]:
    """Every file of the index folder, relative to it: the pointer and the live version's files."""
    version = index_dir / current_version(index_dir)
    # (Not the stamps of the files last found intact: damaged, they cost a load its time, never
    # an answer: test_a_load_hashes_only_the_files_changed_since_their_checksum_last_matched.
    # Nor the record of the corpus files, which only a build reads: damaged, it reads every file.)
    names = sorted(
        p.relative_to(index_dir).as_posix() for p in version.rglob("*")
        if p.is_file() and p.name not in (STAMPS, "corpus_files.npz")
    )
    assert any("/ann/" in name for name in names) and any("/bm25/" in name for name in names)
    return ["CURRENT", *names]


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def zero_fill(path: Path) -> None:
    # In place, same size: only the content checksum (or the modification time) can tell.
    with path.open("r+b") as handle:
        handle.write(b"\0" * path.stat().st_size)


def replace(path: Path) -> None:
    # A new file of the same size renamed over it (how a careless copy tool swaps a file in).
    other = path.with_name(path.name + ".new")
    other.write_bytes(os.urandom(path.stat().st_size))
    os.replace(other, path)


DAMAGES = {"truncate": truncate, "zero_fill": zero_fill, "delete": Path.unlink, "replace": replace}


@pytest.fixture
def engine_on(monkeypatch):
    """An Engine with the fake embedder over an index folder (every vector file memory-mapped,
    as at a million passages, where the sentence vectors are not decoded into memory)."""
    monkeypatch.setattr(qa.retrieval, "get_embedder", lambda settings: FakeEmbedder(dim=32))
    monkeypatch.setattr(qa.index.load, "SENTENCES_IN_MEMORY", 0)

    def make(index_dir: Path) -> qa.retrieval.Engine:
        return qa.retrieval.Engine(
            Settings(index_dir=index_dir, chunk_tokens=32, index_type="ivf", map_in=False)
        )

    return make


def answer(engine: qa.retrieval.Engine) -> list[tuple]:
    return [(p.doc_id, p.start, p.end, round(p.score, 5)) for p in engine.search(QUESTION, 5, lang="en")]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_each_file_damaged_under_a_loaded_engine_never_misleads_and_recovers(
    pristine, tmp_path, engine_on, damage, monkeypatch
):
    loads: list[Path] = []
    real_open = qa.retrieval.open_index
    monkeypatch.setattr(qa.retrieval, "open_index", lambda path: loads.append(path) or real_open(path))
    names = index_files(pristine)
    outcomes: dict[str, str] = {}
    for name in names:
        index_dir = tmp_path / name.replace("/", "_")
        shutil.copytree(pristine, index_dir, ignore=shutil.ignore_patterns(".lock"))
        engine = engine_on(index_dir)
        expected = answer(engine)
        assert expected and expected[0][0] in engine.index().articles
        path = index_dir / name
        DAMAGES[damage](path)

        # Under the loaded engine: the same passages (intact data), or an error naming the file.
        try:
            outcomes[name] = "same" if answer(engine) == expected else "DIFFERENT"
        except IndexCorruptError as exc:
            assert path.name in str(exc) and "qa index" in str(exc), exc
            outcomes[name] = "error"
            # Asked again: the same error, without loading the unchanged folder again.
            before = len(loads)
            with pytest.raises(IndexCorruptError):
                answer(engine)
            assert len(loads) == before

        # Loaded afresh, the damaged folder is refused, naming the file and the fix.
        with pytest.raises((IndexCorruptError, IndexNotFoundError)) as refused:
            open_index(index_dir)
        message = str(refused.value)
        assert "qa index" in message and (path.name in message or name == "CURRENT"), message

        # A good copy put back (a new file, or the same file rewritten): answered as before.
        shutil.copyfile(pristine / name, path)
        assert answer(engine) == expected, name
        assert open_index(index_dir).version == current_version(pristine)

    assert "DIFFERENT" not in outcomes.values(), outcomes
    version = current_version(pristine)
    if damage in ("delete", "replace"):
        # A deleted or replaced file's inode lives on while it is mapped, the others were read at
        # load, and a pointer to no loadable version leaves the loaded one: all from intact data.
        assert set(outcomes.values()) == {"same"}, outcomes
    else:
        # The memory-mapped files are caught before they are read; the others were read at load,
        # and a pointer to no loadable version leaves the loaded one answering.
        # (The passages' store, the sentence links and BM25's postings are read in place too.)
        mapped = {f"{version}/{name}" for name in qa.index.load.MAPPED_FILES}
        assert f"{version}/store/articles.bin" in mapped and f"{version}/bm25/indices.npy" in mapped
        assert {n for n, outcome in outcomes.items() if outcome == "error"} == mapped, outcomes


def test_checksums_are_written_for_every_file_and_catch_a_flipped_byte(pristine, tmp_path):
    index_dir = shutil.copytree(pristine, tmp_path / "index", ignore=shutil.ignore_patterns(".lock"))
    version = index_dir / current_version(index_dir)
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["checksums"].keys() == manifest["files"].keys()
    for name, checksum in manifest["checksums"].items():
        assert checksum == file_checksum(version / name) and checksum.startswith("crc32:")
    # One byte in the middle of the vectors: same size, same header, only the checksum can tell.
    path = version / "vectors.npy"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy is damaged: its content checksum.*qa index"):
        open_index(index_dir)


def test_a_load_hashes_only_the_files_changed_since_their_checksum_last_matched(pristine, tmp_path, monkeypatch):
    index_dir = shutil.copytree(pristine, tmp_path / "index", ignore=shutil.ignore_patterns(".lock"))
    version = index_dir / current_version(index_dir)
    hashed = []
    real = qa.index.verify._checksum_fd
    monkeypatch.setattr(qa.index.verify, "_checksum_fd", lambda fd: hashed.append(fd) or real(fd))
    files = json.loads((version / "manifest.json").read_text())["files"]

    def load() -> int:
        hashed.clear()
        open_index(index_dir)
        return len(hashed)

    open_index(pristine)
    assert hashed == []  # as built: the build stamped the files it had just hashed
    assert load() == len(files)  # a copy: new inodes, every file hashed, then stamped
    assert load() == 0 and set(json.loads((version / STAMPS).read_text())) == set(files)
    # One byte flipped, the modification time put back: the change time still tells.
    path = version / "vectors.npy"
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy is damaged: its content checksum.*qa index"):
        open_index(index_dir)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert load() == 1  # only the file that changed
    # Damaged or missing stamps: every file hashed again, the index loads.
    (version / STAMPS).write_bytes(b"\0" * 10)
    assert load() == len(files)
    (version / STAMPS).unlink()
    assert load() == len(files) and load() == 0


def test_an_index_written_without_checksums_loads_with_size_checks_and_a_warning(pristine, tmp_path, caplog):
    index_dir = shutil.copytree(pristine, tmp_path / "index", ignore=shutil.ignore_patterns(".lock"))
    version = index_dir / current_version(index_dir)
    manifest = json.loads((version / "manifest.json").read_text())
    del manifest["checksums"]  # as the previous qa wrote it (same format version otherwise)
    (version / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="qa.index.verify"):
        assert len(open_index(index_dir)) == manifest["corpus"]["passages"]
    assert "no content checksums" in caplog.text and "qa index" in caplog.text
    truncate(version / "groups.npy")
    with pytest.raises(IndexCorruptError, match=r"groups\.npy has \d+ bytes but the manifest says"):
        open_index(index_dir)


def test_a_file_changed_between_its_check_and_its_mapping_is_refused(pristine, tmp_path, monkeypatch):
    index_dir = shutil.copytree(pristine, tmp_path / "index", ignore=shutil.ignore_patterns(".lock"))
    real = qa.index.load.load_version

    def rewrite_then_load(version_dir, manifest, mapped):
        path = version_dir / "vectors.npy"  # after its checksum, before its mapping: the rows, not the header
        with path.open("r+b") as handle:
            handle.seek(1024)
            handle.write(b"\0" * (path.stat().st_size - 1024))
        return real(version_dir, manifest, mapped)

    monkeypatch.setattr(qa.index.load, "load_version", rewrite_then_load)
    with pytest.raises(IndexCorruptError, match=r"vectors\.npy was changed on disk while in use"):
        open_index(index_dir)


def test_a_pointer_to_something_that_is_not_a_version_is_refused(pristine, tmp_path):
    index_dir = shutil.copytree(pristine, tmp_path / "index", ignore=shutil.ignore_patterns(".lock"))
    for garbage in ["\0\0\0", "../../etc", "/"]:
        (index_dir / "CURRENT").write_text(garbage)
        with pytest.raises(QAError, match="CURRENT") as err:
            open_index(index_dir)
        assert "qa index" in str(err.value)

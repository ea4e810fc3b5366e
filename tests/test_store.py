"""The index on disk: incremental builds, atomic writes, loud failures on mismatch or damage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError, QAError
from qa.index.build import build_index
from qa.index.format import current_version, pointer_stamp
from qa.index.load import check_model, open_index
from tests.fakes import FakeEmbedder


def write_article(folder: Path, n: int, sentences: int = 12) -> Path:
    body = " ".join(f"Sentence {i} of article {n} talks about subject {n} in detail." for i in range(sentences))
    path = folder / f"article-{n}.txt"
    path.write_text(f"Title of article {n}\n\n{body}\n", encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for n in range(3):
        write_article(folder, n)
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(index_dir=tmp_path / "index", chunk_tokens=64)


def test_missing_index_says_how_to_build(tmp_path: Path):
    with pytest.raises(IndexNotFoundError, match="qa index"):
        open_index(tmp_path / "nowhere")


def test_build_then_load_roundtrip(corpus: Path, settings: Settings):
    embedder = FakeEmbedder()
    report = build_index(corpus, settings=settings, embedder=embedder)
    assert report.articles == 3
    assert report.embedded == report.passages > 3  # every article was split into several passages
    index = open_index(settings.index_dir)
    assert len(index) == report.passages
    for chunk in index.chunks:
        assert index.articles[chunk.doc_id].text[chunk.start : chunk.end] == chunk.text
    manifest = json.loads((index.path / "manifest.json").read_text())
    assert manifest["model"] == embedder.describe()
    assert manifest["chunking"]["max_tokens"] == 64
    assert manifest["corpus"]["articles"] == 3
    assert {"faiss", "sentence_transformers", "torch", "qa"} <= manifest["versions"].keys()
    # The passage vectors and the columns a question reads in place are memory-mapped and can be
    # read in ahead of the questions (qa.index.memory); sentence vectors this few are loaded into
    # memory outright.
    columns = [index.store.lang_codes, index.sentence_member, index.link_start, index.sentence_langs, index.groups]
    expected = index.passage_vectors.nbytes + sum(a.nbytes for a in columns + index.lexical.postings())
    assert index.map_in() == expected > index.passage_vectors.nbytes > 0


def test_incremental_build_embeds_only_what_changed(corpus: Path, settings: Settings):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    before = open_index(settings.index_dir)
    per_doc = {a.source: sum(c.doc_id == a.doc_id for c in before.chunks) for a in before.articles.values()}

    write_article(corpus, 3)  # added
    write_article(corpus, 0, sentences=20)  # changed
    (corpus / "article-1.txt").unlink()  # deleted
    embedder = FakeEmbedder()
    report = build_index(corpus, settings=settings, embedder=embedder)

    after = open_index(settings.index_dir)
    assert report.removed_articles == 2  # the deleted one and the old version of the changed one
    assert report.reused == per_doc["article-2.txt"]
    assert report.embedded == report.passages - report.reused
    # Only the new and changed articles' passages and sentences went through the model.
    assert len(embedder.embedded) == report.embedded + report.sentences_embedded
    unchanged = next(a for a in after.articles.values() if a.source == "article-2.txt")
    assert not any(text in unchanged.text for text in embedder.embedded)
    assert sorted(a.source for a in after.articles.values()) == ["article-0.txt", "article-2.txt", "article-3.txt"]
    # Reused vectors are the very same vectors.
    old = {(c.doc_id, c.chunk_id): row for row, c in enumerate(before.chunks)}
    old_vectors, new_vectors = before.vectors(), after.vectors()
    for row, chunk in enumerate(after.chunks):
        if (chunk.doc_id, chunk.chunk_id) in old:
            assert (new_vectors[row] == old_vectors[old[(chunk.doc_id, chunk.chunk_id)]]).all()


def test_pointer_stamp_changes_exactly_when_a_build_makes_a_new_version_live(corpus: Path, settings: Settings):
    assert pointer_stamp(settings.index_dir) is None
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    first, version = pointer_stamp(settings.index_dir), current_version(settings.index_dir)
    assert first is not None and pointer_stamp(settings.index_dir) == first
    write_article(corpus, 7)
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    assert current_version(settings.index_dir) != version
    assert pointer_stamp(settings.index_dir) != first


def test_unchanged_rebuild_embeds_nothing(corpus: Path, settings: Settings):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    embedder = FakeEmbedder()
    report = build_index(corpus, settings=settings, embedder=embedder)
    assert embedder.embedded == [] and report.reused == report.passages


def test_model_change_reembeds_everything(corpus: Path, settings: Settings):
    build_index(corpus, settings=settings, embedder=FakeEmbedder("fake:1"))
    embedder = FakeEmbedder("fake:2")
    report = build_index(corpus, settings=settings, embedder=embedder)
    assert report.reused == 0 and report.embedded == report.passages


def test_loading_with_another_model_fails_with_the_fix(corpus: Path, settings: Settings):
    build_index(corpus, settings=settings, embedder=FakeEmbedder("fake:1"))
    index = open_index(settings.index_dir)
    other = FakeEmbedder("fake:other", dim=32).describe()
    with pytest.raises(IndexMismatchError) as err:
        check_model(index.manifest, other, settings.index_dir)
    assert "qa index" in str(err.value) and "fake:1" in str(err.value) and "fake:other" in str(err.value)


@pytest.mark.parametrize("damage", ["truncate_vectors", "garbage_manifest", "delete_passages", "bad_pointer"])
def test_damaged_index_fails_naming_the_file(corpus: Path, settings: Settings, damage: str):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    version_dir = settings.index_dir / current_version(settings.index_dir)
    if damage == "truncate_vectors":
        path = version_dir / "vectors.npy"
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage_manifest":
        path = version_dir / "manifest.json"
        path.write_text("{not json")
    elif damage == "delete_passages":
        path = version_dir / "store" / "passages.npy"
        path.unlink()
    else:
        path = settings.index_dir / "CURRENT"
        path.write_text("v-does-not-exist")
    with pytest.raises(IndexCorruptError) as err:
        open_index(settings.index_dir)
    assert path.name in str(err.value) or "v-does-not-exist" in str(err.value)
    assert "qa index" in str(err.value)


def test_empty_corpus_keeps_the_old_index(corpus: Path, settings: Settings, tmp_path: Path):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    version = current_version(settings.index_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QAError, match="No readable articles"):
        build_index(empty, settings=settings, embedder=FakeEmbedder())
    assert current_version(settings.index_dir) == version
    assert len(open_index(settings.index_dir)) > 0


SLOW_BUILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from qa.config import Settings
    from qa.index.build import build_index
    from tests.fakes import FakeEmbedder

    class Slow(FakeEmbedder):
        def encode_documents(self, texts, *, progress=False):
            print("embedding", flush=True)
            time.sleep(0.5)
            return super().encode_documents(texts)

    build_index(Path({corpus!r}), settings=Settings(index_dir=Path({index!r}), chunk_tokens=32), embedder=Slow())
    print("done", flush=True)
    """
)


def test_kill_during_build_leaves_previous_index_usable(corpus: Path, settings: Settings):
    settings = settings.model_copy(update={"chunk_tokens": 32})
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    before = open_index(settings.index_dir)
    for n in range(3, 30):
        write_article(corpus, n, sentences=40)

    script = SLOW_BUILD.format(root=str(Path(__file__).resolve().parents[1]), corpus=str(corpus), index=str(settings.index_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "embedding"  # well inside the build
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    survivor = open_index(settings.index_dir)
    assert survivor.version == before.version and len(survivor) == len(before)
    assert list(settings.index_dir.glob(".building-*"))  # the crash left its half-written build

    report = build_index(corpus, settings=settings, embedder=FakeEmbedder())
    assert report.articles == 30 and report.reused == len(before)
    assert not list(settings.index_dir.glob(".building-*"))  # ...which the next build cleaned up
    assert len(open_index(settings.index_dir)) == report.passages


def test_each_passage_knows_its_sentences(corpus: Path, settings: Settings):
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    index = open_index(settings.index_dir)
    assert len(index.sentences) > len(index)  # several sentences per passage
    for row, chunk in enumerate(index.chunks):
        spans = [tuple(index.sentences[s, 1:]) for s in index.sentences_of(row)]
        assert spans and all(chunk.start <= a < b <= chunk.end for a, b in spans)
        assert spans == sorted(spans)
    rows = np.array([0, 2, len(index) - 1])
    expected = np.flatnonzero(np.isin(index.sentence_owner, rows))
    assert sorted(index.sentence_links(rows).tolist()) == expected.tolist()
    links, positions = index.sentence_runs(rows)
    assert (rows[positions] == index.sentence_owner[links]).all()  # each link's passage, by position


class Interrupted(FakeEmbedder):
    """Counts the texts it embeds; Ctrl-C (KeyboardInterrupt) at its call number `stop_at`."""

    def __init__(self, stop_at: int = -1):
        super().__init__()
        self.calls, self.texts, self.stop_at = 0, 0, stop_at

    def encode_documents(self, texts, *, progress=False):
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.calls += 1
        self.texts += len(texts)
        return super().encode_documents(texts)


def test_an_interrupted_build_resumes_from_its_checkpoint(corpus: Path, settings: Settings, tmp_path: Path):
    from qa.index.build import EMBED_SLICE

    for n in range(3, 12):
        write_article(corpus, n, sentences=40)
    settings = settings.model_copy(update={"chunk_tokens": 32})
    first = Interrupted(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, settings=settings, embedder=first)
    assert first.texts == 2 * EMBED_SLICE and current_version(settings.index_dir) is None
    assert list(settings.index_dir.glob(".checkpoint-*"))  # the vectors embedded so far, kept

    resumed = Interrupted()
    report = build_index(corpus, settings=settings, embedder=resumed)
    clean = Interrupted()
    clean_settings = settings.model_copy(update={"index_dir": tmp_path / "clean"})
    build_index(corpus, settings=clean_settings, embedder=clean)
    assert resumed.texts == clean.texts - first.texts  # only what the first build had not embedded
    assert report.passages == len(open_index(clean_settings.index_dir))
    assert np.array_equal(open_index(settings.index_dir).vectors(), open_index(clean_settings.index_dir).vectors())
    assert not list(settings.index_dir.glob(".checkpoint-*"))  # removed once the version is live

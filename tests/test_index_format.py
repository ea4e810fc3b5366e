"""qa.index.format and the loaded Index's verbs: the one atomic-write helper, the typed manifest,
and the small protocol (`IndexBackend`) another store would implement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.errors import IndexMismatchError
from qa.index.build import build_index
from qa.index.format import FORMAT_VERSION, MANIFEST, LanguageSpec, atomic_write
from qa.index.load import IndexBackend, open_index
from tests.fakes import FakeEmbedder
from tests.test_store import write_article


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def test_atomic_write_replaces_a_file_whole_and_leaves_no_temporary(tmp_path: Path):
    dest = tmp_path / "CURRENT"
    dest.write_text("old\n")
    assert atomic_write(dest, lambda tmp: tmp.write_text("new\n")) is True
    assert dest.read_text() == "new\n" and _leftovers(tmp_path) == []

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(dest, fail)
    assert dest.read_text() == "new\n" and _leftovers(tmp_path) == []  # the old content, whole


def test_atomic_write_of_a_folder_yields_to_a_complete_one_already_there(tmp_path: Path):
    dest = tmp_path / "model"

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "model.xml").write_text("mine")

    assert atomic_write(dest, write) is True and (dest / "model.xml").read_text() == "mine"
    (dest / "model.xml").write_text("the winner's")  # a concurrent writer got there first
    assert atomic_write(dest, write) is False
    assert (dest / "model.xml").read_text() == "the winner's" and _leftovers(tmp_path) == []


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("format")
    corpus = root / "corpus"
    corpus.mkdir()
    for n in range(3):
        write_article(corpus, n)
    (corpus / "de.txt").write_text(
        "Ein deutscher Artikel\n\n" + " ".join(f"Satz {i} über den Wind und das Wetter." for i in range(12)),
        encoding="utf-8",
    )
    settings = Settings(index_dir=root / "index", chunk_tokens=64)
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    return settings


def test_manifest_is_typed_all_the_way_down(built: Settings):
    index = open_index(built.index_dir)
    manifest = index.manifest
    assert manifest.format_version == FORMAT_VERSION and manifest.model.fingerprint == "fake:1"
    assert manifest.chunking.max_tokens == 64 and manifest.corpus.articles == 4
    assert set(manifest.index.languages) == set(index.languages) == {"de", "en"}
    assert all(isinstance(spec, LanguageSpec) and spec.type == "flat" for spec in manifest.index.languages.values())
    # On disk it is the same JSON as before the types: an index written earlier loads as it was.
    raw = json.loads((index.path / MANIFEST).read_text())
    assert raw["model"] == FakeEmbedder().describe() and raw["index"]["languages"]["en"]["type"] == "flat"


def test_another_format_version_is_refused_by_name(built: Settings, tmp_path: Path):
    index = open_index(built.index_dir)
    path = index.path / MANIFEST
    original = path.read_text()
    try:
        path.write_text(json.dumps({"format_version": FORMAT_VERSION + 1, "something": "else"}))
        with pytest.raises(IndexMismatchError, match=f"format {FORMAT_VERSION + 1}"):
            open_index(built.index_dir)
    finally:
        path.write_text(original)


def test_index_answers_the_backend_questions(built: Settings):
    index = open_index(built.index_dir)
    missing = [name for name in dir(IndexBackend) if not name.startswith("_") and not hasattr(index, name)]
    assert missing == [] and len(index) > 4
    row = len(index) - 1
    passage = index.passage(row)
    article = index.article(passage.doc_id)
    assert article.text[passage.start : passage.end] == passage.text
    for sentence in index.sentences_of(row).tolist():
        doc_id, start, end = index.sentence_span(sentence)
        assert doc_id == passage.doc_id and passage.start <= start < end <= passage.end
    vector = index.passage_vectors_at([row])[0]
    scores, rows = index.search_language(article.lang, vector, 3)
    assert rows[0] == row and np.isclose(scores[0], 1.0, atol=0.02)  # itself first (8-bit codes)
    assert all(index.passage(int(r)).doc_id in index.articles for r in rows)
    assert row in index.group_members(row)
    assert len(index.search_language("xx", vector, 3)[1]) == 0  # a language it does not hold

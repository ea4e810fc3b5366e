"""The passages' on-disk store (`qa.index.store`): rows read back exactly as written, looked up by
doc_id and offset, and damage reported as an IndexCorruptError naming the file and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.errors import IndexCorruptError, IndexMismatchError
from qa.index.build import build_index
from qa.index.format import current_version
from qa.index.load import open_index
from qa.index.store import (
    ARTICLE_RECORDS,
    PASSAGE_COLUMNS,
    STORE_FILES,
    LangColumn,
    PassageStore,
    StoreWriter,
)
from qa.index.verify import file_checksum
from qa.models import Article, Chunk
from tests.fakes import FakeEmbedder

NEWS = [
    ("en", "2024-01-10", "https://www.harbour-times.co.uk/a1", "Harbour crane collapses",
     ("A crane collapsed at the harbour on Monday. Nobody was hurt, the port authority said. "
     "Ships were sent to the northern quay while engineers inspect the damage.")),
    ("de", None, "https://www.tagesblatt.de/b1", "Imker melden gute Honigernte",
     ("Die Imker im Landkreis melden eine gute Honigernte. Der warme Frühling half den Bienen. "
     "Der Preis für ein Glas Honig bleibt stabil.")),
    ("ja", "2024-05-02", None, "港のクレーンが倒壊",
     "月曜日に港でクレーンが倒壊した。けが人はいなかったと港湾局は述べた。技術者が被害を調べている。"),
    ("fr", "2024-02-11", "https://www.lejournal.fr/c1", "Un festival de jazz à Lyon",
     ("Le festival de jazz de Lyon a attiré trente mille spectateurs. « Une édition record », "
     "selon les organisateurs. 🎷 La prochaine aura lieu en juillet.")),
]


def _articles() -> tuple[list[Article], list[Chunk]]:
    articles, chunks = [], []
    for n, (lang, date, url, title, text) in enumerate(NEWS):
        article = Article(doc_id=f"doc-{n}", title=title, text=text, lang=lang, source=f"news.jsonl#{n + 1}",
                          url=url, date=date, outlet="Harbour Times" if n == 0 else None)  # fmt: skip
        articles.append(article)
        middle = len(text) // 2
        chunks.append(Chunk(doc_id=article.doc_id, chunk_id=0, text=text[:middle], start=0, end=middle, n_tokens=7))
        chunks.append(Chunk(doc_id=article.doc_id, chunk_id=1, text=text[middle:], start=middle, end=len(text), n_tokens=9))
    return articles, chunks


def _open_store(folder: Path) -> PassageStore:
    arrays = {name: np.load(folder / name, mmap_mode="r") for name in STORE_FILES if name.endswith(".npy")}
    fd = os.open(folder / ARTICLE_RECORDS, os.O_RDONLY)
    try:
        return PassageStore(arrays, fd, folder / ARTICLE_RECORDS, ["de", "en", "fr", "ja"])
    finally:
        os.close(fd)  # the store keeps its own descriptor


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[Article], list[Chunk]]:
    from qa.index.store import write_groups, write_sentence_links

    articles, chunks = _articles()
    writer = StoreWriter(tmp_path, ["de", "en", "fr", "ja"])
    for article in articles:
        writer.add_article(article)
    writer.add_passages(chunks, [articles[i // 2].lang for i in range(len(chunks))])
    columns, codes = writer.close()
    write_groups(tmp_path, np.arange(len(chunks)))
    write_sentence_links(tmp_path, columns, codes, np.zeros((0, 3), np.int64))
    return tmp_path, articles, chunks


def test_every_row_and_article_reads_back_as_written(written):
    folder, articles, chunks = written
    store = _open_store(folder)
    assert len(store) == len(chunks) and store.n_articles == len(articles)
    for row, chunk in enumerate(chunks):
        assert store.passage(row) == chunk  # text (emoji, guillemets, Japanese) and offsets
        assert store.row_of(chunk.doc_id, chunk.start) == row
    for number, article in enumerate(articles):
        assert store.article_at(number) == article  # every field: date, url, outlet, source
        assert store.article_number(article.doc_id) == number
    assert store.article_number("doc-404") is None and store.row_of("doc-0", 1) is None
    assert list(store.doc_ids()) == [a.doc_id for a in articles]
    langs = LangColumn(store.lang_codes, store.langs)
    assert langs[0] == "en" and langs[2] == "de" and langs.tolist() == [a.lang for a in articles for _ in (0, 1)]
    assert (langs == "ja").tolist() == [False] * 4 + [True] * 2 + [False] * 2
    assert list(langs[np.array([7, 0])]) == ["fr", "en"] and not (langs == "xx").any()


def test_a_damaged_record_is_an_index_corrupt_error_naming_the_file(written):
    folder, _, _ = written
    path = folder / ARTICLE_RECORDS
    data = bytearray(path.read_bytes())
    data[3:9] = b"\xff\xfe{[}]"  # garbles the first record, same size
    path.write_bytes(bytes(data))
    store = _open_store(folder)
    with pytest.raises(IndexCorruptError, match=r"articles\.bin is damaged \(article record 0.*qa index"):
        store.passage(0)
    assert store.passage(3).doc_id == "doc-1"  # the other records still read


def test_a_truncated_record_file_is_an_index_corrupt_error(written):
    folder, _, _ = written
    path = folder / ARTICLE_RECORDS
    os.truncate(path, path.stat().st_size - 10)
    store = _open_store(folder)
    with pytest.raises(IndexCorruptError, match=r"articles\.bin is damaged \(article record 3.*qa index"):
        store.article_at(3)


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [json.dumps({"title": t, "text": x, "lang": lang, "url": u, "date": d}, ensure_ascii=False)
             for lang, d, u, t, x in NEWS]  # fmt: skip
    (corpus / "news.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=32)
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    return settings.index_dir


def test_a_built_index_reads_its_passages_from_the_store(index_dir: Path):
    index = open_index(index_dir)
    assert not hasattr(index, "_doc_ids") and isinstance(index.langs, LangColumn)
    assert {a.title for a in index.articles.values()} == {n[3] for n in NEWS}
    for row in range(len(index)):
        chunk = index.passage(row)
        article = index.article(chunk.doc_id)
        assert article.text[chunk.start : chunk.end] == chunk.text and index.langs[row] == article.lang
        assert index.row_of[(chunk.doc_id, chunk.start)] == row and chunk == index.chunks[row]
        for sentence in index.sentences_of(row):
            doc_id, start, end = index.sentence_span(int(sentence))
            assert doc_id == chunk.doc_id and chunk.start <= start < end <= chunk.end
    assert index.row_of.get(("nope", 0)) is None and "nope" not in index.articles


def _rewrite(version: Path, name: str, data: bytes) -> None:
    """Replace a file and record its new size and checksum in the manifest (a consistent but
    wrong file: only the loader's own checks can tell)."""
    (version / name).write_bytes(data)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["files"][name] = len(data)
    manifest["checksums"][name] = file_checksum(version / name)
    (version / "manifest.json").write_text(json.dumps(manifest))


def test_a_store_that_disagrees_with_the_manifest_is_refused_naming_the_file(index_dir: Path):
    import io

    version = index_dir / current_version(index_dir)
    columns = np.load(version / PASSAGE_COLUMNS)
    buffer = io.BytesIO()
    np.save(buffer, columns[:-1])  # one passage fewer than the vectors and the manifest
    _rewrite(version, PASSAGE_COLUMNS, buffer.getvalue())
    with pytest.raises(IndexCorruptError, match=r"store/passages\.npy cannot be read .*qa index"):
        open_index(index_dir)


def test_a_truncated_store_file_is_refused_at_load(index_dir: Path):
    path = index_dir / current_version(index_dir) / ARTICLE_RECORDS
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(IndexCorruptError, match=r"articles\.bin has \d+ bytes but the manifest says.*qa index"):
        open_index(index_dir)


# 2: passages and articles as JSON lines, loaded whole; 3: the passage vectors in float32; 5: in float16
@pytest.mark.parametrize("previous", [2, 3, 5])
def test_an_index_of_a_previous_format_asks_for_a_rebuild(index_dir: Path, previous: int):
    version = index_dir / current_version(index_dir)
    manifest = json.loads((version / "manifest.json").read_text())
    manifest["format_version"] = previous
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match=rf"index format {previous}.*Rebuild the index with `qa index`"):
        open_index(index_dir)


def test_passage_vectors_are_stored_as_int8_codes_and_scored_exactly_as_read(index_dir: Path):
    index = open_index(index_dir)
    stored, scales = np.load(index.path / "vectors.npy"), np.load(index.path / "vector_scales.npy")
    assert stored.dtype == np.int8 and stored.shape == index.passage_vectors.shape == (len(scales), 16)
    rows = np.arange(len(index))[::-1].copy()
    vectors = index.passage_vectors_at(rows)
    assert vectors.dtype == np.float32 and np.array_equal(vectors, stored[rows].astype(np.float32) * scales[rows, None])
    query = vectors[0] + 0.5 * vectors[-1]
    # In place, codes times the question then times the scale, as the float32 rows read out would give.
    assert np.allclose(index.passage_vectors.dots(rows, query), vectors @ query, rtol=0, atol=1e-5)
    assert np.array_equal(index.vectors(), stored.astype(np.float32) * scales[:, None])


def _snapshot(index) -> list:
    """Everything a question reads of the store, row by row."""
    rows = np.arange(len(index))
    links, owners = index.sentence_runs(rows)
    return [
        [index.passage(row) for row in rows.tolist()],
        [index.sentences_of(row).tolist() for row in rows.tolist()],
        [index.group_members(row) for row in rows.tolist()],
        sorted((doc_id, article) for doc_id, article in index.articles.items()),
        index.sentence_member[links].tolist(), owners.tolist(),
        [index.row_of[(c.doc_id, c.start)] for c in index.chunks],
    ]


def test_the_store_is_written_narrow_and_an_index_written_wide_reads_the_same(index_dir: Path):
    import io

    version = index_dir / current_version(index_dir)
    narrow = [name for name in STORE_FILES if name.endswith(".npy") and np.load(version / name).dtype == np.int32]
    # row numbers, offsets and links in int32; the 64-bit keys stay 64-bit
    assert {"store/passages.npy", "store/sentence_members.npy", "store/link_starts.npy"} <= set(narrow)
    assert np.load(version / "store/passage_keys.npy").dtype == np.int64
    assert np.load(version / "groups.npy").dtype == np.int32
    records = (version / ARTICLE_RECORDS).read_bytes()
    # each record the values of the fields, not their names; the unset ones at the end left out
    assert records.startswith(b'["') and b'"doc_id"' not in records and b"null]" not in records
    expected = _snapshot(open_index(index_dir))
    # As an index written before: every integer file in int64, every record with all its fields.
    for name in [*narrow, "groups.npy"]:
        buffer = io.BytesIO()
        np.save(buffer, np.load(version / name).astype(np.int64))
        _rewrite(version, name, buffer.getvalue())
    wide, offsets = b"", [0]
    for article in sorted(open_index(index_dir).articles.values(), key=lambda a: records.index(a.doc_id.encode())):
        wide += article.model_dump_json().encode()
        offsets.append(len(wide))
    assert b'"outlet":null' in wide
    _rewrite(version, ARTICLE_RECORDS, wide)
    buffer = io.BytesIO()
    np.save(buffer, np.array(offsets, np.int64))
    _rewrite(version, "store/article_offsets.npy", buffer.getvalue())
    index = open_index(index_dir)
    assert index.sentence_member.dtype == np.int64 and index.store.columns.dtype == np.int64
    assert _snapshot(index) == expected

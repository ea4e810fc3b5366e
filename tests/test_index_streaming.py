"""The streaming writer (`write_index` over iterables, `LexicalWriter`): the same bytes as the
in-memory writer, whatever the runs' size and however the passages come, and a failed stream
leaves the live index as it was."""

from __future__ import annotations

import filecmp
import itertools
from pathlib import Path

import numpy as np
import pytest

import qa.index.store
from qa.config import Settings
from qa.index.ann import RowsView, exact_neighbours
from qa.index.build import corpus_fingerprint, fit_stats, read_sums, write_index
from qa.index.format import current_version
from qa.index.load import open_index
from qa.lexical import LexicalIndex, LexicalWriter
from qa.models import Article, Chunk
from qa.rank import LanguageStats, LanguageSums, merge_sums

LANGS = ["de", "en", "fr", "ja", "ru", "zh"]
WORDS = {
    "en": ["the", "crane", "harbour", "ship", "port", "quay", "engineer", "damage", "monday"],
    "de": ["der", "Kran", "Hafen", "Schiff", "Imker", "Honig", "Preis", "Straße"],
    "fr": ["le", "festival", "jazz", "Lyon", "record", "juillet", "«", "édition", "»"],
    "zh": ["港口起重机倒塌", "工程师检查", "周一", "49%"],
    "ja": ["港のクレーン", "技術者が被害", "月曜日"],
    "ru": ["порт", "кран", "инженер", "понедельник"],
}


def _corpus(n: int, seed: int = 7, dim: int = 32):
    """n articles of two passages each in six languages (skewed), vectors clustered by language."""
    rng = np.random.default_rng(seed)
    weights = np.array([0.2, 0.45, 0.15, 0.07, 0.03, 0.1])
    articles, chunks, sentences = [], [], []
    for i in range(n):
        lang = str(rng.choice(LANGS, p=weights))
        text = ". ".join(" ".join(rng.choice(WORDS[lang], rng.integers(3, 9))) for _ in range(rng.integers(1, 5)))
        text = "" if i % 97 == 5 else text + "."  # a few empty articles: BM25's placeholder token
        articles.append(Article(doc_id=f"d{i:05d}", title=f"t{i}", text=text, lang=lang, source=f"s/{i}"))
        mid = len(text) // 2
        chunks.append(Chunk(doc_id=f"d{i:05d}", chunk_id=0, text=text[:mid], start=0, end=mid, n_tokens=5))
        chunks.append(Chunk(doc_id=f"d{i:05d}", chunk_id=1, text=text[mid:], start=mid, end=len(text), n_tokens=5))
        sentences += [(i, 0, mid), (i, mid, len(text))]
    centers = rng.standard_normal((len(LANGS), dim)).astype(np.float32)
    codes = [LANGS.index(articles[row // 2].lang) for row in range(len(chunks))]
    vectors = rng.standard_normal((len(chunks), dim)).astype(np.float32) + 2 * centers[codes]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sentence_vectors = vectors + 0.1 * rng.standard_normal(vectors.shape).astype(np.float32)
    means = {lang: centers[k] for k, lang in enumerate(LANGS)}
    return articles, chunks, vectors, np.array(sentences, np.int64), sentence_vectors, means


def _write(folder: Path, corpus, *, stream: bool) -> Path:
    articles, chunks, vectors, sentences, sentence_vectors, means = corpus
    settings = Settings(index_dir=folder, index_type="ivf", ann_min_passages=500)
    write_index(
        folder, iter(articles) if stream else articles, iter(chunks) if stream else chunks, vectors, sentences,
        sentence_vectors, settings=settings, model={"name": "x", "fingerprint": "x", "dim": vectors.shape[1]},
        chunking={"name": "x", "version": 1, "max_tokens": 200, "overlap": 0}, query_means=means,
        recall_queries=vectors[::53] - 0.5 * means["en"],
    )  # fmt: skip
    return folder / current_version(folder)


def _files(version: Path) -> list[str]:
    return sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file())


def test_bm25_written_in_runs_is_byte_identical_to_the_in_memory_index(tmp_path: Path):
    _articles, chunks, *_ = _corpus(1500)
    texts = [c.text for c in chunks] + ["Emmett Shear devient PDG.", "マイクロソフトの株式は49%。", ""]
    LexicalIndex.build(texts, block=333).save(tmp_path / "memory")
    writer = LexicalWriter(tmp_path / "runs", run_postings=2000)
    writer.add_all(texts)
    writer.close(tmp_path / "streamed")
    assert len(writer.runs) > 5  # the merge really merged several runs
    assert not (tmp_path / "runs").exists()  # the runs are removed once merged
    names = sorted(p.name for p in (tmp_path / "memory").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "streamed").iterdir())
    for name in names:
        assert filecmp.cmp(tmp_path / "memory" / name, tmp_path / "streamed" / name, shallow=False), name
    index = LexicalIndex.load(tmp_path / "streamed")
    rows, _ = index.sparse_scores("港口 crane Shear", 10**9)
    assert len(texts) - 3 in rows.tolist()


def test_an_index_written_from_generators_is_byte_identical_to_one_written_from_lists(tmp_path: Path, monkeypatch):
    import qa.lexical

    corpus = _corpus(2500)
    from_lists = _write(tmp_path / "lists", corpus, stream=False)
    monkeypatch.setattr(qa.lexical, "RUN_POSTINGS", 3000)  # many runs: the merge is exercised
    monkeypatch.setattr(qa.lexical.LexicalWriter.__init__, "__defaults__", (3000,))
    streamed = _write(tmp_path / "stream", corpus, stream=True)
    files = _files(from_lists)
    assert files == _files(streamed) and any(name.startswith("ann/") for name in files)  # IVF written
    for name in files:
        if name not in ("manifest.json", "verified.json"):  # they name the version and its time
            assert filecmp.cmp(from_lists / name, streamed / name, shallow=False), name
    index = open_index(tmp_path / "stream")
    assert index.manifest.corpus.fingerprint == corpus_fingerprint(corpus[0])
    assert index.manifest.corpus.passages == len(corpus[1]) and len(index.articles) == len(corpus[0])
    assert index.chunks[17] == corpus[1][17] and index.langs[17] == corpus[0][8].lang


def test_language_statistics_summed_in_blocks_equal_fit_exactly():
    _, _chunks, vectors, *_ = _corpus(800)
    codes = np.random.default_rng(1).integers(0, 4, len(vectors)).astype(np.int8)
    codes[codes == 3] = 2  # a language with no passage: left out, as fit leaves it out
    names = ["de", "en", "fr", "ja"]
    fitted = LanguageStats.fit(vectors, np.array(names)[codes])
    summed = fit_stats(vectors, codes, names)
    assert summed.langs == fitted.langs == ["de", "en", "fr"]
    assert np.array_equal(summed.means, fitted.means) and np.array_equal(summed.covariances, fitted.covariances)


def test_an_index_stores_the_sums_its_statistics_come_from(tmp_path: Path):
    corpus = _corpus(600)
    articles, chunks, vectors, _sentences, _sentence_vectors, means = corpus
    version = _write(tmp_path / "index", corpus, stream=True)
    manifest_files = open_index(tmp_path / "index").manifest.files
    assert {"lang_sums.npz", "sentence_sums.npz"} <= set(manifest_files)
    passages, sentences = read_sums(version)
    langs = [articles[row // 2].lang for row in range(len(chunks))]
    assert passages.langs == sorted(set(langs)) and passages.counts.sum() == len(vectors)
    with np.load(version / "lang_stats.npz") as arrays:
        stored = LanguageStats.from_arrays(arrays)
    again = LanguageStats.from_sums(passages)
    assert np.array_equal(again.means, stored.means) and np.array_equal(again.covariances, stored.covariances)
    assert passages.query_langs == sorted(means) and np.allclose(again.query_means["ja"], means["ja"])
    with np.load(version / "sentence_stats.npz") as arrays:
        assert np.array_equal(LanguageStats.from_sums(sentences).covariances, arrays["covariances"])
    # the sums of two halves, merged, are those of the whole (what adding a segment needs)
    half = len(vectors) // 2
    merged = merge_sums(LanguageSums.of(vectors[:half], langs[:half]), LanguageSums.of(vectors[half:], langs[half:]))
    assert np.allclose(LanguageStats.from_sums(merged).covariances, stored.covariances, atol=1e-6)
    # a version written before the sums were stored: no sums, its statistics load as before
    (version / "lang_sums.npz").unlink()
    (version / "sentence_sums.npz").unlink()
    assert read_sums(version) == (None, None)


def test_exact_neighbours_in_blocks_are_those_of_one_flat_index():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((3000, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    rows = np.flatnonzero(rng.random(3000) < 0.6)
    whole = exact_neighbours(vectors[rows], queries)
    assert np.array_equal(exact_neighbours(RowsView(vectors, rows), queries, block=257), whole)


def test_passages_in_any_order_and_colliding_keys_find_their_article(tmp_path: Path, monkeypatch):
    articles, chunks, vectors, sentences, sentence_vectors, means = _corpus(60)
    # Every doc_id hashed to one of three keys: lookups must tell the articles apart by their records.
    monkeypatch.setattr(qa.index.store, "doc_key", lambda doc_id: int(doc_id[1:]) % 3)
    order = np.random.default_rng(5).permutation(len(chunks))
    shuffled = [chunks[i] for i in order]
    folder = tmp_path / "index"
    write_index(
        folder, iter(articles), iter(shuffled), vectors[order], sentences, sentence_vectors,
        settings=Settings(index_dir=folder), model={"name": "x", "fingerprint": "x", "dim": vectors.shape[1]},
        chunking={"name": "x", "version": 1, "max_tokens": 200, "overlap": 0}, query_means=means,
    )  # fmt: skip
    index = open_index(folder)
    for row, chunk in enumerate(shuffled):
        assert index.chunks[row] == chunk
        assert index.langs[row] == index.articles[chunk.doc_id].lang
        if chunk.end > chunk.start:  # (an empty article's two passages both start at 0)
            assert index.row_of[(chunk.doc_id, chunk.start)] == row


def test_a_stream_that_fails_midway_leaves_the_live_index_and_no_half_version(tmp_path: Path):
    corpus = _corpus(300)
    live = _write(tmp_path, corpus, stream=True).name

    def failing():
        yield from corpus[0][:100]
        raise OSError(5, "Input/output error", "feed.jsonl")

    _articles, chunks, vectors, sentences, sentence_vectors, means = corpus
    with pytest.raises(Exception, match="Input/output error"):
        write_index(
            tmp_path, failing(), iter(chunks), vectors, sentences, sentence_vectors,
            settings=Settings(index_dir=tmp_path), model={"name": "x", "fingerprint": "x", "dim": vectors.shape[1]},
            chunking={"name": "x", "version": 1, "max_tokens": 200, "overlap": 0}, query_means=means,
        )  # fmt: skip
    assert current_version(tmp_path) == live and len(open_index(tmp_path)) == len(chunks)
    assert not list(tmp_path.glob(".building-*"))


def test_passages_of_an_unknown_article_are_refused(tmp_path: Path):
    articles, chunks, vectors, sentences, sentence_vectors, means = _corpus(20)
    stray = Chunk(doc_id="nowhere", chunk_id=0, text="x", start=0, end=1, n_tokens=1)
    with pytest.raises(KeyError, match="nowhere"):
        write_index(
            tmp_path, articles, [*chunks[:-1], stray], vectors, sentences, sentence_vectors,
            settings=Settings(index_dir=tmp_path), model={"name": "x", "fingerprint": "x", "dim": vectors.shape[1]},
            chunking={"name": "x", "version": 1, "max_tokens": 200, "overlap": 0}, query_means=means,
        )  # fmt: skip
    assert not list(tmp_path.glob(".building-*")) and current_version(tmp_path) is None


def test_sentence_links_written_by_blocks_are_those_of_one_pass(tmp_path: Path):
    from qa.index.store import LINK_STARTS, SENTENCE_LANGS, SENTENCE_MEMBERS, write_sentence_links

    articles, chunks, *_ = _corpus(400)
    # Finer sentences than the passages' halves, some crossing a passage's end (in no passage).
    rows = []
    for doc, article in enumerate(articles):
        cuts = sorted({0, len(article.text), *range(0, len(article.text), 7)})
        rows += [(doc, a, b) for a, b in itertools.pairwise(cuts)]
    table = np.array(sorted(rows), np.int64)
    columns = np.array([(i // 2, c.chunk_id, c.start, c.end, 5) for i, c in enumerate(chunks)], np.int64)
    codes = np.arange(len(chunks), dtype=np.int8) % 6
    write_sentence_links(*_made(tmp_path / "one", columns, codes, table))
    shuffled = table[np.random.default_rng(2).permutation(len(table))]
    write_sentence_links(*_made(tmp_path / "blocks", columns, codes, shuffled), block=7)
    for name in (SENTENCE_MEMBERS, LINK_STARTS, SENTENCE_LANGS):
        one, blocks = np.load(tmp_path / "one" / name), np.load(tmp_path / "blocks" / name)
        if name == SENTENCE_MEMBERS:  # the same sentences, numbered as in each table
            one, blocks = table[one], shuffled[blocks]
        assert np.array_equal(one, blocks), name
    members, starts = np.load(tmp_path / "one" / SENTENCE_MEMBERS), np.load(tmp_path / "one" / LINK_STARTS)
    doc, a, b = table[members[starts[3] : starts[4]]].T  # passage 3: article 1's second half
    assert (doc == 1).all() and (a >= chunks[3].start).all() and (b <= chunks[3].end).all() and len(doc) > 1


def _made(folder: Path, *arrays):
    (folder / "store").mkdir(parents=True)
    return (folder, *arrays)

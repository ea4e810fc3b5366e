"""Approximate search for large languages: choice by size, recall measured at build, incremental
updates that reuse or retrain the lists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qa.config import Settings
from qa.index.ann import (
    MIN_PROBES,
    ByteExact,
    LanguageSearch,
    ProbedIVF,
    choose_kind,
    exact_index,
    exact_neighbours,
    fill,
    n_lists,
    nprobe_steps,
    recall_at,
    train_ivf,
    tune_nprobe,
    tune_probes,
)
from qa.index.build import build_index
from qa.index.load import open_index
from qa.retrieval import Engine
from tests.fakes import FakeEmbedder


def clustered(n: int, d: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few dozen centres: neighbourhoods like a real corpus's topics."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    v = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_half_precision_exact_index_finds_the_float32_neighbours():
    vectors, queries = clustered(5_000), clustered(50, seed=1)
    _, found = exact_index(vectors).search(queries, 10)
    truth = exact_neighbours(vectors, queries)
    assert np.mean([len(set(t) & set(f)) / 10 for t, f in zip(truth.tolist(), found.tolist())]) >= 0.99


def test_byte_exact_search_finds_the_float32_neighbours_among_its_candidates():
    vectors, queries = clustered(5_000), clustered(50, seed=3)
    index = ByteExact(vectors)
    truth = exact_neighbours(vectors, queries)
    assert index.ntotal == 5_000 and index.nbytes == 5_000 * vectors.shape[1]  # one byte a dimension
    # What the engine relies on: the exact top 10 are among the 50 candidates it re-scores.
    assert recall_at(index, truth, queries, 50) == 1.0
    assert recall_at(index, truth, queries) >= 0.95
    scores, ids = index.search(queries, 5)
    exact = np.einsum("qd,qkd->qk", queries, vectors[ids])
    assert np.abs(scores - exact).max() < 0.01  # approximate inner products, not ranks


def test_byte_exact_search_takes_a_single_question_and_small_k():
    vectors = clustered(300)
    scores, ids = ByteExact(vectors).search(vectors[7], 3)
    assert scores.shape == ids.shape == (1, 3) and ids[0, 0] == 7


def test_ivf_lists_are_chosen_by_half_precision_centroids_and_keep_their_recall():
    vectors, queries = clustered(20_000), clustered(100, seed=2)
    index = fill(train_ivf(vectors, 64), vectors)
    import faiss

    quantizer = faiss.downcast_index(index.quantizer)
    assert quantizer.ntotal == 64 and quantizer.sq.qtype == faiss.ScalarQuantizer.QT_fp16
    index.nprobe = 16
    assert recall_at(index, exact_neighbours(vectors, queries), queries, 50) >= 0.95


def _languages() -> dict[str, tuple[object, np.ndarray]]:
    """Three languages of different sizes, interleaved in one corpus as a real index's are: two
    IVF (one with a probe gap, one with a fixed nprobe, different list counts) and one exact."""
    vectors = clustered(9_000, seed=4)
    langs = np.array(["de", "en", "ja"])[np.random.default_rng(5).choice(3, 9_000, p=[0.45, 0.5, 0.05])]
    rows = {lang: np.flatnonzero(langs == lang) for lang in ("de", "en", "ja")}
    de = ProbedIVF(fill(train_ivf(vectors[rows["de"]], 32), vectors[rows["de"]]), 12, gap=0.002)
    en = ProbedIVF(fill(train_ivf(vectors[rows["en"]], 64, seed=1), vectors[rows["en"]]), 6)
    return {"de": (de, rows["de"]), "en": (en, rows["en"]), "ja": (ByteExact(vectors[rows["ja"]]), rows["ja"])}


@pytest.mark.parametrize("k", [1, 10, 50])
def test_all_languages_searched_at_once_find_what_each_language_finds_alone(k):
    languages = _languages()
    together = LanguageSearch(languages)
    assert together.ivf_langs == ["de", "en"] and list(together.others) == ["ja"]
    for query in clustered(30, seed=6):
        found = together.search(query, k)
        assert list(found) == ["de", "en", "ja"]
        for lang, (sub, rows) in languages.items():
            scores, ids = sub.search(query[None, :], k)
            np.testing.assert_array_equal(found[lang][1], rows[ids[0]])
            np.testing.assert_allclose(found[lang][0], scores[0], atol=1e-5)


def test_all_languages_at_once_visit_each_language_s_own_lists():
    languages = _languages()
    de, en = languages["de"][0], languages["en"][0]
    together = LanguageSearch(languages)
    # "de" visits the MIN_PROBES lists (its gap is narrow) and any within the gap, "en" its
    # fixed 6: asked for more passages than that, each returns what its own lists hold.
    query = clustered(1, seed=7)[0]
    for probed, lang in ((de, "de"), (en, "en")):
        lists = probed.lists(query[None, :])[1][0]
        held = sum(probed.index.invlists.list_size(int(i)) for i in lists if i >= 0)
        assert len(together.search(query, 5_000)[lang][1]) == held < len(languages[lang][1])


def test_all_languages_at_once_without_any_ivf_language():
    vectors = clustered(500, seed=8)
    rows = np.arange(500)
    found = LanguageSearch({"fr": (ByteExact(vectors), rows)}).search(vectors[42], 3)
    assert list(found) == ["fr"] and found["fr"][1][0] == 42


def test_index_kind_follows_the_size_of_the_language():
    assert choose_kind(4_999, "auto", Settings().ann_min_passages) == "flat"
    assert choose_kind(10_000, "auto", Settings().ann_min_passages) == "ivf_sq8"
    assert choose_kind(10_000, "auto", 50_000) == "flat"
    assert choose_kind(50_000, "auto", 50_000) == "ivf_sq8"
    assert choose_kind(10**6, "flat", 50_000) == "flat"
    assert choose_kind(1_000, "ivf", 50_000) == "ivf_sq8"
    assert choose_kind(100, "ivf", 50_000) == "flat"  # too few passages to train lists on


@pytest.mark.parametrize("n", [700, 10_000, 83_000, 1_000_000])
def test_list_count_is_a_power_of_two_with_enough_training_points(n):
    nlist = n_lists(n)
    assert nlist & (nlist - 1) == 0 and 16 <= nlist and n >= 39 * nlist
    assert nlist <= 8 * np.sqrt(n)


def test_nprobe_is_tuned_until_recall_reaches_the_target():
    vectors = clustered(20_000)
    queries = clustered(200, seed=1)
    index = fill(train_ivf(vectors, n_lists(len(vectors))), vectors)
    nprobe, recall = tune_nprobe(index, vectors, queries, target=0.95)
    assert recall >= 0.95 and nprobe < index.nlist
    index.nprobe = 1
    assert recall_at(index, exact_neighbours(vectors, queries), queries) < recall  # the tuning mattered
    # 8-bit codes: a quarter of float32, plus the ids.
    assert index.code_size == vectors.shape[1]


def topics(n: int, seed: int, count: int = 1000, spread: float = 0.8) -> np.ndarray:
    """Unit vectors around `count` topics shared by every seed (passages and questions alike):
    more topics than lists, so that some questions fall clearly inside a list and some between."""
    centres = np.random.default_rng(0).standard_normal((count, 32))
    rng = np.random.default_rng(seed)
    v = centres[rng.integers(0, count, n)] + spread * rng.standard_normal((n, 32))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_probe_gap_visits_fewer_lists_for_the_same_recall():
    vectors, tuning, held_out = topics(20_000, 0), topics(200, 1), topics(200, 2)
    index = fill(train_ivf(vectors, n_lists(len(vectors))), vectors)
    fixed, _ = tune_nprobe(index, vectors, tuning, 0.95, candidates=50)
    nprobe, gap, recall = tune_probes(index, vectors, tuning, 0.95, candidates=50)
    assert gap is not None and recall >= 0.95 and fixed < nprobe <= 2 * fixed
    probed = ProbedIVF(index, nprobe, gap)
    visited = (probed.lists(held_out)[1] >= 0).sum(axis=1)
    assert visited.mean() < fixed and visited.min() >= MIN_PROBES and visited.max() <= nprobe
    # On questions it was not tuned on, about the recall it was tuned to.
    assert recall_at(probed, exact_neighbours(vectors, held_out), held_out, 50) >= 0.93


def test_probe_gap_skips_exactly_the_lists_past_it():
    vectors = clustered(5_000)
    index = fill(train_ivf(vectors, 64), vectors)
    probed = ProbedIVF(index, 16, gap=0.05)
    scores, lists = probed.lists(vectors[:20])
    skipped = lists < 0
    assert not skipped[:, :MIN_PROBES].any()
    assert (scores[skipped] < scores[:, :1].repeat(16, axis=1)[skipped] - 0.05).all()
    assert (scores[:, MIN_PROBES:][~skipped[:, MIN_PROBES:]] >= (scores[:, :1] - 0.05).repeat(16 - MIN_PROBES, axis=1)[~skipped[:, MIN_PROBES:]]).all()
    # Without a gap: the index's own search over nprobe lists.
    fixed = ProbedIVF(index, 16)
    assert (fixed.search(vectors[:20], 5)[1] == index.search(vectors[:20], 5)[1]).all()
    assert probed.search(vectors[3], 1)[1][0, 0] == 3  # one question, as the engine asks


def test_nprobe_steps_are_powers_of_two_and_half_steps_up_to_a_quarter_of_the_lists():
    assert nprobe_steps(128) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]
    assert nprobe_steps(16) == [1, 2, 3, 4]


def test_recall_counts_the_exact_neighbours_among_the_rescored_candidates():
    class Ranked:  # an index that ranks the true top 10 11th to 20th
        def search(self, queries, k):
            ids = np.r_[np.arange(10, 20), np.arange(10), np.arange(20, 60)][:k]
            return np.zeros((len(queries), k)), np.tile(ids, (len(queries), 1))

    truth = np.tile(np.arange(10), (3, 1))
    queries = np.zeros((3, 4), np.float32)
    assert recall_at(Ranked(), truth, queries) == 0  # its own top 10
    # The engine re-scores its 50 candidates exactly: all ten true neighbours are among them.
    assert recall_at(Ranked(), truth, queries, candidates=50) == 1
    assert recall_at(Ranked(), truth, queries, candidates=15) == 0.5

    vectors, queries = clustered(20_000), clustered(200, seed=1)
    index = fill(train_ivf(vectors, n_lists(len(vectors))), vectors)
    nprobe_own, _ = tune_nprobe(index, vectors, queries, 0.95)
    nprobe_rescored, recall = tune_nprobe(index, vectors, queries, 0.95, candidates=50)
    assert recall >= 0.95 and nprobe_rescored <= nprobe_own


def _write_articles(folder: Path, first: int, count: int) -> None:
    folder.mkdir(exist_ok=True)
    for n in range(first, first + count):
        body = " ".join(f"Item {i} of report {n} is about topic {n * 31 + i}." for i in range(40))
        (folder / f"report-{n}.txt").write_text(f"Report {n}\n\n{body}\n", encoding="utf-8")


def test_large_language_gets_an_ivf_index_that_is_loaded_searched_and_updated(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    _write_articles(corpus, 0, 20)
    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=32, index_type="ivf")
    embedder = FakeEmbedder(dim=32)
    report = build_index(corpus, settings=settings, embedder=embedder)
    assert report.passages >= 700
    spec = json.loads((open_index(settings.index_dir).path / "manifest.json").read_text())["index"]["languages"]["en"]
    assert spec["type"] == "ivf_sq8" and spec["trained_on"] == report.passages
    # Random (fake) vectors have no neighbourhoods to exploit: nprobe is raised to its cap and
    # the summary says the target was missed (real vectors reach it: see test above, benchmarks).
    assert spec["nprobe"] == spec["nlist"] // 4 and 0.5 < spec["recall_at_10"] < settings.ann_target_recall
    assert any("IVF" in line and "recall@10" in line and "below the" in line for line in report.search)

    index = open_index(settings.index_dir)
    assert index.ann["en"].nprobe == spec["nprobe"] and index.ann["en"].ntotal == report.passages
    assert index.ann["en"].gap == spec["probe_gap"] is None  # the target missed: no gap either
    # Fewer passages in the lists visited than asked for: only the real ones come back (FAISS
    # pads with -1, which must not turn into the last passage).
    index.ann["en"].index.nprobe = 1
    scores, rows = index.search_by_language(index.vectors()[5], 500)["en"]
    assert 0 < len(rows) < 500 and len(set(rows.tolist())) == len(rows) == len(scores)
    assert np.all(np.diff(scores) <= 1e-6) and 5 in rows.tolist()
    engine = Engine(settings)
    engine.embedder = embedder
    # A passage's own text embeds (fake model) to its own vector: it must come back first.
    for row in [0, 123, report.passages - 1]:
        chunk = index.chunks[row]
        assert engine.search(chunk.text, 3, lang="en")[0].text == chunk.text

    # A few more articles: the lists are reused (not retrained), the new passages are searchable.
    _write_articles(corpus, 20, 3)
    report = build_index(corpus, settings=settings, embedder=embedder)
    spec = json.loads((open_index(settings.index_dir).path / "manifest.json").read_text())["index"]["languages"]["en"]
    assert spec["passages"] == report.passages and spec["trained_on"] < report.passages
    assert "retraining" not in caplog.text
    newest = open_index(settings.index_dir).chunks[-1]
    assert engine.search(newest.text, 3, lang="en")[0].text == newest.text

    # More than double: the lists no longer fit the data, and the build says it retrains them.
    _write_articles(corpus, 23, 30)
    report = build_index(corpus, settings=settings, embedder=embedder)
    spec = json.loads((open_index(settings.index_dir).path / "manifest.json").read_text())["index"]["languages"]["en"]
    assert spec["trained_on"] == report.passages
    assert "retraining" in caplog.text


def test_small_languages_stay_exact_by_default(tmp_path):
    corpus = tmp_path / "corpus"
    _write_articles(corpus, 0, 3)
    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=32)
    build_index(corpus, settings=settings, embedder=FakeEmbedder())
    index = open_index(settings.index_dir)
    assert index.ann == {} and index.manifest.index.languages["en"].type == "flat"


def test_auto_falls_back_to_exact_search_when_the_ivf_misses_the_recall_target(tmp_path):
    corpus = tmp_path / "corpus"
    _write_articles(corpus, 0, 20)
    # Random (fake) vectors: no IVF reaches 0.97 at a quarter of its lists; exact search wins.
    settings = Settings(index_dir=tmp_path / "index", chunk_tokens=32, ann_min_passages=100)
    report = build_index(corpus, settings=settings, embedder=FakeEmbedder(dim=32))
    index = open_index(settings.index_dir)
    spec = index.manifest.index.languages["en"]  # typed (qa.index.format.LanguageSpec)
    assert index.ann == {} and spec.type == "flat" and spec.recall_at_10 < settings.ann_target_recall
    assert any("exact search" in line and "below the 0.97 target" in line for line in report.search)

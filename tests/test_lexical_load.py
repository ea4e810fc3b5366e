"""BM25 stored as term counts (`LexicalIndex`, `LexicalWriter`) and read without bm25s scores as
bm25s does, and combines across indexes written apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa.lexical import (
    EMPTY_TOKEN,
    LEXICAL_ARRAYS,
    LexicalIndex,
    LexicalWriter,
    bm25_idf,
    bm25_norms,
    bm25_weights,
    mean_length,
    tokenize,
)


def _seed_texts() -> list[str]:
    """The seed corpus's paragraphs (French, German, Japanese...), and texts that exercise the
    edge cases: an empty passage, Cyrillic, a word repeated."""
    corpus = Path(__file__).resolve().parents[1] / "corpus"
    texts = [p for path in sorted(corpus.glob("*")) for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    return texts + ["", "Илья Суцкевер сожалеет.", "Emmett Shear Shear devient PDG.", "マイクロソフトの株式は49%。"]


def _questions(seed_facts) -> list[str]:
    asked = [q for fact in seed_facts for q in fact["questions"].values()]
    return asked + ["Shear Shear PDG", "О чём сожалеет Илья Суцкевер?", "株式を保有", "zzz unknown", ""]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """The index `qa index` writes (`LexicalWriter`) of the seed texts, in a folder."""
    folder = tmp_path_factory.mktemp("bm25")
    writer = LexicalWriter(folder / "runs", run_postings=500)
    writer.add_all(_seed_texts())
    writer.close(folder / "index")
    return folder / "index"


def _mapped(folder: Path) -> dict[str, np.ndarray]:
    return {key: np.load(folder / name, mmap_mode="r") for key, name in LEXICAL_ARRAYS.items()}


def _bm25s_of(texts: list[str]):
    """bm25s indexing the same tokens itself (its default Lucene variant, k1 1.5, b 0.75)."""
    import bm25s

    theirs = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    theirs.index([tokenize(t) or [EMPTY_TOKEN] for t in texts], show_progress=False)
    return theirs


@pytest.mark.parametrize("mapped", [False, True], ids=["loaded", "memory-mapped"])
def test_scores_from_stored_counts_are_bm25s_scores(saved: Path, seed_facts, mapped: bool):
    """BM25 stores term counts and scores at question time (`bm25_weights`): the scores are those
    of bm25s indexing the same tokens, to float32 precision, in every language of the seed facts."""
    ours = LexicalIndex.load(saved, arrays=_mapped(saved) if mapped else None)
    in_memory = LexicalIndex.build(_seed_texts())
    theirs = _bm25s_of(_seed_texts())
    assert ours.passages == len(_seed_texts()) and ours.counts.dtype == np.uint8
    assert set(ours.vocab) == set(theirs.vocab_dict) - {""}  # bm25s adds an empty token
    questions = _questions(seed_facts)
    assert len({fact_lang for fact in seed_facts for fact_lang in fact["questions"]}) >= 5  # several languages
    matched = 0
    for question in questions:
        tokens = [t for t in tokenize(question) if t in theirs.vocab_dict]
        expected = theirs.get_scores(tokens) if tokens else np.zeros(len(_seed_texts()), np.float32)
        got = ours.scores(question)
        assert got.dtype == np.float32, question
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-6, err_msg=question)
        if expected.any():
            matched += 1
            assert int(np.argmax(got)) == int(np.argmax(expected)), question
        assert np.array_equal(got, in_memory.scores(question)), question  # written or built: same floats
        for budget in (10**9, 20):
            rows, scores = ours.sparse_scores(question, budget)
            built_rows, built_scores = in_memory.sparse_scores(question, budget)
            assert np.array_equal(rows, built_rows) and np.array_equal(scores, built_scores), question
        full_rows, full_scores = ours.sparse_scores(question, 10**9)
        np.testing.assert_allclose(full_scores, got[full_rows], rtol=1e-6)  # the sparse and the dense sum agree
        assert set(full_rows.tolist()) == set(np.flatnonzero(got).tolist()), question
    assert matched >= 0.8 * len(questions)  # the questions really share words with the passages


def test_a_count_past_255_is_stored_in_uint16_and_scored_as_bm25s(tmp_path: Path):
    texts = ["Shear " * 300 + "PDG", "Shear devient PDG.", "Rien à voir."]
    writer = LexicalWriter(tmp_path / "runs")
    writer.add_all(texts)
    writer.close(tmp_path / "index")
    index = LexicalIndex.load(tmp_path / "index")
    assert index.counts.dtype == np.uint16 and int(index.counts.max()) == 300  # not wrapped to 44
    expected = _bm25s_of(texts).get_scores(["shear"])
    np.testing.assert_allclose(index.scores("Shear"), expected, rtol=2e-6)
    assert LexicalIndex.build(["Shear " * 3]).counts.dtype == np.uint8


def test_statistics_summed_over_two_indexes_give_the_scores_of_one(seed_facts):
    """What segments need: two indexes written apart, scored with their summed statistics
    (document frequencies, passages, summed lengths), give the weights of one index over all."""
    texts = _seed_texts()
    whole, first, second = LexicalIndex.build(texts), LexicalIndex.build(texts[:40]), LexicalIndex.build(texts[40:])
    passages = first.passages + second.passages
    avgdl = mean_length(first.total_length + second.total_length, passages)
    assert avgdl == whole.avgdl
    for question in _questions(seed_facts)[:20]:
        for token in {t for t in tokenize(question) if t in whole.vocab}:
            df = sum(int(np.diff(p.indptr)[p.vocab[token]]) for p in (first, second) if token in p.vocab)
            idf = bm25_idf(np.array([df]), passages).astype(np.float32)[0]
            t = whole.vocab[token]
            want = dict(zip(whole.rows_at(whole.indptr[t], whole.indptr[t + 1]).tolist(),
                            whole.weights()[whole.indptr[t] : whole.indptr[t + 1]].tolist()))  # fmt: skip
            for part, offset in ((first, 0), (second, 40)):
                if token in part.vocab:
                    u = part.vocab[token]
                    start, end = part.indptr[u], part.indptr[u + 1]
                    rows = part.rows_at(start, end)
                    got = bm25_weights(part.counts[start:end], bm25_norms(part.lengths[rows], avgdl), idf)
                    assert got.tolist() == [want[r + offset] for r in rows.tolist()], token


def test_an_index_of_precomputed_scores_is_refused_with_the_fix(tmp_path: Path):
    _bm25s_of(["Emmett Shear devient PDG.", "Rien."]).save(str(tmp_path), show_progress=False)
    with pytest.raises(ValueError, match="qa index"):
        LexicalIndex.load(tmp_path)


def test_the_loaded_index_keeps_the_analyzer_it_was_built_with(tmp_path: Path):
    LexicalIndex.build(["Другое.", "Илья Суцкевер сожалеет."], analyzer=1).save(tmp_path)
    old = LexicalIndex.load(tmp_path, analyzer=1)
    assert old.analyzer == 1 and int(np.argmax(old.scores("Илья Суцкевер"))) == 1
    assert LexicalIndex.load(tmp_path).scores("Илья Суцкевер").max() == 0  # the new analyzer misses it


def test_loading_an_index_does_not_import_bm25s_numba_or_scipy(saved: Path):
    code = (
        "import sys; from pathlib import Path; from qa.lexical import LexicalIndex; "
        f"index = LexicalIndex.load(Path({str(saved)!r})); index.scores('Microsoft OpenAI'); index.idf(['openai']); "
        "print(sorted(m for m in ('bm25s', 'numba', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_with_languages_each_passage_is_scored_with_its_languages_idf(seed_facts):
    """`set_languages`: a token's idf is counted among the passages of the passage's language, out
    of that language's passages; `scores`, `sparse_scores` and the weights a store copies agree."""
    texts = ["die Katze schläft", "die Maus läuft", "die Katze frisst", "the cat sleeps", "the dog runs"]
    langs = np.array([0, 0, 0, 1, 1], np.uint8)
    index = LexicalIndex.build(texts).set_languages(langs)
    norms = bm25_norms(index.lengths, index.avgdl)
    # "katze": in 2 of the 3 German passages; "die": in all 3 (over the pool it was 3 of 5).
    katze = bm25_weights([1, 1], norms[[0, 2]], bm25_idf([2, 2], 3))
    want = katze + bm25_weights([1, 1], norms[[0, 2]], bm25_idf([3, 3], 3))
    scores = index.scores("die Katze")
    np.testing.assert_array_equal(scores[[0, 2]], want)
    assert scores[1] == bm25_weights(1, norms[1], bm25_idf(3, 3)) and not scores[3:].any()
    # "cat" in 1 of the 2 English passages (not 1 of 5).
    assert index.scores("cat")[3] == bm25_weights(1, norms[3], bm25_idf(1, 2))
    rows, sparse = index.sparse_scores("die Katze cat", budget=10**6)
    full = index.scores("die Katze cat")
    assert rows.tolist() == np.flatnonzero(full).tolist()
    np.testing.assert_allclose(sparse, full[rows], rtol=1e-6)
    # The weights a store keeps (one per posting, token-major) are the same per-language weights.
    weights = index.weights()
    t = index.vocab["katze"]
    start, end = index.indptr[t], index.indptr[t + 1]
    np.testing.assert_array_equal(weights[start:end], katze)


def test_languages_must_name_every_passage():
    with pytest.raises(ValueError, match="2 language ids for 3 passages"):
        LexicalIndex.build(["a", "b", "c"]).set_languages(np.zeros(2, np.uint8))


def test_postings_packed_with_lengths_score_as_unpacked_ones_and_the_earlier_format_still_reads(
    saved: Path, seed_facts, tmp_path: Path
):
    """Format 2 packs each posting's passage with its length; a folder of format 1 (passages
    alone, int32, no `row_bits`) is read as it was, with the same rows and scores."""
    import json
    import shutil

    from qa.lexical import PARAMS, UNPACKED, unpack_rows

    packed = LexicalIndex.load(saved)
    assert packed.row_bits < UNPACKED and packed.indices.dtype == np.uint32
    assert (packed.indices >> np.uint32(packed.row_bits)).any()  # lengths are there
    old = tmp_path / "format1"
    shutil.copytree(saved, old)
    np.save(old / LEXICAL_ARRAYS["indices"], unpack_rows(packed.indices, packed.row_bits).astype(np.int32))
    params = json.loads((old / PARAMS).read_text())
    params["version"] = 1
    del params["row_bits"]
    (old / PARAMS).write_text(json.dumps(params))
    earlier = LexicalIndex.load(old)
    assert earlier.row_bits == UNPACKED
    for question in _questions(seed_facts):
        got, want = packed.sparse_scores(question, 50_000), earlier.sparse_scores(question, 50_000)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), question
        assert np.array_equal(packed.scores(question), earlier.scores(question)), question
    assert np.array_equal(packed.weights(), earlier.weights())

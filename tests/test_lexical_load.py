"""A saved BM25 index read without bm25s (`LexicalIndex.load`) scores as bm25s reads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qa.lexical import LEXICAL_ARRAYS, LexicalIndex, LexicalWriter, tokenize


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


@pytest.mark.parametrize("mapped", [False, True], ids=["loaded", "memory-mapped"])
def test_the_loaded_index_scores_as_bm25s_float_for_float(saved: Path, seed_facts, mapped: bool):
    import bm25s

    ours = LexicalIndex.load(saved, arrays=_mapped(saved) if mapped else None)
    theirs = bm25s.BM25.load(str(saved), show_progress=False, verbosity=0, mmap=mapped)
    via_bm25s = LexicalIndex(theirs)  # the previous load: bm25s's own object
    assert ours._retriever.vocab_dict == theirs.vocab_dict
    assert ours._retriever.scores["num_docs"] == theirs.scores["num_docs"] == len(_seed_texts())
    questions = _questions(seed_facts)
    assert len({fact_lang for fact in seed_facts for fact_lang in fact["questions"]}) >= 5  # several languages
    matched = 0
    for question in questions:
        tokens = [t for t in tokenize(question) if t in theirs.vocab_dict]
        expected = theirs.get_scores(tokens).astype(np.float32) if tokens else np.zeros(len(_seed_texts()), np.float32)
        got = ours.scores(question)
        assert got.dtype == np.float32 and np.array_equal(got, expected), question  # bit for bit
        matched += bool(expected.any())
        for budget in (10**9, 20):
            rows, scores = ours.sparse_scores(question, budget)
            old_rows, old_scores = via_bm25s.sparse_scores(question, budget)
            assert np.array_equal(rows, old_rows) and np.array_equal(scores, old_scores), question
        np.testing.assert_array_equal(ours.idf(tokens + ["zzz"]), via_bm25s.idf(tokens + ["zzz"]))
    assert matched >= 0.8 * len(questions)  # the questions really share words with the passages
    assert all(np.array_equal(a, b) for a, b in zip(ours.postings(), via_bm25s.postings()))


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

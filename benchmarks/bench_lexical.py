"""BM25 at question time: scores computed from stored term counts against precomputed scores.

An index stores per posting its term count (uint8) and per passage its length, and computes the
BM25 weights of the postings a question reads at question time (`qa.lexical.bm25_weights`),
where the previous format stored a float32 score per posting. Both are measured here in the
same process on the same postings: the index is written by the real writer
(`qa.lexical.LexicalWriter`) over N passages (the XQuAD paragraphs of every language, repeated
and cut at a random point so that each passage differs), loaded memory-mapped, and the
previous layout's scores file is written beside it from the same weights (bit for bit what
the previous writer stored). Real XQuAD questions (2,000 sampled over every language): each is answered by both
paths alternately (`sparse_scores` at the default posting budget, then the previous path:
the same postings merged from the stored scores), 3 rounds; the results are checked equal.

    python benchmarks/bench_lexical.py --sizes 300000          # ~5 minutes on 2 busy cores
    python benchmarks/bench_lexical.py --sizes 1000000         # ~7 minutes, ~3 GB at its peak
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, describe_machine, machine, percentiles, table, write_json

ROUNDS = 3


def material() -> tuple[list[str], list[str]]:
    """(passage texts, questions): every XQuAD paragraph and question, all languages."""
    from qa.xquad import find_xquad, load_xquad

    folder = find_xquad(ROOT)
    if folder is None:
        raise SystemExit("No XQuAD data found (data/xquad or shared/data/xquad): see qa/xquad.py.")
    data = load_xquad(folder)
    texts = [p for lang in data.langs for p in data.paragraphs[lang] if p]
    questions = [q for lang in data.langs for q in data.questions[lang] if q]
    return texts, questions


def passages(texts: list[str], n: int, rng):
    """n passages: the texts in turn, each cut at a random point (a different passage each time)."""
    for i in range(n):
        text = texts[i % len(texts)]
        yield text[int(rng.integers(0, max(1, len(text) // 4))) :]


def previous_path(index, stored: np.ndarray, question: str, budget: int):
    """The previous format's question: the same postings, their precomputed scores merged."""
    from qa.kernels import merge_postings
    from qa.lexical import postings_to_read, tokenize

    indptr = index.indptr
    ids = [index.vocab[t] for t in tokenize(question, index.analyzer) if t in index.vocab]
    read, weights = postings_to_read(ids, {i: int(indptr[i + 1] - indptr[i]) for i in ids}, budget)
    starts = np.array([indptr[i] for i in read], np.int64)
    ends = np.array([indptr[i + 1] for i in read], np.int64)
    return merge_postings(np.asarray(index.indices), stored, starts, ends, weights)


def run(n: int, texts: list[str], questions: list[str], budget: int, work: Path) -> dict:
    from qa.lexical import LEXICAL_ARRAYS, LexicalIndex, LexicalWriter

    t0 = time.perf_counter()
    writer = LexicalWriter(work / "runs")
    writer.add_all(passages(texts, n, np.random.default_rng(n)))
    writer.close(work / "bm25")
    write_s = time.perf_counter() - t0
    folder = work / "bm25"
    arrays = {key: np.load(folder / name, mmap_mode="r") for key, name in LEXICAL_ARRAYS.items()}
    index = LexicalIndex.load(folder, arrays=arrays)
    np.save(work / "data.npy", index.weights())  # the previous format's float32 scores
    stored = np.load(work / "data.npy", mmap_mode="r")
    sizes = {name: (folder / name).stat().st_size / n for name in sorted(p.name for p in folder.iterdir())}
    before = {"data (float32 scores)": stored.nbytes / n, **{k: v for k, v in sizes.items() if k != "counts.npy"}}
    before.pop("lengths.npy", None)
    for question in questions[:50]:  # compile the kernels and read the pages in, both paths
        index.sparse_scores(question, budget)
        previous_path(index, stored, question, budget)
    now, then = [], []
    for _ in range(ROUNDS):
        for question in questions:
            t = time.perf_counter()
            rows, scores = index.sparse_scores(question, budget)
            now.append(time.perf_counter() - t)
            t = time.perf_counter()
            old_rows, old_scores = previous_path(index, stored, question, budget)
            then.append(time.perf_counter() - t)
            if not (np.array_equal(rows, old_rows) and np.array_equal(scores, old_scores)):
                raise AssertionError(f"the two paths differ for {question!r}")
    return {
        "passages": n, "postings_per_passage": round(len(index.indices) / n, 1), "write_s": round(write_s, 1),
        "questions": len(questions), "rounds": ROUNDS, "counts": percentiles(now), "scores": percentiles(then),
        "bytes_per_passage_counts": {k: round(v, 1) for k, v in sizes.items()},
        "bytes_per_passage_scores": {k: round(v, 1) for k, v in before.items()},
        "counts_dtype": str(index.counts.dtype), "lengths_dtype": str(index.lengths.dtype),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000])
    parser.add_argument("--label", default="counts")
    parser.add_argument("--questions", type=int, default=2000, help="real questions sampled, all languages")
    args = parser.parse_args(argv)
    from qa.config import Settings

    budget = Settings().lexical_posting_budget
    texts, questions = material()
    picks = np.random.default_rng(0).permutation(len(questions))[: args.questions]
    questions = [questions[i] for i in sorted(picks)]  # a sample of every language
    info = machine()
    print(f"Machine: {describe_machine(info)}\nMaterial: {len(texts):,} XQuAD paragraphs, {len(questions):,} "
          f"questions; posting budget {budget:,}", flush=True)  # fmt: skip
    results = []
    for n in args.sizes:
        work = Path(tempfile.mkdtemp(prefix="qa-bench-lexical-"))
        try:
            results.append(run(n, texts, questions, budget, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    write_json(RESULTS / f"bench_lexical_{args.label}.json", {"benchmark": "bench_lexical", "machine": info,
                                                              "results": results})  # fmt: skip
    rows = []
    for r in results:
        for name, key in (("scores stored (previous)", "scores"), ("counts, scored at question time", "counts")):
            disk = r[f"bytes_per_passage_{key}"]
            rows.append([name, f"{r['passages']:,}", r[key]["p50_ms"], r[key]["p95_ms"], r[key]["mean_ms"],
                         round(sum(disk.values()))])  # fmt: skip
    print(table(["BM25 stores", "passages", "p50 ms", "p95 ms", "mean ms", "disk B/p"], rows,
                title="sparse_scores per question (same process, alternating), and the postings' disk"))  # fmt: skip
    return {"results": results}


if __name__ == "__main__":
    main()

"""BM25 at question time: scores computed from stored term counts against precomputed scores.

An index stores per posting its term count (uint8) and per passage its length, and computes the
BM25 weights of the postings a question reads at question time (`qa.lexical.bm25_weight`),
where format 4 stored a float32 score per posting. Measured here in the same process on the
same postings: the index is written by the real writer (`qa.lexical.LexicalWriter`) over N
passages (the XQuAD paragraphs of every language, repeated and cut at a random point so that
each passage differs), loaded memory-mapped (with `--idf-by-language`, each passage given its paragraph's language:
`set_languages`, each passage scored with its language's idf), and format 4's scores file is written beside it from the same weights (bit for bit what that
writer would store with these idfs). Real XQuAD questions (2,000 sampled over every language):
each is answered by the three paths in turn, 3 rounds: `sparse_scores` (each posting scored
as the merge reads it, `qa.kernels.merge_counted_postings`), format 5 as first merged (the postings
gathered into four arrays by a compiled pass, then scored by numpy's `bm25_weights`), and
format 4 (the same postings merged from the stored scores); the results are checked equal.

    python benchmarks/bench_lexical.py --sizes 300000          # ~6 minutes on 2 busy cores
    python benchmarks/bench_lexical.py --sizes 1000000         # ~9 minutes, ~3 GB at its peak

With `--segments K`, segments instead: the same N passages written once as one index and once
as K segments (K writers, consecutive passages, as an index grown by adds would be), both
memory-mapped; each question is answered in turn by the one index (`LexicalIndex.sparse_scores`),
by `qa.lexical.SegmentedLexical` over that one index (the wrapper's own cost) and over the K
segments (statistics summed at question time), results checked equal bit for bit:

    python benchmarks/bench_lexical.py --sizes 300000 --segments 4 --label segments_300k
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS,
    ROOT,
    describe_machine,
    machine,
    percentiles,
    remove_scratch,
    scratch_dir,
    table,
    write_json,
)

ROUNDS = 3


def material() -> tuple[list[str], list[int], list[str]]:
    """(passage texts, each one's language number, questions): every XQuAD paragraph and
    question, all languages."""
    from qa.xquad import find_xquad, load_xquad

    folder = find_xquad(ROOT)
    if folder is None:
        raise SystemExit("No XQuAD data found (data/xquad or shared/data/xquad): see qa/xquad.py.")
    data = load_xquad(folder)
    texts = [(p, i) for i, lang in enumerate(data.langs) for p in data.paragraphs[lang] if p]
    questions = [q for lang in data.langs for q in data.questions[lang] if q]
    return [t for t, _ in texts], [i for _, i in texts], questions


def passages(texts: list[str], n: int, rng):
    """n passages: the texts in turn, each cut at a random point (a different passage each time)."""
    for i in range(n):
        text = texts[i % len(texts)]
        yield text[int(rng.integers(0, max(1, len(text) // 4))) :]


@njit(cache=False, nogil=True)
def _gather_postings(indices, counts, lengths, norms, starts, ends, idf, lang_ids):
    """Format 5 as first merged (`qa.kernels.gather_postings` then): each read posting's passage,
    count, length norm and idf gathered into four arrays, scored after by numpy."""
    total = 0
    for j in range(len(starts)):
        total += ends[j] - starts[j]
    rows = np.empty(total, indices.dtype)
    tf, norm, idfs = np.empty(total, np.float32), np.empty(total, np.float32), np.empty(total, np.float32)
    k = 0
    for j in range(len(starts)):
        for p in range(starts[j], ends[j]):
            row = indices[p]
            rows[k], tf[k], norm[k] = row, counts[p], norms[lengths[row]]
            idfs[k] = idf[j, lang_ids[row]] if len(lang_ids) else idf[j, 0]
            k += 1
    return rows, tf, norm, idfs


def _read(index, question: str, budget: int):
    from qa.lexical import postings_to_read, tokenize

    indptr = index.indptr
    ids = [index.vocab[t] for t in tokenize(question, index.analyzer) if t in index.vocab]
    read, weights = postings_to_read(ids, {i: int(indptr[i + 1] - indptr[i]) for i in ids}, budget)
    starts = np.array([indptr[i] for i in read], np.int64)
    ends = np.array([indptr[i + 1] for i in read], np.int64)
    return read, weights, starts, ends


def gathered_path(index, plain_rows: np.ndarray, question: str, budget: int):
    """Format 5 as first merged: the compiled gather, numpy's `bm25_weights`, the merge."""
    from qa.kernels import merge_postings
    from qa.lexical import bm25_weights

    read, weights, starts, ends = _read(index, question, budget)
    idf, langs = index._idf_table(starts, ends, read)
    rows, tf, norms, idfs = _gather_postings(plain_rows, index.counts, index.lengths, index.norms, starts,
                                             ends, idf, langs)  # fmt: skip
    bounds = np.cumsum(ends - starts)
    return merge_postings(rows, bm25_weights(tf, norms, idfs), bounds - (ends - starts), bounds, weights)


def previous_path(index, plain_rows: np.ndarray, stored: np.ndarray, question: str, budget: int):
    """Format 4's question: the same postings, their precomputed scores merged."""
    from qa.kernels import merge_postings

    _, weights, starts, ends = _read(index, question, budget)
    return merge_postings(plain_rows, stored, starts, ends, weights)


def unpacked_path(index, plain_rows: np.ndarray, question: str, budget: int):
    """BM25 format 1 (before the passages' lengths were packed into the postings): the same
    scoring merge, each posting's length read from `lengths[row]`."""
    from qa.kernels import merge_counted_postings
    from qa.lexical import UNPACKED

    read, weights, starts, ends = _read(index, question, budget)
    idf, langs = index._idf_table(starts, ends, read)
    return merge_counted_postings(
        plain_rows, UNPACKED, index.counts, index.lengths, index.norms, idf, langs, starts, ends, weights
    )


def run(n: int, texts: list[str], text_langs: list[int] | None, questions: list[str], budget: int, work: Path) -> dict:
    from qa.lexical import LEXICAL_ARRAYS, LexicalIndex, LexicalWriter

    t0 = time.perf_counter()
    writer = LexicalWriter(work / "runs")
    writer.add_all(passages(texts, n, np.random.default_rng(n)))
    writer.close(work / "bm25")
    write_s = time.perf_counter() - t0
    folder = work / "bm25"
    arrays = {key: np.load(folder / name, mmap_mode="r") for key, name in LEXICAL_ARRAYS.items()}
    index = LexicalIndex.load(folder, arrays=arrays)
    if text_langs is not None:  # passage i is text i % len(texts)
        index.set_languages(np.resize(np.asarray(text_langs, np.uint8), n))
    np.save(work / "data.npy", index.weights())  # the previous format's float32 scores
    stored = np.load(work / "data.npy", mmap_mode="r")
    # The earlier formats' postings: each passage alone (int32), not packed with its length.
    np.save(work / "rows.npy", index.rows_at(0, len(index.indices)).astype(np.int32))
    plain_rows = np.load(work / "rows.npy", mmap_mode="r")
    sizes = {name: (folder / name).stat().st_size / n for name in sorted(p.name for p in folder.iterdir())}
    before = {"data (float32 scores)": stored.nbytes / n, **{k: v for k, v in sizes.items() if k != "counts.npy"}}
    before.pop("lengths.npy", None)
    paths = {
        "counts": lambda q: index.sparse_scores(q, budget),
        "gathered": lambda q: gathered_path(index, plain_rows, q, budget),
        "scores": lambda q: previous_path(index, plain_rows, stored, q, budget),
        "unpacked": lambda q: unpacked_path(index, plain_rows, q, budget),
    }
    times = alternate(paths, questions)
    return {
        "passages": n, "postings_per_passage": round(len(index.indices) / n, 1), "write_s": round(write_s, 1),
        "questions": len(questions), "rounds": ROUNDS, **{name: percentiles(t) for name, t in times.items()},
        "bytes_per_passage_counts": {k: round(v, 1) for k, v in sizes.items()},
        "bytes_per_passage_scores": {k: round(v, 1) for k, v in before.items()},
        "bytes_per_passage_gathered": {k: round(v, 1) for k, v in sizes.items()},
        "bytes_per_passage_unpacked": {k: round(v, 1) for k, v in sizes.items()},
        "counts_dtype": str(index.counts.dtype), "lengths_dtype": str(index.lengths.dtype),
    }  # fmt: skip


def alternate(paths: dict, questions: list[str]) -> dict[str, list[float]]:
    """Seconds per question of each path (`path(question) -> (rows, scores)`), the paths taking
    turns question by question for `ROUNDS` rounds after 50 questions of warm-up (kernels compiled,
    pages read in); raises AssertionError where a path's rows or scores differ from the first's."""
    for question in questions[:50]:
        for path in paths.values():
            path(question)
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ROUNDS):
        for question in questions:
            results = []
            for name, path in paths.items():
                t = time.perf_counter()
                results.append(path(question))
                times[name].append(time.perf_counter() - t)
            (rows, scores), *others = results
            for other_rows, other_scores in others:
                if not (np.array_equal(rows, other_rows) and np.array_equal(scores, other_scores)):
                    raise AssertionError(f"the paths' rows or scores differ for {question!r}")
    return times


def _write(texts, n: int, parts: int, work: Path) -> list[Path]:
    """The N passages written by `LexicalWriter`s: once whole (the first folder), and cut into
    `parts` consecutive segments (the others), in one pass over the passages."""
    from qa.lexical import LexicalWriter

    whole = LexicalWriter(work / "runs-whole")
    segments = [LexicalWriter(work / f"runs-{i}") for i in range(parts)]
    for i, text in enumerate(passages(texts, n, np.random.default_rng(n))):
        whole.add(text)
        segments[i * parts // n].add(text)
    folders = [work / "whole"] + [work / f"segment-{i}" for i in range(parts)]
    for writer, folder in zip([whole, *segments], folders):
        writer.close(folder)
    return folders


def run_segments(n: int, parts: int, texts: list[str], questions: list[str], budget: int, work: Path) -> dict:
    """One index against `parts` segments of the same passages (see the module), same process."""
    from qa.lexical import LEXICAL_ARRAYS, LexicalIndex, SegmentedLexical

    t0 = time.perf_counter()
    folders = _write(texts, n, parts, work)
    write_s = time.perf_counter() - t0

    def mapped(folder: Path) -> LexicalIndex:
        return LexicalIndex.load(folder, arrays={k: np.load(folder / f, mmap_mode="r") for k, f in LEXICAL_ARRAYS.items()})

    whole = mapped(folders[0])
    paths = {
        "one index": whole.sparse_scores,
        "1 segment": SegmentedLexical([whole]).sparse_scores,
        f"{parts} segments": SegmentedLexical([mapped(f) for f in folders[1:]]).sparse_scores,
    }
    times = alternate({name: (lambda q, path=path: path(q, budget)) for name, path in paths.items()}, questions)
    stats = {name: percentiles(t) for name, t in times.items()}
    base = stats["one index"]
    return {
        "passages": n, "segments": parts, "postings_per_passage": round(len(whole.indices) / n, 1),
        "write_s": round(write_s, 1), "questions": len(questions), "rounds": ROUNDS, "paths": stats,
        "ratio_p50": {k: round(v["p50_ms"] / base["p50_ms"], 2) for k, v in stats.items()},
        "ratio_p95": {k: round(v["p95_ms"] / base["p95_ms"], 2) for k, v in stats.items()},
        "ratio_mean": {k: round(v["mean_ms"] / base["mean_ms"], 2) for k, v in stats.items()},
    }  # fmt: skip


def segments_table(results: list[dict]) -> str:
    rows = [[name, f"{r['passages']:,}", s["p50_ms"], s["p95_ms"], s["mean_ms"], r["ratio_p50"][name],
             r["ratio_p95"][name], r["ratio_mean"][name]] for r in results for name, s in r["paths"].items()]  # fmt: skip
    return table(["BM25 over", "passages", "p50 ms", "p95 ms", "mean ms", "x p50", "x p95", "x mean"], rows,
                 title="sparse_scores per question (same process, alternating); x: against one index")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000])
    parser.add_argument("--label", default="counts")
    parser.add_argument("--questions", type=int, default=2000, help="real questions sampled, all languages")
    parser.add_argument("--idf-by-language", action="store_true", help="each passage with its language's idf")
    parser.add_argument("--segments", type=int, default=0, help="one index against this many segments instead")
    args = parser.parse_args(argv)
    from qa.config import Settings

    budget = Settings().lexical_posting_budget
    texts, text_langs, questions = material()
    picks = np.random.default_rng(0).permutation(len(questions))[: args.questions]
    questions = [questions[i] for i in sorted(picks)]  # a sample of every language
    info = machine()
    print(f"Machine: {describe_machine(info)}\nMaterial: {len(texts):,} XQuAD paragraphs, {len(questions):,} "
          f"questions; posting budget {budget:,}", flush=True)  # fmt: skip
    results = []
    for n in args.sizes:
        work = scratch_dir("qa-bench-lexical-")
        try:
            if args.segments:
                results.append(run_segments(n, args.segments, texts, questions, budget, work))
            else:
                results.append(run(n, texts, text_langs if args.idf_by_language else None, questions, budget, work))
        finally:
            remove_scratch(work)
    write_json(RESULTS / f"bench_lexical_{args.label}.json", {"benchmark": "bench_lexical", "machine": info,
                                                              "results": results})  # fmt: skip
    if args.segments:
        print(segments_table(results))
        return {"results": results}
    rows = []
    for r in results:
        for name, key in (("scores stored (format 4)", "scores"), ("counts, gathered + numpy (format 5)", "gathered"),
                          ("counts, lengths read apart (BM25 format 1)", "unpacked"),
                          ("counts, lengths in the postings (now)", "counts")):
            disk = r[f"bytes_per_passage_{key}"]
            rows.append([name, f"{r['passages']:,}", r[key]["p50_ms"], r[key]["p95_ms"], r[key]["mean_ms"],
                         round(sum(disk.values()))])  # fmt: skip
    print(table(["BM25 stores", "passages", "p50 ms", "p95 ms", "mean ms", "disk B/p"], rows,
                title="sparse_scores per question (same process, alternating), and the postings' disk"))  # fmt: skip
    return {"results": results}


if __name__ == "__main__":
    main()

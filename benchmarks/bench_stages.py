"""Where `Engine.search`'s time goes: each stage's CPU and wall time, for real questions.

The index is built exactly as `bench_query.py` builds it (its `real_material` and
`build_synthetic`, imported from the `benchmarks/` folder beside the `qa` package that is
imported, so that an older checkout runs its own writer), then each stage of `Engine.search` /
`Engine.score` is timed by wrapping the functions and methods that run it, in this process only:
language detection, the question's (cached) embedding, query centring, the dense search per
language, BM25 `sparse_scores`, the per-language lexical scaling, the passages' row dots, their
standardization, the sentence stage (`_best_sentences`), the fusion, `fold_groups` and the
`Passage` results (`grouped_passage`, `to_passage`, `to_translation`, the store's reads). Each
stage's time is its own (exclusive: a wrapped call inside another is counted once, in the inner
one); what `score` and `search` do between the calls they make (the candidate merge, the lexical
look-up, sorting) is their own rows. The timed questions run with numpy's BLAS at one thread
(`threadpoolctl`) and FAISS at one, so a question's CPU time is the calling thread's.

Names that differ between versions are looked up with fallbacks (an older version has no
`_row_dots`, `fuse`, `passage_mask`, store reads; it calls `qa.kernels.row_dots` and `shortlist`).

    python benchmarks/bench_stages.py --sizes 300000 --out benchmarks/results/bench_stages_300k.json
    python benchmarks/bench_stages.py --compare before.json after.json   # the two side by side
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COUNT = "postings merged"  # a count, not a time
SCORE, SEARCH = "score(): candidate merge, lexical look-up (own)", "search(): argsort, results (own)"


class StageTimer:
    """Exclusive CPU (this thread) and wall time per stage label, for one question at a time."""

    def __init__(self) -> None:
        self.stack: list[list] = []  # [label, child cpu ns, child wall ns]
        self.current: dict[str, list[int]] = {}  # label -> [cpu ns, wall ns, calls]

    def wrap(self, label: str, fn, only_under: str | None = None):
        """`fn` timed under `label`; with `only_under`, timed only when called directly from that
        stage (elsewhere its time stays with its caller's stage)."""

        def timed(*args, **kwargs):
            if only_under is not None and (not self.stack or self.stack[-1][0] != only_under):
                return fn(*args, **kwargs)
            frame = [label, 0, 0]
            self.stack.append(frame)
            c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                dc, dw = time.thread_time_ns() - c0, time.perf_counter_ns() - w0
                self.stack.pop()
                slot = self.current.setdefault(label, [0, 0, 0])
                slot[0] += dc - frame[1]
                slot[1] += dw - frame[2]
                slot[2] += 1
                if self.stack:
                    self.stack[-1][1] += dc
                    self.stack[-1][2] += dw

        timed.__wrapped__ = fn
        return timed

    def take(self) -> dict[str, list[int]]:
        out, self.current = self.current, {}
        return out


def patch(target, name: str, timer: StageTimer, label: str, only_under: str | None = None) -> bool:
    """Replace `target.name` by its timed version; False when this version has no such name."""
    raw = target.__dict__.get(name) if isinstance(target, type) else None
    fn = getattr(target, name, None)
    if fn is None:
        return False
    if isinstance(raw, staticmethod):
        setattr(target, name, staticmethod(timer.wrap(label, raw.__func__, only_under)))
    else:
        setattr(target, name, timer.wrap(label, raw if raw is not None else fn, only_under))
    return True


def instrument(engine, index, timer: StageTimer) -> list[str]:
    """Wrap every stage of this version's `Engine.search`; returns the stages found."""
    import qa.kernels
    import qa.lang
    import qa.retrieval

    found = []
    targets = [
        (type(engine), "search", SEARCH, None),
        (type(engine), "score", SCORE, None),
        (qa.lang, "detect_language", "language detection", None),
        (engine.embedder, "encode_query", "question embedding (cache hit)", None),
        (type(index.lang_stats), "center_query", "query centring", None),
        (type(index), "search_by_language", "dense search per language", None),
        (type(index.lexical), "sparse_scores", "BM25 sparse_scores (own)", None),
        (qa.retrieval, "lexical_by_language_sparse", "lexical scaling per language", None),
        (qa.retrieval, "_row_dots", "row dots (candidates' passage vectors)", None),
        (qa.kernels, "row_dots", "row dots (candidates' passage vectors)", SCORE),  # older: called in score
        (type(index.lang_stats), "standardize", "standardization", SCORE),  # (the sentences': in their stage)
        (type(engine), "_best_sentences", "sentence stage (_best_sentences)", None),
        (qa.retrieval, "fuse", "fusion (fuse / shortlist)", None),
        (qa.retrieval, "shortlist", "fusion (fuse / shortlist)", None),
        (qa.retrieval, "fold_groups", "fold_groups", None),
        (qa.retrieval, "grouped_passage", "grouped_passage (similarity, members; own)", None),
        (qa.retrieval, "to_translation", "to_translation (own)", None),
        (qa.retrieval, "to_passage", "to_passage (Passage model; own)", None),
        (type(index), "passage", "store reads (passage, article)", None),
        (type(index), "article", "store reads (passage, article)", None),
        (type(index), "passage_and_article", "store reads (passage, article)", None),  # newer: both at once
    ]
    import qa.lexical

    lexical = type(index.lexical)
    targets += [  # inside BM25's sparse_scores: what its time is spent on (named as each version names it)
        (type(engine), "index", "Engine.index() (live version check)", SEARCH),
        (qa.lexical, "tokenize", "BM25: tokenize", None),
        (qa.lexical, "postings_to_read", "BM25: postings_to_read", None),
        (lexical, "_idf_table", "BM25: _idf_table (own)", None),
        (qa.kernels, "postings_by_language", "BM25: per-language df (postings_by_language)", None),
        (qa.kernels, "merge_counted_postings", "BM25: merge (merge_counted_postings / merge_postings)", None),
        (qa.kernels, "merge_postings", "BM25: merge (merge_counted_postings / merge_postings)", None),
    ]
    try:
        import qa.filters

        targets.append((qa.filters, "passage_mask", "filter mask", None))
    except ImportError:
        pass
    for name in ("merge_counted_postings", "merge_postings"):  # postings merged, counted
        if hasattr(qa.kernels, name):
            fn = getattr(qa.kernels, name)
            # where its `starts` argument is (the signature differs between versions)
            position = list(inspect.signature(getattr(fn, "py_func", fn)).parameters).index("starts")
            setattr(qa.kernels, name, counting(fn, position, timer))
    for target, name, label, only_under in targets:
        if patch(target, name, timer, label, only_under):
            found.append(f"{getattr(target, '__name__', type(target).__name__)}.{name}")
    return found


def counting(fn, position: int, timer: StageTimer):
    """`fn` (a BM25 merge) adding the postings it merges (`ends - starts`, its arguments at
    `position` and after) to the question's "postings merged"."""

    def counted(*args):
        slot = timer.current.setdefault(COUNT, [0, 0, 0])
        slot[2] += int(np.sum(np.asarray(args[position + 1]) - np.asarray(args[position])))
        return fn(*args)

    return counted


def load_bench_query():
    """`bench_query` from the `benchmarks/` folder beside the imported `qa` package."""
    import qa

    folder = Path(qa.__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))  # before this file's folder: that version's `_common` too
    import bench_query

    return bench_query, folder.parent


def summarize(samples: list[dict[str, list[int]]]) -> tuple[list[dict], dict]:
    """Per stage: calls a question, CPU and wall p50/mean in µs over the timed questions."""
    postings = [s.pop(COUNT, [0, 0, 0])[2] for s in samples]
    labels = sorted({label for s in samples for label in s})
    n = len(samples)
    stages = []
    for label in labels:
        cpu = np.array([s.get(label, [0, 0, 0])[0] for s in samples]) / 1e3
        wall = np.array([s.get(label, [0, 0, 0])[1] for s in samples]) / 1e3
        calls = sum(s.get(label, [0, 0, 0])[2] for s in samples) / n
        stages.append({"stage": label, "calls": round(calls, 2), "cpu_p50_us": round(float(np.median(cpu)), 1),
                       "cpu_mean_us": round(float(cpu.mean()), 1), "wall_p50_us": round(float(np.median(wall)), 1),
                       "wall_mean_us": round(float(wall.mean()), 1)})
    cpu_tot = np.array([sum(v[0] for v in s.values()) for s in samples]) / 1e3
    wall_tot = np.array([sum(v[1] for v in s.values()) for s in samples]) / 1e3
    total = {"cpu_p50_us": round(float(np.median(cpu_tot)), 1), "cpu_mean_us": round(float(cpu_tot.mean()), 1),
             "wall_p50_us": round(float(np.median(wall_tot)), 1), "wall_mean_us": round(float(wall_tot.mean()), 1),
             "bm25_postings_merged_mean": round(float(np.mean(postings)), 1)}
    for s in stages:
        s["cpu_share"] = round(s["cpu_mean_us"] / max(1e-9, total["cpu_mean_us"]), 3)
    stages.sort(key=lambda s: -s["cpu_mean_us"])
    return stages, total


def render(stages: list[dict], total: dict, title: str) -> str:
    headers = ["stage", "calls", "CPU p50 µs", "CPU mean µs", "share", "wall p50 µs", "wall mean µs"]
    rows = [[s["stage"], s["calls"], s["cpu_p50_us"], s["cpu_mean_us"], f"{100 * s['cpu_share']:.1f} %",
             s["wall_p50_us"], s["wall_mean_us"]] for s in stages]
    rows.append(["total (Engine.search)", "", total["cpu_p50_us"], total["cpu_mean_us"], "100 %",
                 total["wall_p50_us"], total["wall_mean_us"]])
    return markdown(headers, rows, title)


def markdown(headers: list[str], rows: list[list], title: str) -> str:
    lines = [title, "", "| " + " | ".join(headers) + " |", "| --- |" + " ---: |" * (len(headers) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def compare(paths: list[Path]) -> str:
    """The runs grouped by side (`--side`, in the order given; the first side is the baseline):
    per stage, each side's CPU µs a question, p50 and mean, averaged over its runs, and the mean's
    difference of the last side against the first. "BM25, all" sums the BM25 rows (a run of an
    older version of this script timed BM25 as one stage)."""
    sides: dict[str, list[dict]] = {}
    for p in paths:
        run = json.loads(p.read_text())
        sides.setdefault(run.get("side") or p.stem, []).append(run)
    labels: list[str] = []
    for runs in sides.values():
        for run in runs:
            labels += [s["stage"] for s in run["stages"] if s["stage"] not in labels]
    labels.append("BM25, all")

    def value(run: dict, label: str, key: str) -> float:
        if label == "total (Engine.search)":
            return run["total"][key]
        stages = run["stages"]
        if label == "BM25, all":
            return sum(s[key] for s in stages if s["stage"].startswith("BM25"))
        return next((s[key] for s in stages if s["stage"] == label), 0.0)

    rows = []
    for label in labels + ["total (Engine.search)"]:
        cells, means = [], []
        for runs in sides.values():
            p50 = float(np.mean([value(r, label, "cpu_p50_us") for r in runs]))
            mean = float(np.mean([value(r, label, "cpu_mean_us") for r in runs]))
            cells += [round(p50, 1), round(mean, 1)]
            means.append(mean)
        rows.append([label, *cells, f"{means[-1] - means[0]:+.1f}"])
    headers = ["stage"]
    for name, runs in sides.items():
        headers += [f"{name} p50", f"{name} mean"]
    totals = "; ".join(f"{name}: " + ", ".join(str(r["total"]["cpu_mean_us"]) for r in runs) for name, runs in sides.items())
    return markdown([*headers, "mean, last - first"], rows,
                    f"CPU µs a question per stage, averaged over each side's runs (totals of the runs: {totals})")


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100000])
    parser.add_argument("--queries", type=int, default=40, help="distinct real questions")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each question")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--side", default="", help="a name for this run in the JSON and --compare")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--compare", type=Path, nargs="+", help="print the stages of these JSON results side by side")
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(args.compare))
        return None

    import faiss
    from threadpoolctl import threadpool_limits

    bench_query, qa_root = load_bench_query()
    from _common import ensure_index

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.retrieval import Engine

    index_dir = ensure_index()
    # Temporary folders as `TemporaryDirectory` objects, not `_common.scratch_dir`: the `_common`
    # imported here may be an older checkout's. Each is removed by `cleanup()`, when it is let go
    # of, or at exit after an error or Ctrl-C.
    empty = tempfile.TemporaryDirectory(prefix="qa-bench-", ignore_cleanup_errors=True)
    settings = Settings(index_dir=Path(empty.name))
    embedder = get_embedder(settings)
    texts, langs, base, questions, qvecs, qlangs, held_out, source = bench_query.real_material(
        settings, embedder, index_dir, args.queries)
    print(f"qa from {qa_root}; real material: {source}; {len(questions)} real questions.", flush=True)
    rng = np.random.default_rng(42)  # as bench_query: the same synthetic passages
    faiss.omp_set_num_threads(1)
    payload = {"benchmark": "bench_stages", "side": args.side, "material": source,
               "queries": len(questions), "repeat": args.repeat, "results": []}
    for n in args.sizes:
        scratch = tempfile.TemporaryDirectory(prefix="qa-bench-index-", ignore_cleanup_errors=True)
        folder = Path(scratch.name)
        bench_settings = Settings(index_dir=folder)
        index, vectors, _, write_s, *_ = bench_query.build_synthetic(
            n, texts, langs, base, qvecs, qlangs, held_out, rng, folder, bench_settings)
        del vectors
        gc.collect()
        engine = Engine(bench_settings)
        engine._index = index  # its manifest names the synthetic model: skip the model check
        for q, _ in questions:  # embedded once: the timed calls find them in the cache
            engine.embedder.encode_query(q)
        engine.search(questions[0][0], args.k)  # warm-up: the exact sub-indexes of small languages
        timer = StageTimer()
        found = instrument(engine, index, timer)
        samples = []
        with threadpool_limits(limits=1):
            for q, _ in questions:
                engine.search(q, args.k)  # once untimed: each question's first pass reads its pages
                timer.take()
            for _ in range(args.repeat):
                for q, _ in questions:
                    engine.search(q, args.k)
                    samples.append(timer.take())
        stages, total = summarize(samples)
        entry = {"passages": n, "sentences": len(index.sentences), "write_s": round(write_s, 1),
                 "wrapped": found, "stages": stages, "total": total}
        payload["results"].append(entry)
        payload.update(stages=stages, total=total)  # the last size's, for --compare
        print(render(stages, total, f"\n{n:,} passages, {len(samples)} timed questions, BLAS and FAISS 1 thread "
                                    f"(written in {write_s:.0f} s; BM25 postings merged "
                                    f"{total['bm25_postings_merged_mean']:,.0f} a question)"), flush=True)
        del engine, index
        gc.collect()
        scratch.cleanup()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1))
        print(f"Wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()

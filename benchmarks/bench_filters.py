"""What a filter (language, date range, source) costs a question, and what it keeps, at 100k passages.

The index is bench_query.py's synthetic one (real vectors mixed and perturbed, real texts, real
writer: IVF-SQ8 or exact per language by size, tuned at build) with metadata given to its
articles when they are written: a publication day spread evenly over 2020-2024 (5% without a date) and
one of 20 outlets (the host of the URL). The filters read only the articles (`qa.filters`), so
this is the index a corpus with those dates and outlets would give.

For each filter, with the unfiltered search of the same run as the baseline:
- latency of the dense stage (`Index.search_by_language` with the filter's mask) and of
  `Engine.search` (what `retrieve()` runs: dense + BM25 + sentences, grouping, models), cached
  question embedding, p50/p95, and the ratio to the unfiltered baseline;
- recall@10 of the dense stage against an exact search over the passages the filter lets through
  (the share of each language's exact filtered top 10 among its `candidates` returned, re-scored
  as the engine re-scores them), beside the same measure without a filter;
- whether `Engine.search` returned k passages whenever k passed the filter (all questions);
- the cost of building a filter's mask the first time (later questions reuse it).

    python benchmarks/bench_filters.py                  # 100k passages: a few minutes
    python benchmarks/bench_filters.py --sizes 10000    # quicker
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS,
    describe_machine,
    ensure_index,
    machine,
    percentiles,
    remove_scratch,
    scratch_dir,
    table,
    write_json,
)
from bench_query import build_synthetic, real_material

OUTLETS = [f"outlet{i:02d}.example" for i in range(20)]
FIRST_DAY, DAYS = dt.date(2020, 1, 1), 5 * 365
UNDATED = 0.05


def article_metadata(n: int, rng):
    """`build_synthetic`'s `article_fields`: a date (or none) and an outlet URL for each of n articles.

    Given when the articles are written: a loaded index's articles are a read-only view of its
    store (`qa.index.store`)."""
    days = rng.integers(0, DAYS, n)
    undated = rng.random(n) < UNDATED
    outlets = rng.integers(0, len(OUTLETS), n)

    def fields(i: int, doc_id: str) -> dict:
        date = None if undated[i] else (FIRST_DAY + dt.timedelta(days=int(days[i]))).isoformat()
        return {"date": date, "url": f"https://{OUTLETS[outlets[i]]}/{doc_id}"}

    return fields


def scenarios(langs: list[str]) -> list[tuple[str, dict]]:
    """(name, make_filters arguments); "{lang}" is replaced by the question's language."""
    some = langs[: max(1, len(langs) - 1)]  # all but one
    return [
        ("no filter (baseline)", {}),
        ("language: the question's", {"langs": ["{lang}"]}),
        (f"languages: {', '.join(some)}", {"langs": some}),
        ("since 2022-07-01 (~50%)", {"since": "2022-07-01"}),
        ("year 2024 (~19%)", {"since": "2024-01-01", "until": "2024-12-31"}),
        ("one month (~1.6%)", {"since": "2023-03", "until": "2023-03"}),
        ("one outlet (5%)", {"sources": [OUTLETS[3]]}),
        ("outlet + month (~0.08%)", {"sources": [OUTLETS[3]], "since": "2023-03", "until": "2023-03"}),
    ]


def filters_for(args: dict, lang: str):
    from qa.filters import make_filters

    if "langs" in args:
        args = {**args, "langs": [lang if code == "{lang}" else code for code in args["langs"]]}
    return make_filters(**args)


def dense_recall(index, mask, cvec: np.ndarray, found: dict, k: int = 10) -> tuple[int, int]:
    """(hits, total): each language's exact top k among the passages `mask` lets through, found
    among the candidates the dense stage returned for that language."""
    scores = np.asarray(index.passage_vectors) @ cvec
    hits = total = 0
    for lang, rows in index.rows_by_language.items():
        allowed = rows if mask is None else rows[mask[rows]]
        if not len(allowed):
            continue
        truth = allowed[np.argsort(-scores[allowed], kind="stable")[:k]]
        got = set(found.get(lang, (None, np.zeros(0, np.int64)))[1].tolist())
        hits += len(got & set(truth.tolist()))
        total += len(truth)
    return hits, total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100000])
    parser.add_argument("--queries", type=int, default=40, help="distinct real questions")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each question and filter")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_filters.json")
    args = parser.parse_args(argv)

    import faiss

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.filters import filter_columns, passage_mask
    from qa.retrieval import Engine

    index_dir = ensure_index()
    settings = Settings(index_dir=scratch_dir("qa-bench-"))
    embedder = get_embedder(settings)
    texts, langs, base, questions, qvecs, qlangs, held_out, source = real_material(settings, embedder, index_dir, args.queries)
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    print(f"Real material: {source}; {len(questions)} real questions.")
    faiss.omp_set_num_threads(1)  # as the engine runs: one question, one thread
    rng = np.random.default_rng(42)
    results, rows = [], []
    for n in args.sizes:
        folder = scratch_dir("qa-bench-index-")
        bench_settings = Settings(index_dir=folder)
        index, _, search, *_ = build_synthetic(n, texts, langs, base, qvecs, qlangs, held_out, rng, folder, bench_settings,
                                               article_fields=article_metadata(n, np.random.default_rng(7)))
        layout = ", ".join(f"{kind} x{count}" for kind, count in sorted(Counter(r.type for r in search.values()).items()))
        engine = Engine(bench_settings)
        engine._index = index  # its manifest names the synthetic model: skip the model check
        questions_here = [(q, lang) for q, lang in questions if lang in index.rows_by_language]
        engine.search(questions_here[0][0], args.k)  # warm-up: builds the exact sub-indexes
        t = time.perf_counter()
        columns = filter_columns(index)
        columns_s = time.perf_counter() - t
        queries = [embedder.encode_query(q) for q, _ in questions_here]
        centered = [index.lang_stats.center_query(v[None, :], lang, settings.query_centering)[0]
                    for v, (_, lang) in zip(queries, questions_here)]
        entry = {"passages": n, "layout": layout, "filter_columns_ms": round(columns_s * 1000, 2), "filters": {}}
        specs = scenarios(sorted(index.rows_by_language))
        runs = {name: {"dense": [], "full": [], "hits": 0, "total": 0, "short": 0, "share": [], "mask": []}
                for name, _ in specs}
        # Untimed: each filter's mask the first time (later questions reuse it), recall, k results.
        for (q, lang), cvec in zip(questions_here, centered):
            for name, spec in specs:
                run, filters = runs[name], filters_for(spec, lang)
                if filters is not None:
                    columns._masks.pop(filters, None)  # as for the first question with this filter
                    t = time.perf_counter(); columns.mask(filters, index.langs); run["mask"].append(time.perf_counter() - t)
                mask = passage_mask(index, filters)
                allowed = len(index) if mask is None else int(mask.sum())
                run["share"].append(allowed / len(index))
                hits, total = dense_recall(index, mask, cvec, index.search_by_language(cvec, settings.candidates, mask))
                run["hits"], run["total"] = run["hits"] + hits, run["total"] + total
                passages = engine.search(q, args.k, lang=lang, filters=filters)
                run["short"] += len(passages) < min(args.k, allowed)  # each passage is its own group here
                if mask is not None:
                    assert all(mask[index.row_of[(p.doc_id, p.start)]] for p in passages), name
        # Timed, interleaved: each question runs every filter in turn, so that a change in the
        # (shared) machine's load weighs on the baseline and the filters alike.
        for _ in range(args.repeat):
            for (q, lang), cvec in zip(questions_here, centered):
                for name, spec in specs:
                    run, filters = runs[name], filters_for(spec, lang)
                    mask = passage_mask(index, filters)
                    t = time.perf_counter(); index.search_by_language(cvec, settings.candidates, mask)
                    run["dense"].append(time.perf_counter() - t)
                    t = time.perf_counter(); engine.search(q, args.k, lang=lang, filters=filters)
                    run["full"].append(time.perf_counter() - t)
        baseline = None
        for name, _ in specs:
            run = runs[name]
            record = {
                "share_let_through": round(float(np.mean(run["share"])), 4),
                "dense_by_language": percentiles(run["dense"]), "engine_search": percentiles(run["full"]),
                "dense_recall_at_10": round(run["hits"] / max(run["total"], 1), 4),
                "questions_with_fewer_than_k": run["short"],
                "mask_first_time": percentiles(run["mask"]) if run["mask"] else None,
            }
            baseline = baseline or record
            entry["filters"][name] = record
            rows.append([
                n, name, f"{record['share_let_through']:.2%}",
                record["dense_by_language"]["p50_ms"], record["dense_by_language"]["p95_ms"],
                round(record["dense_by_language"]["p50_ms"] / baseline["dense_by_language"]["p50_ms"], 2),
                record["engine_search"]["p50_ms"], record["engine_search"]["p95_ms"],
                round(record["engine_search"]["p50_ms"] / baseline["engine_search"]["p50_ms"], 2),
                record["dense_recall_at_10"], f"{run['short']}/{len(questions_here)}",
                "-" if not run["mask"] else record["mask_first_time"]["p50_ms"],
            ])
        results.append(entry)
        del engine, index
        remove_scratch(folder)

    text = table(
        ["passages", "filter", "let through", "dense p50 ms", "dense p95 ms", "dense p50 x base", "retrieve p50 ms",
         "retrieve p95 ms", "retrieve p50 x base", "dense recall@10", "< k results", "mask 1st ms"],
        rows,
        title=f"Filters ({len(questions)} real questions x {args.repeat} runs, every filter in turn; k={args.k}, candidates="
              f"{settings.candidates} per language; FAISS 1 thread; retrieve = Engine.search, cached embedding; "
              f"recall@10 vs exact search over the passages let through, per language; layout: "
              f"{'; '.join(r['layout'] for r in results)}; filter columns built once per index in "
              f"{', '.join(str(r['filter_columns_ms']) for r in results)} ms)",
    )
    print("\n" + text)
    payload = {"benchmark": "bench_filters", "machine": info, "material": source, "results": results, "table": text}
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()

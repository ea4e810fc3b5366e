"""Query latency of the real retrieval pipeline (qa.retrieval.Engine) at 1k, 10k, 100k, 1M passages.

The indexes are synthetic but built from real vectors (see `synthetic_vectors`): XQuAD paragraph
embeddings from the evaluation cache plus the corpus index, mixed in pairs and perturbed with
anisotropic Gaussian noise, then re-normalized. Texts (for BM25 and sentence spans) are the real
texts those vectors came from. Questions are real XQuAD questions in 12 languages. Each index is
written by the real writer (`qa.index.build.write_index`: exact or IVF-SQ8 per language by size, recall
tuned at build) and loaded by the real loader (`qa.index.load.open_index`, vectors memory-mapped).

Measured: query embedding (cold, and from the LRU cache), the per-language dense search, and
`Engine.search` (what `retrieve()` runs after cleaning the question: dense + BM25 + sentence
scores, grouping, `Passage` models) with a cached and a cold question embedding, in wall time and
in CPU time (the calling thread's, and the whole process's: on a shared machine the wall time
also counts the time other processes hold the cores, the CPU time does not); recall@10 of the
approximate indexes against exact search for real questions; memory and disk per passage.
Baseline: one exact IndexFlatIP search over all vectors (k = candidates), in the same run.

    python benchmarks/bench_query.py                           # 1k, 10k, 100k; a few minutes
    python benchmarks/bench_query.py --sizes 1000000           # 1M: ~15 minutes, ~12 GB of RAM while writing
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
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

NOISE = 0.5  # noise std, in units of each dimension's std over the real vectors


def real_material(settings, embedder, index_dir: Path, max_questions: int):
    """Real (text, lang, vector) passages and real (question, lang, vector) from the caches."""
    from qa.index.load import open_index
    from qa.xquad import find_xquad, load_xquad

    corpus = open_index(index_dir)
    texts = [c.text for c in corpus.chunks]
    langs = corpus.langs.tolist()
    vectors = [corpus.passage_vectors]
    questions: list[tuple[str, str]] = []
    qvecs = []
    from qa.evaluate import embedding_cache

    cache_path = embedding_cache(settings, embedder).path  # named after the embedding backend
    folder = find_xquad(Path(__file__).resolve().parent)
    if folder is not None and cache_path.exists():
        data = load_xquad(folder)
        with np.load(cache_path) as npz:
            cached = dict(zip(npz["keys"].tolist(), npz["vectors"]))
        fp = embedder.fingerprint

        def key(kind, text):  # the same key as qa.xquad.EmbeddingCache
            return hashlib.sha1(f"{fp}\0{kind}\0{text}".encode()).hexdigest()

        for lang in data.langs:
            for text in data.paragraphs[lang]:
                v = cached.get(key("passage", text))
                if v is not None:
                    texts.append(text)
                    langs.append(lang)
                    vectors.append(v[None, :])
            for text in data.questions[lang]:
                v = cached.get(key("query", text))
                if v is not None:
                    questions.append((text, lang))
                    qvecs.append(v)
    source = f"{len(corpus.chunks)} corpus passages + {len(texts) - len(corpus.chunks)} cached XQuAD paragraphs"
    if not questions:  # no XQuAD: questions from the corpus sentences themselves
        questions = [(t[:120], l) for t, l in zip(texts, langs)]
    rng = np.random.default_rng(0)
    picks = rng.permutation(len(questions))[:max_questions]
    held_out = np.ones(len(qvecs), bool)  # cached questions not among the timed ones
    held_out[picks[picks < len(qvecs)]] = False
    return (texts, np.array(langs), np.concatenate(vectors).astype(np.float32), [questions[i] for i in picks],
            np.array(qvecs, np.float32) if qvecs else None, [questions[i][1] for i in range(len(qvecs))], held_out, source)


def synthetic_vectors(base: np.ndarray, langs: np.ndarray, n: int, rng, noise: float = NOISE):
    """n vectors near the real ones: v = normalize(l*a + (1-l)*b + noise*std*z), l ~ U(0.5, 1).

    a is a real passage vector, b another real one of the same language, std the per-dimension
    std of the real vectors (so the noise follows the model's anisotropy instead of being
    uniform), z standard normal. Returns the vectors and the index of the base passage a.
    """
    std = base.std(axis=0)
    src = rng.integers(0, len(base), n)
    by_lang = {lang: np.flatnonzero(langs == lang) for lang in np.unique(langs)}
    other = np.empty(n, np.int64)
    for lang, members in by_lang.items():
        mask = langs[src] == lang
        other[mask] = members[rng.integers(0, len(members), mask.sum())]
    lam = rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32)
    out = np.empty((n, base.shape[1]), np.float32)
    for s in range(0, n, 65536):  # in slices, to bound the temporary arrays at 1M
        e = min(n, s + 65536)
        v = lam[s:e] * base[src[s:e]] + (1 - lam[s:e]) * base[other[s:e]]
        v += noise * std * rng.standard_normal((e - s, base.shape[1]), dtype=np.float32)
        out[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out, src


def build_synthetic(n, texts, langs, base, query_vectors, query_langs, held_out, rng, index_dir: Path, settings,
                    article_fields=None):
    """Write an index of n synthetic passages with `qa.index.build.write_index` (the real writer: per
    language exact or IVF-SQ8 search chosen by size, recall tuned and measured, BM25, stats)
    and load it back with `qa.index.load.open_index` and map its vectors in, as `qa serve` would. The approximate indexes
    are tuned on 200 real questions that are not among the timed ones (`held_out`), centred as
    the engine centres them: what `qa index` does with the corpus's sentences embedded as
    questions. `article_fields(i, doc_id)`, if given, returns more fields of article i (a date, a
    URL...): they are written with it, since a loaded index's articles are read-only.
    Returns (index, vectors, search report, seconds to write, to load, to map in)."""
    from qa.chunk import split_sentences
    from qa.index.build import write_index
    from qa.index.load import open_index
    from qa.models import Article, Chunk

    vectors, src = synthetic_vectors(base, langs, n, rng)
    spans = [split_sentences(t) for t in texts]
    articles, chunks, sentence_rows = [], [], []
    for i, j in enumerate(src.tolist()):
        text = texts[j]
        extra = article_fields(i, f"s{i}") if article_fields is not None else {}
        articles.append(Article(doc_id=f"s{i}", title=f"passage {j}", text=text, lang=str(langs[j]), source=f"synthetic/{j}",
                                **extra))
        chunks.append(Chunk(doc_id=f"s{i}", chunk_id=0, text=text, start=0, end=len(text), n_tokens=200))
        sentence_rows.extend((i, a, b) for a, b in spans[j])
    sentences = np.array(sentence_rows, np.int64).reshape(-1, 3)
    owner = sentences[:, 0]
    # A sentence vector is its passage's vector plus more noise (sentences are noisier than
    # passages); float16 as the index stores them, generated in slices to bound memory at 1M.
    sentence_vectors = np.empty((len(sentences), base.shape[1]), np.float16)
    std = base.std(axis=0)
    for s in range(0, len(sentences), 65536):
        e = min(len(sentences), s + 65536)
        v = vectors[owner[s:e]] + 1.0 * std * rng.standard_normal((e - s, base.shape[1]), dtype=np.float32)
        sentence_vectors[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
    means, tuning = {}, None
    if query_vectors is not None:
        ql = np.array(query_langs)
        means = {l: query_vectors[ql == l].mean(axis=0) for l in np.unique(langs[src]) if (ql == l).any()}
        pool = np.flatnonzero(held_out & np.isin(ql, list(means)))
        picks = np.sort(np.random.default_rng(1).choice(pool, min(200, len(pool)), replace=False))
        tuning = np.stack([query_vectors[i] - settings.query_centering * means[ql[i]] for i in picks]).astype(np.float32)
    t0 = time.perf_counter()
    _, search = write_index(
        index_dir, articles, chunks, vectors, sentences, sentence_vectors, settings=settings,
        model={"name": "synthetic", "fingerprint": "synthetic", "dim": int(base.shape[1])},
        chunking={"name": "synthetic", "version": 1, "max_tokens": 200, "overlap": 0}, query_means=means, groups=np.arange(n),  # each passage its own group
        recall_queries=tuning,
    )
    write_s = time.perf_counter() - t0
    del articles, chunks, sentence_vectors
    gc.collect()
    t0 = time.perf_counter()
    index = open_index(index_dir)
    load_s = time.perf_counter() - t0
    # As `qa serve` does before it answers (Engine.warm_up): the memory-mapped vectors are read
    # in, so that the timed questions do not pay for the first read of each page.
    t0 = time.perf_counter()
    index.map_in()
    return index, vectors, search, write_s, load_s, time.perf_counter() - t0


def ann_recall(index, queries: np.ndarray, candidates: int, k: int = 10) -> tuple[float | None, float | None]:
    """Mean recall@k of each language's approximate index against exact search over the same
    language, for real questions in every language (centred as the engine centres them): the
    share of the exact top k among the `candidates` the index returns, which the engine
    re-scores exactly (`qa.index.ann.recall_at`), and among its own top k. (None, None) without one."""
    from qa.index.ann import exact_neighbours, recall_at

    if not index.ann:
        return None, None
    rescored, own = [], []
    for lang, ann in index.ann.items():
        rows = index.rows_by_language[lang]
        truth = exact_neighbours(np.asarray(index.passage_vectors[rows]), queries, k)
        rescored.append(recall_at(ann, truth, queries, candidates))
        own.append(recall_at(ann, truth, queries))
    return round(float(np.mean(rescored)), 4), round(float(np.mean(own)), 4)


def rss_kinds() -> dict:
    """Resident memory of this process, MB: anonymous (heap) and file-backed (memory-mapped)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "RssAnon", "RssFile"}:
            out[key] = int(value.split()[0]) / 1024
    return out


def neighbour_cosines(vectors: np.ndarray, queries: np.ndarray) -> dict:
    """Top-1 and top-10 cosine of real questions against the index: realistic neighbourhoods
    give the same distribution as on real vectors; uniform noise would give ~0."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    scores, _ = flat.search(queries, 10)
    return {"top1_mean": round(float(scores[:, 0].mean()), 4), "top10_mean": round(float(scores[:, 9].mean()), 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=40, help="distinct real questions per size")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each question (cached paths)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--index-type", default="auto", choices=["auto", "flat", "ivf"], help="QA_INDEX_TYPE of the indexes")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_query.json")
    args = parser.parse_args(argv)

    import faiss

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.index.load import open_index
    from qa.lang import detect_language
    from qa.retrieval import Engine

    index_dir = ensure_index()
    empty = scratch_dir("qa-bench-")
    settings = Settings(index_dir=empty)  # no CURRENT there: the engine keeps the index we give it
    embedder = get_embedder(settings)
    texts, langs, base, questions, qvecs, qlangs, held_out, source = real_material(settings, embedder, index_dir, args.queries)
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    print(f"Real material: {source}; {len(questions)} real questions.")

    # Query embedding, independent of the index size: cold (first time) and cached.
    embedder.encode_query("warm up")
    info["torch_threads"] = __import__("torch").get_num_threads()
    cold, cached = [], []
    for q, _ in questions:
        t = time.perf_counter(); embedder.encode_query(q); cold.append(time.perf_counter() - t)
        for _ in range(args.repeat):
            t = time.perf_counter(); embedder.encode_query(q); cached.append(time.perf_counter() - t)
    detect_language("warm up")
    t = time.perf_counter(); [detect_language(q) for q, _ in questions]; detect_s = (time.perf_counter() - t) / len(questions)
    embed = {"cold": percentiles(cold), "cached": percentiles(cached), "detect_language_ms": round(detect_s * 1000, 3)}

    # The real corpus index, for memory/disk per passage of the real files.
    real = open_index(index_dir)
    per_file = {name: size / len(real.chunks) for name, size in real.manifest.files.items()}

    rng = np.random.default_rng(42)
    faiss.omp_set_num_threads(1)  # as qa.retrieval.Engine does: one question, one thread
    results, rows, mem_rows = [], [], []
    for n in args.sizes:
        folder = scratch_dir("qa-bench-index-")
        bench_settings = Settings(index_dir=folder, index_type=args.index_type)
        rss0 = rss_kinds()
        index, vectors, search, write_s, load_s, map_s = build_synthetic(
            n, texts, langs, base, qvecs, qlangs, held_out, rng, folder, bench_settings)
        rss_loaded = rss_kinds()
        engine = Engine(bench_settings)
        engine._index = index  # its manifest names the synthetic model: skip the model check
        queries = np.stack([embedder.encode_query(q) for q, _ in questions])
        centered = np.concatenate([index.lang_stats.center_query(v[None, :], lang, settings.query_centering)
                                   for v, (_, lang) in zip(queries, questions)])
        realism = neighbour_cosines(vectors, queries)
        recall, recall_own = ann_recall(index, centered, settings.candidates)
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        baseline, dense, full, full_cold = [], [], [], []
        full_cpu, full_proc = [], []  # the same calls' CPU time: this thread's, and the process's (all threads)
        engine.search(questions[0][0], args.k)  # warm-up: builds the exact sub-indexes of small languages
        load_timed = [round(os.getloadavg()[0], 2)]
        for (q, lang), vec, cvec in zip(questions, queries, centered):
            for _ in range(args.repeat):
                t = time.perf_counter(); flat.search(vec[None, :], settings.candidates); baseline.append(time.perf_counter() - t)
                t = time.perf_counter(); index.search_by_language(cvec, settings.candidates); dense.append(time.perf_counter() - t)
                t = time.perf_counter(); c, pc = time.thread_time_ns(), time.process_time_ns()
                engine.search(q, args.k)
                full_cpu.append((time.thread_time_ns() - c) / 1e9); full_proc.append((time.process_time_ns() - pc) / 1e9)
                full.append(time.perf_counter() - t)
        load_timed.append(round(os.getloadavg()[0], 2))
        # Cold: the question's embedding not cached (the first time anyone asks it).
        for q, _ in questions:
            q2 = q + " " + "?" * (1 + args.sizes.index(n))  # never asked before: not in the LRU cache
            t = time.perf_counter(); engine.search(q2, args.k); full_cold.append(time.perf_counter() - t)
        rss_after = rss_kinds()
        files = index.manifest.files
        on_disk = {str(f.relative_to(folder)): f.stat().st_size for f in folder.rglob("*") if f.is_file()}

        def per_passage(*prefixes, files=files, n=n):
            return sum(size for name, size in files.items() if name.startswith(prefixes)) / n

        flat_passages = sum(r.passages for r in search.values() if r.type == "flat")
        kinds = Counter(r.type for r in search.values())
        layout = ", ".join(f"{'IVF-SQ8' if kind == 'ivf_sq8' else 'flat'} x{count}" for kind, count in sorted(kinds.items()))
        entry = {
            "passages": n, "sentences": len(index.sentences), "search": {lang: r.__dict__ for lang, r in search.items()},
            "layout": layout, "write_s": round(write_s, 1), "load_s": round(load_s, 1), "map_in_s": round(map_s, 1), "neighbour_cosines": realism,
            "ann_recall_at_10_real_questions": recall, "ann_recall_at_10_own_top10": recall_own,
            "baseline_flat_search": percentiles(baseline), "dense_by_language": percentiles(dense),
            "engine_search_cached_embedding": percentiles(full), "engine_search_cold_embedding": percentiles(full_cold),
            "engine_search_cached_embedding_thread_cpu": percentiles(full_cpu),
            "engine_search_cached_embedding_process_cpu": percentiles(full_proc),
            "load_avg_1min_timed": load_timed,  # before and after the timed questions
            "bytes_per_passage": {
                "vector_index_in_memory": per_passage("ann/") + vectors.shape[1] * flat_passages / n,  # qa.index.ann.ByteExact: a byte a dimension
                "vectors_npy_disk": per_passage("vectors.npy"), "sentence_vectors_disk": per_passage("sentence_vectors.npy"),
                "bm25_disk": per_passage("bm25/"), "store_disk": per_passage("store/"),
            },
            "rss_mb": {"before": rss0, "loaded": rss_loaded, "after_queries": rss_after},
            # every file of the index folder as written (all versions' files, the pointer), a passage
            "disk_bytes_per_passage": {"total": sum(on_disk.values()) / n, **{k: v / n for k, v in sorted(on_disk.items())}},
        }
        results.append(entry)
        base_p50 = entry["baseline_flat_search"]["p50_ms"]
        for name, key in (("baseline: 1 IndexFlatIP, k=50", "baseline_flat_search"), ("dense, per language", "dense_by_language"),
                          ("retrieve (cached emb.)", "engine_search_cached_embedding"),
                          ("retrieve (cold emb.)", "engine_search_cold_embedding")):
            p = entry[key]
            rows.append([n, layout, name, p["p50_ms"], p["p95_ms"], p["p99_ms"], round(p["p50_ms"] / max(1e-9, base_p50), 2)])
            if key == "engine_search_cached_embedding":  # the same calls in CPU time: what the load does not inflate
                for cpu_name, cpu_key in (("  CPU, this thread", "engine_search_cached_embedding_thread_cpu"),
                                          ("  CPU, process", "engine_search_cached_embedding_process_cpu")):
                    p = entry[cpu_key]
                    rows.append([n, layout, cpu_name, p["p50_ms"], p["p95_ms"], p["p99_ms"], "-"])
        b = entry["bytes_per_passage"]
        mem_rows.append([n, len(index.sentences), round(b["vector_index_in_memory"]), round(b["vectors_npy_disk"]),
                         round(b["sentence_vectors_disk"]), round(b["bm25_disk"]), round(b["store_disk"]),
                         round(rss_loaded["RssAnon"] - rss0["RssAnon"]), round(rss_after["RssFile"] - rss0["RssFile"]),
                         "-" if recall is None else f"{recall} ({recall_own})", entry["write_s"], entry["load_s"], entry["map_in_s"]])
        print(f"  {n:,} passages ({layout}): written in {write_s:.1f} s, loaded in {load_s:.1f} s, retrieve p50 "
              f"{entry['engine_search_cached_embedding']['p50_ms']} ms (CPU "
              f"{entry['engine_search_cached_embedding_thread_cpu']['p50_ms']} ms), ANN recall@10 {recall}, "
              f"load {load_timed[0]}-{load_timed[1]}, disk {sum(on_disk.values()) / n:,.0f} B a passage", flush=True)
        del engine, index, vectors, flat
        gc.collect()
        remove_scratch(folder)

    real_cos = neighbour_cosines(real.passage_vectors if qvecs is None else np.concatenate([real.passage_vectors, base[len(real.chunks):]]), np.stack([embedder.encode_query(q) for q, _ in questions]))
    t1 = table(["embedding", "p50 ms", "p95 ms", "p99 ms"],
               [["cold (first time asked)", embed["cold"]["p50_ms"], embed["cold"]["p95_ms"], embed["cold"]["p99_ms"]],
                ["cached (LRU hit)", embed["cached"]["p50_ms"], embed["cached"]["p95_ms"], embed["cached"]["p99_ms"]]],
               title=f"Query embedding ({len(questions)} real XQuAD questions; language detection {embed['detect_language_ms']} ms each)")
    t2 = table(["passages", "vector search", "stage", "p50 ms", "p95 ms", "p99 ms", "p50 x baseline"], rows,
               title=f"\nLatency by index size ({len(questions)} real questions x {args.repeat} runs; k={args.k}, "
                     f"candidates={settings.candidates} per language; FAISS 1 thread; retrieve = Engine.search)")
    t3 = table(["passages", "sentences", "vec index RAM B/p", "vectors.npy B/p", "sent.vec B/p", "bm25 B/p", "store B/p",
                "RSS anon +MB", "RSS file +MB", "ANN recall@10 (own top 10)", "write s", "load s", "map-in s"], mem_rows,
               title=f"\nMemory and disk per passage (B/p); ANN recall@10 vs exact per language, real questions centred as "
                     f"retrieve does: exact top 10 among the {settings.candidates} candidates re-scored exactly (in brackets: "
                     f"among the index's own top 10). Real questions' mean top-1/top-10 cosine on the real {len(base)} vectors: "
                     f"{real_cos['top1_mean']}/{real_cos['top10_mean']} (synthetic: see JSON)")
    t4 = table(["file", "bytes/passage"], [[k, round(v)] for k, v in sorted(per_file.items())],
               title=f"\nReal corpus index on disk ({len(real.chunks)} passages, {len(real.sentences)} sentences)")
    text = f"{t1}\n{t2}\n{t3}\n{t4}"
    print("\n" + text)
    payload = {"benchmark": "bench_query", "machine": info, "material": source, "noise": NOISE,
               "embedding": embed, "results": results, "real_neighbour_cosines": real_cos,
               "real_index_bytes_per_passage": per_file, "table": text}
    print(f"\nWrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()

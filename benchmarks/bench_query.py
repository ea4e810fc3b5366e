"""Query latency of the real retrieval pipeline (qa.retrieval.Engine) at 1k, 10k, 100k passages.

The indexes are synthetic but built from real vectors (see `synthetic_vectors`): XQuAD paragraph
embeddings from the evaluation cache plus the corpus index, mixed in pairs and perturbed with
anisotropic Gaussian noise, then re-normalized. Texts (for BM25 and sentence spans) are the real
texts those vectors came from. Questions are real XQuAD questions in 12 languages.

Measured separately: query embedding (cold, and from the LRU cache), the per-language dense
search, Engine.score (dense + BM25 + sentence scores), and Engine.search (score + grouping into
Passage models). Baseline: one IndexFlatIP search over all vectors (k = candidates).

    python benchmarks/bench_query.py                           # 1k, 10k, 100k; ~2-3 minutes
    python benchmarks/bench_query.py --sizes 1000000 --queries 20   # 1M: ~1.5 GB vectors + ~7 GB sentence vectors
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, describe_machine, ensure_index, machine, percentiles, table, write_json

NOISE = 0.5  # noise std, in units of each dimension's std over the real vectors


def real_material(settings, embedder, index_dir: Path, max_questions: int):
    """Real (text, lang, vector) passages and real (question, lang, vector) from the caches."""
    from qa.store import open_index
    from qa.xquad import find_xquad, load_xquad

    corpus = open_index(index_dir)
    texts = [c.text for c in corpus.chunks]
    langs = corpus.langs.tolist()
    vectors = [corpus.passage_vectors]
    questions: list[tuple[str, str]] = []
    qvecs = []
    cache_path = settings.cache_dir / "eval" / "xquad-embeddings.npz"
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
    return (texts, np.array(langs), np.concatenate(vectors).astype(np.float32), [questions[i] for i in picks],
            np.array(qvecs, np.float32) if qvecs else None, [questions[i][1] for i in range(len(qvecs))], source)


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


def build_synthetic(n, texts, langs, base, query_vectors, query_langs, rng):
    """An in-memory LoadedIndex of n passages, built the way qa.store.build_index builds one."""
    import bm25s
    import faiss

    from qa.chunk import split_sentences
    from qa.lexical import LexicalIndex, tokenize
    from qa.models import Article
    from qa.rank import LanguageStats
    from qa.store import LoadedIndex, Manifest, _StoredChunk

    vectors, src = synthetic_vectors(base, langs, n, rng)
    tokens = [tokenize(t) or ["\u2205"] for t in texts]
    spans = [split_sentences(t) for t in texts]
    articles, chunks, sentence_rows = {}, [], []
    base_articles = [Article(doc_id=f"b{j}", title=f"passage {j}", text=t, lang=str(langs[j]), source=f"synthetic/{j}")
                     for j, t in enumerate(texts)]
    for i, j in enumerate(src.tolist()):
        a = base_articles[j].model_copy(update={"doc_id": f"s{i}"})
        articles[a.doc_id] = a
        chunks.append(_StoredChunk(doc_id=a.doc_id, chunk_id=0, start=0, end=len(a.text), n_tokens=200).to_chunk(a))
        sentence_rows.extend((i, s, e) for s, e in spans[j])
    sentences = np.array(sentence_rows, np.int64).reshape(-1, 3)
    owner = sentences[:, 0]
    # A sentence vector is its passage's vector plus more noise (sentences are noisier than passages).
    sentence_vectors = np.empty((len(sentences), base.shape[1]), np.float32)
    std = base.std(axis=0)
    for s in range(0, len(sentences), 65536):
        e = min(len(sentences), s + 65536)
        v = vectors[owner[s:e]] + 1.0 * std * rng.standard_normal((e - s, base.shape[1]), dtype=np.float32)
        sentence_vectors[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)
    passage_langs = langs[src]
    stats = LanguageStats.fit(vectors, passage_langs)
    if query_vectors is not None:
        ql = np.array(query_langs)
        stats.query_means = {l: query_vectors[ql == l].mean(axis=0) for l in np.unique(passage_langs) if (ql == l).any()}
    retriever = bm25s.BM25()
    retriever.index([tokens[j] for j in src.tolist()], show_progress=False)
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(vectors)
    manifest = Manifest(format_version=1, model={}, chunking={}, corpus={}, index={"type": "flat"}, files={},
                        versions={}, created_at="synthetic")
    index = LoadedIndex(
        path=Path(f"synthetic-{n}"), manifest=manifest, articles=articles, chunks=chunks, faiss_index=flat,
        lang_stats=stats, groups=np.arange(n), lexical=LexicalIndex(retriever), sentences=sentences,
        sentence_vectors=sentence_vectors,
        sentence_stats=LanguageStats.fit(sentence_vectors, passage_langs[owner]),
    )
    return index, vectors


def neighbour_cosines(vectors: np.ndarray, queries: np.ndarray) -> dict:
    """Top-1 and top-10 cosine of real questions against the index: realistic neighbourhoods
    give the same distribution as on real vectors; uniform noise would give ~0."""
    import faiss

    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    scores, _ = flat.search(queries, 10)
    return {"top1_mean": round(float(scores[:, 0].mean()), 4), "top10_mean": round(float(scores[:, 9].mean()), 4)}


def index_bytes(index, folder: Path) -> dict:
    """Bytes per passage in memory / on disk, by component (bm25 saved to a temporary folder)."""
    n = len(index.chunks)
    index.lexical.save(folder)
    bm25 = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "vectors": index.faiss_index.ntotal * index.faiss_index.d * 4 / n,
        "sentence_vectors": index.sentence_vectors.nbytes / n,
        "sentences_per_passage": len(index.sentences) / n,
        "bm25": bm25 / n,
    }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=40, help="distinct real questions per size")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each question (cached paths)")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_query.json")
    args = parser.parse_args(argv)

    import faiss

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.lang import detect_language
    from qa.retrieval import Engine
    from qa.store import open_index

    index_dir = ensure_index()
    empty = Path(tempfile.mkdtemp(prefix="qa-bench-"))
    settings = Settings(index_dir=empty)  # no CURRENT there: the engine keeps the index we give it
    embedder = get_embedder(settings)
    texts, langs, base, questions, qvecs, qlangs, source = real_material(settings, embedder, index_dir, args.queries)
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
    results, rows, mem_rows = [], [], []
    for n in args.sizes:
        t0 = time.perf_counter(); rss0 = rss_mb()
        index, vectors = build_synthetic(n, texts, langs, base, qvecs, qlangs, rng)
        build_s = time.perf_counter() - t0
        engine = Engine(settings)
        engine._index = index  # bypass loading: current_version(empty) is None, so it is kept
        queries = np.stack([embedder.encode_query(q) for q, _ in questions])
        realism = neighbour_cosines(vectors, queries)
        baseline, dense, score, full, full_cold, baseline_1t, full_1t = [], [], [], [], [], [], []
        omp = faiss.omp_get_max_threads()
        # Warm-up: builds the per-language sub-indexes lazily, as the first real question does.
        engine.search(questions[0][0], args.k)
        for (q, lang), vec in zip(questions, queries):
            centered = index.lang_stats.center_query(vec[None, :], lang, settings.query_centering)[0]
            for _ in range(args.repeat):
                t = time.perf_counter(); index.faiss_index.search(vec[None, :], settings.candidates); baseline.append(time.perf_counter() - t)
                t = time.perf_counter(); index.search_by_language(centered, settings.candidates); dense.append(time.perf_counter() - t)
                t = time.perf_counter(); engine.score(q, lang, index); score.append(time.perf_counter() - t)
                t = time.perf_counter(); engine.search(q, args.k); full.append(time.perf_counter() - t)
                # The same with FAISS limited to one OpenMP thread (qa leaves it at one per core).
                faiss.omp_set_num_threads(1)
                t = time.perf_counter(); index.faiss_index.search(vec[None, :], settings.candidates); baseline_1t.append(time.perf_counter() - t)
                t = time.perf_counter(); engine.search(q, args.k); full_1t.append(time.perf_counter() - t)
                faiss.omp_set_num_threads(omp)
        # Cold: the question's embedding not cached (the first time anyone asks it).
        for q, _ in questions:
            q2 = q + " " + "?" * (1 + args.sizes.index(n))  # never asked before: not in the LRU cache
            t = time.perf_counter(); engine.search(q2, args.k); full_cold.append(time.perf_counter() - t)
        with tempfile.TemporaryDirectory() as tmp:
            sizes = index_bytes(index, Path(tmp))
        entry = {
            "passages": n, "sentences": len(index.sentences), "build_s": round(build_s, 1),
            "rss_delta_mb": round(rss_mb() - rss0, 1), "neighbour_cosines": realism,
            "baseline_flat_search": percentiles(baseline), "dense_by_language": percentiles(dense),
            "engine_score": percentiles(score), "engine_search_cached_embedding": percentiles(full),
            "engine_search_cold_embedding": percentiles(full_cold), "bytes_per_passage": sizes,
            "faiss_omp_threads": omp, "baseline_flat_search_faiss_1_thread": percentiles(baseline_1t),
            "engine_search_cached_embedding_faiss_1_thread": percentiles(full_1t),
        }
        entry["ratio_search_vs_baseline_p50"] = round(entry["engine_search_cached_embedding"]["p50_ms"] / max(1e-9, entry["baseline_flat_search"]["p50_ms"]), 1)
        results.append(entry)
        for name, key in (("baseline: 1 IndexFlatIP", "baseline_flat_search"), ("dense, per language", "dense_by_language"),
                          ("Engine.score", "engine_score"), ("Engine.search (cached emb.)", "engine_search_cached_embedding"),
                          ("Engine.search (cold emb.)", "engine_search_cold_embedding"),
                          ("baseline, faiss 1 thread", "baseline_flat_search_faiss_1_thread"),
                          ("Engine.search, faiss 1 thread", "engine_search_cached_embedding_faiss_1_thread")):
            p = entry[key]
            rows.append([n, name, p["p50_ms"], p["p95_ms"], p["p99_ms"], round(p["p50_ms"] / max(1e-9, entry["baseline_flat_search"]["p50_ms"]), 1)])
        mem_rows.append([n, len(index.sentences), round(sizes["vectors"]), round(sizes["sentence_vectors"]), round(sizes["bm25"]),
                         round(per_file.get("passages.jsonl", 0) + per_file.get("articles.jsonl", 0)), entry["rss_delta_mb"],
                         realism["top1_mean"], realism["top10_mean"], entry["build_s"]])
        print(f"  {n:,} passages: built in {build_s:.1f} s, search p50 {entry['engine_search_cached_embedding']['p50_ms']} ms", flush=True)
        del engine, index, vectors
        gc.collect()

    real_cos = neighbour_cosines(real.passage_vectors if qvecs is None else np.concatenate([real.passage_vectors, base[len(real.chunks):]]), np.stack([embedder.encode_query(q) for q, _ in questions]))
    t1 = table(["embedding", "p50 ms", "p95 ms", "p99 ms"],
               [["cold (first time asked)", embed["cold"]["p50_ms"], embed["cold"]["p95_ms"], embed["cold"]["p99_ms"]],
                ["cached (LRU hit)", embed["cached"]["p50_ms"], embed["cached"]["p95_ms"], embed["cached"]["p99_ms"]]],
               title=f"Query embedding ({len(questions)} real XQuAD questions; language detection {embed['detect_language_ms']} ms each)")
    t2 = table(["passages", "stage", "p50 ms", "p95 ms", "p99 ms", "p50 x baseline"], rows,
               title=f"\nLatency by index size ({len(questions)} questions x {args.repeat} runs; k={args.k}, candidates={settings.candidates}; "
                     f"FAISS OpenMP threads {faiss.omp_get_max_threads()} unless said)")
    t3 = table(["passages", "sentences", "vec B/p", "sent.vec B/p", "bm25 B/p", "json B/p", "RSS +MB", "top1 cos", "top10 cos", "build s"], mem_rows,
               title=f"\nMemory and disk per passage (B/p); real questions' mean top-1/top-10 cosine (real {len(base)} vectors: "
                     f"{real_cos['top1_mean']}/{real_cos['top10_mean']})")
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

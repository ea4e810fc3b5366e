"""What a loaded index costs: memory beyond the model, time to ready, retrieve latency, disk.

For each size, a synthetic index is written by the real writer (`qa.index.build.write_index`),
from bench_query.py's material: real passage texts and vectors of the corpus index and the
cached XQuAD paragraphs, mixed and perturbed (`bench_query.synthetic_vectors`); its passage and
sentence vectors are handed to the writer memory-mapped from a scratch file, so that the
writer's own peak memory is what is measured. Then a fresh process loads it as `qa serve`
would, after loading the model:

- anonymous memory (RssAnon: heap, not the page cache) added by `open_index` and the search
  structures `Engine` builds before its first question, and after the questions;
- time to ready: `open_index` (every file's checksum included) plus those structures;
- `Engine.search` p50/p95 with the question's embedding cached (what retrieve adds on top of
  the embedding), real questions, 2 runs each;
- recall@10 of the approximate search against exact search per language (bench_query.ann_recall);
- disk bytes per passage by kind of file.

Baseline: the same script with another qa on PYTHONPATH (the code before this change), same
sizes, in the same session; the table is made from both JSON files with `--compare`.

    python benchmarks/bench_index_memory.py --sizes 100000 --label after
    PYTHONPATH=/path/to/previous/qa python benchmarks/bench_index_memory.py --sizes 100000 --label before
    python benchmarks/bench_index_memory.py --compare results/bench_index_memory_before.json results/bench_index_memory_after.json

`--corpus N ...`: instead, the peak anonymous memory of `qa index` itself (`build_index`) over a
corpus folder of N small article files (sentences of corpus/ reshuffled, one file each), in a
fresh process per size and per code: this qa, and the qa at `--baseline-qa` in the same run.
Embedding is a hash of the text (`HashEmbedder`), so that what is measured is the path from the
folder to the index, not the model (whose cost does not grow with the corpus):

    python benchmarks/bench_index_memory.py --corpus 20000 100000 --baseline-qa /path/to/previous
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS,
    ROOT,
    describe_machine,
    ensure_index,
    machine,
    percentiles,
    remove_scratch,
    scratch_dir,
    table,
    write_json,
)

QUESTIONS = 40


def status_mb(*keys: str) -> dict[str, float]:
    """Fields of /proc/self/status in MB (RssAnon, RssFile, VmHWM...)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def reset_peak() -> None:
    """Start VmHWM (peak resident memory) afresh from the current resident memory (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class PeakAnon:
    """The peak of RssAnon (heap: what the writer itself holds, not the page cache of the files
    it writes or maps) while the block runs, sampled every `every` seconds on a thread; Linux
    keeps no peak of it (VmHWM counts mapped file pages too)."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak_mb = every, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, status_mb("RssAnon")["RssAnon"])
            self._stop.wait(self.every)

    def __enter__(self) -> PeakAnon:  # noqa: PYI034
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, status_mb("RssAnon")["RssAnon"])


def scratch_array(folder: Path, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A writable .npy memory map in `folder` (page cache, not heap)."""
    return np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)


def write_synthetic(n: int, material, rng, index_dir: Path, scratch: Path, settings, lists: bool = False) -> dict:
    """Write an index of n synthetic passages (see the module docstring); returns write time,
    the writer's peak resident memory and the search layout."""
    from bench_query import synthetic_vectors

    from qa.chunk import split_sentences
    from qa.index.build import write_index
    from qa.models import Article, Chunk

    texts, langs, base, _questions, qvecs, qlangs, held_out, _ = material
    vectors, src = synthetic_vectors(base, langs, n, rng)
    mapped = scratch_array(scratch, "vectors.npy", vectors.shape, np.float32)
    mapped[:] = vectors
    del vectors
    spans = [split_sentences(t) for t in texts]
    counts = np.array([len(spans[j]) for j in src.tolist()], np.int64)
    sentences = np.empty((int(counts.sum()), 3), np.int64)
    at = 0
    for i, j in enumerate(src.tolist()):
        for a, b in spans[j]:
            sentences[at] = (i, a, b)
            at += 1
    std = base.std(axis=0)
    sentence_vectors = scratch_array(scratch, "sentence_vectors.npy", (len(sentences), base.shape[1]), np.float16)
    owner = sentences[:, 0]
    for s in range(0, len(sentences), 65536):
        e = min(len(sentences), s + 65536)
        v = mapped[owner[s:e]] + 1.0 * std * rng.standard_normal((e - s, base.shape[1]), dtype=np.float32)
        sentence_vectors[s:e] = v / np.linalg.norm(v, axis=1, keepdims=True)

    def articles():
        for i, j in enumerate(src.tolist()):
            yield Article(doc_id=f"s{i}", title=f"passage {j}", text=texts[j], lang=str(langs[j]), source=f"synthetic/{j}")

    def chunks():
        for i, j in enumerate(src.tolist()):
            yield Chunk(doc_id=f"s{i}", chunk_id=0, text=texts[j], start=0, end=len(texts[j]), n_tokens=200)

    # The writer reads the articles and passages as they are made (as from files), unless
    # `lists`: a writer that needs them all in memory (the code before the streaming writer).
    given = (list(articles()), list(chunks())) if lists else (articles(), chunks())
    ql = np.array(qlangs)
    means = {lang: qvecs[ql == lang].mean(axis=0) for lang in np.unique(langs[src]) if (ql == lang).any()}
    pool = np.flatnonzero(held_out & np.isin(ql, list(means)))
    picks = np.sort(np.random.default_rng(1).choice(pool, min(200, len(pool)), replace=False))
    tuning = np.stack([qvecs[i] - settings.query_centering * means[ql[i]] for i in picks]).astype(np.float32)
    gc.collect()
    before = status_mb("VmRSS", "RssAnon")
    reset_peak()
    t0 = time.perf_counter()
    with PeakAnon() as anon:
        _, search = write_index(
            index_dir, *given, mapped, sentences, sentence_vectors, settings=settings,
            model={"name": "synthetic", "fingerprint": "synthetic", "dim": int(base.shape[1])},
            chunking={"name": "synthetic", "version": 1, "max_tokens": 200, "overlap": 0},
            query_means=means, groups=np.arange(n), recall_queries=tuning,
        )  # fmt: skip
    write_s = time.perf_counter() - t0
    peak = status_mb("VmHWM")["VmHWM"]
    del given, sentence_vectors, mapped
    gc.collect()
    text_bytes = sum(len(texts[j].encode()) for j in src.tolist())
    files = file_sizes(index_dir, n)
    layout = {}
    for report in search.values():
        layout[report.type] = layout.get(report.type, 0) + 1
    return {
        "write_s": round(write_s, 1), "write_peak_rss_mb": peak, "rss_before_write_mb": before,
        "write_peak_anon_mb": anon.peak_mb, "write_anon_added_mb": round(anon.peak_mb - before["RssAnon"], 1),
        "sentences": len(sentences), "layout": layout, "files_bytes_per_passage": files,
        "text_bytes_per_passage": round(text_bytes / n, 1),
    }


def file_sizes(index_dir: Path, n: int) -> dict[str, float]:
    """Bytes per passage of each file of the live version (the IVF files together), largest first."""
    from qa.index.format import current_version, read_manifest

    sizes: dict[str, float] = {}
    for name, size in read_manifest(index_dir / current_version(index_dir)).files.items():
        key = "ann/*.faiss" if name.startswith("ann/") else name
        sizes[key] = sizes.get(key, 0) + size / n
    return {name: round(size, 1) for name, size in sorted(sizes.items(), key=lambda item: -item[1])}


def file_table(entry: dict) -> str:
    """The bytes a passage of each file of a written index (`write_synthetic`'s entry), its
    total, the text's share and what is beyond the text."""
    files = entry["files_bytes_per_passage"]
    total, text = sum(files.values()), entry["text_bytes_per_passage"]
    rows = [[name, size] for name, size in files.items()]
    rows += [["total", round(total, 1)], ["text (UTF-8)", text], ["beyond the text", round(total - text, 1)]]
    return table(["file", "B a passage"], rows, title="Disk, file by file")


def child(index_dir: Path, questions_file: Path, out: Path) -> None:
    """Load `index_dir` in this fresh process as `qa serve` would, and measure (see the module docstring)."""
    from bench_query import ann_recall

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.index.load import open_index
    from qa.retrieval import Engine

    questions = json.loads(questions_file.read_text())
    settings = Settings(index_dir=scratch_dir("qa-bench-empty-"))
    embedder = get_embedder(settings)
    vectors = np.stack([embedder.encode_query(q) for q, _ in questions])  # the model loaded, and the cache warm
    import faiss

    faiss.omp_set_num_threads(1)  # as qa.retrieval.Engine does
    gc.collect()
    before = status_mb("RssAnon", "RssFile", "VmRSS")
    t0 = time.perf_counter()
    index = open_index(index_dir)
    opened_s = time.perf_counter() - t0
    index.search_by_language(np.zeros(index.passage_vectors.shape[1], np.float32), 1)  # as Engine._load
    ready_s = time.perf_counter() - t0
    gc.collect()
    ready = status_mb("RssAnon", "RssFile", "VmRSS")
    t0 = time.perf_counter()
    index.map_in()  # as Engine does, on a thread, after it is ready
    map_in_s = time.perf_counter() - t0
    engine = Engine(settings)
    engine._index = index  # its manifest names the synthetic model: skip the model check
    engine.search(questions[0][0], 5)  # the compiled loops and the language identifier
    times = []
    for _ in range(2):
        for q, _lang in questions:
            t = time.perf_counter()
            engine.search(q, 5)
            times.append(time.perf_counter() - t)
    after = status_mb("RssAnon", "RssFile", "VmRSS", "VmHWM")
    centered = np.concatenate([
        index.lang_stats.center_query(v[None, :], lang, settings.query_centering)
        for v, (_, lang) in zip(vectors, questions)
    ])  # fmt: skip
    recall, recall_own = ann_recall(index, centered, settings.candidates)
    files = index.manifest.files
    n = len(index)

    def per_passage(*prefixes: str) -> float:
        return round(sum(size for name, size in files.items() if name.startswith(prefixes)) / n, 1)

    disk = {
        "total": per_passage(""), "passage vectors": per_passage("vectors.npy", "vector_scales.npy"),
        "sentence vectors": per_passage("sentence_vectors.npy", "sentence_scales.npy"),
        "bm25": per_passage("bm25/"), "ann": per_passage("ann/"),
        "passages+articles": per_passage("store/", "articles.jsonl", "passages.jsonl"),
    }  # fmt: skip
    disk["other"] = round(disk["total"] - sum(v for k, v in disk.items() if k != "total"), 1)
    out.write_text(json.dumps({
        "passages": n, "open_s": round(opened_s, 2), "ready_s": round(ready_s, 2), "map_in_s": round(map_in_s, 2),
        "rss_before_mb": before, "rss_ready_mb": ready, "rss_after_questions_mb": after,
        "anon_ready_mb": round(ready["RssAnon"] - before["RssAnon"], 1),
        "anon_after_questions_mb": round(after["RssAnon"] - before["RssAnon"], 1),
        "retrieve": percentiles(times), "recall_at_10": recall, "recall_at_10_own": recall_own,
        "disk_bytes_per_passage": disk, "format_version": index.manifest.format_version,
    }))


class HashEmbedder:
    """Vectors seeded from a hash of the text: the build's bookkeeping without the model."""

    max_tokens = 512

    def __init__(self, dim: int = 384):
        self.dim, self.fingerprint = dim, f"hash:{dim}"

    def describe(self) -> dict:
        return {"name": "hash", "fingerprint": self.fingerprint, "dim": self.dim}

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t) // 4 + 4 for t in texts]

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(text.encode()[-8:].ljust(8, b"x"), "little") ^ len(text)
            v = np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    encode_queries = encode_documents


def write_corpus(folder: Path, n: int) -> int:
    """n small article files (about 1 KB) in `folder`, in subfolders of 1,000: sentences of the
    corpus/ articles of one language each, reshuffled and numbered so that every article differs."""
    from qa.chunk import split_sentences

    by_lang: dict[str, list[str]] = {}
    for path in sorted((ROOT / "corpus").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        by_lang.setdefault(path.name[:2], []).extend(
            text[a:b].replace("\n", " ") for a, b in split_sentences(text) if b - a >= 30
        )
    langs = sorted(by_lang)
    rng = np.random.default_rng(7)
    size = 0
    for i in range(n):
        lang = langs[i % len(langs)]
        pool = by_lang[lang]
        picks = rng.choice(len(pool), min(8, len(pool)), replace=False)
        body = " ".join(pool[j] for j in picks)
        text = f"Article {i}: {pool[picks[0]][:60]}\n\n{body} ({i})\n"
        sub = folder / f"{i // 1000:05d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{lang}-{i:07d}.txt").write_text(text, encoding="utf-8")
        size += len(text.encode())
    return size


def corpus_child(corpus: Path, out: Path) -> None:
    """`build_index` of `corpus` with `HashEmbedder` in this process: peak anonymous memory."""
    from qa.config import Settings
    from qa.index.build import build_index

    index_dir = out.with_suffix(".index")
    settings = Settings(index_dir=index_dir)
    embedder = HashEmbedder()
    try:
        from qa.index.build import library_versions
    except ImportError:  # an older qa (`--baseline`), where it is private
        from qa.index.build import _versions as library_versions
    from qa.lang import detect_language

    # What any build loads once, whatever the corpus (torch, FAISS, the language detector's
    # models): loaded before the measurement, which is of what grows with the corpus.
    library_versions()
    detect_language("Ein kurzer Satz, um die Sprache zu erkennen.")
    gc.collect()
    before = status_mb("RssAnon")["RssAnon"]
    t0 = time.perf_counter()
    with PeakAnon() as anon:
        report = build_index(corpus, settings=settings, embedder=embedder)
    seconds = time.perf_counter() - t0
    shutil.rmtree(index_dir, ignore_errors=True)
    out.write_text(json.dumps({
        "articles": report.articles, "passages": report.passages, "sentences": report.sentences,
        "build_s": round(seconds, 1), "anon_before_mb": before, "peak_anon_mb": anon.peak_mb,
        "anon_added_mb": round(anon.peak_mb - before, 1),
    }))


def _measure_in_child(args: list[str], result: Path, env: dict[str, str] | None = None) -> dict:
    """Run this script with `args` and the path `result` in a fresh process (its memory measured
    alone, on the `PYTHONPATH` of `env`), and return the JSON it wrote there."""
    subprocess.run([sys.executable, __file__, *args, str(result)], check=True, env=env)
    return json.loads(result.read_text())


def corpus_runs(sizes: list[int], baseline: Path | None, label: str, out: Path | None) -> dict:
    """`--corpus`: each size's folder written once, built by this qa and by the baseline's."""
    import os

    codes = [("this", str(ROOT))] + ([("baseline", str(baseline))] if baseline else [])
    work = scratch_dir("qa-bench-corpus-")
    results = []
    try:
        for n in sizes:
            folder = work / f"corpus-{n}"
            size = write_corpus(folder, n)
            for name, path in codes:
                measured = _measure_in_child(["--corpus-child", str(folder)], work / f"{name}-{n}.json",
                                             env={**os.environ, "PYTHONPATH": path})
                entry = {"code": name, "files": n, "corpus_mb": round(size / 1e6, 1), **measured}
                results.append(entry)
                print(f"  {name} {n:,} files: peak anonymous {entry['peak_anon_mb']:.0f} MB "
                      f"(+{entry['anon_added_mb']:.0f} MB), {entry['build_s']} s", flush=True)
            shutil.rmtree(folder)
    finally:
        remove_scratch(work)
    payload = {"benchmark": "bench_index_memory --corpus", "label": label, "machine": machine(), "results": results}
    write_json(out or RESULTS / f"bench_index_memory_corpus_{label}.json", payload)
    print(table(
        ["code", "files", "corpus MB", "passages", "sentences", "build s", "anon MB before", "peak anon MB", "added MB"],
        [[r["code"], f"{r['files']:,}", r["corpus_mb"], f"{r['passages']:,}", f"{r['sentences']:,}", r["build_s"],
          r["anon_before_mb"], r["peak_anon_mb"], r["anon_added_mb"]] for r in results],
        title="qa index (build_index) over a folder of small files: peak anonymous memory (hash embedder)",
    ))  # fmt: skip
    return payload


def compare(paths: list[Path]) -> str:
    rows = []
    for path in paths:
        payload = json.loads(path.read_text())
        for entry in payload["results"]:
            if "disk_bytes_per_passage" not in entry:  # nothing of a loaded index to put in this table
                raise SystemExit(f"{path}: a --write-only result (the writer alone); --compare shows loaded indexes.")
            d = entry["disk_bytes_per_passage"]
            rows.append([
                payload["label"], f"{entry['passages']:,}", entry["format_version"], entry["anon_ready_mb"],
                entry["anon_after_questions_mb"], entry["ready_s"], entry["retrieve"]["p50_ms"],
                entry["retrieve"]["p95_ms"], entry["recall_at_10"], round(d["total"]), round(d["passages+articles"]),
                round(d["bm25"]), entry["write_s"], round(entry["write_peak_rss_mb"]),
            ])  # fmt: skip
    return table(
        ["code", "passages", "format", "anon MB at ready", "anon MB after questions", "ready s", "retrieve p50 ms",
         "p95 ms", "recall@10", "disk B/p", "text+meta B/p", "bm25 B/p", "write s", "write peak RSS MB"],
        rows, title="Loaded index: anonymous memory beyond the model, time to ready, retrieve (cached embedding), disk",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100000])
    parser.add_argument("--label", default="after", help="names the results file and the table's rows")
    parser.add_argument("--material-index", type=Path, default=None,
                        help="an index of corpus/ (written by the qa being measured): the real passages "
                             "(default: the benchmark index of corpus/, built once)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--lists", action="store_true",
                        help="hand the writer lists of articles and passages (a writer that cannot stream them)")
    parser.add_argument("--write-only", action="store_true", help="measure the write only, not the loaded index")
    parser.add_argument("--compare", type=Path, nargs="+", help="print the table of these results files")
    parser.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=int, nargs="+", help="measure qa index over folders of this many files")
    parser.add_argument("--baseline-qa", type=Path, help="with --corpus: the folder holding the previous qa package")
    parser.add_argument("--corpus-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.corpus_child:
        corpus_child(*args.corpus_child)
        return None
    if args.corpus:
        return corpus_runs(args.corpus, args.baseline_qa, args.label, args.out)
    if args.child:
        child(*args.child)
        return None
    if args.compare:
        print(compare(args.compare))
        return None

    from bench_query import real_material

    from qa.config import Settings
    from qa.embed import get_embedder

    settings = Settings(index_dir=scratch_dir("qa-bench-empty-"))
    embedder = get_embedder(settings)
    material = real_material(settings, embedder, args.material_index or ensure_index(), QUESTIONS)
    del embedder
    info = machine()
    print(f"Machine: {describe_machine(info)}\nMaterial: {material[-1]}", flush=True)
    work = scratch_dir("qa-bench-memory-")
    questions = work / "questions.json"
    questions.write_text(json.dumps([list(q) for q in material[3]]))
    rng = np.random.default_rng(42)
    results = []
    try:
        for n in args.sizes:
            index_dir, scratch = work / f"index-{n}", work / f"scratch-{n}"
            scratch.mkdir()
            entry = write_synthetic(n, material, rng, index_dir, scratch, Settings(index_dir=index_dir), args.lists)
            shutil.rmtree(scratch)
            print(file_table(entry), flush=True)
            print(f"  {n:,}: written in {entry['write_s']} s (peak RSS {entry['write_peak_rss_mb']:.0f} MB, anonymous "
                  f"+{entry['write_anon_added_mb']:.0f} MB over the {entry['rss_before_write_mb']['RssAnon']:.0f} MB "
                  "held before)", flush=True)
            if args.write_only:
                results.append(entry)
                shutil.rmtree(index_dir)
                continue
            entry.update(_measure_in_child(["--child", str(index_dir), str(questions)], work / f"child-{n}.json"))
            results.append(entry)
            print(f"  {n:,}: ready in {entry['ready_s']} s, +{entry['anon_ready_mb']} MB anonymous, retrieve p50 "
                  f"{entry['retrieve']['p50_ms']} ms, recall@10 {entry['recall_at_10']}", flush=True)
            shutil.rmtree(index_dir)
    finally:
        remove_scratch(work)
    out = args.out or RESULTS / f"bench_index_memory_{args.label}.json"
    payload = {"benchmark": "bench_index_memory", "label": args.label, "machine": info, "results": results}
    write_json(out, payload)
    if not args.write_only:
        print(compare([out]))
    return payload


if __name__ == "__main__":
    main()

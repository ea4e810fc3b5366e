"""Adding to a large index: a new segment (qa.index.segments) against writing the whole index again.

An index of N synthetic passages (real vectors mixed and perturbed, real texts, as in
bench_query.py) is written by the real writer; then 1 % of N more passages are added either as
a segment of it (`qa.index.segments.add_segment`: the old files hard-linked, the new segment
written by the ordinary writer, CURRENT swapped) or by writing an index of all N + 1 % at once
(what a full `qa index` writes; both without the embedding, which is the same for both: only
the new passages are embedded either way). Measured: seconds and bytes written (the files of
the new version that are not hard links), and `Engine.search` (what `retrieve()` runs) p50 and
p95 over real questions, on the one-version index and on the two-segment one (same passages).

    nice -n 19 python benchmarks/bench_segments.py --n 100000
    nice -n 19 python benchmarks/bench_segments.py --pipeline 20000   # `qa index` end to end
    nice -n 19 python benchmarks/bench_segments.py --pipeline 100000 --adds 8   # adds in a row, merged
    nice -n 19 python benchmarks/bench_segments.py --pipeline 20000 --dates 500  # dates corrected
    nice -n 19 python benchmarks/bench_segments.py --links 200000     # an add's translation links
    python benchmarks/bench_segments.py --n 1000000 --adds 4           # 4 adds of 1 % to 1M, then their merge
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
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
from bench_query import build_synthetic, real_material, synthetic_vectors

MODEL = {"name": "synthetic", "fingerprint": "synthetic", "dim": 384}
CHUNKING = {"name": "synthetic", "version": 1, "max_tokens": 200, "overlap": 0}


def material(first: int, n: int, texts, langs, base, rng):
    """Articles, passages, vectors, sentence table and sentence vectors of synthetic passages
    `first` .. `first + n` (one passage an article; sentence vectors = passage vector + noise)."""
    from qa.chunk import split_sentences
    from qa.models import Article, Chunk

    vectors, src = synthetic_vectors(base, langs, n, rng)
    articles, chunks, rows = [], [], []
    for i, j in enumerate(src.tolist()):
        text = texts[j]
        doc = f"s{first + i}"
        articles.append(Article(doc_id=doc, title=f"passage {j}", text=text, lang=str(langs[j]), source=f"synthetic/{j}"))
        chunks.append(Chunk(doc_id=doc, chunk_id=0, text=text, start=0, end=len(text), n_tokens=200))
        rows.extend((i, a, b) for a, b in split_sentences(text))
    sentences = np.array(rows, np.int64).reshape(-1, 3)
    std = base.std(axis=0)
    noise = std * rng.standard_normal((len(sentences), base.shape[1]), dtype=np.float32)
    sentence_vectors = vectors[sentences[:, 0]] + noise
    sentence_vectors /= np.linalg.norm(sentence_vectors, axis=1, keepdims=True)
    return articles, chunks, vectors, sentences, sentence_vectors


def concat(a, b):
    """Two `material`s as one (the second's article numbers shifted)."""
    shifted = b[3].copy()
    shifted[:, 0] += len(a[0])
    return (a[0] + b[0], a[1] + b[1], np.concatenate([a[2], b[2]]), np.concatenate([a[3], shifted]),
            np.concatenate([a[4], b[4]]))


def new_bytes(version_dir: Path) -> tuple[int, int]:
    """(bytes of the version's files that are not hard links to another version's, all its bytes)."""
    written = total = 0
    for path in version_dir.rglob("*"):
        if path.is_file():
            info = os.stat(path)
            total += info.st_size
            written += info.st_size if info.st_nlink == 1 else 0
    return written, total


def search_times(index, settings, embedder, questions, k: int, repeat: int) -> dict:
    from qa.retrieval import Engine

    engine = Engine(settings)
    engine._index = index  # its manifest names the synthetic model: skip the model check
    engine.search(questions[0][0], k)  # builds the per-language search structures
    times = []
    for q, _ in questions:
        embedder.encode_query(q)  # cached: the search, not the model, is timed
        for _ in range(repeat):
            t = time.perf_counter()
            engine.search(q, k)
            times.append(time.perf_counter() - t)
    return percentiles(times)


class StandIn:
    """An embedder whose vectors are hash-seeded (384 dimensions): `qa index`'s own work is timed,
    not the model's (which embeds the same new articles either way)."""

    dim = 384
    max_tokens = 512
    fingerprint = "stand-in:1"

    def describe(self) -> dict:
        return {"name": "stand-in", "fingerprint": self.fingerprint, "dim": self.dim}

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t) // 4 + 4 for t in texts]

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        import hashlib

        out = np.empty((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.encode_documents(texts)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode_documents([text])[0]


def write_corpus(folder: Path, first: int, n: int, texts, langs, dated: int = 0) -> None:
    """`n` articles as JSON lines, 1,000 a file, each a real text (from the corpus and XQuAD) with
    its number; the first `dated` of them with a date (a correction of their metadata alone)."""
    import json

    for start in range(first, first + n, 1000):
        with (folder / f"articles-{start:08d}.jsonl").open("w", encoding="utf-8") as handle:
            for i in range(start, min(first + n, start + 1000)):
                j = i % len(texts)
                line = {"title": f"Article {i}", "text": f"{texts[j]} ({i})", "lang": str(langs[j])}
                if i < dated:
                    line["date"] = "2024-01-02"
                handle.write(json.dumps(line) + "\n")


def pipeline(articles: int, share: float, texts, langs, adds: int = 0, dates: int = 0) -> list[list]:
    """`qa index` end to end (`build_index`, stand-in embedder) of `articles` articles, then the
    same `share` more added as a segment (reading only the new files, and, on a copy, reading
    every file as before `qa.index.corpus_files`) and, on another copy, as a full build. Then
    `adds` more adds of that `share` in a row, as `qa index` runs them (segments merged as
    `qa.index.segments.merge` says): each one's seconds and bytes written, merges included.
    Then, with `dates`, that many articles given a date (their text unchanged): the add that
    writes them again, and on the copy the full build that applied such a change before."""
    from qa.config import Settings
    from qa.index.build import build_index
    from qa.index.corpus_files import CORPUS_FILES

    root = scratch_dir("qa-bench-pipeline-")
    corpus = root / "corpus"
    corpus.mkdir()
    write_corpus(corpus, 0, articles, texts, langs)
    # (written long before the first build, as a real corpus: none racily clean, see RACY_NS)
    old = time.time_ns() - 3600 * 10**9
    for path in corpus.iterdir():
        os.utime(path, ns=(old, old))
    settings = Settings(corpus_dir=corpus, index_dir=root / "index")
    embedder = StandIn()
    t = time.perf_counter()
    first = build_index(settings=settings, embedder=embedder)
    first_s = time.perf_counter() - t
    record = (root / "index" / first.version / CORPUS_FILES).stat().st_size
    for copy in ("all", "copy"):
        shutil.copytree(root / "index", root / copy, symlinks=True)
    n_files = len(list(corpus.iterdir()))
    added = max(1, int(articles * share))
    write_corpus(corpus, articles, added, texts, langs)
    rows = [[f"qa index: first build of {articles:,} articles ({first.passages:,} passages, {n_files} files)",
             round(first_s, 1), round(new_bytes(root / "index" / first.version)[0] / (1 << 20), 1), n_files]]
    runs = (
        (f"qa index: {added:,} added, as a segment (unchanged files not read)", "index", "auto", False),
        (f"qa index: {added:,} added, as a segment, every file read (before)", "all", "auto", True),
        (f"qa index --rebuild: {added:,} added", "copy", "rebuild", False),
    )

    def row(label: str, started: float, folder: str, report) -> list:
        """A table row: the seconds since `started`, the MB the new version wrote, the files read."""
        seconds = time.perf_counter() - started
        files = report.files_read if report.files_read is not None else len(list(corpus.iterdir()))
        return [label, round(seconds, 1), round(new_bytes(root / folder / report.version)[0] / (1 << 20), 1), files]

    for label, folder, mode, read_all in runs:
        t = time.perf_counter()
        report = build_index(settings=settings.model_copy(update={"index_dir": root / folder}), embedder=embedder,
                             segments=mode, read_all=read_all)
        rows.append(row(label, t, folder, report))
    total = added
    for step in range(adds):
        write_corpus(corpus, articles + total, added, texts, langs)
        total += added
        t = time.perf_counter()
        report = build_index(settings=settings, embedder=embedder)
        merged = f", {report.merged} segments merged in {report.merge_seconds:.1f} s" if report.merged else ""
        rows.append(row(f"qa index: add {step + 2} of {added:,} ({report.segments} segments after{merged})", t,
                        "index", report))
    if dates:
        write_corpus(corpus, 0, min(articles, -(-dates // 1000) * 1000), texts, langs, dated=dates)
        for label, folder, mode in (
            (f"qa index: {dates:,} articles dated (same text), an add", "index", "auto"),
            ("qa index --rebuild: the same (a full build, as a date change was before)", "copy", "rebuild"),
        ):
            t = time.perf_counter()
            report = build_index(settings=settings.model_copy(update={"index_dir": root / folder}),
                                 embedder=embedder, segments=mode)
            updated = f" ({report.updated_articles:,} updated, {report.embedded} passages embedded)"
            rows.append(row(label + (updated if mode == "auto" else ""), t, folder, report))
    print(f"{CORPUS_FILES} of the first build: {record:,} bytes for {n_files} files and {first.articles:,} articles")
    remove_scratch(root)
    return rows


class _Searches:
    """A stand-in for a live segment: its per-language searches (`Index.language_searches`)."""

    def __init__(self, searches: dict):
        self.searches = searches

    def language_searches(self) -> dict:
        return self.searches


def language_searches(vectors: np.ndarray, rows_of: dict, questions) -> tuple[dict, list[str]]:
    """Each language's search as the writer makes it (`qa.index.write`): IVF-SQ8 trained, filled
    and tuned on real questions of the language for recall@10 0.97, exact 8-bit below
    `ann_min_passages` or when the IVF misses the target."""
    from qa.config import Settings
    from qa.index.ann import ByteExact, ProbedIVF, fill, n_lists, train_ivf, tune_probes

    settings = Settings()
    qvecs, qlangs = questions
    out, kinds = {}, []
    for lang, rows in rows_of.items():
        mine = np.ascontiguousarray(vectors[rows])
        queries = qvecs[qlangs == lang] if qvecs is not None and (qlangs == lang).sum() >= 50 else mine[:300]
        queries = np.ascontiguousarray(queries[:300], np.float32)
        search = None
        if len(rows) >= settings.ann_min_passages:
            index = train_ivf(mine, n_lists(len(rows)))
            fill(index, mine)
            nprobe, gap, recall = tune_probes(index, mine, queries, settings.ann_target_recall, settings.candidates)
            if recall >= settings.ann_target_recall:
                search = ProbedIVF(index, nprobe, gap)
                kinds.append(f"{lang} IVF{index.nlist} recall {recall:.3f}")
        if search is None:
            search = ByteExact(mine)
            kinds.append(f"{lang} exact")
        out[lang] = (search, rows)
    return out, kinds


def links(n: int, added: int, langs, base, questions) -> list[list]:
    """An add's translation links (`qa.index.segments.groups.find_links`) of `added` synthetic
    passages among `n` live ones: every live passage compared (exact) against the candidates of
    the live passages' per-language searches (built beforehand, as a live version holds them)."""
    from qa.config import Settings
    from qa.index.segments.add import _ann_candidates
    from qa.index.segments.groups import ANN_CANDIDATES, find_links

    rng = np.random.default_rng(11)
    vectors, src = synthetic_vectors(base, langs, n + added, rng)
    lang_of = np.asarray(langs)[src]
    names = sorted(set(lang_of.tolist()))
    means = np.stack([vectors[lang_of == lang].mean(axis=0) for lang in names]).astype(np.float32)
    rows_by_language = {lang: np.flatnonzero(lang_of == lang) for lang in names}
    live = {lang: rows[rows < n] for lang, rows in rows_by_language.items()}
    print(f"Per-language searches of {n:,} live passages in {len(names)} languages ...", flush=True)
    t = time.perf_counter()
    searches, kinds = language_searches(vectors, live, questions)
    print(f"  {time.perf_counter() - t:.0f} s: {', '.join(kinds)}", flush=True)

    def vectors_of(rows: np.ndarray, lang: str) -> np.ndarray:
        out = vectors[np.asarray(rows, np.int64)] - means[names.index(lang)]
        return np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True), np.float32)

    threshold = Settings().group_threshold
    candidates = _ann_candidates([_Searches(searches)], np.array([0]), np.ones(n, bool), ANN_CANDIDATES,
                                 dict(zip(names, means)))
    t = time.perf_counter()
    approximate = find_links(vectors_of, rows_by_language, n, threshold, candidates)
    approximate_s = time.perf_counter() - t
    print(f"  approximate candidates: {approximate_s:.1f} s, {len(approximate):,} links", flush=True)
    t = time.perf_counter()
    exact = find_links(vectors_of, rows_by_language, n, threshold)
    exact_s = time.perf_counter() - t
    same = len(set(map(tuple, exact.tolist())) & set(map(tuple, approximate.tolist())))
    return [
        ["exact (every live passage)", round(exact_s, 1), len(exact), len(exact)],
        [f"approximate candidates ({ANN_CANDIDATES} a language)", round(approximate_s, 1), len(approximate), same],
    ]


def adds_then_merge(n: int, share: float, adds: int, texts, langs, base, questions) -> list[list]:
    """An index of `n` synthetic passages written as `bench_query` writes its large ones (memory
    bounded at 1M), then `adds` adds of `share` of `n` each as `qa index` makes them (a segment
    written by the ordinary writer, its translation links found among every live passage), then
    the merge `qa index` runs after them (`qa.index.segments.merge`). Seconds and MB written of
    each step; the first write is the reference (a full build writes about that again)."""
    from qa.config import Settings
    from qa.index.format import current_version
    from qa.index.load import open_index
    from qa.index.segments import AddPlan, add_segment
    from qa.index.segments.merge import merge_live
    from qa.index.write import start_version, write_version

    root = scratch_dir("qa-bench-adds-")
    settings = Settings(index_dir=root / "index")
    rng = np.random.default_rng(7)
    qvecs, qlangs = questions
    index, vectors, _, write_s, _, _ = build_synthetic(
        n, texts, langs, base, qvecs, qlangs, np.ones(len(qlangs), bool), rng, settings.index_dir, settings
    )
    del index, vectors
    gc.collect()
    mb = 1 << 20
    rows = [[f"write {n:,} passages (the first build; a full build writes this again)", round(write_s, 1),
             round(new_bytes(settings.index_dir / current_version(settings.index_dir))[0] / mb, 1)]]
    added = max(1, int(n * share))
    means = {}
    for step in range(adds):
        new = material(n + step * added, added, texts, langs, base, rng)

        def write_segment(folder: Path, parts=new) -> str:
            return write_version(start_version(folder), *parts, settings=settings, model=MODEL, chunking=CHUNKING,
                                 query_means=means, previous=None, groups=np.arange(len(parts[2])))[0]

        previous = open_index(settings.index_dir)
        t = time.perf_counter()
        version = add_segment(start_version(settings.index_dir), previous, AddPlan(set(), {}, len(new[0])),
                              write_segment, group_threshold=settings.group_threshold)
        seconds = time.perf_counter() - t
        del previous, new
        gc.collect()
        rows.append([f"add {step + 1}: {added:,} passages as a segment, translation links included",
                     round(seconds, 1), round(new_bytes(settings.index_dir / version)[0] / mb, 1)])
        print(rows[-1], flush=True)
    t = time.perf_counter()
    report = merge_live(settings.index_dir, settings)
    seconds = time.perf_counter() - t
    if report is not None:
        label = (f"merge: {report.merged_segments} segments, {report.passages_written:,} passages written, "
                 f"{report.segments_after} segments after")
        rows.append([label, round(seconds, 1),
                     round(new_bytes(settings.index_dir / report.version)[0] / mb, 1)])
    remove_scratch(root)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="passages of the index added to")
    parser.add_argument("--share", type=float, default=0.01, help="passages added, as a share of n")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_segments.json")
    parser.add_argument("--pipeline", type=int, default=0, metavar="ARTICLES",
                        help="instead: `qa index` end to end on this many articles, then 1%% added")
    parser.add_argument("--adds", type=int, default=0, metavar="K",
                        help="K adds of 1%% in a row, segments merged as qa index merges them: after --pipeline's "
                             "adds, or alone: to a synthetic index of --n passages, then the merge")
    parser.add_argument("--dates", type=int, default=0, metavar="K",
                        help="after --pipeline's adds: K articles given a date (same text), indexed as an add "
                             "and, on a copy, as a full build")
    parser.add_argument("--links", type=int, default=0, metavar="PASSAGES",
                        help="instead: an add's translation links among this many live passages, exact "
                             "against candidates from per-language approximate searches")
    args = parser.parse_args(argv)

    import faiss

    from qa.config import Settings
    from qa.embed import get_embedder
    from qa.index.build import write_index
    from qa.index.format import current_version
    from qa.index.load import open_index
    from qa.index.segments import AddPlan, add_segment
    from qa.index.write import start_version, write_version

    settings = Settings(index_dir=scratch_dir("qa-bench-"))
    embedder = get_embedder(settings)
    texts, langs, base, questions, qvecs, qlangs, *_ = real_material(settings, embedder, ensure_index(), args.queries)
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    if args.pipeline:
        rows = pipeline(args.pipeline, args.share, texts, langs, args.adds, args.dates)
        print(table(["", "seconds", "MB written", "files read"], rows, "qa index end to end (stand-in embedder)"))
        out = args.out.with_name(args.out.stem + "_pipeline.json")
        print(f"Wrote {write_json(out, {'machine': info, 'articles': args.pipeline, 'rows': rows})}")
        remove_scratch(settings.index_dir)
        return {"rows": rows}
    if args.links:
        rows = links(args.links, max(1, int(args.links * args.share)), langs, base, (qvecs, np.array(qlangs)))
        print(table(["", "seconds", "links", "links as the exact ones'"], rows,
                    f"Translation links of {int(args.links * args.share):,} new passages among {args.links:,} live"))
        out = args.out.with_name(args.out.stem + f"_links_{args.links}.json")
        print(f"Wrote {write_json(out, {'machine': info, 'live': args.links, 'rows': rows})}")
        remove_scratch(settings.index_dir)
        return {"rows": rows}
    MODEL["dim"] = int(base.shape[1])
    if args.adds:
        rows = adds_then_merge(args.n, args.share, args.adds, texts, langs, base, (qvecs, np.array(qlangs)))
        print(table(["", "seconds", "MB written"], rows, f"Adds of {args.share:.0%} to {args.n:,} passages, then the merge"))
        out = args.out.with_name(args.out.stem + f"_adds_{args.n}.json")
        print(f"Wrote {write_json(out, {'machine': info, 'n': args.n, 'rows': rows})}")
        remove_scratch(settings.index_dir)
        return {"rows": rows}
    faiss.omp_set_num_threads(1)  # as the engine does
    rng = np.random.default_rng(7)
    added = max(1, int(args.n * args.share))
    old = material(0, args.n, texts, langs, base, rng)
    new = material(args.n, added, texts, langs, base, rng)
    means = {}
    root = scratch_dir("qa-bench-segments-")

    def write(folder: Path, parts) -> tuple[float, str]:
        bench = Settings(index_dir=folder)
        t = time.perf_counter()
        version, _ = write_index(folder, parts[0], parts[1], parts[2], parts[3], parts[4], settings=bench,
                                 model=MODEL, chunking=CHUNKING, query_means=means, groups=np.arange(len(parts[2])))
        return time.perf_counter() - t, version

    print(f"Writing the index of {args.n:,} passages ...")
    write(root / "segmented", old)
    previous = open_index(root / "segmented")
    print(f"Adding {added:,} passages as a segment ...")
    bench = Settings(index_dir=root / "segmented")

    def write_segment(folder: Path, parts=new) -> str:
        return write_version(start_version(folder), *parts, settings=bench, model=MODEL, chunking=CHUNKING,
                              query_means=means, previous=None, groups=np.arange(len(parts[2])))[0]

    t = time.perf_counter()
    building = start_version(root / "segmented")
    version = add_segment(building, previous, AddPlan(set(), {}, len(new[0])), write_segment)
    add_s = time.perf_counter() - t
    add_written, add_total = new_bytes(root / "segmented" / version)
    del previous
    gc.collect()
    print(f"Writing the index of all {args.n + added:,} passages at once ...")
    both = concat(old, new)
    del old
    full_s, full_version = write(root / "whole", both)
    full_written, full_total = new_bytes(root / "whole" / full_version)
    del both, new
    gc.collect()

    segmented = open_index(root / "segmented")
    whole = open_index(root / "whole")
    assert current_version(root / "segmented") == version and len(segmented) == len(whole)
    for index in (segmented, whole):
        index.map_in()
    one = search_times(whole, Settings(index_dir=root / "whole"), embedder, questions, 5, args.repeat)
    two = search_times(segmented, Settings(index_dir=root / "segmented"), embedder, questions, 5, args.repeat)

    mb = 1 << 20
    rows = [
        [f"add {added:,} as a segment", round(add_s, 1), round(add_written / mb, 1), round(add_total / mb, 1)],
        [f"write all {args.n + added:,} again", round(full_s, 1), round(full_written / mb, 1), round(full_total / mb, 1)],
    ]
    print(table(["", "seconds", "MB written", "MB in the version"], rows,
                f"Adding {args.share:.0%} to {args.n:,} passages"))
    print(table(["index", "p50 ms", "p95 ms"], [
        ["one version", one["p50_ms"], one["p95_ms"]],
        ["two segments", two["p50_ms"], two["p95_ms"]],
    ], f"Engine.search of {len(questions)} real questions x {args.repeat}, {args.n + added:,} passages"))
    result = {
        "machine": info, "n": args.n, "added": added,
        "add": {"seconds": add_s, "bytes_written": add_written, "bytes_total": add_total},
        "full": {"seconds": full_s, "bytes_written": full_written, "bytes_total": full_total},
        "search_one_version": one, "search_two_segments": two,
    }
    print(f"Wrote {write_json(args.out, result)}")
    remove_scratch(root)
    remove_scratch(settings.index_dir)
    return result


if __name__ == "__main__":
    main()

"""Where the passages live: memory-mapped columns + a record file (`qa.index.store`) vs SQLite.

Both hold the same N articles of real-sized text (the corpus's and cached XQuAD's real passage
texts, repeated with new ids, one passage an article as in bench_query's synthetic index) and
answer what a question asks of them: the passages of 50 random rows (text cut from the article,
title, date, source), and 50 look-ups of a row by (doc_id, start) as `qa.answer` does. Measured:
write time, disk bytes per passage, time to open, anonymous memory after opening and after the
reads, and the per-question read time (p50/p95 over 200 questions, page cache warm).

    python benchmarks/bench_index_store.py --passages 1000000
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
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

QUESTIONS = 200
ROWS = 50


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def material(n: int) -> tuple[list[str], list[str]]:
    """Real passage texts and their languages (the corpus index's passages; XQuAD's paragraphs
    when its cache is there), to be repeated to n articles."""
    from qa.index.load import open_index
    from qa.xquad import find_xquad, load_xquad

    index = open_index(ensure_index())  # the benchmark index of corpus/ (the repository's index/ may not exist)
    texts = [c.text for c in index.chunks]
    langs = index.langs.tolist()
    folder = find_xquad(ROOT)
    if folder is not None:
        data = load_xquad(folder)
        for lang in data.langs:
            texts += data.paragraphs[lang]
            langs += [lang] * len(data.paragraphs[lang])
    return texts, langs


def articles(n: int, texts: list[str], langs: list[str]):
    """(Article, Chunk) pairs, generated one at a time."""
    from qa.models import Article, Chunk

    rng = np.random.default_rng(0)
    for i, j in enumerate(rng.integers(0, len(texts), n).tolist()):
        text = texts[j]
        article = Article(doc_id=f"{i:020x}", title=f"Title {j}", text=text, lang=langs[j],
                          source=f"feeds/site-{j % 20}.jsonl#{i}", url=f"https://site-{j % 20}.example/{i}",
                          date=f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}")  # fmt: skip
        yield article, Chunk(doc_id=article.doc_id, chunk_id=0, text=text, start=0, end=len(text), n_tokens=200)


def write_store(folder: Path, n: int, texts, langs) -> None:
    from qa.index.store import StoreWriter, write_groups, write_sentence_links

    writer = StoreWriter(folder, sorted(set(langs)))
    batch_chunks, batch_langs = [], []
    for article, chunk in articles(n, texts, langs):
        writer.add_article(article)
        batch_chunks.append(chunk)
        batch_langs.append(article.lang)
        if len(batch_chunks) == 65536:
            writer.add_passages(batch_chunks, batch_langs)
            batch_chunks, batch_langs = [], []
    writer.add_passages(batch_chunks, batch_langs)
    columns, codes = writer.close()
    write_groups(folder, np.arange(n))
    write_sentence_links(folder, columns, codes, np.zeros((0, 3), np.int64))


def open_store(folder: Path, langs: list[str]):
    from qa.index.store import ARTICLE_RECORDS, STORE_FILES, PassageStore

    arrays = {name: np.load(folder / name, mmap_mode="r") for name in STORE_FILES if name.endswith(".npy")}
    fd = os.open(folder / ARTICLE_RECORDS, os.O_RDONLY)
    store = PassageStore(arrays, fd, folder / ARTICLE_RECORDS, langs)
    os.close(fd)
    return store


def write_sqlite(path: Path, n: int, texts, langs) -> None:
    db = sqlite3.connect(path)
    db.executescript(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
        "CREATE TABLE articles (number INTEGER PRIMARY KEY, doc_id TEXT UNIQUE, record TEXT);"
        "CREATE TABLE passages (row INTEGER PRIMARY KEY, article INTEGER, chunk_id INTEGER, start INTEGER,"
        " end_ INTEGER, tokens INTEGER, lang INTEGER);"
    )
    codes = {lang: i for i, lang in enumerate(sorted(set(langs)))}
    rows_a, rows_p = [], []
    for i, (article, chunk) in enumerate(articles(n, texts, langs)):
        rows_a.append((i, article.doc_id, article.model_dump_json()))
        rows_p.append((i, i, chunk.chunk_id, chunk.start, chunk.end, chunk.n_tokens, codes[article.lang]))
        if len(rows_a) == 65536:
            db.executemany("INSERT INTO articles VALUES (?, ?, ?)", rows_a)
            db.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)", rows_p)
            rows_a, rows_p = [], []
    db.executemany("INSERT INTO articles VALUES (?, ?, ?)", rows_a)
    db.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?)", rows_p)
    db.execute("CREATE INDEX passage_key ON passages (article, start)")
    db.commit()
    db.close()


class SqliteStore:
    """The same questions asked of the SQLite file."""

    def __init__(self, path: Path):
        from qa.models import Article, Chunk

        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.Article, self.Chunk = Article, Chunk

    def passage(self, row: int):
        article_number, chunk_id, start, end, tokens = self.db.execute(
            "SELECT article, chunk_id, start, end_, tokens FROM passages WHERE row = ?", (row,)
        ).fetchone()
        (record,) = self.db.execute("SELECT record FROM articles WHERE number = ?", (article_number,)).fetchone()
        article = self.Article.model_validate_json(record)
        return self.Chunk(doc_id=article.doc_id, chunk_id=chunk_id, text=article.text[start:end], start=start,
                          end=end, n_tokens=tokens), article  # fmt: skip

    def row_of(self, doc_id: str, start: int) -> int | None:
        found = self.db.execute(
            "SELECT p.row FROM articles a JOIN passages p ON p.article = a.number WHERE a.doc_id = ? AND p.start = ?",
            (doc_id, start),
        ).fetchone()
        return found[0] if found else None


def _mapped_passage(store, row: int) -> tuple[str, int]:
    chunk = store.passage(row)
    return chunk.doc_id, chunk.start


def _sqlite_passage(store, row: int) -> tuple[str, int]:
    chunk, _article = store.passage(row)
    return chunk.doc_id, chunk.start


def measure(name: str, open_fn, passage_fn, row_of_fn, n: int, size: int, write_s: float) -> list:
    gc.collect()
    anon0 = status_mb("RssAnon")
    t0 = time.perf_counter()
    store = open_fn()
    open_s = time.perf_counter() - t0
    anon_open = status_mb("RssAnon") - anon0
    rng = np.random.default_rng(1)
    reads, lookups = [], []
    for _ in range(QUESTIONS):
        rows = rng.integers(0, n, ROWS).tolist()
        t = time.perf_counter()
        found = [passage_fn(store, row) for row in rows]
        reads.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert [row_of_fn(store, doc_id, start) for doc_id, start in found] == rows
        lookups.append(time.perf_counter() - t)
    anon_after = status_mb("RssAnon") - anon0
    r, k = percentiles(reads), percentiles(lookups)
    return [name, f"{n:,}", round(write_s, 1), round(size / n), round(open_s * 1000, 2), round(anon_open, 1),
            round(anon_after, 1), r["p50_ms"], r["p95_ms"], k["p50_ms"], k["p95_ms"]]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_index_store.json")
    args = parser.parse_args(argv)
    n = args.passages
    texts, langs = material(n)
    info = machine()
    print(f"Machine: {describe_machine(info)}; {len(texts)} real texts repeated to {n:,} articles", flush=True)
    work = scratch_dir("qa-bench-store-")
    rows = []
    try:
        t0 = time.perf_counter()
        write_store(work / "mapped", n, texts, langs)
        write_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in (work / "mapped").rglob("*") if p.is_file())
        print(f"  columns + records written in {write_s:.1f} s", flush=True)
        rows.append(measure(
            "memory-mapped columns + records (qa.index.store)", lambda: open_store(work / "mapped", sorted(set(langs))),
            _mapped_passage, lambda s, d, st: s.row_of(d, st),
            n, size, write_s,
        ))  # fmt: skip
        t0 = time.perf_counter()
        write_sqlite(work / "store.sqlite", n, texts, langs)
        write_s = time.perf_counter() - t0
        print(f"  SQLite written in {write_s:.1f} s", flush=True)
        rows.append(measure(
            f"SQLite {sqlite3.sqlite_version}", lambda: SqliteStore(work / "store.sqlite"),
            _sqlite_passage, lambda s, d, st: s.row_of(d, st),
            n, (work / "store.sqlite").stat().st_size, write_s,
        ))  # fmt: skip
    finally:
        remove_scratch(work)
    text = table(
        ["store", "passages", "write s", "disk B/p", "open ms", "anon MB open", "anon MB after reads",
         f"{ROWS} passages p50 ms", "p95 ms", f"{ROWS} row_of p50 ms", "p95 ms"], rows,
        title=f"Passage store: {QUESTIONS} questions of {ROWS} random rows each, page cache warm",
    )  # fmt: skip
    print(text)
    payload = {"benchmark": "bench_index_store", "machine": info, "rows": rows, "table": text}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()

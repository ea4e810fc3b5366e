"""An update of the PostgreSQL store (qa.postgres): a few articles added, deleted and changed.

The same new index version is written twice, same run, into two databases that both hold the
previous version live: once sending every row (`write_store(..., reuse=False)`, what every write
did before incremental writes), once incrementally (the default: the rows of unchanged articles
are copied inside the database, only new and changed articles' rows are sent). Measured: seconds,
rows sent and copied, bytes sent over the connection (COPY data and statement parameters, counted
where psycopg takes them), WAL bytes PostgreSQL wrote (after a CHECKPOINT, as when versions are
written hours apart), and the database size.

Two corpora: the demo corpus (corpus/, real model, real incremental `build_index`: one article
added, one deleted, one changed) and synthetic ones of --sizes passages (real texts, random
vectors, one passage per article, written by the real index writer; 5 added, 5 deleted, 5
changed).

    python benchmarks/bench_postgres_update.py                      # demo + 20,000: ~5 minutes on 2 cores
    python benchmarks/bench_postgres_update.py --sizes 20000 100000
"""

from __future__ import annotations

import argparse
import shutil
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
    remove_scratch,
    scratch_dir,
    table,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
CHANGED = 5


SENT = {"bytes": 0}


def count_sent_bytes() -> None:
    """Count what the writer hands to the connection: the COPY data (psycopg's writer) and the
    parameters of its statements (as their text form: the numbering arrays of an incremental
    write). A socket's own counters are not visible per process."""
    import psycopg
    from psycopg.copy import LibpqWriter

    write, execute = LibpqWriter.write, psycopg.Connection.execute

    def counted_write(self, data):
        SENT["bytes"] += len(data)
        return write(self, data)

    def counted_execute(self, query, params=None, **kwargs):
        SENT["bytes"] += len(str(query)) + (len(str(params)) if params is not None else 0)
        return execute(self, query, params, **kwargs)

    LibpqWriter.write, psycopg.Connection.execute = counted_write, counted_execute


def written_bytes() -> int:
    return SENT["bytes"]


def measure(url: str, index, settings, reuse: bool) -> dict:
    """Write `index` into `url` (which holds the previous version live); what it cost."""
    import psycopg

    from qa.postgres import write_store

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        wal0 = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        fpi0, checkpoints0 = wal_counters(conn)
    sent0, t0 = written_bytes(), time.perf_counter()
    report = write_store(url, index, settings, reuse=reuse)
    seconds, sent_bytes = time.perf_counter() - t0, written_bytes() - sent0
    with psycopg.connect(url, autocommit=True) as conn:
        wal = conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (wal0,)).fetchone()[0]
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        fpi, checkpoints = wal_counters(conn)
    return {"reuse": reuse, "seconds": round(seconds, 2), "sent_rows": report["sent"], "copied_rows": report["copied"],
            "sent_mb": round(sent_bytes / 2**20, 2), "wal_mb": round(int(wal) / 2**20, 2),
            "database_mb": round(size / 2**20, 1), "wal_full_page_images": fpi - fpi0,
            "checkpoints_during": checkpoints - checkpoints0}


def wal_counters(conn) -> tuple[int, int]:
    """(full-page images written to the WAL, checkpoints started) so far, server-wide."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    fpi = conn.execute("SELECT wal_fpi FROM pg_stat_wal").fetchone()[0]
    checkpoints = conn.execute("SELECT num_timed + num_requested FROM pg_stat_checkpointer").fetchone()[0]
    return int(fpi), int(checkpoints)


def demo(server) -> tuple[str, int, list[dict]]:
    """The demo corpus, changed by one article added, one deleted, one changed."""
    from qa.config import Settings
    from qa.index.build import build_index
    from qa.index.load import open_index
    from qa.postgres import write_store

    folder = scratch_dir("qa-bench-update-")
    corpus = folder / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    settings = Settings(corpus_dir=corpus, index_dir=folder / "index")
    build_index(settings=settings)
    urls = [server.database("demo_full"), server.database("demo_incremental")]
    first = open_index(settings.index_dir)
    for url in urls:
        write_store(url, first, settings)
    files = sorted(corpus.iterdir())
    files[0].unlink()
    files[1].write_text(files[1].read_text(encoding="utf-8") + "\n\nA paragraph added later.\n", encoding="utf-8")
    (corpus / "en-added.txt").write_text("An added article\n\n" + files[2].read_text(encoding="utf-8"), encoding="utf-8")
    build_index(settings=settings)
    second = open_index(settings.index_dir)
    out = [measure(url, second, settings, reuse) for url, reuse in zip(urls, (False, True))]
    remove_scratch(folder)
    return "demo corpus", len(second), out


def synthetic_index(folder: Path, articles, vectors, sentences, sentence_vectors, settings):
    from qa.index.build import write_index
    from qa.index.load import open_index
    from qa.models import Chunk

    chunks = [Chunk(doc_id=a.doc_id, chunk_id=0, text=a.text, start=0, end=len(a.text), n_tokens=200)
              for a in articles]
    write_index(folder, articles, chunks, vectors, sentences, sentence_vectors, settings=settings,
                model={"name": "synthetic", "fingerprint": "synthetic", "dim": int(vectors.shape[1])},
                chunking={"name": "synthetic", "version": 1, "max_tokens": 200, "overlap": 0},
                query_means={}, groups=np.arange(len(articles)))
    return open_index(folder)


def synthetic(server, n: int, texts, langs, rng) -> tuple[str, int, list[dict]]:
    """n one-passage articles; then 5 deleted, 5 changed (new text and vectors), 5 added."""
    from qa.chunk import split_sentences
    from qa.config import Settings
    from qa.models import Article
    from qa.postgres import write_store

    dim = 384

    def make(ids: list[int], variant: dict[int, int]):
        articles, sentence_rows, vectors, sentence_vectors = [], [], [], []
        for doc, i in enumerate(ids):
            j = i % len(texts)
            text = texts[j] + (f" (revision {variant[i]})" if i in variant else "")
            articles.append(Article(doc_id=f"s{i}-{variant.get(i, 0)}", title=f"passage {i}", text=text,
                                    lang=str(langs[j]), source=f"synthetic/{i}"))
            seed = np.random.default_rng(i * 7 + variant.get(i, 0))
            v = seed.standard_normal(dim).astype(np.float32)
            vectors.append(v / np.linalg.norm(v))
            for a, b in split_sentences(text):
                sentence_rows.append((doc, a, b))
                s = v + seed.standard_normal(dim).astype(np.float32)
                sentence_vectors.append(s / np.linalg.norm(s))
        return (articles, np.stack(vectors), np.array(sentence_rows, np.int64).reshape(-1, 3),
                np.stack(sentence_vectors).astype(np.float16))

    folder = scratch_dir("qa-bench-update-")
    settings = Settings(index_dir=folder / "index")
    first_ids = list(range(n))
    first = synthetic_index(folder / "a", *make(first_ids, {}), settings)
    urls = [server.database(f"s{n}_full"), server.database(f"s{n}_incremental")]
    for url in urls:
        write_store(url, first, settings)
    picks = rng.choice(n, 2 * CHANGED, replace=False).tolist()
    deleted, changed = set(picks[:CHANGED]), picks[CHANGED:]
    second_ids = [i for i in first_ids if i not in deleted] + list(range(n, n + CHANGED))
    second = synthetic_index(folder / "b", *make(second_ids, {i: 1 for i in changed}), settings)
    out = [measure(url, second, settings, reuse) for url, reuse in zip(urls, (False, True))]
    remove_scratch(folder)
    return f"synthetic {n:,}", len(second), out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000])
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_postgres_update.json")
    parser.add_argument("--no-demo", action="store_true", help="only the synthetic sizes")
    args = parser.parse_args(argv)

    from qa.index.load import open_index
    from tests.postgres_server import PostgresServer

    count_sent_bytes()
    info = machine()
    print(f"Machine: {describe_machine(info)}")
    material = open_index(ensure_index())
    texts = [c.text for c in material.chunks]
    langs = np.array([material.articles[c.doc_id].lang for c in material.chunks])
    server = PostgresServer(shared_buffers="512MB", durable=True)  # as a production server writes
    server.start()
    try:
        runs = [] if args.no_demo else [demo(server)]
        rng = np.random.default_rng(42)
        for n in args.sizes:
            runs.append(synthetic(server, n, texts, langs, rng))
    finally:
        server.close()
    rows = []
    for name, passages, (full, incremental) in runs:
        for result in (full, incremental):
            rows.append([name, f"{passages:,}", "incremental" if result["reuse"] else "every row sent",
                         result["seconds"], result["sent_rows"]["passages"], result["copied_rows"]["passages"],
                         result["sent_rows"]["sentences"], result["sent_mb"], result["wal_mb"]])
        rows.append([name, "", "ratio", round(incremental["seconds"] / full["seconds"], 3), "", "", "",
                     round(incremental["sent_mb"] / max(full["sent_mb"], 1e-9), 4),
                     round(incremental["wal_mb"] / max(full["wal_mb"], 1e-9), 3)])
    shown = table(["corpus", "passages", "write", "seconds", "passages sent", "passages copied",
                   "sentences sent", "MB sent", "WAL MB"], rows,
                  title="Writing a new version after a few articles changed, same run")
    print(shown)
    out = write_json(args.out, {"benchmark": "bench_postgres_update", "machine": info,
                                "results": [{"corpus": name, "passages": p, "full": f, "incremental": i}
                                            for name, p, (f, i) in runs], "table": shown})
    print(f"Wrote {out}")
    return {"runs": runs}


if __name__ == "__main__":
    main()

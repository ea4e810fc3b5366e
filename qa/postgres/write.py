"""Write a built index version into PostgreSQL as a new store version, then make it live.

The store is written from an index the ordinary build made (`qa.index.build.build_index`, or
`qa index --ray`): the same passages, vectors, sentences, language statistics, translation
groups and BM25 weights, so that PostgreSQL ranks exactly as the embedded index does. The local
index folder stays the build's working copy: an incremental build embeds only new or changed
articles there, and each database write copies the result as a complete new version.

A write takes a session-level advisory lock (one writer at a time), writes every table of the
new version in one transaction (a crash leaves nothing half-written behind), then in a second
one marks it ready and switches `qa_live` to it. Servers pick the new version up between two
questions; the previous version is kept so that a question already under way finishes on it.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import numpy as np

from qa.config import Settings
from qa.errors import DatabaseError
from qa.filters import article_day
from qa.index.ann import choose_kind
from qa.postgres.schema import PARENTS, connect, ensure_schema, leaf, shown_url, table

__all__ = ["KEEP_VERSIONS", "WRITE_LOCK", "StoreReport", "write_store"]

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2  # the live one and the one before: a question under way never loses its tables
WRITE_LOCK = 0x7161_7374  # pg_advisory_lock key of the writer ("qast")
BLOCK = 8192  # rows per COPY batch
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
RECALL_SAMPLE = 32  # questions on which each HNSW language's recall@10 against exact is measured


class StoreReport(dict):
    """What a write did: version, source, passages, sentences, languages, seconds, up_to_date."""


def write_store(url: str, index: Any, settings: Settings) -> StoreReport:
    """Copy the loaded index version `index` (`qa.index.load.Index`) into the database at `url`
    as a new version and make it live; nothing is written when the live version already is a
    copy of it. Returns a `StoreReport`."""
    import psycopg

    started = time.perf_counter()
    conn = connect(url, vectors=False)
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK,))
        ensure_schema(conn, index.manifest.model.dim)
        from pgvector.psycopg import register_vector

        register_vector(conn)
        live = conn.execute(
            "SELECT v.version, v.source FROM qa_live l JOIN qa_versions v USING (version)"
        ).fetchone()
        source = f"{index.version} {index.manifest.corpus.fingerprint}"
        if live is not None and live[1] == source:
            return StoreReport(version=live[0], source=source, up_to_date=True,
                               seconds=round(time.perf_counter() - started, 2))
        _remove_unused(conn)
        version = conn.execute("SELECT nextval('qa_version_numbers')").fetchone()[0]
        with conn.transaction():
            languages = _write_version(conn, version, index, settings, source)
        with conn.transaction():
            conn.execute("UPDATE qa_versions SET state = 'ready' WHERE version = %s", (version,))
            conn.execute(
                "INSERT INTO qa_live (one, version) VALUES (true, %s) "
                "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
                (version,),
            )
        _remove_unused(conn)
        return StoreReport(
            version=version, source=source, up_to_date=False, passages=len(index),
            sentences=len(index.sentences), languages=languages,
            seconds=round(time.perf_counter() - started, 2),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"Writing the index into {shown_url(url)} failed ({' '.join(str(exc).split())[:200]}); the "
            "database's live version is unchanged. Run `qa index --database` again once it is back."
        ) from None
    finally:
        conn.close()


def _remove_unused(conn) -> None:
    """Drop every version but the live one and the one before it (and any half-written one)."""
    kept = [row[0] for row in conn.execute(
        "SELECT version FROM qa_versions WHERE state = 'ready' ORDER BY "
        "(version = (SELECT version FROM qa_live)) DESC, version DESC LIMIT %s", (KEEP_VERSIONS,)
    )]
    for (version,) in conn.execute(
        "SELECT version FROM qa_versions WHERE NOT (version = ANY(%s))", (kept,)
    ).fetchall():
        with conn.transaction():
            for parent in PARENTS:
                conn.execute(f"DROP TABLE IF EXISTS {table(parent, version)} CASCADE")
            conn.execute("DELETE FROM qa_versions WHERE version = %s", (version,))
        log.info("Removed store version %s.", version)


def _write_version(conn, version: int, index: Any, settings: Settings, source: str) -> dict[str, dict]:
    """Every table of one version (inside the caller's transaction); how each language is searched."""
    from psycopg.sql import SQL, Identifier, Literal

    articles = list(index.articles.values())
    languages = {
        lang: {"passages": len(rows), "search": _search_kind(index, lang, len(rows), settings)}
        for lang, rows in index.rows_by_language.items()
    }
    conn.execute(
        "INSERT INTO qa_versions (version, state, source, dim, passages, sentences, manifest, languages) "
        "VALUES (%s, 'building', %s, %s, %s, %s, %s, %s)",
        (version, source, index.manifest.model.dim, len(index), len(index.sentences),
         index.manifest.model_dump_json(), json.dumps(languages)),
    )
    for parent in PARENTS:
        partition = SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
            Identifier(table(parent, version)), Identifier(parent), Literal(version)
        )
        if parent == "qa_passages":
            partition += SQL(" PARTITION BY LIST (lang)")
        conn.execute(partition)
    for lang in languages:
        conn.execute(SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES IN ({})").format(
            Identifier(leaf(version, lang)), Identifier(table("qa_passages", version)), Literal(lang)
        ))
    days = [article_day(a.date) for a in articles]
    _write_articles(conn, version, articles, days)
    _write_passages(conn, version, index, articles, days)
    _write_sentences(conn, version, index)
    _write_terms(conn, version, index.lexical)
    _write_arrays(conn, version, index, articles)
    for name in ("qa_passages", "qa_sentences"):
        key = "row" if name == "qa_passages" else "sentence"
        conn.execute(SQL("CREATE INDEX ON {} ({})").format(Identifier(table(name, version)), Identifier(key)))
    conn.execute(SQL("CREATE INDEX ON {} (doc)").format(Identifier(table("qa_articles", version))))
    conn.execute(SQL("CREATE INDEX ON {} (token)").format(Identifier(table("qa_terms", version))))
    for lang, spec in languages.items():
        if spec["search"] == "hnsw":
            started = time.perf_counter()
            conn.execute(SQL(
                "CREATE INDEX ON {} USING hnsw (embedding vector_ip_ops) WITH (m = {}, ef_construction = {})"
            ).format(Identifier(leaf(version, lang)), Literal(HNSW_M), Literal(HNSW_EF_CONSTRUCTION)))
            spec["hnsw_seconds"] = round(time.perf_counter() - started, 2)
    for parent in PARENTS:
        conn.execute(SQL("ANALYZE {}").format(Identifier(table(parent, version))))
    for lang, spec in languages.items():
        if spec["search"] == "hnsw":
            spec["recall_at_10"] = _hnsw_recall(conn, version, lang, index)
    conn.execute("UPDATE qa_versions SET languages = %s WHERE version = %s", (json.dumps(languages), version))
    return languages


def _search_kind(index: Any, lang: str, passages: int, settings: Settings) -> str:
    """'hnsw' where the embedded index searches the language approximately (it is large, and its
    approximate index met the recall target at build), else 'exact' (a scan of the partition)."""
    spec = index.manifest.index.languages.get(lang)
    kind = spec.type if spec is not None else choose_kind(passages, settings.index_type, settings.ann_min_passages)
    return "exact" if kind == "flat" else "hnsw"


def _write_articles(conn, version: int, articles: list, days: list[int]) -> None:
    from qa.retrieval import url_outlet

    with conn.cursor().copy(
        f"COPY {table('qa_articles', version)} (version, doc, doc_id, lang, day, outlet, source, article) "
        "FROM STDIN"
    ) as copy:
        for doc, article in enumerate(articles):
            outlet = article.outlet or url_outlet(article.url) or ""
            copy.write_row((version, doc, article.doc_id, article.lang, days[doc], outlet, article.source,
                            article.model_dump_json()))


def _write_passages(conn, version: int, index: Any, articles: list, days: list[int]) -> None:
    number = {a.doc_id: i for i, a in enumerate(articles)}
    with conn.cursor().copy(
        f"COPY {table('qa_passages', version)} (version, row, lang, doc, start, \"end\", grp, day, embedding) "
        "FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int4", "int4", "text", "int4", "int4", "int4", "int8", "int4", "vector"])
        for first in range(0, len(index), BLOCK):
            rows = np.arange(first, min(first + BLOCK, len(index)))
            vectors = index.passage_vectors_at(rows)
            for row, vector in zip(rows.tolist(), vectors):
                chunk = index.passage(row)
                doc = number[chunk.doc_id]
                copy.write_row((version, row, articles[doc].lang, doc, chunk.start, chunk.end,
                                int(index.groups[row]), days[doc], vector))


def _write_sentences(conn, version: int, index: Any) -> None:
    sentences = np.asarray(index.sentences, np.int64).reshape(-1, 3)
    with conn.cursor().copy(
        f"COPY {table('qa_sentences', version)} (version, sentence, doc, start, \"end\", embedding) "
        "FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int4", "int4", "int4", "int4", "int4", "vector"])
        for first in range(0, len(sentences), BLOCK):
            last = min(first + BLOCK, len(sentences))
            # The float32 rows a question scores (int8 codes times their scale, as in memory).
            vectors = np.asarray(index.sentence_vectors[first:last], np.float32)
            for i, vector in zip(range(first, last), vectors):
                doc, start, end = sentences[i].tolist()
                copy.write_row((version, i, doc, start, end, vector))


def lexical_postings(lexical: Any) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, int]:
    """(vocabulary, indptr, passage rows, BM25 weights, passages) of a `qa.lexical.LexicalIndex`:
    each token's postings are rows[indptr[t]:indptr[t + 1]], sorted by passage."""
    retriever = lexical._retriever  # the bm25s matrix `LexicalIndex.build` wrote (token-major CSC)
    matrix = retriever.scores
    return (retriever.vocab_dict, np.asarray(matrix["indptr"]), np.asarray(matrix["indices"]),
            np.asarray(matrix["data"]), int(matrix["num_docs"]))


def _write_terms(conn, version: int, lexical: Any) -> None:
    vocab, indptr, rows, weights, _ = lexical_postings(lexical)
    with conn.cursor().copy(
        f"COPY {table('qa_terms', version)} (version, token, df, rows, scores) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int4", "text", "int4", "bytea", "bytea"])
        for token, t in vocab.items():
            start, end = int(indptr[t]), int(indptr[t + 1])
            copy.write_row((version, token, end - start, rows[start:end].astype("<i4").tobytes(),
                            weights[start:end].astype("<f4").tobytes()))


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _write_arrays(conn, version: int, index: Any, articles: list) -> None:
    """The small per-version arrays a server keeps in memory (see `qa.postgres.read.StoredIndex`)."""
    number = {a.doc_id: i for i, a in enumerate(articles)}
    chunks = [index.passage(row) for row in range(len(index))]
    passages = np.array(
        [(number[c.doc_id], c.chunk_id, c.start, c.end, c.n_tokens) for c in chunks], np.int64
    ).reshape(-1, 5)
    # What a filter reads of each article (qa.filters.FilterColumns), in article order.
    filter_fields = [[a.doc_id, a.lang, a.date, a.url, a.source] for a in articles]
    arrays = {
        "passages": _npy(passages),
        "groups": _npy(np.asarray(index.groups, np.int64)),
        "sentences": _npy(np.asarray(index.sentences, np.int64).reshape(-1, 3)),
        "lang_stats": _npz(index.lang_stats.to_arrays()),
        "sentence_stats": _npz(index.sentence_stats.to_arrays()),
        "articles": json.dumps(filter_fields).encode(),
        "lexical": json.dumps({"passages": lexical_postings(index.lexical)[4]}).encode(),
    }
    with conn.cursor().copy("COPY qa_arrays (version, name, data) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "text", "bytea"])
        for name, data in arrays.items():
            copy.write_row((version, name, data))


def _hnsw_recall(conn, version: int, lang: str, index: Any) -> float:
    """recall@10 of the language's HNSW search against its exact scan, on sentence vectors of the
    corpus used as questions (inside the write's transaction, before anyone reads the version)."""
    from psycopg.sql import SQL, Identifier

    rng = np.random.default_rng(0)
    sample = rng.choice(len(index.sentences), size=min(RECALL_SAMPLE, len(index.sentences)), replace=False)
    queries = np.asarray(index.sentence_vectors[np.sort(sample)], np.float32)
    search = SQL("SELECT row FROM {} ORDER BY embedding <#> %s LIMIT 10").format(Identifier(leaf(version, lang)))
    found = 0
    for query in queries:
        conn.execute("SET LOCAL enable_indexscan = on")
        conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        approximate = {row for (row,) in conn.execute(search, (query,))}
        conn.execute("SET LOCAL enable_indexscan = off")
        exact = {row for (row,) in conn.execute(search, (query,))}
        found += len(approximate & exact)
    conn.execute("SET LOCAL enable_indexscan = on")
    return round(found / max(10 * len(queries), 1), 4)

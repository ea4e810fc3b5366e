"""Write a built index version into PostgreSQL as a new store version, then make it live.

The store is written from an index the ordinary build made (`qa.index.build.build_index`, or
`qa index --ray`): the same passages, vectors, sentences, language statistics, translation
groups and BM25 weights, so that PostgreSQL ranks exactly as the embedded index does. The local
index folder stays the build's working copy: an incremental build embeds only new or changed
articles there. The database write is incremental too: only new or changed articles' rows are
sent, the others are copied inside the database from the live version (`qa.postgres.rows`).
BM25's postings and the per-version arrays are written whole (every passage's BM25 weight
depends on the corpus's document frequencies and mean length). A large language's approximate
index is chosen and tuned by measurement (`qa.postgres.approximate`).

A write takes a session-level advisory lock (one writer at a time), writes every table of the
new version in one transaction (a crash leaves nothing half-written behind), then in a second
one marks it ready and switches `qa_live` to it. Servers pick the new version up between two
questions; the previous version is kept so that a question already under way finishes on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from qa.config import Settings
from qa.errors import DatabaseError
from qa.filters import article_day
from qa.postgres.approximate import index_approximate_languages, search_kind
from qa.postgres.rows import (
    article_digests,
    copy_part,
    copy_reused,
    copy_rows,
    previous_version,
    reuse_plan,
    row_parts,
    sentence_codes,
    sum_counts,
)
from qa.postgres.schema import PARENTS, connect, ensure_schema, leaf, shown_url, table

__all__ = ["KEEP_VERSIONS", "WRITE_LOCK", "CopyParts", "StoreReport", "copy_part", "write_store"]

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2  # the live one and the one before: a question under way never loses its tables
WRITE_LOCK = 0x7161_7374  # pg_advisory_lock key of the writer ("qast")


# Sends a version's parts of rows (`row_parts`): (url, version, parts) -> the rows of each table sent.
CopyParts = Callable[[str, int, Iterator[dict]], dict[str, int]]


class StoreReport(dict):
    """What a write did: version, source, passages, sentences, languages, seconds, up_to_date, and
    `sent` / `copied`: the rows of each table sent over the connection or copied from the
    previous version inside the database (articles, passages, sentences)."""


def write_store(
    url: str, index: Any, settings: Settings, *, reuse: bool = True, copy_parts: CopyParts | None = None,
    parts: int = 1,
) -> StoreReport:
    """Copy the loaded index version `index` (`qa.index.load.Index`) into the database at `url`
    as a new version and make it live; nothing is written when the live version already is a
    copy of it. `reuse`: copy the rows of articles the live version holds unchanged inside the
    database (False: send every row, as a first write does). Returns a `StoreReport`.

    `copy_parts(url, version, parts)`: who sends the rows of new and changed articles, part by
    part (at least `parts` of them, each a few articles' rows: `copy_part` writes one), e.g. Ray
    workers (`qa.distributed`). The new version's empty tables are then committed first so that
    other connections can fill them (a staging step nobody reads: the version is 'building'), and
    this writer finishes it and switches it live once every part is in, still in one statement.
    Without it this connection sends every row, the whole version in one transaction."""
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
        reuse = reuse and live is not None
        if copy_parts is None:
            languages, sent, copied = _write_version(conn, version, index, settings, source, reuse, parts)
        else:
            languages, sent, copied = _write_version_in_parts(
                conn, url, version, index, settings, source, reuse, copy_parts, parts
            )
        _switch_live(conn, version)
        _remove_unused(conn)
        _vacuum(conn, version)
        return StoreReport(
            version=version, source=source, up_to_date=False, passages=len(index),
            sentences=len(index.sentences), languages=languages, sent=sent, copied=copied,
            seconds=round(time.perf_counter() - started, 2),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(
            f"Writing the index into {shown_url(url)} failed ({' '.join(str(exc).split())[:200]}); the "
            "database's live version is unchanged. Run `qa index --database` again once it is back."
        ) from None
    finally:
        conn.close()


def _write_version(
    conn, version: int, index: Any, settings: Settings, source: str, reuse: bool, parts: int
) -> tuple[dict, dict[str, int], dict[str, int]]:
    """The whole version written on this connection, in one transaction: (its languages, the rows
    of each table sent, the rows of each table copied)."""
    with conn.transaction():
        previous = previous_version(conn, index) if reuse else None
        work = _create_version(conn, version, index, settings, source, previous)
        sent = sum_counts(copy_rows(conn, version, part) for part in row_parts(index, work, parts))
        copied = _finish_version(conn, version, index, work, previous)
    return work["languages"], sent, copied


def _write_version_in_parts(
    conn, url: str, version: int, index: Any, settings: Settings, source: str, reuse: bool,
    copy_parts: CopyParts, parts: int,
) -> tuple[dict, dict[str, int], dict[str, int]]:
    """As `_write_version`, the rows sent by `copy_parts` over other connections: the empty tables
    are committed first, the version finished once every part is in (dropped if one fails)."""
    with conn.transaction():  # committed: the workers' connections must see the tables
        previous = previous_version(conn, index) if reuse else None
        work = _create_version(conn, version, index, settings, source, previous)
    try:
        sent = copy_parts(url, version, row_parts(index, work, parts))
        with conn.transaction():
            copied = _finish_version(conn, version, index, work, previous)
    except BaseException:
        with contextlib.suppress(Exception):  # the next write drops it anyway (_remove_unused)
            _drop_version(conn, version)
        raise
    return work["languages"], sent, copied


def _switch_live(conn, version: int) -> None:
    """Mark the version ready and make it the live one, in one transaction."""
    with conn.transaction():
        conn.execute("UPDATE qa_versions SET state = 'ready' WHERE version = %s", (version,))
        conn.execute(
            "INSERT INTO qa_live (one, version) VALUES (true, %s) "
            "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            (version,),
        )


def _vacuum(conn, version: int) -> None:
    """VACUUM the new version's tables now, while their pages are still the ones just written.

    Its rows' hint bits are otherwise set by the first statement that reads them after the next
    checkpoint, and with data checksums (PostgreSQL 18's default) each page changed that way is
    written whole to the WAL: the next incremental write, which reads every unchanged row, then
    wrote the previous version's size again to the WAL (measured: 1.7x the WAL of a full write)."""
    for parent in PARENTS:
        conn.execute(f"VACUUM (ANALYZE) {table(parent, version)}")


def _remove_unused(conn) -> None:
    """Drop every version but the live one and the one before it (and any half-written one)."""
    kept = [row[0] for row in conn.execute(
        "SELECT version FROM qa_versions WHERE state = 'ready' ORDER BY "
        "(version = (SELECT version FROM qa_live)) DESC, version DESC LIMIT %s", (KEEP_VERSIONS,)
    )]
    for (version,) in conn.execute(
        "SELECT version FROM qa_versions WHERE NOT (version = ANY(%s))", (kept,)
    ).fetchall():
        _drop_version(conn, version)
        log.info("Removed store version %s.", version)


def _drop_version(conn, version: int) -> None:
    with conn.transaction():
        for parent in PARENTS:
            conn.execute(f"DROP TABLE IF EXISTS {table(parent, version)} CASCADE")
        conn.execute("DELETE FROM qa_versions WHERE version = %s", (version,))


def _create_version(
    conn, version: int, index: Any, settings: Settings, source: str, previous: dict | None
) -> dict[str, Any]:
    """The version's row ('building') and its empty tables, and what its rows are made of: how
    each language is searched, the articles, and which rows are copied from `previous` (the plan)."""
    from psycopg.sql import SQL, Identifier, Literal

    articles = list(index.articles.values())
    languages = {
        lang: {"passages": len(rows), "search": search_kind(index, lang, len(rows), settings)}
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
    chunks = [index.passage(row) for row in range(len(index))]
    number = {a.doc_id: i for i, a in enumerate(articles)}
    doc_of_row = np.array([number[c.doc_id] for c in chunks], np.int64)
    codes, scales = sentence_codes(index)
    digests = article_digests(index, articles, chunks, doc_of_row, codes, scales)
    return {
        "languages": languages, "articles": articles, "days": [article_day(a.date) for a in articles],
        "chunks": chunks, "doc_of_row": doc_of_row, "codes": codes, "scales": scales, "digests": digests,
        "plan": reuse_plan(previous, articles, digests, chunks, doc_of_row, index.sentences),
        "settings": settings,
    }


def _finish_version(conn, version: int, index: Any, work: dict, previous: dict | None) -> dict[str, int]:
    """Once the sent rows are in: the rows copied from `previous`, BM25's postings, the arrays,
    the indexes (the approximate ones included, tuned) and statistics; the rows of each table copied."""
    from psycopg.sql import SQL, Identifier

    languages = work["languages"]
    copied = copy_reused(conn, version, previous, work["plan"], index.groups, work["doc_of_row"], index.sentences)
    _write_terms(conn, version, index.lexical)
    _write_arrays(conn, version, index, work["articles"], work["chunks"], work["doc_of_row"], work["digests"])
    for name in ("qa_passages", "qa_sentences"):
        key = "row" if name == "qa_passages" else "sentence"
        conn.execute(SQL("CREATE INDEX ON {} ({})").format(Identifier(table(name, version)), Identifier(key)))
    conn.execute(SQL("CREATE INDEX ON {} (doc)").format(Identifier(table("qa_articles", version))))
    conn.execute(SQL("CREATE INDEX ON {} (token)").format(Identifier(table("qa_terms", version))))
    for parent in PARENTS:
        conn.execute(SQL("ANALYZE {}").format(Identifier(table(parent, version))))
    index_approximate_languages(conn, version, index, languages, work.get("settings"))
    conn.execute("UPDATE qa_versions SET languages = %s WHERE version = %s", (json.dumps(languages), version))
    return copied


def lexical_postings(lexical: Any) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, int]:
    """(vocabulary, indptr, passage rows, BM25 weights, passages) of a `qa.lexical.LexicalIndex`:
    each token's postings are rows[indptr[t]:indptr[t + 1]], sorted by passage."""
    # Token-major postings; the weights computed from the stored counts (`qa.lexical.bm25_weights`).
    rows = lexical.rows_at(0, len(lexical.indices))  # (the stored postings also pack each passage's length)
    return lexical.vocab, np.asarray(lexical.indptr), rows, lexical.weights(), lexical.passages


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


def _write_arrays(
    conn, version: int, index: Any, articles: list, chunks: list, doc_of_row: np.ndarray, digests: np.ndarray
) -> None:
    """The small per-version arrays a server keeps in memory (see `qa.postgres.read.StoredIndex`),
    and the articles' digests the next write compares (`article_digests`)."""
    passages = np.array(
        [(doc, c.chunk_id, c.start, c.end, c.n_tokens) for doc, c in zip(doc_of_row.tolist(), chunks)], np.int64
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
        "digests": _npy(digests),
    }
    with conn.cursor().copy("COPY qa_arrays (version, name, data) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int4", "text", "bytea"])
        for name, data in arrays.items():
            copy.write_row((version, name, data))

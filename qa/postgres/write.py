"""Write a built index version into PostgreSQL as a new store version, then make it live.

The store is written from an index the ordinary build made (`qa.index.build.build_index`, or
`qa index --ray`): the same passages, vectors, sentences, language statistics, translation
groups and BM25 weights, so that PostgreSQL ranks exactly as the embedded index does. The local
index folder stays the build's working copy: an incremental build embeds only new or changed
articles there. The database write is incremental too: each article's rows carry a digest of
everything written for it (its record, its passages' offsets and vectors, its sentences' offsets
and int8 codes); an article whose digest the live version already holds has its rows copied
inside the database (`INSERT ... SELECT`, renumbered, with its passages' new translation groups),
and only new or changed articles' rows are sent. A deleted article is simply not in the new
version. BM25's postings and the per-version arrays are written whole (every passage's BM25
weight depends on the corpus's document frequencies and mean length).

A write takes a session-level advisory lock (one writer at a time), writes every table of the
new version in one transaction (a crash leaves nothing half-written behind), then in a second
one marks it ready and switches `qa_live` to it. Servers pick the new version up between two
questions; the previous version is kept so that a question already under way finishes on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from qa.config import Settings
from qa.errors import DatabaseError
from qa.filters import article_day
from qa.index.ann import Int8Rows, choose_kind, nprobe_steps
from qa.index.format import SENTENCE_SCALES, SENTENCE_VECTORS
from qa.postgres.schema import PARENTS, connect, ensure_schema, leaf, shown_url, table

__all__ = ["KEEP_VERSIONS", "WRITE_LOCK", "CopyParts", "StoreReport", "copy_part", "write_store"]

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2  # the live one and the one before: a question under way never loses its tables
WRITE_LOCK = 0x7161_7374  # pg_advisory_lock key of the writer ("qast")
BLOCK = 8192  # rows per digest batch
PART_PASSAGES = 50_000  # passages (with their articles and sentences) per part of rows sent: ~0.2 GB
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 64
# Memory an HNSW build may use (the writer's session only): pgvector builds the graph in memory
# and, once it no longer fits, goes on inserting on disk pages many times slower. 1 GB holds the
# graph of ~500,000 384-d vectors; the server's default (64 MB) only ~35,000.
HNSW_BUILD_MEMORY = "1GB"
RECALL_SAMPLE = 64  # question-like vectors on which each approximate language's search is tuned
# Which approximate index a large language gets, tried in this order until one reaches the
# embedded index's recall target (Settings.ann_target_recall) on question-like vectors: IVFFlat
# with the embedded index's lists, `ivfflat.probes` tuned as it tunes nprobe; else HNSW with
# `hnsw.ef_search` tuned. Measured at 100,000 passages (benchmarks/README.md, bench_postgres --sweep):
# at the same recall@10 IVFFlat searched in half HNSW's time (0.969 in 7.2 ms, HNSW 0.961 in 12.0
# ms) and built 4x faster.
APPROXIMATE_ORDER = ("ivfflat", "hnsw")
HNSW_EF_SEARCH_STEPS = (100, 200, 400)


# Sends a version's parts of rows (`_parts`): (url, version, parts) -> the rows of each table sent.
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
        if copy_parts is None:
            with conn.transaction():
                previous = _previous(conn, index) if reuse and live is not None else None
                work = _create_version(conn, version, index, settings, source, previous)
                sent = _sum(_copy_rows(conn, version, part) for part in _parts(index, work, parts))
                copied = _finish_version(conn, version, index, work, previous)
        else:
            with conn.transaction():  # committed: the workers' connections must see the tables
                previous = _previous(conn, index) if reuse and live is not None else None
                work = _create_version(conn, version, index, settings, source, previous)
            try:
                sent = copy_parts(url, version, _parts(index, work, parts))
                with conn.transaction():
                    copied = _finish_version(conn, version, index, work, previous)
            except BaseException:
                with contextlib.suppress(Exception):  # the next write drops it anyway (_remove_unused)
                    _drop_version(conn, version)
                raise
        languages = work["languages"]
        with conn.transaction():
            conn.execute("UPDATE qa_versions SET state = 'ready' WHERE version = %s", (version,))
            conn.execute(
                "INSERT INTO qa_live (one, version) VALUES (true, %s) "
                "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
                (version,),
            )
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
    chunks = [index.passage(row) for row in range(len(index))]
    number = {a.doc_id: i for i, a in enumerate(articles)}
    doc_of_row = np.array([number[c.doc_id] for c in chunks], np.int64)
    codes, scales = _sentence_codes(index)
    digests = _digests(index, articles, chunks, doc_of_row, codes, scales)
    return {
        "languages": languages, "articles": articles, "days": [article_day(a.date) for a in articles],
        "chunks": chunks, "doc_of_row": doc_of_row, "codes": codes, "scales": scales, "digests": digests,
        "plan": _reuse_plan(previous, articles, digests, chunks, doc_of_row, index.sentences),
        "settings": settings,
    }


def _finish_version(conn, version: int, index: Any, work: dict, previous: dict | None) -> dict[str, int]:
    """Once the sent rows are in: the rows copied from `previous`, BM25's postings, the arrays,
    the indexes (the approximate ones included, tuned) and statistics; the rows of each table copied."""
    from psycopg.sql import SQL, Identifier, Literal

    languages = work["languages"]
    copied = _copy_reused(conn, version, previous, work["plan"], index.groups, work["doc_of_row"], index.sentences)
    _write_terms(conn, version, index.lexical)
    _write_arrays(conn, version, index, work["articles"], work["chunks"], work["doc_of_row"], work["digests"])
    for name in ("qa_passages", "qa_sentences"):
        key = "row" if name == "qa_passages" else "sentence"
        conn.execute(SQL("CREATE INDEX ON {} ({})").format(Identifier(table(name, version)), Identifier(key)))
    conn.execute(SQL("CREATE INDEX ON {} (doc)").format(Identifier(table("qa_articles", version))))
    conn.execute(SQL("CREATE INDEX ON {} (token)").format(Identifier(table("qa_terms", version))))
    for parent in PARENTS:
        conn.execute(SQL("ANALYZE {}").format(Identifier(table(parent, version))))
    approximate = [lang for lang, spec in languages.items() if spec["search"] != "exact"]
    if approximate:
        conn.execute(SQL("SET LOCAL maintenance_work_mem = {}").format(Literal(HNSW_BUILD_MEMORY)))
        queries = tuning_queries(index, work.get("settings"))
        for lang in approximate:
            languages[lang] = _approximate_index(conn, version, lang, index, languages[lang], queries,
                                                 work.get("settings"))
    conn.execute("UPDATE qa_versions SET languages = %s WHERE version = %s", (json.dumps(languages), version))
    return copied


def _parts(index: Any, work: dict, parts: int = 1) -> Iterator[dict]:
    """The rows to send (of new and changed articles), in parts of whole articles: at least `parts`
    of them when there are enough articles, none over PART_PASSAGES passages. Each part holds plain
    values only (it may travel to another process): see `copy_part`."""
    from qa.retrieval import url_outlet

    plan, articles, days, chunks = work["plan"], work["articles"], work["days"], work["chunks"]
    sentences = np.asarray(index.sentences, np.int64).reshape(-1, 3)
    docs = np.flatnonzero(plan["articles"] < 0)
    rows = np.flatnonzero(plan["passages"] < 0)
    rows = rows[np.argsort(work["doc_of_row"][rows], kind="stable")]
    row_docs = work["doc_of_row"][rows]
    kept = np.flatnonzero(plan["sentences"] < 0)
    kept = kept[np.argsort(sentences[kept, 0], kind="stable")]
    sentence_docs = sentences[kept, 0]
    # Articles are cut where the passages sent so far pass a multiple of the part's size.
    size = max(1, min(PART_PASSAGES, -(-len(rows) // max(parts, 1))))
    edges = sorted({0, *row_docs[size::size].tolist(), len(articles)})
    for lo, hi in itertools.pairwise(edges):
        part_docs = docs[np.searchsorted(docs, lo):np.searchsorted(docs, hi)].tolist()
        part_rows = rows[np.searchsorted(row_docs, lo):np.searchsorted(row_docs, hi)]
        part_sentences = kept[np.searchsorted(sentence_docs, lo):np.searchsorted(sentence_docs, hi)]
        if not (part_docs or len(part_rows) or len(part_sentences)):
            continue
        part_chunks = [chunks[r] for r in part_rows.tolist()]
        doc_of = work["doc_of_row"][part_rows]
        yield {
            "articles": [
                (d, articles[d].doc_id, articles[d].lang, days[d], articles[d].outlet or url_outlet(articles[d].url) or "",
                 articles[d].source, articles[d].model_dump_json()) for d in part_docs
            ],
            "passages": {
                "row": part_rows.tolist(), "lang": [articles[d].lang for d in doc_of.tolist()], "doc": doc_of.tolist(),
                "start": [c.start for c in part_chunks], "end": [c.end for c in part_chunks],
                "grp": np.asarray(index.groups, np.int64)[part_rows].tolist(),
                "day": [days[d] for d in doc_of.tolist()],
                "vectors": np.asarray(index.passage_vectors_at(part_rows), np.float32),
            },
            "sentences": {
                "sentence": part_sentences.tolist(), "doc": sentences[part_sentences, 0].tolist(),
                "start": sentences[part_sentences, 1].tolist(), "end": sentences[part_sentences, 2].tolist(),
                "codes": np.asarray(work["codes"][part_sentences], np.int8),
                "scales": np.asarray(work["scales"][part_sentences], np.float32).tolist(),
            },
        }


def copy_part(url: str, version: int, part: dict) -> dict[str, int]:
    """Send one part of a version's rows (`_parts`) over a connection of its own, in one
    transaction; the rows of each table sent. What each `qa index --ray` worker runs."""
    conn = connect(url, vectors=False)
    try:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        with conn.transaction():
            state = conn.execute("SELECT state FROM qa_versions WHERE version = %s", (version,)).fetchone()
            if state is None or state[0] != "building":  # its writer gave up and dropped it
                raise DatabaseError(f"Store version {version} is no longer being written; nothing was sent.")
            return _copy_rows(conn, version, part)
    finally:
        conn.close()


def _copy_rows(conn, version: int, part: dict) -> dict[str, int]:
    """COPY one part's articles, passages and sentences into the version's tables."""
    with conn.cursor().copy(
        f"COPY {table('qa_articles', version)} (version, doc, doc_id, lang, day, outlet, source, article) "
        "FROM STDIN"
    ) as copy:
        for row in part["articles"]:
            copy.write_row((version, *row))
    passages = part["passages"]
    with conn.cursor().copy(
        f"COPY {table('qa_passages', version)} (version, row, lang, doc, start, \"end\", grp, day, embedding) "
        "FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int4", "int4", "text", "int4", "int4", "int4", "int8", "int4", "vector"])
        columns = [passages[key] for key in ("row", "lang", "doc", "start", "end", "grp", "day")]
        for values, vector in zip(zip(*columns), passages["vectors"]):
            copy.write_row((version, *values, vector))
    sentences = part["sentences"]
    with conn.cursor().copy(
        f"COPY {table('qa_sentences', version)} (version, sentence, doc, start, \"end\", codes, scale) "
        "FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int4", "int4", "int4", "int4", "int4", "bytea", "float4"])
        columns = [sentences[key] for key in ("sentence", "doc", "start", "end")]
        for values, code, scale in zip(zip(*columns), sentences["codes"], sentences["scales"]):
            copy.write_row((version, *values, code.tobytes(), scale))
    return {"articles": len(part["articles"]), "passages": len(passages["row"]),
            "sentences": len(sentences["sentence"])}


def _sum(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total = {"articles": 0, "passages": 0, "sentences": 0}
    for count in counts:
        for name in total:
            total[name] += count[name]
    return total


def _sentence_codes(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """The int8 codes and float32 scales of the index's sentence vectors, as its files hold them
    (a small index decodes them into memory at load: they are then read from the files again)."""
    vectors = index.sentence_vectors
    if isinstance(vectors, Int8Rows):
        return vectors.codes, vectors.scales
    return (np.load(index.path / SENTENCE_VECTORS, mmap_mode="r", allow_pickle=False),
            np.load(index.path / SENTENCE_SCALES, mmap_mode="r", allow_pickle=False))


def _digests(
    index: Any, articles: list, chunks: list, doc_of_row: np.ndarray, codes: np.ndarray, scales: np.ndarray
) -> np.ndarray:
    """(articles, 16) bytes: a digest of everything the store holds of each article (its record,
    its passages' offsets and vectors, its sentences' offsets, codes and scales). Two versions'
    rows of an article with the same digest are the same rows but for their numbers and groups."""
    hashes = [hashlib.blake2b(a.model_dump_json().encode(), digest_size=16) for a in articles]
    meta = np.array([(c.chunk_id, c.start, c.end, c.n_tokens) for c in chunks], "<i8").reshape(-1, 4)
    _digest_rows(hashes, doc_of_row, lambda rows: [meta[rows], index.passage_vectors_at(rows).astype("<f4")])
    sentences = np.asarray(index.sentences, np.int64).reshape(-1, 3)
    _digest_rows(hashes, sentences[:, 0], lambda rows: [
        sentences[rows, 1:].astype("<i8"), np.asarray(codes[rows], np.int8),
        np.asarray(scales[rows], "<f4")[:, None],
    ])
    return np.frombuffer(b"".join(h.digest() for h in hashes), np.uint8).reshape(len(articles), 16)


def _digest_rows(hashes: list, docs: np.ndarray, columns: Callable[[np.ndarray], list[np.ndarray]]) -> None:
    """Feed each article's rows (the bytes of `columns(rows)`, side by side) to its digest, in row
    order within the article, a block of rows at a time."""
    order = np.argsort(docs, kind="stable")
    for first in range(0, len(order), BLOCK):
        rows = order[first:first + BLOCK]
        block = np.hstack([np.ascontiguousarray(c).view(np.uint8).reshape(len(rows), -1) for c in columns(rows)])
        owners = docs[rows]
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(owners)) + 1, [len(rows)]]).tolist()
        for lo, hi in itertools.pairwise(bounds):
            hashes[owners[lo]].update(block[lo:hi].tobytes())


def _previous(conn, index: Any) -> dict | None:
    """What of the live version can be copied into a new one: its number and its articles', passages'
    and sentences' numbering, when it holds digests and came from the same model; else None."""
    row = conn.execute(
        "SELECT v.version, v.manifest FROM qa_live l JOIN qa_versions v USING (version)"
    ).fetchone()
    number, manifest = row
    manifest = manifest if isinstance(manifest, dict) else json.loads(manifest)
    if manifest["model"]["fingerprint"] != index.manifest.model.fingerprint:
        return None
    arrays = dict(conn.execute(
        "SELECT name, data FROM qa_arrays WHERE version = %s AND name = ANY(%s)",
        (number, ["passages", "sentences", "articles", "digests"]),
    ).fetchall())
    if "digests" not in arrays:  # written before digests were kept: nothing can be matched
        return None
    load = lambda name: np.load(io.BytesIO(bytes(arrays[name])), allow_pickle=False)
    return {
        "version": number,
        "doc_ids": [f[0] for f in json.loads(bytes(arrays["articles"]))],
        "digests": load("digests"),
        "passages": load("passages"),
        "sentences": load("sentences"),
    }


def _reuse_plan(
    previous: dict | None, articles: list, digests: np.ndarray, chunks: list, doc_of_row: np.ndarray,
    sentences: np.ndarray,
) -> dict[str, np.ndarray]:
    """For each table, the previous version's number of each new article, passage and sentence
    whose rows can be copied (-1: send it)."""
    sentences = np.asarray(sentences, np.int64).reshape(-1, 3)
    if previous is None:
        return {"articles": np.full(len(articles), -1, np.int64), "passages": np.full(len(chunks), -1, np.int64),
                "sentences": np.full(len(sentences), -1, np.int64)}
    old_doc = {doc_id: i for i, doc_id in enumerate(previous["doc_ids"])}
    docs = np.array([old_doc.get(a.doc_id, -1) for a in articles], np.int64)
    old_digests = previous["digests"]
    same = docs >= 0
    same[same] = (old_digests[docs[same]] == digests[same]).all(axis=1)
    docs[~same] = -1
    # The same digest means the same passages and sentences: found by (old article, start).
    starts = np.array([c.start for c in chunks], np.int64)
    old_passages, old_sentences = previous["passages"], previous["sentences"]
    return {
        "articles": docs,
        "passages": _match(docs[doc_of_row], starts, old_passages[:, 0], old_passages[:, 2]),
        "sentences": _match(docs[sentences[:, 0]], sentences[:, 1], old_sentences[:, 0], old_sentences[:, 1]),
    }


def _match(doc: np.ndarray, start: np.ndarray, old_doc: np.ndarray, old_start: np.ndarray) -> np.ndarray:
    """The old row of each (doc, start) whose doc is not -1 (-1 for the others): an article's rows
    are told apart by their start."""
    found = np.full(len(doc), -1, np.int64)
    keep = doc >= 0
    old_keys = (np.asarray(old_doc, np.int64) << 32) + np.asarray(old_start, np.int64)
    order = np.argsort(old_keys, kind="stable")
    at = np.searchsorted(old_keys[order], (doc[keep] << 32) + start[keep])
    found[keep] = order[np.minimum(at, len(order) - 1)]
    if not np.array_equal(old_keys[found[keep]], (doc[keep] << 32) + start[keep]):
        raise AssertionError("an unchanged article's rows are missing from the previous version")
    return found


def _copy_reused(
    conn, version: int, previous: dict | None, plan: dict, groups: np.ndarray, doc_of_row: np.ndarray,
    sentences: np.ndarray,
) -> dict[str, int]:
    """Copy the planned rows from the previous version's tables inside the database, renumbered
    (and with the passages' translation groups of the new version); the rows of each table copied.
    The numbering travels as four arrays per table (16 bytes a row instead of the row)."""
    copied = {name: int((numbers >= 0).sum()) for name, numbers in plan.items()}
    if previous is None or not any(copied.values()):
        return copied
    old, new = previous["version"], int(version)
    articles = np.flatnonzero(plan["articles"] >= 0)
    rows = np.flatnonzero(plan["passages"] >= 0)
    sentence_rows = np.flatnonzero(plan["sentences"] >= 0)
    doc_of_sentence = np.asarray(sentences, np.int64).reshape(-1, 3)[:, 0]
    mapping = "unnest(%s::int4[], %s::int4[], %s::int4[], %s::int8[]) AS m(old, new, doc, grp)"
    conn.execute(
        f"INSERT INTO {table('qa_articles', new)} (version, doc, doc_id, lang, day, outlet, source, article) "
        f"SELECT {new}, m.new, o.doc_id, o.lang, o.day, o.outlet, o.source, o.article "
        f"FROM {table('qa_articles', old)} o JOIN {mapping} ON m.old = o.doc",
        (plan["articles"][articles].tolist(), articles.tolist(), articles.tolist(), [0] * len(articles)),
    )
    conn.execute(
        f"INSERT INTO {table('qa_passages', new)} (version, row, lang, doc, start, \"end\", grp, day, embedding) "
        f"SELECT {new}, m.new, o.lang, m.doc, o.start, o.\"end\", m.grp, o.day, o.embedding "
        f"FROM {table('qa_passages', old)} o JOIN {mapping} ON m.old = o.row",
        (plan["passages"][rows].tolist(), rows.tolist(), doc_of_row[rows].tolist(),
         np.asarray(groups, np.int64)[rows].tolist()),
    )
    conn.execute(
        f"INSERT INTO {table('qa_sentences', new)} (version, sentence, doc, start, \"end\", codes, scale, "
        f"embedding) SELECT {new}, m.new, m.doc, o.start, o.\"end\", o.codes, o.scale, o.embedding "
        f"FROM {table('qa_sentences', old)} o JOIN {mapping} ON m.old = o.sentence",
        (plan["sentences"][sentence_rows].tolist(), sentence_rows.tolist(),
         doc_of_sentence[sentence_rows].tolist(), [0] * len(sentence_rows)),
    )
    return copied


def _search_kind(index: Any, lang: str, passages: int, settings: Settings) -> str:
    """'approximate' where the embedded index searches the language approximately (it is large, and
    its approximate index met the recall target at build), else 'exact' (a scan of the partition).
    Which approximate index, and its setting, is chosen by measurement (`_approximate_index`)."""
    spec = index.manifest.index.languages.get(lang)
    kind = spec.type if spec is not None else choose_kind(passages, settings.index_type, settings.ann_min_passages)
    return "exact" if kind == "flat" else "approximate"


def lexical_postings(lexical: Any) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray, int]:
    """(vocabulary, indptr, passage rows, BM25 weights, passages) of a `qa.lexical.LexicalIndex`:
    each token's postings are rows[indptr[t]:indptr[t + 1]], sorted by passage."""
    # Token-major postings; the weights computed from the stored counts (`qa.lexical.bm25_weights`).
    return lexical.vocab, np.asarray(lexical.indptr), np.asarray(lexical.indices), lexical.weights(), lexical.passages


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
    and the articles' digests the next write compares (`_digests`)."""
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


def tuning_queries(index: Any, settings: Settings | None) -> np.ndarray:
    """Question-like vectors to tune the approximate searches on: sentences of the corpus, of every
    language (a question searches every language), centred as the engine centres a question in
    their language. (The embedded index tunes on the sentences embedded as questions, which the
    index does not keep; sentence vectors lie farther from the data, so the setting comes out
    higher for the same recall: on the safe side.)"""
    sentences = np.asarray(index.sentences, np.int64).reshape(-1, 3)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(sentences), size=min(RECALL_SAMPLE, len(sentences)), replace=False))
    queries = np.asarray(index.sentence_vectors[sample], np.float32)
    langs = np.asarray(index.langs)[sentences[sample, 0]]
    strength = settings.query_centering if settings is not None else 0.0
    for lang in set(langs.tolist()):
        mine = langs == lang
        queries[mine] = index.lang_stats.center_query(queries[mine], lang, strength)
    return queries


def _approximate_index(conn, version: int, lang: str, index: Any, spec: dict, queries: np.ndarray,
                       settings: Settings | None) -> dict:
    """Build the language's approximate index and tune its search setting on `queries` until
    recall@10 against exact reaches the embedded index's target, trying the kinds of
    APPROXIMATE_ORDER in turn (see the module's notes); the first that reaches it is kept. If
    none does: an exact scan where the index type is 'auto' (as the embedded index decides),
    else the last kind at its largest setting. Returns the language's spec with what was chosen:
    search, the index's parameters, the setting, recall_at_10 and build seconds."""
    from psycopg.sql import SQL, Identifier

    from qa.index.ann import exact_neighbours, n_lists

    target = settings.ann_target_recall if settings is not None else 0.97
    rows = index.rows_by_language[lang]
    truth = rows[exact_neighbours(np.asarray(index.passage_vectors_at(rows), np.float32), queries, 10)]
    embedded = index.manifest.index.languages.get(lang)
    lists = int(embedded.nlist) if embedded is not None and embedded.nlist else n_lists(len(rows))
    name = Identifier(leaf(version, lang))
    search = SQL("SELECT row FROM {} ORDER BY embedding <#> %s LIMIT 10").format(name)
    chosen: dict = {}
    for kind in APPROXIMATE_ORDER:
        conn.execute(SQL("DROP INDEX IF EXISTS {}").format(Identifier(leaf(version, lang) + "_approximate")))
        started = time.perf_counter()
        if kind == "ivfflat":
            conn.execute(SQL("CREATE INDEX {} ON {} USING ivfflat (embedding vector_ip_ops) WITH (lists = {})")
                         .format(Identifier(leaf(version, lang) + "_approximate"), name, SQL(str(lists))))
            steps, key, guc = nprobe_steps(lists), "probes", "ivfflat.probes"
            params = {"lists": lists}
        else:
            conn.execute(SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) "
                             "WITH (m = {}, ef_construction = {})")
                         .format(Identifier(leaf(version, lang) + "_approximate"), name, SQL(str(HNSW_M)),
                                 SQL(str(HNSW_EF_CONSTRUCTION))))
            steps, key, guc = HNSW_EF_SEARCH_STEPS, "ef_search", "hnsw.ef_search"
            params = {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
        seconds = round(time.perf_counter() - started, 2)
        conn.execute(f"SET LOCAL {kind}.iterative_scan = relaxed_order")
        conn.execute("SET LOCAL enable_seqscan = off")  # measure the index, whatever the planner prefers
        for value in steps:
            conn.execute(f"SET LOCAL {guc} = {int(value)}")
            found = sum(len({row for (row,) in conn.execute(search, (query,))} & set(want.tolist()))
                        for query, want in zip(queries, truth))
            recall = round(found / max(10 * len(queries), 1), 4)
            if recall >= target:
                break
        conn.execute("SET LOCAL enable_seqscan = on")
        chosen = {**spec, "search": kind, **params, key: int(value), "recall_at_10": recall,
                  "index_seconds": seconds, "target_recall": target}
        if recall >= target:
            log.info("%s: %s %s at %s %s: recall@10 %.3f.", lang, kind, params, key, value, recall)
            return chosen
    if settings is not None and settings.index_type == "auto":
        conn.execute(SQL("DROP INDEX IF EXISTS {}").format(Identifier(leaf(version, lang) + "_approximate")))
        log.info("%s: no approximate index reached recall@10 %.2f (%s): exact scan.", lang, target, chosen)
        return {**spec, "search": "exact", "tried": chosen}
    return chosen

"""The rows of a new store version: those sent over a connection and those copied inside the database.

The database write is incremental: each article's rows carry a digest of everything written for
it (its record, its passages' offsets and vectors, its sentences' offsets and int8 codes); an
article whose digest the live version already holds has its rows copied inside the database
(`INSERT ... SELECT`, renumbered, with its passages' new translation groups: `copy_reused`), and
only new or changed articles' rows are sent (`row_parts`, `copy_rows`; `copy_part` on a
connection of its own). A deleted article is simply not in the new version.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from qa.errors import DatabaseError
from qa.index.ann import Int8Rows
from qa.index.format import SENTENCE_SCALES, SENTENCE_VECTORS
from qa.postgres.schema import connect, table

__all__ = [
    "BLOCK",
    "PART_PASSAGES",
    "article_digests",
    "copy_part",
    "copy_reused",
    "copy_rows",
    "previous_version",
    "reuse_plan",
    "row_parts",
    "sentence_codes",
    "sum_counts",
]

BLOCK = 8192  # rows per digest batch
PART_PASSAGES = 50_000  # passages (with their articles and sentences) per part of rows sent: ~0.2 GB


def row_parts(index: Any, work: dict, parts: int = 1) -> Iterator[dict]:
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
    """Send one part of a version's rows (`row_parts`) over a connection of its own, in one
    transaction; the rows of each table sent. What each `qa index --ray` worker runs."""
    conn = connect(url, vectors=False)
    try:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        with conn.transaction():
            state = conn.execute("SELECT state FROM qa_versions WHERE version = %s", (version,)).fetchone()
            if state is None or state[0] != "building":  # its writer gave up and dropped it
                raise DatabaseError(f"Store version {version} is no longer being written; nothing was sent.")
            return copy_rows(conn, version, part)
    finally:
        conn.close()


def copy_rows(conn, version: int, part: dict) -> dict[str, int]:
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


def sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total = {"articles": 0, "passages": 0, "sentences": 0}
    for count in counts:
        for name in total:
            total[name] += count[name]
    return total


def sentence_codes(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """The int8 codes and float32 scales of the index's sentence vectors, as its files hold them
    (a small index decodes them into memory at load: they are then read from the files again)."""
    vectors = index.sentence_vectors
    if isinstance(vectors, Int8Rows):
        return vectors.codes, vectors.scales
    return (np.load(index.path / SENTENCE_VECTORS, mmap_mode="r", allow_pickle=False),
            np.load(index.path / SENTENCE_SCALES, mmap_mode="r", allow_pickle=False))


def article_digests(
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


def previous_version(conn, index: Any) -> dict | None:
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


def reuse_plan(
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


def copy_reused(
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

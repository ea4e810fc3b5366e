"""Which approximate index a large language of a store version gets, and its search setting.

Chosen by measurement when the version is written, as the embedded index chooses and tunes its own
(`qa.index.ann`): the setting is recorded with the version (`qa_versions.languages`) so that every
server searches alike (`qa.postgres.database.search_settings`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from qa.config import Settings
from qa.index.ann import choose_kind, nprobe_steps
from qa.postgres.schema import leaf

__all__ = [
    "APPROXIMATE_ORDER",
    "HNSW_BUILD_MEMORY",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_EF_SEARCH_STEPS",
    "HNSW_M",
    "RECALL_SAMPLE",
    "index_approximate_languages",
    "search_kind",
    "tuning_queries",
]

log = logging.getLogger(__name__)

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


def search_kind(index: Any, lang: str, passages: int, settings: Settings) -> str:
    """'approximate' where the embedded index searches the language approximately (it is large, and
    its approximate index met the recall target at build), else 'exact' (a scan of the partition).
    Which approximate index, and its setting, is chosen by measurement (`index_approximate_languages`)."""
    spec = index.manifest.index.languages.get(lang)
    kind = spec.type if spec is not None else choose_kind(passages, settings.index_type, settings.ann_min_passages)
    return "exact" if kind == "flat" else "approximate"


def index_approximate_languages(conn, version: int, index: Any, languages: dict, settings: Settings | None) -> None:
    """Build and tune the approximate index of each language `languages` does not search exactly,
    in the writer's transaction; each such language's spec is replaced by what was chosen."""
    from psycopg.sql import SQL, Literal

    approximate = [lang for lang, spec in languages.items() if spec["search"] != "exact"]
    if not approximate:
        return
    conn.execute(SQL("SET LOCAL maintenance_work_mem = {}").format(Literal(HNSW_BUILD_MEMORY)))
    queries = tuning_queries(index, settings)
    for lang in approximate:
        languages[lang] = _approximate_index(conn, version, lang, index, languages[lang], queries, settings)


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
    APPROXIMATE_ORDER in turn (see the notes above it); the first that reaches it is kept. If
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
    drop = SQL("DROP INDEX IF EXISTS {}").format(Identifier(leaf(version, lang) + "_approximate"))
    chosen: dict = {}
    for kind in APPROXIMATE_ORDER:
        conn.execute(drop)
        started = time.perf_counter()
        steps, key, guc, params = _create_index(conn, kind, leaf(version, lang), lists)
        seconds = round(time.perf_counter() - started, 2)
        value, recall = _tune(conn, kind, guc, steps, search, queries, truth, target)
        chosen = {**spec, "search": kind, **params, key: int(value), "recall_at_10": recall,
                  "index_seconds": seconds, "target_recall": target}
        if recall >= target:
            log.info("%s: %s %s at %s %s: recall@10 %.3f.", lang, kind, params, key, value, recall)
            return chosen
    if settings is not None and settings.index_type == "auto":
        conn.execute(drop)
        log.info("%s: no approximate index reached recall@10 %.2f (%s): exact scan.", lang, target, chosen)
        return {**spec, "search": "exact", "tried": chosen}
    return chosen


def _create_index(conn, kind: str, partition: str, lists: int) -> tuple[Sequence[int], str, str, dict[str, int]]:
    """CREATE the `kind` index of the language partition `partition`; (the settings to try, the
    setting's key in the spec, its GUC, the index's parameters)."""
    from psycopg.sql import SQL, Identifier

    name, table = Identifier(partition + "_approximate"), Identifier(partition)
    if kind == "ivfflat":
        conn.execute(SQL("CREATE INDEX {} ON {} USING ivfflat (embedding vector_ip_ops) WITH (lists = {})")
                     .format(name, table, SQL(str(lists))))
        return nprobe_steps(lists), "probes", "ivfflat.probes", {"lists": lists}
    conn.execute(SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_ip_ops) "
                     "WITH (m = {}, ef_construction = {})")
                 .format(name, table, SQL(str(HNSW_M)), SQL(str(HNSW_EF_CONSTRUCTION))))
    return HNSW_EF_SEARCH_STEPS, "ef_search", "hnsw.ef_search", {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


def _tune(conn, kind: str, guc: str, steps: Sequence[int], search: Any, queries: np.ndarray, truth: np.ndarray,
          target: float) -> tuple[int, float]:
    """The first of `steps` at which `search` (through the `kind` index) finds recall@10 `target`
    of `truth` for `queries`, else the last; (that setting, its recall@10)."""
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
    return value, recall

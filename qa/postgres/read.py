"""Answer from the store: one version of it as a ranking backend.

`StoredIndex` is one version behind the verbs `qa.retrieval.Engine` ranks with
(`qa.index.load.IndexBackend`), loaded by `Database` (`qa.postgres.database`) when it is live.
Every statement of a `StoredIndex` names its version's own tables, so a question never mixes
versions, whatever a rebuild switches meanwhile.

What a server keeps in memory per version (read once when it switches, a few blobs): the
language statistics, each passage's article, offsets and translation group, each sentence's
offsets, and what filters read of each article. Per question it reads from PostgreSQL each
language's best passages (`ORDER BY embedding <#> q LIMIT k`: an exact scan, or the IVFFlat or HNSW
index of a large language, with its recorded setting and iterative scans), the BM25 postings of the question's words, the vectors
of the candidates and of their sentences, and the articles of the passages shown.
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from types import SimpleNamespace
from typing import Any

import numpy as np

from qa.errors import IndexNotFoundError
from qa.index.format import Manifest
from qa.index.load import Index
from qa.models import Article, Chunk, Filters
from qa.postgres.database import HNSW_EF_SEARCH, SEARCH_SETTINGS, Database, search_settings
from qa.postgres.schema import leaf, shown_url, table
from qa.rank import LanguageStats, group_members

__all__ = ["HNSW_EF_SEARCH", "SEARCH_SETTINGS", "Database", "StoredIndex", "search_settings"]

ARTICLES_KEPT = 4096  # articles (with their text) kept per version: those of recent answers
VECTORS_KEPT = 8192  # passage and sentence vectors kept per version (~12 MB each at 384 dimensions)


def _array(vector: Any) -> np.ndarray:
    """A pgvector value (binary results: a `Vector`) as float32."""
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, np.float32)


def _decode(*values: Any) -> np.ndarray:
    """A row's vector as float32: a passage's `embedding`, or a sentence's int8 codes times its
    scale (as `qa.index.ann.Int8Rows` decodes them: the same codes give the same floats)."""
    if len(values) == 1:
        return _array(values[0])
    codes, scale, embedding = values
    if codes is None:  # a version written before the codes
        return _array(embedding)
    return np.frombuffer(codes, np.int8).astype(np.float32) * np.float32(scale)


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _load_stats(data: bytes) -> LanguageStats:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return LanguageStats.from_arrays(arrays)


class _Rows:
    """Vectors of a version's table, read by row numbers (`vectors[rows]`): float32 (len, d)."""

    def __init__(self, index: StoredIndex, kind: str):
        self.index, self.kind = index, kind

    @property
    def shape(self) -> tuple[int, int]:
        n = len(self.index) if self.kind == "qa_passages" else len(self.index.sentences)
        return n, self.index.manifest.model.dim

    def __getitem__(self, rows) -> np.ndarray:
        return self.index.vectors_at(self.kind, np.atleast_1d(np.asarray(rows, np.int64)))


class _Articles:
    """The version's articles by doc_id, read from the database on demand (the last few kept)."""

    def __init__(self, index: StoredIndex):
        self.index = index
        self._kept: OrderedDict[str, Article] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.index.doc_number

    def __iter__(self):
        return iter(self.index.doc_ids)

    def __len__(self) -> int:
        return len(self.index.doc_ids)

    def __getitem__(self, doc_id: str) -> Article:
        return self.many([doc_id])[doc_id]

    def get(self, doc_id: str, default=None):
        return self.many([doc_id])[doc_id] if doc_id in self else default

    def many(self, doc_ids: list[str]) -> dict[str, Article]:
        """The articles `doc_ids`, reading those not kept in one statement."""
        with self._lock:
            found = {d: self._kept[d] for d in doc_ids if d in self._kept}
        missing = sorted({self.index.doc_number[d] for d in doc_ids if d not in found})
        if missing:
            rows = self.index.db.run(
                f"SELECT article FROM {table('qa_articles', self.index.number)} WHERE doc = ANY(%s)",
                (missing,), binary=False,
            )
            with self._lock:
                for (data,) in rows:
                    article = Article.model_validate(data if isinstance(data, dict) else json.loads(data))
                    found[article.doc_id] = self._kept[article.doc_id] = article
                while len(self._kept) > ARTICLES_KEPT:
                    self._kept.popitem(last=False)
        if any(d not in found for d in doc_ids):
            raise KeyError(next(d for d in doc_ids if d not in found))
        return found


class StoredLexical:
    """BM25 over one version's postings in `qa_terms_<v>` (the weights `qa.lexical` computed)."""

    def __init__(self, index: StoredIndex, passages: int):
        self.index = index
        self.passages = passages

    def _postings(self, tokens: list[str]) -> dict[str, tuple[int, bytes, bytes]]:
        if not tokens:
            return {}
        rows = self.index.db.run(
            f"SELECT token, df, rows, scores FROM {table('qa_terms', self.index.number)} WHERE token = ANY(%s)",
            (sorted(set(tokens)),),
        )
        return {token: (df, bytes(r), bytes(s)) for token, df, r, s in rows}

    def sparse_scores(self, query: str, budget: int) -> tuple[np.ndarray, np.ndarray]:
        """As `qa.lexical.LexicalIndex.sparse_scores`, with the same choice of postings
        (`qa.lexical.postings_to_read`) and the same merge: (passage rows sorted, BM25 scores)."""
        from qa.kernels import merge_postings
        from qa.lexical import postings_to_read, tokenize

        words = tokenize(query)
        postings = self._postings(words)
        read, weights = postings_to_read(words, {t: df for t, (df, _, _) in postings.items()}, budget)
        lengths = np.array([postings[t][0] for t in read], np.int64)
        ends = np.cumsum(lengths)
        return merge_postings(
            np.frombuffer(b"".join(postings[t][1] for t in read), "<i4").astype(np.int32),
            np.frombuffer(b"".join(postings[t][2] for t in read), "<f4").astype(np.float32),
            ends - lengths, ends, weights,
        )

    def idf(self, tokens: list[str]) -> np.ndarray:
        """BM25's inverse document frequency of each token (`qa.lexical.bm25_idf`, as the
        embedded index computes it)."""
        from qa.lexical import bm25_idf

        postings = self._postings(tokens)
        return bm25_idf([postings[t][0] if t in postings else 0 for t in tokens], self.passages)


class StoredIndex:
    """One version of the store, read through the verbs of `qa.index.load.IndexBackend`.

    Also carries the per-passage arrays the engine's vectorized scoring reads (`lang_ids`,
    `groups`, `members`, `langs`, the sentence links) and what `qa.answer` reads (`row_of`,
    `sentences`, `sentence_vectors`, `articles`), the vectors being read from the database.
    """

    searches_filters = True  # `search_by_language` takes the filters themselves (WHERE clauses)

    def __init__(self, db: Database, number: int, row: tuple, arrays: dict[str, bytes]):
        _, source, _, _, _, manifest, languages = row
        self.db = db
        self.number = number
        self.source = source
        self.manifest = Manifest.model_validate(manifest if isinstance(manifest, dict) else json.loads(manifest))
        self.searches = languages if isinstance(languages, dict) else json.loads(languages)
        self.search_settings = search_settings(self.searches)
        self.lang_stats = _load_stats(arrays["lang_stats"])
        self.sentence_stats = _load_stats(arrays["sentence_stats"])
        self.offsets = _load_npy(arrays["passages"])  # (n, 5): article, chunk_id, start, end, tokens
        self.groups = _load_npy(arrays["groups"])
        self.sentences = _load_npy(arrays["sentences"])
        filter_fields = json.loads(arrays["articles"])
        self.doc_ids = [f[0] for f in filter_fields]
        self.doc_number = {doc_id: i for i, doc_id in enumerate(self.doc_ids)}
        doc_langs = np.array([f[1] for f in filter_fields])
        self.langs = doc_langs[self.offsets[:, 0]] if len(self.offsets) else np.zeros(0, str)
        self.lang_ids = self.lang_stats.lang_ids(self.langs)
        self.rows_by_language = {
            lang: np.flatnonzero(self.langs == lang) for lang in sorted(set(self.langs.tolist()))
        }
        self.members = group_members(self.groups)
        self.articles = _Articles(self)
        self.lexical = StoredLexical(self, json.loads(arrays["lexical"])["passages"])
        self.passage_vectors = _Rows(self, "qa_passages")
        self.sentence_vectors = _Rows(self, "qa_sentences")
        self._filter_fields = filter_fields
        self._row_of: dict[tuple[str, int], int] | None = None
        # The vectors of the last candidates: the passages shown and their evidence are read again
        # right after the ranking read them (one statement instead of one per passage).
        self._vectors_kept: dict[str, OrderedDict[int, np.ndarray]] = {
            "qa_passages": OrderedDict(), "qa_sentences": OrderedDict()
        }
        self._vectors_lock = threading.Lock()
        self._link_sentences()

    @classmethod
    def load(cls, db: Database, number: int) -> StoredIndex:
        rows = db.run(
            "SELECT version, source, dim, passages, sentences, manifest, languages FROM qa_versions "
            "WHERE version = %s AND state = 'ready'", (number,), binary=False,
        )
        if not rows:
            raise IndexNotFoundError(
                f"Version {number} named live in {shown_url(db.url)} is missing. Rebuild it with "
                "`qa index --database URL`."
            )
        arrays = dict(db.run("SELECT name, data FROM qa_arrays WHERE version = %s", (number,)))
        return cls(db, number, rows[0], {name: bytes(data) for name, data in arrays.items()})

    # ---------------------------------------------------------------- what the engine reads

    @property
    def version(self) -> str:
        return f"db-{self.number}"

    @property
    def languages(self) -> list[str]:
        return list(self.rows_by_language)

    def __len__(self) -> int:
        return len(self.offsets)

    def damage(self) -> str | None:
        return None  # nothing memory-mapped: the database checks its own pages

    def map_in(self) -> int:
        return 0

    def _link_sentences(self) -> None:
        """Which sentences each passage holds: the embedded build's own function
        (`qa.index.store.link_sentences`) over the same offsets arrays."""
        from qa.index.store import link_sentences, link_starts

        self.sentence_owner, self.sentence_member = link_sentences(self.offsets, self.sentences)
        self.link_start = link_starts(self.sentence_owner, len(self))
        self.sentence_lang_ids = self.sentence_stats.lang_ids(self.langs[self.sentence_owner])

    # Walking the links and the translation groups: the embedded index's own methods over the
    # same arrays (`link_start`, `sentence_member`, `groups`, `members`), one code for both stores.
    sentence_runs = Index.sentence_runs
    sentence_links = Index.sentence_links
    sentences_of = Index.sentences_of
    group_members = Index.group_members

    def sentence_span(self, sentence: int) -> tuple[str, int, int]:
        doc, start, end = self.sentences[sentence].tolist()
        return self.doc_ids[doc], start, end

    @property
    def row_of(self) -> dict[tuple[str, int], int]:
        """(doc_id, start) -> passage row (built on first use: answers look their passages up)."""
        if self._row_of is None:
            self._row_of = {
                (self.doc_ids[doc], start): row
                for row, (doc, start) in enumerate(self.offsets[:, [0, 2]].tolist())
            }
        return self._row_of

    def passage(self, row: int) -> Chunk:
        """Passage `row`, its text cut from its article (read from the database)."""
        doc, chunk_id, start, end, tokens = self.offsets[row].tolist()
        article = self.articles[self.doc_ids[doc]]
        return Chunk(doc_id=article.doc_id, chunk_id=chunk_id, text=article.text[start:end], start=start,
                     end=end, n_tokens=tokens)

    def article(self, doc_id: str) -> Article:
        return self.articles[doc_id]

    def vectors_at(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of rows `rows` of the version's passages or sentences, in that order."""
        if not len(rows):
            return np.zeros((0, self.manifest.model.dim), np.float32)
        key = "row" if kind == "qa_passages" else "sentence"
        kept = self._vectors_kept[kind]
        with self._vectors_lock:
            found = {r: kept[r] for r in rows.tolist() if r in kept}
        missing = sorted(set(rows.tolist()) - found.keys())
        if missing:
            columns = "embedding" if kind == "qa_passages" else "codes, scale, embedding"
            read = {row: _decode(*values) for row, *values in self.db.run(
                f"SELECT {key}, {columns} FROM {table(kind, self.number)} WHERE {key} = ANY(%s)", (missing,)
            )}
            found.update(read)
            with self._vectors_lock:
                kept.update(read)
                while len(kept) > VECTORS_KEPT:
                    kept.popitem(last=False)
        return np.stack([found[r] for r in rows.tolist()])

    def passage_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors_at("qa_passages", np.asarray(rows, np.int64))

    def sentence_vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return self.vectors_at("qa_sentences", np.asarray(rows, np.int64))

    # ---------------------------------------------------------------- the per-language search

    def search_by_language(
        self, query: np.ndarray, k: int, mask: np.ndarray | None = None, filters: Filters | None = None
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The k best passages of each language by inner product: {lang: (scores, rows)}, in one
        statement (a UNION ALL of one `ORDER BY embedding <#> q LIMIT k` per language partition).
        `filters` become each language's WHERE clause (dates, sources) and leave out the
        languages they exclude; `mask` (the same filters as a passage mask) is then only checked."""
        from psycopg.sql import SQL, Composed, Identifier, Literal

        where, params = self._where(filters)
        parts = []
        for lang in self.languages:
            if filters is not None and filters.langs and lang not in filters.langs:
                continue
            parts.append(SQL(
                "(SELECT {lang} AS lang, row, embedding <#> %(q)s AS distance FROM {leaf}{where} "
                "ORDER BY embedding <#> %(q)s LIMIT %(k)s)"
            ).format(lang=Literal(lang), leaf=Identifier(leaf(self.number, lang)), where=where))
        if not parts:
            return {}
        found = self.db.run(Composed(parts).join(" UNION ALL "),
                            {"q": np.asarray(query, np.float32), "k": int(k), **params},
                            settings=self.search_settings)
        out: dict[str, list[tuple[float, int]]] = {}
        for lang, row, distance in found:
            if mask is None or mask[row]:
                out.setdefault(lang, []).append((-float(distance), int(row)))
        result = {}
        for lang, hits in out.items():
            hits.sort(key=lambda hit: (-hit[0], hit[1]))  # HNSW's relaxed order: best first again
            result[lang] = (np.array([h[0] for h in hits], np.float32), np.array([h[1] for h in hits], np.int64))
        return result

    def _where(self, filters: Filters | None):
        """The WHERE clause of each language's search for `filters`, and its parameters."""
        import datetime as dt

        from psycopg.sql import SQL

        from qa.filters import filter_columns

        if filters is None:
            return SQL(""), {}
        clauses, params = [], {}
        epoch = dt.date(1970, 1, 1)
        if filters.since:
            clauses.append("day >= %(since)s")
            params["since"] = (filters.since - epoch).days
        if filters.until:
            clauses.append("day <= %(until)s")
            params["until"] = (filters.until - epoch).days
        if filters.sources:
            # Which articles a source names is decided once per version in memory (outlets and
            # corpus paths, as `qa.filters` matches them); the search then keeps their passages.
            docs = np.flatnonzero(filter_columns(self)._source_docs(filters.sources))
            clauses.append("doc = ANY(%(docs)s)")
            params["docs"] = docs.astype(np.int32).tolist()
        if not clauses:
            return SQL(""), {}
        return SQL(" WHERE " + " AND ".join(clauses)), params

    def search_language(self, lang: str, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search_by_language(query, k).get(lang, (np.zeros(0, np.float32), np.zeros(0, np.int64)))

    # ---------------------------------------------------------------- what filters read

    @property
    def chunks(self) -> list[SimpleNamespace]:
        """Each passage's article (all `qa.filters.FilterColumns` reads of a passage)."""
        return [SimpleNamespace(doc_id=self.doc_ids[doc]) for doc in self.offsets[:, 0].tolist()]

    @property
    def _filter_columns(self):
        columns = self.__dict__.get("_columns")
        if columns is None:
            from qa.filters import FilterColumns

            columns = self.__dict__["_columns"] = FilterColumns(_FilterView(self))
        return columns

    @_filter_columns.setter
    def _filter_columns(self, value) -> None:
        self.__dict__["_columns"] = value


class _FilterView:
    """What `qa.filters.FilterColumns` reads of an index, from the version's in-memory fields."""

    def __init__(self, index: StoredIndex):
        self.articles = {
            doc_id: SimpleNamespace(doc_id=doc_id, lang=lang, date=date, url=url, source=source)
            for doc_id, lang, date, url, source in index._filter_fields
        }
        self.chunks = index.chunks
        self.rows_by_language = index.rows_by_language

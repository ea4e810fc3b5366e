"""The store's live version, read through one connection per thread.

`Database` holds one connection per thread (with the search settings its statements need) and,
once per question, reads which version is live (one indexed row); when a rebuild has switched it,
it loads the new version (`qa.postgres.read.StoredIndex`) and checks its model first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qa.errors import DatabaseError, IndexMismatchError, IndexNotFoundError
from qa.postgres.schema import connect, shown_url, unreachable

if TYPE_CHECKING:
    from qa.postgres.read import StoredIndex

__all__ = ["HNSW_EF_SEARCH", "SEARCH_SETTINGS", "Database", "check_stored_model", "search_settings"]

log = logging.getLogger(__name__)

HNSW_EF_SEARCH = 100  # candidates HNSW keeps while searching (at least k); iterative scans add more
# The search settings of a version's approximate languages, as its writer tuned them and recorded
# them in `qa_versions.languages` (so that every server searches alike): per language
# {"search": "ivfflat", "probes": n} or {"search": "hnsw", "ef_search": n}. A question searches
# every language in one statement, so a connection takes the largest of each (a language tuned
# lower only gains recall). Versions written before the settings were recorded: HNSW_EF_SEARCH.
SEARCH_SETTINGS = {"ivfflat": ("ivfflat.probes", "probes", 1), "hnsw": ("hnsw.ef_search", "ef_search", HNSW_EF_SEARCH)}


class Database:
    """The store at `settings.database_url`: per-thread connections and the live version."""

    def __init__(self, url: str):
        self.url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loaded: StoredIndex | None = None
        self._failed: int | None = None  # a live version that did not load (see `index`)

    def connection(self):
        """This thread's connection, opened (or reopened after a failure) on demand."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = connect(self.url)
            conn.execute(f"SET hnsw.ef_search = {HNSW_EF_SEARCH}")
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            # A filtered search must still find k rows: both indexes scan on past a filter.
            conn.execute("SET ivfflat.iterative_scan = relaxed_order")
            self._local.conn = conn
            self._local.applied = {}
        return conn

    def apply(self, conn, settings: dict[str, int] | None) -> None:
        """SET the search settings `settings` ({"ivfflat.probes": 8, ...}) on `conn` (this thread's
        connection) unless it has them already."""
        if not settings:
            return
        applied = self._local.applied
        for name, value in settings.items():
            if applied.get(name) != int(value):
                conn.execute(f"SET {name} = {int(value)}")  # names from SEARCH_SETTINGS only
                applied[name] = int(value)

    def run(
        self, statement, params: Any = None, *, binary: bool = True, missing: list | None = None,
        settings: dict[str, int] | None = None,
    ) -> list[tuple]:
        """The rows of one statement; DatabaseError (a 503) if the database is lost meanwhile.
        `missing`: the rows to return when a table it reads does not exist (else an error);
        `settings`: search settings the statement needs (see `apply`), on a new connection too."""
        import psycopg

        for attempt in (1, 2):
            # A connection that has served before may have been cut since (the database restarted,
            # a failover): a read is then tried once more, on a new connection.
            reused = getattr(self._local, "conn", None) is not None
            try:
                conn = self.connection()
                self.apply(conn, settings)
                with conn.cursor(binary=binary) as cursor:
                    cursor.execute(statement, params)
                    return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError as exc:
                self.drop_connection()
                if attempt == 1 and reused:
                    continue
                raise unreachable(self.url, exc) from None
            except psycopg.errors.UndefinedTable as exc:
                if missing is not None:
                    return missing
                # A version removed under a question (two rebuilds during it, or the tables
                # dropped): the next question reads the live version again.
                raise DatabaseError(
                    f"The index version this question read was removed from {shown_url(self.url)} "
                    f"({' '.join(str(exc).split())[:120]}). Ask again: the next question reads the live one."
                ) from None
        raise AssertionError("unreachable")  # (the loop returns or raises)

    def drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close cleanly
                conn.close()

    def live_version(self) -> int:
        """The live version's number; IndexNotFoundError before the first `qa index --database`."""
        import psycopg

        try:
            rows = self.run("SELECT version FROM qa_live", missing=[])
        except psycopg.Error as exc:
            raise DatabaseError(f"Reading the live version from {shown_url(self.url)} failed: {exc}") from None
        if not rows:
            raise IndexNotFoundError(
                f"No index in the database at {shown_url(self.url)}. Build one with "
                "`qa index --database URL` (it reads corpus/ by default)."
            )
        return int(rows[0][0])

    def index(self, model: Callable[[], dict[str, Any]] | None = None) -> StoredIndex:
        """The live version, loaded again when a rebuild has switched it since the last question;
        `model()` (the embedder's description) is checked against a version when it loads."""
        from qa.postgres.read import StoredIndex  # here, not at the top: read.py imports this module

        version = self.live_version()
        loaded = self._loaded
        if loaded is not None and (loaded.number == version or self._failed == version):
            return loaded
        with self._lock:
            if self._loaded is None or self._loaded.number != version:
                try:
                    fresh = StoredIndex.load(self, version)
                    if model is not None:
                        check_stored_model(fresh, model(), self.url)
                except (IndexNotFoundError, IndexMismatchError) as exc:
                    if self._loaded is None:
                        raise
                    # As with a local index: a new version that does not load leaves the loaded
                    # one answering (tried once; the next switch tries again).
                    self._failed = version
                    log.error("Store version %s cannot be used (%s); answering from version %s.",
                              version, exc, self._loaded.number)
                    return self._loaded
                self._loaded, self._failed = fresh, None
                log.info("Answering from store version %s (%d passages).", version, len(fresh))
            return self._loaded


def search_settings(searches: dict[str, dict]) -> dict[str, int]:
    """The settings a search of every language of a version takes: the largest tuned value of each
    approximate index's setting over its languages (see SEARCH_SETTINGS)."""
    out: dict[str, int] = {}
    for spec in searches.values():
        if spec.get("search") in SEARCH_SETTINGS:
            name, key, default = SEARCH_SETTINGS[spec["search"]]
            out[name] = max(out.get(name, 0), int(spec.get(key, default)))
    return out


def check_stored_model(index: StoredIndex, model: dict[str, Any], url: str) -> None:
    """Refuse a store version whose vectors came from another model than the configured one."""
    built = index.manifest.model
    if built.fingerprint != model["fingerprint"] or built.dim != model["dim"]:
        raise IndexMismatchError(
            f"The index in the database at {shown_url(url)} was built with model {built.name!r} "
            f"(dimension {built.dim}), but the configured model is {model['name']!r} (dimension "
            f"{model['dim']}). Rebuild it with `qa index --database`, or set QA_MODEL={built.name!r}."
        )

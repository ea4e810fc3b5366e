"""The shared store: the index in PostgreSQL with pgvector, for any number of stateless servers.

Set QA_DATABASE_URL (or pass `qa index --database URL`): `qa index` builds as usual and writes
the result into the database as a new version (`write_store`), switched live atomically; `qa ask`,
`qa search` and `qa serve` then answer from the live version (`Database`, `StoredIndex`), ranked
by the same code as the embedded index. Tables and names: `qa.postgres.schema`. Needs the `postgres`
extra (psycopg, pgvector).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Database", "StoredIndex", "write_store"]


def __getattr__(name: str) -> Any:
    # Lazy: importing qa.postgres must not import psycopg (an optional dependency).
    if name in ("Database", "StoredIndex"):
        from qa.postgres import read

        return getattr(read, name)
    if name == "write_store":
        from qa.postgres.write import write_store

        return write_store
    raise AttributeError(name)

"""The PostgreSQL schema of the shared store: tables, names and connections.

Every index version is a set of tables of its own, LIST partitions of five parent tables, so that
a rebuild writes a complete version beside the live one and a server reads one version only::

    qa_versions            one row per version: state ('building', 'ready'), the manifest, how
                           each language is searched, the local version it was copied from
    qa_live                one row: the live version (a rebuild commits by updating it)
    qa_arrays              (version, name) -> bytes: the small per-version arrays every server
                           keeps in memory (language statistics, translation groups, offsets)
    qa_articles_<v>        the articles (their text, metadata, day number and outlet)
    qa_passages_<v>        the passages: article, offsets, group, day, embedding vector(d);
      qa_passages_<v>_<lang>   one LIST partition per language (exact scan, or IVFFlat / HNSW when large)
    qa_sentences_<v>       every sentence of the passages with its embedding as the embedded index
                           keeps it: int8 codes and one float32 scale (versions written before
                           the codes hold a float32 `embedding` instead)
    qa_terms_<v>           BM25 postings: token -> document frequency, passage rows, scores

BM25 is computed once, at build time, by the same code as the embedded index (`qa.lexical`):
the per-passage BM25 weight of every token is stored in `qa_terms_<v>`, so every server reads the
same postings of the same version and ranks alike (PostgreSQL's own `ts_rank` is not BM25).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from qa.errors import ConfigError, DatabaseError

__all__ = [
    "PARENTS",
    "check_url",
    "connect",
    "ensure_schema",
    "leaf",
    "shown_url",
    "table",
    "unreachable",
]

# The parent tables partitioned by version; qa_passages_<v> is itself partitioned by language.
PARENTS = ("qa_articles", "qa_passages", "qa_sentences", "qa_terms")
_NOT_NAME = re.compile(r"[^a-z0-9]+")

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS qa_versions (
    version integer PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('building', 'ready')),
    created_at timestamptz NOT NULL DEFAULT now(),
    source text NOT NULL,
    dim integer NOT NULL,
    passages integer NOT NULL,
    sentences integer NOT NULL,
    manifest jsonb NOT NULL,
    languages jsonb NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS qa_version_numbers;
CREATE TABLE IF NOT EXISTS qa_live (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    version integer NOT NULL REFERENCES qa_versions
);
CREATE TABLE IF NOT EXISTS qa_arrays (
    version integer NOT NULL REFERENCES qa_versions ON DELETE CASCADE,
    name text NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (version, name)
);
CREATE TABLE IF NOT EXISTS qa_articles (
    version integer NOT NULL, doc integer NOT NULL, doc_id text NOT NULL, lang text NOT NULL,
    day integer NOT NULL, outlet text NOT NULL, source text NOT NULL, article jsonb NOT NULL
) PARTITION BY LIST (version);
CREATE TABLE IF NOT EXISTS qa_passages (
    version integer NOT NULL, row integer NOT NULL, lang text NOT NULL, doc integer NOT NULL,
    start integer NOT NULL, "end" integer NOT NULL, grp bigint NOT NULL, day integer NOT NULL,
    embedding vector({dim}) NOT NULL
) PARTITION BY LIST (version);
CREATE TABLE IF NOT EXISTS qa_sentences (
    version integer NOT NULL, sentence integer NOT NULL, doc integer NOT NULL,
    start integer NOT NULL, "end" integer NOT NULL, embedding vector({dim}),
    codes bytea, scale real
) PARTITION BY LIST (version);
-- A database written before the sentences' int8 codes: its old versions stay readable.
ALTER TABLE qa_sentences ADD COLUMN IF NOT EXISTS codes bytea, ADD COLUMN IF NOT EXISTS scale real,
    ALTER COLUMN embedding DROP NOT NULL;
CREATE TABLE IF NOT EXISTS qa_terms (
    version integer NOT NULL, token text NOT NULL, df integer NOT NULL,
    rows bytea NOT NULL, scores bytea NOT NULL
) PARTITION BY LIST (version);
"""


def shown_url(url: str) -> str:
    """The database URL as shown in messages and logs: its password replaced by `***`."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(an unreadable URL)"


def check_url(url: str) -> None:
    """ConfigError unless `url` is a postgresql:// URL."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(
            f"{url.split(':', 1)[0][:20]!r} is not a PostgreSQL URL: write postgresql://USER@HOST:PORT/DATABASE."
        )


def unreachable(url: str, exc: Exception) -> DatabaseError:
    """The one-line error of a database that cannot be reached (or was lost)."""
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return DatabaseError(
        f"The database at {shown_url(url)} cannot be reached ({reason}). Start PostgreSQL there, or "
        "set QA_DATABASE_URL to a running one (unset it to use the local index folder)."
    )


def connect(url: str, *, vectors: bool = True):
    """A new autocommit connection with pgvector's types registered; DatabaseError if it fails."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "QA_DATABASE_URL needs the PostgreSQL drivers: pip install 'qa[postgres]' (psycopg, pgvector), "
            "or unset it to use the local index folder."
        ) from None

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise unreachable(url, exc) from None
    except psycopg.ProgrammingError as exc:  # a malformed URL
        raise ConfigError(f"QA_DATABASE_URL {shown_url(url)!r} is not a PostgreSQL URL ({exc}).") from None
    if vectors:
        from pgvector.psycopg import register_vector

        try:
            register_vector(conn)
        except psycopg.ProgrammingError:
            conn.close()
            raise DatabaseError(
                f"The database at {shown_url(url)} has no pgvector extension. Build the store with "
                "`qa index --database URL` (it creates the extension), or run CREATE EXTENSION vector "
                "there as a superuser."
            ) from None
    return conn


def ensure_schema(conn, dim: int) -> None:
    """Create the extension and the parent tables if missing; refuse vectors of another size."""
    conn.execute(SCHEMA.format(dim=int(dim)))
    held = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'qa_passages'::regclass AND attname = 'embedding'"
    ).fetchone()[0]
    if held != f"vector({dim})":
        raise DatabaseError(
            f"The database holds vectors of type {held}, but the model makes {dim}-dimensional ones. "
            "Use another database, or drop its qa_* tables to rebuild the store with this model."
        )


def table(parent: str, version: int) -> str:
    """The partition of version `version` of a parent table (such as qa_passages_7)."""
    if parent not in PARENTS:
        raise ValueError(parent)
    return f"{parent}_{int(version)}"


def leaf(version: int, lang: str) -> str:
    """The language partition of a version's passages (qa_passages_7_en, qa_passages_7_zh_tw).

    Only letters, digits and `_` reach the name (the language itself is a quoted literal)."""
    return f"qa_passages_{int(version)}_{_NOT_NAME.sub('_', lang.lower())[:24]}"

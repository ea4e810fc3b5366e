"""Fixtures of the browser tests: Debian's Chromium driven by Playwright, and one real server
for the whole browser session (the embedding page's origin allowed in QA_EMBED_ORIGINS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.browser.live import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, free_port, start_server


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium`")
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` to run the browser tests")
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def embed_port() -> int:
    """The port of the intranet page that embeds the chat (allowed to by QA_EMBED_ORIGINS)."""
    return free_port()


@pytest.fixture(scope="session")
def app_server(seed_settings, tmp_path_factory, embed_port):
    live = start_server(
        seed_settings.index_dir,
        tmp_path_factory.mktemp("browser-server"),
        env={"QA_EMBED_ORIGINS": f"http://127.0.0.1:{embed_port}"},
    )
    yield live
    live.stop()

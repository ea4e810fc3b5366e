"""Embedding: examples/embed.html (an intranet page) served from another origin embeds the chat
with the <gradio-app> web component (script from our server) and with an iframe; a page from an
origin that is not in QA_EMBED_ORIGINS can do neither."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.browser.chat import ask, wait_for_reply
from tests.browser.live import ROOT, free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JA = "OpenAIの従業員770人のうち何人が辞めると脅したのか？"
APP = "gradio-app "


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_folder(folder: Path, port: int) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_Quiet, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def page_for(server_url: str, folder: Path) -> Path:
    """examples/embed.html with the Q&A server's address put in, as its instructions say."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "examples" / "embed.html").read_text(encoding="utf-8")
    assert text.count("http://127.0.0.1:7860") == 4
    (folder / "embed.html").write_text(text.replace("http://127.0.0.1:7860", server_url), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def intranet(app_server, embed_port, tmp_path_factory):
    """The intranet page, on the origin allowed by the server's QA_EMBED_ORIGINS."""
    httpd = serve_folder(page_for(app_server.url, tmp_path_factory.mktemp("intranet")), embed_port)
    yield f"http://127.0.0.1:{embed_port}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def elsewhere(app_server, tmp_path_factory):
    """The same page, on an origin the server does not list."""
    port = free_port()
    httpd = serve_folder(page_for(app_server.url, tmp_path_factory.mktemp("elsewhere")), port)
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    yield page
    context.close()


def test_web_component_from_an_allowed_origin_answers(page, intranet, app_server, artifacts):
    page.goto(f"{intranet}/embed.html")
    page.wait_for_selector(f"{APP}#qa-question textarea")
    ask(page, JA, prefix=APP)
    reply = wait_for_reply(page, prefix=APP)
    assert "[1]" in reply and re.search(r"[\u3040-\u30ff]", reply)
    page.locator(f"{APP}#qa-chatbot a[href^='#src-1-']").first.click()
    page.wait_for_selector(f"{APP}.qa-src.qa-active", timeout=5000)
    assert page.url == f"{intranet}/embed.html"  # the host page did not navigate
    page.locator("#web-component").screenshot(path=str(artifacts / "embed.png"))
    page.screenshot(path=str(artifacts / "embed-page.png"))
    hosts = {urlsplit(url).netloc for url in page.requests if urlsplit(url).scheme in {"http", "https"}}
    assert hosts <= {urlsplit(intranet).netloc, urlsplit(app_server.url).netloc}, hosts


def test_iframe_from_an_allowed_origin_shows_the_chat(page, intranet):
    page.goto(f"{intranet}/embed.html")
    page.locator("#iframe").scroll_into_view_if_needed()
    frame = page.frame_locator("iframe.qa-frame")
    frame.locator("#qa-question textarea").wait_for(timeout=30_000)
    assert frame.locator("#qa-ask").count() == 1


def test_other_origins_can_neither_frame_nor_embed_the_chat(page, elsewhere):
    messages = []
    page.on("console", lambda m: messages.append(m.text))
    page.goto(f"{elsewhere}/embed.html")
    page.locator("#iframe").scroll_into_view_if_needed()
    page.wait_for_timeout(6000)
    frames = [f for f in page.frames if f != page.main_frame]
    assert frames, "the iframe is missing"
    for frame in frames:
        assert frame.locator("#qa-question").count() == 0, frame.url
    # The web component cannot read the server's config across origins (CORS): no chat.
    assert page.locator(f"{APP}#qa-question").count() == 0
    assert any("frame-ancestors" in m or "CORS" in m or "Access-Control" in m for m in messages), messages

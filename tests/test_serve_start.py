"""`qa serve` answers the REST API before its chat is mounted (qa.serve.chat), then the chat.

The chat's slot, before Gradio is there: every page of it is a 503 with Retry-After (a page
that reloads itself for a browser, JSON for a program), never a 404 or a traceback, behind the
same middlewares as the API. Then a real `qa serve`: a real question answered by the REST API
while the chat is still starting, and the chat once it is mounted.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from starlette.testclient import TestClient

from qa.serve.app import create_app
from tests.browser.live import start_server
from tests.test_server_limits import gradio_call
from tests.test_server_security import settings_for

ES = "¿Cuántos empleados de OpenAI amenazaron con dimitir para irse a Microsoft?"
STAFF_WORDS = ("770", "700", "employés", "Mitarbeiter", "従業員", "empleados", "employees", "personnel")


def _starting_app(tmp_path, **extra):
    """The app as `qa serve` makes it, never started: the chat stays in its "starting" slot
    (TestClient without `with` runs no lifespan), and Gradio is not even imported."""
    return create_app(settings_for(tmp_path, **extra), defer_chat=True)


@pytest.mark.parametrize(
    "method, path", [("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/nonexistent"),
                     ("GET", "/assets/index.js"), ("POST", "/gradio_api/queue/join")],
)
def test_chat_routes_answer_503_with_retry_after_while_the_chat_starts(tmp_path, method, path):
    client = TestClient(_starting_app(tmp_path))
    response = client.request(method, path, json={"data": ["Who?"], "fn_index": 0} if method == "POST" else None)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2" and response.headers["cache-control"] == "no-store"
    assert "chat is starting" in response.json()["detail"] and "/api/v1" in response.json()["detail"]
    # The security headers apply to the slot as to every route.
    assert "frame-ancestors" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_browser_gets_a_page_that_reloads_itself_and_healthz_says_the_chat_is_starting(tmp_path):
    client = TestClient(_starting_app(tmp_path))
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")
    assert page.headers["retry-after"] == "2" and 'http-equiv="refresh" content="2"' in page.text
    assert "chat is starting" in page.text and "<script" not in page.text  # nothing the CSP would block
    health = client.get("/healthz").json()
    assert health["chat"] == "starting" and health["status"] in {"starting", "loading", "building", "error"}
    assert client.get("/embed/gradio.js").status_code == 200  # from Gradio's files, without importing it
    assert client.get("/openapi.json").json()["paths"]["/api/v1/ask"]  # the API is all there


def test_the_middlewares_stand_in_front_of_the_chat_before_it_is_mounted(tmp_path):
    # Access control first: a 401, not the 503 of the slot behind it.
    client = TestClient(_starting_app(tmp_path, auth_header="X-Forwarded-User"))
    assert client.get("/config").status_code == 401
    assert client.get("/config", headers={"X-Forwarded-User": "ana"}).status_code == 503
    assert client.get("/healthz").status_code != 401  # open for load balancers, as always
    # The body limit: a chat event too large is a 413 before anything else.
    client = TestClient(_starting_app(tmp_path, max_body_bytes=4096))
    big = client.post("/gradio_api/queue/join", content=b"x" * 8192, headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    # The closed routes stay closed (their 404), starting or not.
    closed = client.post("/gradio_api/upload")
    assert closed.status_code == 404 and closed.json() == {"detail": "Not found."}


@pytest.mark.slow
def test_qa_serve_answers_the_api_while_the_chat_starts_then_mounts_the_chat(seed_settings, tmp_path):
    live = start_server(seed_settings.index_dir, tmp_path, chat=False)  # back at the first /healthz 200
    try:
        with httpx.Client(base_url=live.url, timeout=60) as client:
            health = client.get("/healthz").json()
            assert health["status"] == "ok" and health["chat"] in {"starting", "ready"}
            answer = client.post("/api/v1/ask", json={"question": ES})
            assert answer.status_code == 200, answer.text
            reply = answer.json()
            assert reply["found"] is True and reply["lang"] == "es"
            first = reply["citations"][0]["passage"]
            text = " ".join([first["text"], *(t["text"] for t in first["translations"])])
            assert any(word in text for word in STAFF_WORDS), text[:300]
            page = client.get("/", headers={"Accept": "text/html"})
            if page.status_code == 503:  # the usual case: making the chat takes seconds of CPU
                assert page.headers["retry-after"] and "chat is starting" in page.text
            else:
                assert page.status_code == 200 and "gradio" in page.text.lower()

            deadline = time.monotonic() + 180
            while client.get("/healthz").json()["chat"] != "ready":
                assert time.monotonic() < deadline, live.log_tail()
                time.sleep(0.2)
            page = client.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 200 and "gradio" in page.text.lower()
            assert "frame-ancestors" in page.headers["content-security-policy"]
            config = client.get("/config")
            assert config.status_code == 200 and any(
                dep.get("api_name") == "ask" for dep in config.json()["dependencies"]
            )
        # Gradio's queue runs: a question through the Gradio API is answered, and a malformed
        # one is refused by the argument checks, which read the chat's functions once mounted.
        status, payload = gradio_call(live.url, "search", ["Who did the board name as CEO?", 3])
        assert status == 200, payload
        assert len(payload[0]) == 3, json.dumps(payload)[:300]
        status, message = gradio_call(live.url, "search", [])
        assert status == 422 and "/search takes `data`" in message
    finally:
        live.stop()

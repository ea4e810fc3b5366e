"""HTTP-level security of the server: CSP, CORS, access control, rate limit, path traversal,
errors without tracebacks, and serving under a sub-path.

These need no model and no index: the app is real (FastAPI + the mounted Gradio app, run by
uvicorn), but its index folder is empty and its corpus folder missing, so it stays "not ready"
and the REST API answers 503 — which is all that the HTTP plumbing needs.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.testclient import TestClient

from qa.config import Settings
from qa.errors import ConfigError
from qa.serve.app import create_app
from qa.serve.security import RateLimit, content_security_policy, read_users

ALLOWED = "http://intranet.example.com:8080"
EVIL = "http://evil.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(app, root_path: str = "") -> Iterator[str]:
    """Run `app` with uvicorn in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            root_path=root_path,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn died"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def raw_get(base: str, path: str, headers: dict[str, str] | None = None, method: str = "GET"):
    """A request with the path sent exactly as given (no client-side `..` normalisation)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        headers = headers or {}
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def settings_for(tmp: Path, **extra) -> Settings:
    # No index and no corpus: the app starts, fails to build an index, and stays "not ready".
    return Settings(index_dir=tmp / "index", corpus_dir=tmp / "no-corpus", **extra)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("security")
    with serving(create_app(settings_for(tmp, embed_origins=[ALLOWED]))) as url:
        yield url


# --------------------------------------------------------------------------- headers


def test_csp_on_every_response_limits_framing_to_self_and_embed_origins(base):
    for path in ["/", "/healthz", "/api/v1/search?q=x", "/config", "/embed/gradio.js", "/nonexistent"]:
        _, headers, _ = raw_get(base, path)
        csp = headers.get("content-security-policy", "")
        assert f"frame-ancestors 'self' {ALLOWED}" in csp, (path, csp)
        assert "default-src 'self'" in csp and "object-src 'none'" in csp
        assert headers.get("x-content-type-options") == "nosniff"


def test_csp_never_allows_other_hosts_for_content():
    csp = content_security_policy([ALLOWED])
    for directive in csp.split("; "):
        if not directive.startswith("frame-ancestors"):
            assert "http" not in directive and "*" not in directive, directive


@pytest.mark.parametrize("path", ["/api/v1/search?q=x", "/config", "/gradio_api/info", "/", "/healthz"])
def test_disallowed_origin_gets_no_cors_header_even_on_a_public_host(base, path):
    # Gradio alone would echo any Origin, with credentials, when the Host is not localhost.
    status, headers, _ = raw_get(base, path, {"Origin": EVIL, "Host": "qa.example.com"})
    assert status != 400  # a well-formed request, answered
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    _, headers, _ = raw_get(base, path, {"Origin": "null", "Host": "qa.example.com"})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


def test_disallowed_preflight_is_refused(base):
    status, headers, _ = raw_get(
        base,
        "/gradio_api/queue/join",
        {"Origin": EVIL, "Access-Control-Request-Method": "POST", "Host": "qa.example.com"},
        method="OPTIONS",
    )
    assert status >= 400
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


def test_allowed_origin_gets_cors_for_itself_only(base):
    _, headers, _ = raw_get(base, "/config", {"Origin": ALLOWED, "Host": "qa.example.com"})
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["access-control-allow-origin"] == ALLOWED
    status, headers, _ = raw_get(
        base,
        "/gradio_api/queue/join",
        {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"},
        method="OPTIONS",
    )
    lower = {k.lower(): v for k, v in headers.items()}
    assert status == 200 and lower["access-control-allow-origin"] == ALLOWED


# --------------------------------------------------------------------------- errors


def test_rest_answers_503_with_a_message_while_not_ready(base):
    status, headers, body = raw_get(base, "/api/v1/search?q=Microsoft")
    assert status == 503 and "retry-after" in {k.lower() for k in headers}
    assert "index" in json.loads(body)["detail"].lower()
    status, _, body = raw_get(base, "/healthz")
    health = json.loads(body)
    assert status == 503 and health["status"] in {"starting", "building", "loading", "error"}
    assert set(health) >= {"status", "index_version", "passages", "model"}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/search?q=", None),
        ("/api/v1/search?q=%20%20", None),
        ("/api/v1/search?q=" + "x" * 2001, None),
        ("/api/v1/search", None),
        ("/api/v1/ask", {"question": ""}),
        ("/api/v1/ask", {"question": "y" * 2001}),
        ("/api/v1/ask", {"question": "ok?", "history": ["z" * 2001]}),
        ("/api/v1/ask", {"history": []}),
        ("/api/v1/ask", {"question": 3}),
    ],
)
def test_unusable_questions_get_422_with_a_plain_message(tmp_path, path, body):
    client = TestClient(create_app(settings_for(tmp_path)))
    response = client.post(path, json=body) if body is not None else client.get(path)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail


def test_500_shows_no_traceback(tmp_path, monkeypatch):
    import qa.retrieval

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals at /srv/qa/secret.py line 3")

    monkeypatch.setattr(qa.retrieval, "retrieve", boom)
    app = create_app(settings_for(tmp_path))
    app.state.qa.state = "ready"
    client = TestClient(app, raise_server_exceptions=False)
    response = client.get("/api/v1/search", params={"q": "Microsoft"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error. The details are in the server's log."}
    assert "Traceback" not in response.text and "secret" not in response.text


def test_openapi_and_docs_are_served_offline(base):
    status, _, body = raw_get(base, "/openapi.json")
    schema = json.loads(body)
    assert status == 200 and {"/api/v1/search", "/api/v1/ask"} <= set(schema["paths"])
    status, _, body = raw_get(base, "/docs")
    assert status == 200 and b"swagger" in body.lower()
    assert b"http://" not in body and b"https://" not in body  # no CDN
    status, _, _ = raw_get(base, "/docs-assets/swagger-ui-bundle.js")
    assert status == 200


def test_gradio_run_history_and_analytics_are_off(base):
    status, _, body = raw_get(base, "/config")
    config = json.loads(body)
    assert status == 200
    assert config["run_history"] is False and config["analytics_enabled"] is False
    assert config["footer_links"] == ["api"]


def test_web_component_script_is_served_from_this_origin(base):
    status, headers, body = raw_get(base, "/embed/gradio.js")
    assert status == 200 and "javascript" in headers["content-type"]
    target = body.decode().split('"')[1]
    assert target.startswith("../assets/index-") and target.endswith(".js")
    status, _, bundle = raw_get(base, "/assets/" + target.removeprefix("../assets/"))
    assert status == 200 and b"gradio-app" in bundle


# --------------------------------------------------------------------------- path traversal

TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/static/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/assets/../../../../../etc/passwd",
    "/assets/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=%2Fetc%2Fpasswd",
    "/gradio_api/file=../../../../../../etc/passwd",
    "/gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/gradio_api/file/etc/passwd",
    "/gradio_api/file//etc/passwd",
    "/file=/etc/passwd",
    "/file=%2Fetc%2Fpasswd",
    "/gradio_api/proxy=http://127.0.0.1/etc/passwd",
    "/embed/../../../etc/passwd",
    "/embed/%2e%2e/%2e%2e/etc/passwd",
    "/docs-assets/../../../../../../etc/passwd",
    "/docs-assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_serves_files(base, path):
    status, _, body = raw_get(base, path)
    assert 400 <= status < 500, (path, status, body[:200])
    assert b"root:" not in body


@pytest.mark.parametrize("name", ["pyproject.toml", "qa/config.py"])
def test_project_files_are_not_served(base, name):
    absolute = str((Path(__file__).parent.parent / name).resolve())
    for path in [f"/gradio_api/file={absolute}", f"/gradio_api/file={name}", f"/static/../../{name}"]:
        status, _, body = raw_get(base, path)
        assert 400 <= status < 500, (path, status)
        assert b"[build-system]" not in body and b"class Settings" not in body


# --------------------------------------------------------------------------- access control

PROTECTED = [
    "/",
    "/config",
    "/gradio_api/info",
    "/embed/gradio.js",
    "/docs",
    "/openapi.json",
    "/api/v1/search?q=x",
]


def test_auth_header_required_everywhere_but_healthz(tmp_path):
    app = create_app(settings_for(tmp_path, auth_header="X-Forwarded-User"))
    with serving(app) as url:
        for path in PROTECTED:
            status, _, body = raw_get(url, path)
            assert status == 401, path
            assert "X-Forwarded-User" in json.loads(body)["detail"]
            status, _, _ = raw_get(url, path, {"X-Forwarded-User": "   "})
            assert status == 401, path
            status, _, _ = raw_get(url, path, {"X-Forwarded-User": "alice"})
            # The REST API is not ready (no index): 503, but past the door.
            assert status == (503 if path.startswith("/api/") else 200), path
        status, _, _ = raw_get(url, "/healthz")
        assert status in (200, 503)


def test_users_file_means_http_basic_auth(tmp_path):
    users = tmp_path / "users"
    users.write_text("# people\nalice:s3cret:with:colons\n\nbob:hunter2\n")
    client = TestClient(create_app(settings_for(tmp_path, users_file=users)))

    def auth(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    for path in ["/", "/config", "/embed/gradio.js"]:
        response = client.get(path)
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Basic")
        assert client.get(path, headers=auth("alice", "wrong")).status_code == 401
        assert client.get(path, headers=auth("mallory", "hunter2")).status_code == 401
        assert client.get(path, headers={"Authorization": "Basic !!!"}).status_code == 401
        assert client.get(path, headers=auth("alice", "s3cret:with:colons")).status_code == 200
        assert client.get(path, headers=auth("bob", "hunter2")).status_code == 200
    assert client.get("/healthz").status_code in (200, 503)


@pytest.mark.parametrize("content", ["", "# nobody\n", "alice\n", ":nopass\n"])
def test_bad_users_file_fails_at_startup(tmp_path, content):
    path = tmp_path / "users"
    path.write_text(content)
    with pytest.raises(ConfigError):
        read_users(path)
    with pytest.raises(ConfigError):
        read_users(tmp_path / "missing")


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_per_client_ip_with_retry_after(tmp_path):
    client = TestClient(create_app(settings_for(tmp_path, rate_limit_per_minute=3)))
    statuses = [client.get("/api/v1/search", params={"q": "x"}).status_code for _ in range(3)]
    assert 429 not in statuses
    response = client.get("/api/v1/search", params={"q": "x"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "3 per minute" in response.json()["detail"]
    assert client.post("/gradio_api/queue/join", json={}).status_code == 429
    # Pages, assets and the health check are not questions: never limited.
    assert client.get("/healthz").status_code != 429
    assert client.get("/config").status_code == 200


def test_rate_limit_window_slides():
    from starlette.applications import Starlette

    now = [1000.0]
    app = Starlette()
    app.add_middleware(RateLimit, per_minute=2, clock=lambda: now[0])
    client = TestClient(app)
    assert client.get("/api/v1/ask").status_code == 404  # passed the limiter (no such route here)
    now[0] += 30
    assert client.get("/api/v1/ask").status_code == 404
    assert client.get("/api/v1/ask").status_code == 429
    now[0] += 31  # the first one is now more than a minute old
    assert client.get("/api/v1/ask").status_code == 404
    assert client.get("/api/v1/ask").status_code == 429


# --------------------------------------------------------------------------- sub-path


def test_served_under_a_sub_path_behind_a_proxy(tmp_path):
    app = create_app(settings_for(tmp_path, root_path="/qa"))
    with serving(app, root_path="/qa") as url:
        # The proxy strips /qa; the app builds its links with it.
        status, _, body = raw_get(url, "/healthz")
        assert status in (200, 503) and "status" in json.loads(body)
        # Without QA_PUBLIC_URL the roots are relative, whatever Host the client sends: the
        # page's is the sub-path (the browser resolves it against the page's address), the
        # config's empty (an embedding page then uses the address in its `src`).
        status, _, body = raw_get(
            url, "/config", {"Host": "intranet.example.com", "X-Forwarded-Proto": "https"}
        )
        assert status == 200 and json.loads(body)["root"] == ""
        status, _, body = raw_get(url, "/", {"Host": "intranet.example.com"})
        assert status == 200 and b'"root":"/qa"' in body and b"intranet.example.com" not in body
        status, _, body = raw_get(url, "/embed/gradio.js")
        assert status == 200 and b"../assets/" in body
        status, _, body = raw_get(url, "/openapi.json")
        assert status == 200 and json.loads(body)["servers"] == [{"url": "/qa"}]
        status, _, body = raw_get(url, "/api/v1/search?q=")
        assert status == 422


def test_settings_reject_wildcard_and_malformed_origins():
    for bad in (["*"], ["intranet.example.com"], ["http://a.example/path"], ["javascript:alert(1)"]):
        with pytest.raises(ValueError):
            Settings(embed_origins=bad)
    assert Settings(embed_origins="http://a.example, https://b.example:8443/").embed_origins == [
        "http://a.example",
        "https://b.example:8443",
    ]
    assert Settings(embed_origins='["http://a.example"]').embed_origins == ["http://a.example"]
    with pytest.raises(ValueError):
        Settings(root_path="qa")


def test_gradio_api_says_why_it_cannot_answer_yet(base):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(base + "/", verbose=False, download_files=False)
    with pytest.raises(AppError, match="cannot answer"):
        client.predict("Microsoft?", [], api_name="/ask")

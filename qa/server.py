"""One ASGI app on one port: the chat UI at `/`, the REST API under `/api/v1`, the script that
embeds the chat in other pages at `/embed/gradio.js`, and `/healthz`.

    from qa.server import create_app
    app = create_app(Settings())          # nothing heavy here: the index loads on startup

The model and the index load in a background thread when the server starts (building the
index from the corpus first if there is none), so the port opens at once; until they are
ready `/healthz` says so and questions get a 503 with a message.

Security, on every response: a Content-Security-Policy (with `frame-ancestors` limited to this
origin and QA_EMBED_ORIGINS), CORS for QA_EMBED_ORIGINS only (replacing Gradio's own permissive
CORS), optional access control (QA_AUTH_HEADER from an SSO proxy, QA_USERS_FILE for HTTP Basic
auth) and an optional per-IP rate limit on questions.
"""

import base64
import binascii
import contextlib
import hmac
import json
import logging
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from qa.config import Settings
from qa.errors import ConfigError, QAError

__all__ = ["Service", "content_security_policy", "create_app", "read_users", "serve"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz"})  # reachable without credentials (load balancers probe it)


# --------------------------------------------------------------------------- readiness


class Service:
    """The server's state: settings, readiness of the index, and the REST concurrency slots."""

    def __init__(self, settings: Settings):
        from qa.api import Slots

        self.settings = settings
        self.slots = Slots(settings.queue_concurrency, settings.queue_max_size)
        self.state = "starting"  # starting → (building →) loading → ready | error
        self.message = ""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load (or first build) the index in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="qa-load-index", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        from qa.index.build import build_index
        from qa.index.format import current_version
        from qa.retrieval import get_engine

        settings = self.settings
        try:
            if current_version(settings.index_dir) is None:
                self.state = "building"
                print(
                    f"No index in {settings.index_dir}: building one from {settings.corpus_dir}.",
                    file=sys.stderr,
                )
                report = build_index(settings.corpus_dir, settings=settings, progress=True)
                print(
                    f"Indexed {report.articles} articles into {report.passages} passages "
                    f"in {report.seconds:.1f} s.",
                    file=sys.stderr,
                )
            self.state = "loading"
            get_engine(settings).warm_up()
            self.state = "ready"
            log.info("Index loaded; ready for questions.")
        except QAError as exc:
            self.state, self.message = "error", str(exc)
            print(f"Error: {exc}", file=sys.stderr)
        except Exception as exc:
            self.state = "error"
            self.message = f"Loading the index failed ({type(exc).__name__}); see the server log."
            log.exception("Loading the index failed")

    def not_ready_reason(self) -> str | None:
        """None when questions can be answered, else a message saying why not."""
        if self.state == "ready":
            return None
        if self.state == "error":
            return f"The index cannot be loaded: {self.message}"
        if self.state == "building":
            return "The index is being built from the corpus. Try again in a minute or two."
        return "The index is still loading. Try again in a moment."

    def ui_status(self) -> tuple[bool, str]:
        """For the chat: (ready, i18n key of the reason)."""
        if self.state == "ready":
            return True, ""
        if self.state == "error":
            return False, "unavailable"
        return False, "building" if self.state == "building" else "loading"

    def health(self) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "status": "ok" if self.state == "ready" else self.state,
            "index_version": None,
            "passages": None,
            "model": self.settings.model,
        }
        if self.state == "ready":
            from qa.retrieval import get_engine

            try:
                index = get_engine(self.settings).index()
                body["index_version"] = index.version
                body["passages"] = len(index)
                body["model"] = index.manifest.model.name
            except QAError as exc:
                body.update(status="error", message=str(exc))
                return 503, body
            return 200, body
        if self.message:
            body["message"] = self.message
        return 503, body


# --------------------------------------------------------------------------- security middleware


def _route_path(scope: Scope) -> str:
    """The request path without the root path (QA_ROOT_PATH), as the routes see it."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def content_security_policy(embed_origins: list[str]) -> str:
    """The CSP of every response. Gradio needs inline scripts and styles, and `eval` for its
    HTML component's templates; everything else comes from this origin only."""
    ancestors = " ".join(["'self'", *embed_origins])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self' data:",
            "media-src 'self' data: blob:",
            "connect-src 'self'",
            "worker-src 'self' blob:",
            "frame-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            f"frame-ancestors {ancestors}",
        ]
    )


class SecurityHeaders:
    """Adds the CSP and a few hardening headers to every HTTP response."""

    def __init__(self, app: ASGIApp, csp: str):
        self.app = app
        self.headers = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        self.names = {name for name, _ in self.headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.names]
                message["headers"] = kept + self.headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def read_users(path: Path) -> dict[str, str]:
    """`user:password` lines (blank lines and `#` comments ignored) → {user: password}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"QA_USERS_FILE {path} cannot be read ({exc.strerror}).") from None
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ConfigError(f"QA_USERS_FILE {path} line {number} is not `user:password`.")
        users[user] = password
    if not users:
        raise ConfigError(f"QA_USERS_FILE {path} lists no users; add `user:password` lines.")
    return users


class AccessControl:
    """Every route but /healthz requires the SSO proxy's header and/or HTTP Basic credentials."""

    def __init__(self, app: ASGIApp, header: str | None, users: dict[str, str] | None):
        self.app = app
        self.header = header.lower().encode("latin-1") if header else None
        self.header_name = header
        self.users = {u: p.encode() for u, p in (users or {}).items()}

    def _basic_ok(self, value: bytes | None) -> bool:
        if not value or value[:6].lower() != b"basic ":
            return False
        try:
            user, _, password = base64.b64decode(value[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = self.users.get(user)
        # Compare even for an unknown user, so timing does not tell which users exist.
        ok = hmac.compare_digest(password.encode(), expected if expected is not None else b"\0" * 32)
        return ok and expected is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _route_path(scope) in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.header is not None and not headers.get(self.header, b"").strip():
            await self._deny(
                scope, send, f"Sign-in required: the {self.header_name} header is missing.", None
            )
            return
        if self.users and not self._basic_ok(headers.get(b"authorization")):
            await self._deny(scope, send, "Sign-in required.", 'Basic realm="qa", charset="UTF-8"')
            return
        await self.app(scope, receive, send)

    async def _deny(self, scope: Scope, send: Send, message: str, challenge: str | None) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _send_json(
            send, 401, {"detail": message}, {"WWW-Authenticate": challenge} if challenge else None
        )


def _is_question(method: str, path: str) -> bool:
    """Requests that ask a question: the REST calls and Gradio's event submissions."""
    if path in ("/api/v1/ask", "/api/v1/search"):
        return True
    if method != "POST" or not path.startswith("/gradio_api/"):
        return False
    rest = path[len("/gradio_api/") :]
    return rest.startswith(("queue/join", "call/", "run/", "api/"))


class RateLimit:
    """At most `per_minute` questions per client IP in any 60 seconds; 429 with Retry-After."""

    def __init__(self, app: ASGIApp, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.per_minute = per_minute
        self.clock = clock
        self.seen: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_question(scope["method"], _route_path(scope)):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        now = self.clock()
        with self.lock:
            times = self.seen.setdefault(client, deque())
            while times and times[0] <= now - 60:
                times.popleft()
            if len(times) >= self.per_minute:
                wait = max(1, math.ceil(times[0] + 60 - now))
            else:
                times.append(now)
                wait = 0
            if len(self.seen) > 10_000:  # forget idle clients
                for key in [k for k, v in self.seen.items() if not v or v[-1] <= now - 60]:
                    del self.seen[key]
        if wait:
            await _send_json(
                send,
                429,
                {
                    "detail": f"Too many questions: the limit is {self.per_minute} per minute. "
                    f"Try again in {wait} s."
                },
                {"Retry-After": str(wait)},
            )
            return
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------- the app


def _web_component_script() -> str:
    """Gradio's own web-component loader, pointing at the bundle this server already serves."""
    import gradio

    loader = Path(gradio.__file__).parent / "templates" / "frontend" / "gradio.js"
    # The loader imports "./assets/index-<hash>.js" relative to itself; we serve it from
    # /embed/, and Gradio serves the bundle at /assets/.
    return loader.read_text(encoding="utf-8").replace('"./assets/', '"../assets/')


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the `fastapi-offline` package (no CDN), or None without it."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    return Path(fastapi_offline.__file__).parent / "static"


def create_app(settings: Settings | None = None) -> Any:
    """The FastAPI app: UI, REST API, embed script and health check. Cheap: nothing loads here;
    the index loads (or is built) in a background thread at startup."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from qa import __version__
    from qa.api import install_error_handlers, router
    from qa.i18n import LABELS
    from qa.ui import build_ui, css, head_html, theme

    settings = settings or Settings()
    users = read_users(settings.users_file) if settings.users_file else None
    service = Service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield

    title = "News Q&A"
    app = FastAPI(
        title=title,
        version=__version__,
        description="Multilingual question answering over a news corpus, with cited answers. "
        'Errors are JSON `{"detail": message}`.',
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.qa = service
    install_error_handlers(app)
    app.include_router(router)

    @app.get("/healthz", tags=["service"], summary="Readiness: 200 once questions can be answered")
    def healthz() -> JSONResponse:
        status, body = service.health()
        return JSONResponse(body, status_code=status)

    @app.get("/embed/gradio.js", include_in_schema=False)
    def embed_script() -> Response:
        return Response(
            _web_component_script(),
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )

    swagger = _swagger_assets()
    if swagger is not None:
        from fastapi.openapi.docs import get_swagger_ui_html
        from fastapi.staticfiles import StaticFiles

        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        if swagger is None:
            return HTMLResponse(
                "<!doctype html><title>API</title><h1>News Q&amp;A API</h1><p>The interactive "
                "documentation needs the <code>fastapi-offline</code> package. The OpenAPI schema "
                'is at <a href="openapi.json">openapi.json</a>.</p>'
            )
        # Relative URLs: right under a sub-path (QA_ROOT_PATH) too.
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{title} - API",
            swagger_js_url="docs-assets/swagger-ui-bundle.js",
            swagger_css_url="docs-assets/swagger-ui.css",
            swagger_favicon_url="docs-assets/favicon.png",
        )

    blocks = build_ui(settings, service.ui_status)
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        root_path=settings.root_path or None,
        ssr_mode=False,
        run_history=False,
        footer_links=["api"],
        show_error=False,  # gr.Error messages still show; other exceptions stay in the log
        theme=theme(),
        css=css(),
        head=head_html(),
        i18n=gr.I18n(**LABELS),
        mcp_server=False,
        pwa=False,
        enable_monitoring=False,
    )

    # Outermost first: security headers on everything (401 and 429 included), then CORS (so
    # preflights and errors carry it), then access control, then the rate limit.
    if settings.rate_limit_per_minute:
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)
    if settings.auth_header or users:
        app.add_middleware(AccessControl, header=settings.auth_header, users=users)
    # Our CORS policy replaces Gradio's (which echoes any Origin with credentials when served on
    # a non-localhost host): Gradio steps aside when the parent app has a CORSMiddleware.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.embed_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
        allow_headers=["*"],
        max_age=600,
    )
    app.add_middleware(SecurityHeaders, csp=content_security_policy(settings.embed_origins))
    return app


def serve(settings: Settings | None = None, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Run the app with uvicorn until Ctrl-C."""
    import uvicorn

    settings = settings or Settings()
    app = create_app(settings)
    shown = "localhost" if host in ("0.0.0.0", "127.0.0.1", "::") else host
    print(f"Chat UI:  http://{shown}:{port}{settings.root_path}/", file=sys.stderr)
    print(f"REST API: http://{shown}:{port}{settings.root_path}/docs", file=sys.stderr)
    if not (settings.auth_header or settings.users_file):
        print(
            "Access: open to anyone who can reach this port (set QA_AUTH_HEADER or QA_USERS_FILE "
            "to require sign-in).",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        root_path=settings.root_path,
        log_level=os.environ.get("QA_LOG_LEVEL", "info").lower(),
        timeout_graceful_shutdown=5,
    )

"""One ASGI app on one port: the chat UI at `/`, the REST API under `/api/v1`, the script that
embeds the chat in other pages at `/embed/gradio.js`, and `/healthz`.

    from qa.serve.app import create_app
    app = create_app(Settings())          # nothing heavy here: the index loads on startup

The model and the index load in a background thread when the server starts (building the
index from the corpus first if there is none), so the port opens at once; until they are
ready `/healthz` says so and questions get a 503 with a message.

Security, on every response: a Content-Security-Policy (with `frame-ancestors` limited to this
origin and QA_EMBED_ORIGINS), CORS for QA_EMBED_ORIGINS only (replacing Gradio's own permissive
CORS), optional access control (QA_AUTH_HEADER from an SSO proxy, QA_USERS_FILE for HTTP Basic
auth) and an optional per-IP rate limit on questions.

Limits, on every route: Gradio's upload, file and other unused routes closed (404); bodies of
at most QA_MAX_BODY_BYTES, checked before anything parses them; one admission bound on the
questions of the REST API, the Gradio API and the chat (QA_QUEUE_CONCURRENCY answered at once,
QA_QUEUE_MAX_SIZE waiting, none longer than QA_QUEUE_WAIT_SECONDS), decided on the event loop
before a worker thread is taken. The page's links come from QA_PUBLIC_URL or QA_ROOT_PATH,
never from a request's Host header; responses never show the server's paths.
"""

import asyncio
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

__all__ = [
    "CLOSED_PREFIXES",
    "Service",
    "content_security_policy",
    "create_app",
    "is_admitted",
    "is_closed",
    "read_users",
    "serve",
    "waited_seconds",
]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz"})  # reachable without credentials (load balancers probe it)
RETRY_AFTER = "5"  # seconds, on a "busy" 503
RECEIVED_KEY = "qa.received"  # perf_counter() when the request reached the app


# --------------------------------------------------------------------------- readiness


class Service:
    """The server's state: settings, readiness of the index, and the one admission bound on
    questions (REST API, Gradio API and chat alike)."""

    def __init__(self, settings: Settings):
        from qa.serve.api import Admission

        self.settings = settings
        self.admission = Admission(
            settings.queue_concurrency, settings.queue_max_size, settings.queue_wait_seconds
        )
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
        """(status, body) of /healthz: 200 once questions can be answered, else 503 and why."""
        from qa.serve.api import public_message

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
                body.update(status="error", message=public_message(str(exc), self.settings))
                return 503, body
            return 200, body
        if self.message:
            body["message"] = public_message(self.message, self.settings)
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
        scope[RECEIVED_KEY] = time.perf_counter()  # for the Server-Timing of a "busy" 503

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
    """Requests that ask a question: the REST calls, Gradio's event submissions, the chat
    completions and the MCP requests (every one: a tool call comes with a few others)."""
    if path in ("/api/v1/ask", "/api/v1/search"):
        return True
    if method == "POST" and (path in MCP_PATHS or path == "/v1/chat/completions"):
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


# --------------------------------------------------------------------------- closed routes, bodies

# Gradio routes this app never uses, closed (404) whoever asks: file upload and serving (the
# chat has no file component, and an open upload would let anyone host files on this origin),
# the proxy, media streams, component servers, run history, monitoring, and the direct
# (queue-less) prediction routes, which would bypass the admission bound.
CLOSED_PREFIXES = (
    "/gradio_api/upload",
    "/gradio_api/file=",
    "/gradio_api/file/",
    "/file=",
    "/file/",
    "/gradio_api/proxy=",
    "/proxy=",
    "/gradio_api/stream/",
    "/gradio_api/process_recording",
    "/gradio_api/component_server",
    "/gradio_api/vibe-",
    "/gradio_api/undo-vibe-edit",
    "/gradio_api/run-history",
    "/gradio_api/runs",
    "/gradio_api/run/",
    "/gradio_api/api/",
    "/gradio_api/dev/",
    "/gradio_api/mcp",
    "/monitoring",
    "/gradio_api/monitoring",
)


_CLOSED_EXACT = frozenset(prefix.rstrip("/=") for prefix in CLOSED_PREFIXES)  # "/gradio_api/run"

# Gradio's MCP server (the `ask` and `search` tools), open under /gradio_api/mcp: its streamable
# HTTP transport only, at these exact paths, and for POST only (the server is stateless: no
# stream for a session to GET or DELETE; a GET would get Gradio's landing page, which shows
# the request's Host header). Its SSE transport (/sse, /messages/, a stream per client held
# open) and its /schema stay closed.
MCP_PATHS = frozenset({"/gradio_api/mcp", "/gradio_api/mcp/", "/gradio_api/mcp/http", "/gradio_api/mcp/http/"})


def is_closed(path: str, method: str = "POST") -> bool:
    """True for the Gradio routes this app does not use (see CLOSED_PREFIXES and MCP_PATHS)."""
    if path in MCP_PATHS:
        return method != "POST"
    return path.startswith(CLOSED_PREFIXES) or path.rstrip("/") in _CLOSED_EXACT


class ClosedRoutes:
    """404 for every route in CLOSED_PREFIXES, with or without credentials."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and is_closed(_route_path(scope), scope.get("method", "GET")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _send_json(send, 404, {"detail": "Not found."})
            return
        await self.app(scope, receive, send)


BODY_READ_SECONDS = 30  # a client that takes longer to send its (small) body is dropped


class BodyLimit:
    """At most `limit` bytes of request body on every route, enforced before anything parses it:
    a larger Content-Length is refused without reading, and the body itself is read (counting
    its bytes) before the route sees it, so that a missing or false Content-Length cannot get
    past either. 413 with a JSON message beyond; 408 for a body that does not arrive."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    def _too_large(self) -> dict[str, str]:
        return {
            "detail": f"The request body is larger than {self.limit} bytes (QA_MAX_BODY_BYTES). "
            "Send a shorter question or fewer earlier questions."
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body at all (HTTP/1.1 framing)
            return
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, {"detail": "The Content-Length header is not a number."})
                return
            if declared > self.limit:
                await _send_json(send, 413, self._too_large(), {"Connection": "close"})
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(BODY_READ_SECONDS):  # no task per read, unlike wait_for
                    message = await receive()
            except TimeoutError:
                await _send_json(send, 408, {"detail": "The request body did not arrive in time."})
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await _send_json(send, 413, self._too_large(), {"Connection": "close"})
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class GradioArguments:
    """The Gradio API's `data` (`/gradio_api/call/ask`, `/call/search` and their queue/join
    form) checked for its count before Gradio sees it: Gradio refuses a short list with a
    traceback in the log and `{"error": null}` for the client. Optional trailing arguments
    left out get their defaults (`["Who?"]` is a whole `/ask`); anything else is a 422 that
    says what is expected. The values themselves are checked by the API functions (qa.serve.ui).

    The chat's own events (queue/join with the `fn_index` of a function of components) are
    checked the way Gradio will: one value per input, each valid for its component's data
    model; a malformed one is a 422 naming the value, instead of a traceback and
    `{"error": null}`."""

    def __init__(self, app: ASGIApp, blocks: Any):
        from qa.serve.ui import API_ARGUMENTS

        self.app = app
        self.arguments = API_ARGUMENTS
        self.by_index = {
            index: fn.api_name for index, fn in blocks.fns.items() if fn.api_name in API_ARGUMENTS
        }
        self.inputs = {
            index: list(fn.inputs)
            for index, fn in blocks.fns.items()
            if fn.api_name not in API_ARGUMENTS and fn.inputs
        }

    def _check_components(self, index: int, data: Any) -> str | None:
        """None if `data` fits the inputs of function `index`, else what is wrong."""
        from pydantic import ValidationError

        from qa.serve.api import describe_problems

        inputs = self.inputs[index]
        if not isinstance(data, list) or len(data) != len(inputs):
            got = f"{len(data)} values" if isinstance(data, list) else type(data).__name__
            return f"`data` must be a list of {len(inputs)} values, not {got}."
        for position, (block, value) in enumerate(zip(inputs, data, strict=True)):
            model = getattr(block, "data_model", None)
            if value is None or getattr(block, "stateful", False) or model is None:
                continue
            try:
                model.model_validate(value, context={"validate_meta": True})
            except ValidationError as exc:
                return f"data[{position}] ({type(block).__name__}): {describe_problems(exc.errors())}"
        return None

    def _api_name(self, path: str, payload: Any) -> str | None:
        if path.startswith("/gradio_api/call/"):
            name = path[len("/gradio_api/call/") :].strip("/")
            return name if name in self.arguments else None
        if path.rstrip("/") == "/gradio_api/queue/join" and isinstance(payload, dict):
            index = payload.get("fn_index")
            return self.by_index.get(index) if isinstance(index, int) else None
        return None

    def _complete(self, name: str, data: Any) -> list[Any] | str:
        """`data` with its defaults, or the message that says why it cannot be."""
        spec = self.arguments[name]
        required = sum(1 for _, default in spec if default is None)
        usage = ", ".join(
            f"{arg}" if default is None else f"{arg} (default {default!r})" for arg, default in spec
        )
        if not isinstance(data, list) or not required <= len(data) <= len(spec):
            got = f"{len(data)} values" if isinstance(data, list) else type(data).__name__
            return f"/{name} takes `data`: a list of {required} to {len(spec)} values [{usage}], not {got}."
        return data + [default for _, default in spec[len(data) :]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if not path.startswith(("/gradio_api/call/", "/gradio_api/queue/join")):
            await self.app(scope, receive, send)
            return
        message = await receive()  # the whole body: BodyLimit has read it already
        body = message.get("body", b"")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None  # Gradio answers malformed JSON itself, with a 422
        name = self._api_name(path, payload)
        index = payload.get("fn_index") if isinstance(payload, dict) else None
        if name is None and path.rstrip("/") == "/gradio_api/queue/join" and index in self.inputs:
            problem = self._check_components(index, payload.get("data"))  # type: ignore[union-attr]
            if problem is not None:
                log.info("Gradio event refused: %s", problem)
                await _send_json(send, 422, {"detail": problem})
                return
        if name is not None and isinstance(payload, dict):
            data = self._complete(name, payload.get("data"))
            if isinstance(data, str):
                log.info("Gradio API %s refused: %s", path, data)
                await _send_json(send, 422, {"detail": data})
                return
            payload["data"] = data
            body = json.dumps(payload).encode()
            headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
            scope["headers"] = [*headers, (b"content-length", str(len(body)).encode())]
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --------------------------------------------------------------------------- admission

# Routes answered on a worker thread (the chat completions stream an answer computed first).
ADMITTED_PATHS = frozenset({"/api/v1/ask", "/api/v1/search", "/v1/chat/completions"})
RECEIVED_HEADER = b"x-qa-received"  # when a Gradio question arrived (monotonic), for its deadline
ADMITTED_KEY = "qa.admitted"  # in the scope of a request holding a slot (an MCP tool call)


def is_admitted(request: Any) -> bool:
    """True when `request` (a gr.Request or a Starlette request) already holds a slot of the
    admission bound: an MCP tool call, which Admit admitted before Gradio ran the tool."""
    inner = getattr(request, "request", request)
    scope = getattr(inner, "scope", None)
    return isinstance(scope, dict) and scope.get(ADMITTED_KEY) is True


def _is_tool_call(body: bytes) -> bool:
    """True if an MCP request (JSON-RPC, one message or a batch) calls a tool."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False  # the MCP server answers malformed JSON itself
    messages = payload if isinstance(payload, list) else [payload]
    return any(isinstance(m, dict) and m.get("method") == "tools/call" for m in messages)


def _is_gradio_question(method: str, path: str) -> bool:
    return method == "POST" and path.startswith(("/gradio_api/queue/join", "/gradio_api/call/"))


class Admit:
    """The admission bound (qa.serve.api.Admission) in front of the routes that do work.

    REST questions wait for a slot here, on the event loop, before a worker thread is taken, so
    that past QA_QUEUE_MAX_SIZE waiting a question gets a 503 at once, and one that waits longer
    than QA_QUEUE_WAIT_SECONDS gets a 503 then. Gradio questions are admitted by Gradio's queue
    (which asks the same bound) and wait for a slot on their worker: here they are only stamped
    with their arrival time, and a 503 of Gradio's gets a Retry-After. The chat completions
    (/v1) are admitted like the REST questions, and so is an MCP request that calls a tool: its
    tool then runs in Gradio holding that slot (`is_admitted`).
    """

    def __init__(self, app: ASGIApp, admission: Any):
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = _route_path(scope), scope["method"]
        scope.pop(ADMITTED_KEY, None)
        if method == "POST" and path in MCP_PATHS:
            await self._mcp(scope, receive, send)
            return
        if path in ADMITTED_PATHS:
            await self._admitted(scope, receive, send, path)
            return
        if _is_gradio_question(method, path):
            headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != RECEIVED_HEADER]
            scope["headers"] = [*headers, (RECEIVED_HEADER, repr(time.monotonic()).encode())]

            async def send_with_retry(message: Message) -> None:
                if message["type"] == "http.response.start" and message["status"] == 503:
                    headers = list(message.get("headers", []))
                    if b"retry-after" not in {k.lower() for k, _ in headers}:
                        headers.append((b"retry-after", RETRY_AFTER.encode()))
                    headers.append((b"server-timing", _server_timing(scope).encode()))
                    message["headers"] = headers
                await send(message)

            await self.app(scope, receive, send_with_retry)
            return
        await self.app(scope, receive, send)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Run the request holding a slot; a 503 (JSON in the route's own error shape) if none
        comes in time."""
        from qa.errors import BusyError

        try:
            await self.admission.acquire()
        except BusyError as exc:
            headers = {"Retry-After": RETRY_AFTER, "Server-Timing": _server_timing(scope)}
            body: dict[str, Any] = {"detail": str(exc)}
            if path.startswith("/v1/"):
                from qa.serve.openai_api import error_body

                body = error_body(str(exc), "server_error", "busy")
            await _send_json(send, 503, body, headers)
            return
        scope[ADMITTED_KEY] = True
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.release()

    async def _mcp(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An MCP tool call holds a slot while the tool runs; the protocol's other requests
        (initialize, tools/list, notifications) need none."""
        message = await receive()  # the whole body: BodyLimit has read it already
        body = message.get("body", b"")
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if _is_tool_call(body):
            await self._admitted(scope, replay, send, "")
        else:
            await self.app(scope, replay, send)


def _server_timing(scope: Scope) -> str:
    """`Server-Timing` of a refusal: the milliseconds from the request reaching the app to its
    answer, so that a client can tell the server's own time from the network's and the CPU's."""
    started = scope.get(RECEIVED_KEY)
    spent = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    return f"app;dur={spent:.2f}"


def waited_seconds(headers: Any) -> float:
    """Seconds since the Gradio question with these request headers arrived (0 if unknown)."""
    try:
        return max(0.0, time.monotonic() - float(headers.get(RECEIVED_HEADER.decode(), "")))
    except (TypeError, ValueError, AttributeError):
        return 0.0


def _share_gradio_queue(blocks: Any, admission: Any) -> None:
    """Make Gradio's queue part of the one bound: its waiting events count as waiting
    questions, and it turns new events away ("queue full", a 503) when the bound is reached."""
    from qa.errors import BusyError

    queue = blocks._queue
    push = queue.push

    async def push_if_room(body: Any, request: Any, username: Any) -> tuple[bool, Any, str]:
        try:
            admission.check_room()
        except BusyError as exc:
            return False, str(exc), "queue_full"
        return await push(body, request, username)

    def queued() -> int:
        try:
            return len(queue)
        except RuntimeError:  # its dict grew on the event loop while a worker thread counted
            return 0

    queue.push = push_if_room
    admission.extra_waiting = queued


def _mcp_results_as_json(blocks: Any) -> None:
    """Gradio's MCP server gives a tool's result as `str(value)`, a Python repr for a dict or a
    list; the `ask` and `search` tools give JSON instead, which an agent (or a program) reads."""
    server = getattr(blocks, "mcp_server_obj", None)
    if server is None:
        return
    from mcp import types

    original = server.postprocess_output_data

    def postprocess(data: Any, root_url: str) -> list[Any]:
        if all(isinstance(value, dict | list) for value in data):
            return [types.TextContent(type="text", text=json.dumps(value, ensure_ascii=False)) for value in data]
        return original(data, root_url)

    server.postprocess_output_data = postprocess


# --------------------------------------------------------------------------- public origin

PUBLIC_ROOT_KEY = "qa.public_root"


def _install_public_root() -> None:
    """Gradio builds the links of its page and config from the request's Host and
    X-Forwarded-Host headers, which a client can set to anything (and a cache would keep).
    Where PublicRoot has put a root in the request's scope, that root is used instead."""
    from gradio import route_utils

    original = route_utils.get_root_url
    if getattr(original, "qa_public_root", False):
        return

    def get_root_url(request: Any, route_path: str, root_path: str | None) -> str:
        root = request.scope.get(PUBLIC_ROOT_KEY) if hasattr(request, "scope") else None
        if root is None:
            return original(request=request, route_path=route_path, root_path=root_path)
        return root(route_path)

    get_root_url.qa_public_root = True  # type: ignore[attr-defined]
    route_utils.get_root_url = get_root_url


class PublicRoot:
    """Puts this server's public root (QA_PUBLIC_URL, or QA_ROOT_PATH) in every request's scope.

    With QA_PUBLIC_URL, that address. Without it, relative roots: the page's is QA_ROOT_PATH
    (the browser resolves it against the address it loaded the page from) and the config's is
    empty (a page embedding the chat then uses the address it was given in `src`)."""

    def __init__(self, app: ASGIApp, public_url: str | None, root_path: str):
        self.app = app
        self.public_url = public_url
        self.root_path = root_path

    def root(self, route_path: str) -> str:
        if self.public_url:
            return self.public_url
        page = not route_path.startswith(("/config", "/gradio_api", "/info", "/login", "/logout"))
        # "/." rather than "/" or "": the page resolves it to its own origin, ignoring its query
        # string ("" would keep `?__theme=dark` in every API address), and the few places that
        # glue a path on as text get "/./static", not "//static" (another host).
        return (self.root_path or "/.") if page else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PUBLIC_ROOT_KEY] = self.root
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
    # Gradio's queue summarises its last 10,000 events with pandas after every event, for a
    # monitoring page this app does not serve: under load that held the GIL for tens of ms at a
    # time, and delayed every other request. Summarised once in a million events instead.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000000")
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from qa import __version__
    from qa.i18n import LABELS
    from qa.serve.api import install_error_handlers, router
    from qa.serve.openai_api import OpenAIErrorShape
    from qa.serve.openai_api import router as openai_router
    from qa.serve.ui import build_ui, css, head_html, theme

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
    app.include_router(openai_router)

    health_threads: list[Any] = []  # its own limiter, made on the event loop at the first call

    @app.get("/healthz", tags=["service"], summary="Readiness: 200 once questions can be answered")
    async def healthz() -> JSONResponse:
        # Async, and on a thread of its own limiter: it never waits behind questions for one of
        # the worker threads (reading the live index may touch the disk, hence not on the loop).
        import anyio

        if not health_threads:
            health_threads.append(anyio.CapacityLimiter(2))
        status, body = await anyio.to_thread.run_sync(service.health, limiter=health_threads[0])
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

    blocks = build_ui(settings, service.ui_status, service.admission)
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
        mcp_server=True,  # the tools `ask` and `search` at /gradio_api/mcp (see MCP_PATHS)
        pwa=False,
        enable_monitoring=False,
    )

    _share_gradio_queue(blocks, service.admission)
    _mcp_results_as_json(blocks)
    _install_public_root()

    # Outermost first: security headers on everything (401 and 429 included), then CORS (so
    # preflights and errors carry it), the public root, the shape of /v1 errors, the closed
    # routes, access control, the rate limit, the body limit (the body is read before a slot is
    # taken) and admission.
    app.add_middleware(Admit, admission=service.admission)
    app.add_middleware(GradioArguments, blocks=blocks)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.rate_limit_per_minute:
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)
    if settings.auth_header or users:
        app.add_middleware(AccessControl, header=settings.auth_header, users=users)
    app.add_middleware(ClosedRoutes)
    app.add_middleware(OpenAIErrorShape)  # /v1 errors in OpenAI's shape, the ones above included
    app.add_middleware(PublicRoot, public_url=settings.public_url, root_path=settings.root_path)
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

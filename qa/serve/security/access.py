"""Who may reach what: open and closed routes (`ClosedRoutes`), sign-in (`AccessControl`:
QA_AUTH_HEADER from an SSO proxy, QA_USERS_FILE for HTTP Basic auth) and the per-IP limit on
questions (`RateLimit`).
"""

import base64
import binascii
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from qa.errors import ConfigError
from qa.serve.asgi import ASGIApp, Receive, Scope, Send, route_path, send_json

__all__ = [
    "CLOSED_PREFIXES",
    "MCP_PATHS",
    "OPEN_PATHS",
    "AccessControl",
    "ClosedRoutes",
    "RateLimit",
    "is_closed",
    "read_users",
]

OPEN_PATHS = frozenset({"/healthz"})  # reachable without credentials (load balancers probe it)


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
        if scope["type"] in ("http", "websocket") and is_closed(route_path(scope), scope.get("method", "GET")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_json(send, 404, {"detail": "Not found."})
            return
        await self.app(scope, receive, send)


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
        if scope["type"] not in ("http", "websocket") or route_path(scope) in OPEN_PATHS:
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
        await send_json(
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
        if scope["type"] != "http" or not _is_question(scope["method"], route_path(scope)):
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
            await send_json(
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

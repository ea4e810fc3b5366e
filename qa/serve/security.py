"""The app's security middleware, each an ASGI class added by `create_app`:

- `SecurityHeaders`: a Content-Security-Policy (`frame-ancestors` limited to this origin and
  QA_EMBED_ORIGINS) and a few hardening headers on every response;
- `AccessControl`: optional sign-in (QA_AUTH_HEADER from an SSO proxy, QA_USERS_FILE for HTTP
  Basic auth);
- `RateLimit`: an optional per-IP limit on questions;
- `ClosedRoutes`: Gradio's upload, file and other unused routes closed (404);
- `BodyLimit`: bodies of at most QA_MAX_BODY_BYTES, checked before anything parses them;
- `GradioArguments`: the arguments of Gradio API calls checked before Gradio runs them;
- `PublicRoot`: the page's links from QA_PUBLIC_URL or QA_ROOT_PATH, never from a request's
  Host header.
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa.errors import ConfigError
from qa.serve.asgi import (
    RECEIVED_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    replaying,
    route_path,
    send_json,
)

__all__ = [
    "BODY_READ_SECONDS",
    "CLOSED_PREFIXES",
    "MCP_PATHS",
    "OPEN_PATHS",
    "AccessControl",
    "BodyLimit",
    "ClosedRoutes",
    "GradioArguments",
    "PublicRoot",
    "RateLimit",
    "SecurityHeaders",
    "content_security_policy",
    "install_public_root",
    "is_closed",
    "read_users",
]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})  # reachable without credentials (load balancers probe it)


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
        if scope["type"] in ("http", "websocket") and is_closed(route_path(scope), scope.get("method", "GET")):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_json(send, 404, {"detail": "Not found."})
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
                await send_json(send, 400, {"detail": "The Content-Length header is not a number."})
                return
            if declared > self.limit:
                await send_json(send, 413, self._too_large(), {"Connection": "close"})
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(BODY_READ_SECONDS):  # no task per read, unlike wait_for
                    message = await receive()
            except TimeoutError:
                await send_json(send, 408, {"detail": "The request body did not arrive in time."})
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await send_json(send, 413, self._too_large(), {"Connection": "close"})
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, replaying(b"".join(chunks), receive), send)


class GradioArguments:
    """The Gradio API's `data` (`/gradio_api/call/ask`, `/call/search` and their queue/join
    form) checked for its count before Gradio sees it: Gradio refuses a short list with a
    traceback in the log and `{"error": null}` for the client. Optional trailing arguments
    left out get their defaults (`["Who?"]` is a whole `/ask`); anything else is a 422 that
    says what is expected. The values themselves are checked by the API functions (qa.serve.ui).

    The chat's own events (queue/join with the `fn_index` of a function of components) are
    checked the way Gradio will: one value per input, each valid for its component's data
    model; a malformed one is a 422 naming the value, instead of a traceback and
    `{"error": null}`.

    `chat` is the chat's slot (qa.serve.chat.ChatSlot): its Blocks are read once built; until then
    the slot itself answers these routes (a 503, the chat is starting)."""

    def __init__(self, app: ASGIApp, chat: Any):
        from qa.serve.ui import API_ARGUMENTS

        self.app = app
        self.chat = chat
        self.arguments = API_ARGUMENTS
        self.by_index: dict[int, str] = {}
        self.inputs: dict[int, list[Any]] = {}
        self._read: Any = None  # the Blocks whose functions by_index and inputs describe

    def _read_blocks(self) -> bool:
        """True once the chat's Blocks are built (and their functions read)."""
        blocks = self.chat.blocks
        if blocks is None:
            return False
        if blocks is not self._read:
            self.by_index = {
                index: fn.api_name for index, fn in blocks.fns.items() if fn.api_name in self.arguments
            }
            self.inputs = {
                index: list(fn.inputs)
                for index, fn in blocks.fns.items()
                if fn.api_name not in self.arguments and fn.inputs
            }
            self._read = blocks
        return True

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
        path = route_path(scope)
        if not path.startswith(("/gradio_api/call/", "/gradio_api/queue/join")) or not self._read_blocks():
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
                await send_json(send, 422, {"detail": problem})
                return
        if name is not None and isinstance(payload, dict):
            data = self._complete(name, payload.get("data"))
            if isinstance(data, str):
                log.info("Gradio API %s refused: %s", path, data)
                await send_json(send, 422, {"detail": data})
                return
            payload["data"] = data
            body = json.dumps(payload).encode()
            headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
            scope["headers"] = [*headers, (b"content-length", str(len(body)).encode())]
        await self.app(scope, replaying(body, receive), send)


# --------------------------------------------------------------------------- public origin

PUBLIC_ROOT_KEY = "qa.public_root"


def install_public_root() -> None:
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

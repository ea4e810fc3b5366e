"""What every response tells the browser: the Content-Security-Policy and hardening headers
(`SecurityHeaders`), and the page's public root (`PublicRoot`), never taken from a request's
Host header.
"""

import time
from typing import Any

from qa.serve.asgi import RECEIVED_KEY, ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "PUBLIC_ROOT_KEY",
    "PublicRoot",
    "SecurityHeaders",
    "content_security_policy",
    "install_public_root",
]


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

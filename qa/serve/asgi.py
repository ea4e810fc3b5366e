"""What every middleware of the app shares: the ASGI types, the request path as the routes see
it, a JSON reply, and the keys the middlewares leave in a request's scope for each other."""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "RECEIVED_KEY",
    "RETRY_AFTER",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "replaying",
    "route_path",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RETRY_AFTER = "5"  # seconds, on a "busy" 503
RECEIVED_KEY = "qa.received"  # perf_counter() when the request reached the app


def route_path(scope: Scope) -> str:
    """The request path without the root path (QA_ROOT_PATH), as the routes see it."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
    """Answer the request with `body` as JSON, `status` and extra `headers`."""
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app `body` (already read by a middleware) as one message, then
    hands over to the connection's own `receive` (for the disconnect that may follow)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

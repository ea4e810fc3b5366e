"""The one admission bound (qa.serve.api.Admission) in front of the routes that do work: the
`Admit` middleware, and Gradio's queue made part of the same bound (`share_gradio_queue`).

Questions of the REST API, the Gradio API, the chat, the chat completions and MCP tool calls are
admitted here, on the event loop, before a worker thread is taken: QA_QUEUE_CONCURRENCY
answered at once, QA_QUEUE_MAX_SIZE waiting, none longer than QA_QUEUE_WAIT_SECONDS.
"""

import json
import time
from typing import Any

from qa.serve.asgi import (
    RECEIVED_KEY,
    RETRY_AFTER,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    replaying,
    route_path,
    send_json,
)
from qa.serve.security import MCP_PATHS

__all__ = [
    "ADMITTED_KEY",
    "ADMITTED_PATHS",
    "Admit",
    "is_admitted",
    "share_gradio_queue",
    "waited_seconds",
]

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
        path, method = route_path(scope), scope["method"]
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
            await send_json(send, 503, body, headers)
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
        replay = replaying(body, receive)
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


def share_gradio_queue(blocks: Any, admission: Any) -> None:
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

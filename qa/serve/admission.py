"""The one admission bound on questions (`Admission`) and where it stands in front of the routes
that do work: the `Admit` middleware, and Gradio's queue made part of the same bound
(`share_gradio_queue`).

Questions of the REST API, the Gradio API, the chat, the chat completions and MCP tool calls are
admitted here, on the event loop, before a worker thread is taken: QA_QUEUE_CONCURRENCY
answered at once, QA_QUEUE_MAX_SIZE waiting, none longer than QA_QUEUE_WAIT_SECONDS.
"""

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from qa.errors import BusyError
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
    "Admission",
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


class Wait:
    """One question waiting for a slot; `granted` once a finishing question hands its slot over."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None):
        self.loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop else None
        self.event = None if loop else threading.Event()
        self.granted = False

    def wake(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        else:
            self.event.set()  # type: ignore[union-attr]


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


class Admission:
    """The one bound on questions, shared by the REST API, the Gradio API and the chat.

    At most `concurrency` questions are answered at once; at most `max_waiting` wait for their
    turn (REST requests waiting here, Gradio events in Gradio's queue and Gradio workers waiting
    here: `extra_waiting` counts the queue's), and none waits more than `wait_seconds`. Past
    either bound a question is refused at once with `BusyError` (a 503 with Retry-After).

    REST requests are admitted by an ASGI middleware on the event loop (`acquire`), so that a
    waiting request holds no worker thread; Gradio workers, already on a thread, use `enter`.
    Slots are handed over first come, first served.
    """

    def __init__(
        self,
        concurrency: int,
        max_waiting: int,
        wait_seconds: float,
        extra_waiting: Callable[[], int] | None = None,
    ):
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self.extra_waiting = extra_waiting or (lambda: 0)
        self._free = concurrency
        self._waits: deque[Wait] = deque()
        self._lock = threading.Lock()

    def waiting(self) -> int:
        """Questions waiting for their turn now, whichever way they came."""
        return len(self._waits) + self.extra_waiting()

    def busy_message(self, waiting: int | None = None) -> str:
        waiting = self.waiting() if waiting is None else waiting
        return (
            f"{waiting} questions are already waiting (QA_QUEUE_MAX_SIZE={self.max_waiting}). "
            "Try again in a moment."
        )

    def check_room(self) -> None:
        """Raise BusyError when no other question may start waiting (Gradio's queue asks this)."""
        waiting = self.waiting()
        if waiting >= self.max_waiting:
            raise BusyError(self.busy_message(waiting))

    def _enter(self, loop: asyncio.AbstractEventLoop | None, queued: bool = False) -> Wait | None:
        with self._lock:
            if self._free > 0 and not self._waits:
                self._free -= 1
                return None
            waiting = self.waiting()
            # A question that Gradio's queue accepted (`queued`) was counted there: it is not
            # turned away now that it moves from that queue to this line.
            if waiting >= self.max_waiting and not queued:
                raise BusyError(self.busy_message(waiting))
            wait = Wait(loop)
            self._waits.append(wait)
            return wait

    def _give_up(self, wait: Wait) -> bool:
        """After a timeout: True if the slot came anyway (keep it), else leave the line."""
        with self._lock:
            if wait.granted:
                return True
            self._waits.remove(wait)
            return False

    def too_long(self) -> BusyError:
        """The error of a question that waited QA_QUEUE_WAIT_SECONDS without its turn coming."""
        return BusyError(
            f"The question waited {self.wait_seconds:g} s for its turn (QA_QUEUE_WAIT_SECONDS) and "
            "was not answered: the server is busy. Try again in a moment."
        )

    async def acquire(self, timeout: float | None = None) -> None:
        """Take a slot from the event loop, waiting at most `timeout` (default wait_seconds)."""
        timeout = self.wait_seconds if timeout is None else timeout
        wait = self._enter(asyncio.get_running_loop())
        if wait is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(wait.future), timeout)  # type: ignore[arg-type]
        except (TimeoutError, asyncio.CancelledError) as exc:
            if self._give_up(wait):
                if isinstance(exc, asyncio.CancelledError):
                    self.release()
                    raise
                return
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self.too_long() from None

    def acquire_blocking(self, timeout: float | None = None, queued: bool = False) -> None:
        """Take a slot from a worker thread, waiting at most `timeout` (default wait_seconds).
        `queued`: the question was admitted by Gradio's queue already, so it may wait here even
        past QA_QUEUE_MAX_SIZE (by at most Gradio's workers), never refused at this point."""
        timeout = self.wait_seconds if timeout is None else timeout
        wait = self._enter(None, queued)
        if wait is None:
            return
        if not wait.event.wait(max(timeout, 0)) and not self._give_up(wait):  # type: ignore[union-attr]
            raise self.too_long()

    def release(self) -> None:
        """Give the slot back: to the first question waiting, else to the pool."""
        with self._lock:
            if self._waits:
                wait = self._waits.popleft()
                wait.granted = True
                wait.wake()
            else:
                self._free += 1

    @contextlib.contextmanager
    def enter(self, timeout: float | None = None, queued: bool = False) -> Iterator[None]:
        """`with admission.enter():` around an answer computed on a worker thread."""
        self.acquire_blocking(timeout, queued)
        try:
            yield
        finally:
            self.release()


class Admit:
    """The admission bound (`Admission`) in front of the routes that do work.

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

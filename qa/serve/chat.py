"""The chat (Gradio) in its slot of the app: everything under `/` that no route of the app takes.

Importing Gradio and building the chat take about 3 s of CPU, more than the REST API needs to be
ready. So `qa serve` answers `/healthz`, the REST API and the chat completions at once and makes
the chat on a thread (`ChatSlot.run`); until it is mounted its slot answers every request with
a 503 and Retry-After (a page that reloads itself for a browser, a JSON message for a program),
never a 404. `/healthz` says `"chat": "starting" | "ready" | "error"` beside the API's own state.

The slot is mounted at `/` when the app is made, after every route, inside the one middleware
stack (`qa.serve.app`): security headers, access control, rate and body limits, admission and the
Gradio argument checks apply to the chat as to the API, from its first request on. Gradio's
lifespan (its queue and the MCP session manager) runs in the slot's own task, started when the
chat is ready and stopped with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from qa.config import Settings
from qa.serve.asgi import Receive, Scope, Send, send_json

__all__ = ["API_FIRST_SECONDS", "CHAT_RETRY_AFTER", "ChatSlot", "web_component_script"]

log = logging.getLogger(__name__)

API_FIRST_SECONDS = 10.0  # the chat waits this long at most for the index to load first
CHAT_RETRY_AFTER = "2"  # seconds: the chat is mounted a few seconds after the API answers

_STARTING_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8>"
    '<meta http-equiv="refresh" content="{retry}"><title>News Q&amp;A</title></head>'
    "<body><h1>News Q&amp;A</h1><p>The chat is starting; this page reloads itself in a moment. "
    'The REST API already answers: <a href="docs">docs</a>.</p></body></html>'
)
_FAILED_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8><title>News Q&amp;A</title></head>"
    "<body><h1>News Q&amp;A</h1><p>The chat could not start; the reason is in the server's log. "
    'The REST API still answers: <a href="docs">docs</a>.</p></body></html>'
)


def web_component_script() -> str:
    """Gradio's own web-component loader, pointing at the bundle this server serves; read from
    Gradio's package without importing it (that is the chat's job, on its own thread)."""
    import importlib.util

    spec = importlib.util.find_spec("gradio")
    if spec is None or spec.origin is None:
        raise RuntimeError("Gradio is not installed.")
    loader = Path(spec.origin).parent / "templates" / "frontend" / "gradio.js"
    # The loader imports "./assets/index-<hash>.js" relative to itself; we serve it from
    # /embed/, and Gradio serves the bundle at /assets/.
    return loader.read_text(encoding="utf-8").replace('"./assets/', '"../assets/')


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


async def _on_a_thread(function: Any, *args: Any) -> Any:
    """`function(*args)` on a daemon thread of its own: a server stopped while it runs does not
    wait for it (asyncio's default executor would, at shutdown)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = function(*args)
        except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="qa-chat", daemon=True).start()
    return await future


class ChatSlot:
    """The ASGI app at `/` behind every route of the app: the Gradio chat once it runs, until
    then a 503 that says the chat is starting (or could not start).

    `state` is "starting", "ready" or "error"; `blocks` is the chat's Blocks once built (the
    Gradio argument checks read it, qa.serve.security.GradioArguments)."""

    def __init__(self, settings: Settings, service: Any):
        self.settings = settings
        self.service = service
        self.state = "starting"
        self.blocks: Any = None
        self._gradio: Any = None  # Gradio's app, set once its queue runs
        self._stop: asyncio.Event | None = None
        self._settled: asyncio.Event | None = None  # set when the chat is ready or has failed

    # ------------------------------------------------------------------ serving

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gradio = self._gradio
        if gradio is not None:
            await gradio(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})  # "try again later"
            return
        if scope["type"] != "http":
            return
        await self._not_yet(scope, send)

    async def _not_yet(self, scope: Scope, send: Send) -> None:
        """503: the chat is starting (with Retry-After), or failed to start."""
        starting = self.state == "starting"
        headers = {"Retry-After": CHAT_RETRY_AFTER} if starting else {}
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        if scope["method"] in ("GET", "HEAD") and b"text/html" in accept:
            page = (_STARTING_PAGE.format(retry=CHAT_RETRY_AFTER) if starting else _FAILED_PAGE).encode()
            raw = [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(page)).encode()),
                (b"cache-control", b"no-store"),
                *[(k.lower().encode(), v.encode()) for k, v in headers.items()],
            ]
            await send({"type": "http.response.start", "status": 503, "headers": raw})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else page})
            return
        message = (
            "The chat is starting; try again in a moment. The REST API (/api/v1) already answers."
            if starting
            else "The chat could not start; the reason is in the server's log. The REST API (/api/v1) answers."
        )
        await send_json(send, 503, {"detail": message}, {**headers, "Cache-Control": "no-store"})

    # ------------------------------------------------------------------ making the chat

    def build(self, app: Any) -> Any:
        """Import Gradio, build the chat and make Gradio's app for `app` (about 3 s of CPU; on a
        thread in `qa serve`). Returns Gradio's app, not yet started."""
        from qa.runtime import configure_gradio

        configure_gradio()  # Gradio's process-wide settings, before it is imported (qa.runtime)
        import gradio as gr

        from qa.i18n import LABELS
        from qa.serve.admission import share_gradio_queue
        from qa.serve.security import install_public_root
        from qa.serve.ui import build_ui, css, head_html, theme

        settings, service = self.settings, self.service
        blocks = build_ui(settings, service.ui_status, service.admission)
        routes, lifespan = list(app.router.routes), app.router.lifespan_context
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
        # Gradio mounted its app after this slot (where no request reaches it) and wrapped the
        # app's lifespan around its own: this slot serves Gradio's app and runs its lifespan.
        gradio = next(route.app for route in app.router.routes if route not in routes)
        app.router.routes[:] = routes
        app.router.lifespan_context = lifespan
        share_gradio_queue(blocks, service.admission)
        _mcp_results_as_json(blocks)
        install_public_root()
        self.blocks = blocks
        return gradio

    def mount(self, gradio: Any) -> None:
        """Serve `gradio` (Gradio's app, from `build`) in this slot from now on."""
        self._gradio, self.state = gradio, "ready"

    async def run(self, app: Any) -> None:
        """Make the chat on a thread (unless it is mounted already), start Gradio's lifespan
        (its queue, the MCP sessions) in this task, and serve it until `stop`."""
        self._stop = self._stop or asyncio.Event()
        self._settled = self._settled or asyncio.Event()
        try:
            gradio = self._gradio
            if gradio is None:
                await self._after_the_api()
                gradio = await _on_a_thread(self.build, app)
            async with self._started(gradio):
                self.mount(gradio)
                self._settled.set()
                log.info("Chat ready.")
                await self._stop.wait()
        except Exception:
            self._gradio, self.state = None, "error"
            log.exception("The chat could not start; the REST API answers without it")
        finally:
            self._settled.set()

    async def _after_the_api(self) -> None:
        """Wait (at most API_FIRST_SECONDS) while the index and the question model load: Gradio's
        import is Python code holding the GIL, and beside the loading it would about double the
        time to the API's first answer. An index being built (minutes) is not waited for."""
        deadline = time.monotonic() + API_FIRST_SECONDS
        while self.service.state in ("starting", "loading") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def _started(self, gradio: Any) -> AsyncIterator[None]:
        """Gradio's lifespan and start-up events, as `gr.mount_gradio_app` would run them."""
        async with gradio.router.lifespan_context(gradio):
            gradio.get_blocks().run_startup_events()
            await gradio.get_blocks().run_extra_startup_events()
            yield

    async def settled(self) -> None:
        """Wait until the chat is ready or has failed (call after `run` has started)."""
        self._settled = self._settled or asyncio.Event()
        await self._settled.wait()

    def stop(self) -> None:
        """Let `run` leave Gradio's lifespan (on the event loop, at shutdown)."""
        self._stop = self._stop or asyncio.Event()
        self._stop.set()

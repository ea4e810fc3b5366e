"""One ASGI app on one port: the chat UI at `/`, the REST API under `/api/v1`, the
OpenAI-compatible endpoint under `/v1`, the MCP tools at `/gradio_api/mcp`, the script that
embeds the chat in other pages at `/embed/gradio.js`, and `/healthz`.

    from qa.serve.app import create_app
    app = create_app(Settings())          # nothing heavy here: the index loads on startup

The model and the index load in a background thread when the server starts (building the
index from the corpus first if there is none; `qa.serve.service`), so the port opens at once;
until they are ready `/healthz` says so and questions get a 503 with a message. The chat is
Gradio's app in a slot at `/` behind every route (`qa.serve.chat`): `qa serve` makes it on a
thread while the REST API already answers (`create_app(defer_chat=True)`); until it is mounted
its pages answer a 503 with Retry-After, and `/healthz` says `"chat": "starting"`.

Every request passes the security middleware (`qa.serve.security`: headers, CORS, access
control, rate limit, closed routes, body limit, Gradio argument checks, public root) and the one
admission bound on questions (`qa.serve.admission`). Responses never show the server's paths.
"""

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from qa.config import Settings
from qa.runtime import configure_logging
from qa.serve.admission import Admit
from qa.serve.chat import ChatSlot, web_component_script
from qa.serve.security import (
    AccessControl,
    BodyLimit,
    ClosedRoutes,
    GradioArguments,
    PublicRoot,
    RateLimit,
    SecurityHeaders,
    content_security_policy,
    read_users,
)
from qa.serve.service import Service

__all__ = ["create_app", "serve"]


# --------------------------------------------------------------------------- the app


def _swagger_assets() -> Path | None:
    """Swagger UI's files from the `fastapi-offline` package (no CDN), or None without it."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    return Path(fastapi_offline.__file__).parent / "static"


def create_app(settings: Settings | None = None, *, defer_chat: bool = False) -> Any:
    """The FastAPI app: UI, REST API, embed script and health check. The index loads (or is
    built) in a background thread at startup.

    The chat (Gradio) is made here, and started with the app, unless `defer_chat`: then it is
    made on a thread when the app starts (about 3 s of CPU, `qa serve`'s choice), and until it
    is mounted its pages answer a 503 with Retry-After while the API already answers."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from qa import __version__
    from qa.serve.api import install_error_handlers, router
    from qa.serve.openai_api import OpenAIErrorShape
    from qa.serve.openai_api import router as openai_router

    settings = settings or Settings()
    users = read_users(settings.users_file) if settings.users_file else None
    service = Service(settings)
    chat = ChatSlot(settings, service)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        task = asyncio.create_task(chat.run(app), name="qa-chat")
        if not defer_chat:
            await chat.settled()  # the chat answers from the first request, as it always has
        try:
            yield
        finally:
            chat.stop()
            if chat.state == "starting":
                task.cancel()  # still being made: the thread is left to finish on its own
            with contextlib.suppress(asyncio.CancelledError):
                await task

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
        body["chat"] = chat.state  # the status is the API's (load balancers); the chat may follow
        return JSONResponse(body, status_code=status)

    @app.get("/embed/gradio.js", include_in_schema=False)
    def embed_script() -> Response:
        return Response(
            web_component_script(),
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

    if not defer_chat:
        chat.mount(chat.build(app))  # serving at once, as Gradio's own mount does; started with the app
    app.mount("/", chat)  # after every route: the chat gets what they do not take

    # Outermost first: security headers on everything (401 and 429 included), then CORS (so
    # preflights and errors carry it), the public root, the shape of /v1 errors, the closed
    # routes, access control, the rate limit, the body limit (the body is read before a slot is
    # taken) and admission.
    app.add_middleware(Admit, admission=service.admission)
    app.add_middleware(GradioArguments, chat=chat)
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
    """Run the app with uvicorn until Ctrl-C: the edge of `qa serve` and `python app.py`, which
    says where the app is on stderr and shows the `qa` loggers' messages (QA_LOG_LEVEL)."""
    import uvicorn

    settings = settings or Settings()
    configure_logging(settings)  # idempotent: `qa serve` has done it already, `python app.py` not
    app = create_app(settings, defer_chat=True)
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
        # The settings' level (WARNING unless set, DEBUG with -v): uvicorn's per-request INFO
        # lines do not show by default.
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )

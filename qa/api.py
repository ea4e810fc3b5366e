"""REST API under /api/v1: a thin shell over `qa.retrieve` and `qa.ask`.

Errors are JSON `{"detail": message}` with a proper status: 422 for an unusable question, 503
while the index is loading or missing (or too many questions are waiting), 500 with a plain
message and never a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Annotated, Protocol

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from qa.config import Settings
from qa.errors import IndexCorruptError, IndexNotFoundError, InvalidQuestionError, QAError
from qa.models import Answer, Passage

__all__ = ["AskRequest", "ErrorMessage", "ServiceState", "Slots", "install_error_handlers", "router"]

log = logging.getLogger(__name__)


class ErrorMessage(BaseModel):
    """Every error of the API: a message meant for a person."""

    detail: str


class AskRequest(BaseModel):
    """A question, and the earlier questions of the same conversation for follow-ups."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        description="The question, in any language.",
        examples=["¿Qué porcentaje de OpenAI posee Microsoft?"],
    )
    history: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Earlier questions of the conversation, oldest first.",
    )


class NotReadyError(QAError):
    """The index is still loading or being built."""


class BusyError(QAError):
    """Too many questions are already waiting."""


class ServiceState(Protocol):
    """What the API needs from the server: settings, readiness and the concurrency slots."""

    settings: Settings
    slots: Slots

    def not_ready_reason(self) -> str | None: ...


class Slots:
    """At most `concurrency` questions answered at once, at most `max_waiting` waiting.

    The same limits as the chat's queue, for the REST API (whose handlers run in a thread pool).
    """

    def __init__(self, concurrency: int, max_waiting: int):
        self._slots = threading.BoundedSemaphore(concurrency)
        self._max_waiting = max_waiting
        self._waiting = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        with self._lock:
            if self._waiting >= self._max_waiting:
                raise BusyError(
                    f"{self._waiting} questions are already waiting (QA_QUEUE_MAX_SIZE="
                    f"{self._max_waiting}). Try again in a moment."
                )
            self._waiting += 1
        try:
            self._slots.acquire()
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


def _service(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.qa
    reason = service.not_ready_reason()
    if reason:
        raise NotReadyError(reason)
    return service


_ERRORS = {
    422: {"model": ErrorMessage, "description": "The question is empty, too long or malformed."},
    503: {"model": ErrorMessage, "description": "The index is loading or missing, or the server is busy."},
    500: {"model": ErrorMessage, "description": "The server failed; the message says why, without details."},
}

router = APIRouter(prefix="/api/v1", tags=["questions"], responses=_ERRORS)


@router.get("/search", response_model=list[Passage], summary="The passages that best answer a question")
def search(
    request: Request,
    q: Annotated[str, Query(description="The question, in any language.")],
    k: Annotated[int, Query(ge=1, le=100, description="How many passages.")] = 5,
) -> list[Passage]:
    from qa.question import asker_language
    from qa.retrieval import clean_question, retrieve

    lang = asker_language(None, request.headers.get("accept-language"))  # for a question without words
    clean_question(q, request.app.state.qa.settings.max_question_chars, lang)  # 422 before 503
    service = _service(request)
    with service.slots.take():
        return retrieve(q, k=k, settings=service.settings)


@router.post("/ask", response_model=Answer, summary="A cited answer in the language of the question")
def ask(request: Request, body: AskRequest) -> Answer:
    from qa import ask as qa_ask
    from qa.question import asker_language
    from qa.retrieval import clean_question

    limit = request.app.state.qa.settings.max_question_chars
    lang = asker_language(body.history, request.headers.get("accept-language"))  # for a question without words
    clean_question(body.question, limit, lang)  # 422 before 503
    for number, earlier in enumerate(body.history, 1):
        if len(earlier) > limit:
            raise InvalidQuestionError(
                f"history item {number} is {len(earlier)} characters long; the limit is {limit}."
            )
    service = _service(request)
    with service.slots.take():
        return qa_ask(body.question, history=body.history, settings=service.settings)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map the library's errors to HTTP statuses with a JSON message; never show a traceback."""

    @app.exception_handler(InvalidQuestionError)
    async def _invalid(request: Request, exc: InvalidQuestionError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems) or "The request is malformed.")

    @app.exception_handler(NotReadyError)
    async def _not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "10"})

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "5"})

    @app.exception_handler(IndexNotFoundError)
    async def _no_index(request: Request, exc: IndexNotFoundError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "30"})

    @app.exception_handler(IndexCorruptError)
    async def _damaged_index(request: Request, exc: IndexCorruptError) -> JSONResponse:
        # The server is fine; its index files are not (and it reloads them once they are back).
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(503, str(exc), {"Retry-After": "30"})

    @app.exception_handler(QAError)
    async def _qa_error(request: Request, exc: QAError) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(500, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "Internal server error. The details are in the server's log.")

"""REST API under /api/v1: a thin shell over `qa.retrieve` and `qa.ask`.

Errors are JSON `{"detail": message}` with a proper status: 422 for an unusable question, 503
while the index is loading or missing (or too many questions are waiting), 500 with a plain
message and never a traceback.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qa.config import Settings
from qa.errors import (
    BusyError,
    IndexCorruptError,
    IndexNotFoundError,
    InvalidQuestionError,
    NotReadyError,
    QAError,
)
from qa.models import Answer, Passage

__all__ = [
    "MAX_HISTORY",
    "AskRequest",
    "ErrorMessage",
    "SearchRequest",
    "ServiceState",
    "check_ask",
    "describe_problems",
    "install_error_handlers",
    "parse_arguments",
    "public_message",
    "router",
]

log = logging.getLogger(__name__)

_Model = TypeVar("_Model", bound=BaseModel)
MAX_HISTORY = 50  # earlier questions sent with one question, at most


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
        max_length=MAX_HISTORY,
        description="Earlier questions of the conversation, oldest first.",
    )
    # Filters on the evidence (see qa.filters); checked by qa.ask, a bad value is a 422.
    langs: list[str] | None = Field(None, description="Only passages in these languages (ISO 639-1 codes).")
    since: str | None = Field(None, description="Only articles published on or after this day (YYYY-MM-DD).")
    until: str | None = Field(None, description="Only articles published on or before this day (YYYY-MM-DD).")
    sources: list[str] | None = Field(
        None, description="Only articles from these outlets (domain of the URL) or corpus files and folders."
    )

    def filters(self) -> dict[str, Any]:
        """The filter fields, as keyword arguments of `qa.ask` and `qa.retrieve`."""
        return {"langs": self.langs, "since": self.since, "until": self.until, "sources": self.sources}


class ServiceState(Protocol):
    """What the API needs from the server: settings and readiness."""

    settings: Settings

    def not_ready_reason(self) -> str | None: ...


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
    lang: Annotated[
        list[str] | None, Query(description="Only passages in this language (ISO 639-1; repeat for several).")
    ] = None,
    since: Annotated[str | None, Query(description="Only articles published on or after this day (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, Query(description="Only articles published on or before this day (YYYY-MM-DD).")] = None,
    source: Annotated[
        list[str] | None,
        Query(description="Only articles from this outlet (domain of the URL) or corpus file or folder; repeatable."),
    ] = None,
) -> list[Passage]:
    from qa.filters import make_filters
    from qa.question import asker_language
    from qa.retrieval import clean_question, retrieve

    asker = asker_language(None, request.headers.get("accept-language"))  # for a question without words
    clean_question(q, request.app.state.qa.settings.max_question_chars, asker)  # 422 before 503
    make_filters(langs=lang, since=since, until=until, sources=source)  # malformed filters: 422 before 503
    service = _service(request)  # admitted already (qa.serve.admission.Admit): no slot to take here
    return retrieve(q, k=k, settings=service.settings, langs=lang, since=since, until=until, sources=source)


@router.post("/ask", response_model=Answer, summary="A cited answer in the language of the question")
def ask(request: Request, body: AskRequest) -> Answer:
    from qa import ask as qa_ask
    from qa.question import asker_language

    lang = asker_language(body.history, request.headers.get("accept-language"))  # for a question without words
    check_ask(body, request.app.state.qa.settings.max_question_chars, lang)  # 422 before 503
    service = _service(request)
    return qa_ask(body.question, history=body.history, settings=service.settings, **body.filters())


def check_ask(body: AskRequest, limit: int, lang: str = "en") -> None:
    """InvalidQuestionError (in `lang` where it has no words) unless the question and each
    earlier question are usable."""
    from qa.filters import make_filters
    from qa.retrieval import clean_question

    clean_question(body.question, limit, lang)
    make_filters(**body.filters())
    for number, earlier in enumerate(body.history, 1):
        if len(earlier) > limit:
            raise InvalidQuestionError(
                f"history item {number} is {len(earlier)} characters long; the limit is {limit}."
            )


class SearchRequest(BaseModel):
    """The Gradio API's `/search` arguments, checked as strictly as the REST query."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str
    k: int = Field(5, ge=1, le=100)
    langs: list[str] | None = None  # the filters of AskRequest (see qa.filters)
    since: str | None = None
    until: str | None = None
    sources: list[str] | None = None

    def filters(self) -> dict[str, Any]:
        """The filter fields, as keyword arguments of `qa.retrieve`."""
        return {"langs": self.langs, "since": self.since, "until": self.until, "sources": self.sources}


def describe_problems(errors: Sequence[Any], skip: int = 0) -> str:
    """Pydantic's errors as one line: `where: what` for each, without echoing the input."""
    problems = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())[skip:]) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(problems) or "The request is malformed."


def parse_arguments(model: type[_Model], values: dict[str, Any]) -> _Model:
    """`values` as `model`, strictly (no `3.7` or `true` for an integer); InvalidQuestionError
    with a one-line message otherwise. For the Gradio API, which takes positional JSON."""
    try:
        return model.model_validate(values, strict=True)
    except ValidationError as exc:
        raise InvalidQuestionError(describe_problems(exc.errors())) from None


# An absolute POSIX path of two parts or more, as error messages quote them.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])(?:/[^\s/'\"`,;:()\[\]{}<>]+){2,}/?")


def public_message(text: str, settings: Settings | None = None) -> str:
    """`text` (an error message) without anything about the server's file system, for a
    response: a configured folder by its name and setting (`index` (QA_INDEX_DIR)), a file
    inside one by its path within it, any other absolute path by its last part. The server's
    log keeps the whole message."""
    folders: list[tuple[str, str]] = []
    if settings is not None:
        for path, setting in (
            (settings.index_dir, "QA_INDEX_DIR"),
            (settings.corpus_dir, "QA_CORPUS_DIR"),
            (settings.cache_dir, "QA_CACHE_DIR"),
        ):
            for form in {str(path), str(Path(path).absolute()), str(Path(path).resolve())}:
                if form.startswith("/") and form != "/":
                    folders.append((form.rstrip("/"), f"`{Path(form).name}` ({setting})"))
        folders.sort(key=lambda pair: -len(pair[0]))  # the longest (innermost) first

    def shorten(match: re.Match) -> str:
        path = match.group(0).rstrip("/")
        stop = path[len(path.rstrip(".")) :]  # a sentence's full stop is not part of the path
        path = path.rstrip(".")
        for folder, name in folders:
            if path == folder:
                return name + stop
            if path.startswith(folder + "/"):
                return path[len(folder) + 1 :] + stop
        return path.rsplit("/", 1)[-1] + stop

    for folder, name in folders:  # one-part folders (/data) that the pattern leaves alone
        text = re.sub(rf"(?<![\w.~:/-]){re.escape(folder)}(?![\w.~-])(?!/)", name, text)
    return _ABSOLUTE_PATH.sub(shorten, text)


def _error(
    status: int, message: str, headers: dict[str, str] | None = None, request: Request | None = None
) -> JSONResponse:
    service = getattr(getattr(request, "app", None), "state", None)
    settings = getattr(getattr(service, "qa", None), "settings", None)
    return JSONResponse({"detail": public_message(message, settings)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map the library's errors to HTTP statuses with a JSON message; never show a traceback."""

    @app.exception_handler(InvalidQuestionError)
    async def _invalid(request: Request, exc: InvalidQuestionError) -> JSONResponse:
        return _error(422, str(exc), request=request)

    @app.exception_handler(RequestValidationError)
    async def _malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, describe_problems(exc.errors(), skip=1), request=request)

    @app.exception_handler(NotReadyError)
    async def _not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "10"}, request)

    @app.exception_handler(BusyError)
    async def _busy(request: Request, exc: BusyError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "5"}, request)

    @app.exception_handler(IndexNotFoundError)
    async def _no_index(request: Request, exc: IndexNotFoundError) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "30"}, request)

    @app.exception_handler(IndexCorruptError)
    async def _damaged_index(request: Request, exc: IndexCorruptError) -> JSONResponse:
        # The server is fine; its index files are not (and it reloads them once they are back).
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(503, str(exc), {"Retry-After": "30"}, request)

    @app.exception_handler(QAError)
    async def _qa_error(request: Request, exc: QAError) -> JSONResponse:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(500, str(exc), request=request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "Internal server error. The details are in the server's log.")

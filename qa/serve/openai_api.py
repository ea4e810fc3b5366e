"""An OpenAI-compatible chat endpoint of the service: `POST /v1/chat/completions` (model `qa`)
and `GET /v1/models`, so that chat front-ends and SDKs made for OpenAI's API can ask it.

A request's messages are a conversation: its last message is the question, the user messages
before it are the history passed to `qa.ask` (system, developer and assistant messages are
accepted and not used: the service answers from the articles, not from instructions). The reply
is `qa.ask`'s, in the asker's language, with [n] markers and the sources listed below it in the
message text, so that they survive any client; the structured citations (`qa.models.Citation`)
come in the extra field `citations` of the response (of its last chunk when streamed).

Streaming (`"stream": true`) sends Server-Sent Events: `chat.completion.chunk` objects, then
`data: [DONE]`. The answer is computed before the first event, so an error is a plain JSON
error response, never a broken stream.

Errors have OpenAI's shape, `{"error": {"message", "type", "code", "param"}}`, for everything
under /v1, the server's own refusals (401, 413, 429, 503) included (`OpenAIErrorShape`).
Admission, the body limit, access control and the rate limit are the server's (qa.serve.admission,
qa.serve.security).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qa.errors import InvalidQuestionError, QAError
from qa.i18n import label
from qa.models import Answer, Citation

__all__ = [
    "MODEL_ID",
    "ChatMessage",
    "ChatRequest",
    "OpenAIErrorShape",
    "error_body",
    "message_text",
    "router",
]

log = logging.getLogger(__name__)

MODEL_ID = "qa"
CREATED = 1_700_000_000  # the model's `created`: fixed, so that /v1/models never changes
STREAM_PIECES = 24  # the reply is streamed in about this many pieces
_USED_ROLES = ("user",)
_IGNORED_ROLES = ("system", "developer", "assistant")


# --------------------------------------------------------------------------- request models


class TextPart(BaseModel):
    """One part of a message's content in the list form; only text is understood."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")  # `name`, `tool_calls`... are accepted and unused

    role: str = Field(description="user, assistant, system or developer.")
    content: str | list[TextPart] | None = None


class ChatRequest(BaseModel):
    """The chat completion request: the fields this service reads. Other OpenAI parameters
    (temperature, max_tokens, user...) are accepted and have no effect on a quoted answer.
    Filters on the evidence (`qa.filters`) are optional extra fields (an SDK's `extra_body`)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description=f"`{MODEL_ID}`, the only model (see GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation, oldest first.")
    stream: bool = False
    n: int = Field(1, description="How many replies: only 1.")
    langs: list[str] | None = Field(None, description="Only quote passages in these languages (ISO 639-1).")
    since: str | None = Field(None, description="Only quote articles published on or after this day (YYYY-MM-DD).")
    until: str | None = Field(None, description="Only quote articles published on or before this day (YYYY-MM-DD).")
    sources: list[str] | None = Field(None, description="Only quote articles from these outlets or corpus files.")

    def filters(self) -> dict[str, Any]:
        """The filter fields, as keyword arguments of `qa.ask`."""
        return {"langs": self.langs, "since": self.since, "until": self.until, "sources": self.sources}


class ChatError(Exception):
    """A request this endpoint cannot answer: an OpenAI-shaped error with its status."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


# --------------------------------------------------------------------------- errors

_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("invalid_request_error", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_request"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "unavailable"),
}


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    """An error in OpenAI's shape."""
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def _status_error(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error", "internal_error"))
    return error_body(message, kind, code)


def _error_response(exc: ChatError) -> JSONResponse:
    kind = _ERROR_TYPES.get(exc.status, ("server_error", ""))[0]
    headers = {"Retry-After": "10"} if exc.status == 503 else None
    return JSONResponse(
        error_body(exc.message, kind, exc.code, exc.param), status_code=exc.status, headers=headers
    )


class OpenAIErrorShape:
    """Under /v1, every JSON error `{"detail": message}` (the server's refusals and FastAPI's)
    rewritten as `{"error": {...}}`, keeping its status and headers. Other paths, and successful
    or streamed responses, pass untouched."""

    def __init__(self, app: Any, prefix: str = "/v1/"):
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from qa.serve.asgi import route_path

        if scope["type"] != "http" or not route_path(scope).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []

        async def rewrite(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(
                    b"application/json"
                ):
                    start = message  # held until the whole body is here
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            if isinstance(payload, dict) and "error" not in payload and "detail" in payload:
                detail = payload["detail"]
                text = detail if isinstance(detail, str) else "The request is malformed."
                body = json.dumps(_status_error(start["status"], text)).encode()
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


# --------------------------------------------------------------------------- the conversation


def message_text(message: ChatMessage, position: int) -> str:
    """The text of a message: its content, or its text parts joined; ChatError otherwise."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise ChatError(
                400,
                f"messages[{position}] has a `{part.type}` part; only text is understood. "
                "Send the question as text.",
                "unsupported_content",
                f"messages[{position}].content",
            )
        texts.append(part.text)
    return "\n".join(texts)


def conversation(request: ChatRequest) -> tuple[str, list[str]]:
    """(question, history): the last message, a user's, and the user messages before it."""
    from qa.serve.api import MAX_HISTORY

    questions: list[str] = []
    for position, message in enumerate(request.messages):
        if message.role not in _USED_ROLES + _IGNORED_ROLES:
            raise ChatError(
                400,
                f"messages[{position}].role is {message.role!r}; this service understands user, "
                "assistant, system and developer messages (it calls no tools).",
                "invalid_role",
                f"messages[{position}].role",
            )
        text = message_text(message, position)
        if message.role == "user":
            questions.append(text)
    last = request.messages[-1]
    if last.role != "user":
        where = len(request.messages) - 1
        raise ChatError(
            400,
            f"The last message (messages[{where}]) is from {last.role!r}; it must be the user's question."
            if questions
            else "The messages hold no user message; add one with the question.",
            "no_user_message" if not questions else "invalid_last_message",
            "messages",
        )
    # A long conversation keeps its latest questions: they are what a follow-up refers to.
    return questions[-1], questions[:-1][-MAX_HISTORY:]


def parse_request(raw: bytes) -> ChatRequest:
    """The request body as a ChatRequest; ChatError naming what is wrong otherwise."""
    from qa.serve.api import describe_problems

    try:
        payload = json.loads(raw)
    except ValueError:
        raise ChatError(400, "The request body is not JSON.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise ChatError(400, "The request body must be a JSON object.", "invalid_json")
    try:
        request = ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise ChatError(400, describe_problems(exc.errors()), "invalid_request") from None
    if request.model != MODEL_ID:
        raise ChatError(
            404,
            f"The model {request.model!r} does not exist; use {MODEL_ID!r} (GET /v1/models).",
            "model_not_found",
            "model",
        )
    if request.n != 1:
        raise ChatError(400, f"n is {request.n}; this service gives one reply (n=1).", "invalid_n", "n")
    return request


# --------------------------------------------------------------------------- the reply

# Characters that start Markdown links, images, HTML or code: corpus text in the message is
# shown as text by the clients that render Markdown (no image fetched from a quoted article).
_MD_ACTIVE = re.compile(r"[\\<>\[\]`]")
_ESCAPED_MARKER = re.compile(r"\\\[(\d{1,3})\\\]")


def _inert(text: str) -> str:
    return _MD_ACTIVE.sub(lambda m: "\\" + m.group(0), text)


def _web_url(url: str | None) -> str | None:
    if url and re.fullmatch(r"https?://[^\s<>\"'`\\\[\]()]+", url.strip(), re.IGNORECASE):
        return url.strip()
    return None


def source_line(citation: Citation) -> str:
    """`[n] Title — outlet, date — source, URL`, corpus text made inert."""
    p = citation.passage
    title = " ".join((p.title or p.source).split())
    facts = [fact for fact in (p.outlet, p.date[:10] if p.date else None) if fact]
    parts = [f"[{citation.n}] {_inert(title)}"]
    if facts:
        parts.append(_inert(", ".join(facts)))
    where = [p.source] + ([url] if (url := _web_url(p.url)) else [])
    parts.append(", ".join(_inert(w) if w == p.source else w for w in where))
    return " — ".join(parts)


def reply_text(answer: Answer) -> str:
    """The message: the reply with its [n] markers, then the sources, one line each."""
    known = {c.n for c in answer.citations}

    def marker(match: re.Match) -> str:
        return f"[{match.group(1)}]" if int(match.group(1)) in known else match.group(0)

    reply = _ESCAPED_MARKER.sub(marker, _inert(answer.reply))
    if not answer.citations:
        return reply
    lines = [f"{label('sources', answer.lang)}:"] + [source_line(c) for c in answer.citations]
    return reply + "\n\n" + "\n".join(lines)


def pieces(text: str, steps: int = STREAM_PIECES) -> Iterator[str]:
    """`text` in about `steps` consecutive pieces, cut after whitespace (or anywhere in text
    without spaces), that join back to exactly `text`."""
    units = re.findall(r"\S*\s*", text) if " " in text else list(text)
    units = [u for u in units if u]
    size = max(1, -(-len(units) // steps))
    for at in range(0, len(units), size):
        yield "".join(units[at : at + size])


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def _extras(answer: Answer) -> dict[str, Any]:
    return {
        "citations": [c.model_dump(mode="json") for c in answer.citations],
        "found": answer.found,
        "lang": answer.lang,
    }


def completion(answer: Answer) -> dict[str, Any]:
    """The non-streamed response."""
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply_text(answer)},
                "finish_reason": "stop",
            }
        ],
        **_extras(answer),
    }


def chunks(answer: Answer) -> Iterator[str]:
    """The streamed response: Server-Sent Events, the last chunk with the citations, then
    `[DONE]`."""
    ident, created = _completion_id(), int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in pieces(reply_text(answer)):
        yield event({"content": piece})
    yield event({}, "stop", **_extras(answer))
    yield "data: [DONE]\n\n"


# --------------------------------------------------------------------------- routes


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema with its `$defs` put in place: the OpenAPI document resolves a
    `$ref` from its own root, where `#/$defs/...` does not exist (the models are not recursive)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)


router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


@router.get("/models", summary="The models of the OpenAI-compatible endpoint: one, `qa`")
def models() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": CREATED, "owned_by": "qa"}],
    }


@router.post(
    "/chat/completions",
    summary="A cited answer to the conversation's last question, OpenAI-style (streamed or not)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline_schema(ChatRequest)}},
        }
    },
)
async def chat_completions(request: Request) -> Any:
    """Admitted already (qa.serve.admission.Admit): the answer is computed on a worker thread."""
    import anyio

    from qa import ask as qa_ask
    from qa.filters import make_filters
    from qa.question import asker_language
    from qa.serve.api import AskRequest, check_ask, public_message

    service = request.app.state.qa
    settings = service.settings
    try:
        chat = parse_request(await request.body())
        question, history = conversation(chat)
        lang = asker_language(history, request.headers.get("accept-language"))
        try:
            check_ask(AskRequest(question=question, history=history), settings.max_question_chars, lang)
        except InvalidQuestionError as exc:
            raise ChatError(400, str(exc), "invalid_question", "messages") from None
        try:
            make_filters(**chat.filters())
        except InvalidQuestionError as exc:
            raise ChatError(400, str(exc), "invalid_filter") from None
        reason = service.not_ready_reason()
        if reason:
            raise ChatError(503, public_message(reason, settings), "not_ready")
        try:
            answer = await anyio.to_thread.run_sync(
                lambda: qa_ask(question, history=history, settings=settings, **chat.filters())
            )
        except InvalidQuestionError as exc:  # a language or source the index does not hold
            raise ChatError(400, str(exc), "invalid_filter") from None
    except ChatError as exc:  # its message names no server path (made public where it could)
        log.info("Chat completion refused: %s", exc.message)
        return _error_response(exc)
    except QAError as exc:
        log.error("Chat completion failed: %s", exc)
        return _error_response(ChatError(503, public_message(str(exc), settings), "unavailable"))
    if chat.stream:
        return StreamingResponse(
            chunks(answer),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(completion(answer))

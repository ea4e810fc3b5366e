"""What a request may carry, checked before anything parses it: a body of at most
QA_MAX_BODY_BYTES (`BodyLimit`), and the arguments of Gradio API calls and chat events
(`GradioArguments`).
"""

import asyncio
import json
import logging
from typing import Any

from qa.serve.asgi import ASGIApp, Receive, Scope, Send, replaying, route_path, send_json

__all__ = ["BODY_READ_SECONDS", "BodyLimit", "GradioArguments"]

log = logging.getLogger(__name__)

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

"""What runs when a question is asked: in the chat (`chat_events`: the reply streamed, the
sources panel, the conversation's answers) or through Gradio's API and its MCP tools
(`api_tools`: the same calls and checks as the REST API). Both ask through `Questions`: the
index's readiness, the server's admission bound and `qa.ask` with the server's settings.
`gradio` is imported only when the handlers are made.

(No `from __future__ import annotations` here: Gradio reads the handlers' annotations, such as
`gr.Request`, as objects, and `gr` is imported only inside the functions that make them.)
"""

import contextlib
import html
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from qa.config import Settings
from qa.i18n import label, pick_lang
from qa.models import Answer
from qa.serve.ui.render import empty_sources, escape_markdown, render_sources, reply_markdown, stream_prefixes

if TYPE_CHECKING:
    import gradio as gr

    from qa.serve.admission import Admission

__all__ = ["API_ARGUMENTS", "ChatEvents", "Questions", "api_tools", "chat_events", "chat_filters"]

log = logging.getLogger(__name__)

# The Gradio API's positional arguments, with the defaults of the optional ones (None: required).
# The filters (qa.filters) come last, empty when left out.
_FILTER_ARGUMENTS = (("langs", []), ("since", ""), ("until", ""), ("sources", []))
API_ARGUMENTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "ask": (("question", None), ("history", []), *_FILTER_ARGUMENTS),
    "search": (("question", None), ("k", 5), *_FILTER_ARGUMENTS),
}


def _api_filters(langs: Any, since: Any, until: Any, sources: Any) -> dict[str, Any]:
    """The API endpoints' filter arguments as request fields: an empty one (Gradio's "" or []) is
    None, so that the request model sees it as not given."""
    return {"langs": langs or None, "since": since or None, "until": until or None, "sources": sources or None}


def chat_filters(langs: Any, since: Any, until: Any, sources: Any) -> dict[str, Any]:
    """The filter row's values as `qa.ask`'s filter keywords (empty ones left out), checked:
    InvalidQuestionError naming a bad value (`qa.filters.make_filters`)."""
    from qa.filters import make_filters

    def empty(value: Any) -> Any:
        # Gradio sends "" and [] for untouched fields; anything else (also from a hand-made event
        # with the wrong types) is left to make_filters to accept or name.
        if isinstance(value, str):
            return value.strip() or None
        return value or None

    # Sources are one comma-separated text: make_filters splits it.
    filters = {"langs": empty(langs), "since": empty(since), "until": empty(until), "sources": empty(sources)}
    make_filters(**filters)
    return {name: value for name, value in filters.items() if value is not None}


def _request_lang(request: "gr.Request | None") -> str:
    headers = getattr(request, "headers", None) or {}
    return pick_lang(headers.get("accept-language"))


class Questions:
    """How the UI's handlers ask a question: `status()` says whether the index is ready, and if
    not the i18n key of why (`loading`, `building` or `unavailable`); `admission` is the server's
    one bound on questions (qa.serve.admission.Admission), shared with the REST API; without one
    the UI gets its own."""

    def __init__(
        self,
        settings: Settings,
        status: Callable[[], tuple[bool, str]] | None = None,
        admission: "Admission | None" = None,
    ):
        from qa.serve.admission import Admission

        self.settings = settings
        self.status = status or (lambda: (True, ""))
        if admission is None:
            admission = Admission(
                settings.queue_concurrency, settings.queue_max_size, settings.queue_wait_seconds
            )
        self.admission = admission

    def admitted(self, request: "gr.Request | None"):
        """A slot for one question, within what is left of its QA_QUEUE_WAIT_SECONDS. An MCP
        tool call holds one already: the server admitted its request (qa.serve.admission.Admit)."""
        from qa.serve.admission import is_admitted, waited_seconds

        if is_admitted(request):
            return contextlib.nullcontext()
        left = self.settings.queue_wait_seconds - waited_seconds(getattr(request, "headers", None) or {})
        if left <= 0:
            raise self.admission.too_long()
        return self.admission.enter(left, queued=True)  # Gradio's queue admitted it

    def ask(self, question: str, history: list[str], **filters: Any) -> Answer:
        from qa import ask as qa_ask

        return qa_ask(question, history=history, settings=self.settings, **filters)

    def ask_generated(self, question: str, history: list[str], **filters: Any) -> Iterator[Answer]:
        """With an LLM server (QA_LLM_URL): the answer so far each time a generated sentence
        passes its check, last the final answer (the quotes, if the generation fails)."""
        from qa.generate import ask_stream

        return ask_stream(question, history, settings=self.settings, **filters)


class ChatEvents(NamedTuple):
    """The chat's event handlers: a question asked, an example picked, the conversation cleared."""

    respond: Callable
    pick_example: Callable
    clear: Callable


def chat_events(questions: Questions) -> ChatEvents:
    """The chat's handlers. A refused question is said in the chat and stays in the box; an
    answer streams in, its sources shown with the first update."""
    import gradio as gr

    from qa.errors import InvalidQuestionError, QAError
    from qa.question import asker_language
    from qa.retrieval import clean_question
    from qa.serve.api import public_message

    settings, status, admitted = questions.settings, questions.status, questions.admitted
    ask, ask_generated = questions.ask, questions.ask_generated

    def said(chat: list[dict], text: str) -> tuple:
        """The updates that say `text` in the chat and change nothing else (the question stays
        in the box to be fixed)."""
        return gr.skip(), chat + [{"role": "assistant", "content": escape_markdown(text)}], gr.skip(), gr.skip()

    def respond(
        message: str,
        chat: list[dict],
        answers: list[dict],
        langs: list[str] | None,
        since: str | None,
        until: str | None,
        sources: str | None,
        request: gr.Request,
    ):
        lang = _request_lang(request)
        text = (message or "").strip()
        if not text:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        chat = list(chat or [])
        try:
            # A question without words is refused in the conversation's language (or the browser's).
            earlier = [m.get("content") for m in chat if isinstance(m, dict) and m.get("role") == "user"]
            headers = getattr(request, "headers", None) or {}
            refuse_in = asker_language(earlier, headers.get("accept-language"))
            question = clean_question(text, settings.max_question_chars, refuse_in)
            # A malformed filter of the filter row (a date that is not one, since after until).
            filters = chat_filters(langs, since, until, sources)
        except InvalidQuestionError as exc:
            # Said in the chat; the question stays in the box to be fixed.
            yield said(chat, str(exc))
            return
        ready, why = status()
        if not ready:
            reason = label(why or "loading", lang) + ("." if why == "unavailable" else "")
            notice = {"role": "assistant", "content": escape_markdown(reason)}
            yield (
                gr.skip(),
                chat + [{"role": "user", "content": escape_markdown(question)}, notice],
                gr.skip(),
                gr.skip(),
            )
            return
        history = [a["question"] for a in answers]
        chat = chat + [{"role": "user", "content": escape_markdown(question)}]
        yield "", chat, gr.skip(), gr.skip()
        try:
            with admitted(request):
                if settings.llm_url:
                    # The generated reply grows sentence by sentence, as the LLM writes it and
                    # each sentence passes its check; the slot is held until the last one.
                    yield from stream_generated(question, history, chat, list(answers or []), lang, filters)
                    return
                answer = ask(question, history, **filters)
        except InvalidQuestionError as exc:
            # A filter the index cannot meet (a language or an outlet it does not hold): said as
            # it is, like a refused question.
            log.info("Chat question refused: %s", exc)
            yield said(chat, str(exc))
            return
        except QAError as exc:
            log.info("Chat question not answered: %s", exc)
            yield said(chat, f"{label('unavailable', lang)}: {public_message(str(exc), settings)}")
            return
        answers = list(answers or []) + [answer.model_dump(mode="json")]
        turn = len(answers)
        sources = render_sources([Answer.model_validate(a) for a in answers], lang)
        full = reply_markdown(answer, turn)
        first = True
        for partial in stream_prefixes(full):
            reply = chat + [{"role": "assistant", "content": partial}]
            yield gr.skip(), reply, (sources if first else gr.skip()), (answers if first else gr.skip())
            first = False
            time.sleep(0.02)

    def stream_generated(
        question: str,
        history: list[str],
        chat: list[dict],
        answers: list[dict],
        lang: str,
        filters: dict[str, Any],
    ):
        """The chat's updates for a generated answer: the reply as it grows, the sources with the
        first update (the citations are known by then) and again with the final answer."""
        turn, position, answer = len(answers) + 1, -1, None
        for position, answer in enumerate(ask_generated(question, history, **filters)):
            reply = chat + [{"role": "assistant", "content": reply_markdown(answer, turn)}]
            if position == 0:
                yield gr.skip(), reply, *with_sources(answers, answer, lang)
            else:
                yield gr.skip(), reply, gr.skip(), gr.skip()
        if position > 0:  # the final answer: what the follow-ups and the sources build on
            yield gr.skip(), gr.skip(), *with_sources(answers, answer, lang)

    def with_sources(answers: list[dict], answer: Answer, lang: str) -> tuple[str, list[dict]]:
        """The sources panel and the conversation's answers, `answer` the latest."""
        done = answers + [answer.model_dump(mode="json")]
        return render_sources([Answer.model_validate(a) for a in done], lang), done

    def pick_example(event: gr.SelectData) -> str:
        value = event.value
        return value.get("text", "") if isinstance(value, dict) else str(value or "")

    def clear(request: gr.Request):
        lang = _request_lang(request)
        return "", [], empty_sources(html.escape(label("sources_empty", lang))), []

    return ChatEvents(respond, pick_example, clear)


def api_tools(questions: Questions) -> tuple[Callable, Callable]:
    """The API-only endpoints `ask` and `search` (also the MCP tools of those names)."""
    import gradio as gr

    from qa.errors import BusyError, InvalidQuestionError, QAError
    from qa.question import asker_language
    from qa.retrieval import clean_question
    from qa.serve.api import (
        AskRequest,
        SearchRequest,
        check_ask,
        parse_arguments,
        public_message,
    )

    settings, status, admitted, ask = questions.settings, questions.status, questions.admitted, questions.ask

    def api_error(name: str, exc: QAError) -> "gr.Error":
        """A Gradio API error: one log line (no traceback) and the message, made safe."""
        message = public_message(str(exc), settings)
        if isinstance(exc, InvalidQuestionError | BusyError):
            log.info("Gradio API /%s refused: %s", name, exc)
        else:
            log.error("Gradio API /%s failed: %s", name, exc)
        # Gradio shows an error's message as HTML: escaped, it stays text.
        return gr.Error(html.escape(message), print_exception=False)

    def check_ready(lang: str) -> None:
        ready, why = status()
        if not ready:
            raise gr.Error(label(why or "loading", lang), print_exception=False)

    # API-only endpoints for gradio_client, and the MCP tools `ask` and `search` (Gradio's MCP
    # server describes each tool by its function's name, signature and docstring: keep the
    # `Args:` lines one line each). The same calls as the REST API, with the same checks
    # (strict types: no `3.7` or `true` for k; ranges; the history's length and items).
    # Not queued: Gradio's queue still takes the gradio_client calls (/call/, queue/join), and an
    # MCP tool call runs in the request that the server's admission bound admitted.
    def api_ask(
        question: str,
        history: list[str] | None = None,
        langs: list[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        sources: list[str] | None = None,
        request: gr.Request = None,
    ) -> dict[str, Any]:
        """Answer a question about the news articles, in the question's language, citing them.

        The reply quotes the articles' own sentences with [n] markers. Each citation n gives the
        quoted evidence and the passage it comes from: its article's title, source file, language,
        publication date and outlet (when known), URL, and character offsets in the article.
        Use `search` instead for the raw ranked passages.

        Args:
            question: The question, in any language (English, French, German, Japanese, ...).
            history: Earlier questions of the same conversation, oldest first, for follow-ups.
            langs: Only quote articles in these languages (ISO 639-1 codes such as "de"); all if empty.
            since: Only quote articles published on or after this day (YYYY-MM-DD); undated ones are left out.
            until: Only quote articles published on or before this day (YYYY-MM-DD); undated ones are left out.
            sources: Only quote articles from these outlets (a site's domain, such as "bbc.co.uk").

        Returns:
            JSON: reply (text with [n] markers), lang, found (false if not covered), citations.
        """
        try:
            filters = _api_filters(langs, since, until, sources)
            body = parse_arguments(
                AskRequest, {"question": question, "history": [] if history is None else history, **filters}
            )
            check_ask(body, settings.max_question_chars, asker_language(body.history))
            check_ready("en")
            with admitted(request):
                return ask(body.question, body.history, **body.filters()).model_dump(mode="json")
        except QAError as exc:
            raise api_error("ask", exc) from None

    def api_search(
        question: str,
        k: int = 5,
        langs: list[str] | None = None,
        since: str | None = None,
        until: str | None = None,
        sources: list[str] | None = None,
        request: gr.Request = None,
    ) -> list[dict[str, Any]]:
        """Find the passages of the news articles that best answer a question, in any language.

        Passages in every language are ranked together, best first. Each gives its text, score,
        the article's title, source file, language, publication date and outlet (when known), URL,
        and the passage's character offsets (start, end) in the article.

        Args:
            question: The question or keywords, in any language.
            k: How many passages to return, 1 to 100.
            langs: Only passages in these languages (ISO 639-1 codes such as "de"); all if empty.
            since: Only articles published on or after this day (YYYY-MM-DD); undated ones are left out.
            until: Only articles published on or before this day (YYYY-MM-DD); undated ones are left out.
            sources: Only articles from these outlets (a site's domain, such as "bbc.co.uk").

        Returns:
            JSON: a list of passages, best first.
        """
        from qa.filters import make_filters
        from qa.retrieval import retrieve

        try:
            filters = _api_filters(langs, since, until, sources)
            args = parse_arguments(SearchRequest, {"question": question, "k": k, **filters})
            clean_question(args.question, settings.max_question_chars)
            make_filters(**args.filters())  # a malformed value: refused before waiting for the index
            check_ready("en")
            with admitted(request):
                passages = retrieve(args.question, k=args.k, settings=settings, **args.filters())
            return [p.model_dump(mode="json") for p in passages]
        except QAError as exc:
            raise api_error("search", exc) from None

    # The MCP tools are named after their functions.
    api_ask.__name__ = api_ask.__qualname__ = "ask"
    api_search.__name__ = api_search.__qualname__ = "search"
    return api_ask, api_search

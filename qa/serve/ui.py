"""The chat UI: a Gradio Blocks app over `qa.ask`, with a sources panel beside the chat.

Two halves:

* pure functions that turn an `Answer` into what the browser shows: `reply_markdown` (the reply,
  every piece of text escaped, with our own `[n]` links) and `render_sources` (the sources
  panel as HTML, every piece of corpus text passed through `html.escape`). Corpus text is
  untrusted: nothing from it is ever rendered as markup.
* `build_ui(settings, status)`: the Blocks app, a thin shell that parses, calls `qa.ask` (or,
  with QA_LLM_URL, `qa.generate.ask_stream`, the reply growing sentence by sentence) and
  formats with the functions above. `gradio` is imported only there.
"""

import contextlib
import html
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.config import Settings
from qa.i18n import EXAMPLES, LABELS, LANGUAGE_NAMES, label, pick_lang
from qa.models import Answer, Citation, Passage

if TYPE_CHECKING:
    import gradio as gr

    from qa.serve.admission import Admission

__all__ = [
    "API_ARGUMENTS",
    "STATIC_DIR",
    "build_ui",
    "chat_filters",
    "css",
    "empty_sources",
    "escape_markdown",
    "head_html",
    "language_choices",
    "render_citation",
    "render_sources",
    "reply_markdown",
    "stream_prefixes",
    "theme",
]

STATIC_DIR = Path(__file__).parents[1] / "static"

log = logging.getLogger(__name__)

# The Gradio API's positional arguments, with the defaults of the optional ones (None: required).
# The filters (qa.filters) come last, empty when left out.
_FILTER_ARGUMENTS = (("langs", []), ("since", ""), ("until", ""), ("sources", []))
API_ARGUMENTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "ask": (("question", None), ("history", []), *_FILTER_ARGUMENTS),
    "search": (("question", None), ("k", 5), *_FILTER_ARGUMENTS),
}

# --------------------------------------------------------------------------- the reply

# Every ASCII punctuation character that means something to Markdown (CommonMark + GFM
# extensions: tables, strikethrough, autolinks, math). `&` is left alone: it only appears in the
# entities html.escape produced, which must stay intact to show `<` and `>` as text.
_MD_SPECIAL = re.compile(r"[\\`*_{}\[\]()#+\-.!|~$:=@\"']")
_MARKER = re.compile(r"\\\[(\d{1,3})\\\]")


def escape_markdown(text: str) -> str:
    """`text` as Markdown that renders back to exactly `text`: no markup, links, HTML or math."""
    lines = [line.strip() for line in text.splitlines()]
    escaped = html.escape("\n".join(lines), quote=False)
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), escaped)


def cite_id(turn: int, n: int) -> str:
    """The element id of source `n` of the answer to question number `turn`."""
    return f"src-{turn}-{n}"


def reply_markdown(answer: Answer, turn: int = 1) -> str:
    """The reply as safe Markdown: escaped text, and each `[n]` a link to its source card."""
    known = {c.n for c in answer.citations}

    def link(match: re.Match) -> str:
        n = int(match.group(1))
        if n not in known:
            return match.group(0)
        return f"[\\[{n}\\]](#{cite_id(turn, n)})"

    return _MARKER.sub(link, escape_markdown(answer.reply))


# One unit of streamed text: a whole citation link, a backslash escape, an entity, a run of
# spaces, or one character. Cutting only between units never shows half of a link.
_UNIT = re.compile(r"\[\\\[\d+\\\]\]\(#src-\d+-\d+\)|\\.|&(?:amp|lt|gt);|\s+|.", re.DOTALL)


def stream_prefixes(markdown: str, steps: int = 24) -> Iterator[str]:
    """Progressively longer prefixes of `markdown`, about `steps` of them, the last one whole."""
    units = _UNIT.findall(markdown)
    if not units:
        yield markdown
        return
    size = max(1, -(-len(units) // steps))
    for end in range(size, len(units), size):
        yield "".join(units[:end])
    yield markdown


# --------------------------------------------------------------------------- the sources panel

_LANG_TAG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


def _lang_attr(lang: str) -> str:
    return f' lang="{html.escape(lang)}"' if _LANG_TAG.fullmatch(lang or "") else ""


def _badge(lang: str) -> str:
    name = LANGUAGE_NAMES.get(lang, lang)
    return f'<span class="qa-lang" title="{html.escape(name)}">{html.escape(lang.upper())}</span>'


def _squash(text: str) -> str:
    return " ".join(text.split())


def highlight(text: str, text_start: int, evidence: str, ev_start: int, ev_end: int) -> str:
    """`text` escaped, with the evidence sentence wrapped in `<mark>` when it lies within it.

    `text_start`, `ev_start` and `ev_end` are offsets in the same article; when they do not
    agree with the text (evidence from another article), the evidence is searched verbatim.
    """
    lo, hi = ev_start - text_start, ev_end - text_start
    lo, hi = max(lo, 0), min(hi, len(text))
    found = lo < hi and _squash(text[lo:hi]) in _squash(evidence)
    if not found and evidence.strip():
        at = text.find(evidence.strip())
        found = at >= 0
        lo, hi = at, at + len(evidence.strip())
    if not found:
        return html.escape(text)
    return html.escape(text[:lo]) + "<mark>" + html.escape(text[lo:hi]) + "</mark>" + html.escape(text[hi:])


def _safe_url(url: str | None) -> str | None:
    # Only plain web links; `javascript:`, `data:` and the like are shown as nothing at all.
    if url and re.match(r"https?://[^\s<>\"']+$", url.strip(), re.IGNORECASE):
        return url.strip()
    return None


def _date_and_outlet(p: Passage) -> list[str]:
    """The article's date and outlet as meta items (escaped), when it has them."""
    items = []
    outlet = getattr(p, "outlet", None)
    date = getattr(p, "date", None)
    if outlet:
        items.append(f'<span class="qa-outlet">{html.escape(outlet)}</span>')
    if date:
        # The date part of an ISO 8601 timestamp; other forms are shown as they are.
        shown = date[:10] if re.match(r"\d{4}-\d{2}-\d{2}T", date) else date
        items.append(f'<time class="qa-date" datetime="{html.escape(date)}">{html.escape(shown)}</time>')
    return items


def render_citation(citation: Citation, turn: int, lang: str) -> str:
    """One source card: number, title, language, score, the passage with the evidence marked."""
    p: Passage = citation.passage
    card_id = cite_id(turn, citation.n)
    title = p.title.strip() or p.source
    parts = [
        f'<article class="qa-src" id="{card_id}" tabindex="-1">',
        '<div class="qa-src-head">',
        f'<a class="qa-src-n" href="#{card_id}">{citation.n}</a>',
        f'<span class="qa-src-title">{html.escape(title)}</span>',
        "</div>",
        '<div class="qa-src-meta">',
        _badge(p.lang),
        f'<span class="qa-score">{html.escape(label("score", lang))} {p.score:.2f}</span>',
        f'<span class="qa-file">{html.escape(p.source)}</span>',
        *_date_and_outlet(p),
    ]
    url = _safe_url(p.url)
    if url:
        parts.append(
            f'<a class="qa-open" href="{html.escape(url)}" target="_blank" '
            f'rel="noopener noreferrer nofollow">{html.escape(label("open_article", lang))}</a>'
        )
    parts.append("</div>")
    parts.append(
        f'<blockquote class="qa-src-text"{_lang_attr(p.lang)}>'
        f"{highlight(p.text, p.start, citation.evidence, citation.evidence_start, citation.evidence_end)}"
        "</blockquote>"
    )
    seen: set[tuple[str, int, int]] = set()
    alternates = []
    for other in p.translations:
        if (other.doc_id, other.start, other.end) in seen:
            continue
        seen.add((other.doc_id, other.start, other.end))
        body = highlight(
            other.text, other.start, citation.evidence, citation.evidence_start, citation.evidence_end
        )
        alternates.append(
            f'<div class="qa-tr-item"><div class="qa-tr-title">{_badge(other.lang)} '
            f"{html.escape(other.title.strip() or other.source)}</div>"
            f'<blockquote class="qa-src-text"{_lang_attr(other.lang)}>{body}</blockquote></div>'
        )
    if alternates:
        badges = " ".join(dict.fromkeys(_badge(other.lang) for other in p.translations))
        parts.append(
            f'<details class="qa-tr"><summary>{html.escape(label("translations", lang))} {badges}</summary>'
            f"{''.join(alternates)}</details>"
        )
    parts.append("</article>")
    return "".join(parts)


def empty_sources(text: str) -> str:
    """The panel before any question: an explanation (already translated, or an i18n key)."""
    return f'<div class="qa-sources qa-sources-empty"><p>{text}</p></div>'


def render_sources(answers: Sequence[Answer], lang: str = "en") -> str:
    """The sources panel for a conversation: the latest answer's sources first, open; those of
    earlier questions below, folded. Every piece of corpus text is escaped."""
    turns = [(turn, a) for turn, a in enumerate(answers, 1) if a.citations]
    if not turns:
        return empty_sources(html.escape(label("sources_empty", lang)))
    sections = []
    for position, (turn, answer) in enumerate(reversed(turns)):
        cards = "".join(render_citation(c, turn, lang) for c in answer.citations)
        heading = (
            f'<span class="qa-turn-n">{html.escape(label("question_n", lang))} {turn}</span> '
            f'<span class="qa-turn-q">{html.escape(_squash(answer.question))}</span>'
        )
        state = " open" if position == 0 else ""
        sections.append(f'<details class="qa-turn"{state}><summary>{heading}</summary>{cards}</details>')
    return f'<div class="qa-sources">{"".join(sections)}</div>'


# --------------------------------------------------------------------------- the Gradio app


def theme() -> "gr.themes.Base":
    """A calm theme with the system's own fonts: nothing is fetched from a font service."""
    import gradio as gr

    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="slate",
        neutral_hue="slate",
        radius_size="md",
        font=[
            "system-ui",
            "-apple-system",
            "Segoe UI",
            "Roboto",
            "Noto Sans",
            "Helvetica Neue",
            "Arial",
            "sans-serif",
        ],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
    ).set(body_background_fill="*neutral_50", block_radius="12px")


def head_html() -> str:
    """The `<head>` additions: the citation-link script (inline: Gradio injects it)."""
    return "<script>" + (STATIC_DIR / "chat.js").read_text(encoding="utf-8") + "</script>"


def css() -> str:
    return (STATIC_DIR / "chat.css").read_text(encoding="utf-8")


def language_choices(codes: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The filter row's language choices, `(native name (code), code)`: the index's languages
    when given, else every language the project names (an index without one says so)."""
    known = sorted(codes) if codes else sorted(LANGUAGE_NAMES)
    return [(f"{LANGUAGE_NAMES.get(code, code)} ({code})", code) for code in known]


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


def _filter_box(gr: Any, i18n: Any, name: str, placeholder: str, max_length: int, scale: int, min_width: int):
    """One of the chat's typed filters (`since`, `until`, `sources`): a labelled text box."""
    return gr.Textbox(
        label=i18n(f"filter_{name}"),
        placeholder=placeholder,
        max_length=max_length,
        scale=scale,
        min_width=min_width,
        elem_id=f"qa-filter-{name}",
    )


def _request_lang(request: "gr.Request | None") -> str:
    headers = getattr(request, "headers", None) or {}
    return pick_lang(headers.get("accept-language"))


def build_ui(
    settings: Settings,
    status: Callable[[], tuple[bool, str]] | None = None,
    admission: "Admission | None" = None,
) -> "gr.Blocks":
    """The chat app. `status()` says whether the index is ready, and if not the i18n key of why
    (`loading`, `building` or `unavailable`), so that questions asked too early get a clear
    message in the chat. `admission` is the server's one bound on questions (qa.serve.admission.Admission),
    shared with the REST API; without one the app gets its own."""
    import gradio as gr

    from qa.errors import BusyError, InvalidQuestionError, QAError
    from qa.question import asker_language
    from qa.retrieval import clean_question
    from qa.serve.admission import Admission, is_admitted, waited_seconds
    from qa.serve.api import (
        AskRequest,
        SearchRequest,
        check_ask,
        parse_arguments,
        public_message,
    )

    i18n = gr.I18n(**LABELS)
    status = status or (lambda: (True, ""))
    if admission is None:
        admission = Admission(
            settings.queue_concurrency, settings.queue_max_size, settings.queue_wait_seconds
        )

    def admitted(request: "gr.Request | None"):
        """A slot for one question, within what is left of its QA_QUEUE_WAIT_SECONDS. An MCP
        tool call holds one already: the server admitted its request (qa.serve.admission.Admit)."""
        if is_admitted(request):
            return contextlib.nullcontext()
        left = settings.queue_wait_seconds - waited_seconds(getattr(request, "headers", None) or {})
        if left <= 0:
            raise admission.too_long()
        return admission.enter(left, queued=True)  # Gradio's queue admitted it

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

    def ask(question: str, history: list[str], **filters: Any) -> Answer:
        from qa import ask as qa_ask

        return qa_ask(question, history=history, settings=settings, **filters)

    def ask_generated(question: str, history: list[str], **filters: Any) -> Iterator[Answer]:
        """With an LLM server (QA_LLM_URL): the answer so far each time a generated sentence
        passes its check, last the final answer (the quotes, if the generation fails)."""
        from qa.generate import ask_stream

        return ask_stream(question, history, settings=settings, **filters)

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
            message = f"{label('unavailable', lang)}: {public_message(str(exc), settings)}"
            yield (
                gr.skip(),
                chat + [{"role": "assistant", "content": escape_markdown(message)}],
                gr.skip(),
                gr.skip(),
            )
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

    with gr.Blocks(title="News Q&A", analytics_enabled=False, fill_width=True) as demo:
        answers = gr.State([])
        with gr.Column(elem_id="qa-app"):
            # Gradio translates one i18n key per string: one component per translated text.
            with gr.Row(elem_id="qa-header", equal_height=False):
                gr.HTML(
                    '<span class="qa-logo" aria-hidden="true">❝</span>',
                    elem_id="qa-logo",
                    js_on_load=None,
                    scale=0,
                    min_width=48,
                )
                with gr.Column(scale=1, min_width=0, elem_id="qa-brand"):
                    gr.HTML(f"<h1>{i18n('title')}</h1>", js_on_load=None)
                    gr.HTML(f'<p class="qa-tagline">{i18n("tagline")}</p>', js_on_load=None)
            with gr.Row(elem_id="qa-main", equal_height=False):
                with gr.Column(scale=3, min_width=320, elem_id="qa-chat-col"):
                    chatbot = gr.Chatbot(
                        label=i18n("conversation"),
                        show_label=False,
                        elem_id="qa-chatbot",
                        height="62vh",
                        min_height=360,
                        placeholder=i18n("empty_state"),
                        examples=[{"text": q, "display_text": q} for q in EXAMPLES],
                        sanitize_html=True,
                        render_markdown=True,
                        allow_tags=False,
                        latex_delimiters=[],
                        line_breaks=True,
                        feedback_options=None,
                        buttons=["copy"],
                        layout="bubble",
                        autoscroll=True,
                    )
                    with gr.Row(elem_id="qa-input-row", equal_height=True):
                        question = gr.Textbox(
                            show_label=False,
                            placeholder=i18n("placeholder"),
                            max_length=settings.max_question_chars,
                            lines=1,
                            max_lines=5,
                            scale=8,
                            container=False,
                            elem_id="qa-question",
                        )
                        ask_button = gr.Button(
                            i18n("ask"), variant="primary", scale=1, min_width=88, elem_id="qa-ask"
                        )
                        clear_button = gr.Button(
                            i18n("clear"), variant="secondary", scale=1, min_width=88, elem_id="qa-clear"
                        )
                    # The news filters (qa.filters), folded away: most questions need none.
                    with (
                        gr.Accordion(i18n("filters"), open=False, elem_id="qa-filters"),
                        gr.Row(elem_id="qa-filter-row", equal_height=True),
                    ):
                        filter_langs = gr.Dropdown(
                            choices=language_choices(),
                            value=[],
                            multiselect=True,
                            # A code typed in, or sent by hand, reaches make_filters, which names a
                            # bad one in the chat (Gradio's own check logs a traceback instead).
                            allow_custom_value=True,
                            label=i18n("filter_langs"),
                            scale=3,
                            min_width=160,
                            elem_id="qa-filter-langs",
                        )
                        filter_since = _filter_box(gr, i18n, "since", "YYYY-MM-DD", 40, 2, 130)
                        filter_until = _filter_box(gr, i18n, "until", "YYYY-MM-DD", 40, 2, 130)
                        filter_sources = _filter_box(gr, i18n, "sources", "bbc.co.uk, lemonde.fr", 400, 3, 160)
                with gr.Column(scale=2, min_width=300, elem_id="qa-sources-col"):
                    gr.HTML(f'<h2 class="qa-panel-title">{i18n("sources")}</h2>', js_on_load=None)
                    sources = gr.HTML(
                        empty_sources(str(i18n("sources_empty"))),
                        elem_id="qa-sources",
                        js_on_load=None,
                        autoscroll=False,
                    )

        outputs = [question, chatbot, sources, answers]
        inputs = [question, chatbot, answers, filter_langs, filter_since, filter_until, filter_sources]
        events = {
            "fn": respond,
            "inputs": inputs,
            "outputs": outputs,
            "api_visibility": "private",
            "show_progress": "minimal",
        }
        question.submit(**events)
        ask_button.click(**events)
        # An example question in the empty chat: put it in the box and ask it. Both events go
        # through Gradio's queue: its `run/predict` route (queue=False) is closed, because it
        # would bypass the server's admission bound.
        chatbot.example_select(pick_example, None, question, api_visibility="private").then(**events)
        clear_button.click(clear, None, outputs, api_visibility="private")

        gr.api(api_ask, api_name="ask", queue=False)
        gr.api(api_search, api_name="search", queue=False)

    demo.queue(
        default_concurrency_limit=settings.queue_concurrency,
        max_size=settings.queue_max_size,
    )
    return demo

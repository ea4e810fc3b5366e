"""The chat page: `build_ui(settings, status)`, the Gradio Blocks app (a header, the chat with
its question box and folded filter row, the sources panel beside it), its theme, stylesheet and
script. A thin shell: the handlers (qa.serve.ui.handlers) parse, call `qa.ask` and format with
qa.serve.ui.render. `gradio` is imported only when the app is built."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.config import Settings
from qa.i18n import EXAMPLES, LABELS, LANGUAGE_NAMES
from qa.serve.ui.handlers import Questions, api_tools, chat_events
from qa.serve.ui.render import empty_sources

if TYPE_CHECKING:
    import gradio as gr

    from qa.serve.admission import Admission

__all__ = ["STATIC_DIR", "build_ui", "css", "head_html", "language_choices", "theme"]

STATIC_DIR = Path(__file__).parents[2] / "static"


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

    i18n = gr.I18n(**LABELS)
    questions = Questions(settings, status, admission)
    respond, pick_example, clear = chat_events(questions)
    api_ask, api_search = api_tools(questions)

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

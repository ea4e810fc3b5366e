"""The chat UI: a Gradio Blocks app over `qa.ask`, with a sources panel beside the chat.

In three parts, in the order a question goes through them:

* `layout`: `build_ui(settings, status)`, the page (chat, filters, sources panel) and its
  theme, a thin shell that wires the components to the handlers. `gradio` is imported only there
  and in the handlers.
* `handlers`: what runs on a question, in the chat or through Gradio's API and MCP tools: it
  parses, calls `qa.ask` (or, with QA_LLM_URL, `qa.generate.ask_stream`, the reply growing
  sentence by sentence) and formats with `render`.
* `render`: pure functions that turn an `Answer` into what the browser shows: `reply_markdown`
  (the reply, every piece of text escaped, with our own `[n]` links) and `render_sources` (the
  sources panel as HTML, every piece of corpus text passed through `html.escape`). Corpus text is
  untrusted: nothing from it is ever rendered as markup.
"""

from qa.serve.ui.handlers import API_ARGUMENTS, chat_filters
from qa.serve.ui.layout import STATIC_DIR, build_ui, css, head_html, language_choices, theme
from qa.serve.ui.render import (
    empty_sources,
    escape_markdown,
    highlight,
    render_citation,
    render_sources,
    reply_markdown,
    stream_prefixes,
)

__all__ = [
    "API_ARGUMENTS",
    "STATIC_DIR",
    "build_ui",
    "chat_filters",
    "css",
    "empty_sources",
    "escape_markdown",
    "head_html",
    "highlight",
    "language_choices",
    "render_citation",
    "render_sources",
    "reply_markdown",
    "stream_prefixes",
    "theme",
]

"""What the browser shows of an `Answer`, as pure functions: the reply (`reply_markdown`, every
piece of text escaped, with our own `[n]` links; `stream_prefixes` to show it growing) and the
sources panel (`render_sources`, `render_citation`: HTML with every piece of corpus text passed
through `html.escape`). Corpus text is untrusted: nothing from it is ever rendered as markup."""

import html
import re
from collections.abc import Iterator, Sequence

from qa.i18n import LANGUAGE_NAMES, label
from qa.models import Answer, Citation, Passage

__all__ = [
    "cite_id",
    "empty_sources",
    "escape_markdown",
    "highlight",
    "render_citation",
    "render_sources",
    "reply_markdown",
    "stream_prefixes",
]

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


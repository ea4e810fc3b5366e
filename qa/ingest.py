"""Corpus folder -> articles: reading, decoding, text extraction and boilerplate removal.

Every file that cannot be used is reported as a `SkippedFile` with the reason, and the rest of
the corpus still loads. An article's `text` is the cleaned body (kept paragraphs joined by a
blank line), so that passage offsets point into exactly what was indexed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from html.parser import HTMLParser
from pathlib import Path

from qa.chunk import split_sentences
from qa.errors import IngestError, unexpected_reason
from qa.lang import detect_language, normalize_lang_code
from qa.models import Article, SkippedFile
from qa.readers import encoding as _encoding
from qa.readers.base import Skip as _Skip
from qa.readers.dates import iso_date
from qa.readers.feed import parse_feed
from qa.readers.pdf import read_pdf_pages
from qa.readers.warc import WarcPage, read_warc

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUPPORTED_EXTENSIONS",
    "clean_lines",
    "is_boilerplate",
    "load_corpus",
    "make_doc_id",
    "read_file",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20_000_000
SUPPORTED_EXTENSIONS = (
    ".atom", ".htm", ".html", ".jsonl", ".markdown", ".md", ".pdf", ".rss", ".txt", ".warc", ".warc.gz", ".xml"
)

_DOC_ID_CHARS = 20
# Extraction processes for a large web archive: one core stays with the reader of the archive. On 2
# cores that is 1, in process: 2 workers there ran at half the speed (benchmarks/bench_warc.py).
_WARC_WORKERS = max(1, (os.cpu_count() or 1) - 1)
_BINARY_CONTROL_SHARE = 0.05  # text files have tabs and newlines, hardly any other control character
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_INVISIBLE_CHARS = re.compile("[\u200b\u2060\ufeff\u00ad]")  # zero-width space, word joiner, BOM, soft hyphen
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SENTENCE_END = ".!?…。！？"

# --- boilerplate rules: lines a scraper picked up from the page around the article ------------------

# Words that are a whole line only when they are a widget's label or a template placeholder.
_SCRAPER_WORDS = frozenset(
    ("img", "image", "images", "advertisement", "advert", "ad", "ads", "sponsored", "sponsorisé", "publicité")
    + ("anzeige", "werbung", "publicidad", "pubblicità", "реклама", "広告", "广告", "광고", "loading")
)
_PLACEHOLDER = re.compile(r"[A-Za-z]+(?:_[A-Za-z0-9]+)+")  # spot_img, td_module_wrap
_LOCALE_PICKER = re.compile(r"(?:[a-z]{2,3}[_-][A-Z]{2}[^\W\d_]*\s*)+")  # fr_FRFrançais en_USEnglish
_LOGO = re.compile(r"(?i)logo(?:type)?\b.*|.*\blogo")
_LABEL = re.compile(r"[^\W\d_][^:：]{0,30}[:：]")  # "Date :", "Tags:"
_DATE_LABEL = re.compile(
    r"(?i)(?:publié|posté|mis à jour|posted|published|updated|veröffentlicht|aktualisiert|publicado"
    r"|actualizado|pubblicato|aggiornato) (?:le|on|am|el|il)\s*[:：]"
)
# Calls to action, in the languages of the corpus and a few more. Matched only on short lines
# that do not read as a sentence or a question, so "the share price fell." is never caught.
_CALL_TO_ACTION = re.compile(
    r"\b(?:subscribe|newsletter|sign up|share (?:this|on|via)|like and share|follow us|contact us"
    r"|get in touch|let'?s talk|talk to us|chat with us|read more|related (?:posts|articles|stories)"
    r"|click here|leave a comment"
    r"|abonnez|abonne-toi|partagez|aimez|suivez-nous|inscrivez|contactez|discutons|parlons|avec nous"
    r"|articles connexes|lire aussi|lire la suite"
    r"|abonnieren|teilen|folgen sie uns|mit uns|kontaktieren|lassen sie uns|verwandte (?:beiträge|artikel)"
    r"|weiterlesen|mehr lesen"
    r"|suscríbete|comparte|síguenos|contáctanos|con nosotros|artículos relacionados|leer más"
    r"|iscriviti|condividi|seguici|contattaci|con noi|articoli correlati|leggi anche"
    r"|inscreva-se|compartilhe|siga-nos|fale conosco|artigos relacionados|leia mais"
    r"|abonneer|volg ons|neem contact|подпишитесь|поделитесь|читайте также)\b"
    r"|購読|シェア|フォロー|いいね|お問い合わせ|関連記事|订阅|分享|关注我们|相关文章|点赞"
    r"|구독|공유|좋아요|관련 기사"
)
_SOCIAL_NETWORK = re.compile(
    r"(?i)\b(?:linkedin|twitter|facebook|instagram|youtube|tiktok|telegram|whatsapp|mastodon|bluesky)\b"
)
_FOLLOW = re.compile(
    r"(?i)follow|suivez|suivre|folgen|síguenos|siga|seguici|volg|フォロー|关注|팔로우|подпиш"
)
_MAX_CTA_WORDS = 12
_MAX_SOCIAL_WORDS = 60
_MAX_HEADING_WORDS = 10
# What short lines at the end of a page are when they are not content: links and handles to
# follow, timestamps of the page's metadata, the comments widget, "more" teasers. A short line
# at the end without these was content as often as not (credits, dates of a tour, prices).
_TRAILING_FURNITURE = re.compile(
    r"https?://|\S+@\S+\.\w|\d{4}-\d\d-\d\dT\d\d:"
    r"|(?i:^(?:comments?|explore further|you may also like|filed under|see also|more from)\b)"
)


def is_boilerplate(line: str) -> bool:
    """Whether a line is page furniture rather than article content.

    Boilerplate: lines with neither letter nor digit ("|---|", "* * *"); template placeholders
    ("spot_img") and widget labels ("Advertisement"); language pickers ("fr_FRFrançais");
    "Logo X"; a one-word label with nothing after it ("Tags:"); short calls to subscribe, share,
    follow or talk to the publisher, in several languages. Short headings ("Timeline",
    "NISSAN SENTRA", "Un autre rival ?") and lines of numbers ("3-1", "02-751-1500") are content.
    Each rule is kept because >= 90 % of the lines it drops on real pages are boilerplate
    (benchmarks/bench_extract.py).
    """
    line = _normalize_line(line)
    if not any(char.isalnum() for char in line):
        return True
    return any(rule(line) for rule in _BOILERPLATE_RULES)


def _is_scraper_token(line: str) -> bool:
    return bool(_PLACEHOLDER.fullmatch(line)) or line.lower().strip(".:!") in _SCRAPER_WORDS


def _is_locale_picker(line: str) -> bool:
    return bool(_LOCALE_PICKER.fullmatch(line))


def _is_logo(line: str) -> bool:
    return _word_count(line) <= 5 and bool(_LOGO.fullmatch(line))


def _is_bare_label(line: str) -> bool:
    # One word ("Tags:", "Date :") or a date label ("Publié le :"): "See tweets :" introduces content.
    if not _LABEL.fullmatch(line):
        return False
    words = [word for word in line.split() if any(char.isalpha() for char in word)]
    return len(words) == 1 or bool(_DATE_LABEL.fullmatch(line))


def _is_call_to_action(line: str) -> bool:
    if line[-1] in ".?。？" or _word_count(line) > _MAX_CTA_WORDS:
        return False
    return bool(_CALL_TO_ACTION.search(line.lower()))


def _is_social_follow(line: str) -> bool:
    if line[-1] in ".?。？" or _word_count(line) > _MAX_SOCIAL_WORDS:
        return False
    return bool(_SOCIAL_NETWORK.search(line)) and bool(_FOLLOW.search(line))


_BOILERPLATE_RULES: tuple[Callable[[str], bool], ...] = (
    _is_scraper_token,
    _is_locale_picker,
    _is_logo,
    _is_bare_label,
    _is_call_to_action,
    _is_social_follow,
)


def clean_lines(lines: Iterable[str]) -> list[str]:
    """Turn raw lines into the article's paragraphs, without boilerplate.

    Whitespace is normalised; blank lines and removed lines separate paragraphs; a line that
    continues a hard-wrapped sentence (the previous line does not end a sentence and this one
    starts in lower case) is joined to it. Repeated paragraphs are kept once, and short lines of
    page furniture left at the end (links, e-mail addresses, timestamps, "Comments", "Explore
    further") are dropped; other short lines at the end (credits, lists of dates) are content.
    """
    paragraphs: list[str] = []
    furniture_at: set[int] = set()  # a line of page furniture came right before paragraphs[i]
    pending: str | None = None
    for raw in lines:
        line = _normalize_line(raw)
        keep = bool(line) and not is_boilerplate(line)
        if keep and pending is not None and _continues(pending, line):
            pending = f"{pending} {line}"
            continue
        if pending is not None:
            paragraphs.append(pending)
        if line and not keep and any(char.isalnum() for char in line):
            furniture_at.add(len(paragraphs))
        pending = line if keep else None
    if pending is not None:
        paragraphs.append(pending)
    unique_before = _unique_before(paragraphs)
    return _drop_trailing_headings(_unique(paragraphs), {unique_before[at] for at in furniture_at})


def _continues(previous: str, line: str) -> bool:
    """Whether `line` is the rest of a hard-wrapped sentence begun on the previous line."""
    return previous[-1] not in _SENTENCE_END and line[0].islower()


def _unique(paragraphs: list[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for paragraph in paragraphs:
        if paragraph not in seen:
            seen.add(paragraph)
            kept.append(paragraph)
    return kept


def _unique_before(paragraphs: list[str]) -> list[int]:
    """Per position i (and len): how many distinct paragraphs come before it; its index once repeats go."""
    seen: set[str] = set()
    counts = []
    for paragraph in paragraphs:
        counts.append(len(seen))
        seen.add(paragraph)
    return [*counts, len(seen)]


def _drop_trailing_headings(paragraphs: list[str], furniture_at: set[int] = frozenset()) -> list[str]:
    """Drop the short lines at the end that are page furniture.

    A short line at the end is furniture when it links, mails or timestamps (_TRAILING_FURNITURE),
    or when the whole run of short lines at the end starts right after a line a rule dropped
    ("Articles connexes", then a teaser and "LAISSONS / PARLER"): the article ended there.
    """
    end = len(paragraphs)
    while end > 1 and _is_heading_like(paragraphs[end - 1]):
        end -= 1
    if end not in furniture_at:  # the run follows content: only links and the like go
        end = len(paragraphs)
        while end > 1 and _is_heading_like(paragraphs[end - 1]) and _TRAILING_FURNITURE.search(paragraphs[end - 1]):
            end -= 1
    if not any(not _is_heading_like(paragraph) for paragraph in paragraphs[:end]):
        return paragraphs  # all short lines (a list, a poem): nothing marks where content ends
    return paragraphs[:end]


def _is_heading_like(paragraph: str) -> bool:
    return _word_count(paragraph) <= _MAX_HEADING_WORDS and paragraph[-1] not in _SENTENCE_END + '"”»'


def _normalize_line(line: str) -> str:
    """NFC, no control or zero-width characters, single spaces, no surrounding whitespace."""
    line = _INVISIBLE_CHARS.sub("", _CONTROL_CHARS.sub(" ", line))
    return " ".join(unicodedata.normalize("NFC", line).split())


def _word_count(line: str) -> int:
    # CJK has no spaces: count two characters as a word, about what a word weighs there.
    return len(line.split()) + len(_CJK_CHAR.findall(line)) // 2


# --- articles ----------------------------------------------------------------------------------


def make_doc_id(title: str, text: str) -> str:
    """A stable id from the normalised title and text: re-ingesting the same article gives the same id."""
    normalized = "\n".join(" ".join(unicodedata.normalize("NFC", part).split()) for part in (title, text))
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:_DOC_ID_CHARS]


def _build_article(
    title: str | None,
    body_lines: Iterable[str],
    source: str,
    *,
    lang: str | None = None,
    url: str | None = None,
    date: str | None = None,
    **meta: object,
) -> Article:
    """An article of cleaned paragraphs; `meta`: further Article fields (outlet, author, ...)."""
    paragraphs = clean_lines(body_lines)
    title = _normalize_line(title) if title else None
    if title and paragraphs and paragraphs[0] == title:
        paragraphs = paragraphs[1:]  # HTML extractors repeat the <h1> at the top of the text
    if not paragraphs:
        raise _Skip("empty: no text left after removing boilerplate")
    text = "\n\n".join(paragraphs)
    title = title or _title_from_text(text)
    return Article(
        doc_id=make_doc_id(title, text),
        title=title,
        text=text,
        lang=lang or detect_language(text),
        source=source,
        url=url,
        date=date,
        **meta,
    )


def _split_title(lines: list[str]) -> tuple[str | None, list[str]]:
    """(title, body lines): the first content line is the title if it reads like one and more follows."""
    for index, raw in enumerate(lines):
        line = _normalize_line(raw)
        if not line or is_boilerplate(line):
            continue
        rest = lines[index + 1 :]
        has_body = any(_normalize_line(other) and not is_boilerplate(other) for other in rest)
        if has_body and _looks_like_title(line):
            return line, rest
        return None, lines[index:]
    return None, []


def _looks_like_title(line: str) -> bool:
    return len(line) <= 150 and _word_count(line) <= 25 and line[-1] not in ".。"


def _title_from_text(text: str) -> str:
    """For an article without a title: its first sentence, shortened to about 100 characters."""
    spans = split_sentences(text)
    first = text[spans[0][0] : spans[0][1]] if spans else text
    if len(first) <= 100:
        return first
    cut = first.rfind(" ", 0, 100)
    cut = cut if cut >= 50 else 100
    return first[:cut].rstrip(" ,;:") + "…"


# --- formats ---------------------------------------------------------------------------------------


def _read_text(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    title, body = _split_title(text.split("\n"))
    return [_build_article(title, body, source)], []


_FENCE = re.compile(r"(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"(#{1,6})\s+(.*?)(?:\s+#+)?\s*")
_RULE_OR_UNDERLINE = re.compile(r"(?:[-*_=]\s*){3,}")
_LIST_OR_QUOTE = re.compile(r"(?:>\s?)+|[-*+]\s+|\d{1,3}[.)]\s+")
_LINK_DEFINITION = re.compile(r"\[[^\]]+\]:\s*\S+.*")
_INLINE_RULES = (
    (re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]"), ""),  # images are dropped
    (re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\[[^\]]*\]"), r"\1\2"),  # links keep their text
    (re.compile(r"<(https?://[^>\s]+)>"), r"\1"),
    (re.compile(r"<!--.*?-->|</?[A-Za-z][^>]*>"), ""),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (
        re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"),
        r"\1\2",
    ),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!>~|])"), r"\1"),
)
_FRONT_MATTER_FIELD = re.compile(r"(title|date|url|link|lang|language)\s*:\s*(.*)", re.IGNORECASE)


def _read_markdown(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    fields, text = _front_matter(text)
    heading, lines = _markdown_lines(text)
    title = heading or fields.get("title")
    if title is None:
        title, lines = _split_title(lines)
    lang = normalize_lang_code(fields["lang"]) if fields.get("lang") else None
    return [
        _build_article(title, lines, source, lang=lang, url=fields.get("url"), date=fields.get("date"))
    ], []


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """Read `key: value` fields of a leading `---` block (a YAML subset: enough for title and date)."""
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        return {}, text
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            fields = {}
            for line in lines[1:index]:
                match = _FRONT_MATTER_FIELD.fullmatch(line.strip())
                if match and match.group(2).strip():
                    key = {"link": "url", "language": "lang"}.get(
                        match.group(1).lower(), match.group(1).lower()
                    )
                    fields[key] = match.group(2).strip().strip("'\"")
            return fields, "\n".join(lines[index + 1 :])
    return {}, text


def _markdown_lines(text: str) -> tuple[str | None, list[str]]:
    """(first `# ` heading, plain-text lines): markup removed, soft-wrapped paragraphs joined, code kept."""
    title: str | None = None
    out: list[str] = []
    paragraph: list[str] = []
    fence: str | None = None
    for raw in text.split("\n"):
        stripped = raw.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
                out.append("")
            else:
                out.append(raw.rstrip())
            continue
        block = _markdown_block(stripped)
        if block is None:
            paragraph.append(_markdown_inline(stripped))
            continue
        _end_paragraph(out, paragraph)
        kind, content = block
        if kind == "fence":
            fence = content
        elif kind == "heading" and content.startswith("# ") and title is None:
            title = _markdown_inline(content[2:])
        elif kind == "heading":
            out.extend([_markdown_inline(content.lstrip("#").strip()), ""])
        elif kind == "item":
            paragraph.append(_markdown_inline(content))
    _end_paragraph(out, paragraph)
    return title, out


def _markdown_block(line: str) -> tuple[str, str] | None:
    """Classify a line that is not plain paragraph text: (kind, content), else None."""
    if not line or _RULE_OR_UNDERLINE.fullmatch(line) or _LINK_DEFINITION.fullmatch(line):
        return ("break", "")
    fence = _FENCE.match(line)
    if fence:
        return ("fence", fence.group(1)[:3])
    heading = _ATX_HEADING.fullmatch(line)
    if heading:
        return ("heading", f"{heading.group(1)} {heading.group(2)}")
    marker = _LIST_OR_QUOTE.match(line)
    if marker and marker.end() < len(line):
        return ("item", line[marker.end() :])
    return None


def _end_paragraph(out: list[str], paragraph: list[str]) -> None:
    # In Markdown a single newline is a space: the lines of a paragraph are one line of text.
    if paragraph:
        out.extend([" ".join(paragraph), ""])
        paragraph.clear()


def _markdown_inline(text: str) -> str:
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    return text


def _read_html(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    title, body, url, date, meta = _extract_html(text)
    return [_build_article(title, body.split("\n"), source, url=url, date=date, **meta)], []


def _warc_article(page: WarcPage, source: str) -> Article:
    """One HTML response of a web archive: decoded with its HTTP charset, its URL and crawl date kept."""
    text, encoding = _decode(page.body, markup=True, transport=page.charset)
    title, body, url, date, meta = _extract_html(text)
    meta.update(outlet=meta.get("outlet") or page_host(page.url), crawl_date=iso_date(page.date))
    return _build_article(
        title, body.split("\n"), source, url=page.url or url, date=date, encoding=encoding, **meta
    )


def _read_warc(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    _check_regular_file(path)
    return read_warc(path, source, _warc_article, max_bytes=max_bytes, workers=_WARC_WORKERS)


def _extract_html(html: str) -> tuple[str | None, str, str | None, str | None, dict[str, str | None]]:
    """(title, main text, url, date, {outlet, author}) of an HTML page, menus, footers and scripts left out.

    The date is the page's own publication date (trafilatura reads `article:published_time`,
    JSON-LD `datePublished`, `<time>` and more), in ISO 8601; the outlet is the site's name,
    else the host of the page's URL.

    trafilatura finds the main text; when it fails or gives up (it returns nothing for
    pathological pages, e.g. 10,000 nested <div>s), a linear, non-recursive parser of the
    standard library takes the text outside scripts, navigation, headers and footers.
    """
    import trafilatura  # slow to import: only when there is HTML to read

    try:
        body = trafilatura.extract(
            html, output_format="txt", include_comments=False, include_tables=True, include_links=False
        )
    except (Exception, RecursionError):  # noqa: BLE001 - a third-party parser on hostile input: never fatal
        body = None
    try:
        meta = trafilatura.extract_metadata(html, extensive=False)
        title, url, date = meta.title, meta.url, iso_date(meta.date)
        extra = {"outlet": meta.sitename or page_host(url), "author": meta.author}
    except (Exception, RecursionError):  # noqa: BLE001 - as above
        title = url = date = None
        extra = {"outlet": None, "author": None}
    if body and title:
        return title, body, url, date, extra
    fallback = _FallbackHTMLText.parse(html)
    return title or fallback.title(), body or fallback.text(), url, date, extra


class _FallbackHTMLText(HTMLParser):
    """Text of an HTML page outside scripts, styles, navigation, headers, footers and forms."""

    _SKIPPED = frozenset(
        ("script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form")
        + ("iframe", "button", "select", "head")
    )
    _BLOCKS = frozenset(
        ("p", "div", "br", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "td", "th", "section", "article")
        + ("main", "blockquote", "pre", "ul", "ol", "table", "hr")
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.open_tag: str | None = None
        self.captured: dict[str, str] = {}

    @classmethod
    def parse(cls, html: str) -> _FallbackHTMLText:
        parser = cls()
        try:
            parser.feed(html)
            parser.close()
        except Exception:  # noqa: BLE001 - html.parser is lenient; if it still fails, keep what it read
            return parser
        return parser

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.skip_depth = 0  # an unclosed <head> must not hide the page
        elif tag in self._SKIPPED:
            self.skip_depth += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        if tag == "meta":
            values = dict(attrs)
            if values.get("property") == "og:title" and values.get("content"):
                self.captured.setdefault("og:title", values["content"] or "")
        self.open_tag = tag if tag in ("title", "h1") and tag not in self.captured else None

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED and self.skip_depth:
            self.skip_depth -= 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        self.open_tag = None

    def handle_data(self, data: str) -> None:
        if self.open_tag and data.strip():
            self.captured[self.open_tag] = data.strip()
        if not self.skip_depth:
            self.parts.append(data)

    def title(self) -> str | None:
        """og:title, else the first <h1>, else <title>."""
        return self.captured.get("og:title") or self.captured.get("h1") or self.captured.get("title")

    def text(self) -> str:
        return "".join(self.parts)


def _read_jsonl(text: str, source: str) -> tuple[list[Article], list[SkippedFile]]:
    """One article per line; a bad line is reported with its number and the others still load."""
    articles, skipped = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        line_source = f"{source}#{number}"
        try:
            articles.append(_jsonl_article(line, line_source))
        except _Skip as skip:
            skipped.append(SkippedFile(source=line_source, reason=f"line {number}: {skip.reason}"))
        except Exception as exc:  # noqa: BLE001 -- a reader bug on one article must not lose the others
            skipped.append(SkippedFile(source=line_source, reason=f"line {number}: {_unexpected(line_source, exc)}"))
    if not articles and not skipped:
        raise _Skip("empty file")
    return articles, skipped


def _jsonl_article(line: str, source: str) -> Article:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise _Skip(f"invalid JSON ({error.msg} at column {error.colno})") from None
    except RecursionError:
        raise _Skip("invalid JSON (nested too deeply)") from None
    if not isinstance(record, dict):
        raise _Skip(f"expected a JSON object with a 'text' field, not {type(record).__name__}")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Skip("'text' is missing or is not a non-empty string")
    title, url, date, declared = (_optional_string(record, key) for key in ("title", "url", "date", "lang"))
    for key, value in (("text", text), ("title", title), ("url", url), ("date", date), ("lang", declared)):
        _check_no_surrogate(key, value)
    lang = normalize_lang_code(declared) if declared else None
    if declared and lang is None:
        raise _Skip(f"'lang' {declared!r} is not an ISO 639-1 language code (such as 'en' or 'fr')")
    lines = text.split("\n")
    if not title:
        title, lines = _split_title(lines)
    return _build_article(title, lines, source, lang=lang, url=url, date=date)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_no_surrogate(key: str, value: str | None) -> None:
    # JSON can escape half of a UTF-16 pair ("\ud800") alone: no text can hold it.
    found = _SURROGATE.search(value or "")
    if found:
        raise _Skip(
            f"{key!r} holds a lone surrogate \\u{ord(found.group()):04x} at character {found.start()}: "
            "an escape of half a UTF-16 pair, which is not text; fix that escape"
        )


def _optional_string(record: dict[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _Skip(f"{key!r} must be a string, not {type(value).__name__}")


_READERS: dict[str, Callable[[str, str], tuple[list[Article], list[SkippedFile]]]] = {
    ".txt": _read_text,
    ".md": _read_markdown,
    ".markdown": _read_markdown,
    ".html": _read_html,
    ".htm": _read_html,
    ".jsonl": _read_jsonl,
}

def _read_feed(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    """One article per entry of an RSS/Atom feed; a bad entry is reported and the others load."""
    articles, skipped = [], []
    for entry in parse_feed(_read_bytes(path, max_bytes)):
        entry_source = f"{source}#{entry.number}"
        body = _FallbackHTMLText.parse(entry.html).text() if "<" in entry.html else entry.html
        meta = {"outlet": entry.outlet or page_host(entry.link), "author": entry.author}
        try:
            articles.append(_build_article(
                entry.title, body.split("\n"), entry_source, url=entry.link, date=entry.date,
                encoding=entry.encoding, is_summary=entry.is_summary, **meta,
            ))
        except _Skip as skip:
            skipped.append(SkippedFile(source=entry_source, reason=f"entry {entry.number}: {skip.reason}"))
    return articles, skipped


def _read_pdf(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    """A PDF's text layer as one article; `page_starts` keeps where each page begins in the text."""
    pdf = read_pdf_pages(_read_bytes(path, max_bytes))
    pages = [clean_lines(page.split("\n")) for page in pdf.pages]
    title = _normalize_line(pdf.title) if pdf.title else None
    first = next((page for page in pages if page), [])
    if not title and len(first) > 1 and _looks_like_title(first[0]):
        title = first.pop(0)
    paragraphs: list[str] = []
    starts: list[int] = []
    offset = 0
    for page in pages:
        starts.append(offset)
        for paragraph in page:
            paragraphs.append(paragraph)
            offset += len(paragraph) + 2  # the blank line that joins paragraphs
    if not paragraphs:
        raise _Skip("empty: no text left after removing boilerplate")
    text = "\n\n".join(paragraphs)
    title = title or _title_from_text(text)
    article = Article(
        doc_id=make_doc_id(title, text), title=title, text=text, lang=detect_language(text), source=source,
        date=pdf.date, author=pdf.author, page_starts=starts,
    )
    return [article], []


_FILE_READERS: dict[str, Callable[[Path, str, int], tuple[list[Article], list[SkippedFile]]]] = {
    ".warc": _read_warc,
    ".warc.gz": _read_warc,
    ".rss": _read_feed,
    ".atom": _read_feed,
    ".xml": _read_feed,
    ".pdf": _read_pdf,
}


def page_host(url: str | None) -> str | None:
    """The host of a URL without 'www.': the outlet of a page that does not name its site."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname if url else None
    return host.removeprefix("www.") if host else None

# --- files ----------------------------------------------------------------------------------------


def load_corpus(
    corpus_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[Article], list[SkippedFile]]:
    """Read every supported file under `corpus_dir` (recursively) into articles.

    Returns (articles, skipped), both sorted by source (file path, then .jsonl line number).
    Hidden files and folders are ignored; every other file that cannot be used is in
    `skipped` with the reason. An article identical to an earlier one is skipped as a duplicate.
    Raises IngestError when `corpus_dir` is not a folder.
    """
    root = Path(corpus_dir)
    if not root.is_dir():
        raise IngestError(f"corpus folder {str(root)!r} does not exist or is not a folder; set QA_CORPUS_DIR")
    articles: list[Article] = []
    skipped: list[SkippedFile] = []
    for path, problem in _walk(root, root):
        source = _source_name(path, root)
        try:
            if problem:
                raise _Skip(problem)
            found, bad_lines = _read_source(path, source, max_bytes)
        except _Skip as skip:
            skipped.append(SkippedFile(source=source, reason=skip.reason))
            continue
        except Exception as exc:  # noqa: BLE001 -- a reader bug on one file must not stop the build
            skipped.append(SkippedFile(source=source, reason=_unexpected(source, exc)))
            continue
        articles.extend(found)
        skipped.extend(bad_lines)
    unique, duplicates = _drop_duplicates(sorted(articles, key=lambda article: _source_key(article.source)))
    skipped = sorted(skipped + duplicates, key=lambda skip: _source_key(skip.source))
    return unique, skipped


def read_file(path: Path, corpus_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Article]:
    """Read one corpus file: one article, or one per valid line of a .jsonl file.

    Raises IngestError, naming the file and what is wrong, when the file cannot be used
    (or, for .jsonl, when no line can). Bad lines among good ones are left out; use
    `load_corpus` to get them listed.
    """
    path, root = Path(path), Path(corpus_dir)
    source = _source_name(path, root)
    try:
        problem = _symlink_problem(path, root) if path.is_symlink() else None
        if problem:
            raise _Skip(problem)
        articles, bad_lines = _read_source(path, source, max_bytes)
    except _Skip as skip:
        raise IngestError(f"{source}: {skip.reason}") from None
    if not articles:
        raise IngestError(f"{source}: no usable line: " + "; ".join(bad.reason for bad in bad_lines[:3]))
    return articles


def _unexpected(source: str, exc: Exception) -> str:
    """The reason given for a file or line that failed in an unforeseen way (traceback in the debug log)."""
    log.debug("reading %s failed", source, exc_info=exc)
    return (
        f"could not be read ({unexpected_reason(exc)}); fix or remove it and run `qa index` again "
        "(QA_DEBUG=1 shows the details)"
    )


def _walk(root: Path, folder: Path) -> Iterator[tuple[Path, str | None]]:
    """(path, problem or None) for each non-hidden file under `folder`, symlinks checked, not followed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        yield folder, f"cannot list the folder: {error.strerror or error}"
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        if entry.is_symlink():
            problem = _symlink_problem(path, root)
            if problem is None and path.is_dir():
                problem = "symlinked folder: not followed"
            yield path, problem
        elif entry.is_dir(follow_symlinks=False):
            yield from _walk(root, path)
        else:
            yield path, None


def _symlink_problem(path: Path, root: Path) -> str | None:
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink (its target does not exist or loops)"
    if not target.is_relative_to(root.resolve()):
        return f"symlink to {target}, outside the corpus folder"
    return None


def _read_source(path: Path, source: str, max_bytes: int) -> tuple[list[Article], list[SkippedFile]]:
    if any(0xD800 <= ord(char) <= 0xDFFF for char in source):
        raise _Skip("the file name is not valid UTF-8; rename the file")
    name = path.name.lower()
    for ending, binary_reader in _FILE_READERS.items():  # kinds read from the file, not from decoded text
        if name.endswith(ending):
            return binary_reader(path, source, max_bytes)
    extension = path.suffix.lower()
    reader = _READERS.get(extension)
    if reader is None:
        kind = f"'{extension}'" if extension else "(no extension)"
        raise _Skip(f"unsupported file type {kind}; supported: {', '.join(SUPPORTED_EXTENSIONS)}")
    text, encoding = _decode(_read_bytes(path, max_bytes), markup=extension in (".html", ".htm"))
    articles, skipped = reader(text, source)
    return [article.model_copy(update={"encoding": encoding}) for article in articles], skipped


def _check_regular_file(path: Path) -> None:
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise _Skip("not a regular file")
    except OSError as error:
        raise _Skip(f"cannot read the file: {error.strerror or error}") from None


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _Skip("not a regular file")
        if info.st_size > max_bytes:
            raise _Skip(f"too large: {_size(info.st_size)}, over the {_size(max_bytes)} limit (max_bytes)")
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise _Skip(f"cannot read the file: {error.strerror or error}") from None
    if len(data) > max_bytes:  # it grew since stat()
        raise _Skip(f"too large: over the {_size(max_bytes)} limit (max_bytes)")
    return data


def _decode(data: bytes, *, markup: bool = False, transport: str | None = None) -> tuple[str, str]:
    """Bytes -> (text, encoding name): see qa.readers.encoding; binary and empty files are refused."""
    text, encoding = _encoding.decode(data, markup=markup, transport=transport)
    share = _control_share(text)
    if share > _BINARY_CONTROL_SHARE:
        raise _Skip(f"binary file ({share:.0%} control characters)")
    if not text.strip():
        raise _Skip("empty file")
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")), encoding


def _control_share(text: str) -> float:
    return len(_CONTROL_CHARS.findall(text)) / max(len(text), 1)


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


def _source_name(path: Path, root: Path) -> str:
    """Corpus-relative path with forward slashes."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        try:
            relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
        except ValueError:
            raise IngestError(f"{path}: not inside the corpus folder {root}") from None
    return relative.as_posix()


def _source_key(source: str) -> tuple[str, int]:
    # "a.jsonl#10" after "a.jsonl#9": line numbers sort as numbers.
    name, _, line = source.rpartition("#")
    if line.isdigit():  # a .jsonl line, a web archive's record offset
        return name, int(line)
    return source, 0


def _drop_duplicates(articles: list[Article]) -> tuple[list[Article], list[SkippedFile]]:
    first_source: dict[str, str] = {}
    unique, duplicates = [], []
    for article in articles:
        if article.doc_id in first_source:
            reason = f"duplicate: same title and text as {first_source[article.doc_id]}"
            duplicates.append(SkippedFile(source=article.source, reason=reason))
        else:
            first_source[article.doc_id] = article.source
            unique.append(article)
    return unique, duplicates

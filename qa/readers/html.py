"""HTML pages: the main text, title, URL, date, outlet and author (trafilatura, else a fallback parser)."""

from __future__ import annotations

from html.parser import HTMLParser

from qa.readers.dates import iso_date

__all__ = ["FallbackHTMLText", "extract_html", "page_host"]


def extract_html(html: str) -> tuple[str | None, str, str | None, str | None, dict[str, str | None]]:
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
    fallback = FallbackHTMLText.parse(html)
    return title or fallback.title(), body or fallback.text(), url, date, extra


class FallbackHTMLText(HTMLParser):
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
    def parse(cls, html: str) -> FallbackHTMLText:
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


def page_host(url: str | None) -> str | None:
    """The host of a URL without 'www.': the outlet of a page that does not name its site."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname if url else None
    return host.removeprefix("www.") if host else None

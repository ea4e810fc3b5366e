"""Writing small web archives for the tests, with warcio (the library that reads them)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter


def write_warc(path: Path, records: list[dict], *, gzip: bool = True) -> Path:
    """records: dicts with url, body (bytes), and optionally type ('response'), status (200),
    content_type ('text/html; charset=utf-8'), date ('2024-03-01T10:00:00Z')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        writer = WARCWriter(stream, gzip=gzip)
        for spec in records:
            kind = spec.get("type", "response")
            status = spec.get("status", 200)
            headers = StatusAndHeaders(
                f"{status} {'OK' if status == 200 else 'Other'}",
                [("Content-Type", spec.get("content_type", "text/html; charset=utf-8"))],
                protocol="HTTP/1.1",
            )
            if kind == "request":
                headers = StatusAndHeaders("GET / HTTP/1.1", [("Host", "example.org")], is_http_request=True)
            record = writer.create_warc_record(
                spec["url"],
                kind,
                payload=BytesIO(spec.get("body", b"")),
                http_headers=headers,
                warc_headers_dict={"WARC-Date": spec.get("date", "2024-03-01T10:00:00Z")},
            )
            writer.write_record(record)
    return path


def page(title: str, paragraphs: list[str], head: str = "") -> str:
    """A news page: navigation, the article, a footer."""
    body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
    return (
        f"<!DOCTYPE html><html><head>{head}<title>{title}</title></head><body>"
        f"<nav><a href='/'>Home</a> <a href='/world'>World</a></nav>"
        f"<article><h1>{title}</h1>\n{body}</article><footer>News</footer></body></html>"
    )

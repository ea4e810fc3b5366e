"""Tiny PDFs written byte by byte for the tests: pages of text in Helvetica, no library needed."""

from __future__ import annotations

import io
import textwrap


def _escape(line: str) -> bytes:
    return line.encode("cp1252").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _content(paragraphs: list[str]) -> bytes:
    lines: list[str] = []
    for paragraph in paragraphs:
        lines += [*textwrap.wrap(paragraph, 90), ""]
    ops = [b"BT /F1 10 Tf 40 800 Td 13 TL"] + [b"(" + _escape(line) + b") Tj T*" for line in lines] + [b"ET"]
    return b"\n".join(ops)


def make_pdf(pages: list[list[str]], *, title: str | None = None, author: str | None = None,
             created: str | None = None) -> bytes:
    """A PDF whose page i shows the paragraphs pages[i]; an empty list gives a page without text."""
    objects: list[bytes] = []
    n_pages = len(pages)
    page_ids = [4 + 2 * i for i in range(n_pages)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = b" ".join(b"%d 0 R" % i for i in page_ids)
    objects.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % n_pages)
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, paragraphs in enumerate(pages):
        stream = _content(paragraphs) if paragraphs else b"0.5 g 40 40 500 700 re f"  # a picture, no text
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (page_ids[i] + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = []
    for key, value in (("Title", title), ("Author", author), ("CreationDate", created)):
        if value:
            info.append(b"/" + key.encode() + b" (" + _escape(value) + b")")
    objects.append(b"<< " + b" ".join(info) + b" >>")
    info_id = len(objects)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, info_id, xref))
    return out.getvalue()


def encrypt(pdf: bytes, password: str) -> bytes:
    """The same PDF, locked with a user password (RC4, which pypdf writes without extra packages)."""
    from pypdf import PdfWriter

    writer = PdfWriter(clone_from=io.BytesIO(pdf))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()

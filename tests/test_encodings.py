"""Legacy encodings: real text in each, declared or not, reads back to the same article as UTF-8.

Texts: the seed corpus (French, German, Japanese), XQuAD (Chinese, Russian, Greek, Arabic, Thai,
Spanish, Turkish), the Korean bodies of the extraction benchmark's ground truth, and a traditional
Chinese text written for these tests (neither set has one). The public sets are found as `qa eval`
finds them; without them those cases are skipped.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

import pytest

from qa.errors import IngestError
from qa.ingest import load_corpus, read_file
from qa.readers.aeb import find_aeb
from qa.readers.encoding import declared_charset, decode
from qa.xquad import find_xquad

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "corpus"

# (language, Python codec, label a page would declare, whether detection must find it undeclared)
CASES = [
    ("zh", "gb18030", "GB18030", True),
    ("zh", "gbk", "GBK", True),
    ("zh", "gb2312", "gb2312", True),
    ("zh-Hant", "big5", "Big5", True),
    ("ja", "shift_jis", "Shift_JIS", True),
    ("ja", "euc_jp", "EUC-JP", True),
    ("ko", "euc_kr", "EUC-KR", True),
    ("de", "cp1250", "windows-1250", True),
    ("ru", "cp1251", "windows-1251", True),
    ("es", "cp1252", "windows-1252", True),
    ("fr", "iso8859-15", "ISO-8859-15", True),
    ("de", "iso8859-1", "ISO-8859-1", True),
    ("el", "iso8859-7", "ISO-8859-7", True),
    ("ru", "iso8859-5", "ISO-8859-5", True),
    ("ar", "iso8859-6", "ISO-8859-6", True),
    ("ru", "koi8-r", "KOI8-R", True),
    ("th", "tis-620", "TIS-620", True),
    # Turkish in windows-1254 reads as windows-1252 too often to be guessed (benchmarks/README.md):
    # declared, it is exact.
    ("tr", "cp1254", "windows-1254", False),
]


@cache
def real_paragraphs(lang: str) -> tuple[str, ...]:
    """Paragraphs of real text in `lang`."""
    paragraphs: list[str] = []
    if lang in ("fr", "de", "ja"):
        for path in sorted(CORPUS.glob(f"{lang}-*.txt")):
            paragraphs += [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    elif lang == "zh-Hant":
        paragraphs = (ROOT / "tests" / "data" / "zh_hant_news.txt").read_text(encoding="utf-8").split("\n\n")
    elif lang == "ko":
        aeb = find_aeb()
        if aeb is None:
            pytest.skip("the extraction benchmark's data (data/aeb) is not here")
        bodies = json.loads((aeb / "ground-truth.json").read_text(encoding="utf-8"))
        korean = next(b["articleBody"] for b in bodies.values() if "엔터미디어" in b["articleBody"])
        paragraphs = [p.strip() for p in korean.split("\n") if p.strip()]
    else:
        xquad = find_xquad()
        if xquad is None:
            pytest.skip("XQuAD (data/xquad) is not here")
        data = json.loads((xquad / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        paragraphs = [p["context"] for article in data["data"] for p in article["paragraphs"]]
    return tuple(paragraphs)


def encodable(lang: str, codec: str, size: int = 1500) -> str:
    """About `size` characters of the paragraphs that `codec` can hold (ISO-8859 has no curly quotes,
    GB2312 no rare characters), separated by blank lines."""
    kept: list[str] = []
    for paragraph in real_paragraphs(lang):
        try:
            paragraph.encode(codec)
        except UnicodeEncodeError:
            continue
        kept.append(paragraph)
        if sum(map(len, kept)) >= size:
            break
    assert sum(map(len, kept)) > 300, f"too little {lang} text fits {codec}"
    return "\n\n".join(kept)


def html_page(title: str, body: str, head: str) -> str:
    paragraphs = "".join(f"<p>{p}</p>\n" for p in body.split("\n\n"))
    return (
        f"<!DOCTYPE html>\n<html><head>{head}<title>{title}</title></head>\n"
        f"<body><nav><a href='/'>Home</a></nav><article><h1>{title}</h1>\n{paragraphs}</article></body></html>"
    )


def same_article(tmp_path: Path, name: str, data: bytes, utf8: str):
    """(article read from `data`, article read from the same content saved as UTF-8)."""
    legacy = tmp_path / "legacy" / name
    plain = tmp_path / "utf8" / name
    for path, content in ((legacy, data), (plain, utf8.encode("utf-8"))):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (got,) = read_file(legacy, legacy.parent)
    (want,) = read_file(plain, plain.parent)
    return got, want


@pytest.mark.parametrize(("lang", "codec", "label", "undeclared"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_declared_html_reads_back_identical(tmp_path: Path, lang: str, codec: str, label: str, undeclared: bool):
    text = encodable(lang, codec)
    title, body = text.split("\n\n")[0][:60], text
    for n, head in enumerate((
        f'<meta charset="{label}">',
        f'<meta http-equiv="Content-Type" content="text/html; charset={label}">',
    )):
        page = html_page(title, body, head)
        got, want = same_article(tmp_path / str(n), "page.html", page.encode(codec), page)
        assert (got.title, got.text) == (want.title, want.text)
        assert got.doc_id == want.doc_id and got.encoding != "UTF-8"


@pytest.mark.parametrize(("lang", "codec", "label", "undeclared"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_undeclared_text_reads_back_identical(tmp_path: Path, lang: str, codec: str, label: str, undeclared: bool):
    if not undeclared:
        pytest.skip(f"{label} is not told apart from windows-1252 without a declaration")
    text = encodable(lang, codec)
    got, want = same_article(tmp_path, "article.txt", text.encode(codec), text)
    assert (got.title, got.text) == (want.title, want.text)
    assert got.encoding != "UTF-8"


def test_declared_gb2312_is_read_as_gb18030(tmp_path: Path) -> None:
    # Pages labelled GB2312 routinely hold GBK/GB18030 characters (镕 is not in GB2312): browsers decode
    # the label as GB18030, and so do we.
    text = encodable("zh", "gb18030") + "\n\n朱镕基曾任国务院总理。"
    with pytest.raises(UnicodeEncodeError):
        text.encode("gb2312")
    page = html_page("新闻", text, '<meta charset="gb2312">')
    got, want = same_article(tmp_path, "page.html", page.encode("gb18030"), page)
    assert got.text == want.text and "朱镕基" in got.text and got.encoding == "GB18030"


def test_xml_declaration_is_honoured() -> None:
    text = encodable("ru", "koi8-r")
    data = f'<?xml version="1.0" encoding="KOI8-R"?>\n<html><body><p>{text}</p></body></html>'.encode("koi8-r")
    assert declared_charset(data) == "KOI8-R"
    assert decode(data, markup=True) == (data.decode("koi8-r"), "KOI8-R")


def test_transport_charset_comes_before_the_page_own() -> None:
    text = encodable("ru", "cp1251")
    data = f'<meta charset="koi8-r"><p>{text}</p>'.encode("cp1251")
    assert decode(data, markup=True, transport="windows-1251")[1] == "windows-1251"


def test_page_declaring_latin1_but_written_in_utf8_is_read_as_utf8(tmp_path: Path) -> None:
    # A common mislabel: the template says ISO-8859-1, the editor saved UTF-8. Read as declared it
    # would turn every "é" into "Ã©"; valid multi-byte UTF-8 does not happen by chance.
    text = encodable("fr", "utf-8")
    page = html_page("Titre", text, '<meta charset="iso-8859-1">')
    got, want = same_article(tmp_path, "page.html", page.encode("utf-8"), page)
    assert got.text == want.text and got.encoding == "UTF-8" and "Ã" not in got.text


def test_page_declaring_utf8_but_written_in_windows_1251_is_detected(tmp_path: Path) -> None:
    text = encodable("ru", "cp1251")
    page = html_page("Новости", text, '<meta charset="utf-8">')
    got, want = same_article(tmp_path, "page.html", page.encode("cp1251"), page)
    assert got.text == want.text and got.encoding == "windows-1251"


def test_undecidable_bytes_are_skipped_naming_the_best_guess(tmp_path: Path) -> None:
    rng = random.Random(1)
    alphabet = bytes(range(0x20, 0x7F)) + bytes(range(0xA0, 0x100))
    noise = bytes(rng.choice(alphabet) for _ in range(3000))
    (tmp_path / "noise.txt").write_bytes(noise)
    with pytest.raises(IngestError, match=r"noise.txt: not UTF-8 and declares no encoding.*(best guess|no encoding)"):
        read_file(tmp_path / "noise.txt", tmp_path)


def test_binary_files_are_still_skipped(tmp_path: Path) -> None:
    (tmp_path / "image.html").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    (tmp_path / "blob.txt").write_bytes(bytes(random.Random(2).randrange(256) for _ in range(5000)))
    articles, skipped = load_corpus(tmp_path)
    assert not articles
    reasons = {skip.source: skip.reason for skip in skipped}
    assert reasons["image.html"].startswith("binary file") and reasons["blob.txt"].startswith("binary file")

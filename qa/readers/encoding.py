"""Bytes -> text: the encoding a file declares, else UTF-8, else a measured guess.

Order, as browsers do: a byte-order mark; the transport's charset (a web archive's HTTP
`Content-Type`); the page's own declaration (`<meta charset>`, `http-equiv` Content-Type, the XML
declaration). Declared labels are read as browsers read them (WHATWG Encoding Standard): GB2312
and GBK as GB18030, Shift_JIS as windows-31j, EUC-KR as windows-949, ISO-8859-1 as windows-1252,
all supersets. Without a declaration, text that is not UTF-8 goes to charset-normalizer and is
accepted only when its confidence reaches `MIN_DETECT_CONFIDENCE` (measured by
benchmarks/bench_encoding.py); below that the file is skipped with the best guess named.
"""

from __future__ import annotations

import codecs
import re

from qa.readers.base import Skip

__all__ = [
    "BINARY_CONTROL_SHARE",
    "MIN_DETECT_CONFIDENCE",
    "browser_codec",
    "declared_charset",
    "decode",
    "display_name",
]

# benchmarks/bench_encoding.py: every correct guess on real text of 300+ bytes scored >= 0.90,
# while guesses on random bytes and wrong guesses scored lower; see benchmarks/README.md.
MIN_DETECT_CONFIDENCE = 0.9

BINARY_CONTROL_SHARE = 0.05  # text files have tabs and newlines, hardly any other control character
# Only C0 controls: bytes 0x80-0x9f are lead and trail bytes of Shift_JIS, GBK and Big5, and curly
# quotes in windows-1252.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
_BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts like UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xef\xbb\xbf", "utf-8", "UTF-8"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
)
_SNIFF_BYTES = 4096  # browsers look at the first 1024; pages with long <head>s declare later
_META_CHARSET = re.compile(rb"""<meta\s[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_DETECT_BYTES = 262_144  # enough to be sure; the whole file is then decoded strictly

# WHATWG labels whose browser decoder is a superset of the Python codec of the same name.
_BROWSER_CODECS = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "gb_2312-80": "gb18030", "gb_2312": "gb18030",
    "chinese": "gb18030", "csgb2312": "gb18030", "iso-ir-58": "gb18030", "cp936": "gb18030", "gb18030": "gb18030",
    "big5": "big5hkscs", "big5-hkscs": "big5hkscs", "cn-big5": "big5hkscs", "x-x-big5": "big5hkscs",
    "csbig5": "big5hkscs", "cp950": "big5hkscs",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "ms_kanji": "cp932",
    "windows-31j": "cp932", "csshiftjis": "cp932", "ms932": "cp932",
    "euc-kr": "cp949", "euc_kr": "cp949", "ks_c_5601-1987": "cp949", "windows-949": "cp949", "korean": "cp949",
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "iso_8859-1": "cp1252", "latin1": "cp1252",
    "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "cp819": "cp1252",
    "iso-8859-9": "cp1254", "iso8859-9": "cp1254", "latin5": "cp1254",
    "tis-620": "cp874", "iso-8859-11": "cp874", "windows-874": "cp874",
    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8",  # a page that can declare it is not UTF-16
}
_DISPLAY_NAMES = {
    "utf-8": "UTF-8", "utf-16-le": "UTF-16", "utf-16-be": "UTF-16", "utf-32-le": "UTF-32", "utf-32-be": "UTF-32",
    "gb18030": "GB18030", "big5hkscs": "Big5", "cp932": "Shift_JIS", "euc_jp": "EUC-JP", "cp949": "EUC-KR",
    "iso2022_jp": "ISO-2022-JP", "koi8-r": "KOI8-R", "koi8-u": "KOI8-U", "mac-cyrillic": "x-mac-cyrillic",
}


def browser_codec(label: str) -> str | None:
    """The Python codec a browser would decode `label` with, or None for an unknown label."""
    label = label.strip().strip("\"'").lower()
    if label in _BROWSER_CODECS:
        return _BROWSER_CODECS[label]
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return _BROWSER_CODECS.get(name, name)


def display_name(codec: str) -> str:
    """The usual name of a codec: 'windows-1251', 'ISO-8859-7', 'GB18030'."""
    if codec in _DISPLAY_NAMES:
        return _DISPLAY_NAMES[codec]
    if codec.startswith("cp12"):
        return f"windows-{codec[2:]}"
    if codec.startswith("iso8859-"):
        return f"ISO-8859-{codec[8:]}"
    if codec == "cp874":
        return "windows-874"
    return codec


def declared_charset(data: bytes) -> str | None:
    """The charset a page declares in its first bytes: `<meta charset>`, http-equiv, XML declaration."""
    head = data[:_SNIFF_BYTES]
    match = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
    return match.group(1).decode("ascii") if match else None


def decode(data: bytes, *, markup: bool = False, transport: str | None = None) -> tuple[str, str]:
    """(text, encoding name) of a file's bytes; raises Skip for binary or undecidable bytes.

    `markup`: look for the page's own declaration (HTML, XML). `transport`: a charset given
    with the bytes (an HTTP header), which comes before the page's own, as in browsers.
    """
    bom = _decode_with_bom(data)
    if bom is not None:
        return bom
    if b"\x00" in data:
        raise Skip("binary file (it contains NUL bytes; UTF-16 text needs a byte-order mark)")
    label = transport or (declared_charset(data) if markup else None)
    codec = browser_codec(label) if label else None
    if _is_utf8(data):
        # Also when another encoding is declared: multi-byte UTF-8 sequences do not happen by chance
        # in other encodings, while UTF-8 pages labelled windows-1252 by their template are common.
        return data.decode("utf-8"), "UTF-8"
    if codec is not None:
        try:
            return data.decode(codec), display_name(codec)
        except UnicodeDecodeError as error:
            mislabel = f"declares {label} but byte 0x{data[error.start]:02x} at offset {error.start} is not {label}"
            return _detect(data, mislabel)
    if _control_share(data[:65536]) > BINARY_CONTROL_SHARE:
        raise Skip("binary file")
    unknown = f"declares an unknown encoding {label!r}" if label else "not UTF-8 and declares no encoding"
    return _detect(data, unknown)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _detect(data: bytes, why: str) -> tuple[str, str]:
    """Guess the encoding; accept it at MIN_DETECT_CONFIDENCE or more, else skip naming the guess."""
    codec, confidence = guess(data)
    if codec is None:
        raise Skip(f"{why}, and no encoding reads it; re-save the file as UTF-8")
    if confidence < MIN_DETECT_CONFIDENCE:
        raise Skip(
            f"{why}; best guess {display_name(codec)} at confidence {confidence:.2f}, under "
            f"{MIN_DETECT_CONFIDENCE}: declare the encoding (<meta charset>) or re-save the file as UTF-8"
        )
    try:
        return data.decode(codec), display_name(codec)
    except UnicodeDecodeError as error:  # the guess came from the first bytes only
        raise Skip(
            f"{why}; best guess {display_name(codec)} fails at offset {error.start}: re-save the file as UTF-8"
        ) from None


# The legacy encodings of the web (WHATWG), most used first: a guess is one of them, never a DOS or
# Mac code page that happens to read the bytes as well, and among equally good readings the more
# common encoding wins (windows-1252 over windows-1250 for Spanish "año": both read it, one right).
_WEB_CODECS = (
    "utf-8", "cp1252", "cp1251", "gb18030", "cp932", "cp1250", "euc_jp", "cp949", "big5hkscs", "cp1256",
    "cp1253", "cp1254", "cp874", "koi8-r", "iso8859-2", "iso8859-15", "iso8859-7", "iso8859-5", "iso8859-6",
    "cp1255", "cp1257", "cp1258", "iso8859-8", "iso8859-4", "iso8859-13", "koi8-u", "iso8859-3",
    "iso8859-10", "iso8859-14", "iso8859-16", "iso2022_jp",
)
_WEB_RANK = {codec: rank for rank, codec in enumerate(_WEB_CODECS)}
_NEAR_CHAOS = 0.01  # mess ratios this close are the same reading
_NEAR_COHERENCE = 0.01  # language coherence this close: let the more common encoding win


def guess(data: bytes) -> tuple[str | None, float]:
    """(browser codec, confidence 0..1) of the best web-encoding reading by charset-normalizer.

    Confidence is 1 minus the reading's mess ratio (share of unlikely characters and sequences).
    """
    from charset_normalizer import from_bytes  # imported only for files that need a guess

    sample = data[:_DETECT_BYTES]
    readings = _readings(from_bytes(sample))
    if readings and "cp1252" not in {codec for codec, _, _ in readings}:
        # charset-normalizer drops windows-1252 when an earlier code page read the bytes as well
        # ("crčme" for "crème"): the most common legacy encoding is always weighed.
        readings += _readings(from_bytes(sample, cp_isolation=["cp1252"]))
    # A reading with C1 control characters (ISO-8859-x of windows-1252's "œ") is not text.
    readings = [r for r in readings if not _has_c1(sample, r[0])] or readings
    if not readings:
        return None, 0.0
    least_chaos = min(chaos for _, chaos, _ in readings)
    near = [r for r in readings if r[1] <= least_chaos + _NEAR_CHAOS]
    most_coherent = max(coherence for _, _, coherence in near)
    near = [r for r in near if r[2] >= most_coherent - _NEAR_COHERENCE]
    codec, chaos, _ = min(near, key=lambda r: _WEB_RANK[r[0]])
    return codec, round(1.0 - chaos, 3)


_C1 = re.compile("[\x80-\x9f]")


def _has_c1(data: bytes, codec: str) -> bool:
    return bool(_C1.search(data.decode(codec, errors="ignore")))


def _readings(matches) -> list[tuple[str, float, float]]:
    """(web codec, mess ratio, language coherence) of each of charset-normalizer's matches."""
    readings = []
    for match in matches:
        codecs_ = [browser_codec(name) or name for name in match.could_be_from_charset]
        web = [codec for codec in codecs_ if codec in _WEB_RANK]
        if web:
            readings.append((min(web, key=_WEB_RANK.__getitem__), match.chaos, match.coherence))
    return readings


def _decode_with_bom(data: bytes) -> tuple[str, str] | None:
    for mark, codec, name in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                return data[len(mark) :].decode(codec), name
            except UnicodeDecodeError as error:
                raise Skip(
                    f"not valid {name} although it starts with a {name} byte-order mark "
                    f"({error.reason} at offset {error.start + len(mark)})"
                ) from None
    return None


def _control_share(data: bytes) -> float:
    return len(_CONTROL_BYTES.findall(data)) / max(len(data), 1)

"""Raw lines -> the article's paragraphs: normalised lines, boilerplate removed, wrapped lines joined."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

__all__ = ["CONTROL_CHARS", "clean_lines", "is_boilerplate", "normalize_line", "word_count"]

CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
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
    line = normalize_line(line)
    if not any(char.isalnum() for char in line):
        return True
    return any(rule(line) for rule in _BOILERPLATE_RULES)


def _is_scraper_token(line: str) -> bool:
    return bool(_PLACEHOLDER.fullmatch(line)) or line.lower().strip(".:!") in _SCRAPER_WORDS


def _is_locale_picker(line: str) -> bool:
    return bool(_LOCALE_PICKER.fullmatch(line))


def _is_logo(line: str) -> bool:
    return word_count(line) <= 5 and bool(_LOGO.fullmatch(line))


def _is_bare_label(line: str) -> bool:
    # One word ("Tags:", "Date :") or a date label ("Publié le :"): "See tweets :" introduces content.
    if not _LABEL.fullmatch(line):
        return False
    words = [word for word in line.split() if any(char.isalpha() for char in word)]
    return len(words) == 1 or bool(_DATE_LABEL.fullmatch(line))


def _is_call_to_action(line: str) -> bool:
    if line[-1] in ".?。？" or word_count(line) > _MAX_CTA_WORDS:
        return False
    return bool(_CALL_TO_ACTION.search(line.lower()))


def _is_social_follow(line: str) -> bool:
    if line[-1] in ".?。？" or word_count(line) > _MAX_SOCIAL_WORDS:
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
        line = normalize_line(raw)
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
    unique = list(dict.fromkeys(paragraphs))  # a repeated paragraph is kept where it first stands
    return _drop_trailing_headings(unique, {unique_before[at] for at in furniture_at})


def _continues(previous: str, line: str) -> bool:
    """Whether `line` is the rest of a hard-wrapped sentence begun on the previous line."""
    return previous[-1] not in _SENTENCE_END and line[0].islower()


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
    return word_count(paragraph) <= _MAX_HEADING_WORDS and paragraph[-1] not in _SENTENCE_END + '"”»'


def normalize_line(line: str) -> str:
    """NFC, no control or zero-width characters, single spaces, no surrounding whitespace."""
    line = _INVISIBLE_CHARS.sub("", CONTROL_CHARS.sub(" ", line))
    return " ".join(unicodedata.normalize("NFC", line).split())


def word_count(line: str) -> int:
    """Words in a line, counted so that CJK text weighs about as much as spaced text."""
    # CJK has no spaces: count two characters as a word, about what a word weighs there.
    return len(line.split()) + len(_CJK_CHAR.findall(line)) // 2

"""Articles -> passages: sentence splitting and token-budgeted packing, as pure functions.

A passage is a run of whole sentences whose token count (as the embedding model counts it,
prompt and special tokens included) fits the budget. Every passage is an exact slice of
its article's text, so citations can point back to character offsets.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qa.lang import ALWAYS_SENTENCE_ENDS, CJK_RANGES, LATIN_SENTENCE_ENDS, SENTENCE_CLOSERS
from qa.models import Article, Chunk

__all__ = [
    "CHUNKER_NAME",
    "CHUNKER_VERSION",
    "TokenCounter",
    "chunk_article",
    "chunking_params",
    "split_sentences",
]

TokenCounter = Callable[[list[str]], list[int]]
"""Returns the model's token count of each text, special tokens and passage prompt included.

The chunker never calls it with an empty list (tokenizers disagree on what an empty batch is:
Hugging Face's fast tokenizers raise IndexError on one)."""

CHUNKER_NAME = "sentence-pack"
CHUNKER_VERSION = 1  # bump whenever a change would move passage boundaries (the index must be rebuilt)

# Sentence terminators and what follows them, per script: see qa.lang, which owns them.
_LATIN_ENDS = LATIN_SENTENCE_ENDS
_ALWAYS_ENDS = ALWAYS_SENTENCE_ENDS
_CLOSERS = SENTENCE_CLOSERS
_CJK_RANGES = CJK_RANGES
_TERMINATOR_RUN = re.compile(
    "[" + re.escape(_LATIN_ENDS + _ALWAYS_ENDS + ";") + "]+[" + re.escape(_CLOSERS) + "]*"
)
_SPACED_CLOSER = re.compile("[ \u00a0\u202f]+[»›”」』）]+")
_LINE = re.compile(r"[^\n\r\u2028\u2029]+")

# Words that end with a dot without ending the sentence (lower case, final dot removed).
# Single letters (initials, French "M.") are handled separately.
_ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st vs cf fig figs no nos vol vols pp approx dept est ca gen gov sen rep
    col lt sgt capt mt ave blvd jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e u.s u.k u.n
    a.m p.m mme mlle mgr me pr ste env av boul
    z.b d.h u.a o.ä u.ä usw bzw evtl ggf vgl nr hr fr str inkl zzgl sog bspw jh jhd
    sra srta dra ud uds pág núm sig dott ing avv
    т.е т.к ул стр см им
    """.split()  # noqa: SIM905 - a word list reads best as text
)

_SOFT_BREAKS = ",;:、，；：)）」』”’»"  # a cut right after these reads better than mid-clause
_ZWJ = "\u200d"
_MAX_SEARCH_CANDIDATES = 8  # positions tried per count_tokens call when cutting a long sentence


@dataclass(frozen=True)
class _Unit:
    """A sentence, or a piece of a sentence too long for the budget."""

    start: int
    end: int
    tokens: int
    heading: bool


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Return the (start, end) character spans of the sentences of `text`, in order.

    Line breaks always end a sentence. `.!?…` end one when followed by whitespace and not
    by a lower-case word, and not after an abbreviation or an initial ("M.", "z.B.", "Dr.");
    `。！？．` (and `!?` next to CJK text) end one with no space needed. Spans exclude
    surrounding whitespace; together they cover every non-whitespace character.
    """
    spans: list[tuple[int, int]] = []
    for line in _LINE.finditer(text):
        cuts = [*_sentence_cuts(text, line.start(), line.end()), line.end()]
        begin = line.start()
        for cut in cuts:
            span = _strip_span(text, begin, cut)
            if span is not None:
                spans.append(span)
            begin = cut
    return spans


def chunk_article(
    article: Article, count_tokens: TokenCounter, max_tokens: int, overlap: int = 1
) -> list[Chunk]:
    """Pack the sentences of `article` into passages of at most `max_tokens` tokens.

    Consecutive passages share `overlap` sentences when that still leaves room for new text
    (otherwise less, or none). A sentence longer than the budget is cut into pieces at
    word or punctuation boundaries where possible. No text is dropped and no passage is
    over budget: each passage's count is checked with `count_tokens` before it is kept.
    Raises ValueError when the budget cannot hold even one character plus the prompt.
    """
    _check_params(max_tokens, overlap)
    text = article.text
    spans = split_sentences(text)
    if not spans:
        return []
    base, *counts = _count(count_tokens, [""] + [text[start:end] for start, end in spans])
    if base >= max_tokens:
        raise ValueError(
            f"max_tokens={max_tokens} leaves no room for text: an empty passage already counts {base}"
        )
    units: list[_Unit] = []
    for (start, end), tokens in zip(spans, counts):
        if tokens <= max_tokens:
            units.append(_Unit(start, end, tokens, _is_heading(text, start, end)))
        else:
            units.extend(_split_oversized(text, start, end, tokens, base, count_tokens, max_tokens))
    groups = _pack(text, units, base, count_tokens, max_tokens, overlap)
    return [
        Chunk(
            doc_id=article.doc_id,
            chunk_id=number,
            text=text[units[first].start : units[last - 1].end],
            start=units[first].start,
            end=units[last - 1].end,
            n_tokens=tokens,
        )
        for number, (first, last, tokens) in enumerate(groups)
    ]


def chunking_params(max_tokens: int, overlap: int) -> dict[str, str | int]:
    """Describe the chunker and its settings, for the index manifest (a change means a rebuild)."""
    _check_params(max_tokens, overlap)
    return {"name": CHUNKER_NAME, "version": CHUNKER_VERSION, "max_tokens": max_tokens, "overlap": overlap}


# --- sentence splitting -------------------------------------------------------------------


def _sentence_cuts(text: str, line_start: int, line_end: int) -> list[int]:
    """Offsets inside one line where a sentence ends."""
    cuts = [line_start]
    for match in _TERMINATOR_RUN.finditer(text, line_start, line_end):
        if not _has_letter(text, cuts[-1], match.start()):
            continue  # "1." opening a list item, or a lone "...", is no sentence
        if _ends_sentence(text, match.start(), match.end(), line_start, line_end):
            # French sets closing quotes apart: « Bonjour. » ends after the ».
            spaced_closer = _SPACED_CLOSER.match(text, match.end(), line_end)
            cuts.append(spaced_closer.end() if spaced_closer else match.end())
    return cuts[1:]


def _ends_sentence(text: str, start: int, end: int, line_start: int, line_end: int) -> bool:
    """Whether the terminator run text[start:end] closes a sentence."""
    run = text[start:end]
    before = text[start - 1] if start > line_start else ""
    if any(char in _ALWAYS_ENDS for char in run):
        return True
    after = text[end] if end < line_end else ""
    if ("!" in run or "?" in run) and (_is_cjk(before) or _is_cjk(after)):
        return True
    if after and not after.isspace():
        return False  # "3.5", "example.com", "Yahoo!News"
    following = _next_visible(text, end, line_end)
    if following.islower():
        return False  # "etc. and so on", "OpenAI . d'énormes"
    if set(run.rstrip(_CLOSERS)) == {";"}:
        return _is_greek(before)  # ";" is the Greek question mark
    if run.rstrip(_CLOSERS) == ".":
        return not _is_abbreviation(_word_before(text, start, line_start))
    return True


def _word_before(text: str, index: int, line_start: int) -> str:
    begin = index
    while begin > line_start and (text[begin - 1].isalnum() or text[begin - 1] == "."):
        begin -= 1
    return text[begin:index].lstrip(".")


def _is_abbreviation(word: str) -> bool:
    if len(word) == 1 and word.isalpha():
        return True  # an initial: "J. K. Rowling", "M. Altman"
    return word.lower() in _ABBREVIATIONS


def _next_visible(text: str, index: int, limit: int) -> str:
    while index < limit and (text[index].isspace() or text[index] in "\"'“‘«(["):
        index += 1
    return text[index] if index < limit else ""


def _has_letter(text: str, start: int, end: int) -> bool:
    return any(char.isalpha() for char in text[start:end])


def _is_cjk(char: str) -> bool:
    if not char:
        return False
    point = ord(char)
    return any(low <= point <= high for low, high in _CJK_RANGES)


def _is_greek(char: str) -> bool:
    return bool(char) and (0x0370 <= ord(char) <= 0x03FF or 0x1F00 <= ord(char) <= 0x1FFF)


def _strip_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _is_heading(text: str, start: int, end: int) -> bool:
    """A short line of its own, not ending like a sentence: a section title."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    if text[line_start:start].strip() or text[end:line_end].strip():
        return False
    words = text[start:end]
    return len(words) <= 80 and len(words.split()) <= 12 and words[-1] not in ".。!！…"


# --- cutting a sentence longer than the budget ------------------------------------------------


def _split_oversized(
    text: str, start: int, end: int, tokens: int, base: int, count_tokens: TokenCounter, max_tokens: int
) -> list[_Unit]:
    """Cut text[start:end] (which counts `tokens`) into consecutive pieces that each fit the budget."""
    # The sentence's own density predicts where a piece of the budget's size ends.
    predicted = max(1, int((max_tokens - base) * (end - start) / max(tokens - base, 1)))
    pieces = []
    position = start
    while position < end:
        cut, piece_tokens = _longest_fitting_prefix(text, position, end, count_tokens, max_tokens, predicted)
        piece = _strip_span(text, position, cut)
        if piece is not None:
            pieces.append(_Unit(piece[0], piece[1], piece_tokens, False))
        position = cut
        while position < end and text[position].isspace():
            position += 1
    return pieces


def _longest_fitting_prefix(
    text: str, start: int, end: int, count_tokens: TokenCounter, max_tokens: int, predicted: int
) -> tuple[int, int]:
    """Return (cut, tokens): a cut > start such that text[start:cut] fits, as far as possible.

    A first call probes around the `predicted` length, then a few batched calls narrow it
    down (several candidate cuts per call). Finally the cut moves back to a nearby
    punctuation or word boundary.
    """
    candidates = sorted({min(end, start + max(1, int(predicted * factor))) for factor in (0.9, 1.0, 1.1)})
    if end - start <= predicted * 1.2:
        candidates = sorted({*candidates, end})
    low, low_tokens, high = start, 0, None
    while candidates:
        counts = _count(count_tokens, [text[start:cut].rstrip() for cut in candidates])
        for cut, tokens in zip(candidates, counts):
            if tokens <= max_tokens and cut > low:
                low, low_tokens = cut, tokens
        high = min(
            (cut for cut, tokens in zip(candidates, counts) if tokens > max_tokens and cut > low),
            default=high,
        )
        if high is None and low == end:
            return end, low_tokens
        if high is None:  # everything tried fits: look further
            candidates = [min(end, start + 2 * (low - start))]
        else:
            candidates = _candidates(text, low, high)
    if low == start:
        return _single_grapheme(text, start, end, count_tokens, max_tokens)
    return _prefer_boundary(text, start, low, low_tokens, count_tokens, max_tokens)


def _candidates(text: str, low: int, high: int) -> list[int]:
    """A few cut positions strictly between low and high, none inside a grapheme."""
    step = max(1, (high - low) // (_MAX_SEARCH_CANDIDATES + 1))
    candidates = []
    for position in range(low + step, high, step):
        while position < high and not _is_safe_cut(text, position):
            position += 1
        if position < high and (not candidates or position > candidates[-1]):
            candidates.append(position)
    return candidates[:_MAX_SEARCH_CANDIDATES]


def _is_safe_cut(text: str, position: int) -> bool:
    """Whether a cut before text[position] keeps grapheme clusters (accents, emoji) whole."""
    char, previous = text[position], text[position - 1]
    if previous == _ZWJ or char == _ZWJ or unicodedata.combining(char):
        return False
    if "\ufe00" <= char <= "\ufe0f" or "\U0001f3fb" <= char <= "\U0001f3ff":
        return False  # variation selectors and skin-tone modifiers
    return not ("\U0001f1e6" <= char <= "\U0001f1ff" and "\U0001f1e6" <= previous <= "\U0001f1ff")


def _single_grapheme(
    text: str, start: int, end: int, count_tokens: TokenCounter, max_tokens: int
) -> tuple[int, int]:
    """Last resort when no safe cut fits: the smallest cut, if even that fits the budget."""
    cut = start + 1
    while cut < end and not _is_safe_cut(text, cut):
        cut += 1
    for candidate in (cut, start + 1):
        (tokens,) = _count(count_tokens, [text[start:candidate]])
        if tokens <= max_tokens:
            return candidate, tokens
    raise ValueError(
        f"max_tokens={max_tokens} is too small: {text[start : start + 1]!r} alone counts {tokens} tokens"
    )


def _prefer_boundary(
    text: str, start: int, cut: int, tokens: int, count_tokens: TokenCounter, max_tokens: int
) -> tuple[int, int]:
    """Move `cut` back to a punctuation or word boundary in the last part of the piece, if it still fits."""
    boundary = _last_boundary(
        text, start + (cut - start) * 7 // 10, cut, lambda i: text[i - 1] in _SOFT_BREAKS
    )
    if boundary is None:
        boundary = _last_boundary(text, start + (cut - start) // 2, cut, lambda i: text[i - 1].isspace())
    if boundary is None or boundary == cut:
        return cut, tokens
    (boundary_tokens,) = _count(count_tokens, [text[start:boundary].rstrip()])
    return (boundary, boundary_tokens) if boundary_tokens <= max_tokens else (cut, tokens)


def _last_boundary(text: str, low: int, high: int, is_boundary: Callable[[int], bool]) -> int | None:
    for position in range(high, max(low, 0), -1):
        if position < len(text) and is_boundary(position) and _is_safe_cut(text, position):
            return position
    return None


# --- packing sentences into passages -----------------------------------------------------------


def _pack(
    text: str, units: Sequence[_Unit], base: int, count_tokens: TokenCounter, max_tokens: int, overlap: int
) -> list[tuple[int, int, int]]:
    """Group units into passages [(first, last_exclusive, tokens)].

    Plans every passage from per-unit counts, then checks all of them with one batched call;
    a passage found over budget (counts of a concatenation can differ from the sum) is shrunk,
    and the plan is redone from there.
    """
    accepted: list[tuple[int, int, int]] = []
    first, first_new = 0, 0
    while True:
        plan = _plan(units, base, max_tokens, overlap, first, first_new)
        if not plan:
            # The passage just shrunk was the last one: its dropped shared units were already
            # in the passage before, so nothing is left to plan.
            return accepted
        counts = _count(count_tokens, [_join(text, units, a, b) for a, b, _ in plan])
        for (a, b, new), tokens in zip(plan, counts):
            if tokens > max_tokens:
                accepted.append(_shrink(text, units, a, b, new, count_tokens, max_tokens))
                last = accepted[-1]
                first = _overlap_start(units, base, max_tokens, overlap, last[0], last[1])
                first_new = last[1]
                break
            accepted.append((a, b, tokens))
        else:
            return accepted


def _plan(
    units: Sequence[_Unit], base: int, max_tokens: int, overlap: int, first: int, first_new: int
) -> list[tuple[int, int, int]]:
    """Greedy passages [(first, last_exclusive, first_new_unit)] from unit `first` to the end."""
    plan = []
    while first < len(units):
        last = _greedy_end(units, base, max_tokens, first, first_new)
        plan.append((first, last, first_new))
        if last >= len(units):
            break
        first, first_new = _overlap_start(units, base, max_tokens, overlap, first, last), last
    return plan


def _greedy_end(units: Sequence[_Unit], base: int, max_tokens: int, first: int, first_new: int) -> int:
    """Add units while the estimated count fits; leave a trailing heading for the next passage."""
    total = base + _content(units[first], base)
    last = first + 1
    while last < len(units) and total + _content(units[last], base) <= max_tokens:
        total += _content(units[last], base)
        last += 1
    last = max(last, first_new + 1)  # an overlap that no longer fits still makes progress
    if last < len(units) and units[last - 1].heading and last - 1 > max(first, first_new):
        last -= 1
    return last


def _overlap_start(
    units: Sequence[_Unit], base: int, max_tokens: int, overlap: int, first: int, last: int
) -> int:
    """First unit of the passage after units[first:last]: repeat up to `overlap` of its units.

    Fewer when they would not leave room for the next new unit, none when that passage opens
    a new section (a heading) or when repeating would not move forward.
    """
    if last >= len(units) or units[last].heading:
        return last
    for shared in range(min(overlap, last - first - 1), 0, -1):
        start = last - shared
        if base + sum(_content(unit, base) for unit in units[start : last + 1]) <= max_tokens:
            return start
    return last


def _shrink(
    text: str,
    units: Sequence[_Unit],
    first: int,
    last: int,
    first_new: int,
    count_tokens: TokenCounter,
    max_tokens: int,
) -> tuple[int, int, int]:
    """Drop trailing units, then shared ones, until the passage fits (one unit always does)."""
    tokens = max_tokens + 1
    while tokens > max_tokens:
        if last - 1 > first_new:
            last -= 1
        elif first < first_new:
            first += 1
        else:
            return first, last, units[first].tokens
        (tokens,) = _count(count_tokens, [_join(text, units, first, last)])
    return first, last, tokens


def _join(text: str, units: Sequence[_Unit], first: int, last: int) -> str:
    return text[units[first].start : units[last - 1].end]


def _content(unit: _Unit, base: int) -> int:
    # Tokens of the text itself: the prompt and special tokens are counted once per passage.
    return max(unit.tokens - base, 0)


def _count(count_tokens: TokenCounter, texts: list[str]) -> list[int]:
    if not texts:
        return []
    counts = list(count_tokens(texts))
    if len(counts) != len(texts):
        raise ValueError(f"count_tokens returned {len(counts)} counts for {len(texts)} texts")
    return counts


def _check_params(max_tokens: int, overlap: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, not {max_tokens}")
    if overlap < 0:
        raise ValueError(f"overlap must be 0 or more sentences, not {overlap}")

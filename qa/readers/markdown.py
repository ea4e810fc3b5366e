"""Markdown: front matter, the first `# ` heading, and the text with its markup removed."""

from __future__ import annotations

import re

__all__ = ["front_matter", "markdown_lines"]

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


def front_matter(text: str) -> tuple[dict[str, str], str]:
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


def markdown_lines(text: str) -> tuple[str | None, list[str]]:
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

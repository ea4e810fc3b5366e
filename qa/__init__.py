"""Multilingual question answering over a news corpus.

    from qa import retrieve
    for passage in retrieve("Who became CEO of OpenAI?"):
        print(passage.score, passage.lang, passage.title, passage.text[:80])

Nothing heavy happens at import time: the model and the index load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qa import errors as _errors  # plain exceptions: importing them costs nothing

if TYPE_CHECKING:
    from datetime import date

    from qa.config import Settings
    from qa.models import Answer, Passage

__version__ = "0.1.0"

# Public names and the module that defines each; imported on first access (PEP 562) so that
# `import qa` stays instant and pulls in neither pydantic nor torch.
_LAZY = {
    "Settings": "qa.config",
    **dict.fromkeys(["Article", "Chunk", "Passage", "Translation", "Citation", "Answer", "SkippedFile"], "qa.models"),
    **dict.fromkeys(_errors.__all__, "qa.errors"),
}

__all__ = ["ask", "build_index", "retrieve", *_LAZY]  # noqa: PLE0604 (names of the lazily imported API)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


def retrieve(
    question: str,
    k: int = 5,
    *,
    settings: Settings | None = None,
    langs: list[str] | str | None = None,
    since: str | date | None = None,
    until: str | date | None = None,
    sources: list[str] | str | None = None,
) -> list[Passage]:
    """Return the `k` passages that best answer `question`, in any language of the corpus.

    Filters, applied inside the search (k passages when k match): `langs` (ISO 639-1 codes),
    `since`/`until` (publication days, inclusive, `YYYY-MM-DD`; an article without a date is
    left out by either), `sources` (outlets such as `bbc.co.uk`, or corpus files and folders).
    """
    from qa.retrieval import retrieve as _retrieve

    return _retrieve(question, k=k, settings=settings, langs=langs, since=since, until=until, sources=sources)


def ask(
    question: str,
    history: list[str] | None = None,
    *,
    settings: Settings | None = None,
    langs: list[str] | str | None = None,
    since: str | date | None = None,
    until: str | date | None = None,
    sources: list[str] | str | None = None,
) -> Answer:
    """Answer `question` in its own language, quoting and citing the evidence; the filters are
    those of `retrieve`."""
    from qa.answer import ask as _ask

    return _ask(question, history=history, settings=settings, langs=langs, since=since, until=until, sources=sources)


def build_index(corpus_dir=None, *, settings: Settings | None = None, progress: bool = False):
    """Build (or incrementally update) the index from `corpus_dir`; returns a build report."""
    from qa.index.build import build_index as _build

    return _build(corpus_dir, settings=settings, progress=progress)

"""Errors meant to be shown to a user: each message names the bad value and the fix."""

from __future__ import annotations

__all__ = [
    "BusyError",
    "ConfigError",
    "DatabaseError",
    "IndexCorruptError",
    "IndexMismatchError",
    "IndexNotFoundError",
    "IngestError",
    "InvalidQuestionError",
    "LLMError",
    "MeaninglessQuestionError",
    "ModelError",
    "NotReadyError",
    "QAError",
    "unexpected_reason",
]


class QAError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(QAError):
    """A setting has a value we cannot use."""


class ModelError(QAError):
    """The embedding model cannot be found, converted or loaded."""


class InvalidQuestionError(QAError, ValueError):
    """The question is empty, whitespace only, too long or otherwise unusable."""


class MeaninglessQuestionError(InvalidQuestionError):
    """The question has no letters or digits, or is one character repeated: nothing to search for.

    `lang` is the language its message is written in (the asker's, as far as it is known).
    """

    def __init__(self, message: str, lang: str = "en"):
        super().__init__(message)
        self.lang = lang


class IndexNotFoundError(QAError):
    """No index has been built in the index directory yet."""


class IndexMismatchError(QAError):
    """The index was built with another model, dimension or format than the one configured."""


class IndexCorruptError(QAError):
    """Index files are missing, truncated or inconsistent with the manifest."""


class IngestError(QAError):
    """A corpus file cannot be read as an article."""


class NotReadyError(QAError):
    """The server's index is still loading or being built."""


class DatabaseError(NotReadyError):
    """The database of the shared store (QA_DATABASE_URL) cannot be reached, was lost or is
    not usable: questions get a 503 with the reason until it answers again."""


class BusyError(QAError):
    """Too many questions are already waiting (the server's admission bound)."""


class LLMError(QAError):
    """The LLM server failed, was too slow or did not answer with a chat completion (one line)."""


def unexpected_reason(exc: BaseException) -> str:
    """An unexpected exception as one short line for a summary: its type and its message."""
    message = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

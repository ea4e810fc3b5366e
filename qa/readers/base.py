"""What every reader shares: the reason an input (or one record of it) is not ingested."""

from __future__ import annotations

__all__ = ["Skip"]


class Skip(Exception):
    """Why a file (or one record of it) is not ingested; becomes a SkippedFile or an IngestError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

"""Two short news articles in English, for the tests that build an index of their own: one
that answers "How many homes can the turbines supply?" and one that does not."""

from __future__ import annotations

__all__ = ["LIBRARY", "WIND"]

WIND = (
    "Harbour wind farm opens\n\n"
    "The harbour wind farm started producing power on Tuesday, the city said. "
    "Its twelve turbines can supply forty thousand homes. "
    "The operator plans a second phase with eight more turbines next year.\n"
)
LIBRARY = (
    "New library for the old town\n\n"
    "The old town's new public library opened its doors on Saturday. "
    "It holds sixty thousand books and a children's reading room. "
    "The mayor said the building cost nine million euros.\n"
)

"""BM25 over passages, with tokenization that works for every script.

Dense retrieval misses exact names and numbers that a lexical index catches. Scripts written
without spaces (Chinese, Japanese, Thai...) become overlapping character bigrams: one token per
sentence would match nothing, and a bigram index beats a morphological analyser's recall on
short questions without a dictionary to install.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np

__all__ = ["tokenize", "LexicalIndex"]

# Runs of letters/digits; the scripts in NO_SPACE_SCRIPT are then cut into bigrams.
_WORD = re.compile(r"\w+", re.UNICODE)
_NO_SPACE = re.compile(
    "["
    "\u0e00-\u0e7f"  # Thai
    "\u0e80-\u0eff"  # Lao
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u17ff"  # Khmer
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "]+"
)


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; character bigrams for scripts written without spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: list[str] = []
    for word in _WORD.findall(text):
        pos = 0
        for match in _NO_SPACE.finditer(word):
            if match.start() > pos:
                tokens.append(word[pos : match.start()])
            tokens.extend(_bigrams(match.group()))
            pos = match.end()
        if pos < len(word):
            tokens.append(word[pos:])
    return tokens


class LexicalIndex:
    """A BM25 index (bm25s) over passage texts, in passage order."""

    def __init__(self, retriever):
        self._retriever = retriever

    @classmethod
    def build(cls, texts: list[str]) -> LexicalIndex:
        import bm25s

        retriever = bm25s.BM25()
        # An empty document would make bm25s drop it and shift every later id: keep a placeholder.
        retriever.index([tokenize(t) or ["\u2205"] for t in texts], show_progress=False)
        return cls(retriever)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for `query` (zeros when no token is known)."""
        vocab = self._retriever.vocab_dict
        tokens = [t for t in tokenize(query) if t in vocab]
        n = self._retriever.scores["num_docs"]
        if not tokens:
            return np.zeros(n, np.float32)
        return self._retriever.get_scores(tokens).astype(np.float32)

    def save(self, folder: Path) -> None:
        self._retriever.save(str(folder), show_progress=False)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        import bm25s

        return cls(bm25s.BM25.load(str(folder), show_progress=False, verbosity=0))

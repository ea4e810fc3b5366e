"""Test doubles for pure-logic tests. User-facing features are tested with the real model too."""

from __future__ import annotations

import hashlib

import numpy as np


class FakeEmbedder:
    """Deterministic vectors seeded from sha256(text); counts what it embeds.

    Enough for testing the bookkeeping of builds (what is reused, what is re-embedded), never
    for testing retrieval quality.
    """

    dim = 16
    max_tokens = 512

    def __init__(self, fingerprint: str = "fake:1", dim: int = 16):
        self.fingerprint = fingerprint
        self.dim = dim
        self.embedded: list[str] = []

    def describe(self) -> dict:
        return {"name": "fake", "fingerprint": self.fingerprint, "dim": self.dim}

    def count_tokens(self, texts: list[str]) -> list[int]:
        # Roughly one token per 4 characters plus the prompt and special tokens.
        return [len(t) // 4 + 4 for t in texts]

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_documents(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        self.embedded.extend(texts)
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        return self._vector(text)

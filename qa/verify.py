"""Checks every sentence of a generated answer against the passage it cites, before it is shown.

A sentence is kept only when it cites at least one passage [n] that was sent, every number it
cites was sent, and it is close enough in meaning to one of the cited passages' sentences. The
closeness is the one the ranking uses across languages: the cosine of the multilingual model,
standardized by the statistics of the evidence sentence's language (`LanguageStats` fitted on
the index's sentence vectors), so that a Spanish claim about a French sentence is judged on the
same scale as a French one. The threshold is calibrated on XQuAD by
benchmarks/calibrate_support.py.

What this cannot see: a sentence that is close in meaning to its evidence but changes a number,
a name or a negation can pass (embeddings are coarse on such details); that is why the quoted
evidence stays under each citation.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from qa.chunk import split_sentences
from qa.models import Citation
from qa.rank import LanguageStats

__all__ = ["Verdict", "Verifier", "cited_numbers", "split_claims", "strip_citations", "support_score"]

log = logging.getLogger(__name__)

# [1], [1, 2], [1][2] (and the full-width brackets some models write after CJK text).
MARKER = re.compile(r"[\[［]\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]］]")
# Markers (and the punctuation after them) that open a piece: they belong to the sentence before,
# as in "Microsoft owns 49%. [1] It invested..." once cut after the full stop. Used with
# match(text, pos), which anchors at pos (a "^" would only match at 0).
LEADING_MARKERS = re.compile(r"(?:\s*[\[［]\s*\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\s*[\]］]\s*[.。!?！？]?)+")


@dataclass(frozen=True)
class Verdict:
    """The check of one generated sentence: kept when `reason` is None."""

    sentence: str
    cited: tuple[int, ...]
    score: float  # best standardized similarity to a sentence of a cited passage (-inf: none)
    reason: str | None  # "no_citation", "unknown_citation", "unsupported" or None

    @property
    def supported(self) -> bool:
        return self.reason is None


def split_claims(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of a generated answer, with a marker that opens a sentence given
    back to the sentence before it (models write both "claim [1]." and "claim. [1]")."""
    spans: list[tuple[int, int]] = []
    for start, end in split_sentences(text):
        lead = LEADING_MARKERS.match(text, start, end)
        if lead and spans and lead.end() > start:
            start = len(text[: lead.end()].rstrip())
            spans[-1] = (spans[-1][0], start)
            while start < end and text[start].isspace():
                start += 1
        if start < end:
            spans.append((start, end))
    return spans


def cited_numbers(sentence: str) -> tuple[int, ...]:
    """The passage numbers a sentence cites, in order of first mention."""
    numbers: list[int] = []
    for match in MARKER.finditer(sentence):
        for part in re.split(r"[,，、]", match.group(1)):
            n = int(part)
            if n not in numbers:
                numbers.append(n)
    return tuple(numbers)


def strip_citations(sentence: str) -> str:
    """The sentence without its markers: what is embedded (a number says nothing of meaning)."""
    return " ".join(MARKER.sub(" ", sentence).split())


def support_score(claim: np.ndarray, evidence: np.ndarray, lang_ids: np.ndarray, stats: LanguageStats) -> float:
    """Best standardized similarity of a claim vector to evidence sentence vectors.

    `lang_ids`: each evidence sentence's language in `stats`. Standardizing by the evidence's
    language ("how unusually close is this sentence, for a sentence of its language?") is what
    makes a threshold hold across languages: raw cosines between languages run lower.
    """
    if not len(evidence):
        return float("-inf")
    raw = np.asarray(evidence, np.float32) @ np.asarray(claim, np.float32)
    return float(stats.standardize(claim[None, :], raw[None, :], np.asarray(lang_ids))[0].max())


class Verifier:
    """Checks generated sentences against the citations of one answer, over one loaded index."""

    def __init__(self, citations: list[Citation], index, embedder, threshold: float):
        self.threshold = threshold
        self.embedder = embedder
        self.stats = index.sentence_stats
        self._evidence = {c.n: self._sentences(c, index) for c in citations}

    def _sentences(self, citation: Citation, index) -> tuple[np.ndarray, np.ndarray]:
        """The cited passage's sentence vectors (as the index stores them) and their language ids."""
        passage = citation.passage
        row = index.row_of.get((passage.doc_id, passage.start))
        rows = index.sentences_of(row) if row is not None else np.zeros(0, np.int64)
        if not len(rows) or passage.lang not in self.stats.langs:
            # Passage gone from this index version: it cannot vouch for anything.
            return np.zeros((0, self.stats.means.shape[1]), np.float32), np.zeros(0, np.intp)
        vectors = np.asarray(index.sentence_vectors[rows], np.float32)
        return vectors, self.stats.lang_ids([passage.lang] * len(rows))

    def check(self, sentences: list[str]) -> list[Verdict]:
        """One verdict per sentence, in order; the claims are embedded in one batch."""
        cited = [cited_numbers(s) for s in sentences]
        to_embed = [i for i, numbers in enumerate(cited) if numbers and all(n in self._evidence for n in numbers)]
        texts = [strip_citations(sentences[i]) for i in to_embed]
        vectors = dict(zip(to_embed, self.embedder.encode_documents(texts))) if texts else {}
        verdicts = []
        for i, sentence in enumerate(sentences):
            numbers = cited[i]
            if not numbers:
                verdicts.append(Verdict(sentence, numbers, float("-inf"), "no_citation"))
            elif i not in vectors:
                verdicts.append(Verdict(sentence, numbers, float("-inf"), "unknown_citation"))
            else:
                score = max(support_score(vectors[i], *self._evidence[n], self.stats) for n in numbers)
                verdicts.append(Verdict(sentence, numbers, score, None if score >= self.threshold else "unsupported"))
            log.debug("claim %r cites %s: %s (%.2f)", sentence, numbers, verdicts[-1].reason or "kept", verdicts[-1].score)
        return verdicts

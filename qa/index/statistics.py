"""A build's language statistics: the question sample (sentences of the corpus embedded as
questions), its means, the questions an approximate index is tuned on, and the per-language
sums the statistics are fitted from (and stored beside them)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from qa.errors import unexpected_reason
from qa.index.ann import RowsView
from qa.index.format import LANG_SUMS, SENTENCE_SUMS
from qa.rank import LanguageStats, LanguageSums

__all__ = [
    "QUERY_SAMPLE",
    "RECALL_QUERIES",
    "fit_stats",
    "fit_sums",
    "query_means",
    "question_sample",
    "question_sample_from",
    "read_sums",
    "sample_means",
    "sample_rows",
    "tuning_queries",
]

log = logging.getLogger(__name__)

RECALL_QUERIES = 200  # sample questions on which a build tunes and measures each approximate index's recall
QUERY_SAMPLE = 64  # sentences per language embedded as questions (see LanguageStats.query_means)

def question_sample(embedder, texts: list[str], langs: list[str]) -> dict[str, np.ndarray]:
    """Per language, a sample of its passages' sentences embedded as questions (the corpus's
    own stand-in for the questions it will be asked; no real questions are needed)."""
    return question_sample_from(embedder, lambda: zip(texts, langs))


def question_sample_from(embedder, passages: Callable[[], Iterable[tuple[str, str]]]) -> dict[str, np.ndarray]:
    """`question_sample` of the (text, language) pairs that `passages()` gives, read twice (the
    sentences are counted, then the sample's picked), so that they need not be held."""
    from qa.chunk import split_sentences

    def sentences() -> Iterator[tuple[str, str]]:
        for text, lang in passages():
            for a, b in split_sentences(text):
                if b - a >= 20:
                    yield lang, text[a:b]

    counts = Counter(lang for lang, _ in sentences())
    # Evenly spaced, so the sample is deterministic and spans the whole corpus.
    picks = {
        lang: np.linspace(0, count - 1, min(QUERY_SAMPLE, count)).astype(int).tolist()
        for lang, count in counts.items() if count >= 8  # fewer: too few to estimate a direction
    }
    wanted = {lang: set(p) for lang, p in picks.items()}
    seen: Counter[str] = Counter()
    found: dict[str, dict[int, str]] = {lang: {} for lang in picks}
    for lang, text in sentences():
        if lang in wanted and seen[lang] in wanted[lang]:
            found[lang][seen[lang]] = text
        seen[lang] += 1
    return {lang: _encode_sample(embedder, [found[lang][i] for i in picks[lang]]) for lang in sorted(picks)}


def _encode_sample(embedder, texts: list[str]) -> np.ndarray:
    """`embedder.encode_queries(texts)`; if that fails, without the texts that fail on their own
    (a sample only estimates a direction), unless every one of them does."""
    try:
        return embedder.encode_queries(texts)
    except Exception:  # one odd sentence must not stop the build
        kept = []
        for text in texts:
            try:
                kept.append(embedder.encode_queries([text]))
            except Exception as exc:  # noqa: BLE001 -- left out of the sample
                log.debug("sample sentence %r left out: %s", text[:80], unexpected_reason(exc))
        if not kept:
            raise  # the batch's error
        return np.concatenate(kept)


def sample_means(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per language, the mean of its question sample (see LanguageStats.query_means)."""
    return {lang: vectors.mean(axis=0) for lang, vectors in sample.items()}


def query_means(embedder, texts: list[str], langs: list[str]) -> dict[str, np.ndarray]:
    """Per language, the mean of `question_sample` (see LanguageStats.query_means)."""
    return sample_means(question_sample(embedder, texts, langs))


def tuning_queries(sample: dict[str, np.ndarray], means: dict[str, np.ndarray], centering: float) -> np.ndarray:
    """Question-like vectors of every language, centred as the engine centres questions (`means`
    from `sample_means`): what an approximate index's nprobe is tuned on (it should be tuned for
    the questions it will serve; passage-like vectors are farther from the data and ask for
    several times more lists)."""
    if not sample:
        return np.zeros((0, 0), np.float32)
    return sample_rows(np.concatenate([vectors - centering * means[lang] for lang, vectors in sample.items()]))


def sample_rows(vectors: np.ndarray, n: int = RECALL_QUERIES) -> np.ndarray:
    """At most n rows of `vectors`, drawn at random (seeded: builds are reproducible), in order, as float32."""
    picks = np.random.default_rng(0).choice(len(vectors), min(n, len(vectors)), replace=False)
    return np.ascontiguousarray(vectors[np.sort(picks)], dtype=np.float32)


def fit_stats(vectors: np.ndarray, lang_codes: np.ndarray, langs: list[str]) -> LanguageStats:
    """`LanguageStats.fit(vectors, langs[lang_codes])`, from `fit_sums`."""
    return LanguageStats.from_sums(fit_sums(vectors, lang_codes, langs))


def fit_sums(
    vectors: np.ndarray, lang_codes: np.ndarray, langs: list[str], queries: dict[str, np.ndarray] | None = None
) -> LanguageSums:
    """`LanguageSums.of(vectors, langs[lang_codes], queries)`, the same numbers, without copying
    any language's vectors: its sums are taken over blocks of its rows (`RowsView`) in the order
    and blocks `_moments` takes them, so a language's statistics are the floats `LanguageStats.fit`
    gives. For millions of sentence vectors, a copy of the largest language alone was gigabytes."""
    from qa.language_stats import moment_sums

    present = np.flatnonzero(np.bincount(lang_codes, minlength=len(langs)))
    parts = [moment_sums(RowsView(vectors, np.flatnonzero(lang_codes == code))) for code in present.tolist()]
    return LanguageSums.from_parts([langs[c] for c in present.tolist()], parts, queries, dim=vectors.shape[1])


def read_sums(version_dir: Path) -> tuple[LanguageSums | None, LanguageSums | None]:
    """The passages' and the sentences' `LanguageSums` of an index version: None for a version
    written before they were stored (its statistics must then be fitted again from its vectors
    before they can be updated)."""
    found = []
    for name in (LANG_SUMS, SENTENCE_SUMS):
        path = Path(version_dir) / name
        if not path.exists():
            found.append(None)
            continue
        with np.load(path) as arrays:
            found.append(LanguageSums.from_arrays(arrays))
    return found[0], found[1]

"""What `qa eval` scores: the pool of every paragraph of every language, and the scorers ranked
over it, the bare model and the pipeline (the scoring of `qa.retrieve`, applied to a whole pool)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qa.config import Settings
from qa.lexical import LexicalIndex
from qa.rank import (
    FusionWeights,
    LanguageStats,
    best_sentence_scores,
    fuse,
    lexical_by_language,
    translation_groups,
)
from qa.xquad import XQuAD

__all__ = ["BareModel", "Pipeline", "Pool", "Scorer"]


@dataclass
class Pool:
    """Every paragraph of every language: vectors, languages and paragraph ids."""

    vectors: np.ndarray  # (n, d)
    langs: np.ndarray  # (n,) language codes
    para: np.ndarray  # (n,) paragraph index (the same for all translations)
    texts: list[str]
    sentence_vectors: np.ndarray | None = None  # (m, d), every sentence of every passage
    sentence_owner: np.ndarray | None = None  # (m,) passage of each sentence
    # What `Pipeline.prepare` computes from the pool, given instead (a built index's own: see
    # `from_index`); None: computed.
    stats: LanguageStats | None = None
    sentence_stats: LanguageStats | None = None
    groups: np.ndarray | None = None
    lexical: LexicalIndex | None = None
    sentence_spans: np.ndarray | None = None  # (m, 2) start and end of each sentence in its passage

    @classmethod
    def from_index(cls, index) -> Pool:
        """The passages of a built index (`qa.index.load.Index`) as a pool, with its statistics,
        translation groups, lexical index and the sentence vectors the engine reads: `Pipeline`
        over it ranks as `qa.retrieval.Engine` over the index (tests/test_parity.py)."""
        sentence_vectors = np.asarray(index.sentence_vectors[index.sentence_member], dtype=np.float32)
        return cls(
            index.vectors(), index.langs, np.arange(len(index)), [c.text for c in index.chunks],
            sentence_vectors=sentence_vectors, sentence_owner=index.sentence_owner,
            stats=index.lang_stats, sentence_stats=index.sentence_stats, groups=index.groups,
            lexical=index.lexical,
        )

    @classmethod
    def from_xquad(cls, data: XQuAD, vectors: dict[str, np.ndarray], embed_sentences=None) -> Pool:
        """The pool of every language; `embed_sentences(texts)` adds the sentence vectors."""
        from qa.chunk import split_sentences

        # (lang, paragraph) of every paragraph that exists: all of them when the set is parallel
        where = [(lang, i) for lang in data.langs for i, t in enumerate(data.paragraphs[lang]) if t is not None]
        langs = np.array([lang for lang, _ in where])
        para = np.array([i for _, i in where], dtype=np.int64)
        texts = [data.paragraphs[lang][i] for lang, i in where]
        pool = cls(np.concatenate([vectors[lang][para[langs == lang]] for lang in data.langs]), langs, para, texts)
        if embed_sentences is not None:
            owner, sentences, spans = [], [], []
            for row, text in enumerate(texts):
                for a, b in split_sentences(text):
                    owner.append(row)
                    sentences.append(text[a:b])
                    spans.append((a, b))
            pool.sentence_vectors = embed_sentences(sentences)
            pool.sentence_owner = np.array(owner, dtype=np.int64)
            pool.sentence_spans = np.array(spans, dtype=np.int64).reshape(-1, 2)
        return pool


class Scorer:
    """Scores questions of one language against every passage of the pool."""

    name = "scorer"

    def prepare(self, pool: Pool) -> None:  # index-time work
        pass

    def scores(self, queries: np.ndarray, texts: list[str], lang: str, pool: Pool) -> np.ndarray:
        raise NotImplementedError


class BareModel(Scorer):
    """The baseline: cosine similarity of the model's embeddings."""

    name = "bare model"

    def scores(self, queries, texts, lang, pool):
        return queries @ pool.vectors.T


class Pipeline(Scorer):
    """The scoring of `qa.retrieve` (`qa.retrieval.Engine.score` and the grouping of `Engine.search`),
    applied to a whole pool at once, with the same settings and the same functions."""

    name = "pipeline"

    def __init__(self, settings: Settings, query_means: dict[str, np.ndarray], weights: FusionWeights | None = None):
        self.settings = settings
        self.query_means = query_means
        self.weights = weights or FusionWeights.from_settings(settings)
        self.every_signal = False  # True: `prepare` readies the signals a weight of 0 turns off (tuning)

    def prepare(self, pool):
        if pool.stats is not None:
            self.stats = pool.stats
        else:
            self.stats = LanguageStats.fit(pool.vectors, pool.langs)
            self.stats.query_means = self.query_means
        self.lang_ids = self.stats.lang_ids(pool.langs)
        if pool.groups is not None:
            self.groups = pool.groups
        else:
            centered = self.stats.centered(pool.vectors, self.lang_ids)
            self.groups = translation_groups(centered, pool.langs, self.settings.group_threshold)
        self.lexical = None
        if self.weights.lexical or self.every_signal:
            self.lexical = pool.lexical if pool.lexical is not None else LexicalIndex.build(pool.texts)
        if (self.weights.sentence or self.every_signal) and pool.sentence_vectors is not None:
            sentence_langs = pool.langs[pool.sentence_owner]
            given = pool.sentence_stats
            self.sentence_stats = given if given is not None else LanguageStats.fit(pool.sentence_vectors, sentence_langs)
            self.sentence_lang_ids = self.sentence_stats.lang_ids(sentence_langs)
        else:
            self.sentence_stats = None

    def components(self, queries, texts, lang, pool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The three signals `fuse` weighs, for every passage: the standardized dense score, BM25
        scaled per language (None when off) and each passage's best sentence score (None when off)."""
        queries = self.stats.center_query(queries, lang, self.settings.query_centering)
        dense = self.stats.standardize(queries, queries @ pool.vectors.T, self.lang_ids)
        lexical = None
        if self.lexical is not None:
            lexical = np.stack([self.lexical.scores(t) for t in texts]) if texts else np.zeros((0, len(pool.texts)))
            lexical = lexical_by_language(lexical, self.lang_ids, len(self.stats.langs))
        sentences = None
        if self.sentence_stats is not None:  # every passage's (the engine's mask only saves work)
            sentences = best_sentence_scores(
                queries, queries @ pool.sentence_vectors.T, pool.sentence_owner, len(pool.vectors),
                self.sentence_stats, self.sentence_lang_ids,
            )
        return dense, lexical, sentences

    def scores(self, queries, texts, lang, pool):
        dense, lexical, sentences = self.components(queries, texts, lang, pool)
        return self.fused(dense, lexical, sentences)

    def fused(self, dense, lexical, sentences, weights: FusionWeights | None = None) -> np.ndarray:
        """The engine's fusion (`qa.rank.fuse`) of `components`: only each question's
        `sentence_candidates` best passages get their sentence score; the others rank after them,
        in their first-stage order. `weights`: these instead of the pipeline's own."""
        weights = weights or self.weights
        return fuse(dense, lexical, None if sentences is None else (lambda mask: sentences), weights)[0]

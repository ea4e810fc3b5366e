"""`qa eval`: retrieval quality on XQuAD, the bare model and the full pipeline side by side.

Pools (a "hit" is the paragraph that answers the question):
- single: questions in Q against the 240 paragraphs of language P, for every Q × P;
- mixed: all paragraphs of all languages at once; a hit is the right paragraph in any language;
- needle: the right paragraph exists only in language P, every other paragraph in every
  language is present; the question is in Q ≠ P. This is the case of a real multilingual corpus
  where the answer was only ever written in one language.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.rank import LanguageStats, translation_groups
from qa.xquad import XQuAD, EmbeddingCache, find_xquad, load_xquad

__all__ = ["Pool", "Scorer", "BareModel", "Pipeline", "evaluate", "main"]

TOP = 10


@dataclass
class Pool:
    """Every paragraph of every language: vectors, languages and paragraph ids."""

    vectors: np.ndarray  # (n, d)
    langs: np.ndarray  # (n,) language codes
    para: np.ndarray  # (n,) paragraph index (the same for all translations)
    texts: list[str]

    @classmethod
    def from_xquad(cls, data: XQuAD, vectors: dict[str, np.ndarray]) -> Pool:
        langs = np.concatenate([[lang] * data.n_paragraphs for lang in data.langs])
        para = np.tile(np.arange(data.n_paragraphs), len(data.langs))
        texts = [t for lang in data.langs for t in data.paragraphs[lang]]
        return cls(np.concatenate([vectors[lang] for lang in data.langs]), langs, para, texts)


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
    """The retrieval pipeline of `qa.retrieve`, applied to a whole pool at once."""

    name = "pipeline"

    def __init__(self, standardize: bool = True, group_threshold: float | None = 0.85):
        self.standardize = standardize
        self.group_threshold = group_threshold

    def prepare(self, pool):
        self.stats = LanguageStats.fit(pool.vectors, pool.langs)
        self.lang_ids = self.stats.lang_ids(pool.langs)
        self.groups = (
            translation_groups(pool.vectors, pool.langs, self.group_threshold)
            if self.group_threshold is not None
            else None
        )

    def scores(self, queries, texts, lang, pool):
        raw = queries @ pool.vectors.T
        if not self.standardize:
            return raw
        return self.stats.standardize(queries, raw, self.lang_ids)


@dataclass
class Metrics:
    r1: float
    r5: float
    mrr: float
    own_lang_top1: float | None = None
    n: int = 0

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _metrics(top_para: np.ndarray, gold: np.ndarray, own: np.ndarray | None = None) -> Metrics:
    hits = top_para == gold[:, None]
    first = np.where(hits.any(axis=1), hits.argmax(axis=1), -1)
    mrr = np.where(first >= 0, 1.0 / (first + 1), 0.0)
    return Metrics(
        r1=float(hits[:, 0].mean()),
        r5=float(hits[:, :5].any(axis=1).mean()),
        mrr=float(mrr.mean()),
        own_lang_top1=None if own is None else float(own.mean()),
        n=len(gold),
    )


def _top_grouped(scores: np.ndarray, groups: np.ndarray, langs: np.ndarray, lang: str, k: int = TOP) -> np.ndarray:
    """Like _top, but one hit per translation group, shown by its member in `lang` if any."""
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(row)
    candidates = _top(scores, k=min(scores.shape[1], 40 * k))
    out = np.zeros((len(scores), k), dtype=np.int64)
    for qi, ranked in enumerate(candidates):
        seen: list[int] = []
        for row in ranked.tolist():
            group = int(groups[row])
            if group in seen:
                continue
            seen.append(group)
            lead = next((m for m in members[group] if langs[m] == lang), row)
            out[qi, len(seen) - 1] = lead
            if len(seen) == k:
                break
    return out


def _top(scores: np.ndarray, k: int = TOP) -> np.ndarray:
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, axis=1)


@dataclass
class Report:
    single: dict[tuple[str, str], Metrics] = field(default_factory=dict)
    mixed: dict[str, Metrics] = field(default_factory=dict)
    needle: dict[tuple[str, str], Metrics] = field(default_factory=dict)
    distinct_top5: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        same = [m for (q, p), m in self.single.items() if q == p]
        cross = [m for (q, p), m in self.single.items() if q != p]
        out = {}
        for name, group in (("same", same), ("cross", cross)):
            out[f"{name} R@1"] = float(np.mean([m.r1 for m in group])) if group else float("nan")
            out[f"{name} R@5"] = float(np.mean([m.r5 for m in group])) if group else float("nan")
            out[f"{name} MRR@10"] = float(np.mean([m.mrr for m in group])) if group else float("nan")
        mixed = list(self.mixed.values())
        out["mixed R@1"] = float(np.mean([m.r1 for m in mixed]))
        out["mixed R@5"] = float(np.mean([m.r5 for m in mixed]))
        out["mixed own-lang top1"] = float(np.mean([m.own_lang_top1 for m in mixed]))
        out["mixed distinct top5"] = float(np.mean(list(self.distinct_top5.values())))
        needle = list(self.needle.values())
        if needle:
            out["needle R@1"] = float(np.mean([m.r1 for m in needle]))
            out["needle R@5"] = float(np.mean([m.r5 for m in needle]))
            out["needle MRR@10"] = float(np.mean([m.mrr for m in needle]))
        return out


def evaluate(data: XQuAD, pool: Pool, queries: dict[str, np.ndarray], scorer: Scorer) -> Report:
    """Run one scorer over every pool; vectors come precomputed (and cached) from the caller."""
    scorer.prepare(pool)
    report = Report()
    gold = data.answer_paragraph
    for q_lang in data.langs:
        scores = scorer.scores(queries[q_lang], data.questions[q_lang], q_lang, pool)
        for p_lang in data.langs:
            cols = np.flatnonzero(pool.langs == p_lang)
            top = _top(scores[:, cols])
            report.single[(q_lang, p_lang)] = _metrics(pool.para[cols][top], gold)
        groups = getattr(scorer, "groups", None)
        top = _top(scores) if groups is None else _top_grouped(scores, groups, pool.langs, q_lang)
        report.mixed[q_lang] = _metrics(pool.para[top], gold, own=pool.langs[top[:, 0]] == q_lang)
        report.distinct_top5[q_lang] = float(np.mean([len(set(pool.para[row[:5]])) for row in top]))
        for p_lang in data.langs:
            if p_lang == q_lang:
                continue
            # Hide the answer's translations in every language but P.
            masked = scores.copy()
            hide = (pool.langs[None, :] != p_lang) & (pool.para[None, :] == gold[:, None])
            masked[hide] = -np.inf
            report.needle[(q_lang, p_lang)] = _metrics(pool.para[_top(masked)], gold)
    return report


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def print_comparison(reports: dict[str, Report], out=sys.stdout) -> None:
    names = list(reports)
    summaries = {n: r.summary() for n, r in reports.items()}
    keys = list(summaries[names[0]])
    width = max(len(k) for k in keys) + 2
    print("Summary (means over language pairs)", file=out)
    print("metric".ljust(width) + "".join(n.rjust(12) for n in names) + "      Δ", file=out)
    for key in keys:
        values = [summaries[n][key] for n in names]
        delta = values[-1] - values[0]
        print(key.ljust(width) + "".join(_fmt(v).rjust(12) for v in values) + f"{delta:+7.3f}", file=out)


def print_matrix(report: Report, langs: list[str], title: str, attr: str = "r1", out=sys.stdout) -> None:
    print(f"\n{title}: Recall@1, rows = question language, columns = passage language", file=out)
    print("Q\\P " + "".join(p.rjust(6) for p in langs) + "  needle", file=out)
    for q in langs:
        row = "".join(_fmt(getattr(report.single[(q, p)], attr))[1:].rjust(6) for p in langs)
        needles = [report.needle[(q, p)].r1 for p in langs if p != q]
        print(f"{q:<4}" + row + f"  {np.mean(needles):.3f}", file=out)


def main(args, settings: Settings) -> None:
    """The `qa eval` command."""
    from qa.embed import get_embedder

    folder = args.data or find_xquad()
    if folder is None:
        raise SystemExit("No XQuAD data found: pass --data FOLDER (the folder of xquad.<lang>.json files).")
    langs = [x.strip() for x in args.langs.split(",") if x.strip()] or None
    data = load_xquad(folder, langs, max_articles=args.subset)
    started = time.perf_counter()
    embedder = get_embedder(settings)
    cache = EmbeddingCache(settings.cache_dir / "eval" / "xquad-embeddings.npz", embedder.fingerprint)
    print(
        f"XQuAD: {len(data.langs)} languages, {data.n_paragraphs} paragraphs and {data.n_questions} "
        f"questions each ({'subset of ' + str(args.subset) + ' articles' if args.subset else 'full'}).",
        file=sys.stderr,
    )
    passages = {lang: cache.get("passage", data.paragraphs[lang], embedder.encode_documents) for lang in data.langs}
    queries = {lang: cache.get("query", data.questions[lang], embedder.encode_queries) for lang in data.langs}
    pool = Pool.from_xquad(data, passages)
    reports = {s.name: evaluate(data, pool, queries, s) for s in (BareModel(), Pipeline())}
    print_comparison(reports)
    for name, report in reports.items():
        print_matrix(report, data.langs, name)
    print(f"\n({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({n: r.summary() for n, r in reports.items()}, indent=2), encoding="utf-8"
        )

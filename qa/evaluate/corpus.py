"""`qa eval --hits`: questions about the indexed corpus asked of the index, hit@1/3/5 for the bare
model and the pipeline, and why the pipeline misses (`explain_corpus_misses`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qa.config import Settings
from qa.evaluate.scoring import Pipeline, Pool
from qa.rank import fold_groups, group_members

__all__ = ["CORPUS_QUESTION_SETS", "evaluate_corpus_questions", "explain_corpus_misses", "format_corpus_hits"]


def _has_evidence(texts: list[str], evidence: list[str]) -> bool:
    return any(e in t for t in texts for e in evidence)


def evaluate_corpus_questions(path: Path, settings: Settings, k: int = 5) -> dict[str, dict]:
    """Hit@1/3/5 on questions about the indexed corpus, bare model vs pipeline, overall and per
    question language ("by language": hit@1, hit@5 and n of each).

    `path` is a JSON list of {"evidence": [strings], "questions": {lang: question}}; a hit is a
    retrieved passage (or one of its translations) that contains one of the evidence strings.
    """
    from qa.retrieval import get_engine, to_passage

    engine = get_engine(settings)
    index = engine.index()
    hits: dict[str, dict[str, list]] = {name: {} for name in ("bare model", "pipeline")}
    for fact in json.loads(Path(path).read_text(encoding="utf-8")):
        for lang, question in fact["questions"].items():
            _, rows = index.search(engine.embedder.encode_query(question)[None, :], k)
            bare = [[to_passage(index, int(r), 0.0).text] for r in rows[0] if r >= 0]
            piped = [[p.text] + [t.text for t in p.translations] for p in engine.search(question, k, lang=lang)]
            for name, ranked in (("bare model", bare), ("pipeline", piped)):
                found = [_has_evidence(texts, fact["evidence"]) for texts in ranked]
                hits[name].setdefault(lang, []).append([any(found[:1]), any(found[:3]), any(found[:5])])
    out = {}
    for name, by_lang in hits.items():
        every = np.array([row for rows in by_lang.values() for row in rows], dtype=float)
        out[name] = dict(zip(("hit@1", "hit@3", "hit@5"), every.mean(axis=0).round(3).tolist())) | {"n": len(every)}
        out[name]["by language"] = {
            lang: {"hit@1": round(float(np.mean([r[0] for r in rows])), 3),
                   "hit@5": round(float(np.mean([r[2] for r in rows])), 3), "n": len(rows)}
            for lang, rows in sorted(by_lang.items())
        }  # fmt: skip
    return out


def explain_corpus_misses(path: Path, settings: Settings, k: int = 5, ahead: int = 5) -> str:
    """Why the pipeline misses: for each question of `path` (as `evaluate_corpus_questions`) whose
    evidence is not in its top `k`, the evidence passage's rank and the signals `qa.rank.fuse`
    weighs (standardized dense score, BM25 scaled per language with its raw score, best sentence
    score) for it and for the first `ahead` hits. Ranked as `Pipeline` ranks the index's pool,
    which is the engine's ranking (tests/test_parity.py)."""
    from qa.retrieval import get_engine

    engine = get_engine(settings)
    index = engine.index()
    pool = Pool.from_index(index)
    pipeline = Pipeline(settings, {})
    pipeline.prepare(pool)
    members = group_members(pipeline.groups)
    lines = [f"{Path(path).name}: questions whose evidence is not in the top {k}"]
    for fact in json.loads(Path(path).read_text(encoding="utf-8")):
        holds = np.array([_has_evidence([t], fact["evidence"]) for t in pool.texts])
        for lang, question in fact["questions"].items():
            query = engine.embedder.encode_query(question)[None, :]
            dense, lexical, sentences = pipeline.components(query, [question], lang, pool)
            scores = pipeline.fused(dense, lexical, sentences)[0]
            hits = fold_groups(np.argsort(-scores), pipeline.groups, members, pool.langs, lang, len(scores))
            found = [n for n, (_, row) in enumerate(hits)
                     if holds[members.get(int(pipeline.groups[row]), [row])].any()]  # fmt: skip
            if found and found[0] < k:
                continue
            raw = None if lexical is None else pipeline.lexical.scores(question)
            lines.append(f"  {lang} {question!r} (evidence {fact['evidence'][0]!r}): "
                         f"{'rank ' + str(found[0] + 1) if found else 'not found'}")  # fmt: skip
            for n in list(range(min(ahead, len(hits)))) + found[:1]:
                row = hits[n][1]
                lex = "" if lexical is None else f"  bm25 {lexical[0, row]:.2f} (raw {raw[row]:.2f})"
                sent = "" if sentences is None else f"  sentence {sentences[0, row]:.2f}"
                lines.append(f"    {'*' if n in found else ' '}{n + 1:>3} {pool.langs[row]} total {scores[row]:.2f}  "
                             f"dense {dense[0, row]:.2f}{lex}{sent}  {pool.texts[row][:60]!r}")  # fmt: skip
    return "\n".join(lines)


# What `qa eval --hits` calls the question files it knows; others go by their file name.
CORPUS_QUESTION_SETS = {
    "seed_questions.json": "seed questions",
    "heldout_questions.json": "held-out demo questions (no weight was chosen on them)",
}


def format_corpus_hits(path: Path, result: dict[str, dict]) -> str:
    """`evaluate_corpus_questions`'s result as text: hit@1 / hit@5 overall and per question
    language, bare model and pipeline."""
    name = CORPUS_QUESTION_SETS.get(Path(path).name, Path(path).name)
    first = next(iter(result.values()))
    lines = [f"{name} ({Path(path).name}, {first['n']} questions): hit@1 / hit@5"]
    for scorer, row in result.items():
        langs = " ".join(
            f"{lang} {m['hit@1']:.2f}/{m['hit@5']:.2f} ({m['n']})" for lang, m in row["by language"].items()
        )
        lines.append(f"  {scorer:<11} {row['hit@1']:.3f} / {row['hit@5']:.3f}   by language: {langs}")
    return "\n".join(lines)

"""Calibrates the support threshold of generated answers (qa.verify) on XQuAD.

A generated sentence is kept when its standardized similarity (z) to the best sentence of the
passage it cites reaches `Settings.llm_min_support`. This script measures z on pairs whose
answer is known, across languages:

  supported, translation   the sentence holding a question's answer, in language A, against the
                           sentences of the same paragraph in language B
  supported, short claim   "question + answer" in A (what a short generated sentence says)
                           against the same paragraph in B
  unsupported, same topic  the answer sentence in A against another paragraph of the same
                           article in B (on topic, but not the evidence: the hard case)
  unsupported, random      the answer sentence in A against a paragraph of another article in B

Pairs cycle through every (A, B) of a few languages, A = B included. The per-language
statistics are fitted on the sentences used, as an index fits them on its corpus. The
threshold is chosen among those that at most 1% of random pairs reach: the one that keeps the
most short claims less same-topic pairs passed; the tables show what every kind of pair does at
it and around it, and raw cosine chosen the same way beside z.

Usage: python benchmarks/calibrate_support.py [--langs en,es,de,zh] [--articles 8] [--questions 192]
Embeddings are cached (cache_dir/eval/support.npz): a rerun only computes the table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from itertools import product
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import RESULTS, describe_machine, machine
from qa.chunk import split_sentences
from qa.config import Settings
from qa.embed import get_embedder
from qa.rank import LanguageStats
from qa.verify import support_score
from qa.xquad import EmbeddingCache, find_xquad

RANDOM_FALSE_ACCEPT = 0.01  # share of unrelated pairs allowed through at the chosen threshold


def load(folder: Path, langs: list[str], articles: int) -> dict:
    """Per language: paragraphs (list of sentence texts), per question its paragraph, article,
    the sentence holding its answer, and the question + answer text."""
    data = {}
    for lang in langs:
        raw = json.loads((folder / f"xquad.{lang}.json").read_text(encoding="utf-8"))["data"][:articles]
        paragraphs, article_of, questions = [], [], []
        for a, article in enumerate(raw):
            for paragraph in article["paragraphs"]:
                text = paragraph["context"]
                spans = split_sentences(text)
                p = len(paragraphs)
                paragraphs.append([text[s:e] for s, e in spans])
                article_of.append(a)
                for qa in paragraph["qas"]:
                    answer = qa["answers"][0]
                    at = next((i for i, (s, e) in enumerate(spans) if s <= answer["answer_start"] < e), 0)
                    questions.append((p, at, f"{qa['question']} {answer['text']}"))
        data[lang] = {"paragraphs": paragraphs, "article_of": article_of, "questions": questions}
    return data


def choose(rows: dict, value) -> tuple[float, list[tuple[float, list[float]]]]:
    """The threshold (on `value` of a pair) and a sweep: (threshold, share kept per kind) rows.

    Allowed: thresholds that at most RANDOM_FALSE_ACCEPT of the random pairs reach. Chosen among
    them: the one with the most short claims kept minus same-topic pairs passed (Youden's J);
    generated sentences are short claims, and an invented one is usually on topic.
    """
    values = {kind: np.array([value(v) for v in pairs]) for kind, pairs in rows.items()}
    floor = float(np.quantile(values["unsupported, random"], 1 - RANDOM_FALSE_ACCEPT))
    grid = np.round(np.arange(np.floor(floor * 100) / 100, values["supported, short claim"].max(), 0.01), 2)
    grid = [float(t) for t in grid if (values["unsupported, random"] >= t).mean() <= RANDOM_FALSE_ACCEPT]
    gain = [(values["supported, short claim"] >= t).mean() - (values["unsupported, same topic"] >= t).mean()
            for t in grid]
    best = grid[int(np.argmax(gain))]
    step = 0.25 if floor > 1.5 else 0.01
    shown = sorted({best, *[float(np.round(floor + step * i, 2)) for i in range(8)]})
    sweep = [(t, [float((v >= t).mean()) for v in values.values()]) for t in shown]
    return best, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--langs", default="en,es,de,zh")
    parser.add_argument("--articles", type=int, default=8, help="first N XQuAD articles (of 48)")
    parser.add_argument("--questions", type=int, default=192, help="questions sampled (each gives 4 pairs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.articles < 2:  # an unsupported, random pair takes its paragraph from another article
        parser.error(f"--articles {args.articles}: use at least 2 (random pairs need another article).")
    folder = find_xquad()
    if folder is None:
        sys.exit("No XQuAD data: put xquad.<lang>.json files in data/xquad (here or in a folder above).")
    langs = args.langs.split(",")
    data = load(folder, langs, args.articles)
    settings = Settings()
    embedder = get_embedder(settings)
    cache = EmbeddingCache(settings.cache_dir / "eval" / "support.npz", embedder.fingerprint)
    embed = embedder.encode_documents  # as the index embeds sentences, and qa.verify the claims

    # Every sentence of every paragraph, per language: the evidence, and the statistics.
    vectors, offsets, all_vectors, all_langs = {}, {}, [], []
    for lang in langs:
        sentences = [s for paragraph in data[lang]["paragraphs"] for s in paragraph]
        vectors[lang] = cache.get("sentence", sentences, embed)
        offsets[lang] = np.cumsum([0] + [len(p) for p in data[lang]["paragraphs"]])
        all_vectors.append(vectors[lang])
        all_langs += [lang] * len(sentences)
    stats = LanguageStats.fit(np.concatenate(all_vectors), all_langs)

    def paragraph(lang: str, p: int) -> tuple[np.ndarray, np.ndarray]:
        rows = vectors[lang][offsets[lang][p] : offsets[lang][p + 1]]
        return rows, stats.lang_ids([lang] * len(rows))

    rng = random.Random(args.seed)
    pairs = list(product(langs, langs))
    n_questions = len(data[langs[0]]["questions"])
    picked = rng.sample(range(n_questions), min(args.questions, n_questions))
    claims = {lang: [] for lang in langs}
    jobs = []
    for j, q in enumerate(picked):
        a, b = pairs[j % len(pairs)]
        p, at, short = data[a]["questions"][q]
        article = data[a]["article_of"][p]
        same = [x for x, art in enumerate(data[b]["article_of"]) if art == article and x != p]
        other = [x for x, art in enumerate(data[b]["article_of"]) if art != article]
        answer_row = offsets[a][p] + at
        claims[a].append(short)
        jobs.append((a, b, p, answer_row, len(claims[a]) - 1, rng.choice(same) if same else None, rng.choice(other)))
    short_vectors = {lang: cache.get("claim", claims[lang], embed) for lang in langs}

    rows = {"supported, translation": [], "supported, short claim": [], "unsupported, same topic": [],
            "unsupported, random": []}
    for a, b, p, answer_row, claim_i, same, other in jobs:
        answer = vectors[a][answer_row]
        cross = a != b
        for kind, claim, evidence in (
            ("supported, translation", answer, p),
            ("supported, short claim", short_vectors[a][claim_i], p),
            ("unsupported, same topic", answer, same),
            ("unsupported, random", answer, other),
        ):
            if evidence is None:
                continue
            ev, ids = paragraph(b, evidence)
            rows[kind].append((support_score(claim, ev, ids, stats), float((ev @ claim).max()), cross))

    threshold, sweep = choose(rows, lambda v: v[0])
    cos_threshold, _ = choose(rows, lambda v: v[1])

    print(f"XQuAD, languages {', '.join(langs)}, first {args.articles} articles, {len(picked)} questions "
          f"({len(pairs)} language pairs, A = B included); {describe_machine(machine())}")
    print(f"\n{'pairs':<26}{'n':>5}{'z p5':>7}{'z p50':>7}{'z p95':>7}{'cos p50':>9}"
          f"{'kept (z)':>10}{'same lang':>11}{'cross':>7}{'kept (cos)':>12}")
    table = {}
    for kind, values in rows.items():
        z = np.array([v[0] for v in values])
        cos = np.array([v[1] for v in values])
        cross = np.array([v[2] for v in values])
        kept = z >= threshold
        entry = {
            "n": len(z),
            "z_p5": float(np.quantile(z, 0.05)),
            "z_p50": float(np.median(z)),
            "z_p95": float(np.quantile(z, 0.95)),
            "cos_p50": float(np.median(cos)),
            "kept": float(kept.mean()),
            "kept_same_lang": float(kept[~cross].mean()),
            "kept_cross_lang": float(kept[cross].mean()),
            "kept_cos": float((cos >= cos_threshold).mean()),
        }
        table[kind] = entry
        print(f"{kind:<26}{entry['n']:>5}{entry['z_p5']:>7.2f}{entry['z_p50']:>7.2f}{entry['z_p95']:>7.2f}"
              f"{entry['cos_p50']:>9.3f}{entry['kept']:>10.0%}{entry['kept_same_lang']:>11.0%}"
              f"{entry['kept_cross_lang']:>7.0%}{entry['kept_cos']:>12.0%}")
    print(f"\n{'z >=':>6}" + "".join(f"{kind:>26}" for kind in rows))
    for t, kept in sweep:
        mark = "  <- chosen" if t == threshold else ""
        print(f"{t:>6.2f}" + "".join(f"{k:>26.0%}" for k in kept) + mark)
    print(f"\nthreshold: z >= {threshold:.2f}: of the thresholds that let at most {RANDOM_FALSE_ACCEPT:.0%} of "
          "random pairs through, the one that best separates short claims from same-topic pairs "
          f"(most kept minus passed); 'kept (cos)' = raw cosine >= {cos_threshold:.3f}, chosen the same way")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "calibrate_support.json"
    out.write_text(json.dumps({"machine": machine(), "args": vars(args), "threshold": threshold,
                               "cos_threshold": cos_threshold, "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()

